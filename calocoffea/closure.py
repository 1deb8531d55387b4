"""Closure of digitisation and calibration: does calibrating digitised hits give back the MC truth?

What to use when:

- :func:`closure_point` -- one beam energy and position: simulate, digitise (with zero
  suppression and clipping off, and with the defaults), apply the nominal constants, and
  compare the calibrated sum with the MC active energy, event by event.
- :func:`closure_scan` -- the same over energies and positions; ``reproduce/closure.py`` and
  the tests call it with different sample sizes.

With zero suppression and clipping off, calibration must close: mean(calibrated / MC) = 1.
With the defaults, the deficit is predicted from the truth hit by hit with
:func:`calocoffea.digitization.threshold_response` (the threshold folded with the photon
statistics, clipping at each cell's range top) and compared with the measured deficit, both
as 1 - calibrated/MC and as the loss against the cuts-off run on the same hits and random
numbers (which removes the digitisation fluctuation the two runs share).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import awkward as ak
import numpy as np

from calocoffea.calibration import range_top_mip
from calocoffea.conditions import Conditions, nominal
from calocoffea.constants import nominal_constants
from calocoffea.digitization import DigitizationOptions, threshold_response
from calocoffea.flags import HitFlag
from calocoffea.geometry import Geometry, get_geometry
from calocoffea.grids import SquareGrid
from calocoffea.io import read_events
from calocoffea.runner import RunOptions, calibrate_files, digitize_files
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate


@dataclass(frozen=True)
class ClosurePoint:
    """Closure at one beam energy and position (ratios are calibrated / MC active energy)."""

    energy_gev: float
    position: str
    events: int
    ratio_off: float  # zero suppression and clipping off
    ratio_off_error: float
    ratio_default: float  # defaults
    ratio_default_error: float
    deficit: float  # 1 - ratio_default
    deficit_predicted: float  # from the truth, hit by hit
    deficit_sharp: float  # naive: truth below threshold + truth above range top
    deficit_difference_error: float  # standard error of (measured - predicted), paired
    #: the deficit the cuts cause: calibrated/MC with cuts off minus with the defaults, on the
    #: same hits and random numbers, so the digitisation fluctuation common to (a) cancels
    deficit_cuts: float
    deficit_cuts_error: float  # standard error of (deficit_cuts - predicted), paired
    clipped_event_fraction: float

    @property
    def pull_off(self) -> float:
        return (self.ratio_off - 1.0) / self.ratio_off_error

    @property
    def pull_deficit(self) -> float:
        return (self.deficit - self.deficit_predicted) / self.deficit_difference_error

    @property
    def pull_cuts(self) -> float:
        return (self.deficit_cuts - self.deficit_predicted) / self.deficit_cuts_error

    def as_dict(self) -> dict[str, float | str | int]:
        return asdict(self) | {
            "pull_off": self.pull_off,
            "pull_deficit": self.pull_deficit,
            "pull_cuts": self.pull_cuts,
        }


def beam_positions(geometry: Geometry) -> dict[str, tuple[float, float]]:
    """Beam spots [mm] on the cell centre nearest the axis and on a corner of four cells
    (square grids)."""
    grid = geometry.sections[0].grid
    if not isinstance(grid, SquareGrid):
        raise ValueError(f"{geometry.name}: four-cell corners need a square grid")
    half = 0.5 * grid.pitch_mm
    centre = (half if grid.nx % 2 == 0 else 0.0, half if grid.ny % 2 == 0 else 0.0)
    corner = (half - centre[0], half - centre[1])
    return {"centre": centre, "corner": corner}


def _per_event(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    event = np.repeat(np.arange(counts.size), counts)
    return np.bincount(event, weights=values, minlength=counts.size)


def _calibrated_sums(path: Path, geometry: Geometry, conditions: Conditions) -> np.ndarray:
    events = read_events(path)
    counts = ak.to_numpy(ak.num(events.hits))
    cell = geometry.cell_index(ak.to_numpy(ak.flatten(events.hits.cellid)))
    energy = ak.to_numpy(ak.flatten(events.hits.energy)).astype(np.float64)
    return _per_event(energy * conditions.mip_mev[cell], counts)


def closure_point(
    geometry: str | Geometry,
    energy_gev: float,
    position: str,
    events: int,
    seed: int,
    workdir: Path,
    run_options: RunOptions | None = None,
) -> ClosurePoint:
    """Closure for electrons at one energy and beam position (``centre`` or ``corner``)."""
    geo = get_geometry(geometry)
    x, y = beam_positions(geo)[position]
    conditions = nominal(geo)
    constants = nominal_constants(conditions)
    dense = constants.dense(geo)
    stem = workdir / f"e{energy_gev:g}-{position}"
    sim = simulate(
        geo, "e-", Beam(energies_gev=(energy_gev,), x_mm=x, y_mm=y), events, seed,
        f"{stem}-sim.root",
    )  # fmt: skip
    truth = read_events(sim)
    mc = ak.to_numpy(truth.edep_active)
    ratios = {}
    clipped_events = 0.0
    for label, options in {
        "off": DigitizationOptions(zero_suppression=False, clipping=False),
        "default": DigitizationOptions(),
    }.items():
        raw, mip = Path(f"{stem}-{label}-raw.root"), Path(f"{stem}-{label}-mip.root")
        # scratch files of this point in ``workdir``: a rerun replaces them
        digitize_files([sim], raw, seed=seed, options=options, run_options=run_options,
                       overwrite=True)  # fmt: skip
        calibrate_files([raw], mip, constants, run_options=run_options, overwrite=True)
        ratios[label] = _calibrated_sums(mip, geo, conditions) / mc
        if label == "default":
            flags = read_events(mip).hits.flags
            clipped = (flags & int(HitFlag.SATURATED)) != 0
            clipped_events = float(np.mean(ak.to_numpy(ak.any(clipped, axis=1))))
    # prediction from the truth, hit by hit
    counts = ak.to_numpy(ak.num(truth.hits))
    deposit = ak.to_numpy(ak.flatten(truth.hits.energy)).astype(np.float64)
    cell = geo.cell_index(ak.to_numpy(ak.flatten(truth.hits.cellid)))
    top = range_top_mip(cell, dense)
    expected_mip = threshold_response(deposit, cell, conditions, top_mip=top)
    predicted = 1.0 - _per_event(expected_mip * conditions.mip_mev[cell], counts) / mc
    true_mip = deposit / conditions.mip_mev[cell]
    threshold = conditions.electronics.threshold_mip
    lost = np.where(true_mip < threshold, true_mip, np.maximum(true_mip - top, 0.0))
    sharp = _per_event(lost * conditions.mip_mev[cell], counts) / mc
    n = mc.size
    measured = 1.0 - ratios["default"]
    cuts = ratios["off"] - ratios["default"]
    return ClosurePoint(
        energy_gev=energy_gev,
        position=position,
        events=n,
        ratio_off=float(ratios["off"].mean()),
        ratio_off_error=float(ratios["off"].std(ddof=1) / np.sqrt(n)),
        ratio_default=float(ratios["default"].mean()),
        ratio_default_error=float(ratios["default"].std(ddof=1) / np.sqrt(n)),
        deficit=float(measured.mean()),
        deficit_predicted=float(predicted.mean()),
        deficit_sharp=float(sharp.mean()),
        deficit_difference_error=float((measured - predicted).std(ddof=1) / np.sqrt(n)),
        deficit_cuts=float(cuts.mean()),
        deficit_cuts_error=float((cuts - predicted).std(ddof=1) / np.sqrt(n)),
        clipped_event_fraction=clipped_events,
    )


def closure_scan(
    geometry: str | Geometry,
    energies_gev: tuple[float, ...],
    events: int,
    seed: int = 1,
    positions: tuple[str, ...] = ("centre", "corner"),
    workdir: Path | None = None,
) -> list[ClosurePoint]:
    """:func:`closure_point` for every energy and position (files in a temporary directory)."""
    with tempfile.TemporaryDirectory(prefix="calocoffea-closure-") as tmp:
        directory = workdir or Path(tmp)
        return [
            closure_point(geometry, energy, position, events, seed + k, directory)
            for k, (energy, position) in enumerate((e, p) for e in energies_gev for p in positions)
        ]


__all__ = ["ClosurePoint", "beam_positions", "closure_point", "closure_scan"]
