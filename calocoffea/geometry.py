"""A calorimeter as data: sections of layers, cell grids, cell ids and derived properties.

What to use when:

- :func:`get_geometry` -- a geometry by name (built-in or from a plugin package).
- :class:`Geometry` -- cell id <-> (section, layer, i, j) <-> position, per-layer derived
  properties (depth in X0 and lambda_I, Moliere radius, sampling fraction) and a stable
  :attr:`Geometry.hash` that constants and models record.
- :class:`Section`, :class:`Layer` -- to define a new detector; register a factory returning
  a Geometry in the ``calocoffea.geometries`` entry-point group.

Layer order along the beam (z): absorber, active, gap. Layers are numbered globally from 0
at the front of the first section. Cell ids are uint64 with the fields of :data:`CELLID_FIELDS`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property

import numba
import numpy as np
import numpy.typing as npt

from calocoffea import registry
from calocoffea.exceptions import GeometryError
from calocoffea.grids import FloatArray, Grid, HexGrid, IntArray, SquareGrid
from calocoffea.materials import Mixture, landau_mpv_mev, landau_width_mev, material, mixture

#: Bit fields of a cell id: name -> (first bit, width). i and j are stored with an offset
#: so that negative (hexagonal axial) indices pack.
CELLID_FIELDS: dict[str, tuple[int, int]] = {
    "section": (0, 4),
    "layer": (4, 12),
    "i": (16, 16),
    "j": (32, 16),
}
_IJ_OFFSET = 1 << 15
#: Bits of a cell id that no field uses: set in a real id, they make it no cell of ours.
_UNUSED_BITS = ((1 << 64) - 1) ^ sum(((1 << w) - 1) << f for f, w in CELLID_FIELDS.values())


@dataclass(frozen=True)
class Layer:
    """One sampling layer: absorber, then the sensitive (active) slab, then a gap of air."""

    absorber: str
    absorber_mm: float
    active: str
    active_mm: float
    gap_mm: float = 0.0

    def __post_init__(self) -> None:
        material(self.absorber), material(self.active)  # validate names
        if self.absorber_mm < 0 or self.active_mm <= 0 or self.gap_mm < 0:
            raise GeometryError(f"layer {self} needs active_mm > 0 and absorber_mm, gap_mm >= 0")

    @property
    def thickness_mm(self) -> float:
        return self.absorber_mm + self.active_mm + self.gap_mm

    @cached_property
    def medium(self) -> Mixture:
        slabs = [
            (material(self.absorber), self.absorber_mm),
            (material(self.active), self.active_mm),
        ]
        if self.gap_mm > 0:
            slabs.append((material("air"), self.gap_mm))
        if self.absorber_mm == 0:
            slabs = slabs[1:]
            return mixture(slabs, 0)
        return mixture(slabs, 1)

    @property
    def e_hat(self) -> float:
        """GFlash e/mip of the sampling structure: 1/(1 + 0.007 (Z_abs - Z_act))."""
        return 1.0 / (1.0 + 0.007 * (material(self.absorber).z - material(self.active).z))


@dataclass(frozen=True)
class Section:
    """A stack of layers sharing one cell grid (an ECAL, an HCAL...).

    ``stochastic_term`` is the EM sampling term a [sqrt(GeV)] the simulation is tuned to
    (a beam-test measurement where one exists); ``e_over_h`` the hadronic non-compensation.
    ``notes`` says where each number comes from and which are guesses.
    """

    name: str
    layers: tuple[Layer, ...]
    grid: Grid
    stochastic_term: float
    e_over_h: float = 1.3
    gap_before_mm: float = 0.0
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.layers:
            raise GeometryError(f"section {self.name!r} has no layers")
        if not 0 < self.stochastic_term < 2:
            raise GeometryError(f"section {self.name!r}: stochastic_term must be in (0, 2)")


@dataclass(frozen=True)
class Geometry:
    """A detector: named sections in beam order."""

    name: str
    description: str
    sections: tuple[Section, ...]
    source: str = ""
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.sections:
            raise GeometryError(f"geometry {self.name!r} has no sections")
        if len(self.sections) > 1 << CELLID_FIELDS["section"][1]:
            raise GeometryError(f"geometry {self.name!r} has too many sections")
        if self.n_layers > 1 << CELLID_FIELDS["layer"][1]:
            raise GeometryError(f"geometry {self.name!r} has too many layers")

    # ---- identity -------------------------------------------------------------------
    @cached_property
    def hash(self) -> str:
        """A stable 16-hex-digit hash of the definition (not of the notes or description)."""
        definition = [
            {k: v for k, v in asdict(s).items() if k != "notes"}
            | {"grid_type": type(s.grid).__name__}
            for s in self.sections
        ]
        text = json.dumps(definition, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # ---- layers ---------------------------------------------------------------------
    @cached_property
    def layers(self) -> tuple[Layer, ...]:
        return tuple(layer for s in self.sections for layer in s.layers)

    @property
    def n_layers(self) -> int:
        return sum(len(s.layers) for s in self.sections)

    @cached_property
    def layer_section(self) -> IntArray:
        """Section index of every global layer."""
        return np.repeat(np.arange(len(self.sections)), [len(s.layers) for s in self.sections])

    @cached_property
    def _z_front(self) -> FloatArray:
        z, fronts = 0.0, []
        for s in self.sections:
            z += s.gap_before_mm
            for layer in s.layers:
                fronts.append(z)
                z += layer.thickness_mm
        return np.array(fronts)

    @cached_property
    def layer_z(self) -> FloatArray:
        """z of the centre of each active slab [mm] from the detector front."""
        offset = np.array([la.absorber_mm + 0.5 * la.active_mm for la in self.layers])
        return self._z_front + offset

    def _cumulative(self, per_layer: FloatArray) -> tuple[FloatArray, FloatArray]:
        end = np.cumsum(per_layer)
        return end - per_layer, end

    @cached_property
    def layer_depth_x0(self) -> tuple[FloatArray, FloatArray]:
        """(start, end) of each layer in radiation lengths from the front (gaps between
        sections are air and neglected)."""
        return self._cumulative(np.array([la.thickness_mm / la.medium.x0_mm for la in self.layers]))

    @cached_property
    def layer_depth_lambda(self) -> tuple[FloatArray, FloatArray]:
        """(start, end) of each layer in nuclear interaction lengths from the front."""
        return self._cumulative(
            np.array([la.thickness_mm / la.medium.lambda_i_mm for la in self.layers])
        )

    def layer_property(self, name: str) -> FloatArray:
        """A :class:`Mixture` property (or ``e_hat``) for every layer, as an array."""
        if name == "e_hat":
            return np.array([la.e_hat for la in self.layers])
        return np.array([getattr(la.medium, name) for la in self.layers])

    def mip_mpv_mev(self, beta_gamma: float) -> FloatArray:
        """Most probable MIP deposit in each active slab [MeV]."""
        return np.array(
            [landau_mpv_mev(material(la.active), la.active_mm, beta_gamma) for la in self.layers]
        )

    def landau_width_mev(self) -> FloatArray:
        return np.array([landau_width_mev(material(la.active), la.active_mm) for la in self.layers])

    # ---- cells ----------------------------------------------------------------------
    @property
    def n_cells(self) -> int:
        return sum(len(s.layers) * s.grid.n_cells for s in self.sections)

    def grid(self, section: int) -> Grid:
        return self.sections[section].grid

    def cell_of(
        self, layer: IntArray, x: FloatArray, y: FloatArray
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]]:
        """Cell ids of positions in the given global layers and whether they are inside."""
        layer = np.asarray(layer, dtype=np.int64)
        x, y = np.asarray(x), np.asarray(y)
        i = np.zeros(layer.shape, np.int64)
        j = np.zeros(layer.shape, np.int64)
        inside = np.zeros(layer.shape, bool)
        section = self.layer_section[layer]
        for k, s in enumerate(self.sections):
            sel = section == k
            if len(self.sections) == 1:
                sel = np.ones(layer.shape, bool)
            i[sel], j[sel], inside[sel] = s.grid.cell_of(x[sel], y[sel])
        return encode_cellid(section, layer, i, j), inside

    def centre(self, cellid: npt.ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(x, y, z) of cell centres [mm], z at the middle of the active slab."""
        section, layer, i, j = decode_cellid(cellid)
        x = np.zeros(layer.shape)
        y = np.zeros(layer.shape)
        for k, s in enumerate(self.sections):
            sel = section == k
            x[sel], y[sel] = s.grid.centre(i[sel], j[sel])
        return x, y, self.layer_z[layer]

    def cellids(self) -> npt.NDArray[np.uint64]:
        """Every cell id of the detector, layer by layer."""
        out = []
        for k, s in enumerate(self.sections):
            i, j = s.grid.cells()
            for layer in np.flatnonzero(self.layer_section == k):
                out.append(encode_cellid(k, layer, i, j))
        return np.concatenate(out)

    @cached_property
    def _index_table(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Dense lookup: per section (offset, first layer, n layers, i0, ni, j0, nj), and a
        flat table from (section, layer, i, j) in each section's bounding box to the
        position in :meth:`cellids` (-1 for boxes' corners that are not cells)."""
        rows, table, offset, position = [], [], 0, 0
        for k, s in enumerate(self.sections):
            i, j = s.grid.cells()
            layers = np.flatnonzero(self.layer_section == k)
            i0, j0 = int(i.min()), int(j.min())
            ni, nj = int(i.max()) - i0 + 1, int(j.max()) - j0 + 1
            box = np.full((len(layers), ni, nj), -1, np.int64)
            n = i.size
            box[:, i - i0, j - j0] = position + np.arange(len(layers))[:, None] * n + np.arange(n)
            rows.append((offset, int(layers[0]), len(layers), i0, ni, j0, nj))
            table.append(box.ravel())
            offset += box.size
            position += len(layers) * n
        return np.array(rows, np.int64), np.concatenate(table)

    def cell_index(self, cellid: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Position of each cell id in :meth:`cellids` (a dense index for per-cell tables);
        -1 for ids that name no cell of this geometry. One compiled pass over the ids (the
        calibrate and histogram processors call it on every hit)."""
        rows, table = self._index_table
        ids = np.ascontiguousarray(np.asarray(cellid, dtype=np.uint64).ravel())
        index = _cell_index(ids, rows, table, _FIELD_SHIFTS, _IJ_OFFSET, np.uint64(_UNUSED_BITS))
        return index.reshape(np.shape(cellid))

    @cached_property
    def cell_layer(self) -> IntArray:
        """Global layer of every cell, in :meth:`cellids` order."""
        return decode_cellid(self.cellids())[1]

    def validate_cellids(self, cellid: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """True for ids that name a cell of this geometry."""
        section, layer, i, j = decode_cellid(cellid)
        ok = np.array((layer < self.n_layers) & (section < len(self.sections)), dtype=bool)
        ok &= (np.asarray(cellid, dtype=np.uint64) & np.uint64(_UNUSED_BITS)) == 0
        ok &= self.layer_section[np.minimum(layer, self.n_layers - 1)] == section
        for k, s in enumerate(self.sections):
            sel = ok & (section == k)
            ok[sel] = s.grid.contains(i[sel], j[sel])
        return ok

    def summary(self) -> list[dict[str, object]]:
        """Derived per-section properties, for `calocoffea geometries` and reports."""
        rows = []
        start_x0, end_x0 = self.layer_depth_x0
        start_l, end_l = self.layer_depth_lambda
        for k, s in enumerate(self.sections):
            sel = np.flatnonzero(self.layer_section == k)
            first = s.layers[0].medium
            rows.append(
                {
                    "section": s.name,
                    "layers": len(s.layers),
                    "cells_per_layer": s.grid.n_cells,
                    "grid": type(s.grid).__name__,
                    "depth_x0": float(end_x0[sel[-1]] - start_x0[sel[0]]),
                    "depth_lambda_i": float(end_l[sel[-1]] - start_l[sel[0]]),
                    "x0_mm": first.x0_mm,
                    "moliere_radius_mm": first.moliere_radius_mm,
                    "critical_energy_mev": first.critical_energy,
                    "lambda_i_mm": first.lambda_i_mm,
                    "mip_sampling_fraction": first.mip_sampling_fraction,
                    "stochastic_term": s.stochastic_term,
                    "e_over_h": s.e_over_h,
                }
            )
        return rows


def encode_cellid(
    section: npt.ArrayLike, layer: npt.ArrayLike, i: npt.ArrayLike, j: npt.ArrayLike
) -> npt.NDArray[np.uint64]:
    """Pack (section, layer, i, j) into uint64 cell ids (vectorised)."""
    parts = {
        "section": section,
        "layer": layer,
        "i": np.asarray(i) + _IJ_OFFSET,
        "j": np.asarray(j) + _IJ_OFFSET,
    }
    out = np.zeros(np.broadcast(*parts.values()).shape, np.uint64)
    for name, value in parts.items():
        first, width = CELLID_FIELDS[name]
        v = np.asarray(value, dtype=np.int64)
        if np.any((v < 0) | (v >= 1 << width)):
            raise GeometryError(f"cell id field {name!r} out of its {width}-bit range")
        out |= v.astype(np.uint64) << np.uint64(first)
    return out


#: (shift, mask) of the section, layer, i and j fields of a cell id, for compiled code
_FIELD_SHIFTS = np.array(
    [(CELLID_FIELDS[n][0], (1 << CELLID_FIELDS[n][1]) - 1) for n in ("section", "layer", "i", "j")],
    dtype=np.uint64,
)


@numba.njit(cache=True)
def _cell_index(ids, rows, table, fields, ij_offset, unused):
    """Geometry.cell_index on a flat uint64 array: decode, bounds-check, look up."""
    s0, m0, s1, m1 = fields[0, 0], fields[0, 1], fields[1, 0], fields[1, 1]
    s2, m2, s3, m3 = fields[2, 0], fields[2, 1], fields[3, 0], fields[3, 1]
    out = np.empty(ids.size, np.int64)
    n_sections = rows.shape[0]
    for h in range(ids.size):
        c = ids[h]
        section = np.int64((c >> s0) & m0)
        layer = np.int64((c >> s1) & m1)
        i = np.int64((c >> s2) & m2) - ij_offset
        j = np.int64((c >> s3) & m3) - ij_offset
        out[h] = -1
        if section >= n_sections or c & unused:
            continue
        offset, first, n_layers, i0, ni, j0, nj = rows[section]
        layer -= first
        i -= i0
        j -= j0
        if 0 <= layer < n_layers and 0 <= i < ni and 0 <= j < nj:
            out[h] = table[offset + (layer * ni + i) * nj + j]
    return out


def decode_cellid(cellid: npt.ArrayLike) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """Unpack uint64 cell ids into (section, layer, i, j)."""
    c = np.asarray(cellid, dtype=np.uint64)

    def field_(name: str) -> IntArray:
        first, width = CELLID_FIELDS[name]
        return ((c >> np.uint64(first)) & np.uint64((1 << width) - 1)).astype(np.int64)

    return field_("section"), field_("layer"), field_("i") - _IJ_OFFSET, field_("j") - _IJ_OFFSET


def get_geometry(name: str | Geometry) -> Geometry:
    """A geometry by registered name (a Geometry passes through)."""
    if isinstance(name, Geometry):
        return name
    factory = registry.load("geometries", name)
    geometry = factory()
    if not isinstance(geometry, Geometry):
        raise GeometryError(
            f"geometry plugin {name!r} returned {type(geometry).__name__}, not a Geometry"
        )
    return geometry


def geometry_names() -> list[str]:
    return registry.names("geometries")


__all__ = [
    "CELLID_FIELDS",
    "Geometry",
    "HexGrid",
    "Layer",
    "Section",
    "SquareGrid",
    "decode_cellid",
    "encode_cellid",
    "geometry_names",
    "get_geometry",
]
