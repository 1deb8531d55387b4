"""The frozen-network energy-prediction term of ``inverse_nonlinearity``
(:mod:`calocoffea.models.prediction`).

The gradient tests compare with central differences in float64: the hook's loss is quadratic
in the hit energies, so the differences are exact up to rounding. The factor test compares
with the shipped cnn_lstm run through the reconstruction path (calibrate to GeV, then
``reconstruction_method``), whose only difference is the float32 storage of the calibrated
energies (relative 1e-7 on the inputs, far below the 1e-5 asked). The fit uses 150 electrons
at 100 GeV per sample (the sample of ``test_nonlinearity_fit`` at 3/8 the size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest

from calocoffea import nonlinearity_fit as nl
from calocoffea.calibration import CalibrationSteps
from calocoffea.constants import nominal_constants
from calocoffea.exceptions import GeometryMismatchError, MethodOptionsError, ModelError
from calocoffea.io import read_events
from calocoffea.methods import calibration_method, reconstruction_method
from calocoffea.models.onnxmodel import LoadedModel, load_model
from calocoffea.models.prediction import FrozenNetworkCorrection, load_network
from calocoffea.models.reconstruction import shipped_model
from calocoffea.runner import calibrate_files, digitize_files, fit_files
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate

GEOMETRY = "cepc_ahcal"
SCALE_ADC = 78520.0
N_EVENTS = 150
MIN_HITS = 100


def central_difference(f: Any, x: np.ndarray, step: np.ndarray) -> np.ndarray:
    out = np.empty(x.size)
    for k in range(x.size):
        up, down = x.copy(), x.copy()
        up[k] += step[k]
        down[k] -= step[k]
        out[k] = (f(up) - f(down)) / (2.0 * step[k])
    return out


# ------------------------------------------------------------------------------ the hook


def test_hook_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(11)
    n_events, n_hits = 7, 60
    event = np.sort(rng.integers(0, n_events, n_hits))
    energy = rng.exponential(2.0, n_hits)
    beam = rng.choice([80.0, 100.0, 120.0], n_events)
    factor = rng.uniform(0.9, 1.1, n_events)
    factor[3] = np.nan  # an event without a usable factor does not count
    hook = FrozenNetworkCorrection(factor, n_hits)
    loss, gradient = hook(energy, event, beam)
    sums = np.bincount(event, weights=energy, minlength=n_events)
    used = np.isfinite(factor)
    expected = np.mean(((factor * sums - beam) / beam)[used] ** 2)
    assert loss == pytest.approx(expected, rel=1e-12)
    numeric = central_difference(lambda e: hook(e, event, beam)[0], energy, 1e-4 * energy)
    np.testing.assert_allclose(gradient, numeric, rtol=1e-6, atol=1e-12)
    assert np.all(gradient[event == 3] == 0.0)


def test_fit_gradient_with_hook_matches_finite_differences() -> None:
    """Through the fit's chain: d L_pred / d (a, b) of every cell (nl.total_loss)."""
    rng = np.random.default_rng(12)
    n_cells, n_events, n_hits = 4, 5, 80
    cell = rng.integers(0, n_cells, n_hits)
    event = np.sort(rng.integers(0, n_events, n_hits))
    y = rng.uniform(100.0, 60_000.0, n_hits)
    hits = nl.HitConstants(np.full(n_hits, 30.0), np.full(n_hits, 7284.0),
                           np.full(n_hits, 1e-3), 0.95)  # fmt: skip
    beam = np.full(n_events, 100.0)
    sample = nl.EventSample(y, cell, event, hits, beam, np.full(n_events, 100.0))
    none = np.zeros(n_hits, bool)
    q = nl.cell_quantiles(y, cell, none, y, cell, none, n_cells, n_levels=5)
    hook = FrozenNetworkCorrection(rng.uniform(0.9, 1.1, n_events), n_hits)
    weights = nl.Weights(cell=0.0, energy_sum=0.0, prediction=1.0)
    a, b = np.full(n_cells, 0.07), np.full(n_cells, 1.02)
    terms, grad_a, grad_b = nl.total_loss(a, b, q, sample, SCALE_ADC, weights, hook)
    assert terms["total"] == pytest.approx(terms["prediction"])

    def loss(theta: np.ndarray) -> float:
        return nl.total_loss(theta[:n_cells], theta[n_cells:], q, sample, SCALE_ADC, weights,
                             hook)[0]["total"]  # fmt: skip

    theta = np.concatenate([a, b])
    numeric = central_difference(loss, theta, np.full(theta.size, 1e-6))
    np.testing.assert_allclose(np.concatenate([grad_a, grad_b]), numeric, rtol=1e-5)


# ------------------------------------------------------------------------------ network


@pytest.fixture(scope="module")
def network() -> LoadedModel:
    return load_model(shipped_model("cnn_lstm", GEOMETRY), geometry=GEOMETRY)


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("prediction")
    beam = Beam(energies_gev=(100.0,), size_mm=10.0)
    mc_sim = simulate(GEOMETRY, "e-", beam, N_EVENTS, 71, work / "mc.root")
    data_sim = simulate(GEOMETRY, "e-", beam, N_EVENTS, 72, work / "data.root")
    mc = nl.mc_digi_conditions(GEOMETRY)
    data = nl.data_conditions(mc, 7, spread_b=0.10)
    mc_raw = digitize_files([mc_sim], work / "mc-raw.root", conditions=mc, seed=1).output
    data_raw = digitize_files([data_sim], work / "data-raw.root", conditions=data, seed=2).output
    start = nominal_constants(mc, sample="MC_digi")
    return {"work": work, "mc": mc_raw, "data": data_raw, "start": start,
            "start_path": start.save(work / "start.json")}  # fmt: skip


def data_sample(samples: dict[str, Any]) -> tuple[Any, Any, np.ndarray]:
    """(method, the data as the plugin reads them, hit energies [GeV] at the start)."""
    method: Any = calibration_method(
        "inverse_nonlinearity", GEOMETRY, reference=str(samples["data"]),
        constants=str(samples["start_path"]),
    )  # fmt: skip
    sample = method.read_reference()
    dense = samples["start"].dense(method.detector)
    a0, b0 = dense.cells["nonlinearity_a"], dense.cells["nonlinearity_b"]
    energy = nl.hit_energy_gev(sample.amplitude, a0[sample.cell], b0[sample.cell],
                               method.hit_constants(sample), SCALE_ADC)[0]  # fmt: skip
    return method, sample, energy


def test_factors_are_network_energy_over_sum(samples: dict[str, Any], network: LoadedModel) -> None:
    _, sample, energy = data_sample(samples)
    hook = FrozenNetworkCorrection.from_sample(network, sample, energy, GEOMETRY)
    gev = calibrate_files([samples["data"]], samples["work"] / "data-gev.root", samples["start"],
                          steps=CalibrationSteps(to_gev=True)).output  # fmt: skip
    events = read_events(gev)
    predicted = reconstruction_method("cnn_lstm", GEOMETRY).predict(events)
    sums = np.asarray(ak.sum(events.hits.energy, axis=1), np.float64)
    assert hook.n_events == len(events) == N_EVENTS and hook.valid.all()
    np.testing.assert_allclose(hook.factor, predicted / sums, rtol=1e-5)
    # at the freezing point the hook's loss is the network's relative loss on these events
    loss, _ = hook(energy, sample.event, sample.beam_gev)
    assert loss == pytest.approx(np.mean((predicted / 100.0 - 1.0) ** 2), rel=1e-4)


def test_fit_with_cnn_lstm_term(samples: dict[str, Any]) -> None:
    method = calibration_method(
        "inverse_nonlinearity", GEOMETRY, reference=str(samples["mc"]),
        constants=str(samples["start_path"]), min_hits=MIN_HITS, max_iterations=30,
        energy_prediction="cnn_lstm",
    )  # fmt: skip
    constants, _ = fit_files(method, [samples["data"]])
    ok = constants.tables["nonlinearity_status"].values == 0
    assert ok.sum() >= 10
    for name in ("nonlinearity_a", "nonlinearity_b"):
        assert np.all(np.isfinite(constants.tables[name].values))
    quality = constants.provenance.fit_quality
    assert quality["prediction"]["events"] == N_EVENTS
    assert "cnn_lstm" in quality["prediction"]["network"]
    assert 0.5 < quality["prediction"]["factor_mean"] < 2.0
    assert np.isfinite(quality["loss_refined"]["prediction"])
    assert quality["loss_refined"]["total"] <= quality["loss_closed_form"]["total"]


# ------------------------------------------------------------------------------ bad input


def test_model_of_another_geometry(samples: dict[str, Any], network: LoadedModel) -> None:
    _, sample, energy = data_sample(samples)
    with pytest.raises(GeometryMismatchError, match=r"trained for geometry 'cepc_ahcal'"):
        FrozenNetworkCorrection.from_sample(network, sample, energy, "tile_24x24")
    with pytest.raises(GeometryMismatchError, match=r"use a model trained for 'tile_24x24'"):
        load_network(shipped_model("cnn_lstm", GEOMETRY), "tile_24x24")


def test_sizes_that_do_not_match(samples: dict[str, Any], network: LoadedModel) -> None:
    _, sample, energy = data_sample(samples)
    with pytest.raises(ModelError, match=r"hit energies for a sample of .* one energy per hit"):
        FrozenNetworkCorrection.from_sample(network, sample, energy[:-1], GEOMETRY)
    hook = FrozenNetworkCorrection(np.ones(3), 5)
    event, e = np.array([0, 0, 1, 2, 2]), np.ones(5)
    with pytest.raises(ModelError, match=r"frozen for 3; build the hook from the sample"):
        hook(e, event, np.full(4, 100.0))
    with pytest.raises(ModelError, match=r"frozen on 5; build the hook"):
        hook(np.ones(4), event[:4], np.full(3, 100.0))
    with pytest.raises(ModelError, match=r"outside the 3 frozen events"):
        hook(e, np.array([0, 0, 1, 2, 3]), np.full(3, 100.0))


def test_bad_network_option(tmp_path: Path) -> None:
    def method(value: str) -> Any:
        return calibration_method("inverse_nonlinearity", GEOMETRY, energy_prediction=value)

    assert method("cnn_lsmt").hook() is None  # a network is no hook by itself
    with pytest.raises(MethodOptionsError, match=r"did you mean 'cnn_lstm'.*shipped: cnn_lstm"):
        method("cnn_lsmt").network()
    with pytest.raises(MethodOptionsError, match=r"none.card.json does not exist"):
        method(str(tmp_path / "none.onnx")).network()
    with pytest.raises(MethodOptionsError, match=r"a callable, 'module:function', a network"):
        method("some/path").hook()
