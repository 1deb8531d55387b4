"""calocoffea.rdf: the C++ chain in RDataFrame equals calocoffea's, bit for bit."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

pytest.importorskip("ROOT")

from calocoffea import rdf
from calocoffea.calibration import CalibrationSteps, calibrate
from calocoffea.conditions import Conditions, nominal
from calocoffea.constants import DenseConstants, Table, nominal_constants
from calocoffea.digitization import DigitizationOptions
from calocoffea.geometry import Geometry, decode_cellid, get_geometry
from calocoffea.io import read_events
from calocoffea.runner import digitize_files
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate

GEOMETRY = "cepc_ahcal"
SEED = 11


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Two simulated files (low and high energy: saturation and clipping happen) and their
    raw versions, digitised by calocoffea's processor."""
    directory = tmp_path_factory.mktemp("rdf")
    sims, raws = [], []
    for k, energy in enumerate((10.0, 120.0)):
        sim = simulate(
            GEOMETRY, "e-", Beam(energies_gev=(energy,)), 60, 3 + k, directory / f"s{k}.root"
        )
        sims.append(sim)
        raws.append(digitize_files([sim], directory / f"r{k}.root", seed=SEED).output)
    return {"sim": sims, "raw": raws}


def _flat(path: Path, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
    hits = read_events(path).hits
    return {f: ak.to_numpy(ak.flatten(hits[f])) for f in fields}


def _as_flat(array: object) -> np.ndarray:
    return np.concatenate([np.asarray(list(v)) for v in array]) if len(array) else np.array([])  # type: ignore[arg-type]


def test_digitizer_equals_the_digitize_processor_bit_for_bit(files: dict[str, list[Path]]) -> None:
    import ROOT

    conditions = nominal(GEOMETRY)
    df = ROOT.RDataFrame("events", [str(p) for p in files["sim"]])
    df = rdf.define_digitized(df, files["sim"], conditions, SEED)
    got = df.AsNumpy(["raw_energy", "raw_gain", "raw_flags", "raw_layer"])
    expected = {}
    for path in files["raw"]:
        for name, values in _flat(path, ("energy", "gain", "flags", "layer")).items():
            expected.setdefault(name, []).append(values)
    for name in ("energy", "gain", "flags", "layer"):
        want = np.concatenate(expected[name])
        have = _as_flat(got[f"raw_{name}"])
        assert have.size == want.size > 1000
        np.testing.assert_array_equal(have, want.astype(have.dtype), err_msg=name)
    assert np.count_nonzero(np.concatenate(expected["gain"])) > 0  # low gain was exercised


def test_digitizer_keys_do_not_depend_on_threads(files: dict[str, list[Path]]) -> None:
    import ROOT

    conditions = nominal(GEOMETRY)
    sums = []
    for threads in (0, 2):
        if threads:
            ROOT.EnableImplicitMT(threads)
        try:
            df = ROOT.RDataFrame("events", [str(p) for p in files["sim"]])
            df = rdf.define_digitized(df, files["sim"], conditions, SEED)
            df = df.Define("adc_sum", "Sum(raw_energy)").Define("entry", "rdfentry_")
            columns = df.AsNumpy(["adc_sum", "entry"])
            sums.append(columns["adc_sum"][np.argsort(columns["entry"])])
        finally:
            if threads:
                ROOT.DisableImplicitMT()
    np.testing.assert_array_equal(sums[0], sums[1])


def _stressed_raw(path: Path) -> ak.Array:
    """Raw events with every 50th hit flagged saturated and every 70th at 4095 ADC on the low
    gain (beyond the asymptote of the non-linearity for some cells): every branch of the chain
    runs, whatever the sample."""
    events = read_events(path)
    hits = events.hits
    counts = ak.num(hits)
    flat = {name: ak.to_numpy(ak.flatten(hits[name])).copy() for name in hits.fields}
    flat["flags"][::50] |= 2
    flat["energy"][::70] = 4095.0
    flat["gain"][::70] = 1
    hits = ak.zip({name: ak.unflatten(v, counts) for name, v in flat.items()})
    return ak.with_field(events, hits, "hits")


def _as_correctionlib_reads(
    path: Path, dense: DenseConstants, geometry: Geometry
) -> DenseConstants:
    """``dense`` with the per-cell values that correctionlib's evaluator reads from ``path``."""
    import correctionlib

    cset = correctionlib.CorrectionSet.from_file(str(path))
    _, layer, i, j = decode_cellid(geometry.cellids())
    cells = {
        name: cset[name].evaluate(
            "value", layer.astype(np.int32), i.astype(np.int32), j.astype(np.int32)
        )
        for name in dense.cells
    }
    return dataclasses.replace(dense, cells=cells)


@pytest.mark.parametrize("lookup", ["dense", "correctionlib"])
@pytest.mark.parametrize("to_gev", [False, True])
def test_calibration_equals_calocoffea_bit_for_bit(
    files: dict[str, list[Path]], tmp_path: Path, lookup: str, to_gev: bool
) -> None:
    geometry = get_geometry(GEOMETRY)
    # constants of another draw: they differ from cell to cell, so a wrong lookup cannot pass;
    # a strong non-linearity puts the asymptote (b X / a, 87k ADC) below the 4095 LG hits
    constants = nominal_constants(Conditions.draw(GEOMETRY, seed=5))
    a = constants.tables["nonlinearity_a"]
    constants = constants.replace(
        nonlinearity_a=Table("cell", a.keys, a.values + 0.9, a.uncertainties)
    )
    path = constants.save(tmp_path / "constants.json")
    steps = CalibrationSteps(to_gev=to_gev)
    events = _stressed_raw(files["raw"][1])
    df = rdf.to_rdataframe(events)
    df = rdf.define_calibrated(df, path, "energy_calibrated", steps=steps, lookup=lookup)  # type: ignore[arg-type]
    have = _as_flat(df.AsNumpy(["energy_calibrated"])["energy_calibrated"])
    f = {k: ak.to_numpy(ak.flatten(events.hits[k])) for k in events.hits.fields}
    dense = constants.dense(geometry)
    if lookup == "correctionlib":  # its JSON parser is not exact to the last bit: compare
        dense = _as_correctionlib_reads(path, dense, geometry)  # with the values it reads
    result = calibrate(
        f["energy"], f["gain"], f["flags"], geometry.cell_index(f["cellid"]), f["layer"],
        dense, steps,
    )  # fmt: skip
    np.testing.assert_array_equal(have, result.energy)
    beyond = ((result.flags & 2) != 0) & ((f["flags"] & 2) == 0)
    assert np.count_nonzero(beyond) > 0  # the asymptote clip ran


def test_cells_outside_the_geometry_raise(files: dict[str, list[Path]]) -> None:
    import ROOT

    constants = nominal_constants(nominal(GEOMETRY))
    chain = rdf.calibrator(constants)
    df = ROOT.RDataFrame(1).Define("e", "ROOT::RVecF{500.f}").Define("g", "ROOT::RVec<UChar_t>{0}")
    df = df.Define("f", "ROOT::RVec<UInt_t>{0}").Define("l", "ROOT::RVec<Short_t>{3}")
    df = df.Define("i", "ROOT::RVec<Short_t>{99}").Define(
        "out", chain.call(("e", "g", "f", "l", "i", "l"))
    )
    with pytest.raises(Exception, match="not a cell of the geometry"):
        df.AsNumpy(["out"])


def test_awkward_round_trip(files: dict[str, list[Path]]) -> None:
    events = read_events(files["raw"][0])
    df = rdf.to_rdataframe(events)
    back = rdf.from_rdataframe(df, ["beam_energy", "hit_energy", "hit_layer"])
    assert ak.all(back.beam_energy == events.beam_energy)
    assert ak.all(ak.flatten(back.hits.energy) == ak.flatten(events.hits.energy))
    assert ak.all(ak.num(back.hits) == ak.num(events.hits))


def test_sofie_is_reported() -> None:
    assert rdf.sofie_available() in (True, False)


def test_no_digitizer_options_change_without_random_numbers(files: dict[str, list[Path]]) -> None:
    """Zero suppression off keeps every hit: as many raw hits as simulated ones."""
    import ROOT

    options = DigitizationOptions(zero_suppression=False)
    df = ROOT.RDataFrame("events", [str(files["sim"][0])])
    df = rdf.define_digitized(df, files["sim"][:1], nominal(GEOMETRY), SEED, options)
    n = df.Define("n", "int(raw_energy.size())").Sum("n").GetValue()
    assert n == ak.sum(ak.num(read_events(files["sim"][0]).hits))


def test_entry_in_file_with_threads(tmp_path: Path) -> None:
    """With implicit multi-threading rdfentry_ counts in the order tasks start, not file by
    file: the digitiser's key must use the entry in the file (the ``event`` branch of a
    simulated file) whatever the task order."""
    import ROOT

    sims = [
        simulate(
            GEOMETRY,
            "mu-",
            Beam(energies_gev=(10.0,)),
            300 + 50 * k,
            20 + k,
            tmp_path / f"m{k}.root",
        )
        for k in range(4)
    ]
    ROOT.EnableImplicitMT(2)
    try:
        df = ROOT.RDataFrame("events", [str(p) for p in sims])
        df = rdf.define_digitized(df, sims, nominal(GEOMETRY), SEED)
        columns = df.AsNumpy(["cc_entry", "event", "rdfentry_"])
    finally:
        ROOT.DisableImplicitMT()
    np.testing.assert_array_equal(columns["cc_entry"], columns["event"])
    assert columns["event"].size == sum(300 + 50 * k for k in range(4))
