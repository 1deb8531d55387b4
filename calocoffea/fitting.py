"""Basic fits of the calorimeter energy response, built on iminuit cost functions.

What to use when:

- :func:`gaussian_core`: the peak position and width of one response distribution
  (reconstructed / beam energy at one energy point) when the distribution has non-Gaussian
  tails (leakage, dead cells). An iterative unbinned fit of a Gaussian truncated to
  ``mean ± window·sigma``; the tails outside the window do not bias it.
- :func:`rms_over_median`: the resolution estimator of seed 003 (Calibr-A-Ton), RMS of the
  response divided by its median. No fit, always defined, but tails enter it fully: use it
  to compare with that paper, :func:`gaussian_core` for the core resolution.
- :func:`resolution`: the resolution curve sigma/E = a/sqrt(E) (+) b/E (+) c against the
  beam energy in GeV, from the per-point widths of either of the two above. The noise term
  ``b`` is fixed to 0 unless asked for.
- :func:`linearity`: the mean response against the beam energy, a straight line, with the
  relative deviation of each point from it.
- :func:`energy_scan`: a beam-energy scan in one call: the Gaussian core at every energy
  point, then :func:`resolution` and :func:`linearity` over the points.
- :func:`landau_mpv`: the most probable value of MIP deposits (muons), from an unbinned
  Landau fit in a window around the peak (PHYSICS.md: about 0.5-3 MPV).

Every fit returns a :class:`FitResult` (values, errors, covariance, chi2/ndf, validity);
:func:`linearity` a :class:`LinearityResult` that adds the deviations. A fit that cannot be
attempted raises :class:`~calocoffea.exceptions.FitError`; a fit that ran but did not
converge cleanly warns with :class:`~calocoffea.exceptions.FitWarning` and returns
``valid=False``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from iminuit import Minuit
from iminuit.cost import LeastSquares, UnbinnedNLL
from numpy.typing import ArrayLike, NDArray
from scipy import stats
from scipy.special import ndtr

from calocoffea.exceptions import FitError, FitWarning

__all__ = [
    "EnergyScan",
    "Estimate",
    "FitResult",
    "LinearityResult",
    "energy_scan",
    "gaussian_core",
    "landau_mpv",
    "linearity",
    "resolution",
    "rms_over_median",
]

#: Fewest finite values :func:`gaussian_core` accepts.
MIN_CORE_ENTRIES = 20
#: 1.4826 · MAD estimates sigma for a Gaussian.
MAD_TO_SIGMA = 1.4826
#: sqrt(pi/2): the standard error of the median of a Gaussian sample is this times sigma/sqrt(n).
MEDIAN_ERROR_FACTOR = 1.2533
#: Fewest bins of the goodness-of-fit histogram of :func:`gaussian_core`.
MIN_CHI2_BINS = 5
#: Parameters of the resolution curve, in the order of the model.
RESOLUTION_PARAMETERS = ("a", "b", "c")
#: Default of :func:`resolution`: the noise term is off.
DEFAULT_RESOLUTION_FIX: Mapping[str, float] = {"b": 0.0}

FloatArray = NDArray[np.float64]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, eq=False)
class FitResult:
    """The outcome of one fit.

    ``covariance`` spans all parameters in the order of ``values``, with zero rows and
    columns for fixed ones; ``errors`` are 0 for fixed parameters. ``valid`` is Minuit's
    valid minimum with an accurate covariance. ``n`` counts what entered the fit: entries in
    the window of :func:`gaussian_core`, points of a least-squares fit.
    """

    values: dict[str, float]
    errors: dict[str, float]
    covariance: FloatArray
    chi2: float
    ndf: int
    valid: bool
    fixed: tuple[str, ...] = ()
    n: int = 0

    @property
    def chi2_ndf(self) -> float:
        """chi2 per degree of freedom, nan without degrees of freedom."""
        return self.chi2 / self.ndf if self.ndf > 0 else math.nan

    def __getitem__(self, name: str) -> float:
        try:
            return self.values[name]
        except KeyError:
            known = ", ".join(repr(key) for key in self.values)
            raise KeyError(f"unknown parameter {name!r}, the fit has {known}") from None

    def __str__(self) -> str:
        terms = [self._format_parameter(name) for name in self.values]
        return f"{', '.join(terms)} (chi2/ndf = {self.chi2:.1f}/{self.ndf})"

    def _format_parameter(self, name: str) -> str:
        value, error = self.values[name], self.errors[name]
        if name in self.fixed:
            return f"{name} = {value:.4g} (fixed)"
        if not (math.isfinite(error) and error > 0):
            return f"{name} = {value:.4g} ± {error:.2g}"
        decimals = max(0, 1 - math.floor(math.log10(error)))  # two significant digits
        return f"{name} = {value:.{decimals}f} ± {error:.{decimals}f}"


@dataclass(frozen=True, eq=False, kw_only=True)
class LinearityResult(FitResult):
    """A :class:`FitResult` of :func:`linearity` with the per-point relative deviations.

    ``deviation`` is (mean - fit) / fit per point, ``max_deviation`` its largest modulus.
    """

    deviation: FloatArray
    max_deviation: float


@dataclass(frozen=True)
class Estimate:
    """A value with its standard error."""

    value: float
    error: float

    def __str__(self) -> str:
        return f"{self.value:.4g} ± {self.error:.2g}"


def _result_from_minuit(
    minuit: Minuit,
    *,
    chi2: float,
    ndf: int,
    n: int,
    what: str,
    absolute: Iterable[str] = (),
) -> FitResult:
    """Turn a minimised Minuit (Hesse run) into a FitResult; warn when it is not valid.

    Parameters named in ``absolute`` enter the model only through their modulus: their
    value is folded to be positive and their covariance rows flipped accordingly.
    """
    names = list(minuit.parameters)
    fixed = tuple(name for name in names if minuit.fixed[name])
    signs = np.array(
        [-1.0 if name in absolute and minuit.values[name] < 0 else 1.0 for name in names]
    )
    values = {name: float(s * minuit.values[name]) for name, s in zip(names, signs, strict=True)}
    errors = {name: 0.0 if name in fixed else float(minuit.errors[name]) for name in names}
    if minuit.covariance is None:
        covariance = np.full((len(names), len(names)), math.nan)
    else:
        covariance = np.array(minuit.covariance, dtype=float) * np.outer(signs, signs)
    covariance.setflags(write=False)
    valid = bool(minuit.valid and minuit.accurate)
    if not valid:
        warnings.warn(
            f"{what} did not converge cleanly (valid minimum: {minuit.valid}, accurate "
            f"covariance: {minuit.accurate}); its result has valid=False. Check the input "
            f"and the starting values.\n{minuit.fmin}",
            FitWarning,
            stacklevel=3,
        )
    return FitResult(values, errors, covariance, float(chi2), int(ndf), valid, fixed, int(n))


def _fit_fields(result: FitResult) -> dict[str, Any]:
    """The FitResult fields of a result, to build a variant or a subclass from it."""
    return {f.name: getattr(result, f.name) for f in fields(FitResult)}


# --------------------------------------------------------------------------- validation


def _finite_values(values: ArrayLike, *, what: str, minimum: int) -> FloatArray:
    """The finite entries of a 1D sample; FitError if fewer than ``minimum`` remain."""
    array = np.asarray(values, dtype=float).ravel()
    if array.size == 0:
        raise FitError(f"{what}: the input is empty, it needs at least {minimum} values")
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        raise FitError(f"{what}: all {array.size} input values are non-finite (nan or inf)")
    if finite.size < minimum:
        dropped = (
            f" ({array.size - finite.size} non-finite dropped)" if finite.size < array.size else ""
        )
        raise FitError(
            f"{what}: too few values, {finite.size} finite{dropped} but at least {minimum} "
            "are needed"
        )
    return finite


def _points(what: str, n_free: int, **arrays: ArrayLike) -> tuple[FloatArray, ...]:
    """Validate the (energy, y, error) arrays of a least-squares fit.

    Same length, finite, positive energies (the first array) and errors (the last), and
    at least one more point than free parameters.
    """
    named = {name: np.asarray(array, dtype=float).ravel() for name, array in arrays.items()}
    lengths = {name: array.size for name, array in named.items()}
    if len(set(lengths.values())) != 1:
        raise FitError(f"{what}: arrays differ in length, {lengths}")
    for name, array in named.items():
        if not np.all(np.isfinite(array)):
            raise FitError(
                f"{what}: {name} has non-finite entries at {_where(~np.isfinite(array))}"
            )
    first, last = next(iter(named)), list(named)[-1]
    for name in (first, last):
        if np.any(named[name] <= 0):
            raise FitError(f"{what}: {name} must be positive, not at {_where(named[name] <= 0)}")
    n_points = next(iter(lengths.values()))
    if n_points < n_free + 1:
        raise FitError(
            f"{what}: too few points, {n_points} for {n_free} free parameters; "
            f"at least {n_free + 1} are needed"
        )
    return tuple(named.values())


def _where(mask: NDArray[np.bool_]) -> str:
    indices = np.flatnonzero(mask)
    shown = ", ".join(str(i) for i in indices[:5])
    return f"indices {shown}{', ...' if indices.size > 5 else ''}"


# --------------------------------------------------------------------------- gaussian core


def _truncated_normal_logpdf(lo: float, hi: float) -> Callable[..., FloatArray]:
    """log pdf of a Gaussian normalised to [lo, hi]; sigma enters through its modulus."""
    log_sqrt_2pi = 0.5 * math.log(2.0 * math.pi)

    def logpdf(x: FloatArray, mean: float, sigma: float) -> FloatArray:
        scale = abs(sigma)
        norm = ndtr((hi - mean) / scale) - ndtr((lo - mean) / scale)  # = scipy.stats.norm.cdf
        z = (x - mean) / scale
        return -0.5 * z * z - math.log(scale) - log_sqrt_2pi - math.log(max(norm, 1e-300))

    return logpdf


def _window_fit(
    data: FloatArray, lo: float, hi: float, mean: float, sigma: float
) -> tuple[Minuit, int, int]:
    """Unbinned fit of the sorted ``data`` inside [lo, hi]; returns Minuit and the slice."""
    start, stop = int(np.searchsorted(data, lo, "left")), int(np.searchsorted(data, hi, "right"))
    if stop - start < MIN_CHI2_BINS:
        raise FitError(
            f"gaussian_core: only {stop - start} entries in the window [{lo:.4g}, {hi:.4g}]; "
            "the distribution has no Gaussian core (widen the window or check the input)"
        )
    cost = UnbinnedNLL(data[start:stop], _truncated_normal_logpdf(lo, hi), log=True)
    minuit = Minuit(cost, mean=mean, sigma=sigma)
    minuit.migrad()
    return minuit, start, stop


def _core_chi2(
    window_data: FloatArray, lo: float, hi: float, mean: float, sigma: float
) -> tuple[float, int]:
    """Pearson chi2 of the window histogram against the fitted truncated Gaussian.

    About sqrt(n) equal bins (at least :data:`MIN_CHI2_BINS`), the prediction normalised to
    the entries in the window, so ndf = bins - 1 (normalisation) - 2 (mean, sigma).
    """
    n = window_data.size
    bins = max(MIN_CHI2_BINS, round(math.sqrt(n)))
    edges = np.linspace(lo, hi, bins + 1)
    observed, _ = np.histogram(window_data, edges)
    cdf = ndtr((edges - mean) / sigma)
    expected = n * np.diff(cdf) / (cdf[-1] - cdf[0])
    chi2 = float(np.sum((observed - expected) ** 2 / np.maximum(expected, 1e-300)))
    return chi2, bins - 3


def gaussian_core(
    values: ArrayLike, *, window: float = 2.0, max_iterations: int = 20, tol: float = 1e-4
) -> FitResult:
    """Iterative Gaussian fit of the core of a response distribution.

    Steps:

    1. start from the median and 1.4826 · MAD of the finite values;
    2. fit a Gaussian truncated to [mean - window·sigma, mean + window·sigma] (unbinned
       maximum likelihood, the pdf normalised to the window) to the entries in the window;
    3. move the window to the new mean and sigma and refit, until mean and sigma change by
       less than ``tol``·sigma, or the entries in the window repeat an earlier iteration
       (with discrete data the window can flip one entry in and out forever; the fits then
       differ by far less than their errors and the last one is kept);
    4. errors from Hesse on the last fit.

    Returns parameters ``mean`` and ``sigma``; ``n`` is the number of entries in the final
    window; ``chi2``/``ndf`` compare the window histogram with the fit (see
    :func:`_core_chi2`: about sqrt(n) bins, ndf = bins - 3). Non-finite values are ignored.

    Raises FitError for fewer than 20 finite values, a zero MAD (more than half the values
    equal) or a window with almost no entries; ValueError for a non-positive ``window`` or
    ``tol`` or ``max_iterations`` below 1. Warns with FitWarning (and returns
    ``valid=False``) when the iteration does not settle in ``max_iterations``.
    """
    if not (window > 0 and tol > 0 and max_iterations >= 1):
        raise ValueError(
            f"gaussian_core: window ({window}) and tol ({tol}) must be positive and "
            f"max_iterations ({max_iterations}) at least 1"
        )
    data = np.sort(_finite_values(values, what="gaussian_core", minimum=MIN_CORE_ENTRIES))
    mean = float(np.median(data))
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(data - mean)))
    if not sigma > 0:
        raise FitError(
            "gaussian_core: the values have zero spread (median absolute deviation 0, more "
            "than half of them are equal); there is no Gaussian core to fit"
        )
    seen: set[tuple[int, int]] = set()
    settled = False
    for _ in range(max_iterations):
        lo, hi = mean - window * sigma, mean + window * sigma
        minuit, start, stop = _window_fit(data, lo, hi, mean, sigma)
        new_mean, new_sigma = float(minuit.values["mean"]), abs(float(minuit.values["sigma"]))
        change = max(abs(new_mean - mean), abs(new_sigma - sigma))
        mean, sigma = new_mean, new_sigma
        if change < tol * sigma or (start, stop) in seen:
            settled = True
            break
        seen.add((start, stop))
    minuit.hesse()
    chi2, ndf = _core_chi2(data[start:stop], lo, hi, mean, sigma)
    if not settled:
        warnings.warn(
            f"gaussian_core: the window did not settle in {max_iterations} iterations "
            f"(last change {change:.3g}, tolerance {tol * sigma:.3g}); result has valid=False",
            FitWarning,
            stacklevel=2,
        )
    result = _result_from_minuit(
        minuit, chi2=chi2, ndf=ndf, n=stop - start, what="gaussian_core", absolute=("sigma",)
    )
    return result if settled else FitResult(**{**_fit_fields(result), "valid": False})


# --------------------------------------------------------------------------- rms / median


def rms_over_median(values: ArrayLike) -> Estimate:
    """RMS of the response divided by its median, the resolution estimator of seed 003.

    RMS is the standard deviation around the mean (``np.std``, ddof=0, as ROOT's histogram
    RMS). Non-finite values are ignored. The error assumes a Gaussian sample of n entries:
    sigma(RMS) = RMS / sqrt(2(n - 1)) and sigma(median) = 1.2533 · RMS / sqrt(n), combined
    in quadrature as uncorrelated (they are, asymptotically, for a symmetric distribution).
    For distributions with heavy tails the true error is larger.
    """
    data = _finite_values(values, what="rms_over_median", minimum=2)
    n = data.size
    rms = float(np.std(data))
    median = float(np.median(data))
    if median == 0:
        raise FitError("rms_over_median: the median of the values is 0, the ratio is undefined")
    ratio = rms / abs(median)
    relative_rms = 1.0 / math.sqrt(2.0 * (n - 1))
    relative_median = MEDIAN_ERROR_FACTOR * rms / (abs(median) * math.sqrt(n))
    return Estimate(ratio, ratio * math.hypot(relative_rms, relative_median))


# --------------------------------------------------------------------------- resolution


def _resolution_model(energy: FloatArray, a: float, b: float, c: float) -> FloatArray:
    """sigma/E = a/sqrt(E) (+) b/E (+) c, E in GeV."""
    return np.sqrt(a * a / energy + b * b / (energy * energy) + c * c)


def _resolution_start(
    energy: FloatArray, y: FloatArray, error: FloatArray, fix: Mapping[str, float]
) -> dict[str, float]:
    """Starting values from a weighted linear fit of (sigma/E)^2 in 1/E, 1/E^2, 1."""
    basis = {"a": 1.0 / energy, "b": 1.0 / energy**2, "c": np.ones_like(energy)}
    target = y**2 - sum(fix[name] ** 2 * basis[name] for name in fix)
    free = [name for name in RESOLUTION_PARAMETERS if name not in fix]
    weight = 1.0 / (2.0 * np.abs(y) * error + error**2)  # 1 / error of y^2
    design = np.column_stack([basis[name] * weight for name in free])
    squares, *_ = np.linalg.lstsq(design, target * weight, rcond=None)
    scale = {
        "a": float(np.median(y * np.sqrt(energy))),
        "b": float(np.median(y * energy)),
        "c": float(np.median(y)),
    }
    start = {
        name: float(np.sqrt(s)) if s > 0 else 0.1 * scale[name]
        for name, s in zip(free, squares, strict=True)
    }
    return {name: start.get(name, fix.get(name, 0.0)) for name in RESOLUTION_PARAMETERS}


def resolution(
    energy: ArrayLike,
    sigma_over_e: ArrayLike,
    error: ArrayLike,
    *,
    fix: Mapping[str, float] | None = None,
) -> FitResult:
    """Least-squares fit of the resolution curve sigma/E = sqrt(a²/E + b²/E² + c²).

    ``energy`` in GeV (positive), ``sigma_over_e`` and its ``error`` (positive) per point.
    Parameters ``a`` (stochastic, sqrt(GeV)), ``b`` (noise, GeV) and ``c`` (constant).
    ``fix`` maps parameter names to fixed values and replaces the default ``{"b": 0.0}``
    (noise term off): pass ``{}`` to free all three, ``{"b": 0.0, "c": 0.0}`` for a pure
    stochastic term. The parameters enter squared, so the returned values are their moduli.

    Raises FitError for arrays of different length, non-finite entries, non-positive
    energies or errors, or fewer points than free parameters + 1; ValueError for unknown
    names in ``fix``.
    """
    fix = dict(DEFAULT_RESOLUTION_FIX if fix is None else fix)
    unknown = sorted(set(fix) - set(RESOLUTION_PARAMETERS))
    if unknown:
        raise ValueError(
            f"resolution: unknown parameter {', '.join(map(repr, unknown))} in fix; "
            f"the parameters are {', '.join(map(repr, RESOLUTION_PARAMETERS))}"
        )
    n_free = len(RESOLUTION_PARAMETERS) - len(fix)
    x, y, yerr = _points(
        "resolution", n_free, energy=energy, sigma_over_e=sigma_over_e, error=error
    )
    minuit = Minuit(
        LeastSquares(x, y, yerr, _resolution_model), **_resolution_start(x, y, yerr, fix)
    )
    return _least_squares_result(
        minuit, fix, n_points=x.size, what="resolution", absolute=RESOLUTION_PARAMETERS
    )


def _least_squares_result(
    minuit: Minuit,
    fix: Mapping[str, float],
    *,
    n_points: int,
    what: str,
    absolute: Iterable[str] = (),
) -> FitResult:
    """Fix, minimise and run Hesse on a least-squares Minuit; chi2 is the cost minimum."""
    for name, value in fix.items():
        minuit.values[name] = value
        minuit.fixed[name] = True
    minuit.migrad()
    minuit.hesse()
    return _result_from_minuit(
        minuit,
        chi2=float(minuit.fval),
        ndf=n_points - minuit.nfit,
        n=n_points,
        what=what,
        absolute=absolute,
    )


# --------------------------------------------------------------------------- linearity


def _line(energy: FloatArray, slope: float, offset: float) -> FloatArray:
    return slope * energy + offset


def linearity(
    beam_energy: ArrayLike, mean: ArrayLike, error: ArrayLike, *, offset: bool = True
) -> LinearityResult:
    """Least-squares fit of the mean response, mean = slope · E + offset.

    ``beam_energy`` positive, ``error`` of each mean positive; ``offset=False`` fixes the
    offset to 0. The result adds ``deviation`` = (mean - fit) / fit per point and
    ``max_deviation`` = max |deviation|.

    Raises FitError for arrays of different length, non-finite entries, non-positive
    energies or errors, or fewer points than free parameters + 1.
    """
    fix = {} if offset else {"offset": 0.0}
    x, y, yerr = _points("linearity", 2 - len(fix), beam_energy=beam_energy, mean=mean, error=error)
    slope0, offset0 = _start_line(x, y, yerr, offset=offset)
    minuit = Minuit(LeastSquares(x, y, yerr, _line), slope=slope0, offset=offset0)
    result = _least_squares_result(minuit, fix, n_points=x.size, what="linearity")
    fit = _line(x, result["slope"], result["offset"])
    deviation = (y - fit) / fit
    deviation.setflags(write=False)
    return LinearityResult(
        **_fit_fields(result), deviation=deviation, max_deviation=float(np.max(np.abs(deviation)))
    )


def _start_line(
    x: FloatArray, y: FloatArray, yerr: FloatArray, *, offset: bool
) -> tuple[float, float]:
    """Weighted linear least squares, the starting point of Minuit."""
    columns = [x, np.ones_like(x)] if offset else [x]
    design = np.column_stack(columns) / yerr[:, None]
    coefficients, *_ = np.linalg.lstsq(design, y / yerr, rcond=None)
    return float(coefficients[0]), float(coefficients[1]) if offset else 0.0


# --------------------------------------------------------------------------- MIP peak

#: Mode of scipy's standard Landau density (loc 0, scale 1); the MPV is loc + this * scale.
_LANDAU_MODE = -0.4293


def landau_mpv(values: ArrayLike, *, window: tuple[float, float] = (0.5, 3.0)) -> Estimate:
    """Most probable value of MIP deposits from an unbinned Landau fit.

    The fit uses the deposits within ``window`` times a first estimate of the peak (the
    mode of a histogram), with the Landau density renormalised to that window. scipy's
    Landau convention differs from ROOT's TMath::Landau (PHYSICS.md); the returned value
    is the position of the maximum either way. A Landau (x) Gauss model for digitised
    data comes with the MIP calibration.
    """
    data = _finite_values(values, what="landau_mpv", minimum=MIN_CORE_ENTRIES)
    data = data[data > 0]
    lo_q, hi_q = np.quantile(data, [0.01, 0.9])
    counts, edges = np.histogram(data, bins=100, range=(lo_q, hi_q))
    peak = 0.5 * (edges[np.argmax(counts)] + edges[np.argmax(counts) + 1])
    lo, hi = window[0] * peak, window[1] * peak
    inside = data[(data > lo) & (data < hi)]
    if inside.size < MIN_CORE_ENTRIES:
        raise FitError(f"landau_mpv: only {inside.size} values in the fit window [{lo}, {hi}]")

    def pdf(x: FloatArray, mpv: float, scale: float) -> FloatArray:
        loc = mpv - _LANDAU_MODE * scale
        norm = stats.landau.cdf(hi, loc, scale) - stats.landau.cdf(lo, loc, scale)
        return stats.landau.pdf(x, loc, scale) / norm

    width = 0.1 * peak
    m = Minuit(UnbinnedNLL(inside, pdf), mpv=peak, scale=width)
    m.limits["scale"] = (1e-6 * peak, peak)
    m.limits["mpv"] = (lo, hi)
    m.migrad()
    m.hesse()
    if not (m.valid and m.accurate):
        warnings.warn(
            "landau_mpv: the Landau fit did not converge cleanly", FitWarning, stacklevel=2
        )
    return Estimate(float(m.values["mpv"]), float(m.errors["mpv"]))


# --------------------------------------------------------------------------- energy scan


@dataclass(frozen=True, eq=False)
class EnergyScan:
    """Per-point Gaussian cores of a beam-energy scan and the curves fitted over them."""

    energy: FloatArray
    cores: tuple[FitResult, ...]
    resolution: FitResult
    linearity: LinearityResult

    @property
    def sigma_over_e(self) -> FloatArray:
        return np.array([c.values["sigma"] / c.values["mean"] for c in self.cores])


def energy_scan(
    energy: ArrayLike,
    samples: Iterable[ArrayLike],
    *,
    fix: Mapping[str, float] | None = None,
    offset: bool = True,
) -> EnergyScan:
    """Resolution and linearity of reconstructed energies, one sample per beam energy.

    Each sample is fitted with :func:`gaussian_core`; sigma/mean of the cores enters
    :func:`resolution` (with ``fix``), the means enter :func:`linearity` (with ``offset``).
    """
    e = np.asarray(energy, dtype=np.float64)
    cores = tuple(gaussian_core(sample) for sample in samples)
    if len(cores) != e.size:
        raise FitError(f"energy_scan: {e.size} beam energies but {len(cores)} samples")
    mean = np.array([c.values["mean"] for c in cores])
    mean_error = np.array([c.errors["mean"] for c in cores])
    sigma_error = np.array([c.errors["sigma"] for c in cores]) / mean
    sigma_over_e = np.array([c.values["sigma"] for c in cores]) / mean
    return EnergyScan(
        energy=e,
        cores=cores,
        resolution=resolution(e, sigma_over_e, sigma_error, fix=fix),
        linearity=linearity(e, mean, mean_error, offset=offset),
    )
