"""The Landau (x) Gauss distribution of MIP signals in a scintillator tile, and binned fits.

What to use when:

- :func:`cdf` / :func:`pdf` -- the Landau density (energy-loss fluctuations) convolved with a
  Gaussian (photo-electron statistics, noise), by Gauss-Hermite quadrature of the Landau CDF.
- :func:`mode` -- the most probable value of the convolved distribution (the peak a MIP
  calibration uses), not the Landau parameter.
- :func:`fit_binned` -- a binned maximum-likelihood fit of a histogram inside a window, the
  density renormalised to the window; parameters may be fixed or tied to a scale.

Convention (PHYSICS.md): scipy's Landau is used with ``loc``/``scale``; its mode sits at
``loc + LANDAU_MODE * scale``. Here the parameters are ``mpv`` (the mode of the Landau part),
``eta`` (its scipy scale) and ``sigma`` (the Gaussian standard deviation), all in the unit
of the data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from iminuit import Minuit
from scipy import stats
from scipy.optimize import minimize_scalar

FloatArray = npt.NDArray[np.float64]

#: Mode of scipy's standard Landau density (loc 0, scale 1).
LANDAU_MODE: float = float(
    minimize_scalar(lambda u: -stats.landau.pdf(u), bounds=(-1.0, 0.5), method="bounded").x
)
#: Gauss-Hermite nodes and weights (probabilists', normalised) of the convolution.
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(24)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


try:  # the ufunc behind stats.landau.cdf (boost), without the ~25 us of per-call checks
    from scipy.special._ufuncs import _landau_cdf as _LANDAU_CDF_UFUNC
except ImportError:  # pragma: no cover - older or newer scipy: the public, slower path
    _LANDAU_CDF_UFUNC = None


def _landau_cdf(u: FloatArray) -> FloatArray:
    """Standard Landau CDF (scipy's convention); the fits call it ~25 times per cell."""
    if _LANDAU_CDF_UFUNC is not None:
        return np.asarray(_LANDAU_CDF_UFUNC(u, 0.0, 1.0), dtype=np.float64)
    return np.asarray(stats.landau.cdf(u), dtype=np.float64)


def cdf(x: npt.ArrayLike, mpv: float, eta: float, sigma: float) -> FloatArray:
    """CDF of Landau(mpv, eta) (x) Gauss(0, sigma) at ``x``."""
    x = np.asarray(x, dtype=np.float64)
    loc = mpv - LANDAU_MODE * eta
    u = (x[..., None] - sigma * _NODES - loc) / eta
    return np.asarray(_landau_cdf(u) @ _WEIGHTS)


def pdf(x: npt.ArrayLike, mpv: float, eta: float, sigma: float) -> FloatArray:
    """Density of Landau(mpv, eta) (x) Gauss(0, sigma) at ``x``."""
    x = np.asarray(x, dtype=np.float64)
    loc = mpv - LANDAU_MODE * eta
    u = (x[..., None] - sigma * _NODES - loc) / eta
    return np.asarray(stats.landau.pdf(u) @ _WEIGHTS) / eta


def mode(mpv: float, eta: float, sigma: float) -> float:
    """Position of the maximum of the convolved density."""
    width = eta + sigma
    result = minimize_scalar(
        lambda x: -pdf(x, mpv, eta, sigma),
        bounds=(mpv - 3.0 * width, mpv + 3.0 * width),
        method="bounded",
        options={"xatol": 1e-7 * max(abs(mpv), width)},
    )
    return float(result.x)


@dataclass(frozen=True)
class BinnedFit:
    """Result of :func:`fit_binned`: parameters, errors, covariance, quality."""

    values: dict[str, float]
    errors: dict[str, float]
    covariance: FloatArray
    valid: bool
    chi2: float
    ndf: int
    entries: int


def fit_binned(
    edges: FloatArray,
    counts: npt.NDArray[np.integer],
    model_cdf: Callable[..., FloatArray],
    start: dict[str, float],
    limits: dict[str, tuple[float, float]] | None = None,
) -> BinnedFit:
    """Binned likelihood fit of ``counts`` (in ``edges``) with the CDF ``model_cdf(edges,
    **parameters)`` normalised to the window (so only the shape is fitted).

    Pearson chi2 over bins with expected >= 5 entries, ndf = bins - 1 - free parameters."""
    n = np.asarray(counts, dtype=np.float64)
    total = float(n.sum())
    names = list(start)

    def nll(*parameters: float) -> float:
        c = model_cdf(edges, *parameters)
        p = np.diff(c) / (c[-1] - c[0])
        return float(-2.0 * np.sum(n * np.log(np.maximum(p, 1e-300))))

    nll.errordef = Minuit.LIKELIHOOD * 2  # type: ignore[attr-defined]  # -2 ln L
    minuit = Minuit(nll, *start.values(), name=names)
    for name, limit in (limits or {}).items():
        minuit.limits[name] = limit
    minuit.migrad()
    minuit.hesse()
    c = model_cdf(edges, *minuit.values)
    expected = total * np.diff(c) / (c[-1] - c[0])
    used = expected >= 5.0
    chi2 = float(np.sum((n[used] - expected[used]) ** 2 / expected[used]))
    return BinnedFit(
        values=dict(zip(names, map(float, minuit.values), strict=True)),
        errors=dict(zip(names, map(float, minuit.errors), strict=True)),
        covariance=np.array(minuit.covariance, dtype=np.float64),
        valid=bool(minuit.valid and minuit.accurate),
        chi2=chi2,
        ndf=int(np.count_nonzero(used)) - 1 - len(names),
        entries=int(total),
    )


__all__ = ["LANDAU_MODE", "BinnedFit", "cdf", "fit_binned", "mode", "pdf"]
