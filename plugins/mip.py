"""``mip``: the per-cell MIP scale from muons, by Landau (x) Gauss fits (CALICE practice).

Muon hits are calibrated to MIP with the constants known so far (pedestals, gain ratios and
SPE gains from the calibration runs, the design light yield) and histogrammed per cell
(``collect``) in photo-electrons, one bin per p.e. ``fit`` then:

1. takes a first scale per cell, the median of its spectrum (cells with fewer than
   ``min_entries`` hits stop here: status 1);
2. fits one Landau (x) Gauss shape jointly to ``template_cells`` cells, each at its own
   scale: the Landau position and width scale with the cell's scale ``s``, the Gaussian
   width with ``sqrt(s)`` (photo-electron statistics: a brighter cell has relatively
   narrower peaks);
3. fits each cell's spectrum in the window ``window_low .. window_high`` x median with
   that shape and one free parameter, ``s``; its Landau most probable value is the cell's
   MIP signal [p.e.];
4. divides it by ``reference_mpv_mip`` (the same quantity for a cell exactly at its prior
   scale, from muons simulated with design conditions: :meth:`MipCalibration.reference`;
   photo-electron statistics shift the fitted MPV below the true one by ~15 % at 12 p.e.)
   and corrects the light yield: ``light_yield_pe = prior * MPV / (reference * prior)``.

Cells with too few entries (status 1) or a failed fit (status 2) get the mean correction of
the good cells of their layer, flagged in the table ``mip_status`` and counted in the
provenance; nothing is defaulted silently.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import hist
import numpy as np
import numpy.typing as npt
from iminuit import Minuit

from calocoffea import landaugauss
from calocoffea.calibration import CalibrationSteps
from calocoffea.constants import (
    Constants,
    Table,
    design_constants,
)
from calocoffea.exceptions import FitError
from calocoffea.methods import CalibrationMethod, PriorConstants
from calocoffea.processors.calibrate import calibrate_chunk

#: Status codes of the ``mip_status`` table.
STATUS = {0: "ok", 1: "too_few_entries", 2: "failed_fit"}


@dataclass(frozen=True)
class MipOptions:
    """Options of :class:`MipCalibration`."""

    #: constants applied before the fit (correctionlib JSON); empty: the design values
    constants: str = ""
    #: fitted Landau MPV [MIP] of a cell exactly at its prior scale, from muons simulated
    #: with design conditions (:meth:`MipCalibration.reference`)
    reference_mpv_mip: float = 1.0
    #: fewest hits for a cell's own fit
    min_entries: int = 300
    #: fit window in units of the cell's median (the threshold is at 0.5 MIP)
    window_low: float = 0.6
    window_high: float = 2.5
    #: histogram range [p.e.], one bin per p.e.
    max_pe: int = 64
    #: cells in the joint fit of the template shape
    template_cells: int = 300


class MipCalibration(PriorConstants, CalibrationMethod):
    """Per-cell MIP scale (light yield) from muon spectra with Landau (x) Gauss fits."""

    description: ClassVar[str] = (
        "per-cell MIP scale from muon runs: Landau (x) Gauss fits, most probable value"
    )
    url: ClassVar[str] = "https://doi.org/10.1088/1748-0221/5/05/P05004"
    Options: ClassVar[type] = MipOptions
    run_type: ClassVar[str] = "muon"
    input_stage: ClassVar[str] = "raw"
    options: MipOptions

    # ---- collect ---------------------------------------------------------------------

    def collect(self, events: Any) -> hist.Hist:
        """Per-cell histogram of the hit signals in photo-electrons of the prior light yield
        (``cell``, ``pe``), one bin per photo-electron: at about 12 p.e. per MIP the SiPM
        spectrum is a comb of p.e. peaks, and finer bins would alias it."""
        _, fields, cell, _ = calibrate_chunk(
            events, self.geometry, self._dense, CalibrationSteps(), fields=()
        )
        h = self.book()
        h.fill(cell=cell, pe=fields["energy"] * self._dense.cells["light_yield_pe"][cell])
        return h

    def book(self) -> hist.Hist:
        geometry = self.detector
        return hist.Hist(
            hist.axis.Integer(0, geometry.n_cells, name="cell", label="Cell index"),
            hist.axis.Regular(
                self.options.max_pe,
                0.5,
                self.options.max_pe + 0.5,
                name="pe",
                label="Hit signal [p.e. of the prior light yield]",
            ),
            storage=hist.storage.Int64(),
        )

    # ---- fit -------------------------------------------------------------------------
    def template(self, collected: hist.Hist, scale: npt.NDArray[np.float64]) -> Any:
        """Landau (x) Gauss shape shared by all cells: ``(mpv, eta, sigma)`` of a cell of
        unit ``scale``, from a joint fit of up to ``template_cells`` cells at their scale."""
        counts, edges = collected.values(), collected.axes["pe"].edges
        good = np.flatnonzero(np.isfinite(scale))
        chosen = good[:: max(1, good.size // self.options.template_cells)]
        windows = [self._window(edges, scale[c]) for c in chosen]

        def nll(mpv: float, eta: float, sigma: float) -> float:
            total = 0.0
            for c, (lo, hi) in zip(chosen, windows, strict=True):
                s = scale[c]
                cdf = landaugauss.cdf(edges[lo : hi + 1], mpv * s, eta * s, sigma * np.sqrt(s))
                p = np.diff(cdf) / (cdf[-1] - cdf[0])
                total -= 2.0 * float(np.sum(counts[c, lo:hi] * np.log(np.maximum(p, 1e-300))))
            return total

        nll.errordef = 1.0  # type: ignore[attr-defined]
        minuit = Minuit(nll, mpv=0.85, eta=0.1, sigma=0.3)
        minuit.limits = [(0.3, 2.0), (1e-3, 1.0), (1e-3, 3.0)]
        minuit.migrad()
        if not minuit.valid:
            raise FitError("mip: the Landau (x) Gauss template fit did not converge")
        return tuple(float(v) for v in minuit.values)

    def _window(self, edges: npt.NDArray[np.float64], scale: float) -> tuple[int, int]:
        lo, hi = np.searchsorted(
            edges, [self.options.window_low * scale, self.options.window_high * scale]
        )
        return int(lo), int(min(hi, edges.size - 1))

    def fit(self, accumulated: Any) -> Constants:
        """Per-cell light yield from the muon spectra (steps in the module docstring)."""
        h: hist.Hist = accumulated
        geometry = self.detector
        counts, edges = h.values(), h.axes["pe"].edges
        entries = counts.sum(axis=1)
        status = np.where(entries >= self.options.min_entries, 0, 1)
        median = np.where(status == 0, _medians(counts, edges), np.nan)
        mpv, eta, sigma = self.template(h, median)
        peak = np.full(geometry.n_cells, np.nan)
        error = np.full(geometry.n_cells, np.nan)
        chi2 = np.full(geometry.n_cells, np.nan)
        for cell in np.flatnonzero(status == 0):
            lo, hi = self._window(edges, median[cell])

            def model(x: npt.NDArray[np.float64], s: float) -> Any:
                return landaugauss.cdf(x, mpv * s, eta * s, sigma * np.sqrt(s))

            r = landaugauss.fit_binned(
                edges[lo : hi + 1],
                counts[cell, lo:hi],
                model,
                {"s": float(median[cell])},
                {"s": (0.3 * median[cell], 3.0 * median[cell])},
            )
            if not r.valid:
                status[cell] = 2
                continue
            peak[cell] = mpv * r.values["s"]
            error[cell] = mpv * r.errors["s"]
            chi2[cell] = r.chi2 / max(r.ndf, 1)
        prior = self._dense.cells["light_yield_pe"]
        # the fitted MPV [p.e.] over the MPV of a cell at the design scale
        correction = peak / (self.options.reference_mpv_mip * prior)
        correction, fallback = _layer_fallback(correction, status, geometry.cell_layer)
        relative_error = error / peak
        spread = float(np.nanstd(correction[status == 0]))
        relative_error = np.where(status == 0, relative_error, spread)
        light_yield = prior * correction
        counted = {STATUS[k]: int(np.count_nonzero(status == k)) for k in STATUS}
        quality = {
            "cells": int(geometry.n_cells),
            **counted,
            "fallback": "layer mean of the fitted cells" if fallback else "none needed",
            "template": {"mpv_over_scale": mpv, "eta_over_scale": eta, "sigma_over_sqrt": sigma},
            "reference_mpv_mip": self.options.reference_mpv_mip,
            "median_chi2_ndf": float(np.nanmedian(chi2)) if np.any(status == 0) else None,
            "entries_min": int(entries.min()),
            "entries_median": float(np.median(entries)),
        }
        cellids = geometry.cellids().astype(np.int64)
        design = design_constants(geometry)
        return Constants(
            {
                "light_yield_pe": Table(
                    "cell", cellids, light_yield, light_yield * relative_error, "p.e. per MIP"
                ),
                "mip_status": Table(
                    "cell", cellids, status.astype(np.float64), np.zeros(status.size), "1"
                ),
            },
            dataclasses.replace(
                design.provenance,
                method="mip",
                sample=f"muon spectra, {int(entries.sum())} hits",
                fit_quality=quality,
            ),
        )

    def reference(self, collected: hist.Hist) -> float:
        """``reference_mpv_mip`` from muons simulated and digitised with the design
        conditions, collected like data with design constants: the fitted Landau MPV of a
        cell in units of its design light yield (median over cells)."""
        constants = self.fit(collected)
        prior = self._dense.cells["light_yield_pe"]
        ok = constants.tables["mip_status"].values == 0
        ratio = constants.tables["light_yield_pe"].values[ok] / prior[ok]
        return float(np.median(ratio)) * self.options.reference_mpv_mip


def _medians(counts: npt.NDArray[np.int64], edges: npt.NDArray[np.float64]) -> Any:
    """Median of each row's histogram (linear inside the bin); NaN for empty rows."""
    cumulative = np.cumsum(counts, axis=1)
    total = cumulative[:, -1]
    half = 0.5 * total
    k = np.minimum((cumulative < half[:, None]).sum(axis=1), counts.shape[1] - 1)
    below = np.where(
        k > 0, np.take_along_axis(cumulative, np.maximum(k - 1, 0)[:, None], 1)[:, 0], 0
    )
    inside = np.take_along_axis(counts, k[:, None], 1)[:, 0]
    width = edges[1] - edges[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(inside > 0, (half - below) / inside, 0.5)
        return np.where(total > 0, edges[k] + fraction * width, np.nan)


def _layer_fallback(
    correction: npt.NDArray[np.float64],
    status: npt.NDArray[np.int64],
    layer: npt.NDArray[np.integer],
) -> tuple[npt.NDArray[np.float64], bool]:
    """Cells without their own fit take the mean of the fitted cells of their layer (or of
    all fitted cells if none in the layer)."""
    bad = status != 0
    if not np.any(bad):
        return correction, False
    good = ~bad
    if not np.any(good):
        raise FitError("mip: no cell could be fitted; check the muon sample")
    n_layers = int(layer.max()) + 1
    sums = np.bincount(layer[good], weights=correction[good], minlength=n_layers)
    numbers = np.bincount(layer[good], minlength=n_layers)
    overall = float(np.mean(correction[good]))
    means = np.where(numbers > 0, sums / np.maximum(numbers, 1), overall)
    out = correction.copy()
    out[bad] = means[layer[bad]]
    return out, True


__all__ = ["STATUS", "MipCalibration", "MipOptions"]
