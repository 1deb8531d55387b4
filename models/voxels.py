"""Fixed-size 3D voxel grids around each shower, one calorimeter section at a time.

What to use when:

- :func:`voxel_grids` -- energy per (event, x, depth, y) voxel of a grid centred on each
  event's energy-weighted centroid in the transverse plane: the input of the dual-branch 3D
  CNN of seed 001 (``fill_voxel_vectorized``), for every event of a chunk in one call.
- :func:`section_voxel_grids` -- the same for one section of a geometry, from the hits of
  every section: selects the section's hits, then :func:`voxel_grids` with
  :func:`section_spec`.
- :class:`VoxelSpec` -- the grid: transverse cell size and window [mm], depth as a range of
  layers; :attr:`VoxelSpec.shape` is (nx, depth, ny).
- :class:`VoxelPreset`, :func:`section_spec` -- a grid by section name, its depth derived from
  the geometry (one bin per layer of the section by default). :data:`DEFAULT` is small enough
  to train on two CPU cores within an hour, :data:`SEED001` is the seed's size; both are for
  ``calice_siw_ecal_ahcal`` (5 mm ECAL pads, 30 mm HCAL tiles).

The voxelisation, per event and for the hits passed in (those of one section): the centroid
(x̄, ȳ) = Σ E_k (x_k, y_k) / Σ E_k over all of them; the window [x̄ - w_x/2, x̄ + w_x/2) ×
[ȳ - w_y/2, ȳ + w_y/2) and the layers [first, stop); hits outside are dropped; the others'
energies are summed per voxel; with ``normalise`` the grid is divided by its own maximum when
that is positive (so grids of negative energies stay as they are). An event without hits or
whose energies sum to zero gives zeros.

Axis order is the seed's: its (x, y, z) with y along the beam become (x, depth, y) here, so
a network trained on the seed's grids reads these unchanged. Where this differs from
``fill_voxel_vectorized`` and why:

- **batched**: flat hit arrays with ``counts`` hits per event (as :mod:`.features`), a few
  numpy calls per block of events (:data:`BLOCK_VOXELS`), no Python loop over events.
- **depth in layers, not mm**: the seed bins its depth coordinate in mm (``y_range``,
  ``cell_size[1]``). The SiW ECAL's active layers are 2.6 mm apart for the first 20 and
  4.7 mm for the last 10, so no uniform mm binning with the seed's 30 bins gives each layer
  its own bin (bins of at most 2.6 mm span 78 mm, the layers 96.4 mm); the seed's 30 and 48
  depth bins are one per layer, which the layer index gives exactly, without floating-point
  edges. This is the seed's function with y = layer, ``y_range`` = (first, stop) and
  ``cell_size[1]`` = ``layers_per_cell``.
- **float64 accumulation**: energies are summed in float64 (``np.add.at`` into a float64
  scratch grid, touching only the voxels with hits: a dense ``np.bincount`` would write and
  read every voxel of the block, which costs more than the hits at the seed's grid sizes),
  then cast to float32; the seed sums float32. Centroids and the zero-energy test use
  float64 sums of the float64 energies (the seed casts them to float32 and sums the
  denominator in float32, about 1e-7 relative). Voxel sums agree to float32 rounding and are
  closer to the exact sums.
- **edges**: a hit less than :data:`EDGE_TOLERANCE` (1e-9) of a cell below a voxel or
  window edge counts as on it. Showers in a single column of cells (MIP-like pions in the
  ECAL) have that column's centre as centroid, which a window of an even number of cells
  puts exactly on a voxel edge; there the seed's float32 centroid moves them left or right
  by one voxel at random, and without the tolerance float64 rounding would too. The window
  test is then on the same (x - xmin) / cell as the index, so the seed's clip of the indices
  has nothing left to do and is not needed.
- **whole cells only**: the window and the layer range must be whole multiples of the cell
  sizes; the seed truncates ``int(window / cell)`` and its clip folds the remainder into the
  last cell, which :class:`VoxelSpec` refuses instead.
- **checked input**: non-finite energies or positions, non-integer layers and ``counts``
  that do not match the hits raise :class:`~calocoffea.exceptions.ModelError` (in the seed a
  NaN silently empties or poisons the event's grid). ``normalise=False`` keeps the energies
  [GeV, or the hits' unit]; the seed always normalises.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from calocoffea.exceptions import ModelError, did_you_mean
from calocoffea.geometry import Geometry, get_geometry

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

#: Voxels per block: events are processed in blocks of about this many voxels (at least one
#: event), so that the float64 accumulator stays at 4 MiB whatever the chunk size and a
#: block's hits stay in cache (2 to 2.5 times faster than one pass over 4000 events).
BLOCK_VOXELS = 1 << 19

#: A hit less than this fraction of a cell below a voxel edge counts as on the edge (in the
#: upper voxel). A shower in one column of cells has that column's centre as centroid, which a
#: window of an even number of cells puts on a voxel edge: without the tolerance its hits would
#: go to one side or the other with the last bit of the centroid's rounding.
EDGE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class VoxelSpec:
    """A voxel grid: ``cell_mm`` (x, y) transverse cell size [mm]; ``window_mm`` (x, y)
    transverse extent [mm], centred on each event's centroid; ``layers`` (first, stop), the
    global layers of the depth axis (stop excluded), ``layers_per_cell`` of them per bin."""

    cell_mm: tuple[float, float]
    window_mm: tuple[float, float]
    layers: tuple[int, int]
    layers_per_cell: int = 1

    def __post_init__(self) -> None:
        for name in ("cell_mm", "window_mm"):
            value = tuple(getattr(self, name))
            try:
                ok = len(value) == 2 and all(math.isfinite(v) and v > 0 for v in value)
            except TypeError:
                ok = False
            if not ok:
                raise ModelError(
                    f"VoxelSpec.{name} must be two finite sizes > 0 [mm] (x, y), got "
                    f"{getattr(self, name)!r}"
                )
            object.__setattr__(self, name, (float(value[0]), float(value[1])))
        for axis, cell, window in zip("xy", self.cell_mm, self.window_mm, strict=True):
            ratio = window / cell
            if round(ratio) < 1 or abs(ratio - round(ratio)) > 1e-9 * ratio:
                raise ModelError(
                    f"VoxelSpec window_mm[{axis}] = {window:g} mm is not a whole number of "
                    f"cells of {cell:g} mm; make it n * cell_mm (e.g. {max(round(ratio), 1)} "
                    f"cells = {max(round(ratio), 1) * cell:g} mm)"
                )
        layers = tuple(self.layers)
        if (
            len(layers) != 2
            or not all(isinstance(v, int | np.integer) for v in layers)
            or not 0 <= layers[0] < layers[1]
        ):
            raise ModelError(
                f"VoxelSpec.layers must be (first, stop) global layer indices with "
                f"0 <= first < stop, got {self.layers!r}"
            )
        object.__setattr__(self, "layers", (int(layers[0]), int(layers[1])))
        n_layers = self.layers[1] - self.layers[0]
        per = self.layers_per_cell
        if not isinstance(per, int | np.integer) or per < 1 or n_layers % per:
            raise ModelError(
                f"VoxelSpec.layers_per_cell = {per!r} must be an integer >= 1 that divides the "
                f"{n_layers} layers {self.layers[0]}..{self.layers[1] - 1}; choose a divisor "
                "or change the layer range"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(nx, depth bins, ny) of one event's grid."""
        nx, ny = (round(w / c) for w, c in zip(self.window_mm, self.cell_mm, strict=True))
        return nx, (self.layers[1] - self.layers[0]) // self.layers_per_cell, ny

    @property
    def n_voxels(self) -> int:
        nx, nd, ny = self.shape
        return nx * nd * ny


@dataclass(frozen=True)
class VoxelPreset:
    """The geometry-free part of a section's grid: ``cells`` (nx, ny) transverse cells of
    ``cell_mm`` (x, y) [mm]; the depth axis spans the section's layers, ``layers_per_cell`` per
    bin (see :func:`section_spec`)."""

    cells: tuple[int, int]
    cell_mm: tuple[float, float]
    layers_per_cell: int = 1

    def __post_init__(self) -> None:
        if len(self.cells) != 2 or not all(
            isinstance(n, int | np.integer) and n >= 1 for n in self.cells
        ):
            raise ModelError(f"VoxelPreset.cells must be two integers >= 1, got {self.cells!r}")


#: Grids for ``calice_siw_ecal_ahcal`` chosen small enough to train on two CPU cores within
#: an hour: ECAL 16 x 30 x 16 cells of 5 mm (centroid ± 40 mm, about 3.6 Molière radii of the
#: W/Si layers), HCAL 12 x 48 x 12 tiles of 30 mm (± 180 mm, about one interaction length of
#: the Fe/scintillator layers); one depth bin per layer.
DEFAULT: Mapping[str, VoxelPreset] = MappingProxyType(
    {
        "ecal": VoxelPreset(cells=(16, 16), cell_mm=(5.0, 5.0)),
        "hcal": VoxelPreset(cells=(12, 12), cell_mm=(30.0, 30.0)),
    }
)

#: The grids of seed 001 on ``calice_siw_ecal_ahcal``: ECAL (40, 30, 40) at 5 mm, HCAL
#: (40, 48, 40) at 30 mm, one depth bin per layer; 20 and 120 cm wide, the whole sections.
SEED001: Mapping[str, VoxelPreset] = MappingProxyType(
    {
        "ecal": VoxelPreset(cells=(40, 40), cell_mm=(5.0, 5.0)),
        "hcal": VoxelPreset(cells=(40, 40), cell_mm=(30.0, 30.0)),
    }
)


def _section_index(geometry: Geometry, section: int | str) -> int:
    names = [s.name for s in geometry.sections]
    if isinstance(section, str):
        if section not in names:
            raise ModelError(
                f"geometry {geometry.name!r} has no section {section!r}"
                f"{did_you_mean(section, names)}; its sections are {', '.join(names)}"
            )
        return names.index(section)
    if not 0 <= int(section) < len(names):
        raise ModelError(
            f"section index {section} is out of range for geometry {geometry.name!r}, which "
            f"has sections 0..{len(names) - 1} ({', '.join(names)})"
        )
    return int(section)


def section_spec(
    geometry: Geometry | str,
    section: int | str,
    preset: Mapping[str, VoxelPreset] = DEFAULT,
) -> VoxelSpec:
    """The :class:`VoxelSpec` of ``preset[<section name>]`` whose depth axis covers exactly the
    layers of ``section`` (a name or an index) in ``geometry``."""
    geo = get_geometry(geometry)
    k = _section_index(geometry=geo, section=section)
    name = geo.sections[k].name
    if name not in preset:
        raise ModelError(
            f"the voxel preset has no grid for section {name!r} of {geo.name!r}"
            f"{did_you_mean(name, preset)}; it has {', '.join(preset) or 'none'}: add one"
        )
    p = preset[name]
    layers = np.flatnonzero(geo.layer_section == k)
    return VoxelSpec(
        cell_mm=p.cell_mm,
        window_mm=(p.cells[0] * p.cell_mm[0], p.cells[1] * p.cell_mm[1]),
        layers=(int(layers[0]), int(layers[-1]) + 1),
        layers_per_cell=p.layers_per_cell,
    )


def _finite(name: str, values: npt.ArrayLike, fix: str) -> FloatArray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ModelError(f"{name} must be a flat array (one value per hit), got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        bad = np.flatnonzero(~np.isfinite(v))[:5].tolist()
        raise ModelError(f"non-finite {name} at flat hits {bad}; {fix}")
    return v


def _integers(name: str, values: npt.ArrayLike) -> IntArray:
    v = np.asarray(values)
    if v.ndim != 1:
        raise ModelError(f"{name} must be a flat array of integers, got shape {v.shape}")
    if v.dtype.kind not in "iu":
        if v.size and (v.dtype.kind != "f" or not np.all(np.isfinite(v)) or np.any(v % 1)):
            raise ModelError(
                f"{name} must hold integers, got {v.dtype} values such as "
                f"{v[:3].tolist()}; pass the hits' integer {name}"
            )
    return v.astype(np.int64, copy=False)


def _check_hits(
    x_mm: npt.ArrayLike,
    y_mm: npt.ArrayLike,
    layer: npt.ArrayLike,
    energy: npt.ArrayLike,
    counts: npt.ArrayLike,
) -> tuple[FloatArray, FloatArray, IntArray, FloatArray, IntArray]:
    e = _finite("hit energies", energy, "calibrate them (or drop those hits) first")
    x = _finite("hit x", x_mm, "use cell centres from the geometry")
    y = _finite("hit y", y_mm, "use cell centres from the geometry")
    lay = _integers("layer", layer)
    sizes = {"x_mm": x.size, "y_mm": y.size, "layer": lay.size, "energy": e.size}
    if len(set(sizes.values())) != 1:
        raise ModelError(
            f"hit arrays differ in length ({', '.join(f'{k} {v}' for k, v in sizes.items())}); "
            "pass one value per hit for every array, flattened from the same events"
        )
    n = _integers("counts", counts)
    if np.any(n < 0) or int(n.sum()) != e.size:
        raise ModelError(
            f"hit counts per event (sum {int(n.sum())}, min {int(n.min()) if n.size else 0}) "
            f"do not match the {e.size} hits given; pass ak.num(hits) of the same events"
        )
    return x, y, lay, e, n


def voxel_grids(
    x_mm: npt.ArrayLike,
    y_mm: npt.ArrayLike,
    layer: npt.ArrayLike,
    energy: npt.ArrayLike,
    counts: npt.ArrayLike,
    spec: VoxelSpec,
    *,
    normalise: bool = True,
) -> Float32Array:
    """Energy per (event, ix, depth bin, iy) as float32, shape (events, *spec.shape).

    The hits are those of one section (``counts[k]`` of them for event k); all of them enter
    each event's centroid, those outside the window or ``spec.layers`` are then dropped. With
    ``normalise`` each grid is divided by its maximum where that is > 0 (the seed's)."""
    if not isinstance(spec, VoxelSpec):
        raise ModelError(f"spec must be a VoxelSpec, got {type(spec).__name__}")
    x, y, lay, e, counts_ = _check_hits(x_mm, y_mm, layer, energy, counts)
    n = counts_.size
    nx, nd, ny = spec.shape
    out = np.zeros((n, nx, nd, ny), dtype=np.float32)
    if e.size == 0:
        return out
    offsets = np.concatenate(([0], np.cumsum(counts_)))
    block = max(1, BLOCK_VOXELS // spec.n_voxels)
    scratch = np.zeros(min(n, block) * spec.n_voxels)  # float64 sums, zero between blocks
    for a in range(0, n, block):
        b = min(n, a + block)
        lo, hi = int(offsets[a]), int(offsets[b])
        if lo < hi:
            grids = out[a:b].reshape(b - a, spec.n_voxels)
            hits = (x[lo:hi], y[lo:hi], lay[lo:hi], e[lo:hi], counts_[a:b])
            _fill(grids, scratch, *hits, spec=spec, normalise=normalise)
    return out


def _fill(
    grids: Float32Array,
    scratch: FloatArray,
    x: FloatArray,
    y: FloatArray,
    lay: IntArray,
    e: FloatArray,
    counts: IntArray,
    *,
    spec: VoxelSpec,
    normalise: bool,
) -> None:
    """Write the voxels of one block of events into the zeros of ``grids`` (events, voxels);
    ``scratch`` (zeros, at least ``grids.size``) is left as zeros."""
    n = counts.size
    nx, nd, ny = spec.shape
    event = np.repeat(np.arange(n, dtype=np.int64), counts)
    total = np.bincount(event, weights=e, minlength=n)
    has_energy = total != 0
    safe = np.where(has_energy, total, 1.0)
    cx = np.bincount(event, weights=e * x, minlength=n) / safe
    cy = np.bincount(event, weights=e * y, minlength=n) / safe
    # position in cells from the window's low edge (the seed's (x - xmin) / cell_size), moved
    # up by EDGE_TOLERANCE so that a hit on an edge stays on it whatever the rounding
    (wx, wy), (cell_x, cell_y) = spec.window_mm, spec.cell_mm
    ux = (x - (cx - wx / 2)[event]) / cell_x + EDGE_TOLERANCE
    uy = (y - (cy - wy / 2)[event]) / cell_y + EDGE_TOLERANCE
    first, stop = spec.layers
    keep = has_energy[event] & (lay >= first) & (lay < stop)
    keep &= (ux >= 0) & (ux < nx) & (uy >= 0) & (uy < ny)
    # flat voxel index of every hit, in float64 (exact: below 2^53) so that the dropped hits'
    # meaningless ones need no cast; the window test is on the quantities the indices are
    # taken from, so no clip is needed
    depth = (lay - first) // spec.layers_per_cell
    flat_index = ((event * nx + np.floor(ux)) * nd + depth) * ny + np.floor(uy)
    kept = np.flatnonzero(keep)
    index, kept_event = flat_index[kept].astype(np.int64), event[kept]
    # sparse float64 sums: only the voxels with hits are touched, then reset
    np.add.at(scratch, index, e[kept])
    sums = scratch[index].astype(np.float32)  # the sum of its voxel, for each kept hit
    scratch[index] = 0.0
    flat = grids.reshape(-1)
    flat[index] = sums
    if not normalise:
        return
    # max(0, the hits' voxels' max) is the seed's voxel.max() wherever that is > 0, and <= 0
    # exactly where it is <= 0: the grid is then left as it is
    peak = np.zeros(n, dtype=np.float32)
    np.maximum.at(peak, kept_event, sums)
    flat[index] = sums / np.where(peak > 0, peak, np.float32(1.0))[kept_event]


def seed_voxel_grid(
    x: Any,
    y: Any,
    z: Any,
    e: Any,
    cell_size: Any,
    y_range: Any,
    xz_window: Any,
    normalise: bool = True,
) -> Float32Array:
    """Seed 001's ``fill_voxel_vectorized`` for one event, literally (its y is the depth;
    ``normalise`` only skips its last line): the reference :func:`voxel_grids` is tested and
    benchmarked against, not for use (one Python call per event, float32 sums)."""
    e = np.asarray(e, dtype=np.float32)
    if np.sum(e) == 0 or len(x) == 0:
        return np.zeros((int(xz_window[0] / cell_size[0]),
                         int((y_range[1] - y_range[0]) / cell_size[1]),
                         int(xz_window[1] / cell_size[2])), dtype=np.float32)  # fmt: skip

    xc, zc = np.sum(x * e) / np.sum(e), np.sum(z * e) / np.sum(e)
    xmin, xmax = xc - xz_window[0] / 2, xc + xz_window[0] / 2
    zmin, zmax = zc - xz_window[1] / 2, zc + xz_window[1] / 2
    ymin, ymax = y_range
    mask = (x >= xmin) & (x < xmax) & (y >= ymin) & (y < ymax) & (z >= zmin) & (z < zmax)

    x, y, z, e = x[mask], y[mask], z[mask], e[mask]
    ix = ((x - xmin) / cell_size[0]).astype(np.int32)
    iy = ((y - ymin) / cell_size[1]).astype(np.int32)
    iz = ((z - zmin) / cell_size[2]).astype(np.int32)
    nx = int(xz_window[0] / cell_size[0])
    ny = int((y_range[1] - y_range[0]) / cell_size[1])
    nz = int(xz_window[1] / cell_size[2])
    voxel = np.zeros((nx, ny, nz), dtype=np.float32)
    np.add.at(voxel, (np.clip(ix, 0, nx - 1), np.clip(iy, 0, ny - 1), np.clip(iz, 0, nz - 1)), e)
    if not normalise:
        return voxel
    vmax = voxel.max()
    return voxel / vmax if vmax > 0 else voxel


def section_voxel_grids(
    geometry: Geometry | str,
    section: int | str,
    x_mm: npt.ArrayLike,
    y_mm: npt.ArrayLike,
    layer: npt.ArrayLike,
    energy: npt.ArrayLike,
    counts: npt.ArrayLike,
    preset: Mapping[str, VoxelPreset] = DEFAULT,
    *,
    normalise: bool = True,
) -> Float32Array:
    """:func:`voxel_grids` of one ``section`` from the hits of all sections: only the hits in
    the section's layers enter the centroid and the grid (:func:`section_spec` with
    ``preset``)."""
    spec = section_spec(geometry, section, preset)
    x, y, lay, e, counts_ = _check_hits(x_mm, y_mm, layer, energy, counts)
    first, stop = spec.layers
    inside = (lay >= first) & (lay < stop)
    event = np.repeat(np.arange(counts_.size, dtype=np.int64), counts_)
    kept = np.bincount(event[inside], minlength=counts_.size).astype(np.int64)
    return voxel_grids(x[inside], y[inside], lay[inside], e[inside], kept, spec,
                       normalise=normalise)  # fmt: skip


__all__ = [
    "BLOCK_VOXELS",
    "DEFAULT",
    "EDGE_TOLERANCE",
    "SEED001",
    "VoxelPreset",
    "VoxelSpec",
    "section_spec",
    "section_voxel_grids",
    "seed_voxel_grid",
    "voxel_grids",
]
