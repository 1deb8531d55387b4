"""Per-cell electronics non-linearity (a, b) learnt by making data look like MC_digi (seed 000).

What to use when:

- :func:`cell_quantiles` -- matched per-cell quantiles of two hit samples (weighted, censored
  at the clipped range top): the input of every per-cell fit.
- :func:`fit_cells` -- the closed-form per-cell solution (linear least squares) refined by
  Gauss-Newton to the exact 1-D Wasserstein-2 distance in amplitude space; fast (all cells at
  once, no optimiser) and what the ``inverse_nonlinearity`` plugin starts from.
- :func:`refine` -- the joint refinement of all cells' (a, b) with the event-level
  energy-sum term and an optional energy-prediction hook (scipy L-BFGS-B, analytic gradients).
- :func:`hit_energy_gev` -- calibrated hit energies [GeV] as a function of (a, b), with their
  derivatives (the calibration chain of :mod:`calocoffea.calibration`, steps 3-6).
- :func:`beam_profile_weights` -- data and MC event weights that give both the overlap of
  their shower-centroid distributions (per beam energy), so that per-cell spectra compare
  like with like when the beam spots differ (seed 000: "beam centre and beam size").
- :func:`plot_cell_spectra` -- seed 000's figure: spectra of a block of cells of one layer.

Equations (X = ``Electronics.nonlinearity_scale_adc``, y the high-gain-equivalent amplitude
[ADC] of the data after pedestal and gain ratio, x the MC amplitude after the MC's own inverse,
i.e. what the calibration expects):

- response and inverse: y = b x / (1 + a x / X),  x(y; a, b) = y / (b - a y / X);
- in one dimension W2^2(F, G) = int_0^1 (F^-1(p) - G^-1(p))^2 dp, so per cell with matched
  quantiles (y_k, x_k) at levels p_k the cell-level deposition loss is
  L_cell = mean_k (x(y_k; a, b) - x_k)^2 / xbar^2 (xbar: the cell's mean target quantile);
- x(y_k) = x_k rearranges to b x_k - a x_k y_k / X = y_k, linear in (a, b): the starting point
  is that least-squares solution; Gauss-Newton on r_k = x(y_k; a, b) - x_k with
  dx/db = -y / D^2, dx/da = y^2 / (X D^2), D = b - a y / X, then minimises L_cell exactly;
- levels: p_k uniform in [p_low, p_high]; p_high is below the clipped fraction of both samples
  (clipped hits sit at the top of both, so quantiles below it are those of the unclipped
  spectra: right-censoring handled exactly);
- energy-sum ("reference") loss: per beam energy E, L_sum = mean_j ((S_(j) - T_j) / E)^2 with
  S_(j) the sorted calibrated event sums of the corrected data and T_j the MC_digi sums'
  quantiles at (j + 1/2) / n;
- prior on a (:class:`Prior`): + tau_c ((a - a0) / sigma_a)^2 per cell, tau_c = var(x) /
  xbar^2 / N_c the statistical size of L_cell for N_c hits, so that a moves from its nominal
  value only where the spectrum reaches the compression;
- total: L = w_cell L_cell + w_sum L_sum + w_pred L_pred, L_pred from a hook (a trained
  energy regressor; :data:`PredictionHook`).

Where the information on a comes from: a changes the amplitude by a relative a x / X, 2e-4
at a MIP and 1 % at x = 0.2 X (about 45 MIP): only cells whose hits reach a sizeable fraction
of the range top constrain it; b is fixed by every quantile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import optimize

from calocoffea.conditions import PARAMETERS, Conditions, ConditionsConfig, nominal

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: An energy-prediction loss: ``hook(hit_energy_gev, hit_event, beam_energy_gev)`` returns
#: the loss and its gradient with respect to every hit energy (a trained network fills it in).
PredictionHook = Callable[[FloatArray, IntArray, FloatArray], tuple[float, FloatArray]]


# ------------------------------------------------------------------------------ formulas


def inverse(y: FloatArray, a: FloatArray, b: FloatArray, scale_adc: float) -> FloatArray:
    """x = y / (b - a y / X); the denominator is kept positive by the callers' bounds."""
    return y / (b - a * y / scale_adc)


def inverse_derivatives(
    y: FloatArray, a: FloatArray, b: FloatArray, scale_adc: float
) -> tuple[FloatArray, FloatArray]:
    """(dx/da, dx/db) of :func:`inverse`."""
    d2 = (b - a * y / scale_adc) ** 2
    return y * y / (scale_adc * d2), -y / d2


# ------------------------------------------------------------------------------ quantiles


@dataclass(frozen=True)
class Quantiles:
    """Matched per-cell quantiles: ``data[c, k]``, ``target[c, k]`` at ``levels[c, k]``;
    ``valid[c, k]`` is False beyond a cell's censoring level or for cells without a fit."""

    data: FloatArray
    target: FloatArray
    levels: FloatArray
    valid: BoolArray
    hits_data: FloatArray
    hits_target: FloatArray


def weighted_quantiles(
    values: FloatArray,
    cell: IntArray,
    weights: FloatArray,
    levels: FloatArray,
    n_cells: int,
) -> FloatArray:
    """Quantiles [n_cells, K] of ``values`` per cell at per-cell ``levels`` [n_cells, K]
    (weighted, linear between the mid-points of the sorted samples); NaN for empty cells.
    Infinite values (clipped hits) sort to the top and count in the normalisation."""
    order = np.lexsort((values, cell))
    order = order[weights[order] > 0]  # zero-weight samples do not count (nor divide by 0)
    v, c, w = values[order], cell[order], weights[order]
    if v.size < 2:
        return np.full(levels.shape, np.nan)
    total = np.bincount(c, weights=w, minlength=n_cells)
    start = np.concatenate(([0.0], np.cumsum(total)[:-1]))
    with np.errstate(invalid="ignore", divide="ignore"):
        # mid-point cumulative fraction of each sample within its cell, plus the cell index
        position = (np.cumsum(w) - 0.5 * w - start[c]) / total[c] + c
    query = (np.clip(levels, 0.0, 1.0) + np.arange(n_cells)[:, None]).ravel()
    k = np.clip(np.searchsorted(position, query), 1, max(v.size - 1, 1))
    lo, hi = position[k - 1], position[k]
    same = np.repeat(np.arange(n_cells), levels.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.clip((query - lo) / (hi - lo), 0.0, 1.0)
        out = np.where(np.isfinite(v[k]) & np.isfinite(v[k - 1]), v[k - 1] + t * (v[k] - v[k - 1]),
                       np.inf)  # fmt: skip
    inside = (c[k - 1] == same) & (c[k] == same)
    out = np.where(inside, out, np.where(c[k] == same, v[k], v[k - 1]))
    out = out.reshape(levels.shape)
    return np.where((total > 0)[:, None], out, np.nan)


def _counts(index: IntArray, weights: FloatArray, n: int) -> FloatArray:
    """Sum of ``weights`` per value of ``index`` in 0 .. n - 1 (float)."""
    return np.asarray(np.bincount(index, weights=weights, minlength=n), dtype=np.float64)


def cell_quantiles(
    data: FloatArray,
    data_cell: IntArray,
    data_clipped: BoolArray,
    target: FloatArray,
    target_cell: IntArray,
    target_clipped: BoolArray,
    n_cells: int,
    *,
    target_weights: FloatArray | None = None,
    data_weights: FloatArray | None = None,
    n_levels: int = 100,
    p_low: float = 0.01,
    margin: float = 0.01,
) -> Quantiles:
    """Matched quantiles of ``data`` (y) and ``target`` (x) per cell at ``n_levels`` levels
    uniform in [p_low, p_high], p_high = (unclipped fraction of the sample with more clipping)
    - ``margin``. Clipped hits count at the top of their cell."""
    w_target = np.ones(target.size) if target_weights is None else target_weights
    w_data = np.ones(data.size) if data_weights is None else data_weights
    hits_d = _counts(data_cell, w_data, n_cells)
    hits_t = _counts(target_cell, w_target, n_cells)
    with np.errstate(invalid="ignore", divide="ignore"):
        clip_d = _counts(data_cell, data_clipped * w_data, n_cells) / hits_d
        clip_t = _counts(target_cell, target_clipped * w_target, n_cells) / hits_t
    p_high = 1.0 - np.fmax(np.nan_to_num(clip_d), np.nan_to_num(clip_t)) - margin
    u = (np.arange(n_levels) + 0.5) / n_levels
    levels = p_low + (p_high[:, None] - p_low) * u[None, :]
    y = weighted_quantiles(np.where(data_clipped, np.inf, data), data_cell, w_data, levels,
                           n_cells)  # fmt: skip
    x = weighted_quantiles(np.where(target_clipped, np.inf, target), target_cell, w_target,
                           levels, n_cells)  # fmt: skip
    valid = (p_high[:, None] > p_low + 0.05) & np.isfinite(y) & np.isfinite(x) & (y > 0) & (x > 0)
    return Quantiles(y, x, levels, valid, hits_d, hits_t)


# ------------------------------------------------------------------------------ per cell


@dataclass(frozen=True)
class CellFit:
    """Per-cell result of :func:`fit_cells` (NaN where not fitted)."""

    a: FloatArray
    b: FloatArray
    sigma_a: FloatArray
    sigma_b: FloatArray
    loss: FloatArray  # L_cell at the solution
    loss_start: FloatArray  # L_cell at the starting (a, b)
    converged: BoolArray
    iterations: int


@dataclass(frozen=True)
class Prior:
    """Gaussian prior on a around ``a`` (the starting values) with width ``sigma_a``, in
    units of the cell loss: tau_c ((a - a0) / sigma_a)^2 with tau_c = var(x) / xbar^2 / N_c,
    the expected statistical L_cell of N_c hits (``hits``). Where the hits do not reach the
    compression (most cells) a stays near a0 instead of wandering along the a-b valley."""

    a: FloatArray
    sigma_a: float
    hits: FloatArray

    def tau(self, q: Quantiles) -> FloatArray:
        w = q.valid.astype(np.float64)
        n = np.maximum(w.sum(axis=1), 1.0)
        t = np.where(q.valid, q.target, 0.0)
        mean = np.sum(w * t, axis=1) / n
        with np.errstate(invalid="ignore", divide="ignore"):
            relative = np.sum(w * (t - mean[:, None]) ** 2, axis=1) / n / mean**2
            tau = relative / np.maximum(self.hits, 1.0)
        return np.where(np.isfinite(tau), tau, 0.0)

    def loss(self, q: Quantiles, a: FloatArray) -> FloatArray:
        if not np.isfinite(self.sigma_a) or self.sigma_a <= 0:
            return np.zeros(a.size)
        return self.tau(q) * ((a - self.a) / self.sigma_a) ** 2

    def gradient(self, q: Quantiles, a: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(d loss / d a, d^2 loss / d a^2) per cell."""
        if not np.isfinite(self.sigma_a) or self.sigma_a <= 0:
            return np.zeros(a.size), np.zeros(a.size)
        k = 2.0 * self.tau(q) / self.sigma_a**2
        return k * (a - self.a), k


def _sums(w: FloatArray, *terms: FloatArray) -> list[FloatArray]:
    return [np.sum(w * t, axis=1) for t in terms]


def linear_solution(q: Quantiles, scale_adc: float) -> tuple[FloatArray, FloatArray]:
    """Least squares of b x - a x y / X = y per cell (the closed form)."""
    w = q.valid.astype(np.float64)
    y, x = np.where(q.valid, q.data, 0.0), np.where(q.valid, q.target, 0.0)
    u1, u2 = x, -x * y / scale_adc  # columns for b and a
    s11, s12, s22, r1, r2 = _sums(w, u1 * u1, u1 * u2, u2 * u2, u1 * y, u2 * y)
    det = s11 * s22 - s12 * s12
    with np.errstate(invalid="ignore", divide="ignore"):
        b = (s22 * r1 - s12 * r2) / det
        a = (s11 * r2 - s12 * r1) / det
    return a, b


def linear_b(q: Quantiles, scale_adc: float, a: FloatArray) -> FloatArray:
    """Least squares of b x = y + a x y / X per cell at fixed a (the closed form for b)."""
    w = q.valid.astype(np.float64)
    y, x = np.where(q.valid, q.data, 0.0), np.where(q.valid, q.target, 0.0)
    numerator, denominator = _sums(w, x * (y + a[:, None] * x * y / scale_adc), x * x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return numerator / denominator


def _mean_target(q: Quantiles) -> tuple[FloatArray, FloatArray]:
    """(levels per cell, mean target quantile xbar; 1 where a cell has none)."""
    w = q.valid.astype(np.float64)
    n = np.maximum(w.sum(axis=1), 1.0)
    xbar = np.sum(w * np.where(q.valid, q.target, 0.0), axis=1) / n
    return n, np.where(xbar > 0, xbar, 1.0)


def cell_loss(
    q: Quantiles, a: FloatArray, b: FloatArray, scale_adc: float, prior: Prior | None = None
) -> FloatArray:
    """L_cell per cell: mean over valid levels of ((x(y) - x_target) / xbar)^2 (+ prior)."""
    w = q.valid.astype(np.float64)
    n, xbar = _mean_target(q)
    y, t = np.where(q.valid, q.data, 1.0), np.where(q.valid, q.target, 1.0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        r = (inverse(y, a[:, None], b[:, None], scale_adc) - t) / xbar[:, None]
    loss = np.sum(np.where(q.valid, r * r, 0.0), axis=1) / n
    return loss + (prior.loss(q, a) if prior is not None else 0.0) * (w.sum(axis=1) > 0)


def fit_cells(
    q: Quantiles,
    scale_adc: float,
    start_a: FloatArray,
    start_b: FloatArray,
    *,
    prior: Prior | None = None,
    iterations: int = 20,
    tolerance: float = 1e-10,
) -> CellFit:
    """Closed-form (a, b) per cell (with a prior: b at a = a0 in closed form), then
    Gauss-Newton on the x-space residuals (+ prior) with step halving (the asymptote b X / a
    stays above every data quantile). Uncertainties from the Gauss-Newton curvature and the
    residual variance (approximate: neighbouring quantile residuals are correlated)."""
    fitted = q.valid.any(axis=1)
    if prior is None:
        a, b = linear_solution(q, scale_adc)
    else:
        a, b = prior.a.copy(), linear_b(q, scale_adc, prior.a)
    ok = fitted & np.isfinite(a) & np.isfinite(b) & (b > 0)
    a, b = np.where(ok, a, start_a), np.where(ok, b, start_b)
    w = q.valid.astype(np.float64)
    y, t = np.where(q.valid, q.data, 0.0), np.where(q.valid, q.target, 0.0)
    y_max = np.max(y, axis=1)
    loss = cell_loss(q, a, b, scale_adc, prior)
    n_levels, xbar = _mean_target(q)
    norm = n_levels * xbar * xbar  # sums below are n xbar^2 times the normalised loss
    done = ~ok
    n_iter = 0
    for n_iter in range(1, iterations + 1):  # noqa: B007
        da, db = inverse_derivatives(y, a[:, None], b[:, None], scale_adc)
        r = inverse(y, a[:, None], b[:, None], scale_adc) - t
        s_aa, s_ab, s_bb, g_a, g_b = _sums(w, da * da, da * db, db * db, da * r, db * r)
        if prior is not None:
            grad, curvature = prior.gradient(q, a)
            g_a, s_aa = g_a + 0.5 * norm * grad, s_aa + 0.5 * norm * curvature
        det = s_aa * s_bb - s_ab * s_ab
        with np.errstate(invalid="ignore", divide="ignore"):
            step_a = -(s_bb * g_a - s_ab * g_b) / det
            step_b = -(s_aa * g_b - s_ab * g_a) / det
        step_a = np.where(done | ~np.isfinite(step_a), 0.0, step_a)
        step_b = np.where(done | ~np.isfinite(step_b), 0.0, step_b)
        factor = np.ones_like(a)
        improved = np.zeros(a.size, bool)
        new_loss = loss.copy()
        for _ in range(30):
            na, nb = a + factor * step_a, b + factor * step_b
            legal = (nb > 0) & (nb - na * y_max / scale_adc > 0)
            trial = np.where(legal, cell_loss(q, na, nb, scale_adc, prior), np.inf)
            accept = ~improved & (trial <= loss) & ~done
            new_loss = np.where(accept, trial, new_loss)
            a, b = np.where(accept, na, a), np.where(accept, nb, b)
            improved |= accept
            factor = np.where(improved, factor, 0.5 * factor)
            if np.all(improved | done):
                break
        change = loss - new_loss
        loss = new_loss
        done |= ~improved | (change <= tolerance * np.maximum(loss, 1e-300))
        if np.all(done):
            break
    da, db = inverse_derivatives(y, a[:, None], b[:, None], scale_adc)
    s_aa, s_ab, s_bb = _sums(w, da * da, da * db, db * db)
    if prior is not None:
        s_aa = s_aa + 0.5 * norm * prior.gradient(q, a)[1]
    r = inverse(np.where(q.valid, q.data, 1.0), a[:, None], b[:, None], scale_adc) - t
    n = np.maximum(w.sum(axis=1), 3.0)
    variance = np.sum(w * r * r, axis=1) / (n - 2.0)
    det = s_aa * s_bb - s_ab * s_ab
    with np.errstate(invalid="ignore", divide="ignore"):
        sigma_a = np.sqrt(variance * s_bb / det)
        sigma_b = np.sqrt(variance * s_aa / det)
    converged = ok & np.isfinite(loss) & np.isfinite(sigma_a) & np.isfinite(sigma_b)
    nan = np.full(a.size, np.nan)
    return CellFit(
        a=np.where(converged, a, nan),
        b=np.where(converged, b, nan),
        sigma_a=np.where(converged, sigma_a, nan),
        sigma_b=np.where(converged, sigma_b, nan),
        loss=np.where(converged, loss, nan),
        loss_start=cell_loss(q, start_a, start_b, scale_adc, prior),
        converged=converged,
        iterations=n_iter,
    )


# ------------------------------------------------------------------------------ events


@dataclass(frozen=True)
class HitConstants:
    """Per-hit constants of the calibration chain after the inverse non-linearity:
    E [GeV] = desat(x / spe) / light_yield x scale x E_MIP / f_MIP / 1000."""

    spe_adc: FloatArray
    n_pixels: FloatArray
    gev_per_pe: FloatArray  # scale x E_MIP / f_MIP / 1000 / light_yield
    occupancy: float


def hit_energy_gev(
    y: FloatArray,
    a: FloatArray,
    b: FloatArray,
    hits: HitConstants,
    scale_adc: float,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Calibrated hit energies [GeV] of amplitudes ``y`` with per-hit (a, b), and their
    derivatives with respect to a and b (de-saturation: -N ln(1 - f / N) below the occupancy,
    its linear continuation above, as :func:`calocoffea.digitization.desaturation`)."""
    d = np.maximum(b - a * y / scale_adc, 1e-6 * b)
    x = y / d
    pixels = x / hits.spe_adc
    n, r = hits.n_pixels, hits.occupancy
    fraction = pixels / n
    below = fraction <= r
    pe = np.where(
        below,
        -n * np.log1p(-np.minimum(fraction, r)),
        (pixels - r * n) / (1.0 - r) - n * np.log1p(-r),
    )
    slope = np.where(below, 1.0 / (1.0 - np.minimum(fraction, r)), 1.0 / (1.0 - r))
    dedx = slope / hits.spe_adc * hits.gev_per_pe
    dxda, dxdb = y * y / (scale_adc * d * d), -y / (d * d)
    return pe * hits.gev_per_pe, dedx * dxda, dedx * dxdb


def sorted_targets(
    sums_gev: FloatArray,
    beam_gev: FloatArray,
    weights: FloatArray,
    data_beam_gev: FloatArray,
) -> FloatArray:
    """For each data event, the MC_digi energy-sum quantile matched to the event's rank
    within its beam energy (level (j + 1/2) / n); the data ranks are those of the data sums
    at the start and are updated by :func:`energy_sum_loss`."""
    out = np.full(data_beam_gev.size, np.nan)
    for energy in np.unique(data_beam_gev):
        mine = np.flatnonzero(data_beam_gev == energy)
        mc = beam_gev == energy
        if not np.any(mc):
            continue
        order = np.argsort(sums_gev[mc])
        values, w = sums_gev[mc][order], weights[mc][order]
        cumulative = (np.cumsum(w) - 0.5 * w) / np.sum(w)
        levels = (np.arange(mine.size) + 0.5) / mine.size
        out[mine] = np.interp(levels, cumulative, values)
    return out


@dataclass
class EventSample:
    """The data's hits and events for the energy-sum term: amplitudes ``y``, dense cell,
    event index, per-hit calibration constants, and per event the beam energy and the
    MC_digi quantile targets (by rank, :func:`sorted_targets`)."""

    y: FloatArray
    cell: IntArray
    event: IntArray
    hits: HitConstants
    beam_gev: FloatArray
    targets_gev: FloatArray
    groups: list[IntArray] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.groups:
            self.groups = [np.flatnonzero(self.beam_gev == e) for e in np.unique(self.beam_gev)]


def energy_sum_loss(
    sample: EventSample, a: FloatArray, b: FloatArray, scale_adc: float
) -> tuple[float, FloatArray, FloatArray, FloatArray]:
    """L_sum and its gradient with respect to every cell's a and b; also the hit energies.

    Per beam energy the data sums are sorted and compared with the MC quantiles in the
    same order; events without an MC target (beam energy absent in MC) do not count."""
    energy, dea, deb = hit_energy_gev(
        sample.y, a[sample.cell], b[sample.cell], sample.hits, scale_adc
    )
    n_events = sample.beam_gev.size
    sums = np.bincount(sample.event, weights=energy, minlength=n_events)
    residual = np.zeros(n_events)
    loss = 0.0
    used = 0
    for group in sample.groups:
        targets = np.sort(sample.targets_gev[group])
        if not np.all(np.isfinite(targets)):
            continue
        order = group[np.argsort(sums[group])]
        e_beam = sample.beam_gev[group[0]]
        residual[order] = (sums[order] - targets) / e_beam**2
        loss += float(np.sum(((sums[order] - targets) / e_beam) ** 2))
        used += group.size
    scale = 1.0 / max(used, 1)
    per_hit = 2.0 * residual[sample.event] * scale
    n_cells = a.size
    grad_a = _counts(sample.cell, per_hit * dea, n_cells)
    grad_b = _counts(sample.cell, per_hit * deb, n_cells)
    return loss * scale, grad_a, grad_b, energy


def cell_loss_gradient(
    q: Quantiles, a: FloatArray, b: FloatArray, scale_adc: float, prior: Prior | None = None
) -> tuple[float, FloatArray, FloatArray]:
    """Mean over fitted cells of L_cell (+ prior), and its gradient with respect to (a, b)."""
    w = q.valid.astype(np.float64)
    fitted = w.sum(axis=1) > 0
    n, xbar = _mean_target(q)
    cells = max(int(np.count_nonzero(fitted)), 1)
    y, t = np.where(q.valid, q.data, 1.0), np.where(q.valid, q.target, 1.0)
    scale = (w / (n * xbar * xbar)[:, None]) / cells
    r = inverse(y, a[:, None], b[:, None], scale_adc) - t
    da, db = inverse_derivatives(y, a[:, None], b[:, None], scale_adc)
    loss = float(np.sum(scale * r * r))
    grad_a, grad_b = np.sum(2 * scale * r * da, axis=1), np.sum(2 * scale * r * db, axis=1)
    if prior is not None:
        loss += float(np.sum(prior.loss(q, a)[fitted])) / cells
        grad_a += np.where(fitted, prior.gradient(q, a)[0], 0.0) / cells
    return loss, grad_a, grad_b


# ------------------------------------------------------------------------------ joint


@dataclass(frozen=True)
class Weights:
    """Weights of the loss terms."""

    cell: float = 1.0
    energy_sum: float = 1.0
    prediction: float = 0.0


@dataclass(frozen=True)
class Refined:
    """Result of :func:`refine`: (a, b) of every cell and the loss terms before and after."""

    a: FloatArray
    b: FloatArray
    before: dict[str, float]
    after: dict[str, float]
    iterations: int
    message: str


def total_loss(
    a: FloatArray,
    b: FloatArray,
    q: Quantiles,
    sample: EventSample | None,
    scale_adc: float,
    weights: Weights,
    hook: PredictionHook | None,
    prior: Prior | None = None,
) -> tuple[dict[str, float], FloatArray, FloatArray]:
    """The loss terms (``cell``, ``energy_sum``, ``prediction``, ``total``) and the gradient
    of the total with respect to every cell's (a, b)."""
    terms: dict[str, float] = {}
    lc, ga, gb = cell_loss_gradient(q, a, b, scale_adc, prior)
    terms["cell"] = lc
    grad_a, grad_b = weights.cell * ga, weights.cell * gb
    total = weights.cell * lc
    if sample is not None and (weights.energy_sum > 0 or (hook and weights.prediction > 0)):
        ls, sa, sb, energy = energy_sum_loss(sample, a, b, scale_adc)
        terms["energy_sum"] = ls
        total += weights.energy_sum * ls
        grad_a += weights.energy_sum * sa
        grad_b += weights.energy_sum * sb
        if hook is not None and weights.prediction > 0:
            lp, d_energy = hook(energy, sample.event, sample.beam_gev)
            _, dea, deb = hit_energy_gev(
                sample.y, a[sample.cell], b[sample.cell], sample.hits, scale_adc
            )
            terms["prediction"] = float(lp)
            total += weights.prediction * float(lp)
            grad_a += weights.prediction * np.bincount(sample.cell, d_energy * dea, a.size)
            grad_b += weights.prediction * np.bincount(sample.cell, d_energy * deb, a.size)
    terms["total"] = total
    return terms, grad_a, grad_b


def refine(
    q: Quantiles,
    sample: EventSample | None,
    start_a: FloatArray,
    start_b: FloatArray,
    free: BoolArray,
    scale_adc: float,
    *,
    weights: Weights | None = None,
    hook: PredictionHook | None = None,
    prior: Prior | None = None,
    max_iterations: int = 100,
) -> Refined:
    """Minimise the total loss over the (a, b) of the ``free`` cells from (start_a, start_b)
    with L-BFGS-B; b > 0 and the asymptote b X / a above each cell's largest amplitude are
    kept by bounds on a around the start."""
    weights = weights or Weights()
    index = np.flatnonzero(free)
    y_max = np.nanmax(np.where(q.valid, q.data, 0.0), axis=1)
    if sample is not None:
        np.maximum.at(y_max, sample.cell, sample.y)
    a_top = 0.9 * start_b * scale_adc / np.maximum(y_max, 1.0)
    bounds = [(-1.0, max(float(a_top[c]), -0.5)) for c in index]
    bounds += [(0.5 * float(start_b[c]), 2.0 * float(start_b[c])) for c in index]
    # parameters scaled to O(1): a in units of 0.01, b as is
    unit = np.concatenate([np.full(index.size, 0.01), np.ones(index.size)])

    def unpack(theta: FloatArray) -> tuple[FloatArray, FloatArray]:
        a, b = start_a.copy(), start_b.copy()
        a[index], b[index] = theta[: index.size], theta[index.size :]
        return a, b

    def objective(scaled: FloatArray) -> tuple[float, FloatArray]:
        a, b = unpack(scaled * unit)
        terms, ga, gb = total_loss(a, b, q, sample, scale_adc, weights, hook, prior)
        return terms["total"], np.concatenate([ga[index], gb[index]]) * unit

    before, _, _ = total_loss(start_a, start_b, q, sample, scale_adc, weights, hook, prior)
    if max_iterations <= 0 or index.size == 0:
        return Refined(start_a.copy(), start_b.copy(), before, before, 0, "not refined")
    theta0 = np.concatenate([start_a[index], start_b[index]])
    scaled_bounds = [(lo / u, hi / u) for (lo, hi), u in zip(bounds, unit, strict=True)]
    result: Any = optimize.minimize(
        objective,
        np.clip(theta0 / unit, [lo for lo, _ in scaled_bounds], [hi for _, hi in scaled_bounds]),
        jac=True,
        method="L-BFGS-B",
        bounds=scaled_bounds,
        options={"maxiter": max_iterations},
    )
    a, b = unpack(np.asarray(result.x) * unit)
    after, _, _ = total_loss(a, b, q, sample, scale_adc, weights, hook, prior)
    if after["total"] > before["total"]:  # never worse than the start
        a, b, after = start_a.copy(), start_b.copy(), before
    return Refined(a, b, before, after, int(result.nit), str(result.message))


# ------------------------------------------------------------------------------ beam profile


def centroids(
    energy: FloatArray, x_mm: FloatArray, y_mm: FloatArray, event: IntArray, n_events: int
) -> tuple[FloatArray, FloatArray]:
    """Energy-weighted centre of gravity (x, y) [mm] of each event's hits."""
    total = np.bincount(event, weights=energy, minlength=n_events)
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = np.bincount(event, weights=energy * x_mm, minlength=n_events) / total
        cy = np.bincount(event, weights=energy * y_mm, minlength=n_events) / total
    return cx, cy


def beam_profile_weights(
    data: tuple[FloatArray, FloatArray, FloatArray],
    mc: tuple[FloatArray, FloatArray, FloatArray],
    bin_mm: float,
) -> tuple[FloatArray, FloatArray, float, float]:
    """Event weights of data and MC (beam energy, centroid x, centroid y) that give both the
    overlap of their centroid distributions, min(f_data, f_mc), bin by bin (``bin_mm``
    square bins, per beam energy, densities normalised per sample): what remains compares the
    same showers in both, whichever sample is wider or shifted. Also the fractions of data and
    of MC events outside the overlap (the mismatch the weights cannot remove)."""
    e_d, x_d, y_d = data
    e_m, x_m, y_m = mc
    ok_d = np.isfinite(x_d) & np.isfinite(y_d)
    ok_m = np.isfinite(x_m) & np.isfinite(y_m)
    values = np.concatenate([x_d[ok_d], y_d[ok_d], x_m[ok_m], y_m[ok_m]])
    edges = np.arange(np.floor(values.min() / bin_mm), np.ceil(values.max() / bin_mm) + 1.0)
    edges = edges * bin_mm if edges.size > 1 else np.array([-bin_mm, bin_mm])
    w_d, w_m = np.zeros(e_d.size), np.zeros(e_m.size)
    lost_d = lost_m = 0.0
    for energy in np.unique(np.concatenate([e_d, e_m])):
        d, m = (e_d == energy) & ok_d, (e_m == energy) & ok_m
        if not (np.any(d) and np.any(m)):
            lost_d, lost_m = lost_d + np.count_nonzero(d), lost_m + np.count_nonzero(m)
            continue
        h_d = np.histogram2d(x_d[d], y_d[d], bins=(edges, edges))[0]
        h_m = np.histogram2d(x_m[m], y_m[m], bins=(edges, edges))[0]
        f_d, f_m = h_d / h_d.sum(), h_m / h_m.sum()
        overlap = np.minimum(f_d, f_m)
        lost_d += (1.0 - overlap.sum()) * h_d.sum()
        lost_m += (1.0 - overlap.sum()) * h_m.sum()
        for weights, chosen, x, y, f in ((w_d, d, x_d, y_d, f_d), (w_m, m, x_m, y_m, f_m)):
            ix = np.clip(np.searchsorted(edges, x[chosen], side="right") - 1, 0, edges.size - 2)
            iy = np.clip(np.searchsorted(edges, y[chosen], side="right") - 1, 0, edges.size - 2)
            weights[chosen] = np.where(f > 0, overlap / np.where(f > 0, f, 1.0), 0.0)[ix, iy]
    return w_d, w_m, lost_d / max(e_d.size, 1), lost_m / max(e_m.size, 1)


# ------------------------------------------------------------------------------ pseudo-data


def mc_digi_conditions(geometry: str) -> Conditions:
    """MC_digi's conditions: the nominal ones with every cell at the design (a, b) (the MC
    does not know each cell's front end)."""
    c = nominal(geometry)
    return c.with_values(
        label="MC_digi (design a, b)",
        nonlinearity_a=np.full(c.n_cells, PARAMETERS["nonlinearity_a"].mean),
        nonlinearity_b=np.full(c.n_cells, PARAMETERS["nonlinearity_b"].mean),
    )


def data_conditions(
    mc: Conditions,
    seed: int,
    spread_a: float | None = None,
    spread_b: float | None = None,
) -> Conditions:
    """Pseudo-data's conditions: ``mc`` with per-cell (a, b) drawn from ``seed`` around the
    design values with the given spreads (default: those of
    :data:`~calocoffea.conditions.PARAMETERS`); every other table equal to the MC's."""
    overrides = {}
    for name, spread in (("nonlinearity_a", spread_a), ("nonlinearity_b", spread_b)):
        p = PARAMETERS[name]
        overrides[name] = (p.mean, p.spread if spread is None else spread)
    drawn = Conditions.draw(mc.geometry, seed, ConditionsConfig(overrides=overrides))
    return mc.with_values(
        label=f"data (a, b drawn from seed {seed})",
        nonlinearity_a=drawn.values["nonlinearity_a"],
        nonlinearity_b=drawn.values["nonlinearity_b"],
    )


# ------------------------------------------------------------------------------ figure


def plot_cell_spectra(
    spectra: dict[str, tuple[FloatArray, IntArray]],
    cells: IntArray,
    titles: list[str],
    *,
    bins: int = 40,
    range_mip: tuple[float, float] | None = None,
    title: str = "",
) -> Any:
    """Seed 000's figure: one panel per cell of ``cells`` (a square block, row-major), the
    normalised spectrum [MIP] of each sample of ``spectra`` (label -> (energies, cell index
    per hit)); returns the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    side = round(float(np.sqrt(cells.size)))
    fig, axes = plt.subplots(side, side, figsize=(3.0 * side, 2.6 * side), squeeze=False)
    for k, cell in enumerate(cells):
        ax = axes[k // side][k % side]
        chosen = [values[index == cell] for values, index in spectra.values()]
        top = max((float(np.quantile(v, 0.995)) for v in chosen if v.size), default=1.0)
        edges = np.linspace(*(range_mip or (0.0, top)), bins + 1)
        for (label, _), values in zip(spectra.items(), chosen, strict=True):
            if values.size:
                ax.hist(values, bins=edges, density=True, histtype="step", label=label)
        ax.set_title(titles[k], fontsize=8)
        ax.set_yscale("log")
        ax.tick_params(labelsize=7)
        if k // side == side - 1:
            ax.set_xlabel("hit energy [MIP]", fontsize=8)
    axes[0][0].legend(fontsize=6)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ = [
    "CellFit",
    "EventSample",
    "HitConstants",
    "PredictionHook",
    "Prior",
    "Quantiles",
    "Refined",
    "Weights",
    "beam_profile_weights",
    "cell_loss",
    "cell_quantiles",
    "centroids",
    "data_conditions",
    "energy_sum_loss",
    "fit_cells",
    "hit_energy_gev",
    "inverse",
    "linear_b",
    "linear_solution",
    "mc_digi_conditions",
    "plot_cell_spectra",
    "refine",
    "sorted_targets",
    "weighted_quantiles",
]
