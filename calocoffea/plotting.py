"""Figures of a calibration run, in the mplhep ROOT style.

What to use when:

- :func:`response_figure`: the E_reco/E_beam distribution at each beam energy with its
  Gaussian core fit, to see tails and whether the core fit sits on the peak.
- :func:`resolution_figure`: sigma/E against the beam energy for several variants, with the
  fitted a/sqrt(E) (+) c and the relative residuals.
- :func:`linearity_figure`: the mean reconstructed energy against the beam energy, with the
  fitted line and the deviation from it in percent.
- :func:`profiles_figure`: longitudinal (per layer) and transverse (per radius) energy
  profiles, one curve per beam energy, each of unit area.
- :func:`cell_map_figure`: per-layer maps of a (layer, i, j) histogram such as
  ``cell_energy`` or ``occupancy``.
- :func:`event_display_figure`: the hits of one event in the z-x and z-y projections.
- :func:`mip_figure`: the per-cell MIP scales (or their deviation from the truth) and how
  many cells fell back.
- :func:`save`: write a figure as PNG and PDF.

Figures are :class:`matplotlib.figure.Figure` objects made without pyplot, so nothing opens
a window and no backend needs choosing (PNG is rendered with Agg). The style is applied with
``matplotlib.style.context``, which sets the process-wide rcParams: build figures from one
thread at a time.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec

import hist
import matplotlib.style
import mplhep
import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from calocoffea.io import atomic_write
from calocoffea.report import format_measurement

__all__ = [
    "cell_map_figure",
    "event_display_figure",
    "linearity_figure",
    "mip_figure",
    "perturbation_figure",
    "profiles_figure",
    "resolution_figure",
    "response_figure",
    "save",
]

#: Resolution of the saved PNGs, dots per inch.
PNG_DPI = 110
#: The ROOT style scaled down from its 10-inch, 26-point canvas to our smaller figures.
_RC: dict[str, Any] = {
    "font.size": 15,
    "axes.linewidth": 1.2,
    "xtick.major.size": 7,
    "xtick.minor.size": 3.5,
    "ytick.major.size": 7,
    "ytick.minor.size": 3.5,
    "xtick.major.pad": 4,
    "lines.linewidth": 1.6,
    "errorbar.capsize": 0,
}
#: Metadata that would change from run to run (dates, versions) is left out of the files.
_METADATA: dict[str, dict[str, Any]] = {
    "png": {"Software": None},
    "pdf": {"CreationDate": None, "Producer": None, "Creator": None},
}
#: Half-width of the Gaussian core window in sigma (that of ``fitting.gaussian_core``).
CORE_WINDOW = 2.0
#: A colour scale spanning more than this ratio is drawn logarithmic.
LOG_SPAN = 100.0
#: Cell maps drawn when no layers are asked for.
DEFAULT_MAP_LAYERS = 6
#: Colour map of cell maps and event displays.
COLOR_MAP = "viridis"
#: Linearity band drawn in the deviation panel, percent.
LINEARITY_BAND_PERCENT = 1.0

P = ParamSpec("P")


def _style() -> Any:
    return matplotlib.style.context([mplhep.style.ROOT, _RC])


def _styled(function: Callable[P, Figure]) -> Callable[P, Figure]:
    """Build the figure inside the calocoffea style."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Figure:
        with _style():
            return function(*args, **kwargs)

    return wrapper


def _label(ax: Axes, right: str = "") -> None:
    """**calocoffea** *Simulation* above the axes on the left, ``right`` on the right.

    Drawn as two texts, the second placed against the first when the figure is drawn, so
    they never overlap whatever the layout does to the axes.
    """
    above: dict[str, Any] = {
        "xycoords": "axes fraction",
        "textcoords": "offset points",
        "va": "bottom",
    }
    name = ax.annotate(
        "calocoffea", (0.0, 1.0), xytext=(0, 4), fontweight="bold", fontsize="large", **above
    )
    ax.annotate(
        "Simulation",
        (1.0, 0.0),
        xycoords=name,
        xytext=(6, 0),
        textcoords="offset points",
        va="bottom",
        fontstyle="italic",
    )
    if right:
        ax.annotate(right, (1.0, 1.0), xytext=(0, 4), ha="right", fontsize="small", **above)


def _figure_label(fig: Figure, title: str = "") -> None:
    """The label of :func:`_label` for a grid of panels, as the figure's title."""
    text = r"$\mathbf{calocoffea}$ $\mathit{Simulation}$"
    if title:
        text += "      " + title.replace("$", r"\$")
    fig.suptitle(text, x=0.01, ha="left", fontsize="large")


def _colors(n: int) -> list[Any]:
    """``n`` colours of the style's cycle, or :func:`_sequential` when it is too short."""
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return list(cycle[:n]) if n <= len(cycle) else _sequential(n)


def _sequential(n: int) -> list[Any]:
    """``n`` ordered colours (for beam energies), dark to light without the pale yellow."""
    return [matplotlib.colormaps[COLOR_MAP](x) for x in np.linspace(0.0, 0.85, n)]


def _grid(fig: Figure, n: int, ncols: int, **kwargs: Any) -> list[Axes]:
    """``n`` axes in rows of ``ncols``; the unused cells of the last row are removed."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    axes = list(fig.subplots(nrows, ncols, squeeze=False, **kwargs).ravel())
    for extra in axes[n:]:
        fig.delaxes(extra)
    return axes[:n]


# --------------------------------------------------------------------------- response


@_styled
def response_figure(
    samples: Mapping[float, np.ndarray],
    cores: Mapping[float, tuple[float, float]],
    *,
    title: str = "",
) -> Figure:
    """One panel per beam energy (GeV, the keys): the response E_reco/E_beam and its
    Gaussian core (mean, sigma), drawn over mean ± 2 sigma and scaled to the entries there.

    An energy missing from ``cores`` (or with a non-finite core) is drawn without a curve.
    """
    if not samples:
        raise ValueError("response_figure: no samples; give one response array per energy")
    energies = sorted(samples)
    ncols = min(4, len(energies))
    nrows = math.ceil(len(energies) / ncols)
    fig = Figure(figsize=(3.6 * ncols + 0.8, 3.2 * nrows + 0.9), layout="constrained")
    axes = _grid(fig, len(energies), ncols)
    for ax, energy in zip(axes, energies, strict=True):
        _response_panel(ax, energy, np.asarray(samples[energy], dtype=float), cores.get(energy))
    _figure_label(fig, title)
    fig.supxlabel(r"Response $E_\mathrm{reco}/E_\mathrm{beam}$", fontsize="medium")
    fig.supylabel("Events / bin", fontsize="medium")
    handles = [
        Line2D([], [], color=_colors(1)[0], label="events"),
        Line2D([], [], color="black", linestyle="--", label=r"core fit, $\pm2\sigma$"),
    ]
    axes[0].legend(handles=handles, loc="upper right", fontsize="xx-small", handlelength=1.2)
    return fig


def _response_panel(
    ax: Axes, energy: float, values: np.ndarray, core: tuple[float, float] | None
) -> None:
    data = values[np.isfinite(values)]
    mean, sigma = (math.nan, math.nan) if core is None else (float(core[0]), float(core[1]))
    has_core = math.isfinite(mean) and math.isfinite(sigma) and sigma > 0
    lo, hi = _response_range(data, mean, sigma, has_core)
    counts, edges = np.histogram(data, bins=50, range=(lo, hi))
    mplhep.histplot(counts, edges, yerr=np.sqrt(counts), ax=ax, histtype="step")
    text = f"{energy:g} GeV"
    if has_core:
        window = (mean - CORE_WINDOW * sigma, mean + CORE_WINDOW * sigma)
        x = np.linspace(*window, 200)
        inside = np.count_nonzero((data >= window[0]) & (data <= window[1]))
        fraction = math.erf(CORE_WINDOW / math.sqrt(2.0))
        pdf = np.exp(-0.5 * ((x - mean) / sigma) ** 2) / (sigma * math.sqrt(2.0 * math.pi))
        ax.plot(x, inside * (edges[1] - edges[0]) * pdf / fraction, "k--", linewidth=1.4)
        text += f"\nmean {mean:.3f}\nσ/mean {100.0 * sigma / mean:.2f} %"
    else:
        text += "\nno core fit"
    ax.text(0.04, 0.95, text, transform=ax.transAxes, va="top", fontsize="x-small")
    ax.set_ylim(0.0, 1.5 * max(1.0, float(counts.max(initial=0))))
    ax.tick_params(labelsize="x-small")


def _response_range(
    data: np.ndarray, mean: float, sigma: float, has_core: bool
) -> tuple[float, float]:
    """Histogram range: 0.5-99.5 % quantiles, widened to mean ± 4 sigma."""
    if data.size == 0:
        return (mean - 4 * sigma, mean + 4 * sigma) if has_core else (0.0, 2.0)
    lo, hi = (float(q) for q in np.quantile(data, [0.005, 0.995]))
    if has_core:
        lo, hi = min(lo, mean - 4.0 * sigma), max(hi, mean + 4.0 * sigma)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


# --------------------------------------------------------------------------- scans

_SCAN_KEYS = ("energy_gev", "mean_gev", "mean_error_gev", "sigma_over_e", "sigma_over_e_error")


@dataclass(frozen=True)
class _Scan:
    """A scan dict (results.json ``scans``) as arrays; None/null entries become nan."""

    label: str
    energy: np.ndarray
    mean: np.ndarray
    mean_error: np.ndarray
    sigma_over_e: np.ndarray
    sigma_over_e_error: np.ndarray
    clipped: np.ndarray
    used: np.ndarray
    resolution: Mapping[str, Any]
    linearity: Mapping[str, Any]

    @classmethod
    def parse(cls, name: str, scan: Mapping[str, Any]) -> _Scan:
        missing = [key for key in _SCAN_KEYS if key not in scan]
        if missing:
            raise ValueError(
                f"scan {name!r} lacks {', '.join(missing)}; it has {', '.join(scan) or 'nothing'}"
            )
        arrays = [np.asarray(scan[key], dtype=float).ravel() for key in _SCAN_KEYS]
        n = arrays[0].size
        clipped = np.asarray(scan.get("clipped_fraction", np.zeros(n)), dtype=float).ravel()
        used = np.asarray(scan.get("used_in_fit", np.ones(n, dtype=bool)), dtype=bool).ravel()
        lengths = {key: a.size for key, a in zip(_SCAN_KEYS, arrays, strict=True)}
        lengths |= {"clipped_fraction": clipped.size, "used_in_fit": used.size}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"scan {name!r}: arrays differ in length, {lengths}")
        energy, mean, mean_error, sigma_over_e, sigma_over_e_error = arrays
        return cls(
            label=str(scan.get("label", name)),
            energy=energy,
            mean=mean,
            mean_error=mean_error,
            sigma_over_e=sigma_over_e,
            sigma_over_e_error=sigma_over_e_error,
            clipped=clipped,
            used=used,
            resolution=scan.get("resolution") or {},
            linearity=scan.get("linearity") or {},
        )


def _parse_scans(scans: Mapping[str, Mapping[str, Any]], what: str) -> list[_Scan]:
    if not scans:
        raise ValueError(f"{what}: no scans; give {{variant: scan dict}}")
    return [_Scan.parse(name, scan) for name, scan in scans.items()]


def _number(mapping: Mapping[str, Any], key: str) -> float:
    value = mapping.get(key)
    return math.nan if value is None else float(value)


def _resolution_curve(energy: np.ndarray, fit: Mapping[str, Any]) -> np.ndarray:
    """sigma/E = a/sqrt(E) (+) b/E (+) c; b is 0 when the fit has none."""
    a, b, c = _number(fit, "a"), _number(fit, "b"), _number(fit, "c")
    b = 0.0 if math.isnan(b) else b
    return np.sqrt(a**2 / energy + b**2 / energy**2 + c**2)


def _scan_axes(fig: Figure, scans: list[_Scan], *, log: bool) -> tuple[Axes, Axes]:
    """Main and residual axes sharing a beam-energy axis (if ``log``, logarithmic when the
    energies span more than a factor 20)."""
    main, residual = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    energies = np.concatenate([s.energy[np.isfinite(s.energy)] for s in scans])
    if log and energies.size and energies.min() > 0 and energies.max() / energies.min() > 20:
        main.set_xscale("log")
        main.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        main.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        main.xaxis.set_minor_formatter(NullFormatter())
    residual.set_xlabel("Beam energy [GeV]")
    residual.axhline(0.0, color="0.4", linewidth=1.0)
    _label(main)
    return main, residual


def _points(
    ax: Axes, x: np.ndarray, y: np.ndarray, error: np.ndarray, used: np.ndarray, color: Any
) -> None:
    """Filled markers for points in the fit, hollow ones for the rest."""
    for mask, face in ((used, color), (~used, "white")):
        if np.any(mask):
            ax.errorbar(
                x[mask], y[mask], error[mask], fmt="o", color=color, mfc=face, mec=color, ms=6
            )


def _annotate_clipped(
    ax: Axes, scans: list[_Scan], ys: list[np.ndarray], colors: list[Any], *, above: bool
) -> None:
    """Label the points left out of the fit with their clipped fraction: one grey label
    per energy when all variants agree, else one label per variant in its colour, stacked
    above the highest (or below the lowest) point at that energy."""
    groups: dict[float, list[tuple[float, str, Any]]] = {}
    for scan, y, color in zip(scans, ys, colors, strict=True):
        for e, value, clipped in zip(scan.energy, y, scan.clipped, strict=True):
            if math.isfinite(value) and math.isfinite(clipped) and e in scan.energy[~scan.used]:
                groups.setdefault(float(e), []).append((value, f"{100 * clipped:.1f} %", color))
    lo, hi = ax.get_xlim()
    scale = np.log if ax.get_xscale() == "log" else np.asarray
    for energy, items in groups.items():
        where = float((scale(energy) - scale(lo)) / (scale(hi) - scale(lo)))
        ha = "right" if where > 0.8 else "left" if where < 0.2 else "center"
        labels = {text for _, text, _ in items}
        lines = (
            [(f"{labels.pop()} clipped", "0.3")]
            if len(labels) == 1
            else [(f"{text} clipped", color) for _, text, color in items]
        )
        values = [value for value, _, _ in items]
        anchor = max(values) if above else min(values)
        for k, (text, color) in enumerate(lines):
            offset = 9 + 11 * k if above else -9 - 11 * k
            ax.annotate(
                text,
                (energy, anchor),
                xytext=(0, offset),
                textcoords="offset points",
                ha=ha,
                va="bottom" if above else "top",
                fontsize="xx-small",
                color=color,
            )


def _hollow_handle(scans: list[_Scan]) -> list[Line2D]:
    if all(s.used.all() for s in scans):
        return []
    marker = Line2D([], [], marker="o", mfc="white", mec="0.3", linestyle="none")
    marker.set_label("open: not in the fit")
    return [marker]


@_styled
def resolution_figure(scans: Mapping[str, Mapping[str, Any]]) -> Figure:
    """sigma/E [%] against the beam energy, one series per variant, with the fitted
    a/sqrt(E) (+) c (legend: a and c with errors) and (data - fit)/fit below.

    Points with ``used_in_fit`` false are hollow and labelled with their clipped fraction.
    """
    parsed = _parse_scans(scans, "resolution_figure")
    fig = Figure(figsize=(8.5, 8.0), layout="constrained")
    main, residual = _scan_axes(fig, parsed, log=True)
    handles: list[Any] = []
    shown: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    colors = _colors(len(parsed))
    for scan, color in zip(parsed, colors, strict=True):
        y, error = 100.0 * scan.sigma_over_e, 100.0 * scan.sigma_over_e_error
        _points(main, scan.energy, y, error, scan.used, color)
        (line,) = main.plot([], [], "-", color=color, label=_resolution_legend(scan))
        handles.append(line)
        if not {"a", "c"} <= scan.resolution.keys():
            line.set_linestyle("none")
            line.set_marker("o")
            continue
        grid = _energy_grid(scan.energy, main.get_xscale() == "log")
        line.set_data(grid, 100.0 * _resolution_curve(grid, scan.resolution))
        fit = 100.0 * _resolution_curve(scan.energy, scan.resolution)
        deviation = 100.0 * (y - fit) / fit
        _points(residual, scan.energy, deviation, 100.0 * error / fit, scan.used, color)
        shown.append((deviation, 100.0 * error / fit, scan.used))
    main.set_ylabel(r"$\sigma_E\,/\,E$ [%]")
    residual.set_ylabel("(data − fit) / fit [%]", fontsize="small")
    _residual_limits(residual, shown, minimum=5.0)
    # headroom for the clipped-fraction labels and the legend above the highest point
    highest = max((float(np.nanmax(100.0 * sc.sigma_over_e)) for sc in parsed), default=1.0)
    main.set_ylim(0.0, 1.45 * highest if math.isfinite(highest) else None)
    _annotate_clipped(main, parsed, [100.0 * s.sigma_over_e for s in parsed], colors, above=True)
    main.legend(handles=handles + _hollow_handle(parsed), fontsize="x-small", loc="upper right")
    main.text(0.03, 0.04, r"fit: a/√E $\oplus$ c", transform=main.transAxes, fontsize="small")
    return fig


def _resolution_legend(scan: _Scan) -> str:
    fit = scan.resolution
    if not {"a", "c"} <= fit.keys():
        return f"{scan.label} (no fit)"
    a = format_measurement(_number(fit, "a"), _number(fit, "a_error"), scale=100.0)
    c = format_measurement(_number(fit, "c"), _number(fit, "c_error"), scale=100.0)
    valid = "" if fit.get("valid", True) else ", fit not valid"
    return f"{scan.label}: a = {a} %·√GeV, c = {c} %{valid}"


def _energy_grid(energy: np.ndarray, log: bool) -> np.ndarray:
    finite = energy[np.isfinite(energy) & (energy > 0)]
    lo, hi = 0.9 * finite.min(), 1.1 * finite.max()
    return np.geomspace(lo, hi, 200) if log else np.linspace(lo, hi, 200)


@_styled
def linearity_figure(scans: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Mean reconstructed energy against the beam energy, with the fitted line
    (slope·E + offset) and (mean - fit)/fit in percent below, inside a ±1 % band.

    The deviations are computed here from ``slope`` and ``offset`` for every point; points
    with ``used_in_fit`` false are hollow and labelled with their clipped fraction.
    """
    parsed = _parse_scans(scans, "linearity_figure")
    fig = Figure(figsize=(8.5, 8.0), layout="constrained")
    main, residual = _scan_axes(fig, parsed, log=False)
    residual.axhspan(-LINEARITY_BAND_PERCENT, LINEARITY_BAND_PERCENT, color="0.88", zorder=0)
    handles: list[Any] = []
    shown: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    colors = _colors(len(parsed))
    for scan, color in zip(parsed, colors, strict=True):
        _points(main, scan.energy, scan.mean, scan.mean_error, scan.used, color)
        slope, offset = _number(scan.linearity, "slope"), _number(scan.linearity, "offset")
        offset = 0.0 if math.isnan(offset) else offset
        label = f"{scan.label}: slope {slope:.4f}, offset {offset:.3g} GeV"
        (line,) = main.plot([], [], "-", color=color, label=label)
        handles.append(line)
        if math.isnan(slope):
            line.set_label(f"{scan.label} (no fit)")
            continue
        grid = _energy_grid(scan.energy, main.get_xscale() == "log")
        line.set_data(grid, slope * grid + offset)
        fit = slope * scan.energy + offset
        deviation, error = 100.0 * (scan.mean - fit) / fit, 100.0 * scan.mean_error / fit
        _points(residual, scan.energy, deviation, error, scan.used, color)
        shown.append((deviation, error, scan.used))
    main.set_ylabel("Mean reconstructed energy [GeV]")
    # the axes follow the points, not the fitted lines drawn 10 % beyond them
    means = np.concatenate([sc.mean[np.isfinite(sc.mean)] for sc in parsed])
    if means.size:
        span = float(means.max() - means.min()) or float(abs(means.max())) or 1.0
        main.set_ylim(float(means.min()) - 0.08 * span, float(means.max()) + 0.08 * span)
    _annotate_clipped(main, parsed, [s.mean for s in parsed], colors, above=False)
    residual.set_ylabel("(mean − fit) / fit [%]", fontsize="small")
    band = Line2D([], [], color="0.88", linewidth=8, label="±1 % band (lower panel)")
    main.legend(
        handles=[*handles, *_hollow_handle(parsed), band], fontsize="x-small", loc="upper left"
    )
    _residual_limits(residual, shown, minimum=2.0 * LINEARITY_BAND_PERCENT)
    return fig


def _residual_limits(
    ax: Axes, shown: list[tuple[np.ndarray, np.ndarray, np.ndarray]], *, minimum: float
) -> None:
    """Symmetric limits that show every fitted point with its error bar (at least
    ±``minimum``); points left out of the fit beyond them are counted in a note, so that a
    clipped point 400 % off does not flatten the residuals of the fit."""
    used = [np.abs(d[u]) + e[u] for d, e, u in shown]
    values = np.concatenate(used) if used else np.array([])
    values = values[np.isfinite(values)]
    limit = max(minimum, 1.2 * float(values.max())) if values.size else minimum
    ax.set_ylim(-limit, limit)
    outside = sum(int(np.count_nonzero(np.abs(d[~u]) > limit)) for d, _, u in shown)
    if outside:
        ax.text(
            0.99,
            0.93,
            f"{outside} point{'s' if outside > 1 else ''} not in the fit off scale",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize="xx-small",
            color="0.3",
        )


# --------------------------------------------------------------------------- histograms


def _require_axes(h: hist.Hist, names: Sequence[str], what: str) -> None:
    present = [axis.name for axis in h.axes]
    if not set(names) <= set(present):
        raise ValueError(
            f"{what}: the histogram needs axes {', '.join(names)}; it has {', '.join(present)}"
        )


def beam_energy_points(axis: Any) -> list[str]:
    """Labels of the beam-energy bins: the energy points when the edges lie halfway between
    them (as ``processors.histogram.beam_energy_axis`` makes them), else the bin ranges."""
    edges = np.asarray(axis.edges, dtype=float)
    points = [2.0 * edges[0]]
    for edge in edges[1:-1]:
        points.append(2.0 * edge - points[-1])
    inside = all(lo < p < hi for p, lo, hi in zip(points, edges[:-1], edges[1:], strict=True))
    if inside and math.isclose(edges[-1], 1.5 * points[-1], rel_tol=1e-6) and points[0] > 0:
        return [f"{p:g} GeV" for p in points]
    return [f"{lo:g}-{hi:g} GeV" for lo, hi in itertools.pairwise(edges)]


@_styled
def profiles_figure(longitudinal: hist.Hist, transverse: hist.Hist) -> Figure:
    """Longitudinal (per layer) and transverse (per radius in mm) energy profiles, one curve
    per filled beam-energy bin, each normalised to unit area."""
    _require_axes(longitudinal, ("beam_energy", "layer"), "profiles_figure (longitudinal)")
    _require_axes(transverse, ("beam_energy", "r"), "profiles_figure (transverse)")
    fig = Figure(figsize=(13.0, 6.0), layout="constrained")
    left, right = fig.subplots(1, 2)
    _profile_panel(left, longitudinal.project("beam_energy", "layer"))
    left.set_xlabel("Layer")
    left.set_ylabel("Energy fraction per layer (unit area)")
    _profile_panel(right, transverse.project("beam_energy", "r"))
    right.set_xlabel("Radius r [mm]")
    right.set_ylabel("(1/E) dE/dr [1/mm] (unit area)")
    right.set_yscale("log")
    _label(left)
    return fig


def _profile_panel(ax: Axes, h: hist.Hist) -> None:
    values = np.asarray(h.values(), dtype=float)
    edges = np.asarray(h.axes[1].edges, dtype=float)
    widths = np.diff(edges)
    labels = beam_energy_points(h.axes[0])
    filled = [k for k in range(values.shape[0]) if values[k].sum() > 0]
    for k, color in zip(filled, _sequential(len(filled)), strict=True):
        density = values[k] / np.sum(values[k] * widths)
        mplhep.histplot(density, edges, ax=ax, histtype="step", color=color, label=labels[k])
    if not filled:
        ax.text(0.5, 0.5, "empty histogram", transform=ax.transAxes, ha="center")
        return
    ax.set_xlim(edges[0], edges[-1])
    ax.legend(fontsize="x-small", title="Beam energy", title_fontsize="x-small")


@_styled
def cell_map_figure(
    cells: hist.Hist, layers: Sequence[int] | None = None, *, label: str = "Energy"
) -> Figure:
    """Maps of the (i, j) cells of a few layers of a histogram with axes layer, i, j.

    By default about six filled layers spread over the depth. One colour scale for all
    panels, logarithmic when it spans more than two decades. ``label`` names the colour
    bar; give its unit, e.g. ``"Energy [MIP]"`` or ``"Hits"``.
    """
    _require_axes(cells, ("layer", "i", "j"), "cell_map_figure")
    h = cells.project("layer", "i", "j")
    values = np.asarray(h.values(), dtype=float)
    numbers = np.floor(h.axes["layer"].edges[:-1]).astype(int).tolist()
    chosen = _map_layers(values, numbers) if layers is None else list(layers)
    unknown = [layer for layer in chosen if layer not in numbers]
    if unknown or not chosen:
        raise ValueError(
            f"cell_map_figure: layers {unknown or chosen} are not in the histogram, which has "
            f"layers {numbers[0]}-{numbers[-1]}"
        )
    maps = [values[numbers.index(layer)] for layer in chosen]
    norm = _shared_norm(np.stack(maps))
    ncols = min(3, math.ceil(math.sqrt(len(maps))))
    nrows = math.ceil(len(maps) / ncols)
    fig = Figure(figsize=(4.2 * ncols + 1.4, 4.0 * nrows + 0.6), layout="constrained")
    axes = _grid(fig, len(maps), ncols, sharex=True, sharey=True)
    i_edges = np.asarray(h.axes["i"].edges) - 0.5
    j_edges = np.asarray(h.axes["j"].edges) - 0.5
    for ax, layer, cell_values in zip(axes, chosen, maps, strict=True):
        shown = (
            np.ma.masked_less_equal(cell_values, 0.0) if isinstance(norm, LogNorm) else cell_values
        )
        ax.pcolormesh(i_edges, j_edges, shown.T, norm=norm, cmap=COLOR_MAP)
        ax.set_aspect("equal")
        ax.set_title(f"Layer {layer}", fontsize="small")
        ax.tick_params(labelsize="x-small")
        ax.label_outer()
    fig.supxlabel(f"{h.axes['i'].label or 'i'} (index)", fontsize="medium")
    fig.supylabel(f"{h.axes['j'].label or 'j'} (index)", fontsize="medium")
    fig.colorbar(ScalarMappable(norm, COLOR_MAP), ax=axes, label=label, shrink=0.9)
    _figure_label(fig)
    return fig


def _map_layers(values: np.ndarray, numbers: list[int]) -> list[int]:
    """About :data:`DEFAULT_MAP_LAYERS` filled layers spread over the depth."""
    filled = [n for n, layer in zip(numbers, values, strict=True) if np.any(layer != 0)]
    pool = filled or numbers
    picks = np.unique(np.round(np.linspace(0, len(pool) - 1, min(DEFAULT_MAP_LAYERS, len(pool)))))
    return [pool[int(k)] for k in picks]


def _shared_norm(values: np.ndarray) -> Normalize:
    """Linear from 0, or logarithmic when the positive values span > :data:`LOG_SPAN`."""
    positive = values[np.isfinite(values) & (values > 0)]
    if positive.size == 0:
        return Normalize(0.0, 1.0)
    lo, hi = float(positive.min()), float(positive.max())
    if hi / lo > LOG_SPAN:
        return LogNorm(lo, hi)
    return Normalize(min(0.0, float(np.nanmin(values))), hi)


# --------------------------------------------------------------------------- events, MIPs


@_styled
def event_display_figure(
    x_mm: np.ndarray,
    y_mm: np.ndarray,
    z_mm: np.ndarray,
    energy: np.ndarray,
    *,
    title: str = "",
    unit: str = "MIP",
) -> Figure:
    """One event in the z-x and z-y projections; marker area and colour follow the hit
    energy (in ``unit``). Hits with non-finite or non-positive energy are not drawn."""
    x, y, z, e = (np.asarray(a, dtype=float).ravel() for a in (x_mm, y_mm, z_mm, energy))
    if not x.size == y.size == z.size == e.size:
        raise ValueError(
            f"event_display_figure: x, y, z and energy differ in length "
            f"({x.size}, {y.size}, {z.size}, {e.size})"
        )
    keep = np.isfinite(e) & (e > 0)
    order = np.argsort(e[keep])  # the largest deposits drawn last, on top
    x, y, z, e = (a[keep][order] for a in (x, y, z, e))
    fig = Figure(figsize=(10.0, 8.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    norm = _shared_norm(e)
    size = 4.0 + 160.0 * e / e.max() if e.size else e
    for ax, transverse, name in ((top, x, "x"), (bottom, y, "y")):
        ax.scatter(z, transverse, s=size, c=e, norm=norm, cmap=COLOR_MAP, linewidths=0)
        ax.set_ylabel(f"{name} [mm]")
        if not e.size:
            ax.text(0.5, 0.5, "no hits", transform=ax.transAxes, ha="center")
    bottom.set_xlabel("z [mm]")
    fig.colorbar(ScalarMappable(norm, COLOR_MAP), ax=[top, bottom], label=f"Hit energy [{unit}]")
    _label(top, title)
    return fig


@_styled
def mip_figure(
    values: np.ndarray, truth: np.ndarray | None, status: np.ndarray, *, unit: str = "ADC"
) -> Figure:
    """Per-cell MIP calibration: the fitted MIP scales (in ``unit``), or fit/true - 1 in
    percent when ``truth`` is given (RMS in the legend), split into cells whose fit
    succeeded (status 0) and cells that fell back (status != 0)."""
    fitted = np.asarray(values, dtype=float).ravel()
    codes = np.asarray(status).ravel()
    if codes.size != fitted.size:
        raise ValueError(f"mip_figure: {fitted.size} values but {codes.size} status codes")
    if truth is None:
        shown, xlabel = fitted, f"Fitted MIP scale [{unit}]"
    else:
        true = np.asarray(truth, dtype=float).ravel()
        if true.size != fitted.size:
            raise ValueError(f"mip_figure: {fitted.size} values but {true.size} true values")
        with np.errstate(divide="ignore", invalid="ignore"):
            shown = 100.0 * (fitted / true - 1.0)
        xlabel = "Fitted / true MIP scale − 1 [%]"
    finite = np.isfinite(shown)
    fell_back = codes != 0
    fig = Figure(figsize=(8.5, 7.0), layout="constrained")
    ax = fig.add_subplot()
    edges = _mip_edges(shown[finite])
    for mask, name, color in (
        (~fell_back, "fit", _colors(2)[0]),
        (fell_back, "fell back", _colors(2)[1]),
    ):
        selected = shown[finite & mask]
        if selected.size == 0:
            continue
        counts, _ = np.histogram(np.clip(selected, edges[0], edges[-1]), edges)
        spread = f", RMS {np.sqrt(np.mean(selected**2)):.2f} %" if truth is not None else ""
        label = f"{name}: {selected.size} cells{spread}"
        mplhep.histplot(counts, edges, ax=ax, histtype="step", color=color, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Cells / bin")
    summary = f"{np.count_nonzero(fell_back)} of {codes.size} cells fell back (status ≠ 0)"
    if np.any(~finite):
        summary += f"\n{np.count_nonzero(~finite)} cells without a value"
    summary += "\nunder- and overflow in the end bins"
    ax.text(0.03, 0.95, summary, transform=ax.transAxes, va="top", fontsize="x-small")
    ax.set_ylim(0.0, 1.3 * ax.get_ylim()[1])
    ax.legend(fontsize="x-small", loc="upper right")
    _label(ax)
    return fig


def _mip_edges(values: np.ndarray) -> np.ndarray:
    """50 bins over the 0.5-99.5 % quantiles (widened a little); the rest goes to the ends."""
    if values.size == 0:
        return np.linspace(0.0, 1.0, 51)
    lo, hi = (float(q) for q in np.quantile(values, [0.005, 0.995]))
    pad = 0.1 * (hi - lo) if hi > lo else max(1.0, abs(lo)) * 0.1
    return np.linspace(lo - pad, hi + pad, 51)


# --------------------------------------------------------------------------- output


@_styled
def perturbation_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Seed 002's study (:func:`calocoffea.study.perturbation_study` rows): slope a and
    offset b of the response fits against the noise scale, one line per (bias, calibration
    scale); the calibration scales share a colour per bias, darker for larger s_c."""
    fig = Figure(figsize=(12.0, 5.2), layout="constrained")
    ax_a, ax_b = fig.subplots(1, 2)
    biases = sorted({float(r["bias_mev"]) for r in rows})
    scales = sorted({float(r["calibration"]) for r in rows})
    palette = _colors(len(biases))
    for colour, bias in zip(palette, biases, strict=True):
        for k, s_c in enumerate(scales):
            chosen = sorted(
                (r for r in rows if r["bias_mev"] == bias and r["calibration"] == s_c),
                key=lambda r: r["noise_mev"],
            )
            x = [r["noise_mev"] for r in chosen]
            alpha = 0.35 + 0.65 * (k + 1) / len(scales)
            label = f"b = {bias:+g} MeV" if k == len(scales) - 1 else None
            for ax, key, error in ((ax_a, "a", "a_error"), (ax_b, "b_gev", "b_error_gev")):
                ax.errorbar(
                    x,
                    [r[key] for r in chosen],
                    [r[error] for r in chosen],
                    fmt="o-",
                    color=colour,
                    alpha=alpha,
                    ms=4,
                    label=label,
                )
    ax_a.set_xlabel(r"Noise scale $s_\epsilon$ [MeV]")
    ax_b.set_xlabel(r"Noise scale $s_\epsilon$ [MeV]")
    ax_a.set_ylabel("Response slope a")
    ax_b.set_ylabel("Response offset b [GeV]")
    ax_b.set_yscale("symlog", linthresh=1.0)
    ax_a.legend(
        fontsize="x-small",
        title=f"darker: larger $s_c$ ({', '.join(f'{v:g}' for v in scales)})",
        title_fontsize="x-small",
    )
    _label(ax_a)
    return fig


def save(fig: Figure, directory: Path, name: str) -> dict[str, str]:
    """Write ``directory/<name>.png`` (110 dpi) and ``<name>.pdf`` (directory created if
    missing, files written atomically, without dates); return their paths as
    ``{"png": ..., "pdf": ...}``. The figure is cleared afterwards to free its memory."""
    if not name or Path(name).name != name:
        raise ValueError(f"save: figure name {name!r} must be a plain file name without '/'")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    with _style():
        for fmt in ("png", "pdf"):
            target = directory / f"{name}.{fmt}"
            with atomic_write(target) as temporary:
                fig.savefig(temporary, format=fmt, dpi=PNG_DPI, metadata=_METADATA[fmt])
            paths[fmt] = str(target)
    fig.clear()
    return paths
