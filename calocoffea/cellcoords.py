"""Per-cell coordinates that calibrations bin in and detector effects depend on.

:func:`rings_and_angles` gives, for every cell of a geometry (in ``Geometry.cellids()``
order), its ring number and the polar angle of its centre in the (x, y) plane, as seed 003
defines them for HGCAL's hexagonal wafers: ring 1 is the central cell, ring r the r-th
hexagonal ring around it, theta the direction of the cell centre. Square grids use the same
idea with square rings around the grid centre: ring = 1 + floor(max(|x|, |y|) / pitch)
of the cell centre, so an even grid's central 2 x 2 cells form ring 1 and an odd grid's
central cell does.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from calocoffea.geometry import Geometry, decode_cellid, get_geometry
from calocoffea.grids import HexGrid, SquareGrid


def rings_and_angles(
    geometry: str | Geometry,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """(ring, theta) of every cell, ``cellids()`` order; theta in [0, 2 pi) [rad]."""
    geometry = get_geometry(geometry)
    section, _, i, j = decode_cellid(geometry.cellids())
    ring = np.zeros(i.size, np.int64)
    theta = np.zeros(i.size)
    for k, s in enumerate(geometry.sections):
        sel = section == k
        x, y = s.grid.centre(i[sel], j[sel])
        if isinstance(s.grid, HexGrid):
            ring[sel] = HexGrid.distance(i[sel], j[sel]) + 1
        elif isinstance(s.grid, SquareGrid):
            ring[sel] = 1 + np.floor(np.maximum(np.abs(x), np.abs(y)) / s.grid.pitch_mm + 1e-9)
        else:  # pragma: no cover - a new grid type must say what its rings are
            raise TypeError(f"no ring definition for grid {type(s.grid).__name__}")
        theta[sel] = np.mod(np.arctan2(y, x), 2.0 * np.pi)
    return ring, theta


__all__ = ["rings_and_angles"]
