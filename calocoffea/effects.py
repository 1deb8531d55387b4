"""Detector effects for pseudo-data: biases, miscalibration, noise, zero suppression, dead cells.

What to use when:

- :class:`Effects` -- what to apply (every field validated, every default "off"); its
  :meth:`Effects.cell_factors` gives the per-cell truth (miscalibration C, position bias,
  dead cells) that a calibration must recover, in ``Geometry.cellids()`` order.
- :func:`apply_effects_files` -- the job: simulated files (stage ``sim``, MeV) to one file
  of pseudo-data (stage ``sim``, MeV), with the truth kept in the hit field ``edep``.
- :func:`apply_effects` -- the same on flat hit arrays (what the processor calls per chunk);
  returns :class:`Applied`.
- :func:`seed003_bias`, :func:`f_layer`, :func:`f_ring`, :func:`f_energy` -- the bias
  functions of seed 003; :func:`beta22_cdf`, :func:`beta22_ppf` -- the Beta(2,2) law of seed 002.

The model, for the energy E [MeV] of cell i in event j (seed 002 eq. 1.1, with the bias of
seed 003 eq. 7-9 multiplying the raw cell energy first)::

    Ẽ_ij = C_i · F_ℓ(ℓ_i) · F_r(r_i) · F_S(S_ij) · E_ij + b + ε_ij

- C_i = s_c (2 B - 1) + 1, B ~ Beta(2, 2), drawn once per cell (seed 002 eq. 1.2): values in
  [1 - s_c, 1 + s_c], mean 1, variance s_c² / 5 (Beta(2,2) has variance 1/20).
- ε_ij = s_ε (2 B - 1), drawn per cell and event (seed 002 eq. 1.3): in [-s_ε, s_ε].
- b: a global bias [MeV] (seed 002; Table 1 scans b = ±0.15 MeV, s_ε up to 1.5 MeV,
  s_c up to 0.3).
- F_ℓ(ℓ) = 1 for ℓ = 1, 1.3 + 0.025 (ℓ - 2) for ℓ ≥ 2 (seed 003 eq. 7); ℓ = 1 is the front
  layer (calocoffea's global layer + 1).
- F_r(r) = 0.9 for r < 15, 1.1 for r ≥ 15 (eq. 8); r from :func:`calocoffea.cellcoords.
  rings_and_angles` (1 = the central cell).
- F_S(S) = 0.6 + 0.4 / (1 + exp(-10 S)) (eq. 9), S the cell energy in GeV *after the absorber
  correction*: S = E · A_ℓ / 1000. By default A_ℓ = 1 / (f_mip(ℓ) · ê(ℓ)), the EM sampling
  weight of the cell's layer, the same as :func:`calocoffea.showershape.sampling_corrected_sum`
  and what the fast simulation's response follows (about 93 for ``hgcal_ee``; seed 003 measured
  75.9 for its Geant4 detector: give ``absorber_correction=75.9`` to use that number).
- Dead cells read nothing: their hits are removed (counted) and they never get noise.
- Zero suppression keeps Ẽ > threshold (seed 002: 0.6 MeV, about one MIP in its silicon).

Noise and bias act on every cell, empty ones too, but empty cells are never materialised:
per event (and sub-module, with correlation) the number of empty cells that pass the threshold
is drawn from a binomial with p = P(b + ε > thr) = 1 - F_B((1 + (thr - b) / s_ε) / 2), F_B the
Beta(2,2) CDF 3x² - 2x³; which cells is drawn uniformly among that event's empty live cells
(Floyd's sampling, O(k) per event), their values from the law of b + ε truncated above thr
(inverse CDF; the Beta(2,2) quantile is 1/2 + sin(arcsin(2u - 1) / 3)). This is exact and costs
O(noise hits), so ``cusi_module`` (187,500 cells) stays fast. Without zero suppression, noise
on empty cells would create every cell of the detector in every event: then noise and bias act
on the cells that have a hit only (documented choice, not an approximation of anything), and
readings may be negative. A threshold below the median of b + ε (p > 1/2) is refused: it would
not suppress, but fill the detector.

Sub-module correlation (seed 002 uses vine copulas): here a Gaussian copula per sub-module,
the simpler choice with the same Beta(2,2) marginals. Cells are grouped into blocks of
``submodule_cells = (layers, i, j)`` cells; the latent normal of a cell is
z = √ρ w_g + √(1 - ρ) n, with w_g shared by the sub-module (per event for ε, once for C),
then u = Φ(z) and B = F_B⁻¹(u). Cells of one sub-module are pairwise equicorrelated
(latent correlation ρ, Spearman (6/π) arcsin(ρ/2)), sub-modules are independent, and C and ε
are independent of each other. Vine copulas allow a different dependence per pair; one equal
correlation per sub-module captures "common electronics" with one parameter. Given w_g the
cells are independent, so the empty-cell sampling above runs per (event, sub-module) with the
conditional p(w_g); its cost grows with the number of sub-modules per event.

Random numbers all come from :mod:`calocoffea.rng`: per-cell constants are keyed by
(seed, cell), per-event values by (seed, file UUID, global entry, cell or sub-module, stream),
so the output does not depend on executor, workers or chunk size.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
import numpy.typing as npt
from scipy import special

from calocoffea import rng
from calocoffea.cellcoords import rings_and_angles
from calocoffea.exceptions import (
    GeometryError,
    InputFileError,
    SimulationConfigError,
    did_you_mean,
)
from calocoffea.geometry import Geometry, decode_cellid, get_geometry

if TYPE_CHECKING:
    from calocoffea.runner import RunOptions, RunResult

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
#: A custom bias: (layer ℓ [1 = front], ring r, theta [rad], S [GeV]) -> multiplicative factor.
BiasFunction = Callable[[IntArray, IntArray, FloatArray, FloatArray], npt.ArrayLike]

#: Named biases that metadata can store; a Python ``bias_function`` is recorded as "custom".
BIASES = ("none", "seed003")
#: Pairs (event, sub-module) handled at once when drawing empty-cell noise (bounds memory).
_BLOCK_PAIRS = 1 << 20
#: Random streams of the per-event draws (codes < 32, see :func:`calocoffea.rng.stream_keys`).
_STREAMS = {"noise": 1, "submodule": 2, "count": 3, "pick": 4, "value": 5}


# ------------------------------------------------------------------------ formulas


def beta22_cdf(x: npt.ArrayLike) -> FloatArray:
    """CDF of Beta(2, 2), 3x² - 2x³, clipped to [0, 1] outside (0, 1)."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def beta22_ppf(u: npt.ArrayLike) -> FloatArray:
    """Quantile of Beta(2, 2): 1/2 + sin(arcsin(2u - 1) / 3), the root of 3x² - 2x³ = u."""
    u = np.asarray(u, dtype=np.float64)
    return 0.5 + np.sin(np.arcsin(np.clip(2.0 * u - 1.0, -1.0, 1.0)) / 3.0)


def _scaled(u: FloatArray) -> FloatArray:
    """2 B - 1 in [-1, 1] for B = Beta(2,2) quantile of ``u`` (seed 002 eq. 1.2-1.3)."""
    return 2.0 * np.sin(np.arcsin(np.clip(2.0 * u - 1.0, -1.0, 1.0)) / 3.0)


def f_layer(layer: npt.ArrayLike) -> FloatArray:
    """Seed 003 eq. 7: 1 for ℓ = 1, 1.3 + 0.025 (ℓ - 2) for ℓ ≥ 2 (ℓ = 1 the front layer)."""
    layer = np.asarray(layer, dtype=np.float64)
    return np.where(layer <= 1, 1.0, 1.3 + 0.025 * (layer - 2.0))


def f_ring(ring: npt.ArrayLike) -> FloatArray:
    """Seed 003 eq. 8: 0.9 for r < 15, 1.1 for r ≥ 15 (r = 1 the central cell)."""
    return np.where(np.asarray(ring) < 15, 0.9, 1.1)


def f_energy(s_gev: npt.ArrayLike) -> FloatArray:
    """Seed 003 eq. 9: 0.6 + 0.4 / (1 + exp(-10 S)), S [GeV] after the absorber correction."""
    s = np.asarray(s_gev, dtype=np.float64)
    return 0.6 + 0.4 * special.expit(10.0 * s)


def seed003_bias(
    layer: npt.ArrayLike, ring: npt.ArrayLike, theta: npt.ArrayLike, s_gev: npt.ArrayLike
) -> FloatArray:
    """F_ℓ(ℓ) F_r(r) F_S(S) of seed 003 (theta is not used; it is in the signature of every
    :data:`BiasFunction`)."""
    return f_layer(layer) * f_ring(ring) * f_energy(s_gev)


# ------------------------------------------------------------------------ configuration


def _number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    below: float | None = None,
    above: float | None = None,
    hint: str = "",
) -> None:
    """SimulationConfigError unless ``value`` is a finite real in the stated range."""
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    ok = ok and math.isfinite(float(value))  # type: ignore[arg-type]
    v = float(value) if ok else math.nan  # type: ignore[arg-type]
    rules = []
    if low is not None:
        rules.append((v >= low, f">= {low:g}"))
    if above is not None:
        rules.append((v > above, f"> {above:g}"))
    if below is not None:
        rules.append((v < below, f"< {below:g}"))
    failed = [text for good, text in rules if not good]
    if not ok or failed:
        need = "".join(
            f" {text}" if k == 0 else f" and {text}" for k, (_, text) in enumerate(rules)
        )
        raise SimulationConfigError(
            f"Effects.{name} must be a finite number{need}, got {value!r}"
            + (f"; {hint}" if hint else "")
        )


@dataclass(frozen=True)
class Effects:
    """Detector effects applied to simulated cell energies (module docstring: the equations).

    Every default leaves the energies unchanged; a field set alone acts alone.
    """

    #: named bias of the cell response: "none" or "seed003" (eq. 7-9)
    bias: str = "none"
    #: a custom bias (layer ℓ, ring r, theta [rad], S [GeV]) -> factor, for Python use only:
    #: it cannot be stored in metadata, which records "custom"; for the futures and dask
    #: executors it must pickle (a module-level function)
    bias_function: BiasFunction | None = None
    #: S = E [MeV] x absorber_correction / 1000 [GeV] in eq. 9; None: 1 / (f_mip ê) per layer
    absorber_correction: float | None = None
    #: s_c of eq. 1.2: C in [1 - s_c, 1 + s_c], once per cell; in [0, 1)
    miscalibration: float = 0.0
    #: s_ε of eq. 1.3 [MeV]: ε in [-s_ε, s_ε], per cell and event
    noise_mev: float = 0.0
    #: b of eq. 1.1 [MeV], on every cell
    bias_mev: float = 0.0
    #: keep Ẽ > this [MeV]; None: no zero suppression (noise and bias then act on hits only)
    zero_suppression_mev: float | None = None
    #: sub-module size (layers, i, j) in cells, for ``correlation``
    submodule_cells: tuple[int, int, int] | None = None
    #: latent Gaussian-copula correlation of C and of ε within a sub-module, in [0, 1)
    correlation: float = 0.0
    #: fraction of dead cells, drawn once per cell; in [0, 1)
    dead_fraction: float = 0.0
    #: seed of every random number (per-cell constants and per-event noise)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.bias_function is not None:
            if not callable(self.bias_function):
                raise SimulationConfigError(
                    f"Effects.bias_function must be callable (layer, ring, theta, energy_gev) "
                    f"-> factor, got {type(self.bias_function).__name__}"
                )
            if self.bias not in ("none", "custom"):
                raise SimulationConfigError(
                    f"Effects got both bias={self.bias!r} and a bias_function; give one of them "
                    "(seed003_bias is the function of bias='seed003')"
                )
            object.__setattr__(self, "bias", "custom")
        elif self.bias not in BIASES:
            hint = (
                "; bias='custom' needs bias_function=..."
                if self.bias == "custom"
                else did_you_mean(self.bias, BIASES)
            )
            raise SimulationConfigError(
                f"unknown bias {self.bias!r}; choose one of {', '.join(BIASES)}{hint}"
            )
        if self.absorber_correction is not None:
            _number(
                "absorber_correction",
                self.absorber_correction,
                above=0.0,
                hint="or None for 1 / (f_mip e_hat) of each layer",
            )
        _number(
            "miscalibration",
            self.miscalibration,
            low=0.0,
            below=1.0,
            hint="s_c >= 1 would allow C <= 0 (seed 002 scans 0 to 0.3)",
        )
        _number("noise_mev", self.noise_mev, low=0.0)
        _number("bias_mev", self.bias_mev)
        if self.zero_suppression_mev is not None:
            _number(
                "zero_suppression_mev",
                self.zero_suppression_mev,
                low=0.0,
                hint="or None for no zero suppression (seed 002 uses 0.6 MeV)",
            )
        _number("dead_fraction", self.dead_fraction, low=0.0, below=1.0)
        _number(
            "correlation",
            self.correlation,
            low=0.0,
            below=1.0,
            hint="negative equicorrelation is impossible in large sub-modules",
        )
        self._check_submodules()
        if (
            not isinstance(self.seed, int | np.integer)
            or isinstance(self.seed, bool)
            or self.seed < 0
        ):
            raise SimulationConfigError(
                f"Effects.seed must be a non-negative integer, got {self.seed!r}"
            )
        p = self.pass_probability()
        if p > 0.5:
            raise SimulationConfigError(
                f"zero_suppression_mev={self.zero_suppression_mev} lies below the median of "
                f"bias + noise (b={self.bias_mev}, s_eps={self.noise_mev} MeV): {p:.0%} of the "
                "empty cells would pass it in every event, filling the detector instead of "
                "suppressing noise; raise the threshold above bias_mev or set it to None"
            )

    def _check_submodules(self) -> None:
        cells = self.submodule_cells
        if cells is not None:
            ok = isinstance(cells, tuple | list) and len(cells) == 3
            ok = ok and all(isinstance(n, int | np.integer) and n >= 1 for n in cells)
            if not ok:
                raise SimulationConfigError(
                    f"Effects.submodule_cells must be three positive integers (layers, i, j), "
                    f"got {cells!r}"
                )
            object.__setattr__(self, "submodule_cells", tuple(int(n) for n in cells))
        elif self.correlation > 0:
            raise SimulationConfigError(
                f"Effects.correlation={self.correlation} needs sub-modules to correlate within: "
                "give submodule_cells=(layers, i, j), e.g. (1, 10, 10)"
            )

    # ---- derived ---------------------------------------------------------------------
    @property
    def correlated(self) -> bool:
        """True when C and ε are correlated within sub-modules."""
        return self.correlation > 0 and self.submodule_cells is not None

    @property
    def noisy_empty_cells(self) -> bool:
        """True when empty cells can pass the zero suppression (and are drawn)."""
        return self.zero_suppression_mev is not None and self.pass_probability() > 0

    def pass_probability(self) -> float:
        """P(b + ε > threshold) of an empty cell; 0 without zero suppression."""
        if self.zero_suppression_mev is None:
            return 0.0
        return 1.0 - float(beta22_cdf(self._threshold_x()))

    def _threshold_x(self) -> float:
        """Where the threshold falls on the Beta(2,2) scale: b + s(2x - 1) = thr."""
        assert self.zero_suppression_mev is not None
        margin = self.zero_suppression_mev - self.bias_mev
        if self.noise_mev == 0:
            return 1.0 if margin >= 0 else 0.0
        return float(np.clip(0.5 * (1.0 + margin / self.noise_mev), 0.0, 1.0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (file metadata); a custom bias is recorded as "custom"."""

        def optional(value: float | None) -> float | None:
            return None if value is None else float(value)

        return {
            "bias": self.bias,
            "absorber_correction": optional(self.absorber_correction),
            "miscalibration": float(self.miscalibration),
            "noise_mev": float(self.noise_mev),
            "bias_mev": float(self.bias_mev),
            "zero_suppression_mev": optional(self.zero_suppression_mev),
            "submodule_cells": list(self.submodule_cells) if self.submodule_cells else None,
            "correlation": float(self.correlation),
            "dead_fraction": float(self.dead_fraction),
            "seed": int(self.seed),
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> Effects:
        """Effects from :meth:`to_dict`; a "custom" bias cannot be restored."""
        if payload.get("bias") == "custom":
            raise SimulationConfigError(
                "these effects used a custom Python bias function, which metadata cannot "
                "hold; rebuild Effects with the same bias_function"
            )
        values = dict(payload)
        if values.get("submodule_cells") is not None:
            values["submodule_cells"] = tuple(values["submodule_cells"])
        names = set(cls.__dataclass_fields__) - {"bias_function"}
        unknown = sorted(set(values) - names)
        if unknown:
            raise SimulationConfigError(
                f"unknown effects field(s) {unknown}; known: {sorted(names)}"
            )
        return cls(**values)

    def cell_factors(self, geometry: str | Geometry) -> dict[str, npt.NDArray[Any]]:
        """The per-cell truth, in ``geometry.cellids()`` order:

        - ``miscalibration``: C (eq. 1.2);
        - ``bias_layer_ring``: F_ℓ F_r (eq. 7-8; 1 without bias, NaN for a custom bias);
        - ``factor``: C F_ℓ F_r, the effective multiplicative factor of the cell (F_S, which
          depends on the deposit, is not in it; NaN for a custom bias);
        - ``absorber_correction``: A of the cell's layer (S = E A / 1000);
        - ``dead``: True for dead cells (they read nothing);
        - ``submodule``: sub-module index of the cell (0 everywhere without sub-modules).
        """
        t = _tables(self, get_geometry(geometry))
        return {
            "miscalibration": t.c.copy(),
            "bias_layer_ring": t.f_position.copy(),
            "factor": t.c * t.f_position,
            "absorber_correction": t.absorber.copy(),
            "dead": t.dead.copy(),
            "submodule": t.submodule.copy(),
        }


# ------------------------------------------------------------------------ per-cell tables


@dataclass(frozen=True, eq=False)
class _Tables:
    """Per-cell constants of one (effects, geometry), in cellids order."""

    c: FloatArray
    dead: npt.NDArray[np.bool_]
    f_position: FloatArray
    absorber: FloatArray
    layer: IntArray  # ℓ, 1 = front
    ring: IntArray
    theta: FloatArray
    submodule: IntArray
    #: noise groups: every live cell, by group then cell; group g is
    #: group_cells[group_start[g]:group_start[g + 1]]; position[cell] inside its group (-1 dead)
    group_of: IntArray
    group_cells: IntArray
    group_start: IntArray
    position: IntArray

    @property
    def n_groups(self) -> int:
        return self.group_start.size - 1


def _cell_keys(seed: int, name: str, index: IntArray) -> npt.NDArray[np.uint64]:
    return rng.event_keys(rng.file_key(seed, f"calocoffea.effects/{name}"), index)


def _submodules(geometry: Geometry, cells: tuple[int, int, int] | None) -> IntArray:
    """Sub-module index of every cell: blocks of (layers, i, j) cells per section."""
    n = geometry.n_cells
    if cells is None:
        return np.zeros(n, np.int64)
    section, layer, i, j = decode_cellid(geometry.cellids())
    firsts = [np.flatnonzero(geometry.layer_section == k)[0] for k in range(len(geometry.sections))]
    first_layer = np.asarray(firsts, dtype=np.int64)[section]
    block = np.zeros((4, n), np.int64)
    block[0] = section
    block[1] = (layer - first_layer) // cells[0]
    for k in range(len(geometry.sections)):
        sel = section == k
        block[2, sel] = (i[sel] - i[sel].min()) // cells[1]
        block[3, sel] = (j[sel] - j[sel].min()) // cells[2]
    _, index = np.unique(block, axis=1, return_inverse=True)
    return np.asarray(index, dtype=np.int64).ravel()


@functools.lru_cache(maxsize=4)
def _tables(effects: Effects, geometry: Geometry) -> _Tables:
    n = geometry.n_cells
    index = np.arange(n, dtype=np.int64)
    submodule = _submodules(geometry, effects.submodule_cells)
    z = rng.normal(_cell_keys(effects.seed, "miscalibration", index))
    if effects.correlated:
        rho = effects.correlation
        shared = rng.normal(_cell_keys(effects.seed, "miscalibration-submodule", submodule))
        z = math.sqrt(rho) * shared + math.sqrt(1.0 - rho) * z
    c = 1.0 + effects.miscalibration * _scaled(special.ndtr(z))
    dead = rng.uniform(_cell_keys(effects.seed, "dead", index)) < effects.dead_fraction
    ring, theta = rings_and_angles(geometry)
    layer = np.asarray(geometry.cell_layer + 1, dtype=np.int64)
    weight = geometry.layer_property("mip_sampling_fraction") * geometry.layer_property("e_hat")
    if effects.absorber_correction is None:
        absorber = (1.0 / weight)[geometry.cell_layer]
    else:
        absorber = np.full(n, float(effects.absorber_correction))
    if effects.bias == "seed003":
        f_position = f_layer(layer) * f_ring(ring)
    elif effects.bias == "none":
        f_position = np.ones(n)
    else:
        f_position = np.full(n, np.nan)
    group_of = submodule if effects.correlated else np.zeros(n, np.int64)
    live = np.flatnonzero(~dead)
    order = live[np.argsort(group_of[live], kind="stable")]
    sizes = np.bincount(group_of[order], minlength=int(group_of.max()) + 1)
    start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    position = np.full(n, -1, np.int64)
    position[order] = np.arange(order.size) - start[group_of[order]]
    return _Tables(
        c=c,
        dead=dead,
        f_position=f_position,
        absorber=absorber,
        layer=layer,
        ring=ring,
        theta=theta,
        submodule=submodule,
        group_of=group_of,
        group_cells=order,
        group_start=start,
        position=position,
    )


# ------------------------------------------------------------------------ flat hits


@dataclass
class Applied:
    """Hits after the effects, grouped by event: each event's surviving input hits in input
    order, then its noise-only hits by cell."""

    #: output hits per event
    counts: IntArray
    #: per output hit: index of its input hit, -1 for noise-only hits
    source: IntArray
    #: dense cell index per output hit
    cell: IntArray
    #: Ẽ [MeV] per output hit
    energy_mev: FloatArray
    #: truth: the input deposit [MeV] per output hit, 0 for noise-only hits
    edep_mev: FloatArray
    #: input hits removed, by reason (invalid_deposit, dead_cell, below_threshold)
    removed: dict[str, int] = field(default_factory=dict)
    #: hits added, by reason (noise: empty cells above the threshold)
    added: dict[str, int] = field(default_factory=dict)


def event_keys(seed: int, identity: str, entries: npt.ArrayLike) -> npt.NDArray[np.uint64]:
    """One key per event for :func:`apply_effects`: (seed, file identity, global entry)."""
    return rng.event_keys(rng.file_key(seed, f"calocoffea.effects:{identity}"), entries)


def _keys(
    per: npt.NDArray[np.uint64], counter: npt.ArrayLike, stream: str
) -> npt.NDArray[np.uint64]:
    """Keys of (event key, counter) pairs: ``counter`` is a cell or a sub-module index."""
    shifted = np.asarray(counter, dtype=np.uint64) << np.uint64(5)
    return rng.stream_keys((np.asarray(per, dtype=np.uint64), shifted), _STREAMS[stream])


def _check_arrays(
    energy: FloatArray, cell: IntArray, counts: IntArray, keys: npt.NDArray[np.uint64], n: int
) -> None:
    if energy.shape != cell.shape or energy.ndim != 1:
        raise ValueError(
            f"energy_mev and cell must be flat arrays of one value per hit, got shapes "
            f"{energy.shape} and {cell.shape}"
        )
    if counts.ndim != 1 or counts.sum() != energy.size or np.any(counts < 0):
        raise ValueError(
            f"counts (hits per event) must add up to the {energy.size} hits, got {counts.sum()}"
        )
    if keys.shape != counts.shape:
        raise ValueError(f"give one event key per event: {keys.size} keys, {counts.size} events")
    bad = (cell < 0) | (cell >= n)
    if np.any(bad):
        raise GeometryError(
            f"{np.count_nonzero(bad)} hits have cell indices outside 0..{n - 1} "
            f"(e.g. {cell[bad][:3].tolist()}); give Geometry.cell_index of the hits' cell ids"
        )


def _check_unique(event: IntArray, cell: IntArray, n_cells: int) -> None:
    key = event * n_cells + cell
    ordered = np.sort(key)
    duplicate = ordered[1:][ordered[1:] == ordered[:-1]]
    if duplicate.size:
        raise InputFileError(
            f"{duplicate.size} hits share their cell with another hit of the same event (e.g. "
            f"event {int(duplicate[0] // n_cells)} of the chunk, cell {int(duplicate[0] % n_cells)}"
            "); effects act on cell energies: sum the hits of each cell first"
        )


def _bias_factor(effects: Effects, t: _Tables, cell: IntArray, energy: FloatArray) -> FloatArray:
    if effects.bias == "none":
        return np.ones(cell.size)
    s_gev = energy * t.absorber[cell] / 1000.0
    if effects.bias == "seed003":
        return np.asarray(t.f_position[cell] * f_energy(s_gev), dtype=np.float64)
    assert effects.bias_function is not None
    factor = np.asarray(
        effects.bias_function(t.layer[cell], t.ring[cell], t.theta[cell], s_gev), dtype=np.float64
    )
    if factor.shape != cell.shape or not np.all(np.isfinite(factor)) or np.any(factor < 0):
        raise SimulationConfigError(
            f"Effects.bias_function must return one finite factor >= 0 per hit ({cell.size}), "
            f"got shape {factor.shape}"
            + ("" if factor.shape != cell.shape else f", range {factor.min()}..{factor.max()}")
        )
    return factor


def _latent_u(
    effects: Effects, keys: npt.NDArray[np.uint64], shared: FloatArray | None
) -> FloatArray:
    """u = Φ(√ρ w + √(1-ρ) n) per hit; Φ(n) without correlation."""
    z = rng.normal(keys)
    if shared is not None:
        rho = effects.correlation
        z = math.sqrt(rho) * shared + math.sqrt(1.0 - rho) * z
    return np.asarray(special.ndtr(z), dtype=np.float64)


def apply_effects(
    energy_mev: npt.ArrayLike,
    cell: npt.ArrayLike,
    counts: npt.ArrayLike,
    keys: npt.NDArray[np.uint64],
    effects: Effects,
    geometry: str | Geometry,
) -> Applied:
    """Apply ``effects`` to flat hits: deposits [MeV], dense cell indices
    (``Geometry.cell_index``), hits per event, and one key per event (:func:`event_keys`).

    Steps: remove invalid deposits (NaN, infinite, negative: counted; their cells count as
    empty); bias F (eq. 7-9) on the raw energy; Ẽ = C F E + b + ε (eq. 1.1); remove hits of
    dead cells, then those with Ẽ <= threshold; draw the empty live cells that noise and bias
    lift above the threshold. Each cell may appear once per event (InputFileError otherwise).
    The per-cell tables are computed once per (effects, geometry) and cached."""
    geo = get_geometry(geometry)
    t = _tables(effects, geo)
    energy = np.asarray(energy_mev, dtype=np.float64)
    cells = np.asarray(cell, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    keys = np.asarray(keys, dtype=np.uint64)
    _check_arrays(energy, cells, counts, keys, geo.n_cells)
    n_events = counts.size
    event = np.repeat(np.arange(n_events, dtype=np.int64), counts)
    valid = np.isfinite(energy) & (energy >= 0)
    _check_unique(event[valid], cells[valid], geo.n_cells)
    live = valid & ~t.dead[cells]

    index = np.flatnonzero(live)
    c, e = cells[index], energy[index]
    smeared = t.c[c] * _bias_factor(effects, t, c, e) * e + effects.bias_mev
    per_event = np.repeat(keys, counts)[index]
    if effects.noise_mev > 0:
        shared = None
        if effects.correlated:
            shared = rng.normal(_keys(per_event, t.group_of[c], "submodule"))
        noise_u = _latent_u(effects, _keys(per_event, c, "noise"), shared)
        smeared = smeared + effects.noise_mev * _scaled(noise_u)
    threshold = effects.zero_suppression_mev
    passed = np.ones(index.size, bool) if threshold is None else smeared > threshold
    kept = index[passed]
    removed = {
        "invalid_deposit": int(np.count_nonzero(~valid)),
        "dead_cell": int(np.count_nonzero(valid & ~live)),
        "below_threshold": int(np.count_nonzero(~passed)),
    }

    if effects.noisy_empty_cells:
        n_event, n_cell, n_value = _empty_cell_noise(effects, t, keys, event[index], c)
    else:
        n_event = n_cell = np.zeros(0, np.int64)
        n_value = np.zeros(0)
    all_event = np.concatenate([event[kept], n_event])
    order = np.argsort(all_event, kind="stable")
    return Applied(
        counts=np.bincount(all_event, minlength=n_events).astype(np.int64),
        source=np.concatenate([kept, np.full(n_event.size, -1, np.int64)])[order],
        cell=np.concatenate([cells[kept], n_cell])[order],
        energy_mev=np.concatenate([smeared[passed], n_value])[order],
        edep_mev=np.concatenate([energy[kept], np.zeros(n_event.size)])[order],
        removed=removed,
        added={"noise": int(n_event.size)},
    )


# ------------------------------------------------------------------------ empty cells


@numba.njit(cache=True)
def _choose(
    n_empty: IntArray,
    k: IntArray,
    u: FloatArray,
    hit_position: IntArray,
    hit_start: IntArray,
    scratch: npt.NDArray[np.bool_],
) -> IntArray:
    """For each pair q, ``k[q]`` distinct ranks among ``n_empty[q]`` empty cells (Floyd's
    algorithm on the uniforms ``u``), returned as positions in the group's live cells by
    skipping the sorted positions of the pair's hits. Positions ascend within each pair."""
    out = np.empty(u.size, np.int64)
    first = 0
    for q in range(n_empty.size):
        kq = k[q]
        if kq == 0:
            continue
        n = n_empty[q]
        for m in range(kq):
            j = n - kq + m
            r = min(int(u[first + m] * (j + 1)), j)
            if scratch[r]:
                r = j
            scratch[r] = True
            out[first + m] = r
        ranks = np.sort(out[first : first + kq])
        h0, h1 = hit_start[q], hit_start[q + 1]
        h = h0
        for m in range(kq):
            scratch[ranks[m]] = False
            # hit number h is below the rank-th empty cell while (its position - h) <= rank
            while h < h1 and hit_position[h] - (h - h0) <= ranks[m]:
                h += 1
            out[first + m] = ranks[m] + (h - h0)
        first += kq
    return out


def _empty_cell_noise(
    effects: Effects,
    t: _Tables,
    keys: npt.NDArray[np.uint64],
    hit_event: IntArray,
    hit_cell: IntArray,
) -> tuple[IntArray, IntArray, FloatArray]:
    """(event, cell, Ẽ) of the empty live cells that pass the threshold, by event and cell."""
    n_groups = t.n_groups
    sizes = np.diff(t.group_start)
    scratch = np.zeros(int(sizes.max()) if sizes.size else 0, bool)
    block = max(1, _BLOCK_PAIRS // n_groups)
    pieces = []
    hit_order = np.lexsort((t.position[hit_cell], t.group_of[hit_cell], hit_event))
    hit_event, hit_cell = hit_event[hit_order], hit_cell[hit_order]
    bounds = np.searchsorted(hit_event, np.arange(0, keys.size + block, block))
    for b, e0 in enumerate(range(0, keys.size, block)):
        e1 = min(e0 + block, keys.size)
        h = slice(bounds[b], bounds[b + 1])
        pieces.append(
            _noise_block(effects, t, keys[e0:e1], hit_event[h] - e0, hit_cell[h], scratch)
        )
    events = np.concatenate([p[0] for p in pieces]) if pieces else np.zeros(0, np.int64)
    cells = np.concatenate([p[1] for p in pieces]) if pieces else np.zeros(0, np.int64)
    values = np.concatenate([p[2] for p in pieces]) if pieces else np.zeros(0)
    order = np.lexsort((cells, events))
    return events[order], cells[order], values[order]


def _noise_block(
    effects: Effects,
    t: _Tables,
    keys: npt.NDArray[np.uint64],
    hit_event: IntArray,
    hit_cell: IntArray,
    scratch: npt.NDArray[np.bool_],
) -> tuple[IntArray, IntArray, FloatArray]:
    """Empty-cell noise of a block of events; hits sorted by (event, group, position)."""
    n_groups = t.n_groups
    n_pairs = keys.size * n_groups
    group = np.tile(np.arange(n_groups, dtype=np.int64), keys.size)
    pair_event = np.repeat(np.arange(keys.size, dtype=np.int64), n_groups)
    per_pair = keys[pair_event]
    hit_pair = hit_event * n_groups + t.group_of[hit_cell]
    hits = np.bincount(hit_pair, minlength=n_pairs)
    n_empty = np.diff(t.group_start)[group] - hits
    x_t = effects._threshold_x()
    if effects.correlated:
        rho = effects.correlation
        shared = rng.normal(_keys(per_pair, group, "submodule"))
        z_t = special.ndtri(beta22_cdf(x_t))
        cut = (z_t - math.sqrt(rho) * shared) / math.sqrt(1.0 - rho)
        p = special.ndtr(-cut)
    else:
        p = np.full(n_pairs, 1.0 - float(beta22_cdf(x_t)))
    count_keys = _keys(per_pair, group, "count")
    k = rng.binomial(count_keys, n_empty, p)
    base = rng.hit_base(count_keys, k)
    picks = rng.uniform(rng.stream_keys(base, _STREAMS["pick"]))
    hit_start = np.concatenate([[0], np.cumsum(hits)]).astype(np.int64)
    position = _choose(n_empty, k, picks, t.position[hit_cell], hit_start, scratch)
    pair = np.repeat(np.arange(n_pairs, dtype=np.int64), k)
    cell = t.group_cells[t.group_start[group[pair]] + position]
    event = pair_event[pair]
    u = rng.uniform(_keys(keys[event], cell, "value"))
    b, s = effects.bias_mev, effects.noise_mev
    if effects.correlated:
        rho = effects.correlation
        n = -special.ndtri(u * special.ndtr(-cut[pair]))
        latent = special.ndtr(math.sqrt(rho) * shared[pair] + math.sqrt(1.0 - rho) * n)
    else:
        f_t = float(beta22_cdf(x_t))
        latent = f_t + u * (1.0 - f_t)
    value = b + s * _scaled(np.asarray(latent, dtype=np.float64))
    assert effects.zero_suppression_mev is not None
    value = np.maximum(value, np.nextafter(effects.zero_suppression_mev, np.inf))
    return event, cell, value


# ------------------------------------------------------------------------ files


def apply_effects_files(
    files: Sequence[str | Path],
    output: str | Path,
    effects: Effects,
    *,
    run_options: RunOptions | None = None,
    overwrite: bool = False,
    skip_bad_files: bool = False,
) -> RunResult:
    """Apply ``effects`` to simulated files (stage ``sim``) into one file of pseudo-data
    (stage ``sim``): hit energies Ẽ [MeV], truth deposits in ``hit_edep`` (0 for noise-only
    hits), event scalars (``edep_active`` included) unchanged; metadata extra ``effects``,
    ``inputs`` and the input's beam and particle. ``result.cutflow["effects"]`` counts hits
    removed by reason and added (noise). An existing ``output`` is an error unless
    ``overwrite``. With ``skip_bad_files``, bad input files are left out and named
    (:func:`calocoffea.runner.run`; metadata extra ``skipped_inputs``)."""
    from calocoffea.processors.effects import EffectsProcessor
    from calocoffea.runner import (
        RunOptions,
        _beam_and_particle,
        _check_output,
        _geometry_of,
        _inputs_extra,
        _merge,
        _select_inputs,
        _shard_directory,
        _warn_invalid,
        run,
    )

    inputs = _select_inputs(files, "sim", skip_bad_files)
    metadata = inputs.metadata
    geometry = _geometry_of(metadata, inputs.files)
    target = _check_output(output, files, overwrite=overwrite)
    with _shard_directory(target) as shards:
        proc = EffectsProcessor(effects, geometry.name, shards)
        result = run(
            proc,
            inputs.files,
            run_options or RunOptions(),
            skip_bad_files=skip_bad_files,
            skipped=inputs.skipped,
        )
        extra = {**_inputs_extra(files, result), **_beam_and_particle(metadata[0])}
        result.output = _merge(result.shards, target, proc.metadata(extra))
    _warn_invalid(result.cutflow)
    return result


__all__ = [
    "BIASES",
    "Applied",
    "BiasFunction",
    "Effects",
    "apply_effects",
    "apply_effects_files",
    "beta22_cdf",
    "beta22_ppf",
    "event_keys",
    "f_energy",
    "f_layer",
    "f_ring",
    "seed003_bias",
]
