"""Seed 003: the Calibr-A-Ton binning and constants, the per-layer and Calibr-A-Ton fits."""

from __future__ import annotations

import json
import math
import pickle
import sys
from collections.abc import Callable
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from calocoffea.binned import (
    BinnedConstants,
    CalibratonBinning,
    default_fiducial_rings,
    layer_tables,
    load_binned,
    quantile_edges,
)
from calocoffea.cellcoords import rings_and_angles
from calocoffea.constants import Provenance
from calocoffea.exceptions import (
    FitError,
    FitWarning,
    GeometryMismatchError,
    MethodOptionsError,
    MissingBranchError,
)
from calocoffea.geometry import get_geometry
from calocoffea.io import read_events, read_metadata, write_events
from calocoffea.plugins.calibraton import (
    Calibraton,
    apply_to_events,
    hit_energies,
    resolution_by_energy,
    response,
    uncalibrated_energies,
)
from calocoffea.plugins.per_layer import PerLayer
from calocoffea.runner import fit_files
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate

pytest.importorskip("torch")

# ------------------------------------------------------------------------------ helpers


Bias = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _write_biased(source: Path, target: Path, factor_of_hits: Bias) -> Path:
    """``source`` with every hit energy multiplied by ``factor_of_hits(cell, energy_mev)``."""
    events = read_events(source)
    geometry = get_geometry(read_metadata(source).geometry)
    energy = ak.to_numpy(ak.flatten(events.hits.energy)).astype(np.float64)
    cell = geometry.cell_index(ak.to_numpy(ak.flatten(events.hits.cellid)))
    biased = (energy * factor_of_hits(cell, energy)).astype(np.float32)
    hits = ak.with_field(events.hits, ak.unflatten(biased, ak.num(events.hits)), "energy")
    scalars = {name: events[name] for name in events.fields if name != "hits"}
    chunk = ak.zip({**scalars, "hit": hits}, depth_limit=1)
    return write_events(target, [chunk], read_metadata(source))


def _binned(geometry_name: str, sample: int = 200_000, seed: int = 1) -> BinnedConstants:
    """Binned constants with random factors on a synthetic hit sample whose layer profile
    depends on the cell energy (so the layer edges of eq. 6 differ between S bins)."""
    geometry = get_geometry(geometry_name)
    ring, theta = rings_and_angles(geometry)
    rng = np.random.default_rng(seed)
    cell = rng.integers(0, geometry.n_cells, sample)
    layer = geometry.cell_layer[cell]
    s = rng.exponential(0.05, sample) * (1.0 + 0.2 * layer)
    n_em = len(geometry.sections[0].layers)
    binning = CalibratonBinning.from_hits(
        layer, ring[cell], theta[cell], s, n_em_layers=n_em, n_layers=geometry.n_layers,
        fiducial_rings=default_fiducial_rings(geometry),
    )  # fmt: skip
    return BinnedConstants(
        tables=layer_tables(geometry, 100.0, 0.015),
        provenance=Provenance("calibraton", geometry.name, geometry.hash),
        binning=binning,
        factors=rng.uniform(0.5, 1.5, binning.n_bins),
    )


# ------------------------------------------------------------------------------ binning


def test_quantile_bins_hold_equal_populations() -> None:
    rng = np.random.default_rng(2)
    s = rng.exponential(0.1, 50_000)
    edges = quantile_edges(s, 12, 0.0, float(s.max()))
    population = np.histogram(s, edges)[0]
    assert edges.size == 13
    assert np.all(np.abs(population - s.size / 12) <= 2)  # continuous values: exact
    # discrete values (rings of HGCAL, 6 r cells each): off by at most one value's count
    ring = rng.choice(np.arange(1, 27), 50_000, p=np.arange(1, 27) / np.arange(1, 27).sum())
    edges = quantile_edges(ring, 8, 0.5, 26.5)
    np.testing.assert_array_equal(edges % 1, 0.5)
    population = np.histogram(ring, edges)[0]
    largest = np.bincount(ring).max()
    assert edges.size == 9
    assert np.all(np.abs(population - ring.size / 8) <= largest)
    # fewer distinct values than bins: merged, one bin per value
    assert quantile_edges(np.array([1, 2, 2, 3]), 8, 0.5, 3.5).tolist() == [0.5, 1.5, 2.5, 3.5]


def test_layer_edges_per_energy_bin_eq6() -> None:
    constants = _binned("hgcal_ee")
    b = constants.binning
    assert b.bins["layer"] == [12] * 12 and (b.n_ring, b.n_theta, b.n_s) == (8, 6, 12)
    assert b.n_bins == 6912  # seed 003: 12 x 8 x 6 x 12
    # rebuild the sample: for every S bin, the layer bins hold about equal populations
    geometry = get_geometry("hgcal_ee")
    ring, _ = rings_and_angles(geometry)
    rng = np.random.default_rng(1)
    cell = rng.integers(0, geometry.n_cells, 200_000)
    layer = geometry.cell_layer[cell]
    s = rng.exponential(0.05, 200_000) * (1.0 + 0.2 * layer)
    fiducial = ring[cell] <= 26
    s_bin = np.clip(np.searchsorted(b.s_edges[1:-1], s, side="right"), 0, 11)
    for k, edges in enumerate(b.layer_edges):
        in_bin = layer[fiducial & (s_bin == k)]
        population = np.histogram(in_bin, edges)[0]
        largest = np.bincount(in_bin).max()
        assert np.all(np.abs(population - in_bin.size / 12) <= largest), k
    # the energy-dependent profile moves the layer edges between S bins (eq. 6)
    assert b.layer_edges[0] != b.layer_edges[-1]
    assert np.mean(b.layer_edges[-1]) > np.mean(b.layer_edges[0])


def test_non_fiducial_rings_keep_one() -> None:
    constants = _binned("hgcal_ee")
    assert constants.binning.fiducial_rings == default_fiducial_rings(get_geometry("hgcal_ee"))
    assert constants.binning.fiducial_rings == 26
    rings = np.array([1, 26, 27, 35, 0])
    factors = constants.evaluate(np.full(5, 3), rings, np.full(5, 1.0), np.full(5, 0.2))
    assert np.all(factors[2:] == 1.0)
    assert np.all(factors[:2] != 1.0)
    assert default_fiducial_rings(get_geometry("cepc_ahcal")) == 6  # 26/35 of 9 square rings


def test_hadronic_section_has_one_energy_binning() -> None:
    constants = _binned("calice_siw_ecal_ahcal")
    b = constants.binning
    assert b.n_em_layers == 30 and b.n_hadronic == 12
    assert b.n_bins == b.n_em_bins + 12
    # a hadronic cell's factor depends on its energy only
    n = 50
    layer = np.full(n, 40)
    s = np.full(n, 0.3)
    factors = constants.evaluate(layer, np.arange(1, n + 1), np.linspace(0, 6, n), s)
    assert np.unique(factors).size == 1
    s_bin = np.searchsorted(b.hadronic_s_edges[1:-1], 0.3, side="right")
    assert factors[0] == constants.factors[b.n_em_bins + s_bin]


@pytest.mark.parametrize("geometry", ["hgcal_ee", "calice_siw_ecal_ahcal"])
def test_correctionlib_export_matches_evaluate(geometry: str, tmp_path: Path) -> None:
    constants = _binned(geometry)
    g = get_geometry(geometry)
    ring, theta = rings_and_angles(g)
    rng = np.random.default_rng(4)
    cell = rng.integers(0, g.n_cells, 20_000)
    layer = g.cell_layer[cell]
    s = rng.exponential(0.2, cell.size)
    s[:10] = [0.0, 1e-9, 1e3, *constants.binning.s_edges[1:8]]  # edges and beyond
    expected = constants.evaluate(layer, ring[cell], theta[cell], s)
    correction = constants.correction_set()["calibraton"]
    got = correction.evaluate(layer, ring[cell], theta[cell], s)
    # the same bin everywhere, values on edges included; factors to the last digit that
    # correctionlib's JSON reader keeps
    np.testing.assert_allclose(got, expected, rtol=1e-15, atol=0)
    assert np.any(expected == 1.0) and np.any(expected != 1.0)
    # and through the saved file
    path = constants.save(tmp_path / "c.json")
    import correctionlib

    from_file = correctionlib.CorrectionSet.from_file(str(path))["calibraton"]
    np.testing.assert_allclose(
        from_file.evaluate(layer, ring[cell], theta[cell], s), expected, rtol=1e-15
    )


def test_save_load_round_trip_and_geometry_check(tmp_path: Path) -> None:
    constants = _binned("hgcal_ee")
    path = constants.save(tmp_path / "calibraton.json")
    loaded = load_binned(path, geometry="hgcal_ee")
    assert loaded.binning == constants.binning
    np.testing.assert_array_equal(loaded.factors, constants.factors)
    assert loaded.provenance == constants.provenance
    assert set(loaded.tables) == {"absorber_correction", "threshold_mev"}
    np.testing.assert_array_equal(
        loaded.tables["absorber_correction"].values, constants.tables["absorber_correction"].values
    )
    payload = json.loads(path.read_text())
    assert [c["name"] for c in payload["corrections"]][-1] == "calibraton"
    with pytest.raises(GeometryMismatchError, match="hgcal_ee"):
        load_binned(path, geometry="cepc_ahcal")
    with pytest.raises(GeometryMismatchError):
        hit_energies(constants, "cepc_ahcal", np.array([0]), np.array([1.0]))


# ------------------------------------------------------------------------------ per layer

N_PER_POINT = 2500  # electrons per energy point in cepc_ahcal (7000 for training)
ENERGIES = (10.0, 20.0, 40.0, 60.0)


@pytest.fixture(scope="module")
def ahcal(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("ahcal")
    beam = Beam(ENERGIES, size_mm=20.0)
    plain = simulate("cepc_ahcal", "e-", beam, N_PER_POINT, 11, work / "e.root")
    geometry = get_geometry("cepc_ahcal")
    factors = np.random.default_rng(11).uniform(0.6, 1.5, geometry.n_layers)
    biased = _write_biased(
        plain, work / "biased.root", lambda cell, e: factors[geometry.cell_layer[cell]]
    )
    np.save(work / "factors.npy", factors)
    return {"plain": plain, "biased": biased, "factors": work / "factors.npy"}


def _layer_energy_fraction(path: Path) -> np.ndarray:
    events = read_events(path)
    energy = np.bincount(
        ak.to_numpy(ak.flatten(events.hits.layer)).astype(np.int64),
        weights=ak.to_numpy(ak.flatten(events.hits.energy)),
        minlength=get_geometry("cepc_ahcal").n_layers,
    )
    return energy / energy.sum()


def _pairs(values: np.ndarray, layers: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted means of ``values`` over consecutive pairs of ``layers``."""
    pairs = layers[: layers.size // 2 * 2].reshape(-1, 2)
    return np.array([np.average(values[p], weights=weights[p]) for p in pairs])


def test_per_layer_recovers_layer_factors(ahcal: dict[str, Path]) -> None:
    """eq. 4 on electrons whose layers were scaled by known factors f in [0.6, 1.5].

    The fit on the scaled hits, times f, should equal the fit on the plain hits up to the
    common absorber scale. The per-layer problem is ill-conditioned, though: adjacent
    layers see nearly proportional energies, so alternating patterns of constants barely
    change the loss (condition number ~1e10 here; a bootstrap of the exact L2 optimum of
    1400 showers spreads the dominant layers' constants by ~6 %, and Adam runs with other
    seeds or samples end up to ~15 % apart in single layers even with 7000 showers). What the
    sample determines well is the constant of pairs of adjacent layers: with 7000 training
    showers they agree within 6.3 % (3 samples x 2 seeds); we allow 10 %. The constants
    follow 1/f (correlation of the logarithms >= 0.984 in those runs; we ask 0.95), and the
    calibrated shower energies of both fits agree to < 0.4 % where the scaled hits alone
    differ by ~2 %."""
    options = {"batch_showers": 200, "learning_rate": 0.05, "epochs": 30, "patience": 0,
               "threshold_mev": 0.0}  # fmt: skip
    plain, _ = fit_files(PerLayer("cepc_ahcal", **options), [ahcal["plain"]])
    biased, _ = fit_files(PerLayer("cepc_ahcal", **options), [ahcal["biased"]])
    f = np.load(ahcal["factors"])
    fraction = _layer_energy_fraction(ahcal["plain"])
    dominant = np.flatnonzero(fraction > 0.03)  # the layers that carry the energy
    assert dominant.size >= 8
    scale = {
        name: c.tables["layer_scale"].values * c.tables["absorber_correction"].values
        for name, c in (("plain", plain), ("biased", biased))
    }
    ratio = _pairs(scale["biased"] * f, dominant, fraction) / _pairs(
        scale["plain"], dominant, fraction
    )
    assert np.max(np.abs(ratio / np.mean(ratio) - 1.0)) < 0.10, ratio
    log_scale = np.log(scale["biased"][dominant])
    assert np.corrcoef(log_scale, -np.log(f[dominant]))[0, 1] > 0.95
    # shower by shower, the two fits calibrate to the same energy
    e_plain, _ = apply_to_events(plain, read_events(ahcal["plain"]))
    biased_events = read_events(ahcal["biased"])
    e_biased, _ = apply_to_events(biased, biased_events)
    a = biased.tables["absorber_correction"].values[0]
    e_scaled = uncalibrated_energies(biased_events, a, threshold_mev=0.0)
    assert np.std(e_biased / e_plain - 1.0) < 0.4 * np.std(e_scaled / e_plain - 1.0)
    q = biased.provenance.fit_quality
    assert q["test_loss_best"] < q["test_loss_initial"]
    assert not q["stopped_early"] and q["epochs_run"] == 30
    assert biased.tables["layer_scale"].binning == "layer"


# ------------------------------------------------------------------------------ Calibr-A-Ton


#: the known bias per (ring, S) of seed 003 eq. 8 and 9 (S [GeV] ~ E [MeV] / 10 here)
def _ring_energy_bias(ring: np.ndarray) -> Bias:
    def bias(cell: np.ndarray, energy: np.ndarray) -> np.ndarray:
        s = energy / 10.0
        return np.where(ring[cell] < 15, 0.9, 1.1) * (0.6 + 0.4 / (1.0 + np.exp(-10.0 * s)))

    return bias


@pytest.fixture(scope="module")
def hgcal(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("hgcal")
    ring, _ = rings_and_angles(get_geometry("hgcal_ee"))
    beam = Beam((20.0, 60.0), size_mm=120.0)  # mostly inside the 26 fiducial rings
    files = {}
    for name, n, seed in (("train", 750, 1), ("eval", 500, 2)):
        plain = simulate("hgcal_ee", "e-", beam, n, seed, work / f"{name}.root")
        files[name] = _write_biased(plain, work / f"{name}_biased.root", _ring_energy_bias(ring))
        files[f"{name}_plain"] = plain
    return files


@pytest.fixture(scope="module")
def hgcal_fits(hgcal: dict[str, Path]) -> dict:
    common = {"batch_showers": 50, "learning_rate": 0.02, "epochs": 15, "patience": 3}
    per_layer, _ = fit_files(PerLayer("hgcal_ee", **common), [hgcal["train"]])
    small = {"bins_layer": 4, "bins_ring": 4, "bins_theta": 1, "bins_s": 4}
    calibraton, _ = fit_files(Calibraton("hgcal_ee", **common, **small), [hgcal["train"]])
    return {"per_layer": per_layer, "calibraton": calibraton}


def test_calibraton_undoes_ring_and_energy_bias(hgcal: dict[str, Path], hgcal_fits: dict) -> None:
    biased = read_events(hgcal["eval"])
    plain = read_events(hgcal["eval_plain"])
    e_ref = ak.to_numpy(biased.beam_energy)
    resolution = {}
    for name, constants in hgcal_fits.items():
        e_cal, _ = apply_to_events(constants, biased)
        resolution[name] = resolution_by_energy(response(e_cal, e_ref), e_ref)
    a = hgcal_fits["calibraton"].provenance.fit_quality["absorber_correction"]
    for name, events in (("unbiased", plain), ("biased", biased)):
        resp = response(uncalibrated_energies(events, a), e_ref)
        resolution[name] = resolution_by_energy(resp, e_ref)
    unbiased = resolution["unbiased"].resolution
    # 250 showers per point: RMS/median known to ~5 %, far below the bias effect (x 2-3)
    assert np.all(resolution["biased"].resolution > 1.5 * unbiased)
    gap = {m: np.abs(resolution[m].resolution - unbiased) for m in ("per_layer", "calibraton")}
    # 3 samples x 3 seeds: calibraton's gap is at most 0.19 of per_layer's
    assert np.all(gap["calibraton"] < 0.5 * gap["per_layer"])
    # the per-layer fit cannot undo a ring or energy bias: it stays near the biased value
    assert np.all(resolution["per_layer"].resolution > 0.9 * resolution["biased"].resolution)
    assert np.all(np.abs(resolution["calibraton"].median - 1.0) < 0.02)


def test_calibraton_loss_decreases_and_is_recorded(hgcal_fits: dict) -> None:
    q = hgcal_fits["calibraton"].provenance.fit_quality
    # 3 samples x 3 seeds: best / initial test loss 0.39-0.55, last / first train 0.61-0.77
    assert q["test_loss_best"] < 0.7 * q["test_loss_initial"]
    steps = q["train_loss_steps"]
    assert len(steps) >= 5 and np.mean(steps[-3:]) < 0.9 * steps[0]
    assert len(q["test_loss_epoch"]) == q["epochs_run"] == len(q["train_loss_epoch"])
    assert q["learning_rate_steps"][-1] < q["learning_rate_steps"][0]  # cosine annealing
    assert q["absorber_correction"] > 1
    assert q["showers_train"] + q["showers_test"] == q["fiducial_selection"]["kept"]
    assert q["bins"]["factors"] == 64 and q["empty_bins"]["count"] == 0
    constants = hgcal_fits["calibraton"]
    assert isinstance(constants, BinnedConstants)
    assert constants.provenance.method == "calibraton"


def test_early_stopping(hgcal: dict[str, Path]) -> None:
    method = PerLayer("hgcal_ee", batch_showers=50, learning_rate=0.05, epochs=40, patience=1,
                      tolerance=0.01)  # fmt: skip
    constants, _ = fit_files(method, [hgcal["train"]])
    q = constants.provenance.fit_quality
    assert q["stopped_early"] and q["epochs_run"] < 40
    assert q["best_epoch"] == q["epochs_run"] - 1  # one stale epoch with patience 1
    losses = [q["test_loss_initial"], *q["test_loss_epoch"]]
    assert q["test_loss_best"] == losses[q["best_epoch"]]
    assert min(losses) > q["test_loss_best"] * (1 - 0.01)  # no later epoch improved by 1 %


# ------------------------------------------------------------------------------ bad input


def test_missing_torch_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'calocoffea\[train\]'"):
        Calibraton("hgcal_ee").fit(["unused.root"])


def test_too_few_showers(tmp_path: Path) -> None:
    path = simulate("hgcal_ee", "e-", Beam((30.0,), size_mm=50.0), 30, 3, tmp_path / "few.root")
    with pytest.warns(FitWarning, match=r"bins hold no training hit and keep the factor 1"):
        constants, _ = fit_files(Calibraton("hgcal_ee", epochs=1, bins_ring=40), [path])
    empty = constants.provenance.fit_quality["empty_bins"]
    assert empty["count"] > 0 and set(empty["first"][0]) == {"s", "layer", "ring", "theta"}
    assert isinstance(constants, BinnedConstants)
    bins = constants.provenance.fit_quality["bins"]
    assert bins["ring"] <= 26 < bins["requested"][1] == 40  # one bin per ring at most: merged
    one = simulate("hgcal_ee", "e-", Beam((30.0,)), 1, 3, tmp_path / "one.root")
    with pytest.raises(FitError, match="1 shower"):
        fit_files(Calibraton("hgcal_ee"), [one])


def test_missing_reference_energy(hgcal: dict[str, Path]) -> None:
    with pytest.raises(MissingBranchError, match=r"'e_true'.*reference=<field>"):
        fit_files(PerLayer("hgcal_ee", reference="e_true"), [hgcal["eval"]])


def test_constants_for_another_geometry_are_refused(ahcal: dict, hgcal_fits: dict) -> None:
    events = read_events(ahcal["plain"])
    for constants in hgcal_fits.values():
        with pytest.raises(GeometryMismatchError):
            apply_to_events(constants, events)  # cell ids of cepc_ahcal
        with pytest.raises(GeometryMismatchError, match="cepc_ahcal"):
            apply_to_events(constants, events, geometry="cepc_ahcal")


def test_methods_pickle_without_cached_coordinates() -> None:
    method = Calibraton("hgcal_ee", bins_s=4)
    ring, _ = method.cell_coordinates
    clone = pickle.loads(pickle.dumps(method))
    assert "cell_coordinates" not in clone.__dict__
    assert clone.options == method.options
    np.testing.assert_array_equal(clone.cell_coordinates[0], ring)


def test_bad_options() -> None:
    with pytest.raises(MethodOptionsError, match="unknown loss 'l3'"):
        Calibraton("hgcal_ee", loss="l3")
    with pytest.raises(MethodOptionsError, match="train_fraction"):
        PerLayer("hgcal_ee", train_fraction=1.5)
    assert Calibraton("hgcal_ee", loss="l2").options.loss == "l2"
    assert math.isclose(Calibraton("hgcal_ee").options.threshold_mev, 0.01491)


def test_command_line_fit_saves_the_binned_constants(tmp_path: Path) -> None:
    """`calibrate fit --method calibraton` writes the binned constants as they are (not laid
    over a base set, which would drop them); they load back for the geometry."""
    from calocoffea.binned import BinnedConstants, load_binned
    from calocoffea.cli.main import main
    from calocoffea.simulation.beam import Beam
    from calocoffea.simulation.run import simulate

    sim = simulate("hgcal_ee", "e-", Beam(energies_gev=(10.0, 20.0, 40.0)), 150, 3,
                   tmp_path / "e.root")  # fmt: skip
    out = tmp_path / "calibraton.json"
    options = ["epochs=2", "bins_layer=3", "bins_ring=2", "bins_theta=2", "bins_s=3"]
    argv = ["calibrate", "fit", "--method", "calibraton", str(sim), "-o", str(out)]
    option_args = [x for o in options for x in ("--option", o)]
    assert main([*argv, *option_args]) == 0
    loaded = load_binned(out, geometry="hgcal_ee")
    assert isinstance(loaded, BinnedConstants) and np.all(np.isfinite(loaded.factors))
    # --base does not apply to binned constants
    assert main([*argv, *option_args, "--base", str(out)]) == 2


# ------------------------------------------------------------------------------ per cell


def test_per_cell_binning_gives_every_cell_its_own_bin() -> None:
    """bins 0 for layer, ring and theta: each fiducial cell of cepc_ahcal has its own bin,
    whatever the hit sample, and the correctionlib export evaluates to the same factors."""
    geometry = get_geometry("cepc_ahcal")
    ring, theta = rings_and_angles(geometry)
    rng = np.random.default_rng(4)
    cell = rng.integers(0, geometry.n_cells, 5_000)  # most cells are not in the sample
    assert np.unique(cell).size < geometry.n_cells
    binning = CalibratonBinning.from_hits(
        geometry.cell_layer[cell], ring[cell], theta[cell], rng.exponential(0.05, cell.size),
        n_em_layers=geometry.n_layers, n_layers=geometry.n_layers, fiducial_rings=9,
        bins=(0, 0, 0, 1), cell_theta=theta[geometry.cell_layer == 0],
    )  # fmt: skip
    flat = binning.index(geometry.cell_layer, ring, theta, np.full(geometry.n_cells, 0.1))
    assert np.unique(flat).size == geometry.n_cells and flat.max() < binning.n_bins
    reachable = binning.reachable(geometry.cell_layer, ring, theta)
    assert reachable.sum() == geometry.n_cells and reachable[flat].all()
    factors = rng.uniform(0.8, 1.2, binning.n_bins)
    constants = BinnedConstants(
        tables=layer_tables(geometry, 30.0, 0.23),
        provenance=Provenance("calibraton", geometry.name, geometry.hash),
        binning=binning,
        factors=factors,
    )
    per_cell = constants.cell_factors(geometry, 0.1)
    np.testing.assert_array_equal(per_cell, factors[flat])
    correction = constants.correction_set()["calibraton"]
    pick = rng.choice(geometry.n_cells, 300, replace=False)
    from_json = [
        correction.evaluate(int(geometry.cell_layer[k]), int(ring[k]), float(theta[k]), 0.1)
        for k in pick
    ]
    np.testing.assert_allclose(from_json, per_cell[pick], rtol=1e-15)  # same bin
    with pytest.raises(GeometryMismatchError):
        constants.cell_factors("hgcal_ee", 0.1)
    with pytest.raises(ValueError, match="cell_theta"):
        CalibratonBinning.from_hits([0], [1], [0.1], [0.1], n_em_layers=40, n_layers=40,
                                    fiducial_rings=9, bins=(0, 0, 0, 1))  # fmt: skip


def _synthetic_showers(path: Path, n: int, factor: np.ndarray, seed: int) -> Path:
    """Showers of 12 hits in 12 of the 32 cells of layers 0-1 around cepc_ahcal's centre,
    each deposit (1-10 MeV) read as factor[cell] x deposit; E_ref [GeV] is the sum of the
    deposits / 25 (an absorber correction of 40): a well-posed per-cell problem without noise."""
    geometry = get_geometry("cepc_ahcal")
    ring, _ = rings_and_angles(geometry)
    cells = np.flatnonzero((geometry.cell_layer <= 1) & (ring <= 2))
    assert cells.size == 32
    rng = np.random.default_rng(seed)
    chosen = np.argsort(rng.random((n, cells.size)), axis=1)[:, :12]
    cell = cells[chosen].ravel()
    deposit = rng.uniform(1.0, 10.0, cell.size)
    cellid = geometry.cellids()[cell]
    x, y, z = geometry.centre(cellid)
    counts = np.full(n, 12)
    hits = ak.unflatten(
        ak.zip({"cellid": cellid, "layer": geometry.cell_layer[cell], "x": x, "y": y, "z": z,
                "energy": (factor[cell] * deposit).astype(np.float32)}),
        counts,
    )  # fmt: skip
    scalars = {"event": np.arange(n), "run": np.zeros(n, np.int32), "pdg": np.full(n, 11),
               "beam_energy": deposit.reshape(n, 12).sum(axis=1) / 25.0,
               "beam_x": np.zeros(n), "beam_y": np.zeros(n)}  # fmt: skip
    muons = simulate("cepc_ahcal", "mu-", Beam((10.0,)), 2, seed, path.with_suffix(".mu.root"))
    return write_events(path, [ak.zip({**scalars, "hit": hits}, depth_limit=1)],
                        read_metadata(muons))  # fmt: skip


def test_calibraton_recovers_per_cell_factors(tmp_path: Path) -> None:
    """Where showers determine every cell (synthetic showers without noise), per-cell bins
    learn 1 / factor up to the common scale: the fit, not the data, limits the precision.
    3 seeds: RMS < 0.005 % after the common scale from an 8-10 % spread (we allow 0.5 %);
    the common scale itself is off by 0.4-2.1 % (the absorber correction is a mean ratio),
    which R² sees: 0.93-0.999 (we ask 0.85)."""
    from calocoffea.scoring import score_constants

    geometry = get_geometry("cepc_ahcal")
    factor = np.random.default_rng(5).uniform(0.83, 1.17, geometry.n_cells)
    path = _synthetic_showers(tmp_path / "cells.root", 3_000, factor, seed=5)
    method = Calibraton(
        "cepc_ahcal", bins_layer=0, bins_ring=0, bins_theta=0, bins_s=1, fiducial_rings=9,
        threshold_mev=0.0, batch_showers=100, learning_rate=0.02, epochs=30, patience=0,
    )  # fmt: skip
    with pytest.warns(FitWarning, match="12928 of 12960 bins hold no training hit"):
        constants, _ = fit_files(method, [path])  # the cells outside the 32
    fitted = constants.cell_factors(geometry, 0.1)
    reached = np.zeros(geometry.n_cells, dtype=bool)
    reached[geometry.cell_index(ak.to_numpy(ak.flatten(read_events(path).hits.cellid)))] = True
    score = score_constants(fitted, 1.0 / factor, reached)
    assert score.cells == 32 and score.true_spread > 0.08
    assert score.rms_scaled < 0.005, score.line()
    assert score.r2 > 0.85, score.line()
    assert np.all(fitted[~reached] == 1.0)  # cells no shower reaches keep 1
    assert constants.provenance.fit_quality["empty_bins"]["count"] == geometry.n_cells - 32


@pytest.mark.filterwarnings("ignore::calocoffea.exceptions.FitWarning")  # few showers, empty bins
def test_shower_rings_select_the_impacts(hgcal: dict[str, Path]) -> None:
    inner = Calibraton("hgcal_ee", shower_rings=5, epochs=1, bins_s=2, bins_theta=1)
    constants, _ = fit_files(inner, [hgcal["eval"]])
    selection = constants.provenance.fit_quality["fiducial_selection"]
    events = read_events(hgcal["eval"])
    geometry = get_geometry("hgcal_ee")
    ring, _ = rings_and_angles(geometry)
    x, y = np.asarray(events.beam_x), np.asarray(events.beam_y)
    cellid, inside = geometry.cell_of(np.zeros(x.size, np.int64), x, y)
    impact = np.where(inside, ring[np.maximum(geometry.cell_index(cellid), 0)], 0)
    assert selection["rings"] == 5
    assert selection["kept"] == int(np.sum(inside & (impact >= 1) & (impact <= 5))) > 0
    with pytest.raises(MethodOptionsError, match="shower_rings"):
        Calibraton("hgcal_ee", shower_rings=-1)
    with pytest.raises(MethodOptionsError, match="or 0 for one bin per cell"):
        Calibraton("hgcal_ee", bins_theta=-1)
