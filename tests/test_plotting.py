"""Tests of calocoffea.plotting: every figure on small synthetic inputs, saved as PNG and PDF.

The builders of synthetic inputs (scans, histograms) are reused by test_report.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hist
import numpy as np
import pytest
from matplotlib.figure import Figure

from calocoffea import plotting

ENERGIES_GEV = (2.0, 5.0, 10.0, 20.0, 40.0, 80.0)
SEED = 20240611
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: A rendered figure is far larger than this; a blank one is smaller.
MIN_PNG_BYTES = 10_000


def beam_energy_axis() -> hist.axis.Variable:
    """Bins centred on the energy points, as processors.histogram makes them."""
    points = np.asarray(ENERGIES_GEV)
    middle = 0.5 * (points[1:] + points[:-1])
    edges = np.concatenate([[0.5 * points[0]], middle, [1.5 * points[-1]]])
    return hist.axis.Variable(edges, name="beam_energy", label="Beam energy [GeV]")


def make_scan(label: str, a: float, c: float, *, seed: int, slope: float = 1.0) -> dict[str, Any]:
    """A scan dict as results.json holds it; the highest energy clipped and left out."""
    rng = np.random.default_rng(seed)
    energy = np.asarray(ENERGIES_GEV)
    truth = np.sqrt(a**2 / energy + c**2)
    error = 0.03 * truth
    sigma_over_e = truth + rng.normal(0.0, error)
    mean_error = 0.002 * energy
    mean = slope * energy + 0.05 + rng.normal(0.0, mean_error)
    used = [True] * (energy.size - 1) + [False]
    clipped = [0.0] * (energy.size - 1) + [0.083]
    return {
        "label": label,
        "energy_gev": energy.tolist(),
        "mean_gev": mean.tolist(),
        "mean_error_gev": mean_error.tolist(),
        "sigma_over_e": sigma_over_e.tolist(),
        "sigma_over_e_error": error.tolist(),
        "clipped_fraction": clipped,
        "used_in_fit": used,
        "resolution": {
            "a": a,
            "a_error": 0.004,
            "c": c,
            "c_error": 0.0015,
            "chi2_ndf": 1.1,
            "valid": True,
        },
        "linearity": {
            "slope": slope,
            "offset": 0.05,
            "deviation": [*[0.001] * (energy.size - 1), math.nan],
            "max_deviation": 0.004,
        },
    }


def make_scans() -> dict[str, dict[str, Any]]:
    return {
        "uncalibrated": make_scan("before calibration", 0.26, 0.045, seed=1, slope=0.93),
        "calibrated": make_scan("calibrated", 0.21, 0.012, seed=2),
        "truth": make_scan("true constants", 0.205, 0.008, seed=3),
    }


def make_responses() -> tuple[dict[float, np.ndarray], dict[float, tuple[float, float]]]:
    """Gaussian responses with a low leakage tail, and their (mean, sigma)."""
    rng = np.random.default_rng(SEED)
    samples, cores = {}, {}
    for energy in ENERGIES_GEV:
        sigma = math.hypot(0.2 / math.sqrt(energy), 0.01)
        core = rng.normal(1.0, sigma, 2000)
        tail = 1.0 - rng.exponential(3.0 * sigma, 100)
        samples[energy] = np.concatenate([core, tail])
        cores[energy] = (1.0, sigma)
    return samples, cores


def make_profiles() -> tuple[hist.Hist, hist.Hist]:
    """Gamma-shaped longitudinal and exponential transverse profiles per beam energy."""
    layer = hist.axis.Integer(0, 30, name="layer", label="Layer")
    radius = hist.axis.Regular(50, 0.0, 250.0, name="r", label="Radius [mm]")
    longitudinal = hist.Hist(beam_energy_axis(), layer, storage=hist.storage.Double())
    transverse = hist.Hist(beam_energy_axis(), radius, storage=hist.storage.Double())
    rng = np.random.default_rng(SEED)
    for energy in ENERGIES_GEV:
        depth = rng.gamma(2.0 + 0.3 * math.log(energy), 2.5, 5000)
        r = rng.exponential(20.0, 5000)
        longitudinal.fill(
            beam_energy=energy, layer=np.minimum(depth, 29).astype(int), weight=energy / 5000
        )
        transverse.fill(beam_energy=energy, r=r, weight=energy / 5000)
    return longitudinal, transverse


def make_cells() -> hist.Hist:
    """Energy per (layer, i, j) of a shower centred on the middle cell of a 24x24 grid."""
    cells = hist.Hist(
        hist.axis.Integer(0, 30, name="layer", label="Layer"),
        hist.axis.Integer(0, 24, name="i", label="Cell i"),
        hist.axis.Integer(0, 24, name="j", label="Cell j"),
        storage=hist.storage.Double(),
    )
    rng = np.random.default_rng(SEED)
    n = 20_000
    layer = np.minimum(rng.gamma(3.0, 2.5, n), 25).astype(int)
    i, j = (np.clip(rng.laplace(12.0, 1.5, n), 0, 23).astype(int) for _ in range(2))
    cells.fill(layer=layer, i=i, j=j, weight=rng.exponential(1.0, n))
    return cells


def make_event() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    n = 400
    z = rng.gamma(3.0, 40.0, n)
    return {
        "x_mm": rng.laplace(0.0, 15.0, n),
        "y_mm": rng.laplace(0.0, 15.0, n),
        "z_mm": z,
        "energy": rng.exponential(2.0, n) * np.exp(-z / 300.0),
    }


def make_mip(with_truth: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    rng = np.random.default_rng(SEED)
    truth = rng.normal(345.0, 30.0, 2000)
    status = (rng.random(2000) < 0.03).astype(int)
    fitted = truth * (1.0 + rng.normal(0.0, 0.02, 2000))
    fitted[status != 0] = 345.0  # fallback: the nominal scale
    return fitted, (truth if with_truth else None), status


def _response() -> Figure:
    samples, cores = make_responses()
    return plotting.response_figure(samples, cores, title="electrons, calibrated")


#: One builder of each figure, keyed by the name it is saved under.
FIGURES: dict[str, Callable[[], Figure]] = {
    "response": _response,
    "resolution": lambda: plotting.resolution_figure(make_scans()),
    "linearity": lambda: plotting.linearity_figure(make_scans()),
    "profiles": lambda: plotting.profiles_figure(*make_profiles()),
    "cell_map": lambda: plotting.cell_map_figure(make_cells(), label="Energy [MIP]"),
    "event": lambda: plotting.event_display_figure(**make_event(), title="event 7, 40 GeV"),
    "mip": lambda: plotting.mip_figure(*make_mip(with_truth=True)),
}


def assert_saved(paths: dict[str, str]) -> None:
    png, pdf = Path(paths["png"]).read_bytes(), Path(paths["pdf"]).read_bytes()
    assert png.startswith(PNG_MAGIC)
    assert len(png) > MIN_PNG_BYTES
    assert pdf.startswith(b"%PDF")


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("name", "n_axes"),
    [
        ("response", len(ENERGIES_GEV)),
        ("resolution", 2),
        ("linearity", 2),
        ("profiles", 2),
        ("cell_map", 6 + 1),  # six layers and the colour bar
        ("event", 2 + 1),
        ("mip", 1),
    ],
)
def test_figure_is_saved(tmp_path: Path, name: str, n_axes: int) -> None:
    fig = FIGURES[name]()
    assert len(fig.axes) == n_axes
    paths = plotting.save(fig, tmp_path / "plots", name)
    assert set(paths) == {"png", "pdf"}
    assert Path(paths["png"]).name == f"{name}.png"
    assert_saved(paths)


def test_axes_are_labelled() -> None:
    fig = FIGURES["resolution"]()
    main, residual = fig.axes
    assert "%" in main.get_ylabel()
    assert residual.get_xlabel() == "Beam energy [GeV]"
    legend = main.get_legend()
    assert legend is not None
    texts = [text.get_text() for text in legend.get_texts()]
    assert any("calibrated: a = 21.00 ± 0.40" in text for text in texts), texts


def test_cell_map_chosen_layers_and_log_scale(tmp_path: Path) -> None:
    fig = plotting.cell_map_figure(make_cells(), [2, 5], label="Energy [MIP]")
    assert len(fig.axes) == 3
    assert fig.axes[-1].get_yscale() == "log"  # the colour bar: > 2 decades
    assert_saved(plotting.save(fig, tmp_path, "two_layers"))


def test_cell_map_unknown_layer() -> None:
    with pytest.raises(ValueError, match=r"layers \[99\] are not in the histogram"):
        plotting.cell_map_figure(make_cells(), [99])


def test_profiles_need_named_axes() -> None:
    longitudinal, _ = make_profiles()
    with pytest.raises(ValueError, match="needs axes beam_energy, r; it has beam_energy, layer"):
        plotting.profiles_figure(longitudinal, longitudinal)


def test_beam_energy_labels_recover_the_points() -> None:
    assert plotting.beam_energy_points(beam_energy_axis()) == [f"{e:g} GeV" for e in ENERGIES_GEV]
    other = hist.axis.Variable([0.0, 10.0, 30.0], name="beam_energy")
    assert plotting.beam_energy_points(other) == ["0-10 GeV", "10-30 GeV"]


def test_scan_with_nulls_and_no_fit(tmp_path: Path) -> None:
    """A scan read back from results.json: null entries, a missing resolution fit."""
    scan = make_scan("calibrated", 0.21, 0.01, seed=4)
    scan["sigma_over_e"][0] = None
    scan["resolution"] = {}
    for figure in (plotting.resolution_figure, plotting.linearity_figure):
        assert_saved(plotting.save(figure({"calibrated": scan}), tmp_path, figure.__name__))


def test_scan_missing_keys() -> None:
    with pytest.raises(
        ValueError, match="scan 'x' lacks mean_error_gev, sigma_over_e, sigma_over_e_error; it has"
    ):
        plotting.resolution_figure({"x": {"energy_gev": [1.0], "mean_gev": [1.0]}})


def test_mip_without_truth_and_empty_event(tmp_path: Path) -> None:
    fig = plotting.mip_figure(*make_mip(with_truth=False))
    assert fig.axes[0].get_xlabel() == "Fitted MIP scale [ADC]"
    assert_saved(plotting.save(fig, tmp_path, "mip"))
    empty = np.array([])
    fig = plotting.event_display_figure(empty, empty, empty, empty)
    assert_saved(plotting.save(fig, tmp_path, "empty_event"))


def test_save_rejects_paths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        plotting.save(Figure(), tmp_path, "sub/name")
