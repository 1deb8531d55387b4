"""Digitisation and calibration physics: inverses, de-saturation, per-cell control, closure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calocoffea import rng
from calocoffea.calibration import CalibrationSteps, calibrate, range_top_mip
from calocoffea.closure import beam_positions, closure_point
from calocoffea.conditions import Conditions, nominal
from calocoffea.constants import DenseConstants, nominal_constants
from calocoffea.digitization import (
    DigitizationOptions,
    Digitized,
    desaturation,
    digitize,
    inverse_nonlinearity,
    nonlinearity,
    saturation,
)
from calocoffea.geometry import Geometry, get_geometry

GEOMETRY = "cepc_ahcal"


@pytest.fixture(scope="module")
def geometry() -> Geometry:
    return get_geometry(GEOMETRY)


@pytest.fixture(scope="module")
def conditions() -> Conditions:
    return nominal(GEOMETRY)


@pytest.fixture(scope="module")
def dense(conditions: Conditions, geometry: Geometry) -> DenseConstants:
    return nominal_constants(conditions).dense(geometry)


# ------------------------------------------------------------------------------ formulas


def test_nonlinearity_inverse_is_exact_and_monotonic() -> None:
    generator = np.random.default_rng(3)
    x = generator.uniform(0, 1.2 * 78520, 10_000)
    a, b = generator.uniform(0, 0.3, x.size), generator.uniform(0.8, 1.2, x.size)
    y = nonlinearity(x, a, b, 78520.0)
    assert np.allclose(inverse_nonlinearity(y, a, b, 78520.0), x, rtol=1e-12, atol=1e-9)
    grid = np.linspace(0, 2e5, 1001)
    assert np.all(np.diff(nonlinearity(grid, 0.3, 1.0, 78520.0)) > 0)
    assert np.isinf(inverse_nonlinearity(np.array([1e9]), 0.1, 1.0, 78520.0)).all()


@pytest.mark.parametrize("n_pixels", [1000.0, 7284.0])
def test_desaturation_inverts_saturation_up_to_99_percent(n_pixels: float) -> None:
    occupancy = np.linspace(0.0, 0.99, 2000)
    n_pe = -n_pixels * np.log1p(-occupancy)
    fired = saturation(n_pe, n_pixels)
    assert np.allclose(fired / n_pixels, occupancy, rtol=1e-12, atol=1e-15)
    assert np.allclose(desaturation(fired, n_pixels, occupancy=0.995), n_pe, rtol=1e-10)
    # default: exact below 95 % occupancy, continued with equal value and slope above
    below = occupancy <= 0.95
    assert np.allclose(desaturation(fired, n_pixels)[below], n_pe[below], rtol=1e-10)
    r, step = 0.95 * n_pixels, 1e-6 * n_pixels
    left, at, right = desaturation(np.array([r - step, r, r + step]), n_pixels)
    assert right - at == pytest.approx(at - left, rel=1e-4)
    assert np.all(np.diff(desaturation(fired, n_pixels)) > 0)


# ------------------------------------------------------------------------------ single cells


def _one_cell(
    geometry: Geometry, conditions: Conditions, energies_mip: np.ndarray, hits: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``hits`` deposits of each energy in the central cell of layer 10, one hit per event."""
    cellid = geometry.cell_of(np.array([10]), np.array([20.0]), np.array([20.0]))[0]
    cell = np.full(energies_mip.size * hits, geometry.cell_index(cellid)[0])
    energy_mip = np.repeat(energies_mip, hits)
    keys = rng.event_keys(rng.file_key(seed, "single-cell"), np.arange(cell.size))
    return energy_mip * conditions.mip_mev[cell], cell, keys, np.ones(cell.size, np.int64)


def _calibrated(result: Digitized, cell: np.ndarray, dense: DenseConstants, **steps: bool):
    layer = np.full(cell.size, 10)
    out = calibrate(result.adc, result.gain, result.flags, cell, layer, dense,
                    CalibrationSteps(**steps))  # fmt: skip
    return out.energy


def test_single_cell_response_linear_up_to_range_top(
    geometry: Geometry, conditions: Conditions, dense: DenseConstants
) -> None:
    hits = 20_000
    cell0 = _one_cell(geometry, conditions, np.array([1.0]), 1, 0)[1]
    top = float(range_top_mip(cell0, dense)[0])
    print(f"\nlow-gain range top of the cell: {top:.1f} MIP")
    assert 200 < top < 400  # PHYSICS.md: roughly 200-280 MIP at 11.5 p.e./MIP and ~7300 pixels
    points = np.geomspace(1.0, top, 12)
    energy, cell, keys, counts = _one_cell(geometry, conditions, points, hits, 1)
    options = DigitizationOptions(zero_suppression=False, clipping=False)
    result = digitize(energy, cell, keys, counts, conditions, options)
    response = _calibrated(result, cell, dense).reshape(points.size, hits)
    relative = response / points[:, None]
    mean = relative.mean(axis=1)
    error = relative.std(axis=1, ddof=1) / np.sqrt(hits)
    for p, m, e in zip(points, mean, error, strict=True):
        print(f"  {p:7.1f} MIP: response {m:.4f} +- {e:.4f}")
    assert np.all(np.abs(mean - 1) < 0.02), "linear within 2 % up to the range top"
    assert np.all(np.abs(mean - 1) < 0.02 - 3 * error), "and by more than 3 standard errors"
    assert np.any(result.gain == 1) and np.any(result.gain == 0)  # both gains were exercised


def test_without_desaturation_the_deficit_is_the_saturation_curve(
    geometry: Geometry, conditions: Conditions, dense: DenseConstants
) -> None:
    hits = 3000
    points = np.array([5.0, 50.0, 150.0, 250.0])
    energy, cell, keys, counts = _one_cell(geometry, conditions, points, hits, 2)
    options = DigitizationOptions(zero_suppression=False, clipping=False)
    result = digitize(energy, cell, keys, counts, conditions, options)
    response = _calibrated(result, cell, dense, desaturation=False).reshape(points.size, hits)
    n_pix = conditions.values["n_pixels"][cell[0]]
    ly = conditions.values["light_yield_pe"][cell[0]]
    n_pe = points * ly
    expected = n_pix * (1 - np.exp(-n_pe / n_pix)) / n_pe
    measured = response.mean(axis=1) / points
    error = response.std(axis=1, ddof=1) / np.sqrt(hits) / points
    print("\nN_pe, measured / expected response without de-saturation")
    for pe, m, x in zip(n_pe, measured, expected, strict=True):
        print(f"  {pe:7.0f}: {m:.4f} / {x:.4f}")
    assert expected[-1] < 0.85  # a real deficit at the top...
    assert np.all(np.abs(measured - expected) < 4 * error + 1e-3)  # ...that the curve predicts


def test_one_cell_gain_ten_percent_high_moves_only_that_cell(
    geometry: Geometry, conditions: Conditions, dense: DenseConstants
) -> None:
    generator = np.random.default_rng(5)
    n = 60_000
    cell = (
        generator.integers(0, 50, n)
        + geometry.cell_index(
            geometry.cell_of(np.array([20]), np.array([0.0]), np.array([0.0]))[0]
        )[0]
    )
    energy = generator.uniform(2.0, 20.0, n) * conditions.mip_mev[cell]
    keys = rng.event_keys(rng.file_key(9, "gain"), np.arange(n))
    counts = np.ones(n, np.int64)
    target = cell[0]
    spe = conditions.values["spe_adc"].copy()
    spe[target] *= 1.10
    changed = conditions.with_values(spe_adc=spe)
    options = DigitizationOptions(zero_suppression=False)
    before = _calibrated(digitize(energy, cell, keys, counts, conditions, options), cell, dense)
    after = _calibrated(digitize(energy, cell, keys, counts, changed, options), cell, dense)
    mine = cell == target
    assert np.array_equal(before[~mine], after[~mine])  # every other cell: bit for bit
    ratio = after[mine].sum() / before[mine].sum()
    assert ratio == pytest.approx(1.10, abs=2e-3)
    assert mine.sum() > 500


# ------------------------------------------------------------------------------ closure


@pytest.fixture(scope="module")
def closure(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Reduced closure sample: 10 and 100 GeV electrons, cell centre and four-cell corner."""
    directory: Path = tmp_path_factory.mktemp("closure")
    points = {}
    for k, (energy, position) in enumerate(
        [(10.0, "centre"), (10.0, "corner"), (100.0, "centre"), (100.0, "corner")]
    ):
        points[energy, position] = closure_point(GEOMETRY, energy, position, 150, 40 + k, directory)
    return points


def test_beam_positions(geometry: Geometry) -> None:
    positions = beam_positions(geometry)
    assert positions == {"centre": (20.0, 20.0), "corner": (0.0, 0.0)}


@pytest.mark.parametrize("point", [(10.0, "centre"), (10.0, "corner"), (100.0, "centre"),
                                   (100.0, "corner")])  # fmt: skip
def test_closure(closure: dict, point: tuple[float, str]) -> None:
    p = closure[point]
    print(f"\n{p.as_dict()}")
    # (a) zero suppression and clipping off: 1 within 3 standard errors and 0.5 %
    assert abs(p.ratio_off - 1) < 3 * p.ratio_off_error
    assert abs(p.ratio_off - 1) < 0.005
    # (b) defaults: the deficit is the one predicted from the truth, hit by hit
    assert abs(p.deficit - p.deficit_predicted) < 3 * p.deficit_difference_error
    assert p.deficit > 0.001


def test_clipping_appears_at_100_gev_on_a_cell_centre(closure: dict) -> None:
    assert closure[10.0, "centre"].clipped_event_fraction == 0.0
    assert closure[100.0, "centre"].clipped_event_fraction > 0.9
    assert closure[100.0, "centre"].deficit > 0.1  # the range top is what limits
