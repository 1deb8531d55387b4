"""Electronics calibrations of SiPM-on-tile read-out: pedestals, high/low gain ratio, SPE gain.

What to use when (seed 000, "Parameters Calibration"; run them in this order):

- :class:`Pedestal` (``pedestal``) -- pedestal runs: per cell and gain, the pedestal
  [ADC] and its noise, from moments of the integer-ADC spectrum with Sheppard's correction.
- :class:`GainRatio` (``gain_ratio``) -- physics runs digitised with both gains
  (``DigitizationOptions(dual_gain=True)``, hit field ``adc_lg``): the high/low gain ratio of
  each cell from the hits read on the high gain in an overlap window below the switch,
  a straight line of the low-gain against the high-gain amplitude. Needs the pedestals.
- :class:`SinglePhotoelectron` (``spe``) -- LED (low-light) runs: per cell, a binned
  likelihood fit of the photo-electron spectrum (pedestal and Gaussian peaks of 1, 2, 3...
  fired pixels weighted by the photo-statistics, iminuit) whose peak spacing is the SPE gain
  ``spe_adc`` [ADC per pixel].

Each method's ``fit`` returns only its own tables, per cell in :meth:`Geometry.cellids`
order, plus a status table (0 ok, 1 too few entries, 2 failed fit). Cells that are not ok
carry an explicit fallback, the mean of the good cells with their spread as uncertainty, and
are counted in the provenance's ``fit_quality`` (with the first of their cell ids); failed
fits also give a :class:`~calocoffea.exceptions.FitWarning`. Lay the results over a starting
set: ``design_constants(geometry).update(pedestal, gain_ratio, spe, ...)``.

Simulated calibration runs come from :mod:`calocoffea.calibruns`; what each method should
recover from given conditions is :func:`calocoffea.calibruns.expected_constants`.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import hist
import numba
import numpy as np
import numpy.typing as npt
from iminuit import Minuit
from iminuit.util import IMinuitWarning
from scipy import stats

from calocoffea.conditions import PARAMETERS, Electronics
from calocoffea.constants import SETTINGS, Constants, Provenance, Table, load_constants
from calocoffea.exceptions import (
    ConstantsError,
    FitError,
    FitWarning,
    MethodOptionsError,
    MissingBranchError,
)
from calocoffea.geometry import Geometry
from calocoffea.methods import CalibrationMethod
from calocoffea.processors.common import cell_indices, flat_hits

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Per-cell status codes of every electronics calibration.
STATUS_OK, STATUS_TOO_FEW, STATUS_FAILED = 0, 1, 2
STATUS_NAMES = {STATUS_OK: "ok", STATUS_TOO_FEW: "too_few_entries", STATUS_FAILED: "failed"}
_URL = "https://arxiv.org/abs/2511.10377"  # CEPC AHCAL prototype (electronics, calibration)
_LISTED = 20  # cell ids of non-ok cells listed in fit_quality


# ------------------------------------------------------------------------------ shared


def _cell_axis(n_cells: int) -> hist.axis.Integer:
    return hist.axis.Integer(
        0, n_cells, name="cell", label="dense cell index (Geometry.cellids order)",
        underflow=False, overflow=False,
    )  # fmt: skip


def _adc_axis(low: int, high: int) -> hist.axis.Integer:
    if not 0 <= low < high:
        raise FitError(f"the ADC window [{low}, {high}) is empty; give adc_min < adc_max")
    return hist.axis.Integer(low, high, name="adc", label="ADC")


def _hits(events: Any, fields: tuple[str, ...], method: str, hint: str) -> dict[str, Any]:
    """Flat hit fields of a chunk; MissingBranchError naming what is missing and why."""
    _, flat = flat_hits(events, fields)
    missing = [name for name in fields if name not in flat]
    if missing:
        raise MissingBranchError(
            f"{events.metadata['filename']}: {method} needs the hit field(s) "
            f"{', '.join('hit_' + m for m in missing)}; {hint}"
        )
    return flat


def _fallback(
    values: FloatArray, errors: FloatArray, status: IntArray, what: str
) -> tuple[FloatArray, FloatArray, float]:
    """Cells that are not ok take the mean of the good cells, their spread as uncertainty."""
    good = status == STATUS_OK
    if not np.any(good):
        raise FitError(
            f"no cell gave a usable {what}: {np.count_nonzero(status == STATUS_TOO_FEW)} had "
            f"too few entries and {np.count_nonzero(status == STATUS_FAILED)} failed; check "
            "the run type and the method's options"
        )
    mean = float(np.mean(values[good]))
    spread = float(np.std(values[good])) if np.count_nonzero(good) > 1 else abs(mean)
    return np.where(good, values, mean), np.where(good, errors, spread), mean


def _status_counts(status: IntArray) -> dict[str, int]:
    return {name: int(np.count_nonzero(status == code)) for code, name in STATUS_NAMES.items()}


def _not_ok_cells(geometry: Geometry, status: IntArray) -> dict[str, list[int]]:
    cellids = geometry.cellids()
    return {
        name: cellids[status == code][:_LISTED].astype(np.int64).tolist()
        for code, name in STATUS_NAMES.items()
        if code != STATUS_OK and np.any(status == code)
    }


def _warn_failed(method: str, geometry: Geometry, status: IntArray, fallback: str) -> None:
    failed = int(np.count_nonzero(status == STATUS_FAILED))
    if failed:
        ids = geometry.cellids()[status == STATUS_FAILED][:5].tolist()
        warnings.warn(
            f"{method}: the fit failed in {failed} of {status.size} cells (cell ids {ids}"
            f"{'...' if failed > 5 else ''}); they carry {fallback} and status "
            f"{STATUS_FAILED}, see fit_quality",
            FitWarning,
            stacklevel=3,
        )


def _constants(
    geometry: Geometry,
    method: str,
    tables: dict[str, tuple[FloatArray, FloatArray, str]],
    sample: str,
    fit_quality: dict[str, Any],
) -> Constants:
    keys = geometry.cellids().astype(np.int64)
    e = Electronics()
    return Constants(
        {
            name: Table("cell", keys, np.asarray(v, np.float64), np.asarray(u, np.float64), unit)
            for name, (v, u, unit) in tables.items()
        },
        Provenance(
            method=method,
            geometry=geometry.name,
            geometry_hash=geometry.hash,
            sample=sample,
            fit_quality=fit_quality,
            settings={name: float(getattr(e, name)) for name in SETTINGS},
        ),
    )


# ------------------------------------------------------------------------------ pedestal


@dataclass(frozen=True)
class PedestalOptions:
    """Options of :class:`Pedestal`."""

    #: lowest ADC value of the spectra [ADC]; entries outside the window are counted only
    adc_min: int = 250
    #: end of the ADC window (excluded) [ADC]
    adc_max: int = 506
    #: fewer entries than this in a cell and gain: status 1
    min_entries: int = 50
    #: a larger fraction of entries outside the window: status 2 (the moments would be biased)
    max_outside_fraction: float = 0.001
    #: D'Agostino-Pearson normality test of the spectrum: a nominal p-value below this is
    #: not Gaussian (two pedestals, a stuck bit...), status 2. The test's tail is approximate:
    #: rounded Gaussian spectra of 60-400 readings fall below 1e-9 at a rate of 1e-6 to 5e-6,
    #: below 1e-12 at < 5e-7, below 1e-15 never in 6e6 tries [computed]
    min_normality_p: float = 1e-15


class Pedestal(CalibrationMethod):
    """Pedestal and noise of both gains per cell, from pedestal runs."""

    description: ClassVar[str] = (
        "pedestal and noise [ADC] of both gains per cell from pedestal (random trigger) runs: "
        "moments of the integer-ADC spectra with Sheppard's correction (seed 000)"
    )
    url: ClassVar[str] = _URL
    Options: ClassVar[type] = PedestalOptions
    run_type: ClassVar[str] = "pedestal"
    input_stage: ClassVar[str] = "raw"

    options: PedestalOptions

    def collect(self, events: Any) -> hist.Hist:
        """Per cell and gain (0 high, 1 low), the integer-ADC spectrum (Int64 counts)."""
        flat = _hits(
            events, ("cellid", "energy", "adc_lg"), "the pedestal calibration",
            "pedestal runs record both gains (calocoffea.calibruns.pedestal_run)",
        )  # fmt: skip
        cell = cell_indices(events, flat["cellid"], self.geometry)
        o = self.options
        h = hist.Hist(
            _cell_axis(self.detector.n_cells),
            hist.axis.Integer(0, 2, name="gain", label="gain (0 high, 1 low)", flow=False),
            _adc_axis(o.adc_min, o.adc_max),
            storage=hist.storage.Int64(),
        )
        h.fill(cell=cell, gain=0, adc=np.rint(flat["energy"]).astype(np.int64))
        h.fill(cell=cell, gain=1, adc=np.rint(flat["adc_lg"]).astype(np.int64))
        return h

    def fit(self, accumulated: hist.Hist) -> Constants:
        """Per cell and gain: mean (error sigma_r / sqrt(n)) and noise sqrt(s^2 - 1/12)
        (error s^2 / (noise sqrt(2 (n - 1)))); status 1 below ``min_entries``, 2 when too
        much lies outside the window or the spectrum is not Gaussian (zero width, or the
        D'Agostino-Pearson test of skewness and kurtosis below ``min_normality_p``)."""
        geometry = self.detector
        view = np.asarray(accumulated.view(flow=True), dtype=np.float64)
        tables: dict[str, tuple[FloatArray, FloatArray, str]] = {}
        statuses, quality = [], {}
        for gain, label in enumerate(("hg", "lg")):
            mean, mean_err, noise, noise_err, status, shape = self._moments(view[:, gain, :])
            mean, mean_err, fb_mean = _fallback(mean, mean_err, status, f"{label} pedestal")
            noise, noise_err, fb_noise = _fallback(noise, noise_err, status, f"{label} noise")
            tables[f"pedestal_{label}_adc"] = (mean, mean_err, "ADC")
            tables[f"noise_{label}_adc"] = (noise, noise_err, "ADC")
            statuses.append(status)
            quality[label] = {
                "status_counts": _status_counts(status),
                "fallback": {"pedestal_adc": fb_mean, "noise_adc": fb_noise},
                "not_gaussian": int(shape),
            }
            _warn_failed(
                f"pedestal ({label})", geometry, status, "the mean pedestal of the good cells"
            )
        status = np.maximum(*statuses)
        tables["pedestal_status"] = (status.astype(np.float64), np.zeros(status.size), "1")
        entries = view[:, 0, :].sum(axis=1)
        fit_quality = {
            "status_counts": _status_counts(status),
            "not_ok_cells": _not_ok_cells(geometry, status),
            "gains": quality,
            "entries_per_cell_median": float(np.median(entries)),
        }
        sample = f"pedestal runs: {int(entries.sum())} high-gain readings"
        return _constants(geometry, "pedestal", tables, sample, fit_quality)

    def _moments(
        self, counts: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, IntArray, int]:
        o = self.options
        inside = counts[:, 1:-1]
        outside = counts[:, 0] + counts[:, -1]
        n = inside.sum(axis=1)
        total = n + outside
        x = np.arange(o.adc_min, o.adc_max, dtype=np.float64)
        safe_n = np.maximum(n, 1.0)
        mean = inside @ x / safe_n
        d = x[None, :] - mean[:, None]
        m2 = (inside * d**2).sum(axis=1) / safe_n
        m3 = (inside * d**3).sum(axis=1) / safe_n
        m4 = (inside * d**4).sum(axis=1) / safe_n
        var = m2 * safe_n / np.maximum(n - 1, 1.0)  # of the rounded values (unbiased)
        noise2 = var - 1.0 / 12.0  # Sheppard's correction for the integer binning
        noise = np.sqrt(np.maximum(noise2, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            k2 = _skew_z(m3 / m2**1.5, safe_n) ** 2 + _kurtosis_z(m4 / m2**2, safe_n) ** 2
        not_gaussian = ~(np.exp(-0.5 * k2) >= o.min_normality_p)  # chi2(2) tail; NaN fails
        status = np.full(n.size, STATUS_OK, np.int64)
        failed = (outside > o.max_outside_fraction * total) | (noise2 <= 0.01) | not_gaussian
        status[failed] = STATUS_FAILED
        status[total < o.min_entries] = STATUS_TOO_FEW
        good = status == STATUS_OK
        mean_err = np.sqrt(var / safe_n)
        noise_err = var / np.maximum(noise, 1e-12) / np.sqrt(2.0 * np.maximum(n - 1, 1.0))
        shape = int(np.count_nonzero(not_gaussian & (total >= o.min_entries)))
        return (
            np.where(good, mean, 0.0),
            np.where(good, mean_err, 0.0),
            np.where(good, noise, 0.0),
            np.where(good, noise_err, 0.0),
            status,
            shape,
        )


def _skew_z(b1: FloatArray, n: FloatArray) -> FloatArray:
    """Sample skewness ``b1`` of ``n`` values as a standard normal under normality
    (D'Agostino 1970, as scipy.stats.skewtest), vectorised over cells."""
    y = b1 * np.sqrt((n + 1) * (n + 3) / (6.0 * (n - 2)))
    beta2 = 3.0 * (n**2 + 27 * n - 70) * (n + 1) * (n + 3) / ((n - 2) * (n + 5) * (n + 7) * (n + 9))
    w2 = -1.0 + np.sqrt(2.0 * (beta2 - 1.0))
    delta = 1.0 / np.sqrt(0.5 * np.log(w2))
    alpha = np.sqrt(2.0 / (w2 - 1.0))
    return delta * np.arcsinh(y / alpha)


def _kurtosis_z(b2: FloatArray, n: FloatArray) -> FloatArray:
    """Sample kurtosis ``b2`` (3 for a Gaussian) of ``n`` values as a standard normal under
    normality (Anscombe & Glynn 1983, as scipy.stats.kurtosistest), vectorised over cells."""
    mean = 3.0 * (n - 1) / (n + 1)
    var = 24.0 * n * (n - 2) * (n - 3) / ((n + 1) ** 2 * (n + 3) * (n + 5))
    x = (b2 - mean) / np.sqrt(var)
    root_beta1 = (
        6.0 * (n * n - 5 * n + 2) / ((n + 7) * (n + 9))
        * np.sqrt(6.0 * (n + 3) * (n + 5) / (n * (n - 2) * (n - 3)))
    )  # fmt: skip
    a = 6.0 + 8.0 / root_beta1 * (2.0 / root_beta1 + np.sqrt(1.0 + 4.0 / root_beta1**2))
    denominator = 1.0 + x * np.sqrt(2.0 / (a - 4.0))
    term = np.sign(denominator) * np.cbrt((1.0 - 2.0 / a) / np.abs(denominator))
    return (1.0 - 2.0 / (9.0 * a) - term) / np.sqrt(2.0 / (9.0 * a))


# ------------------------------------------------------------------------------ gain ratio

_MOMENTS = ("n", "hg", "lg", "hg2", "lg2", "hglg")


@dataclass(frozen=True)
class GainRatioOptions:
    """Options of :class:`GainRatio`."""

    #: pedestal constants (correctionlib JSON with pedestal_hg_adc, pedestal_lg_adc, e.g. the
    #: ``pedestal`` method's); empty: the design pedestals with their per-cell spread as
    #: uncertainty (then prefer ``free_offset``)
    pedestals: str = ""
    #: overlap window, lower edge: high-gain amplitude above pedestal [ADC] (high-gain hits)
    hg_min_adc: float = 600.0
    #: overlap window, upper edge [ADC]: below the switch (2930 ADC - pedestal) for every cell
    hg_max_adc: float = 2500.0
    #: fewer overlap hits than this in a cell: status 1
    min_hits: int = 20
    #: fit LG = c + HG / ratio with a free offset c (pedestal-independent, ~2-3 times larger
    #: uncertainty) instead of through the origin of pedestal-subtracted amplitudes
    free_offset: bool = False


class GainRatio(CalibrationMethod):
    """High/low gain ratio per cell from hits read on both gains in physics runs."""

    description: ClassVar[str] = (
        "high/low gain ratio per cell from the overlap region of physics runs digitised with "
        "both gains: straight line of the low- against the high-gain amplitude (seed 000)"
    )
    url: ClassVar[str] = _URL
    Options: ClassVar[type] = GainRatioOptions
    run_type: ClassVar[str] = "physics"
    input_stage: ClassVar[str] = "raw"

    options: GainRatioOptions

    @cached_property
    def pedestals(self) -> dict[str, tuple[FloatArray, FloatArray]]:
        """(values, uncertainties) per gain, ``hg`` and ``lg``, in cellids order."""
        geometry = self.detector
        names = {"hg": "pedestal_hg_adc", "lg": "pedestal_lg_adc"}
        if not self.options.pedestals:
            n = geometry.n_cells
            return {
                gain: (np.full(n, PARAMETERS[name].mean), np.full(n, PARAMETERS[name].spread))
                for gain, name in names.items()
            }
        constants = load_constants(self.options.pedestals)
        constants.check_geometry(geometry, "the gain-ratio calibration")
        out = {}
        for gain, name in names.items():
            if name not in constants.tables:
                raise ConstantsError(
                    f"{self.options.pedestals} has no table {name!r} (it has "
                    f"{', '.join(constants.tables)}); give the output of the pedestal method"
                )
            table = constants.tables[name]
            index = geometry.cell_index(table.keys)
            values, errors = np.full(geometry.n_cells, np.nan), np.zeros(geometry.n_cells)
            values[index[index >= 0]] = table.values[index >= 0]
            errors[index[index >= 0]] = table.uncertainties[index >= 0]
            if np.any(np.isnan(values)):
                raise ConstantsError(
                    f"{self.options.pedestals}: table {name!r} misses "
                    f"{np.count_nonzero(np.isnan(values))} cells of {geometry.name!r}"
                )
            out[gain] = (values, errors)
        return out

    def collect(self, events: Any) -> hist.Hist:
        """Per cell, integer sums of n, HG, LG, HG^2, LG^2, HG LG (raw ADC) of the
        high-gain hits whose amplitude lies in the overlap window (Int64: exact)."""
        flat = _hits(
            events, ("cellid", "energy", "adc_lg", "gain"), "the gain-ratio calibration",
            "digitise with both gains (DigitizationOptions(dual_gain=True))",
        )  # fmt: skip
        cell = cell_indices(events, flat["cellid"], self.geometry)
        hg = np.rint(flat["energy"]).astype(np.int64)
        lg = np.rint(flat["adc_lg"]).astype(np.int64)
        amplitude = hg - self.pedestals["hg"][0][cell]
        o = self.options
        sel = (flat["gain"] == 0) & (amplitude >= o.hg_min_adc) & (amplitude <= o.hg_max_adc)
        cell, hg, lg = cell[sel], hg[sel], lg[sel]
        h = hist.Hist(
            _cell_axis(self.detector.n_cells),
            hist.axis.Integer(0, len(_MOMENTS), name="moment", label=" ".join(_MOMENTS),
                              flow=False),
            storage=hist.storage.Int64(),
        )  # fmt: skip
        for k, values in enumerate((np.ones_like(hg), hg, lg, hg * hg, lg * lg, hg * lg)):
            h.fill(cell=cell, moment=k, weight=values)
        return h

    def fit(self, accumulated: hist.Hist) -> Constants:
        """Per cell, the slope s of LG on HG (least squares, through the origin of the
        pedestal-subtracted amplitudes, or with a free offset); ratio 1/s. Uncertainty from
        the residual scatter (Student-t corrected) and, through the origin, the pedestal
        uncertainties."""
        geometry = self.detector
        o = self.options
        sums = np.asarray(accumulated.view(flow=False), dtype=np.float64)
        n, sh, sl, shh, sll, shl = sums.T
        (ph, eh), (pl, el) = self.pedestals["hg"], self.pedestals["lg"]
        # centred on the pedestals: h = HG - P_HG, l = LG - P_LG
        h = sh - n * ph
        ell = sl - n * pl
        hh = shh - 2 * ph * sh + n * ph**2
        ll = sll - 2 * pl * sl + n * pl**2
        hl = shl - pl * sh - ph * sl + n * ph * pl
        with np.errstate(divide="ignore", invalid="ignore"):
            # the scatter is estimated from the residuals (dof degrees of freedom): the
            # slope's error is Student-t, of variance dof / (dof - 2) in units of the estimate
            if o.free_offset:
                dof = n - 2
                sxx = hh - h**2 / n
                sxy = hl - h * ell / n
                slope = sxy / sxx
                residual = (ll - ell**2 / n - slope * sxy) / dof
                var_slope = residual / sxx * dof / (dof - 2)
            else:
                dof = n - 1
                slope = hl / hh
                residual = (ll - slope * hl) / dof
                lever = h / hh  # d slope / d P_LG = -lever, d slope / d P_HG = slope lever
                var_slope = residual / hh * dof / (dof - 2)
                var_slope += lever**2 * (el**2 + slope**2 * eh**2)
            ratio = 1.0 / slope
            error = np.sqrt(np.maximum(var_slope, 0.0)) / slope**2
        status = np.full(n.size, STATUS_OK, np.int64)
        ok = np.isfinite(ratio) & np.isfinite(error) & (slope > 0) & (error > 0)
        status[~ok] = STATUS_FAILED
        status[n < max(o.min_hits, 5)] = STATUS_TOO_FEW
        ratio, error, fallback = _fallback(
            np.where(status == 0, ratio, 0.0), np.where(status == 0, error, 0.0), status,
            "gain ratio",
        )  # fmt: skip
        _warn_failed("gain_ratio", geometry, status, f"the mean ratio {fallback:.3f}")
        fit_quality = {
            "status_counts": _status_counts(status),
            "not_ok_cells": _not_ok_cells(geometry, status),
            "fallback": {"gain_ratio": fallback},
            "overlap_hits": int(n.sum()),
            "overlap_hits_per_good_cell_median": float(np.median(n[status == 0])),
            "fit": "free offset" if o.free_offset else "through the pedestals",
            "pedestals": o.pedestals or "design values",
        }
        tables = {
            "gain_ratio": (ratio, error, "1"),
            "gain_ratio_status": (status.astype(np.float64), np.zeros(n.size), "1"),
        }
        sample = f"physics runs: {int(n.sum())} hits read on both gains in the overlap window"
        return _constants(geometry, "gain_ratio", tables, sample, fit_quality)


# ------------------------------------------------------------------------------ SPE

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_NAMES = ("pedestal", "gain", "sigma0", "sigma1", "mu")
_Z_CUT = 9.0  # beyond this many sigma a peak's CDF is 0 or 1


@numba.njit(cache=True)
def _mixture(
    par: FloatArray, edges: FloatArray, transfer: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """CDF at ``edges`` of the peaks f = 0..F (F = transfer columns; peak F holds the weight
    of f >= F) with weights w_f = sum_k Poisson(k; mu) transfer[k, f], and its derivatives
    by the five parameters (pedestal, gain, sigma0, sigma1, mu)."""
    ped, gain, s0, s1, mu = par[0], par[1], par[2], par[3], par[4]
    n_pe, n_peaks = transfer.shape
    n_edges = edges.size
    cdf = np.zeros(n_edges)
    dcdf = np.zeros((5, n_edges))
    w = np.zeros(n_peaks + 1)
    dw = np.zeros(n_peaks + 1)
    pk = math.exp(-mu)
    for k in range(n_pe):
        if k > 0:
            pk *= mu / k
        dpk = pk * (k / mu - 1.0)
        for f in range(n_peaks):
            w[f] += pk * transfer[k, f]
            dw[f] += dpk * transfer[k, f]
    total, dtotal = 0.0, 0.0
    for f in range(n_peaks):
        total += w[f]
        dtotal += dw[f]
    w[n_peaks] = max(1.0 - total, 0.0)
    dw[n_peaks] = -dtotal
    for k in range(n_peaks + 1):
        sk = math.sqrt(s0 * s0 + k * s1 * s1)
        centre = ped + k * gain
        for e in range(n_edges):
            z = (edges[e] - centre) / sk
            if z < -_Z_CUT:
                continue
            if z > _Z_CUT:
                cdf[e] += w[k]
                dcdf[4, e] += dw[k]
                continue
            phi_cdf = 0.5 * math.erfc(-z / _SQRT2)
            g = w[k] * math.exp(-0.5 * z * z) * _INV_SQRT_2PI / sk
            cdf[e] += w[k] * phi_cdf
            dcdf[0, e] -= g
            dcdf[1, e] -= k * g
            dcdf[2, e] -= g * z * s0 / sk
            dcdf[3, e] -= g * z * k * s1 / sk
            dcdf[4, e] += dw[k] * phi_cdf
    return cdf, dcdf


@numba.njit(cache=True)
def _nll(
    par: FloatArray, edges: FloatArray, counts: FloatArray, transfer: FloatArray
) -> tuple[float, FloatArray]:
    """-2 ln L of the multinomial (binned, total fixed) and its gradient."""
    cdf, dcdf = _mixture(par, edges, transfer)
    value = 0.0
    grad = np.zeros(5)
    for i in range(counts.size):
        c = counts[i]
        if c <= 0:
            continue
        p = max(cdf[i + 1] - cdf[i], 1e-300)
        value -= c * math.log(p)
        for j in range(5):
            grad[j] -= c * (dcdf[j, i + 1] - dcdf[j, i]) / p
    return 2.0 * value, 2.0 * grad


@numba.njit(cache=True)
def _fisher(par: FloatArray, edges: FloatArray, total: float, transfer: FloatArray) -> FloatArray:
    """Expected information N sum_i dp_i dp_i^T / p_i of the multinomial."""
    cdf, dcdf = _mixture(par, edges, transfer)
    info = np.zeros((5, 5))
    for i in range(edges.size - 1):
        p = cdf[i + 1] - cdf[i]
        if p <= 1e-300:
            continue
        for j in range(5):
            dj = dcdf[j, i + 1] - dcdf[j, i]
            for m in range(j, 5):
                info[j, m] += dj * (dcdf[m, i + 1] - dcdf[m, i]) / p
    for j in range(5):
        for m in range(j):
            info[j, m] = info[m, j]
    return total * info


@numba.njit(cache=True)
def _deviance(
    par: FloatArray, edges: FloatArray, counts: FloatArray, transfer: FloatArray
) -> float:
    """Poisson deviance of the fitted spectrum (goodness of fit)."""
    cdf, _ = _mixture(par, edges, transfer)
    total = counts.sum()
    out = 0.0
    for i in range(counts.size):
        mu = total * max(cdf[i + 1] - cdf[i], 1e-300)
        c = counts[i]
        out += 2.0 * (mu - c + (c * math.log(c / mu) if c > 0 else 0.0))
    return out


#: Photo-electron statistics the SPE fit can assume (``SinglePhotoelectronOptions``).
PHOTOSTATISTICS = ("binomial", "poisson")


@functools.lru_cache(maxsize=128)
def _transfer(n_peaks: int, photostatistics: str) -> FloatArray:
    """P(f fired pixels | k photo-electrons), k = 0..K-1 (rows), f = 0..n_peaks-1.

    ``poisson``: f = k (a SiPM at low light, no cross-talk). ``binomial``: f ~ Binomial(N_pix,
    1 - exp(-k / N_pix)) with the design N_pix, the pixel statistics of the digitiser and of
    MarlinReco: at low light its variance is about k, so it doubles the photo-statistics and
    the peak weights are a compound (Neyman type A) rather than a Poisson distribution; the
    peak positions, hence the gain, are the same."""
    if photostatistics == "poisson":
        return np.eye(n_peaks)
    n_pixels = round(PARAMETERS["n_pixels"].mean)
    k = np.arange(n_peaks + 15, dtype=np.float64)[:, None]
    f = np.arange(n_peaks)[None, :]
    return np.asarray(stats.binom.pmf(f, n_pixels, -np.expm1(-k / n_pixels)), np.float64)


class _SpectrumCost:
    """-2 ln L of one cell's spectrum for Minuit: value, gradient and expected Hessian."""

    errordef = Minuit.LEAST_SQUARES  # -2 ln L: one unit is one standard deviation

    def __init__(self, edges: FloatArray, counts: FloatArray, transfer: FloatArray) -> None:
        self.edges, self.counts, self.transfer = edges, counts, transfer
        self.total = float(counts.sum())
        self._at: bytes = b""
        self._grad = np.zeros(5)

    def __call__(self, par: FloatArray) -> float:
        par = np.asarray(par, np.float64)
        value, self._grad = _nll(par, self.edges, self.counts, self.transfer)
        self._at = par.tobytes()
        return value

    def grad(self, par: FloatArray) -> FloatArray:
        if np.asarray(par, np.float64).tobytes() != self._at:
            self(par)
        return self._grad

    def hessian(self, par: FloatArray) -> FloatArray:
        return 2.0 * _fisher(np.asarray(par, np.float64), self.edges, self.total, self.transfer)


@dataclass(frozen=True)
class SinglePhotoelectronOptions:
    """Options of :class:`SinglePhotoelectron`."""

    #: lowest ADC value of the spectra [ADC]; entries outside enter the fit as tail bins
    adc_min: int = 300
    #: end of the ADC window (excluded) [ADC]
    adc_max: int = 700
    #: fewer entries than this in a cell: status 1
    min_entries: int = 100
    #: smallest peak spacing searched for the starting values [ADC]
    gain_min_adc: float = 8.0
    #: largest peak spacing searched for the starting values [ADC]
    gain_max_adc: float = 80.0
    #: status 2 (failed) above this relative error of the gain
    max_relative_error: float = 0.05
    #: status 2 above this pedestal width / gain: peaks not resolved (the modulation of the
    #: spectrum, exp(-2 pi^2 r^2), falls below 30 %; normal cells have r ~ 0.1, noisy ~ 0.5)
    max_width_ratio: float = 0.25
    #: status 2 above this Poisson deviance per bin of the fitted spectrum (a wrong comb)
    max_deviance_per_bin: float = 2.0
    #: Minuit strategy (0: fastest; errors come from the expected information anyway)
    strategy: int = 0
    #: how fired pixels follow photo-electrons (see ``PHOTOSTATISTICS``): ``binomial`` as the
    #: digitiser, ``poisson`` for one pixel per photo-electron
    photostatistics: str = "binomial"

    def __post_init__(self) -> None:
        if self.photostatistics not in PHOTOSTATISTICS:
            raise MethodOptionsError(
                f"unknown photostatistics {self.photostatistics!r}; valid: "
                f"{', '.join(PHOTOSTATISTICS)}"
            )


@dataclass(frozen=True)
class _Start:
    """Starting values of every cell's fit, and the number of peaks to model."""

    par: FloatArray  # (cells, 5)
    n_peaks: IntArray


class SinglePhotoelectron(CalibrationMethod):
    """SPE gain per cell from LED runs: a fit of the photo-electron spectrum."""

    description: ClassVar[str] = (
        "SPE gain [high-gain ADC per pixel] per cell from LED runs: binned likelihood fit of "
        "the photo-electron spectrum, pedestal + Gaussian pixel peaks (seed 000)"
    )
    url: ClassVar[str] = _URL
    Options: ClassVar[type] = SinglePhotoelectronOptions
    run_type: ClassVar[str] = "led"
    input_stage: ClassVar[str] = "raw"

    options: SinglePhotoelectronOptions

    def collect(self, events: Any) -> hist.Hist:
        """Per cell, the high-gain integer-ADC spectrum (Int64 counts)."""
        flat = _hits(events, ("cellid", "energy"), "the SPE calibration", "give LED runs")
        cell = cell_indices(events, flat["cellid"], self.geometry)
        h = hist.Hist(
            _cell_axis(self.detector.n_cells),
            _adc_axis(self.options.adc_min, self.options.adc_max),
            storage=hist.storage.Int64(),
        )
        h.fill(cell=cell, adc=np.rint(flat["energy"]).astype(np.int64))
        return h

    def fit(self, accumulated: hist.Hist) -> Constants:
        """Per cell: starting values from the spectrum (pedestal peak, peak spacing from its
        Fourier transform), then a Minuit fit of the binned multinomial likelihood

            p(bin) = sum_f w_f(mu) [Phi((hi - P - f G) / s_f) - Phi((lo - P - f G) / s_f)]

        over f fired pixels, s_f^2 = sigma0^2 + f sigma1^2, bin edges at half-integer ADC
        (the rounding), w_f the pixel statistics of ``mu`` mean photo-electrons (Poisson, or
        with ``photostatistics="binomial"`` the digitiser's compound of Poisson p.e. and
        binomial pixels). The gain G is ``spe_adc``; its error comes from the expected
        information at the minimum. Everything that is not ok falls back explicitly."""
        geometry = self.detector
        o = self.options
        counts = np.asarray(accumulated.view(flow=True), dtype=np.float64)
        total = counts.sum(axis=1)
        status = np.full(geometry.n_cells, STATUS_TOO_FEW, np.int64)
        gain = np.zeros(geometry.n_cells)
        error = np.zeros(geometry.n_cells)
        deviance = np.full(geometry.n_cells, np.nan)
        fitted = np.flatnonzero(total >= max(o.min_entries, 10))
        blocks = np.array_split(fitted, max(1, fitted.size // 2048))  # bounds the memory
        starts = [self._start_values(counts[block]) for block in blocks if block.size]
        start = _Start(
            np.concatenate([s.par for s in starts]) if starts else np.zeros((0, 5)),
            np.concatenate([s.n_peaks for s in starts]) if starts else np.zeros(0, np.int64),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", IMinuitWarning)
            for row, cell in enumerate(fitted):
                result = self._fit_cell(counts[cell], start.par[row], int(start.n_peaks[row]))
                status[cell], gain[cell], error[cell], deviance[cell] = result
        gain, error, fallback = _fallback(gain, error, status, "SPE gain")
        _warn_failed("spe", geometry, status, f"the mean SPE gain {fallback:.3f} ADC")
        good = status == STATUS_OK
        fit_quality = {
            "status_counts": _status_counts(status),
            "not_ok_cells": _not_ok_cells(geometry, status),
            "fallback": {"spe_adc": fallback},
            "entries_per_cell_median": float(np.median(total)),
            "relative_error_median": float(np.median(error[good] / gain[good])),
            "deviance_per_bin_median": float(np.nanmedian(deviance[good])),
            "photostatistics": o.photostatistics,
        }
        tables = {
            "spe_adc": (gain, error, "ADC per pixel"),
            "spe_status": (status.astype(np.float64), np.zeros(status.size), "1"),
        }
        sample = f"LED runs: {int(total.sum())} high-gain readings"
        return _constants(geometry, "spe", tables, sample, fit_quality)

    # ---- starting values, all cells at once --------------------------------------------
    def _start_values(self, counts: FloatArray) -> _Start:
        """Peak spacing: the strongest Fourier component with a period in [gain_min_adc,
        gain_max_adc] (refined by a parabola); the comb's phase places the peaks; the lowest
        peak holding at least 1 % of the entries is the pedestal, its window gives the
        pedestal, its width and (by the Poisson zero term) the mean light."""
        o = self.options
        inside = counts[:, 1:-1]
        n_bins = inside.shape[1]
        x = np.arange(o.adc_min, o.adc_max, dtype=np.float64)
        step = 1.0 / (4.0 * n_bins)
        freq = np.arange(1.0 / o.gain_max_adc, 1.0 / o.gain_min_adc + step, step)
        phase = 2.0 * np.pi * np.outer(x, freq)
        re, im = inside @ np.cos(phase), inside @ np.sin(phase)
        power = re**2 + im**2
        best = np.clip(np.argmax(power, axis=1), 1, freq.size - 2)
        rows = np.arange(inside.shape[0])
        lp = np.log(np.maximum(power[rows[:, None], best[:, None] + np.arange(-1, 2)], 1e-300))
        curvature = lp[:, 0] - 2 * lp[:, 1] + lp[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = np.where(curvature < 0, 0.5 * (lp[:, 0] - lp[:, 2]) / curvature, 0.0)
        f_best = freq[best] + np.clip(shift, -1, 1) * step
        g0 = 1.0 / f_best
        angle = np.angle((inside * np.exp(2j * np.pi * x[None, :] * f_best[:, None])).sum(axis=1))
        comb = np.mod(angle / (2.0 * np.pi) * g0, g0)  # a peak sits at comb + m g0
        # pedestal: lowest tooth with >= 1 % of the entries (and >= 5)
        cum = np.concatenate([np.zeros((inside.shape[0], 1)), np.cumsum(inside, axis=1)], axis=1)
        first = np.floor((o.adc_min - comb) / g0) - 1
        m = first[:, None] + np.arange(int(np.ceil(n_bins / o.gain_min_adc)) + 4)[None, :]
        teeth = comb[:, None] + m * g0[:, None]
        lo = np.clip(np.ceil(teeth - 0.5 * g0[:, None] - o.adc_min), 0, n_bins).astype(np.int64)
        hi = np.clip(np.ceil(teeth + 0.5 * g0[:, None] - o.adc_min), 0, n_bins).astype(np.int64)
        window = np.take_along_axis(cum, hi, 1) - np.take_along_axis(cum, lo, 1)
        total = counts.sum(axis=1)
        enough = window >= np.maximum(5.0, 0.01 * total)[:, None]
        pick = np.argmax(enough, axis=1)
        a, b = lo[rows, pick], hi[rows, pick]
        cx = np.concatenate([np.zeros((inside.shape[0], 1)), np.cumsum(inside * x, 1)], 1)
        cxx = np.concatenate([np.zeros((inside.shape[0], 1)), np.cumsum(inside * x * x, 1)], 1)
        n0 = np.maximum(cum[rows, b] - cum[rows, a], 1.0)
        ped = (cx[rows, b] - cx[rows, a]) / n0
        var = (cxx[rows, b] - cxx[rows, a]) / n0 - ped**2 - 1.0 / 12.0
        s0 = np.sqrt(np.clip(var, 0.25, (0.3 * g0) ** 2))
        zero = -np.log(np.clip(n0 / np.maximum(total, 1.0), 1e-4, 1.0))  # -ln P(0 pixels)
        if o.photostatistics == "binomial":  # P(0) = exp(-mu (1 - 1/e))
            zero /= -np.expm1(-1.0)
        mu = np.clip(zero, 0.05, 10.0)
        last = o.adc_min + np.max(np.where(inside > 0, np.arange(n_bins) + 1, 0), axis=1)
        n_peaks = np.clip(np.ceil((last - ped) / g0) + 3, 3, 60).astype(np.int64)
        par = np.column_stack([ped, g0, s0, 0.05 * g0, mu])
        return _Start(par, n_peaks)

    # ---- one cell ----------------------------------------------------------------------
    def _fit_cell(
        self, counts: FloatArray, start: FloatArray, n_peaks: int
    ) -> tuple[int, float, float, float]:
        """(status, gain, error, deviance per bin) of one cell's spectrum (with flow bins)."""
        o = self.options
        inside = counts[1:-1]
        occupied = np.flatnonzero(inside)
        if occupied.size < 3:
            return STATUS_FAILED, 0.0, 0.0, np.nan
        first, last = occupied[0], occupied[-1] + 1
        # bins: (-inf, first), the occupied range, (last, inf); edges between integer ADC
        edges = np.concatenate([[-np.inf], o.adc_min + np.arange(first, last + 1) - 0.5, [np.inf]])
        binned = np.concatenate([[counts[0]], inside[first:last], [counts[-1]]])
        transfer = _transfer(n_peaks, o.photostatistics)
        cost = _SpectrumCost(edges, binned, transfer)
        m = Minuit(cost, start, grad=cost.grad, hessian=cost.hessian, name=_NAMES)
        m.strategy = o.strategy
        m.limits = [(None, None), (1.0, None), (0.05, None), (0.0, None), (1e-4, None)]
        try:
            m.migrad()
            par = np.asarray(m.values, np.float64)
            covariance = np.linalg.inv(_fisher(par, edges, cost.total, transfer))
        except (RuntimeError, ValueError, np.linalg.LinAlgError):
            return STATUS_FAILED, 0.0, 0.0, np.nan
        gain_error = float(np.sqrt(max(covariance[1, 1], 0.0)))
        deviance = _deviance(par, edges, binned, transfer) / binned.size
        gain = float(par[1])
        ok = (
            m.valid
            and np.isfinite(gain_error)
            and gain_error > 0
            and gain_error < o.max_relative_error * gain
            and par[2] < o.max_width_ratio * gain
            and deviance < o.max_deviance_per_bin
        )
        return (STATUS_OK if ok else STATUS_FAILED), gain, gain_error, deviance


__all__ = [
    "STATUS_FAILED",
    "STATUS_NAMES",
    "STATUS_OK",
    "STATUS_TOO_FEW",
    "GainRatio",
    "GainRatioOptions",
    "Pedestal",
    "PedestalOptions",
    "SinglePhotoelectron",
    "SinglePhotoelectronOptions",
]
