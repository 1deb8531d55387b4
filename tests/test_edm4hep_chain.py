"""A CEPC AHCAL readout in EDM4hep, written with ROOT, through digitise -> calibrate apply ->
histogram gives the same histograms as the same hits in the native layout.

The hits are those of simulated electrons in ``cepc_ahcal``; their cell IDs are encoded with
a DD4hep string with signed x/y fields (x = i - 9, y = j - 9), the file is written by ROOT
from declared EDM4hep-like structs (tests/_edm4hep_root.py) with the encoding in its
metadata frame, as Key4hep does. The native file holds the same values (energies in MeV as
the reader converts them: float32 GeV times 1000) and the same file identity (UUID), which
keys the digitisation's random numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from calocoffea.cellid import BitFieldCoder
from calocoffea.cli.main import main
from calocoffea.geometry import get_geometry
from calocoffea.io import FileMetadata, read_events, write_events
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate

ENCODING = "system:0:5,side:5:-2,module:7:8,stave:15:4,layer:19:9,submodule:28:4,x:32:-16,y:48:-16"
N_EVENTS = 20
ELECTRON_MASS_GEV = 0.000511


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from _edm4hep_root import write_edm4hep_file

    work = tmp_path_factory.mktemp("edm4hep_chain")
    sim = simulate(
        "cepc_ahcal",
        "e-",
        Beam(energies_gev=(20.0,), size_mm=20.0),
        N_EVENTS,
        11,
        work / "sim.root",
    )
    events = read_events(sim)
    coder = BitFieldCoder.parse(ENCODING)
    records, native_chunks = [], []
    for ev in events:
        h = ev.hits
        layer, i, j = (np.asarray(h[k], np.int64) for k in ("layer", "i", "j"))
        cell = coder.encode(system=20, module=3, stave=1, layer=layer, x=i - 9, y=j - 9)
        energy_gev = (np.asarray(h.energy, np.float64) / 1000.0).astype(np.float32)
        momentum = float(np.sqrt(ev.beam_energy**2 - ELECTRON_MASS_GEV**2))
        records.append(
            {
                "event_number": int(ev.event),
                "run_number": int(ev.run),
                "hits": {
                    "cellID": cell,
                    "energy": energy_gev,
                    "x": np.asarray(h.x, np.float32),
                    "y": np.asarray(h.y, np.float32),
                    "z": np.asarray(h.z, np.float32),
                    "time": np.asarray(h.time, np.float32),
                    "pdg": np.full(len(h), 11, np.int32),
                },
                "particles": [
                    {
                        "PDG": 11,
                        "generatorStatus": 1,
                        "mass": ELECTRON_MASS_GEV,
                        "momentum": (0.0, 0.0, momentum),
                        "vertex": (float(ev.beam_x), float(ev.beam_y), 0.0),
                        "charge": -1.0,
                    }
                ],
            }
        )
    edm = write_edm4hep_file(
        work / "ahcal.edm4hep.root", records, collection="HcalBarrelCollection", encoding=ENCODING
    )
    # the same hits in the native layout, with the EDM4hep file's identity
    beam = np.sqrt(
        (np.sqrt(np.asarray(events.beam_energy) ** 2 - ELECTRON_MASS_GEV**2)) ** 2
        + ELECTRON_MASS_GEV**2
    )
    energy_mev = ak.values_astype(
        ak.values_astype(ak.values_astype(events.hits.energy / 1000.0, np.float32), np.float64)
        * 1000.0,
        np.float32,
    )
    hits = ak.zip(
        {
            "cellid": events.hits.cellid,
            "layer": events.hits.layer,
            "i": events.hits.i,
            "j": events.hits.j,
            "energy": energy_mev,
            "x": events.hits.x,
            "y": events.hits.y,
            "z": events.hits.z,
            "time": events.hits.time,
            "flags": ak.values_astype(events.hits.energy * 0, np.uint32),
        }
    )
    native_chunks.append(
        ak.zip(
            {
                "event": events.event,
                "run": events.run,
                "pdg": ak.values_astype(events.pdg * 0 + 11, np.int32),
                "beam_energy": beam,
                "beam_x": events.beam_x,
                "beam_y": events.beam_y,
                "edep_active": ak.sum(energy_mev, axis=1),
                "hit": hits,
            },
            depth_limit=1,
        )
    )
    geometry = get_geometry("cepc_ahcal")
    meta = FileMetadata(
        stage="sim",
        geometry=geometry.name,
        geometry_hash=geometry.hash,
        producer="test",
        extra={"particle": "e-", "beam": {"energies_gev": [20.0]}},
    )
    native = write_events(
        work / "native.root", native_chunks, meta, identity=uproot.open(edm).file.uuid
    )
    assert (
        main(["constants", "nominal", "--geometry", "cepc_ahcal", "-o", str(work / "nominal.json")])
        == 0
    )
    return {"edm": edm, "native": native, "work": work, "sim": sim}


def _chain(source: Path, tag: str, work: Path, extra: list[str]) -> dict:
    raw, gev, hist = (work / f"{tag}-{s}.root" for s in ("raw", "gev", "h"))
    assert main(["digitize", str(source), "-o", str(raw), "--seed", "5", *extra]) == 0
    assert (
        main(
            [
                "calibrate",
                "apply",
                str(raw),
                "--constants",
                str(work / "nominal.json"),
                "--to",
                "gev",
                "-o",
                str(gev),
            ]
        )
        == 0
    )
    assert main(["histogram", str(gev), "-o", str(hist)]) == 0
    return {"raw": read_events(raw), "hist": json.loads(Path(f"{hist}.json").read_text())}


def test_the_file_has_thousands_of_hits_and_its_encoding_in_the_metadata(
    files: dict, capsys
) -> None:
    assert main(["info", str(files["edm"])]) == 0
    out = capsys.readouterr().out
    assert "HcalBarrelCollection: sim hits" in out and ENCODING in out
    assert int(ak.sum(ak.num(read_events(files["sim"]).hits, axis=1))) > 2000


def test_read_with_the_geometry_gives_the_native_events(files: dict) -> None:
    from calocoffea.edm4hep import EDM4hepFile

    edm = EDM4hepFile(files["edm"], geometry="cepc_ahcal")
    got = ak.concatenate(list(edm.chunks()))
    want = read_events(files["native"])
    for field in ("cellid", "layer", "i", "j", "energy", "x", "y", "z", "time"):
        assert ak.all(got.hit[field] == want.hits[field]), field
    assert np.array_equal(got.beam_energy, want.beam_energy)
    assert np.array_equal(got.edep_active, want.edep_active)


def test_digitise_calibrate_histogram_equal_the_native_chain(files: dict) -> None:
    work = files["work"]
    from_edm = _chain(files["edm"], "edm", work, ["--map-geometry", "cepc_ahcal"])
    from_native = _chain(files["native"], "native", work, [])
    assert ak.all(from_edm["raw"].hits.energy == from_native["raw"].hits.energy)
    assert from_edm["hist"].keys() == from_native["hist"].keys()
    for name, h in from_edm["hist"].items():
        assert h == from_native["hist"][name], name
    assert not list(work.glob(".calocoffea-convert-*"))  # the converted file is gone


def test_a_wrong_field_mapping_is_refused(files: dict) -> None:
    from calocoffea.edm4hep import CellMapping, EDM4hepFile
    from calocoffea.exceptions import CellIDEncodingError

    with pytest.raises(CellIDEncodingError, match="does not follow the hit positions"):
        list(
            EDM4hepFile(
                files["edm"], geometry="cepc_ahcal", mapping=CellMapping(i="y", j="x")
            ).chunks()
        )
    with pytest.raises(CellIDEncodingError, match="no field 'row'"):
        EDM4hepFile(files["edm"], geometry="cepc_ahcal", mapping=CellMapping(i="row"))
