"""The pure-RDataFrame example (``examples/rdf_histogram.py``) fills calocoffea's histograms.

The example calibrates raw hits with correctionlib's C++ evaluator and plain RDataFrame; here
its ``energy_sum`` and ``nhit`` TH2D must equal, bin for bin (flow bins too), those of
calocoffea's histogram processor calibrating the same raw file on the fly. The raw file is
spiked with the hits that take the rarer branches of the chain (saturated, beyond the
non-linearity's asymptote, above the de-saturation limit) and the constants make some
energies overflow to infinity, which both sides leave out of the sums.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import awkward as ak
import hist
import numpy as np
import pytest
import uproot

from calocoffea.calibration import calibrate
from calocoffea.conditions import nominal
from calocoffea.constants import Constants, DenseConstants, load_constants, nominal_constants
from calocoffea.exceptions import InvalidInputWarning
from calocoffea.flags import HitFlag
from calocoffea.geometry import decode_cellid, get_geometry
from calocoffea.io import read_events, read_metadata, write_events
from calocoffea.runner import digitize_files, histogram_files
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate

pytest.importorskip("ROOT")
correctionlib = pytest.importorskip("correctionlib")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rdf_histogram.py"
GEOMETRY = "cepc_ahcal"
ENERGIES = (10.0, 40.0)
COMPARED = ("energy_sum", "nhit")


@dataclasses.dataclass(frozen=True)
class Sample:
    raw: Path
    constants: Path
    #: calocoffea's histograms of ``raw`` calibrated with ``constants``
    expected: dict[str, hist.Hist]


def _spike(raw: Path, out: Path) -> Path:
    """``raw`` with some hits flagged SATURATED, some low-gain ADC far beyond the
    non-linearity's asymptote (clipped below it) and some high enough for the linear
    continuation of the de-saturation."""
    events = read_events(raw)
    hits = events.hits
    adc = ak.to_numpy(ak.flatten(hits.energy)).copy()
    gain = ak.to_numpy(ak.flatten(hits.gain)).copy()
    flags = ak.to_numpy(ak.flatten(hits.flags)).copy()
    flags[::37] |= np.uint32(HitFlag.SATURATED)
    adc[5::41], gain[5::41] = 1.0e6, 1  # ~3e7 ADC high-gain equivalent, asymptote ~1e6
    adc[7::43], gain[7::43] = 6000.0, 1  # ~1.7e5 ADC: above 95 % of the pixels
    counts = ak.num(hits)
    for name, values in (("energy", adc), ("gain", gain), ("flags", flags)):
        hits = ak.with_field(hits, ak.unflatten(values, counts), name)
    return write_events(out, [ak.with_field(events, hits, "hits")], read_metadata(raw))


def _overflowing(constants: Constants, raw: Path) -> Constants:
    """``scale`` = 1e308 in the cells of the first hits: their hits above ~1.8 MIP calibrate
    to +inf, which the event sums and hit counts must leave out."""
    cellids = ak.to_numpy(ak.flatten(read_events(raw).hits.cellid))[:3]
    scale = constants.tables["scale"]
    values = np.where(np.isin(scale.keys, cellids), 1.0e308, scale.values)
    return constants.replace(scale=dataclasses.replace(scale, values=values))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    directory = tmp_path_factory.mktemp("rdf_example")
    sim = simulate(GEOMETRY, "e-", Beam(energies_gev=ENERGIES), 150, 11, directory / "s.root")
    clean = digitize_files([sim], directory / "clean-raw.root").output
    assert clean is not None
    raw = _spike(clean, directory / "raw.root")
    constants = _overflowing(nominal_constants(nominal(GEOMETRY)), raw)
    path = constants.save(directory / "constants.json")
    # the overflow is on purpose (see _overflowing); calocoffea warns that it left hits out
    with np.errstate(over="ignore"), pytest.warns(InvalidInputWarning, match="infinite"):
        result = histogram_files([raw], constants=constants, beam_energies_gev=ENERGIES)
    return Sample(raw, path, result.histograms)


# ------------------------------------------------------------------------------ helpers


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(EXAMPLE), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _binning(expected: dict[str, hist.Hist]) -> list[str]:
    """The example's options for calocoffea's axes."""
    energy = expected["energy_sum"].axes["energy"]
    assert expected["nhit"].axes["nhit"].edges[[0, -1]].tolist() == [0, 4000]
    return [
        f"--beam-energies={','.join(repr(e) for e in ENERGIES)}",
        f"--energy-bins={energy.size}",
        f"--energy-max={float(energy.edges[-1])!r}",
    ]


def _check_histograms(out: Path, expected: dict[str, hist.Hist]) -> None:
    with uproot.open(out) as file:
        for name in COMPARED:
            got, want = file[name], expected[name]
            np.testing.assert_array_equal(got.axis(0).edges(), want.axes[0].edges)
            np.testing.assert_allclose(got.axis(1).edges(), want.axes[1].edges, rtol=1e-15)
            counts = got.values(flow=True)
            np.testing.assert_array_equal(counts, want.values(flow=True).astype(np.float64))
            assert counts.sum() == want.sum(flow=True) > 0


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rdf_histogram_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _as_correctionlib_reads(path: Path, dense: DenseConstants) -> DenseConstants:
    """``dense`` with the per-cell values correctionlib's C++ JSON reader gets from ``path``
    (rapidjson's default number parsing: some are 1 ulp away from Python's ``json``)."""
    cset = correctionlib.CorrectionSet.from_file(str(path))
    _, layer, i, j = decode_cellid(get_geometry(GEOMETRY).cellids())
    key: tuple[Any, ...] = ("value", layer.astype(np.int64), i.astype(np.int64), j.astype(np.int64))
    cells = {name: np.asarray(cset[name].evaluate(*key), np.float64) for name in dense.cells}
    return dataclasses.replace(dense, cells=cells)


# ------------------------------------------------------------------------------ tests


def test_histograms_equal_calocoffeas(sample: Sample, tmp_path: Path) -> None:
    out = tmp_path / "rdf.root"
    run = _run(sample.raw, sample.constants, out, *_binning(sample.expected))
    assert run.returncode == 0, run.stderr
    _check_histograms(out, sample.expected)


def test_histograms_equal_calocoffeas_with_threads(sample: Sample, tmp_path: Path) -> None:
    out = tmp_path / "rdf-mt.root"
    run = _run(sample.raw, sample.constants, out, *_binning(sample.expected), "--threads", "2")
    assert run.returncode == 0, run.stderr
    _check_histograms(out, sample.expected)


def test_hits_are_bit_identical_to_calibrate(sample: Sample) -> None:
    """Hit for hit, the example's C++ gives calocoffea's energies exactly, given the constants
    as correctionlib reads them (same operations in the same order, no FMA)."""
    example = _load_example()
    root = example.load_root()
    example.install_constants(root, sample.constants)
    frame = root.RDataFrame(example.TREE, str(sample.raw)).Define(
        "hit_mip", "calo_rdf::calibrate(hit_energy, hit_gain, hit_flags, hit_layer, hit_i, hit_j)"
    )
    columns = frame.AsNumpy(["rdfentry_", "hit_mip"])  # in entry order even if MT is on
    order = np.argsort(columns["rdfentry_"], kind="stable")
    got = np.concatenate([np.asarray(columns["hit_mip"][k]) for k in order])

    geometry = get_geometry(GEOMETRY)
    dense = _as_correctionlib_reads(
        sample.constants, load_constants(sample.constants).dense(geometry)
    )
    hits = read_events(sample.raw).hits
    flat = {name: ak.to_numpy(ak.flatten(hits[name])) for name in hits.fields}
    cell = geometry.cell_index(flat["cellid"])
    with np.errstate(over="ignore"):
        want = calibrate(flat["energy"], flat["gain"], flat["flags"], cell, flat["layer"], dense)
    np.testing.assert_array_equal(got, want.energy)
    assert np.count_nonzero(np.isinf(got)) > 0
    assert want.flagged["saturated"] > 0 and want.flagged["extrapolated"] > 0


def test_missing_input_is_exit_2(sample: Sample, tmp_path: Path) -> None:
    missing = tmp_path / "absent.root"
    run = _run(missing, sample.constants, tmp_path / "out.root", "--beam-energies=10",
               "--energy-max=100")  # fmt: skip
    assert run.returncode == 2
    assert f"{missing}: no such file" in run.stderr
    assert not (tmp_path / "out.root").exists()


def test_file_without_events_tree_is_exit_2(sample: Sample, tmp_path: Path) -> None:
    other = tmp_path / "other.root"
    with uproot.recreate(other) as file:
        file["hits"] = {"x": np.arange(3)}
    run = _run(other, sample.constants, tmp_path / "out.root", "--beam-energies=10",
               "--energy-max=100")  # fmt: skip
    assert run.returncode == 2
    assert str(other) in run.stderr and "'events'" in run.stderr
