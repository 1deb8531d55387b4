"""Ring numbers and angles of cells (seed 003's binning variables)."""

from __future__ import annotations

import numpy as np

from calocoffea.cellcoords import rings_and_angles
from calocoffea.geometry import get_geometry


def test_hexagonal_rings_hold_six_r_cells() -> None:
    geometry = get_geometry("hgcal_ee")
    ring, theta = rings_and_angles(geometry)
    per_layer = ring[: geometry.sections[0].grid.n_cells]
    counts = np.bincount(per_layer)[1:]
    assert counts[0] == 1 and ring.max() == 35  # seed 003: 35 rings, one central cell
    assert np.array_equal(counts[1:], 6 * np.arange(1, 35))
    assert np.all((theta >= 0) & (theta < 2 * np.pi))


def test_square_rings_around_the_grid_centre() -> None:
    geometry = get_geometry("cepc_ahcal")  # 18 x 18 cells of 40 mm
    ring, theta = rings_and_angles(geometry)
    counts = np.bincount(ring[:324])[1:]
    assert counts[0] == 4  # even grid: the central 2 x 2 cells
    assert np.array_equal(counts, 8 * np.arange(1, 10) - 4)
    # the cell at x = y = +20 mm points at 45 degrees
    first = geometry.cellids()[:324]
    x, y, _ = geometry.centre(first)
    k = np.flatnonzero((np.abs(x - 20) < 1e-6) & (np.abs(y - 20) < 1e-6))[0]
    assert np.isclose(theta[k], np.pi / 4)
