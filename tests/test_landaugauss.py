"""Landau (x) Gauss: the convolution, its mode, and the binned fit the mip method uses."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from calocoffea import landaugauss


def test_fast_landau_cdf_is_scipys() -> None:
    u = np.linspace(-5.0, 40.0, 301)
    assert np.array_equal(landaugauss._landau_cdf(u), stats.landau.cdf(u))


def test_convolution_matches_numerical_integration() -> None:
    """The 24-node Gauss-Hermite CDF against adaptive quadrature, at the mip method's
    operating point (Gaussian wider than the Landau): within 1.5e-3 absolute; the fits use
    bin differences of this CDF, with the same model for data and reference."""
    mpv, eta, sigma = 1.0, 0.12, 0.25
    loc = mpv - landaugauss.LANDAU_MODE * eta
    for x in (0.5, 0.9, 1.3, 2.5):

        def integrand(t: float, x: float = x) -> float:
            return stats.landau.cdf((x - t - loc) / eta) * stats.norm.pdf(t, 0, sigma)

        expected, _ = integrate.quad(integrand, -8 * sigma, 8 * sigma, limit=200)
        assert landaugauss.cdf(x, mpv, eta, sigma) == pytest.approx(expected, abs=1.5e-3)


def test_landau_parameter_is_the_mode_without_smearing() -> None:
    assert landaugauss.mode(1.0, 0.1, 1e-6) == pytest.approx(1.0, abs=1e-4)
    # the Gaussian pulls the peak of the skewed Landau to the right
    assert landaugauss.mode(1.0, 0.1, 0.3) > 1.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_binned_fit_recovers_the_generated_parameters(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mpv, eta, sigma, n = 10.0, 1.0, 2.0, 20_000
    loc = mpv - landaugauss.LANDAU_MODE * eta
    values = stats.landau.rvs(loc, eta, size=n, random_state=rng) + rng.normal(0, sigma, n)
    edges = np.linspace(4.0, 30.0, 53)
    counts, _ = np.histogram(values, edges)
    fit = landaugauss.fit_binned(
        edges, counts, landaugauss.cdf, {"mpv": 9.0, "eta": 1.5, "sigma": 1.5},
        {"eta": (0.05, 5.0), "sigma": (0.05, 5.0)},
    )  # fmt: skip
    assert fit.valid
    for name, true in (("mpv", mpv), ("eta", eta), ("sigma", sigma)):
        # 5 standard errors: three parameters, three seeds, never flaky
        assert abs(fit.values[name] - true) < 5 * fit.errors[name], name
    assert fit.chi2 / fit.ndf < 1 + 5 * np.sqrt(2 / fit.ndf)
