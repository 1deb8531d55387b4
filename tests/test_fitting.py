"""Tests of calocoffea.fitting: pulls over toy experiments, known answers, input errors."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from calocoffea.exceptions import FitError, FitWarning
from calocoffea.fitting import (
    Estimate,
    FitResult,
    LinearityResult,
    energy_scan,
    gaussian_core,
    linearity,
    resolution,
    rms_over_median,
)

N_TOYS = 400
SEEDS = [1, 2, 3]
# 400 toys: the mean of the pulls scatters by 1/sqrt(400) = 0.05 and their std by
# 1/sqrt(800) = 0.035, so these bounds sit about 3 standard deviations out.
PULL_MEAN_TOLERANCE = 0.15
PULL_STD_TOLERANCE = 0.1

ENERGIES_GEV = np.array([10.0, 20.0, 30.0, 50.0, 80.0, 100.0, 150.0, 200.0])
TRUE_A, TRUE_C = 0.2, 0.03
# relative error of each sigma/E point; puts the constant term about 24 sigma from 0
RELATIVE_POINT_ERROR = 0.05

# pure Gaussian samples for the core pulls. The core fit's sigma pull has a bias of order
# 1/sqrt(n) (about -0.085 at n = 2000, -0.03 at n = 20000, from 8000+ toys): the Hesse error
# scales with the fitted sigma, and the truncated estimator has an O(1/n) bias of about
# -3/n relative. n = 20000 keeps that well inside the tolerance.
CORE_ENTRIES = 20_000
CORE_MEAN, CORE_SIGMA = 1.0, 0.1


def _sigma_over_e(energy: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return np.sqrt(a**2 / energy + b**2 / energy**2 + c**2)


def _assert_pulls_standard(pulls: np.ndarray, name: str) -> None:
    mean, std = float(np.mean(pulls)), float(np.std(pulls))
    assert abs(mean) < PULL_MEAN_TOLERANCE, f"{name}: pull mean {mean:.3f}"
    assert abs(std - 1.0) < PULL_STD_TOLERANCE, f"{name}: pull std {std:.3f}"


# --------------------------------------------------------------------------- pulls


@pytest.mark.parametrize("seed", SEEDS)
def test_resolution_pulls(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = _sigma_over_e(ENERGIES_GEV, TRUE_A, 0.0, TRUE_C)
    error = RELATIVE_POINT_ERROR * truth
    fitted = np.empty((N_TOYS, 4))  # a, c, error of a, error of c
    for toy in range(N_TOYS):
        result = resolution(ENERGIES_GEV, truth + error * rng.normal(size=truth.size), error)
        assert result.valid
        fitted[toy] = result["a"], result["c"], result.errors["a"], result.errors["c"]
    a, c, error_a, error_c = fitted.T
    assert TRUE_C / np.median(error_c) >= 3.0, "the constant term must be at least 3 sigma from 0"
    _assert_pulls_standard((a - TRUE_A) / error_a, "a")
    _assert_pulls_standard((c - TRUE_C) / error_c, "c")


@pytest.mark.parametrize("seed", SEEDS)
def test_gaussian_core_pulls(seed: int) -> None:
    rng = np.random.default_rng(seed)
    fitted = np.empty((N_TOYS, 4))  # mean, sigma, error of mean, error of sigma
    for toy in range(N_TOYS):
        result = gaussian_core(rng.normal(CORE_MEAN, CORE_SIGMA, CORE_ENTRIES))
        assert result.valid
        fitted[toy] = (
            result["mean"],
            result["sigma"],
            result.errors["mean"],
            result.errors["sigma"],
        )
    mean, sigma, error_mean, error_sigma = fitted.T
    _assert_pulls_standard((mean - CORE_MEAN) / error_mean, "mean")
    _assert_pulls_standard((sigma - CORE_SIGMA) / error_sigma, "sigma")


# --------------------------------------------------------------------------- resolution


def test_resolution_exact_points_recover_a_and_c() -> None:
    y = _sigma_over_e(ENERGIES_GEV, TRUE_A, 0.0, TRUE_C)
    result = resolution(ENERGIES_GEV, y, 0.01 * y)
    assert result["a"] == pytest.approx(TRUE_A, abs=1e-4)
    assert result["c"] == pytest.approx(TRUE_C, abs=1e-4)
    assert result.fixed == ("b",)
    assert result["b"] == 0.0
    assert result.errors["b"] == 0.0
    assert np.all(result.covariance[1] == 0.0)
    assert result.covariance.shape == (3, 3)
    assert result.ndf == ENERGIES_GEV.size - 2
    assert result.n == ENERGIES_GEV.size
    assert result.chi2 == pytest.approx(0.0, abs=1e-6)


def test_resolution_fix_c_to_zero() -> None:
    y = _sigma_over_e(ENERGIES_GEV, TRUE_A, 0.0, 0.0)
    result = resolution(ENERGIES_GEV, y, 0.01 * y, fix={"b": 0.0, "c": 0.0})
    assert result["a"] == pytest.approx(TRUE_A, abs=1e-4)
    assert result["c"] == 0.0
    assert set(result.fixed) == {"b", "c"}
    assert result.ndf == ENERGIES_GEV.size - 1


def test_resolution_free_noise_term() -> None:
    y = _sigma_over_e(ENERGIES_GEV, TRUE_A, 0.5, TRUE_C)
    result = resolution(ENERGIES_GEV, y, 0.01 * y, fix={})
    assert result.fixed == ()
    for name, true in {"a": TRUE_A, "b": 0.5, "c": TRUE_C}.items():
        assert result[name] == pytest.approx(true, abs=1e-3)


def test_resolution_returns_moduli() -> None:
    y = _sigma_over_e(ENERGIES_GEV, TRUE_A, 0.5, TRUE_C)
    result = resolution(ENERGIES_GEV, y, 0.01 * y, fix={"b": -0.5})
    assert result["b"] == 0.5
    assert result["a"] > 0 and result["c"] > 0


@pytest.mark.parametrize(
    ("energy", "y", "error", "message"),
    [
        ([10.0, 20.0, 30.0], [0.1, 0.1], [0.01, 0.01, 0.01], "differ in length"),
        ([10.0, -20.0, 30.0], [0.1, 0.1, 0.1], [0.01, 0.01, 0.01], "energy must be positive"),
        ([10.0, 20.0, 30.0], [0.1, 0.1, 0.1], [0.01, 0.0, 0.01], "error must be positive"),
        ([10.0, 20.0, 30.0], [0.1, math.nan, 0.1], [0.01, 0.01, 0.01], "non-finite"),
        ([10.0, 20.0], [0.1, 0.1], [0.01, 0.01], "too few points"),
        ([], [], [], "too few points"),
    ],
)
def test_resolution_rejects_bad_input(
    energy: list[float], y: list[float], error: list[float], message: str
) -> None:
    with pytest.raises(FitError, match=message):
        resolution(energy, y, error)


def test_resolution_unknown_fixed_parameter() -> None:
    y = _sigma_over_e(ENERGIES_GEV, TRUE_A, 0.0, TRUE_C)
    with pytest.raises(ValueError, match="unknown parameter 'd'"):
        resolution(ENERGIES_GEV, y, 0.01 * y, fix={"d": 0.0})


# --------------------------------------------------------------------------- linearity


def test_linearity_exact_points() -> None:
    energy = np.array([10.0, 20.0, 50.0, 100.0])
    result = linearity(energy, 0.98 * energy + 0.3, np.full(4, 0.1))
    assert isinstance(result, LinearityResult)
    assert isinstance(result, FitResult)
    assert result["slope"] == pytest.approx(0.98, abs=1e-6)
    assert result["offset"] == pytest.approx(0.3, abs=1e-5)
    assert result.max_deviation == pytest.approx(0.0, abs=1e-7)
    assert result.ndf == 2


def test_linearity_without_offset() -> None:
    energy = np.array([10.0, 20.0, 50.0])
    result = linearity(energy, 1.02 * energy, np.full(3, 0.1), offset=False)
    assert result["slope"] == pytest.approx(1.02, abs=1e-6)
    assert result["offset"] == 0.0
    assert result.fixed == ("offset",)
    assert result.ndf == 2


def test_linearity_known_deviation() -> None:
    # residuals d·(1, -2, 1) are orthogonal to (1, E) with equal errors: the fit stays
    # mean = E, so the deviations are d/E·(1, -2, 1) = (0.01, -0.01, 0.00333).
    energy = np.array([10.0, 20.0, 30.0])
    mean = energy + 0.1 * np.array([1.0, -2.0, 1.0])
    result = linearity(energy, mean, np.full(3, 0.05))
    assert result["slope"] == pytest.approx(1.0, abs=1e-6)
    assert result["offset"] == pytest.approx(0.0, abs=1e-5)
    np.testing.assert_allclose(result.deviation, [0.01, -0.01, 0.1 / 30], atol=1e-7)
    assert result.max_deviation == pytest.approx(0.01, abs=1e-7)


def test_linearity_rejects_too_few_points() -> None:
    with pytest.raises(FitError, match="too few points, 2 for 2 free parameters"):
        linearity([10.0, 20.0], [10.0, 20.0], [0.1, 0.1])


# --------------------------------------------------------------------------- rms / median


def test_rms_over_median_matches_numpy() -> None:
    values = np.random.default_rng(0).normal(1.0, 0.1, 1000)
    estimate = rms_over_median(values)
    assert isinstance(estimate, Estimate)
    rms, median, n = np.std(values), np.median(values), values.size
    assert estimate.value == pytest.approx(rms / median, rel=1e-12)
    relative = math.hypot(1 / math.sqrt(2 * (n - 1)), 1.2533 * rms / (median * math.sqrt(n)))
    assert estimate.error == pytest.approx(estimate.value * relative, rel=1e-12)


def test_rms_over_median_ignores_non_finite() -> None:
    values = np.random.default_rng(1).normal(1.0, 0.1, 100)
    with_nan = np.concatenate([values, [math.nan, math.inf]])
    assert rms_over_median(with_nan) == rms_over_median(values)


def test_rms_over_median_rejects_empty_input() -> None:
    with pytest.raises(FitError, match="empty"):
        rms_over_median([])


# --------------------------------------------------------------------------- gaussian core


def test_gaussian_core_ignores_a_wide_tail() -> None:
    rng = np.random.default_rng(42)
    n = 20_000
    in_tail = rng.random(n) < 0.1  # 10 % of a wide, low (leakage-like) component
    values = np.where(in_tail, rng.normal(0.8, 0.3, n), rng.normal(1.0, 0.1, n))
    result = gaussian_core(values)
    assert np.std(values) > 0.14  # the tail inflates the plain spread by 40 %
    # the core is off by the part of the tail inside the window (sigma about +3 %);
    # statistical errors are about 0.0009 on both
    assert result["mean"] == pytest.approx(1.0, abs=0.005)
    assert result["sigma"] == pytest.approx(0.1, rel=0.06)
    assert 0.9 * n < result.n < n


def test_gaussian_core_ignores_non_finite() -> None:
    values = np.random.default_rng(3).normal(1.0, 0.1, 500)
    with_nan = np.concatenate([values, [math.nan, -math.inf]])
    assert gaussian_core(with_nan).values == gaussian_core(values).values


def test_gaussian_core_warns_when_the_window_does_not_settle() -> None:
    values = np.random.default_rng(4).normal(1.0, 0.1, 500)
    with pytest.warns(FitWarning, match="did not settle in 1 iterations"):
        result = gaussian_core(values, max_iterations=1)
    assert not result.valid


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([], "input is empty"),
        (np.ones(10), "too few values, 10 finite"),
        (np.full(50, math.nan), "all 50 input values are non-finite"),
        (np.ones(50), "zero spread"),
    ],
)
def test_gaussian_core_rejects_bad_input(values: np.ndarray, message: str) -> None:
    with pytest.raises(FitError, match=message):
        gaussian_core(values)


# --------------------------------------------------------------------------- FitResult


def test_fit_result_access_and_text() -> None:
    y = _sigma_over_e(ENERGIES_GEV, TRUE_A, 0.0, TRUE_C)
    result = resolution(ENERGIES_GEV, y * (1 + 0.01 * np.sin(ENERGIES_GEV)), 0.01 * y)
    text = str(result)
    assert text.startswith("a = 0.")
    assert "b = 0 (fixed)" in text
    assert f"(chi2/ndf = {result.chi2:.1f}/6)" in text
    assert result.chi2_ndf == pytest.approx(result.chi2 / 6)
    with pytest.raises(KeyError, match="unknown parameter 'd'"):
        result["d"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.chi2 = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        result.covariance[0, 0] = 1.0


def test_chi2_ndf_is_nan_without_degrees_of_freedom() -> None:
    result = FitResult({"x": 1.0}, {"x": 0.1}, np.zeros((1, 1)), 0.0, 0, True)
    assert math.isnan(result.chi2_ndf)


def test_energy_scan_recovers_resolution_and_linearity() -> None:
    rng = np.random.default_rng(11)
    energies = np.array([10.0, 20.0, 50.0, 100.0])
    a, c = 0.2, 0.02
    width = np.sqrt(a**2 / energies + c**2)
    samples = [rng.normal(e, w * e, 20_000) for e, w in zip(energies, width, strict=True)]
    scan = energy_scan(energies, samples)
    # 20000 entries per point: sigma/E known to 0.5 %, the means to 0.1 per mille
    assert abs(scan.resolution["a"] - a) < 5 * scan.resolution.errors["a"]
    assert abs(scan.resolution["c"] - c) < 5 * scan.resolution.errors["c"]
    assert abs(scan.linearity["slope"] - 1) < 5 * scan.linearity.errors["slope"]
    assert scan.linearity.max_deviation < 0.002
    assert np.allclose(scan.sigma_over_e, width, rtol=0.03)
    with pytest.raises(FitError, match="3 beam energies but 4 samples"):
        energy_scan(energies[:3], samples)
