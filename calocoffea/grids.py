"""Cell grids of an active layer: square pads/tiles and hexagonal silicon cells.

A grid maps positions (x, y) [mm] to integer cell indices (i, j) and back, columnar over
numpy arrays. Square grids index i, j = 0..n-1 from the -x/-y edge, centred on the beam
axis. Hexagonal grids use axial coordinates (i, j) = (q, r) of pointy-top hexagons whose
circumscribed circle has radius ``radius_mm``; ring 1 is the central cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from calocoffea.exceptions import GeometryError

FloatArray = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.integer]
SQRT3 = math.sqrt(3.0)


@dataclass(frozen=True)
class SquareGrid:
    """``nx`` x ``ny`` square cells of side ``pitch_mm``, centred on x = y = 0."""

    nx: int
    ny: int
    pitch_mm: float

    def __post_init__(self) -> None:
        if self.nx <= 0 or self.ny <= 0 or self.pitch_mm <= 0:
            raise GeometryError(f"square grid needs positive nx, ny, pitch_mm; got {self}")

    @property
    def n_cells(self) -> int:
        return self.nx * self.ny

    @property
    def half_width_mm(self) -> tuple[float, float]:
        return 0.5 * self.nx * self.pitch_mm, 0.5 * self.ny * self.pitch_mm

    def cell_of(self, x: FloatArray, y: FloatArray) -> tuple[IntArray, IntArray, npt.NDArray]:
        """Cell indices of positions and whether the position is inside the grid."""
        fi = np.floor(np.asarray(x, dtype=np.float64) / self.pitch_mm + 0.5 * self.nx)
        fj = np.floor(np.asarray(y, dtype=np.float64) / self.pitch_mm + 0.5 * self.ny)
        inside = (fi >= 0) & (fi < self.nx) & (fj >= 0) & (fj < self.ny)
        # positions far outside (or not finite) are flagged, never cast
        i = np.where(inside, fi, -1).astype(np.int64)
        j = np.where(inside, fj, -1).astype(np.int64)
        return i, j, inside

    def centre(self, i: IntArray, j: IntArray) -> tuple[FloatArray, FloatArray]:
        x = (np.asarray(i) + 0.5 - 0.5 * self.nx) * self.pitch_mm
        y = (np.asarray(j) + 0.5 - 0.5 * self.ny) * self.pitch_mm
        return x, y

    def cells(self) -> tuple[IntArray, IntArray]:
        """Every cell (i, j) of the grid."""
        i, j = np.meshgrid(np.arange(self.nx), np.arange(self.ny), indexing="ij")
        return i.ravel(), j.ravel()

    def contains(self, i: IntArray, j: IntArray) -> npt.NDArray:
        i, j = np.asarray(i), np.asarray(j)
        return (i >= 0) & (i < self.nx) & (j >= 0) & (j < self.ny)


@dataclass(frozen=True)
class HexGrid:
    """Hexagonal cells in ``rings`` concentric rings (ring 1 is the central cell).

    Cells are pointy-top hexagons inscribed in a circle of ``radius_mm``. A grid of R
    rings has 1 + 3 R (R - 1) cells: 35 rings give the 3571 cells of seed 003.
    """

    rings: int
    radius_mm: float

    def __post_init__(self) -> None:
        if self.rings <= 0 or self.radius_mm <= 0:
            raise GeometryError(f"hexagonal grid needs positive rings, radius_mm; got {self}")

    @property
    def n_cells(self) -> int:
        return 1 + 3 * self.rings * (self.rings - 1)

    @property
    def half_width_mm(self) -> tuple[float, float]:
        return SQRT3 * self.radius_mm * (self.rings - 0.5), 1.5 * self.radius_mm * self.rings

    def cell_of(self, x: FloatArray, y: FloatArray) -> tuple[IntArray, IntArray, npt.NDArray]:
        """Axial indices (q, r) of the hexagon containing each position (cube rounding)."""
        x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=np.inf)
        y = np.nan_to_num(np.asarray(y, dtype=np.float64), nan=np.inf)
        x, y = np.clip(x, -1e12, 1e12), np.clip(y, -1e12, 1e12)  # outside either way
        fq = (SQRT3 / 3.0 * x - y / 3.0) / self.radius_mm
        fr = (2.0 / 3.0 * y) / self.radius_mm
        fs = -fq - fr
        far = ~(np.abs(fq) + np.abs(fr) < 4 * self.rings)  # also catches NaN
        fq, fr, fs = (
            np.where(far, self.rings, fq),
            np.where(far, 0.0, fr),
            np.where(far, -self.rings, fs),
        )
        q, r, s = np.round(fq), np.round(fr), np.round(fs)
        dq, dr, ds = np.abs(q - fq), np.abs(r - fr), np.abs(s - fs)
        fix_q = (dq > dr) & (dq > ds)
        fix_r = ~fix_q & (dr > ds)
        q = np.where(fix_q, -r - s, q)
        r = np.where(fix_r, -q - s, r)
        qi, ri = q.astype(np.int64), r.astype(np.int64)
        return qi, ri, self.contains(qi, ri)

    def centre(self, i: IntArray, j: IntArray) -> tuple[FloatArray, FloatArray]:
        q, r = np.asarray(i, dtype=np.float64), np.asarray(j, dtype=np.float64)
        return self.radius_mm * SQRT3 * (q + 0.5 * r), self.radius_mm * 1.5 * r

    @staticmethod
    def distance(i: IntArray, j: IntArray) -> IntArray:
        """Hexagonal distance of (q, r) from the central cell."""
        q, r = np.asarray(i), np.asarray(j)
        return (np.abs(q) + np.abs(r) + np.abs(q + r)) // 2

    def contains(self, i: IntArray, j: IntArray) -> npt.NDArray:
        return self.distance(i, j) < self.rings

    def cells(self) -> tuple[IntArray, IntArray]:
        n = self.rings - 1
        qq, rr = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
        q, r = qq.ravel(), rr.ravel()
        keep = self.contains(q, r)
        return q[keep], r[keep]

    def ring(self, i: IntArray, j: IntArray) -> IntArray:
        """Ring label, 1 for the central cell (seed 003)."""
        return self.distance(i, j) + 1

    @cached_property
    def _outer_angles(self) -> FloatArray:
        q, r = self.cells()
        outer = self.ring(q, r) == self.rings
        x, y = self.centre(q[outer], r[outer])
        return np.sort(np.arctan2(y, x))

    def theta_label(self, i: IntArray, j: IntArray) -> IntArray:
        """Angle label theta_k: the index of the outermost-ring cell direction closest to
        the cell's centre (seed 003: 204 labels for 35 rings); 0 for the central cell."""
        x, y = self.centre(i, j)
        phi = np.arctan2(y, x)
        ref = self._outer_angles
        diff = np.abs(np.angle(np.exp(1j * (phi[..., None] - ref))))
        label = np.argmin(diff, axis=-1)
        central = (np.asarray(i) == 0) & (np.asarray(j) == 0)
        return np.asarray(np.where(central, 0, label), dtype=np.int64)


Grid = SquareGrid | HexGrid
