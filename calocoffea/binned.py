"""Binned calibration constants C(layer, ring, theta, S) of Calibr-A-Ton (seed 003).

What to use when:

- :class:`CalibratonBinning` -- the binning of seed 003 §3.4: quantile edges in ring
  (fiducial rings only), theta and cell energy S, and for each S bin its own layer edges with
  equal cell populations (eq. 6). :meth:`~CalibratonBinning.from_hits` builds it from a sample
  of hits, :meth:`~CalibratonBinning.index` gives the flat bin of each hit.
- :class:`BinnedConstants` -- the learned factors with their binning: a
  :class:`~calocoffea.constants.Constants` (provenance, geometry hash, the per-layer tables
  ``absorber_correction`` and ``threshold_mev``) that adds :meth:`~BinnedConstants.evaluate`
  and writes the factors as one correctionlib correction (``calibraton``: binning nodes and
  one MultiBinning per S bin) beside the tables; read it back with :func:`load_binned`.
- :func:`default_fiducial_rings` -- which rings are calibrated (the others keep factor 1).

The binning (seed 003 §3.4, with the seed's numbers for HGCAL's EE):

- the calorimeter's first section is the electromagnetic part: its hits are binned in
  (layer ℓ, ring r, theta θ, S) with 12, 8, 6, 12 bins. S is the cell energy [GeV] after the
  absorber correction; only hits above threshold enter (seed: E_thr = 14.91 keV).
- ring, theta and S edges are quantiles of the fiducial hits, so every bin holds about the
  same number of hits; layer edges depend on the S bin (eq. 6): for each S bin, the layer
  edges give equal populations of that bin's hits.
- cells outside the fiducial rings (r > 26 of 35 for HGCAL) are not calibrated: factor 1.
- every later section (a hadronic section) is one bin set in S only (12 bins; the seed's
  ℓ_b = 27, r_b = 9, θ_b = 1 labels).

Flat bin index: ``((s_b * n_ℓ + ℓ_b) * n_r + r_b) * n_θ + θ_b`` for the electromagnetic
fiducial bins, then the hadronic S bins, then one slot for the fixed unit factor.
Layers are 0-based global layer numbers (the ``hit_layer`` branch); the seed counts from 1.

Per-cell constants: 0 bins asked for layer, ring or theta means one bin per value that the
geometry's fiducial cells take (every layer, every ring, every cell direction). With all three
0 and one S bin, each (layer, ring, θ) bin holds exactly one cell (a cell is fixed by its ring
and direction), so the same fit learns one constant per cell: how a per-cell miscalibration
is recovered from showers.

Integer variables (layer, ring) get half-integer edges. Where a variable has fewer distinct
values than bins asked (few showers, or a narrow distribution), coinciding quantiles are
merged: that dimension gets fewer bins (:attr:`CalibratonBinning.bins` says how many);
unused slots keep factor 1. Bins that no training hit reaches keep 1 too, and the fit
names them (:mod:`calocoffea.plugins.calibraton`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from calocoffea.constants import Constants, Provenance, Table
from calocoffea.exceptions import ConstantsError, FitError, GeometryMismatchError
from calocoffea.geometry import Geometry, get_geometry
from calocoffea.grids import HexGrid

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Edges = tuple[float, ...]

#: Bins in (layer, ring, theta, S) of seed 003 §3.4 (also the hadronic S bins).
SEED_BINS: tuple[int, int, int, int] = (12, 8, 6, 12)
#: Seed 003: the innermost 26 of HGCAL's 35 rings are calibrated.
SEED_FIDUCIAL_RINGS, SEED_RINGS = 26, 35
#: Seed 003's hit threshold E_thr [MeV]: about a tenth of a MIP in 320 um of silicon.
SEED_THRESHOLD_MEV = 0.01491
#: Name of the correctionlib correction that holds the factors.
CORRECTION_NAME = "calibraton"


def max_ring(geometry: Geometry) -> int:
    """Largest ring number of the first section (cellcoords' definition)."""
    from calocoffea.cellcoords import rings_and_angles

    ring, _ = rings_and_angles(geometry)
    first = geometry.layer_section[geometry.cell_layer] == 0
    return int(ring[first].max())


def default_fiducial_rings(geometry: Geometry) -> int:
    """Rings 1..n calibrated by default: the seed's 26 for a 35-ring hexagonal grid; for
    other grids the same fraction of the rings, rounded down (26/35 of them: the outer
    quarter of the face is where showers leak sideways; 6 of the 9 square rings of the
    18 x 18 CEPC AHCAL)."""
    grid = geometry.sections[0].grid
    if isinstance(grid, HexGrid) and grid.rings == SEED_RINGS:
        return SEED_FIDUCIAL_RINGS
    return max(1, math.floor(max_ring(geometry) * SEED_FIDUCIAL_RINGS / SEED_RINGS))


def quantile_edges(values: npt.ArrayLike, n_bins: int, low: float, high: float) -> FloatArray:
    """Edges of at most ``n_bins`` bins holding about equal numbers of ``values``.

    Inner edges sit half-way between neighbouring distinct values (so no value lies on an
    edge and integer variables get half-integer edges), each at the candidate whose
    cumulative fraction is closest to k / n_bins, kept strictly increasing; with fewer
    distinct values than bins, every gap is an edge (the bins are merged). Outer edges are
    ``low`` and ``high`` (widened to the values' range). Edges are rounded to 12 significant
    digits: correctionlib's JSON reader rounds some longer decimals one ulp away from
    Python's, which would move a value lying exactly on an edge into the other bin."""
    edges = _quantile_edges(values, n_bins, low, high)
    return np.unique(np.array([float(f"{e:.12g}") for e in edges.tolist()]))


def _quantile_edges(values: npt.ArrayLike, n_bins: int, low: float, high: float) -> FloatArray:
    """:func:`quantile_edges` before rounding."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.array([low, high], dtype=np.float64)
    unique, counts = np.unique(v, return_counts=True)
    low, high = min(low, float(unique[0])), max(high, float(unique[-1]))
    candidates = 0.5 * (unique[:-1] + unique[1:])
    k = candidates.size
    if k == 0 or n_bins == 1:
        return np.array([low, high], dtype=np.float64)
    if k <= n_bins - 1:
        return np.concatenate(([low], candidates, [high]))
    fraction = np.cumsum(counts)[:-1] / v.size
    targets = np.arange(1, n_bins) / n_bins
    pos = np.clip(np.searchsorted(fraction, targets), 1, k - 1)
    below = np.abs(fraction[pos - 1] - targets) <= np.abs(fraction[pos] - targets)
    pick = np.where(below, pos - 1, pos)
    n_inner = n_bins - 1
    for j in range(1, n_inner):  # strictly increasing, room left for the rest
        pick[j] = max(pick[j], pick[j - 1] + 1)
    for j in range(n_inner - 1, -1, -1):
        pick[j] = min(pick[j], k - (n_inner - j))
        if j + 1 < n_inner:
            pick[j] = min(pick[j], pick[j + 1] - 1)
    return np.concatenate(([low], candidates[pick], [high]))


def _bin_of(edges: Edges | FloatArray, x: npt.ArrayLike) -> IntArray:
    """Bin of ``x`` with edges[i] <= x < edges[i+1], values outside clamped (correctionlib's
    ``flow: clamp``)."""
    e = np.asarray(edges, dtype=np.float64)
    return np.clip(np.searchsorted(e[1:-1], x, side="right"), 0, e.size - 2).astype(np.int64)


@dataclass(frozen=True)
class CalibratonBinning:
    """Seed 003's binning for one geometry (see the module docstring)."""

    n_em_layers: int
    n_layers: int
    fiducial_rings: int
    s_edges: Edges
    layer_edges: tuple[Edges, ...]
    ring_edges: Edges
    theta_edges: Edges
    hadronic_s_edges: Edges = ()
    requested: tuple[int, int, int, int] = SEED_BINS

    def __post_init__(self) -> None:
        if len(self.layer_edges) != len(self.s_edges) - 1:
            raise ConstantsError(
                f"binning has {len(self.s_edges) - 1} S bins but {len(self.layer_edges)} "
                "sets of layer edges; eq. 6 needs one per S bin"
            )
        for name in ("s_edges", "ring_edges", "theta_edges"):
            edges = np.asarray(getattr(self, name))
            if edges.size < 2 or np.any(np.diff(edges) <= 0):
                raise ConstantsError(f"binning {name} must increase strictly, got {edges}")

    # ---- sizes --------------------------------------------------------------------
    @property
    def n_s(self) -> int:
        return len(self.s_edges) - 1

    @property
    def n_layer_slots(self) -> int:
        """Layer bins per S bin in the flat index (the most any S bin has)."""
        return max(len(e) - 1 for e in self.layer_edges)

    @property
    def n_ring(self) -> int:
        return len(self.ring_edges) - 1

    @property
    def n_theta(self) -> int:
        return len(self.theta_edges) - 1

    @property
    def n_hadronic(self) -> int:
        return max(len(self.hadronic_s_edges) - 1, 0)

    @property
    def n_em_bins(self) -> int:
        return self.n_s * self.n_layer_slots * self.n_ring * self.n_theta

    @property
    def n_bins(self) -> int:
        """Trainable factors (electromagnetic, then hadronic); the unit slot is extra."""
        return self.n_em_bins + self.n_hadronic

    @property
    def unit_index(self) -> int:
        """Flat index of hits whose factor is fixed to 1 (outside the fiducial rings)."""
        return self.n_bins

    @property
    def bins(self) -> dict[str, Any]:
        """Bins actually used per dimension (fewer than asked where quantiles merged)."""
        return {
            "layer": [len(e) - 1 for e in self.layer_edges],
            "ring": self.n_ring,
            "theta": self.n_theta,
            "s": self.n_s,
            "hadronic_s": self.n_hadronic,
            "requested": list(self.requested),
            "factors": self.n_bins,
        }

    @cached_property
    def _layer_table(self) -> IntArray:
        """Layer bin of every electromagnetic layer, per S bin: [s_b, layer]."""
        layers = np.arange(self.n_em_layers)
        return np.stack([_bin_of(edges, layers) for edges in self.layer_edges])

    @cached_property
    def _ring_table(self) -> IntArray:
        """Ring bin of rings 0..fiducial (ring 0 does not exist: -1)."""
        rings = np.arange(self.fiducial_rings + 1)
        table = _bin_of(self.ring_edges, rings)
        table[0] = -1
        return table

    # ---- indices ------------------------------------------------------------------
    def index(
        self, layer: npt.ArrayLike, ring: npt.ArrayLike, theta: npt.ArrayLike, s: npt.ArrayLike
    ) -> IntArray:
        """Flat bin of each hit (layer: global, 0-based; ring: 1 = central; theta [rad];
        S [GeV]); :attr:`unit_index` for hits outside the fiducial rings."""
        layer = np.asarray(layer, dtype=np.int64)
        ring = np.asarray(ring, dtype=np.int64)
        s = np.asarray(s, dtype=np.float64)
        s_b = _bin_of(self.s_edges, s)
        l_b = self._layer_table[s_b, np.clip(layer, 0, self.n_em_layers - 1)]
        fiducial = (ring >= 1) & (ring <= self.fiducial_rings)
        r_b = self._ring_table[np.clip(ring, 0, self.fiducial_rings)]
        t_b = _bin_of(self.theta_edges, theta)
        flat = ((s_b * self.n_layer_slots + l_b) * self.n_ring + r_b) * self.n_theta + t_b
        flat = np.where(fiducial, flat, self.unit_index)
        if self.n_hadronic:
            hadronic = layer >= self.n_em_layers
            h_b = self.n_em_bins + _bin_of(self.hadronic_s_edges, s)
            flat = np.where(hadronic, h_b, flat)
        return flat

    def labels(self, flat: npt.ArrayLike) -> list[dict[str, int]]:
        """Readable bin labels (``s``, ``layer``, ``ring``, ``theta`` bin numbers from 0,
        or ``hadronic_s``) of flat indices."""
        out: list[dict[str, int]] = []
        for f in np.asarray(flat, dtype=np.int64).tolist():
            if f >= self.n_em_bins:
                out.append({"hadronic_s": f - self.n_em_bins})
                continue
            rest, t = divmod(f, self.n_theta)
            rest, r = divmod(rest, self.n_ring)
            s, lay = divmod(rest, self.n_layer_slots)
            out.append({"s": s, "layer": lay, "ring": r, "theta": t})
        return out

    def used_slots(self) -> npt.NDArray[np.bool_]:
        """True for flat indices that a bin maps to (the others are padding of S bins whose
        layer bins merged)."""
        used = np.zeros(self.n_bins, dtype=bool)
        per_s = self.n_layer_slots * self.n_ring * self.n_theta
        block = self.n_ring * self.n_theta
        for s, edges in enumerate(self.layer_edges):
            used[s * per_s : s * per_s + (len(edges) - 1) * block] = True
        used[self.n_em_bins :] = True
        return used

    def reachable(
        self, layer: npt.ArrayLike, ring: npt.ArrayLike, theta: npt.ArrayLike
    ) -> npt.NDArray[np.bool_]:
        """True for flat indices that a cell of these (layer, ring, theta) reaches at some
        cell energy: with fine bins, most (ring, theta) pairs hold no cell at all."""
        layer, ring, theta = (np.asarray(v) for v in (layer, ring, theta))
        edges = np.asarray(self.s_edges)
        centres = 0.5 * (edges[:-1] + edges[1:])
        if self.n_hadronic:
            h = np.asarray(self.hadronic_s_edges)
            centres = np.concatenate((centres, 0.5 * (h[:-1] + h[1:])))
        out = np.zeros(self.n_bins + 1, dtype=bool)
        for s in centres:
            out[self.index(layer, ring, theta, np.full(layer.size, s))] = True
        return out[: self.n_bins]

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_hits(
        cls,
        layer: npt.ArrayLike,
        ring: npt.ArrayLike,
        theta: npt.ArrayLike,
        s: npt.ArrayLike,
        *,
        n_em_layers: int,
        n_layers: int,
        fiducial_rings: int,
        bins: tuple[int, int, int, int] = SEED_BINS,
        cell_theta: npt.ArrayLike | None = None,
    ) -> CalibratonBinning:
        """The binning from a sample of hits above threshold (S [GeV]).

        A 0 in ``bins`` for layer, ring or theta asks for one bin per value the fiducial
        cells take (module docstring); theta then needs ``cell_theta``, the directions of
        the fiducial cells of the first section."""
        if min(bins) < 0 or bins[3] < 1:
            raise ValueError(
                f"bins (layer, ring, theta, S) must be at least 1 (0 for layer, ring and theta: "
                f"one bin per cell value), got {bins}"
            )
        n_l, n_r, n_t, n_s = bins
        if n_t == 0 and cell_theta is None:
            raise ValueError("theta bins 0 (one per cell direction) needs cell_theta")
        layer = np.asarray(layer, dtype=np.int64)
        ring = np.asarray(ring, dtype=np.int64)
        theta = np.asarray(theta, dtype=np.float64)
        s = np.asarray(s, dtype=np.float64)
        em = layer < n_em_layers
        fiducial = em & (ring >= 1) & (ring <= fiducial_rings)
        if not np.any(fiducial):
            raise FitError(
                f"no hit above threshold lies in the fiducial rings 1..{fiducial_rings} of the "
                "electromagnetic section: nothing to bin; check the beam position, the "
                "threshold and fiducial_rings"
            )
        s_fid = s[fiducial]
        s_edges = quantile_edges(s_fid, n_s, 0.0, float(s_fid.max()))
        s_b = _bin_of(s_edges, s_fid)
        layer_fid = layer[fiducial]
        every_layer = tuple(np.arange(n_em_layers + 1) - 0.5)
        layer_edges = tuple(
            tuple(quantile_edges(layer_fid[s_b == b], n_l, -0.5, n_em_layers - 0.5).tolist())
            if n_l
            else every_layer
            for b in range(s_edges.size - 1)
        )
        ring_edges = (
            quantile_edges(ring[fiducial], n_r, 0.5, fiducial_rings + 0.5)
            if n_r
            else np.arange(fiducial_rings + 1) + 0.5
        )
        if n_t:
            theta_edges = quantile_edges(theta[fiducial], n_t, 0.0, 2.0 * math.pi)
        else:
            directions = np.unique(np.asarray(cell_theta, dtype=np.float64))
            theta_edges = quantile_edges(directions, directions.size, 0.0, 2.0 * math.pi)
        hadronic_edges: Edges = ()
        if n_layers > n_em_layers:
            s_had = s[~em]
            top = float(s_had.max()) if s_had.size else float(s_edges[-1])
            hadronic_edges = tuple(quantile_edges(s_had, n_s, 0.0, top).tolist())
        return cls(
            n_em_layers=int(n_em_layers),
            n_layers=int(n_layers),
            fiducial_rings=int(fiducial_rings),
            s_edges=tuple(s_edges.tolist()),
            layer_edges=layer_edges,
            ring_edges=tuple(ring_edges.tolist()),
            theta_edges=tuple(theta_edges.tolist()),
            hadronic_s_edges=hadronic_edges,
            requested=(int(n_l), int(n_r), int(n_t), int(n_s)),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalibratonBinning:
        return cls(
            n_em_layers=int(data["n_em_layers"]),
            n_layers=int(data["n_layers"]),
            fiducial_rings=int(data["fiducial_rings"]),
            s_edges=tuple(data["s_edges"]),
            layer_edges=tuple(tuple(e) for e in data["layer_edges"]),
            ring_edges=tuple(data["ring_edges"]),
            theta_edges=tuple(data["theta_edges"]),
            hadronic_s_edges=tuple(data.get("hadronic_s_edges", ())),
            requested=tuple(data.get("requested", SEED_BINS)),
        )


# ------------------------------------------------------------------------------ constants


def layer_tables(
    geometry: Geometry, absorber_correction: float, threshold_mev: float
) -> dict[str, Table]:
    """The per-layer tables every seed 003 method carries: ``absorber_correction`` (S [GeV]
    = A x E [MeV] / 1000, the same A in every layer) and ``threshold_mev`` (hits at or below
    it are not used)."""
    keys = np.arange(geometry.n_layers, dtype=np.int64)
    zeros = np.zeros(keys.size)
    return {
        "absorber_correction": Table(
            "layer", keys, np.full(keys.size, float(absorber_correction)), zeros, "1"
        ),
        "threshold_mev": Table(
            "layer", keys, np.full(keys.size, float(threshold_mev)), zeros, "MeV"
        ),
    }


@dataclass(frozen=True, eq=False, kw_only=True)
class BinnedConstants(Constants):
    """Calibr-A-Ton factors C(ℓ, r, θ, S) with their binning and provenance.

    ``factors`` has one value per flat bin (:attr:`CalibratonBinning.n_bins`); the tables
    (per layer) hold the absorber correction and the hit threshold used in the fit."""

    binning: CalibratonBinning
    factors: FloatArray

    def __post_init__(self) -> None:
        factors = np.asarray(self.factors, dtype=np.float64)
        if factors.shape != (self.binning.n_bins,):
            raise ConstantsError(
                f"{factors.size} factors for a binning of {self.binning.n_bins} bins"
            )
        if not np.all(np.isfinite(factors)):
            raise ConstantsError("Calibr-A-Ton factors must be finite")
        object.__setattr__(self, "factors", factors)

    # ---- evaluation ----------------------------------------------------------------
    def evaluate(
        self, layer: npt.ArrayLike, ring: npt.ArrayLike, theta: npt.ArrayLike, s: npt.ArrayLike
    ) -> FloatArray:
        """The factor of each hit (S [GeV] after the absorber correction); 1 outside the
        fiducial rings."""
        table = np.append(self.factors, 1.0)
        return table[self.binning.index(layer, ring, theta, s)]

    def cell_factors(self, geometry: str | Geometry, s_gev: float) -> FloatArray:
        """The factor of every cell (``Geometry.cellids()`` order) for a hit of cell energy
        ``s_gev`` [GeV]: with per-cell bins and one S bin, the per-cell constants."""
        from calocoffea.cellcoords import rings_and_angles

        geometry = get_geometry(geometry)
        self.check_geometry(geometry, "the geometry asked for")
        ring, theta = rings_and_angles(geometry)
        layer = geometry.cell_layer
        return self.evaluate(layer, ring, theta, np.full(layer.size, float(s_gev)))

    def layer_value(self, name: str) -> FloatArray:
        """A per-layer table as an array indexed by layer."""
        table = self._table(name, "layer")
        values = np.full(self.binning.n_layers, np.nan)
        values[table.keys] = table.values
        return values

    # ---- correctionlib ------------------------------------------------------------
    def correction(self) -> dict[str, Any]:
        """The factors as one correctionlib correction: inputs layer (int), ring (int),
        theta (real, rad), S (real, GeV)."""
        b = self.binning
        values = self.factors
        per_s = b.n_layer_slots * b.n_ring * b.n_theta
        fiducial_content = []
        for s, layer_edges in enumerate(b.layer_edges):
            n = (len(layer_edges) - 1) * b.n_ring * b.n_theta
            fiducial_content.append(
                {
                    "nodetype": "multibinning",
                    "inputs": ["layer", "ring", "theta"],
                    "edges": [list(layer_edges), list(b.ring_edges), list(b.theta_edges)],
                    "content": values[s * per_s : s * per_s + n].tolist(),
                    "flow": "clamp",
                }
            )
        fiducial = {"nodetype": "binning", "input": "S", "edges": list(b.s_edges),
                    "content": fiducial_content, "flow": "clamp"}  # fmt: skip
        outer = max(b.fiducial_rings + 1, _MAX_RING) + 0.5
        em: dict[str, Any] = {
            "nodetype": "binning",
            "input": "ring",
            "edges": [0.5, b.fiducial_rings + 0.5, outer],
            "content": [fiducial, 1.0],
            "flow": 1.0,
        }
        data = em
        if b.n_hadronic:
            hadronic = {"nodetype": "binning", "input": "S", "edges": list(b.hadronic_s_edges),
                        "content": values[b.n_em_bins :].tolist(), "flow": "clamp"}  # fmt: skip
            data = {
                "nodetype": "binning",
                "input": "layer",
                "edges": [-0.5, b.n_em_layers - 0.5, b.n_layers - 0.5],
                "content": [em, hadronic],
                "flow": "clamp",
            }
        description = json.dumps({"binning": b.to_dict()}, separators=(",", ":"))
        return {
            "name": CORRECTION_NAME,
            "description": description,
            "version": 1,
            "inputs": [
                {"name": "layer", "type": "int", "description": "hit_layer (0-based)"},
                {"name": "ring", "type": "int", "description": "ring, 1 = central cell"},
                {"name": "theta", "type": "real", "description": "polar angle in (x, y) [rad]"},
                {"name": "S", "type": "real", "description": "absorber-corrected energy [GeV]"},
            ],
            "output": {"name": "factor", "type": "real", "description": "1"},
            "data": data,
        }

    def to_correctionlib(self) -> dict[str, Any]:
        payload = super().to_correctionlib()
        payload["corrections"].append(self.correction())
        return payload

    def correction_set(self) -> Any:
        """A correctionlib ``CorrectionSet`` of these constants (C++ evaluator)."""
        import correctionlib

        return correctionlib.CorrectionSet.from_string(json.dumps(self.to_correctionlib()))


#: A ring number beyond any grid (end of the unit-factor range; rings past it are flow: 1).
_MAX_RING = 4096


def _factors_from(correction: dict[str, Any], binning: CalibratonBinning) -> FloatArray:
    """Read the factors back from the nodes :meth:`BinnedConstants.correction` writes."""
    data = correction["data"]
    factors = np.ones(binning.n_bins)
    if binning.n_hadronic:
        em, hadronic = data["content"]
        factors[binning.n_em_bins :] = hadronic["content"]
    else:
        em = data
    per_s = binning.n_layer_slots * binning.n_ring * binning.n_theta
    for s, node in enumerate(em["content"][0]["content"]):
        content = node["content"]
        factors[s * per_s : s * per_s + len(content)] = content
    return factors


def load_binned(
    path: str | os.PathLike[str], geometry: str | Geometry | None = None
) -> BinnedConstants:
    """Read :class:`BinnedConstants` written by their ``save``; with ``geometry``, refuse
    constants made for another one (:class:`~calocoffea.exceptions.GeometryMismatchError`)."""
    from calocoffea.constants import _read_correction, read_payload

    try:
        corrections, provenance, made_for = read_payload(path)
        if CORRECTION_NAME not in corrections:
            raise ValueError(
                f"it has no correction {CORRECTION_NAME!r} (it has {', '.join(corrections)}); "
                "read per-cell or per-layer constants with calocoffea.constants.load_constants"
            )
        binned = corrections.pop(CORRECTION_NAME)
        binning = CalibratonBinning.from_dict(json.loads(binned["description"])["binning"])
        tables = {name: _read_correction(c, made_for) for name, c in corrections.items()}
        constants = BinnedConstants(
            tables=tables,
            provenance=Provenance(**provenance),
            binning=binning,
            factors=_factors_from(binned, binning),
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        if isinstance(err, GeometryMismatchError | ConstantsError):
            raise
        raise ConstantsError(f"cannot read Calibr-A-Ton constants from {path}: {err}") from err
    if geometry is not None:
        constants.check_geometry(get_geometry(geometry), f"the geometry {geometry!r}")
    return constants


__all__ = [
    "CORRECTION_NAME",
    "SEED_BINS",
    "SEED_FIDUCIAL_RINGS",
    "SEED_THRESHOLD_MEV",
    "BinnedConstants",
    "CalibratonBinning",
    "default_fiducial_rings",
    "layer_tables",
    "load_binned",
    "max_ring",
    "quantile_edges",
]
