"""EDM4hep inputs: the real podio sample, and a CEPC AHCAL readout written with ROOT.

The sample (../shared/data/edm4hep_podio_sample.root, from coffea's test files) holds test
values, one hit per collection and event: energies 43 GeV, positions (44, 45, 46) mm, the
contribution time 44 ns, an MCParticle of PDG 42 with mass 47 and momentum (54, 55, 56) GeV.
"""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from calocoffea.cli.main import main
from calocoffea.edm4hep import EDM4hepFile, is_edm4hep
from calocoffea.exceptions import CellIDEncodingError, InputFileError, MissingCollectionError
from calocoffea.io import read_events, read_metadata
from calocoffea.sources import SourceOptions, convert

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "edm4hep_podio_sample.root"
needs_sample = pytest.mark.skipif(
    not SAMPLE.is_file(),
    reason=f"the real EDM4hep sample {SAMPLE} is absent (../shared is not beside the checkout)",
)


def _events(path: Path, **options) -> ak.Array:
    return ak.concatenate(list(EDM4hepFile(path, **options).chunks()))


@needs_sample
def test_info_lists_the_collections_and_hits_of_the_real_sample(capsys) -> None:
    assert is_edm4hep(SAMPLE)
    assert main(["info", str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    for line in (
        "SimCalorimeterHitCollection: sim hits, 3 in all",
        "CalorimeterHitCollection: gev hits, 3 in all",
        "RawCalorimeterHitCollection: raw hits, 3 in all",
        "primary particle: PDG 42",
        "stage sim (hit_energy in MeV)",
    ):
        assert line in out, line


@needs_sample
def test_sim_hits_of_the_real_sample_in_calocoffea_units() -> None:
    events = _events(SAMPLE, collections=["SimCalorimeterHitCollection"])
    assert len(events) == 3
    hit = events.hit
    assert ak.all(ak.num(hit, axis=1) == 1)
    assert ak.all(hit.energy == 43_000.0)  # 43 GeV -> MeV
    assert ak.all(hit.cellid == 42)
    assert (ak.all(hit.x == 44.0), ak.all(hit.y == 45.0), ak.all(hit.z == 46.0)) == (True,) * 3
    assert ak.all(hit.time == 44.0)  # from the CaloHitContribution it points to
    assert ak.all(hit.layer == -1)  # no CellIDEncoding in this file: layer unknown
    assert np.all(events.event == 42) and np.all(events.run == 43)
    assert np.all(events.pdg == 42)
    assert np.allclose(events.beam_energy, np.sqrt(54.0**2 + 55**2 + 56**2 + 47**2))
    assert np.all(events.edep_active == 43_000.0)


@needs_sample
def test_calorimeter_and_raw_hits_of_the_real_sample() -> None:
    gev = _events(SAMPLE, collections=["CalorimeterHitCollection"])
    assert ak.all(gev.hit.energy == 43.0) and ak.all(gev.hit.time == 45.0)
    assert ak.all(gev.hit.x == 46.0)
    raw_file = EDM4hepFile(SAMPLE, collections=["RawCalorimeterHitCollection"])
    assert raw_file.metadata().stage == "raw"
    raw = ak.concatenate(list(raw_file.chunks()))
    assert ak.all(raw.hit.energy == 43) and ak.all(raw.hit.time == 44)


@needs_sample
def test_converted_sample_reads_back_as_native_events(tmp_path: Path) -> None:
    out = convert(
        SAMPLE,
        tmp_path / "sample.root",
        SourceOptions(collections=("SimCalorimeterHitCollection",)),
    )
    meta = read_metadata(out)
    assert meta.stage == "sim" and meta.extra["format"] == "edm4hep"
    native = read_events(out)
    direct = _events(SAMPLE, collections=["SimCalorimeterHitCollection"])
    assert ak.all(native.hits.energy == direct.hit.energy)
    assert np.array_equal(native.beam_energy, direct.beam_energy)
    import uproot

    assert uproot.open(out).file.uuid == uproot.open(SAMPLE).file.uuid  # identity kept


@needs_sample
def test_unknown_collection_lists_those_that_exist(capsys) -> None:
    with pytest.raises(MissingCollectionError, match=r"SimCalorimeterHitCollection \(sim\)"):
        EDM4hepFile(SAMPLE, collections=["SimCalorimeterHitCollectio"])
    assert main(["info", str(SAMPLE), "--collection", "HcalBarrel"]) == 2
    assert "it has: CalorimeterHitCollection (gev)" in capsys.readouterr().err


@needs_sample
def test_mixing_kinds_of_hits_is_refused() -> None:
    with pytest.raises(MissingCollectionError, match="different kinds"):
        EDM4hepFile(SAMPLE, collections=["SimCalorimeterHitCollection", "CalorimeterHitCollection"])


@needs_sample
def test_mapping_onto_a_geometry_needs_an_encoding() -> None:
    with pytest.raises(CellIDEncodingError, match="no CellIDEncoding"):
        EDM4hepFile(SAMPLE, collections=["SimCalorimeterHitCollection"], geometry="cepc_ahcal")
    with pytest.raises(CellIDEncodingError, match="no field 'layer'"):
        EDM4hepFile(
            SAMPLE, collections=["SimCalorimeterHitCollection"], encoding="system:0:5,x:5:-16"
        )


def test_a_file_that_is_not_edm4hep_is_refused(tmp_path: Path) -> None:
    import uproot

    path = tmp_path / "flat.root"
    with uproot.recreate(path) as f:
        f["t"] = {"a": np.arange(3)}
    assert not is_edm4hep(path)
    with pytest.raises(InputFileError, match="not an EDM4hep file"):
        EDM4hepFile(path)
    with pytest.raises(InputFileError, match="branch map"):
        convert(path, tmp_path / "out.root")
