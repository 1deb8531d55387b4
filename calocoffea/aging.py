"""Aging of calorimeter cells (seed 004): the effect for pseudo-data, its truth, and what the
aging calibrations (``wgan_aging``, ``moment_ratio``) share.

What to use when:

- :func:`cell_deposits_mev` -- the integrated deposit D_i [MeV] of every cell over a sample
  (the dose proxy the aging grows with).
- :func:`central_cells` -- the cells of the central ``size`` x ``size`` square of every layer,
  where a beam on the axis damages most (seed 004 trains on "the most affected cells located
  in the center"; default 8 x 8).
- :func:`aging_strength` -- the strength k for which assuming A = 1 on a set of cells gives a
  wanted mean absolute error (default 0.018, the start of seed 004's MAE curve, Fig. 5).
- :class:`Aging` -- the per-cell truth A_i (:meth:`Aging.from_deposits` builds it from D and
  a target MAE); :func:`apply_aging_files` writes a damaged file from simulated files, with
  the truth in its metadata (:func:`aging_truth` reads it back) and the undamaged deposit in
  the hit field ``edep``; :func:`age_energies` is the same on flat hits.
- :class:`CellSample` and :func:`read_cell_sample` -- the positive hits (event, cell,
  energy) of a file, the input of both aging calibrations; :class:`CellMoments` per-cell hit
  counts, means and variances; :func:`ratio_errors` the statistical error of a mean ratio and
  :func:`trainable_cells` the cells it is small enough to fit.
- :func:`aged_conditions` -- detector conditions whose ``aging`` table is an :class:`Aging`'s
  A, to digitise aged raw pseudo-data; :func:`as_scale` -- learned coefficients as the
  per-cell ``scale`` table that the raw calibration chain multiplies energies by last.
- :class:`AgingCalibration` -- the base of the aging calibrations: ``collect`` keeps the
  damaged events' hits (whole events, ``needs_events``), ``fit`` reads the undamaged
  reference named by the option ``reference`` and calls the method's ``estimate``; the
  constants are one per-cell table ``aging_coefficient``; :func:`coefficients_of` reads it
  back as a dense array.

The model (seed 004 §2 and Fig. 1). For cell i, A_i = E_undamaged,i / E_damaged,i: the damaged
cell reads its deposit divided by A_i (A_i >= 1: radiation damage lowers the signal; seed 004
calls a reduced response "A < 1" in one sentence, but its definition gives A > 1). A_i is
linear in the integrated deposit::

    A_i = 1 + k D_i / max_j D_j,        D_i = Σ_events E_i  [MeV] over the undamaged sample

so the most irradiated cell has A = 1 + k. Assuming A = 1 on a set S of cells errs by
MAE_S(1) = (1/|S|) Σ_{i∈S} |A_i - 1| = k mean_{i∈S}(D_i / max D); hence k = MAE_target /
mean_{i∈S}(D_i / max D) (:func:`aging_strength`; S = the central cells by default).

Why no coffea runner for the effect: it has no random numbers, only a per-cell division, so a
chunked read-modify-write (:func:`calocoffea.io.read_events` in blocks of events,
:func:`calocoffea.io.write_events`) gives the file any executor would, with bounded memory.

Statistical error of a cell's coefficient from two samples (what :func:`ratio_errors`
computes): with n hits of mean m and variance v per sample, the relative error of
m_undamaged / m_damaged is sqrt(v_u / (n_u m_u²) + v_d / (n_d m_d²)). At 5000 events of
10 GeV pions in ``tile_24x24`` it is about 2 % for the busiest cells and 10 % or more for
half of the central ones, so a calibration that moves every cell lands far from the truth;
cells whose error exceeds ``max_error`` keep A = 1 (:func:`trainable_cells`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import awkward as ak
import numpy as np
import numpy.typing as npt

from calocoffea import __version__
from calocoffea.conditions import Conditions
from calocoffea.constants import Constants, Provenance, Table
from calocoffea.exceptions import (
    ConstantsError,
    FitError,
    FitWarning,
    GeometryError,
    GeometryMismatchError,
    InputFileError,
    MethodOptionsError,
)
from calocoffea.geometry import Geometry, decode_cellid, get_geometry
from calocoffea.grids import SquareGrid
from calocoffea.io import FileMetadata, open_events, read_events, read_metadata, write_events
from calocoffea.methods import CalibrationMethod, fit_quality_json
from calocoffea.processors.common import cell_indices, flat_hits

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: MAE of assuming A = 1 at the start of seed 004's training (Fig. 5): sets the strength k.
SEED004_START_MAE = 0.018
#: MAE and R² seed 004 reaches with 5000 events per state (Fig. 5, §5).
SEED004_FINAL_MAE = 0.0074
SEED004_R2 = 0.88
#: Side of the central square of cells per layer [cells] (our definition of seed 004's
#: "most affected cells located in the center"; a third of tile_24x24's 24 x 24).
CENTRAL_SIZE = 8
#: Name and unit of the per-cell table the aging calibrations write.
TABLE = "aging_coefficient"
#: Events per block when reading or writing files (a few tens of MB of hits).
_BLOCK_EVENTS = 20_000
#: Key of the aging description in a damaged file's metadata ``extra``.
_METADATA_KEY = "aging"


# ------------------------------------------------------------------------------ the model


def central_cells(geometry: str | Geometry, size: int = CENTRAL_SIZE) -> BoolArray:
    """True for the cells (``Geometry.cellids()`` order) in the central ``size`` x ``size``
    square of cells of every layer: indices i, j in [(n - size) // 2, (n - size) // 2 + size).
    Square grids only."""
    geo = get_geometry(geometry)
    if not isinstance(size, int | np.integer) or size < 1:
        raise GeometryError(f"the central square needs a size of at least 1 cell, got {size!r}")
    section, _, i, j = decode_cellid(geo.cellids())
    central = np.zeros(section.size, dtype=bool)
    for k, s in enumerate(geo.sections):
        grid = s.grid
        if not isinstance(grid, SquareGrid):
            raise GeometryError(
                f"central_cells needs square grids, but section {s.name!r} of {geo.name!r} has a "
                f"{type(grid).__name__}; pass your own cell mask instead"
            )
        if size > min(grid.nx, grid.ny):
            raise GeometryError(
                f"a central square of {size} cells does not fit the {grid.nx} x {grid.ny} grid "
                f"of {geo.name!r}; choose a size up to {min(grid.nx, grid.ny)}"
            )
        i0, j0 = (grid.nx - size) // 2, (grid.ny - size) // 2
        in_section = section == k
        central |= in_section & (i >= i0) & (i < i0 + size) & (j >= j0) & (j < j0 + size)
    return central


def aging_coefficients(deposits_mev: npt.ArrayLike, strength: float) -> FloatArray:
    """A_i = 1 + k D_i / max_j D_j (module docstring), one per cell of ``deposits_mev``."""
    d = _deposits(deposits_mev)
    _check_strength(strength)
    return 1.0 + float(strength) * d / d.max()


def aging_strength(
    deposits_mev: npt.ArrayLike, mask: npt.ArrayLike, target_mae: float = SEED004_START_MAE
) -> float:
    """k such that assuming A = 1 on the cells of ``mask`` errs by ``target_mae`` on average:
    k = target_mae / mean_{mask}(D / max D)."""
    d = _deposits(deposits_mev)
    keep = np.asarray(mask, dtype=bool)
    if keep.shape != d.shape or not keep.any():
        raise ValueError(
            f"the cell mask must select at least one of the {d.size} cells (shape {d.shape}), "
            f"got shape {keep.shape} with {int(keep.sum()) if keep.shape == d.shape else 0}"
        )
    if not (math.isfinite(target_mae) and target_mae > 0):
        raise ValueError(f"target_mae must be a positive number, got {target_mae!r}")
    share = float(np.mean(d[keep] / d.max()))
    if share == 0.0:
        raise ValueError(
            "no deposit in the selected cells: the aging would need an infinite strength; "
            "select cells the sample reaches"
        )
    return float(target_mae) / share


def _deposits(deposits_mev: npt.ArrayLike) -> FloatArray:
    d = np.asarray(deposits_mev, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"deposits must be one value per cell, got shape {d.shape}")
    if not np.all(np.isfinite(d)) or np.any(d < 0):
        raise ValueError("deposits must be finite and non-negative; check the sample")
    if d.max() <= 0:
        raise ValueError("every cell has zero deposit: the sample has no energy")
    return d


def _check_strength(strength: float) -> None:
    if not (isinstance(strength, int | float) and math.isfinite(strength) and strength >= 0):
        raise ValueError(f"the aging strength k must be a finite number >= 0, got {strength!r}")


def age_energies(
    energy_mev: npt.ArrayLike, cell: npt.ArrayLike, coefficients: npt.ArrayLike
) -> FloatArray:
    """E_damaged = E_undamaged / A[cell] for flat hits (dense cell indices); the inputs are not
    modified."""
    a = np.asarray(coefficients, dtype=np.float64)
    return np.asarray(energy_mev, dtype=np.float64) / a[np.asarray(cell, dtype=np.int64)]


@dataclass(frozen=True, eq=False)
class Aging:
    """Per-cell aging truth A_i (``Geometry.cellids()`` order) and how it was made."""

    geometry: str
    coefficients: FloatArray
    strength: float
    max_deposit_mev: float
    #: what the strength was set from: target MAE, the cells it refers to, the deposit sample
    origin: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        geo = get_geometry(self.geometry)
        a = np.asarray(self.coefficients, dtype=np.float64)
        if a.shape != (geo.n_cells,):
            raise ValueError(
                f"aging coefficients need one value per cell of {geo.name!r} ({geo.n_cells}), "
                f"got shape {a.shape}"
            )
        if not np.all(np.isfinite(a) & (a > 0)):
            raise ValueError("aging coefficients must be finite and positive")
        object.__setattr__(self, "coefficients", a)

    @classmethod
    def from_deposits(
        cls,
        geometry: str | Geometry,
        deposits_mev: npt.ArrayLike,
        *,
        target_mae: float = SEED004_START_MAE,
        central_size: int = CENTRAL_SIZE,
        deposit_sample: str = "",
    ) -> Aging:
        """The seed 004 aging: k set so that A = 1 errs by ``target_mae`` on the central
        ``central_size`` x ``central_size`` cells of every layer."""
        geo = get_geometry(geometry)
        d = _deposits(deposits_mev)
        if d.size != geo.n_cells:
            raise GeometryMismatchError(
                f"{d.size} deposits for the {geo.n_cells} cells of {geo.name!r}; compute them "
                f"with cell_deposits_mev on files of {geo.name!r}"
            )
        strength = aging_strength(d, central_cells(geo, central_size), target_mae)
        origin = {
            "target_mae": float(target_mae),
            "cells": f"central {central_size} x {central_size} of every layer",
            "central_size": int(central_size),
            "deposit_sample": deposit_sample,
        }
        return cls(geo.name, aging_coefficients(d, strength), strength, float(d.max()), origin)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (stored in a damaged file's metadata)."""
        return {
            "model": "A_i = E_undamaged / E_damaged = 1 + k D_i / max(D), D = integrated deposit",
            "geometry": self.geometry,
            "strength": self.strength,
            "max_deposit_mev": self.max_deposit_mev,
            **self.origin,
            "coefficients": self.coefficients.tolist(),
        }

    def mae_at_one(self, mask: npt.ArrayLike) -> float:
        """Mean |A - 1| over the cells of ``mask``: the error of assuming no aging."""
        keep = np.asarray(mask, dtype=bool)
        return float(np.mean(np.abs(self.coefficients[keep] - 1.0)))


# ------------------------------------------------------------------------------ files


def _blocks(path: str | os.PathLike[str], stage: str) -> Iterator[ak.Array]:
    """The events of a file in blocks of :data:`_BLOCK_EVENTS`, checked (stage, branches)."""
    tree = open_events(path, stage=stage)
    n = int(tree.num_entries)
    tree.file.close()
    for start in range(0, n, _BLOCK_EVENTS):
        yield read_events(path, stage=stage, entry_start=start, entry_stop=start + _BLOCK_EVENTS)


def _geometry_of_file(path: str | os.PathLike[str]) -> Geometry:
    metadata = read_metadata(path)
    if not metadata.geometry:
        raise InputFileError(
            f"{path} does not say which geometry it is for; write it with calocoffea"
        )
    geometry = get_geometry(metadata.geometry)
    if metadata.geometry_hash and metadata.geometry_hash != geometry.hash:
        raise GeometryMismatchError(
            f"{path} was written for geometry {metadata.geometry!r} with hash "
            f"{metadata.geometry_hash}, but the installed one has hash {geometry.hash}; "
            "regenerate the file"
        )
    return geometry


def _flat_cells(
    events: ak.Array, geometry: Geometry, where: str
) -> tuple[IntArray, IntArray, FloatArray]:
    """(hits per event, dense cell index, energy) of a block; clear errors for foreign cell
    ids and non-finite energies."""
    counts = np.asarray(ak.to_numpy(ak.num(events.hits, axis=1)), dtype=np.int64)
    cellid = np.asarray(ak.to_numpy(ak.flatten(events.hits.cellid)))
    energy = np.asarray(ak.to_numpy(ak.flatten(events.hits.energy)), dtype=np.float64)
    cell = geometry.cell_index(cellid)
    if np.any(cell < 0):
        raise GeometryMismatchError(
            f"{where}: {np.count_nonzero(cell < 0)} hits have cell ids that are not cells of "
            f"{geometry.name!r} (e.g. {cellid[cell < 0][:3].tolist()}); was it made for another "
            "geometry?"
        )
    check_finite(energy, where)
    return counts, cell, energy


def check_finite(energy_mev: FloatArray, where: str) -> None:
    """InputFileError naming ``where`` if any hit energy is NaN or infinite."""
    bad = ~np.isfinite(energy_mev)
    if np.any(bad):
        raise InputFileError(
            f"{where}: {np.count_nonzero(bad)} hits have non-finite energies (e.g. "
            f"{energy_mev[bad][:3].tolist()}); the aging needs finite deposits: fix the producer "
            "of the file or drop those hits"
        )


def cell_deposits_mev(
    files: Sequence[str | os.PathLike[str]], geometry: str | Geometry | None = None
) -> tuple[FloatArray, int]:
    """(D_i [MeV] summed over every event of ``files``, number of events) at stage ``sim``;
    the geometry is the files' own unless given (then they must match it)."""
    if not files:
        raise InputFileError("no input files given to sum deposits over")
    geo = get_geometry(geometry) if geometry is not None else _geometry_of_file(files[0])
    total = np.zeros(geo.n_cells)
    n_events = 0
    for path in files:
        _same_geometry(path, geo)
        for block in _blocks(path, "sim"):
            _, cell, energy = _flat_cells(block, geo, str(path))
            total += np.bincount(cell, weights=energy, minlength=geo.n_cells)
            n_events += len(block)
    return total, n_events


def _same_geometry(path: str | os.PathLike[str], geometry: Geometry) -> None:
    found = _geometry_of_file(path)
    if found.hash != geometry.hash:
        raise GeometryMismatchError(
            f"{path} is for geometry {found.name!r}, not {geometry.name!r}; give files of "
            f"{geometry.name!r} (both samples of an aging study must come from one geometry)"
        )


def apply_aging_files(
    files: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    aging: Aging,
    *,
    overwrite: bool = False,
) -> Path:
    """Write the damaged version of simulated ``files`` (stage ``sim``) to ``output``:
    ``hit_energy`` = E / A_cell, ``hit_edep`` = the undamaged deposit (the input's ``edep``
    where it has one), event scalars unchanged; the metadata ``extra`` keeps the truth
    (``aging``: :meth:`Aging.to_dict`, read back with :func:`aging_truth`), the inputs and the
    first input's beam and particle. An existing ``output`` is an error unless
    ``overwrite``."""
    if not files:
        raise InputFileError("no input files given to age")
    geo = get_geometry(aging.geometry)
    from calocoffea.runner import _check_output

    target = _check_output(output, files, overwrite=overwrite)
    for path in files:
        _same_geometry(path, geo)
    first = read_metadata(files[0]).extra
    extra: dict[str, Any] = {k: first[k] for k in ("beam", "particle", "run_type") if k in first}
    metadata = FileMetadata(
        stage="sim",
        geometry=geo.name,
        geometry_hash=geo.hash,
        producer=f"calocoffea {__version__} aging",
        extra={_METADATA_KEY: aging.to_dict(), "inputs": [str(f) for f in files], **extra},
    )
    return write_events(target, _aged_blocks(files, aging, geo), metadata)


def _aged_blocks(
    files: Sequence[str | os.PathLike[str]], aging: Aging, geometry: Geometry
) -> Iterator[ak.Array]:
    for path in files:
        for block in _blocks(path, "sim"):
            counts, cell, energy = _flat_cells(block, geometry, str(path))
            hits = block.hits
            edep = (
                np.asarray(ak.to_numpy(ak.flatten(hits.edep)), dtype=np.float64)
                if "edep" in hits.fields
                else energy
            )
            aged = age_energies(energy, cell, aging.coefficients)
            hits = ak.with_field(hits, ak.unflatten(aged.astype(np.float32), counts), "energy")
            hits = ak.with_field(hits, ak.unflatten(edep.astype(np.float32), counts), "edep")
            yield ak.with_field(block, hits, "hits")


def aging_truth(path: str | os.PathLike[str]) -> FloatArray:
    """The per-cell A_i (``Geometry.cellids()`` order) stored in a file written by
    :func:`apply_aging_files`."""
    metadata = read_metadata(path)
    description = metadata.extra.get(_METADATA_KEY)
    if not isinstance(description, dict) or "coefficients" not in description:
        raise InputFileError(
            f"{path} holds no aging truth (no {_METADATA_KEY!r} in its metadata); give a file "
            "written by calocoffea.aging.apply_aging_files"
        )
    return np.asarray(description["coefficients"], dtype=np.float64)


# ------------------------------------------------------------------------------ samples


@dataclass(frozen=True)
class CellSample:
    """The positive hits of a sample: per event the hit count, per hit the dense cell index
    and the energy [MeV]; ``source`` names the files (for messages and provenance)."""

    counts: IntArray
    cell: IntArray
    energy_mev: FloatArray
    source: str = ""
    #: hits left out because their energy was <= 0 (they carry no scale)
    nonpositive_hits: int = 0

    @property
    def n_events(self) -> int:
        return int(self.counts.size)

    @property
    def n_hits(self) -> int:
        return int(self.cell.size)

    @property
    def event(self) -> IntArray:
        """Event index of every hit."""
        return np.repeat(np.arange(self.n_events, dtype=np.int64), self.counts)

    def restricted(self, keep: BoolArray) -> CellSample:
        """The hits of the cells where ``keep`` (one bool per cell) is true; events kept."""
        mask = np.asarray(keep, dtype=bool)[self.cell]
        counts = np.bincount(self.event[mask], minlength=self.n_events).astype(np.int64)
        return dataclasses.replace(
            self, counts=counts, cell=self.cell[mask], energy_mev=self.energy_mev[mask]
        )

    def moments(self, n_cells: int) -> CellMoments:
        """Per-cell hit counts, means and variances of the energies."""
        n = np.bincount(self.cell, minlength=n_cells).astype(np.int64)
        s = np.bincount(self.cell, weights=self.energy_mev, minlength=n_cells)
        s2 = np.bincount(self.cell, weights=self.energy_mev**2, minlength=n_cells)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, s / np.maximum(n, 1), np.nan)
            var = np.where(n > 1, (s2 - n * mean**2) / np.maximum(n - 1, 1), np.nan)
        return CellMoments(n, mean, np.maximum(var, 0.0))


def _sample_from_blocks(
    blocks: Iterator[tuple[IntArray, IntArray, FloatArray]], source: str
) -> CellSample:
    counts: list[IntArray] = []
    cells: list[IntArray] = []
    energies: list[FloatArray] = []
    nonpositive = 0
    for n, cell, energy in blocks:
        positive = energy > 0
        nonpositive += int(np.count_nonzero(~positive))
        event = np.repeat(np.arange(n.size), n)
        counts.append(np.bincount(event[positive], minlength=n.size).astype(np.int64))
        cells.append(cell[positive])
        energies.append(energy[positive])
    if not counts:
        raise InputFileError(f"{source} holds no events; give a sample with events")
    return CellSample(
        np.concatenate(counts), np.concatenate(cells), np.concatenate(energies), source,
        nonpositive,
    )  # fmt: skip


def read_cell_sample(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    geometry: str | Geometry,
    what: str = "sample",
) -> CellSample:
    """The positive hits of the files ``paths`` (stage ``sim``), which must be of
    ``geometry``; errors name the file and say ``what`` it was meant to be."""
    geo = get_geometry(geometry)
    files = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    for path in files:
        found = _geometry_of_file(path)
        if found.hash != geo.hash:
            raise GeometryMismatchError(
                f"the {what} {path} is for geometry {found.name!r}, but the method is set up for "
                f"{geo.name!r}; both samples of an aging calibration must come from one geometry"
            )

    def blocks() -> Iterator[tuple[IntArray, IntArray, FloatArray]]:
        for path in files:
            for block in _blocks(path, "sim"):
                yield _flat_cells(block, geo, f"{what} {path}")

    return _sample_from_blocks(blocks(), ", ".join(str(f) for f in files))


@dataclass(frozen=True)
class CellMoments:
    """Per cell: hits, mean [MeV] and variance [MeV²] of the hit energies (NaN where not
    defined)."""

    n: IntArray
    mean: FloatArray
    var: FloatArray


def ratio_errors(reference: CellMoments, damaged: CellMoments) -> FloatArray:
    """Relative statistical error of mean_reference / mean_damaged per cell (module
    docstring); inf where a sample has fewer than 2 hits."""
    with np.errstate(invalid="ignore", divide="ignore"):
        rel2 = reference.var / (reference.n * reference.mean**2) + damaged.var / (
            damaged.n * damaged.mean**2
        )
    ok = (reference.n > 1) & (damaged.n > 1) & np.isfinite(rel2)
    return np.where(ok, np.sqrt(np.where(ok, rel2, 0.0)), np.inf)


@dataclass(frozen=True)
class CellSelection:
    """Which candidate cells are fitted and why the others are not."""

    candidates: BoolArray
    trained: BoolArray
    #: candidates without a hit in one of the samples (keep A = 1)
    empty: BoolArray
    #: candidates whose expected error exceeds ``max_error`` (keep A = 1)
    imprecise: BoolArray
    errors: FloatArray

    def summary(self) -> dict[str, int]:
        return {
            "candidates": int(self.candidates.sum()),
            "trained": int(self.trained.sum()),
            "empty": int(self.empty.sum()),
            "imprecise": int(self.imprecise.sum()),
        }


def trainable_cells(
    reference: CellMoments, damaged: CellMoments, candidates: BoolArray, max_error: float
) -> CellSelection:
    """Candidate cells whose mean ratio is known to ``max_error`` (relative) or better."""
    errors = ratio_errors(reference, damaged)
    cand = np.asarray(candidates, dtype=bool)
    empty = cand & ((reference.n == 0) | (damaged.n == 0))
    trained = cand & ~empty & (errors <= max_error)
    return CellSelection(cand, trained, empty, cand & ~empty & ~trained, errors)


# ------------------------------------------------------------------------------ methods


@dataclass(frozen=True)
class AgingOptions:
    """Options every aging calibration shares (the samples and the cells)."""

    #: the undamaged reference sample: a calocoffea events file at stage sim of the same
    #: geometry, from other events than the damaged sample (required to fit)
    reference: str = ""
    #: fit only the central cells (central_size x central_size of every layer), the most
    #: affected ones (seed 004); off: every cell of the detector is a candidate
    central_only: bool = True
    #: side of the central square [cells]
    central_size: int = CENTRAL_SIZE
    #: cells whose expected relative error on A (from hit counts and spreads of both samples)
    #: exceeds this keep A = 1: they cannot be measured better than the effect (a few %)
    max_error: float = 0.03

    def __post_init__(self) -> None:
        if self.central_size < 1:
            raise MethodOptionsError(
                f"central_size must be at least 1 cell, got {self.central_size}"
            )
        if not (math.isfinite(self.max_error) and self.max_error > 0):
            raise MethodOptionsError(f"max_error must be a positive number, got {self.max_error}")


class AgingCalibration(CalibrationMethod):
    """Per-cell aging coefficients A = E_undamaged / E_damaged from a damaged sample (the
    runner's input files) and an undamaged reference (option ``reference``).

    Subclasses implement :meth:`estimate`; the fit selects the cells (:func:`trainable_cells`),
    warns about empty ones and writes the table :data:`TABLE` (A = 1 for cells not fitted;
    uncertainties: the expected statistical error of each cell, 1 where it has no hits)."""

    run_type: ClassVar[str] = "physics"
    input_stage: ClassVar[str] = "sim"
    needs_events: ClassVar[bool] = True
    #: the method's entry-point name, recorded in the provenance
    method_name: ClassVar[str] = ""
    options: AgingOptions

    # ---- collect ------------------------------------------------------------------
    def collect(self, events: Any) -> tuple[dict[str, Any], IntArray, dict[str, Any]]:
        """The chunk's hits (cell id, layer, position, energy [MeV]) and event identity."""
        where = str(events.metadata.get("filename", "the input"))
        counts, fields = flat_hits(events, ("cellid", "layer", "x", "y", "z", "energy"))
        cell_indices(events, fields["cellid"], self.geometry)  # foreign cell ids: clear error
        check_finite(np.asarray(fields["energy"], dtype=np.float64), where)
        scalars = {
            name: ak.to_numpy(events[name]) for name in ("event", "run", "pdg", "beam_energy")
        }
        return scalars, counts, fields

    # ---- fit ------------------------------------------------------------------------
    def fit(self, accumulated: Sequence[str]) -> Constants:
        """Constants from the damaged shards (paths in (file, entry) order) and the reference."""
        paths = [str(p) for p in accumulated]
        if not paths:
            raise FitError(f"{type(self).__name__}: no damaged events to fit; give input files")
        reference = self._reference()
        damaged = read_cell_sample(paths, self.detector, "damaged sample")
        undamaged = read_cell_sample(reference, self.detector, "reference (option reference)")
        n_cells = self.detector.n_cells
        candidates = self.candidates()
        selection = trainable_cells(
            undamaged.moments(n_cells), damaged.moments(n_cells), candidates, self.options.max_error
        )
        if not selection.trained.any():
            raise FitError(
                f"{type(self).__name__}: none of the {int(candidates.sum())} candidate cells is "
                f"known to max_error={self.options.max_error} from {damaged.n_events} damaged "
                f"and {undamaged.n_events} reference events; give more events or raise max_error"
            )
        self._warn_empty(selection)
        values, quality = self.estimate(undamaged, damaged, selection)
        quality = {
            "cells": selection.summary(),
            "events": {"damaged": damaged.n_events, "reference": undamaged.n_events},
            "nonpositive_hits": {
                "damaged": damaged.nonpositive_hits,
                "reference": undamaged.nonpositive_hits,
            },
            "max_error": self.options.max_error,
            **quality,
        }
        sample = (
            f"{damaged.n_events} damaged events ({len(paths)} shards) against "
            f"{undamaged.n_events} reference events ({reference})"
        )
        return self.constants(values, selection, sample, quality)

    def _reference(self) -> str:
        reference = self.options.reference
        if not reference:
            raise MethodOptionsError(
                f"{type(self).__name__} needs the undamaged reference sample: give the option "
                "reference=PATH (a simulated file of the same geometry, other events than the "
                "damaged ones), e.g. `--option reference=undamaged.root`"
            )
        if not Path(reference).is_file():
            raise InputFileError(
                f"the reference sample {reference} (option reference) does not exist; check the "
                f"path (relative paths start at {Path.cwd()})"
            )
        return reference

    def candidates(self) -> BoolArray:
        """The cells the method may fit: the central square, or every cell."""
        if self.options.central_only:
            return central_cells(self.detector, self.options.central_size)
        return np.ones(self.detector.n_cells, dtype=bool)

    def _warn_empty(self, selection: CellSelection) -> None:
        n = int(selection.empty.sum())
        if n:
            first = self.detector.cellids()[selection.empty][:3].tolist()
            warnings.warn(
                f"{type(self).__name__}: {n} of {int(selection.candidates.sum())} candidate cells "
                f"have no hit in one of the samples (e.g. cell ids {first}) and keep A = 1; give "
                "more events or leave them out (central_only, central_size)",
                FitWarning,
                stacklevel=3,
            )

    @abstractmethod
    def estimate(
        self, reference: CellSample, damaged: CellSample, selection: CellSelection
    ) -> tuple[FloatArray, dict[str, Any]]:
        """A for the cells of ``selection.trained`` (in cell order) and the fit quality."""

    def constants(
        self,
        values: FloatArray,
        selection: CellSelection,
        sample: str,
        quality: dict[str, Any],
    ) -> Constants:
        geo = self.detector
        a = np.ones(geo.n_cells)
        a[selection.trained] = values
        if not np.all(np.isfinite(a) & (a > 0)):
            raise FitError(
                f"{type(self).__name__}: the fit gave non-finite or non-positive coefficients; "
                "check the samples"
            )
        errors = np.where(np.isfinite(selection.errors), selection.errors * a, 1.0)
        table = Table("cell", geo.cellids().astype(np.int64), a, errors, "1")
        provenance = Provenance(
            method=self.method_name,
            geometry=geo.name,
            geometry_hash=geo.hash,
            sample=sample,
            fit_quality=fit_quality_json(quality),
        )
        return Constants({TABLE: table}, provenance)

    # ---- apply --------------------------------------------------------------------
    def apply(
        self,
        adc: npt.NDArray[np.float64],
        gain: npt.NDArray[np.integer],
        flags: npt.NDArray[np.integer],
        cell: npt.NDArray[np.int64],
        layer: npt.NDArray[np.integer],
        constants: Constants,
    ) -> npt.NDArray[np.float64]:
        """Corrected energies A[cell] x E of flat hits; ``adc`` holds the energies at this
        method's input stage (``sim``: MeV); ``gain``, ``flags``, ``layer`` are not used."""
        a = coefficients_of(constants, self.detector)
        return np.asarray(adc, dtype=np.float64) * a[np.asarray(cell, dtype=np.int64)]


def aged_conditions(conditions: Conditions, aging: Aging) -> Conditions:
    """``conditions`` whose per-cell ``aging`` table is ``aging``'s A: the digitiser divides
    each cell's light yield by A (:mod:`calocoffea.digitization`), so raw pseudo-data age
    the same way as :func:`apply_aging_files` ages simulated energies."""
    if conditions.geometry != aging.geometry:
        raise GeometryMismatchError(
            f"aging for {aging.geometry!r} cannot age conditions of {conditions.geometry!r}; "
            "build the aging for the conditions' geometry"
        )
    return conditions.with_values(
        label=f"{conditions.label}, aged (k = {aging.strength:g})", aging=aging.coefficients
    )


def as_scale(constants: Constants) -> Constants:
    """Learned aging coefficients (table :data:`TABLE`) as the calibration chain's per-cell
    ``scale`` table (energies are multiplied by it last, where the conditions' ``aging``
    enters): lay it over raw-stage constants with ``Constants.update`` to calibrate aged
    raw data with the stage ``raw`` processors."""
    if TABLE not in constants.tables:
        raise ConstantsError(
            f"constants ({constants.provenance.method}) have no table {TABLE!r}; use the "
            "output of wgan_aging or moment_ratio"
        )
    table = constants.tables[TABLE]
    return Constants({"scale": dataclasses.replace(table)}, constants.provenance)


def coefficients_of(constants: Constants, geometry: str | Geometry) -> FloatArray:
    """The table :data:`TABLE` of ``constants`` as one A per cell (``cellids()`` order)."""
    geo = get_geometry(geometry)
    constants.check_geometry(geo, "the geometry given")
    if TABLE not in constants.tables:
        raise ConstantsError(
            f"constants ({constants.provenance.method}) have no table {TABLE!r} (they have "
            f"{', '.join(constants.tables)}); use the output of wgan_aging or moment_ratio"
        )
    table = constants.tables[TABLE]
    index = geo.cell_index(table.keys.astype(np.uint64))
    if np.any(index < 0) or index.size != geo.n_cells:
        raise ConstantsError(f"table {TABLE!r} does not hold one value per cell of {geo.name!r}")
    a = np.empty(geo.n_cells)
    a[index] = table.values
    return a


__all__ = [
    "CENTRAL_SIZE",
    "SEED004_FINAL_MAE",
    "SEED004_R2",
    "SEED004_START_MAE",
    "TABLE",
    "Aging",
    "AgingCalibration",
    "AgingOptions",
    "CellMoments",
    "CellSample",
    "CellSelection",
    "age_energies",
    "aged_conditions",
    "aging_coefficients",
    "aging_strength",
    "aging_truth",
    "apply_aging_files",
    "as_scale",
    "cell_deposits_mev",
    "central_cells",
    "check_finite",
    "coefficients_of",
    "ratio_errors",
    "read_cell_sample",
    "trainable_cells",
]
