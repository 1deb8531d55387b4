"""Detector effects for pseudo-data (seed 002 eq. 1.1-1.3, seed 003 eq. 7-9): formulas, the
Beta(2,2) marginals, sub-module correlation, empty-cell noise, zero suppression, dead cells,
the truth, and the file job on every executor and chunking.

Tolerances are k = 5 standard errors of the sample at hand (a false alarm about once in two
million per check)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
from scipy import special, stats

from calocoffea.cellcoords import rings_and_angles
from calocoffea.effects import (
    Applied,
    Effects,
    apply_effects,
    apply_effects_files,
    beta22_cdf,
    beta22_ppf,
    event_keys,
    f_energy,
    f_layer,
    f_ring,
    seed003_bias,
)
from calocoffea.exceptions import (
    GeometryError,
    InputFileError,
    OutputPathError,
    SimulationConfigError,
)
from calocoffea.geometry import Geometry, get_geometry
from calocoffea.io import read_events, read_metadata
from calocoffea.runner import RunOptions
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate

K = 5.0  # standard errors


@pytest.fixture(scope="module")
def hgcal() -> Geometry:
    return get_geometry("hgcal_ee")


@pytest.fixture(scope="module")
def cusi() -> Geometry:
    return get_geometry("cusi_module")


def _toy_hits(
    geometry: Geometry, n_events: int, per_event: int, seed: int, energy_mev: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(energy [MeV], cell, counts, event keys): ``per_event`` distinct cells per event."""
    generator = np.random.default_rng(seed)
    cells = np.concatenate(
        [generator.choice(geometry.n_cells, per_event, replace=False) for _ in range(n_events)]
    )
    if energy_mev is None:
        energy = generator.exponential(1.0, cells.size)
    else:
        energy = np.full(cells.size, energy_mev)
    counts = np.full(n_events, per_event, np.int64)
    return energy, cells, counts, event_keys(seed, "toy", np.arange(n_events))


def _latent(value: np.ndarray, scale: float) -> np.ndarray:
    """The copula's latent normal of a scaled Beta(2,2) value in [-scale, scale]."""
    return np.asarray(special.ndtri(beta22_cdf(0.5 * (1.0 + value / scale))))


# ------------------------------------------------------------------------ formulas


def test_seed003_bias_functions_at_their_breakpoints() -> None:
    assert f_layer([1, 2, 3, 26]) == pytest.approx([1.0, 1.3, 1.325, 1.3 + 0.025 * 24])
    assert f_ring([1, 14, 15, 35]) == pytest.approx([0.9, 0.9, 1.1, 1.1])
    expected = [0.8, 0.6 + 0.4 / (1.0 + math.exp(-1.0)), 1.0, 0.6]
    assert f_energy([0.0, 0.1, 1e3, -1e3]) == pytest.approx(expected)
    assert seed003_bias(2, 15, 0.0, 0.0) == pytest.approx(1.3 * 1.1 * 0.8)


def test_beta22_quantile_inverts_the_cdf() -> None:
    u = np.linspace(0.0, 1.0, 1001)
    assert beta22_cdf(beta22_ppf(u)) == pytest.approx(u, abs=1e-12)
    assert beta22_ppf([0.0, 0.5, 1.0]) == pytest.approx([0.0, 0.5, 1.0])


def test_biased_energy_is_the_product_of_the_factors(hgcal: Geometry) -> None:
    energy, cell, counts, keys = _toy_hits(hgcal, 20, 200, seed=1)
    layer = hgcal.cell_layer[cell]
    ring = rings_and_angles(hgcal)[0][cell]
    weight = hgcal.layer_property("mip_sampling_fraction") * hgcal.layer_property("e_hat")
    for correction, absorber in ((None, 1.0 / weight[layer]), (75.9, 75.9)):
        effects = Effects(bias="seed003", absorber_correction=correction)
        out = apply_effects(energy, cell, counts, keys, effects, hgcal)
        assert np.array_equal(out.source, np.arange(energy.size))
        factor = f_layer(layer + 1) * f_ring(ring) * f_energy(energy * absorber / 1000.0)
        assert out.energy_mev == pytest.approx(factor * energy, rel=1e-12)
        assert np.array_equal(out.edep_mev, energy)

    def halve(layer: np.ndarray, ring: np.ndarray, theta: np.ndarray, s: np.ndarray) -> np.ndarray:
        return np.where(layer == 1, 0.5, 1.0) + 0.0 * (ring + theta + s)

    custom = Effects(bias_function=halve)
    assert custom.bias == "custom" and custom.to_dict()["bias"] == "custom"
    out = apply_effects(energy, cell, counts, keys, custom, hgcal)
    assert out.energy_mev == pytest.approx(np.where(layer == 0, 0.5, 1.0) * energy)
    assert np.isnan(custom.cell_factors(hgcal)["factor"]).all()


# ------------------------------------------------------------------------ marginals


def _check_scaled_beta(values: np.ndarray, centre: float, scale: float) -> None:
    """Range, mean and variance of s (2 B - 1) + centre, B ~ Beta(2,2), within K errors."""
    n = values.size
    variance = scale**2 / 5.0  # 4 x Var B(2,2) = 4/20
    assert values.min() >= centre - scale and values.max() <= centre + scale
    assert abs(values.mean() - centre) < K * math.sqrt(variance / n)
    # Var of the sample variance: (mu4 - sigma^4) / n, mu4 = (3 - 6/7) sigma^4 for B(2,2)
    assert abs(values.var() - variance) < K * variance * math.sqrt(8.0 / 7.0 / n)


def test_miscalibration_marginal_and_independence(cusi: Geometry) -> None:
    factors = Effects(miscalibration=0.2, seed=4).cell_factors(cusi)
    c = factors["miscalibration"]
    assert c.shape == (cusi.n_cells,)
    _check_scaled_beta(c, 1.0, 0.2)
    neighbours = np.corrcoef(c[:-1], c[1:])[0, 1]
    assert abs(neighbours) < K / math.sqrt(c.size)
    assert np.array_equal(factors["factor"], c)  # no bias: the factor is C
    assert not factors["dead"].any()
    again = Effects(miscalibration=0.2, seed=4).cell_factors(cusi)["miscalibration"]
    assert np.array_equal(again, c)
    assert not np.array_equal(
        Effects(miscalibration=0.2, seed=5).cell_factors(cusi)["miscalibration"], c
    )


def test_noise_marginal_on_hits(hgcal: Geometry) -> None:
    energy, cell, counts, keys = _toy_hits(hgcal, 2000, 100, seed=2, energy_mev=10.0)
    out = apply_effects(energy, cell, counts, keys, Effects(noise_mev=0.5, bias_mev=0.1), hgcal)
    _check_scaled_beta(out.energy_mev - 10.0 - 0.1, 0.0, 0.5)
    assert out.added == {"noise": 0}  # no zero suppression: hits only


def test_dead_fraction(cusi: Geometry) -> None:
    dead = Effects(dead_fraction=0.01, seed=1).cell_factors(cusi)["dead"]
    n, p = dead.size, 0.01
    assert abs(dead.sum() - n * p) < K * math.sqrt(n * p * (1 - p))


# ------------------------------------------------------------------------ correlation


def test_miscalibration_correlation_within_submodules(cusi: Geometry) -> None:
    rho, scale = 0.6, 0.2
    effects = Effects(miscalibration=scale, submodule_cells=(1, 5, 5), correlation=rho, seed=7)
    factors = effects.cell_factors(cusi)
    c, group = factors["miscalibration"], factors["submodule"]
    assert np.all(np.bincount(group) == 25)  # 50 x 50 x 75 cells in 1 x 5 x 5 blocks
    order = np.argsort(group, kind="stable")
    first, second = order[::25], order[1::25]  # two cells of every sub-module
    _check_scaled_beta(c[first], 1.0, scale)  # one per sub-module: independent values
    n = first.size
    z = _latent(c - 1.0, scale)
    within = np.corrcoef(z[first], z[second])[0, 1]
    assert abs(within - rho) < K * (1 - rho**2) / math.sqrt(n)
    across = np.corrcoef(z[first[:-1]], z[first[1:]])[0, 1]
    assert abs(across) < K / math.sqrt(n)
    spearman = stats.spearmanr(c[first], c[second]).statistic
    assert abs(spearman - 6.0 / math.pi * math.asin(rho / 2.0)) < K / math.sqrt(n)


def test_noise_correlation_within_submodules(cusi: Geometry) -> None:
    rho, scale, n_events = 0.5, 0.4, 20_000
    effects = Effects(noise_mev=scale, submodule_cells=(1, 5, 5), correlation=rho, seed=8)
    group = effects.cell_factors(cusi)["submodule"]
    a, b = np.flatnonzero(group == group[0])[:2]
    other = np.flatnonzero(group != group[0])[0]
    cell = np.tile([a, b, other], n_events)
    counts = np.full(n_events, 3)
    keys = event_keys(8, "toy", np.arange(n_events))
    out = apply_effects(np.full(cell.size, 10.0), cell, counts, keys, effects, cusi)
    eps = (out.energy_mev - 10.0).reshape(n_events, 3)
    _check_scaled_beta(eps[:, 0], 0.0, scale)
    z = _latent(eps, scale)
    assert abs(np.corrcoef(z[:, 0], z[:, 1])[0, 1] - rho) < K * (1 - rho**2) / math.sqrt(n_events)
    assert abs(np.corrcoef(z[:, 0], z[:, 2])[0, 1]) < K / math.sqrt(n_events)


# ------------------------------------------------------------------------ empty cells


def _truncated_cdf(effects: Effects) -> Callable[[np.ndarray], np.ndarray]:
    b, s, thr = effects.bias_mev, effects.noise_mev, effects.zero_suppression_mev
    assert thr is not None
    f_t = beta22_cdf(0.5 * (1.0 + (thr - b) / s))

    def cdf(v: np.ndarray) -> np.ndarray:
        return np.asarray((beta22_cdf(0.5 * (1.0 + (v - b) / s)) - f_t) / (1.0 - f_t))

    return cdf


def _empty_live(
    effects: Effects, geometry: Geometry, cell: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """Empty live cells of every event."""
    dead = effects.cell_factors(geometry)["dead"]
    event = np.repeat(np.arange(counts.size), counts)
    live_hits = np.bincount(event[~dead[cell]], minlength=counts.size)
    return (geometry.n_cells - dead.sum()) - live_hits


def _check_noise_hits(
    out: Applied, effects: Effects, geometry: Geometry, cell: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """Noise-only hits are on empty live cells, once per event, above the threshold, with
    no truth deposit; returns their values."""
    event = np.repeat(np.arange(counts.size), out.counts)
    noise = out.source < 0
    key = event * geometry.n_cells + out.cell
    hit_key = np.repeat(np.arange(counts.size), counts) * geometry.n_cells + cell
    assert np.unique(key).size == key.size
    assert not np.isin(key[noise], hit_key).any()
    assert not effects.cell_factors(geometry)["dead"][out.cell].any()
    assert np.all(out.edep_mev[noise] == 0)
    values = out.energy_mev[noise]
    assert effects.zero_suppression_mev is not None
    assert np.all(values > effects.zero_suppression_mev)
    return np.asarray(values)


def test_empty_cell_noise_count_and_values(cusi: Geometry) -> None:
    effects = Effects(
        noise_mev=0.5, bias_mev=0.15, zero_suppression_mev=0.6, dead_fraction=0.01, seed=9
    )
    energy, cell, counts, keys = _toy_hits(cusi, 200, 300, seed=9, energy_mev=5.0)
    out = apply_effects(energy, cell, counts, keys, effects, cusi)
    p = effects.pass_probability()
    assert p == pytest.approx(1.0 - beta22_cdf(0.95))  # P(2B - 1 > 0.9)
    n_empty = _empty_live(effects, cusi, cell, counts)
    added = np.bincount(
        np.repeat(np.arange(counts.size), out.counts)[out.source < 0], minlength=counts.size
    )
    expected, variance = n_empty * p, n_empty * p * (1 - p)
    assert abs(added.sum() - expected.sum()) < K * math.sqrt(variance.sum())
    chi2 = np.sum((added - expected) ** 2 / variance)  # per-event spread is binomial
    assert abs(chi2 - counts.size) < K * math.sqrt(2 * counts.size)
    assert out.added == {"noise": int(added.sum())}
    # the cells are drawn uniformly among the empty live ones: noise hits per layer
    dead = effects.cell_factors(cusi)["dead"]
    live = ~dead[cell]
    n_layers = cusi.n_layers
    empty = counts.size * np.bincount(cusi.cell_layer[~dead], minlength=n_layers)
    empty = empty - np.bincount(cusi.cell_layer[cell[live]], minlength=n_layers)
    found = np.bincount(cusi.cell_layer[out.cell[out.source < 0]], minlength=n_layers)
    share = found.sum() * empty / empty.sum()
    chi2 = np.sum((found - share) ** 2 / share)
    assert abs(chi2 - (n_layers - 1)) < K * math.sqrt(2 * (n_layers - 1))
    values = _check_noise_hits(out, effects, cusi, cell, counts)
    assert stats.kstest(values, _truncated_cdf(effects)).pvalue > 1e-5


def test_correlated_empty_cell_noise_keeps_the_marginal_rate(cusi: Geometry) -> None:
    effects = Effects(
        noise_mev=0.5,
        bias_mev=0.15,
        zero_suppression_mev=0.6,
        submodule_cells=(1, 10, 10),
        correlation=0.5,
        seed=10,
    )
    energy, cell, counts, keys = _toy_hits(cusi, 200, 300, seed=10, energy_mev=5.0)
    out = apply_effects(energy, cell, counts, keys, effects, cusi)
    added = np.bincount(
        np.repeat(np.arange(counts.size), out.counts)[out.source < 0], minlength=counts.size
    )
    expected = _empty_live(effects, cusi, cell, counts) * effects.pass_probability()
    # correlation widens the spread: take the standard error from the events themselves
    assert abs(added.mean() - expected.mean()) < K * added.std() / math.sqrt(counts.size)
    assert added.std() > 2 * math.sqrt(expected.mean())  # far wider than binomial
    values = _check_noise_hits(out, effects, cusi, cell, counts)
    grid = np.linspace(0.6, 0.65, 20001)
    pdf = np.gradient(_truncated_cdf(effects)(grid), grid)
    mean = float(np.sum(grid * pdf) * (grid[1] - grid[0]))
    event = np.repeat(np.arange(counts.size), out.counts)[out.source < 0]
    means = np.bincount(event, weights=values) / np.maximum(added, 1)
    assert abs(values.mean() - mean) < K * means[added > 0].std() / math.sqrt(counts.size)


def test_results_do_not_depend_on_how_events_are_split(cusi: Geometry) -> None:
    effects = Effects(
        miscalibration=0.1,
        noise_mev=0.5,
        bias_mev=0.15,
        zero_suppression_mev=0.6,
        dead_fraction=0.01,
        submodule_cells=(1, 10, 10),
        correlation=0.3,
        seed=11,
    )
    energy, cell, counts, keys = _toy_hits(cusi, 40, 100, seed=11)
    whole = apply_effects(energy, cell, counts, keys, effects, cusi)
    half = 20 * 100
    first = apply_effects(energy[:half], cell[:half], counts[:20], keys[:20], effects, cusi)
    second = apply_effects(energy[half:], cell[half:], counts[20:], keys[20:], effects, cusi)
    assert np.array_equal(whole.counts, np.concatenate([first.counts, second.counts]))
    assert np.array_equal(whole.cell, np.concatenate([first.cell, second.cell]))
    assert np.array_equal(whole.energy_mev, np.concatenate([first.energy_mev, second.energy_mev]))


# ------------------------------------------------------------------------ removal, truth


def test_zero_suppression_dead_cells_truth_and_cutflow(hgcal: Geometry) -> None:
    energy, cell, counts, keys = _toy_hits(hgcal, 50, 200, seed=12)
    energy[:3] = [np.nan, -1.0, np.inf]
    effects = Effects(zero_suppression_mev=0.3, dead_fraction=0.05, seed=12)
    out = apply_effects(energy, cell, counts, keys, effects, hgcal)
    dead = effects.cell_factors(hgcal)["dead"][cell]
    valid = np.isfinite(energy) & (energy >= 0)
    kept = valid & ~dead & (energy > 0.3)
    assert np.array_equal(out.source, np.flatnonzero(kept))
    assert np.array_equal(out.energy_mev, energy[kept])  # no other effect: unchanged
    assert np.array_equal(out.edep_mev, energy[kept])
    assert out.removed == {
        "invalid_deposit": 3,
        "dead_cell": int(np.count_nonzero(valid & dead)),
        "below_threshold": int(np.count_nonzero(valid & ~dead & (energy <= 0.3))),
    }
    assert out.added == {"noise": 0}

    noisy = Effects(
        miscalibration=0.1,
        noise_mev=0.2,
        bias_mev=0.05,
        zero_suppression_mev=0.2,
        dead_fraction=0.05,
        seed=12,
    )
    out = apply_effects(energy, cell, counts, keys, noisy, hgcal)
    assert out.added["noise"] > 0
    assert energy.size - sum(out.removed.values()) + out.added["noise"] == out.source.size
    assert out.counts.sum() == out.source.size
    from_input = out.source >= 0
    assert np.array_equal(out.edep_mev[from_input], energy[out.source[from_input]])
    assert np.array_equal(out.cell[from_input], cell[out.source[from_input]])
    _check_noise_hits(out, noisy, hgcal, cell, counts)


def test_without_zero_suppression_noise_and_bias_act_on_hits_only(hgcal: Geometry) -> None:
    energy, cell, counts, keys = _toy_hits(hgcal, 20, 100, seed=13, energy_mev=0.01)
    out = apply_effects(energy, cell, counts, keys, Effects(noise_mev=0.5, bias_mev=0.2), hgcal)
    assert np.array_equal(out.source, np.arange(energy.size))
    assert out.added == {"noise": 0}
    assert (out.energy_mev < 0).any()  # readings below zero are kept: no threshold


# ------------------------------------------------------------------------ files


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("effects")
    return simulate("hgcal_ee", "e-", Beam(energies_gev=(20.0,)), 50, 1, directory / "e.root")


FILE_EFFECTS = Effects(
    bias="seed003",
    miscalibration=0.1,
    noise_mev=0.05,
    bias_mev=0.02,
    zero_suppression_mev=0.065,
    dead_fraction=0.02,
    seed=5,
)


def _flat(path: Path) -> dict[str, np.ndarray]:
    events = read_events(path)
    out = {name: ak.to_numpy(events[name]) for name in events.fields if name != "hits"}
    out |= {f"hit_{n}": ak.to_numpy(ak.flatten(events.hits[n])) for n in events.hits.fields}
    out["nhit"] = ak.to_numpy(ak.num(events.hits))
    return out


@pytest.mark.parametrize(
    "options",
    [
        RunOptions(chunksize=7),
        RunOptions(executor="futures", workers=2, chunksize=17),
    ],
    ids=["iterative-7", "futures-2x17"],
)
def test_file_job_same_result_on_every_executor_and_chunking(
    sim_file: Path, tmp_path: Path, options: RunOptions
) -> None:
    reference = apply_effects_files([sim_file], tmp_path / "ref.root", FILE_EFFECTS)
    other = apply_effects_files(
        [sim_file], tmp_path / "other.root", FILE_EFFECTS, run_options=options
    )
    a, b = _flat(tmp_path / "ref.root"), _flat(tmp_path / "other.root")
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    assert reference.cutflow == other.cutflow


def test_file_job_keeps_the_truth(sim_file: Path, tmp_path: Path) -> None:
    result = apply_effects_files([sim_file], tmp_path / "pseudo.root", FILE_EFFECTS)
    metadata = read_metadata(tmp_path / "pseudo.root")
    assert metadata.stage == "sim" and metadata.geometry == "hgcal_ee"
    assert metadata.extra["effects"] == FILE_EFFECTS.to_dict()
    assert Effects.from_dict(metadata.extra["effects"]) == FILE_EFFECTS
    assert metadata.extra["inputs"] == [str(sim_file)]
    assert metadata.extra["particle"] == "e-"
    assert metadata.extra["beam"] == read_metadata(sim_file).extra["beam"]
    before, after = read_events(sim_file), read_events(tmp_path / "pseudo.root")
    assert np.array_equal(ak.to_numpy(before.edep_active), ak.to_numpy(after.edep_active))
    step = result.cutflow["effects"]
    assert step["hits_in"] == ak.sum(ak.num(before.hits))
    assert step["hits_out"] == ak.sum(ak.num(after.hits))
    assert (
        step["hits_in"] - sum(step["removed"].values()) + step["added"]["noise"]
        == (step["hits_out"])
    )
    assert step["added"]["noise"] == ak.sum(after.hits.edep == 0) > 0
    for old, new in zip(before.hits, after.hits, strict=True):  # truth = the input deposit
        deposits = dict(zip(old.cellid.to_list(), old.energy.to_list(), strict=True))
        kept = new[new.edep > 0]
        assert kept.edep.to_list() == [deposits[c] for c in kept.cellid.to_list()]
        noise = new[new.edep == 0]
        assert not set(noise.cellid.to_list()) & set(deposits)
        assert ak.all(noise.energy > 0.065)


def test_command_line(sim_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from calocoffea.cli import effects as cli

    top = argparse.ArgumentParser()
    cli.add_parser(top.add_subparsers())
    args = top.parse_args(
        [
            "effects",
            str(sim_file),
            "-o",
            str(tmp_path / "cli.root"),
            "--bias",
            "seed003",
            "--miscalibration",
            "0.1",
            "--noise-mev",
            "0.05",
            "--bias-mev",
            "0.02",
            "--zero-suppression-mev",
            "0.065",
            "--dead-fraction",
            "0.02",
            "--seed",
            "5",
        ]
    )
    assert args.handler(args) == 0
    printed = capsys.readouterr().out
    assert "removed: invalid_deposit 0, dead_cell" in printed and "added: noise" in printed
    apply_effects_files([sim_file], tmp_path / "api.root", FILE_EFFECTS)
    a, b = _flat(tmp_path / "cli.root"), _flat(tmp_path / "api.root")
    assert all(np.array_equal(a[name], b[name]) for name in a)


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"miscalibration": -0.1}, "miscalibration must be a finite number >= 0"),
        ({"miscalibration": 1.0}, r"< 1.*C <= 0"),
        ({"noise_mev": -0.5}, "noise_mev must be a finite number >= 0"),
        ({"noise_mev": float("nan")}, "noise_mev"),
        ({"bias_mev": float("inf")}, "bias_mev"),
        ({"bias": "seed03"}, r"unknown bias 'seed03'.*did you mean 'seed003'"),
        ({"bias": "custom"}, "needs bias_function"),
        ({"bias": "seed003", "bias_function": seed003_bias}, "give one of them"),
        ({"absorber_correction": 0.0}, "absorber_correction must be a finite number > 0"),
        ({"zero_suppression_mev": -0.1}, "zero_suppression_mev"),
        ({"dead_fraction": 1.0}, "dead_fraction"),
        ({"correlation": 0.5}, "needs sub-modules"),
        ({"correlation": 1.0, "submodule_cells": (1, 2, 2)}, "correlation"),
        ({"submodule_cells": (1, 0, 2)}, "three positive integers"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"noise_mev": 0.5, "bias_mev": 0.1, "zero_suppression_mev": 0.05}, "filling the detector"),
        ({"bias_mev": 1.0, "zero_suppression_mev": 0.6}, "raise the threshold"),
    ],
)
def test_bad_effects_are_refused_with_a_clear_error(options: dict, match: str) -> None:
    with pytest.raises(SimulationConfigError, match=match):
        Effects(**options)


def test_bad_hits_are_refused(hgcal: Geometry, sim_file: Path) -> None:
    keys = event_keys(0, "toy", np.arange(2))
    with pytest.raises(GeometryError, match=r"outside 0\.\.92845"):
        apply_effects([1.0, 1.0], [0, hgcal.n_cells], [1, 1], keys, Effects(), hgcal)
    with pytest.raises(InputFileError, match="sum the hits of each cell first"):
        apply_effects([1.0, 1.0], [5, 5], [2, 0], keys, Effects(), hgcal)
    with pytest.raises(ValueError, match="must add up"):
        apply_effects([1.0, 1.0], [5, 6], [1, 0], keys, Effects(), hgcal)
    wrong = Effects(bias_function=lambda layer, ring, theta, s: np.ones(3))
    with pytest.raises(SimulationConfigError, match="one finite factor"):
        apply_effects([1.0, 1.0], [5, 6], [1, 1], keys, wrong, hgcal)
    with pytest.raises(SimulationConfigError, match="custom Python bias function"):
        Effects.from_dict(wrong.to_dict())
    with pytest.raises(OutputPathError, match="also an input"):
        apply_effects_files([sim_file], sim_file, Effects())
