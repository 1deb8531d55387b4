"""The calibrate processor: raw hits [ADC] -> calibrated hits [MIP or GeV]."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from coffea import processor

from calocoffea import __version__
from calocoffea.calibration import CalibrationSteps, calibrate
from calocoffea.constants import Constants, DenseConstants
from calocoffea.geometry import get_geometry
from calocoffea.io import FileMetadata
from calocoffea.processors.common import (
    cell_indices,
    check_one_reading_per_cell,
    chunk_key,
    cutflow_step,
    flat_hits,
    scalars,
    write_shard,
)

_PASSED = ("cellid", "layer", "i", "j", "x", "y", "z", "time", "gain", "edep")


def calibrate_chunk(
    events: Any,
    geometry_name: str,
    dense: DenseConstants,
    steps: CalibrationSteps,
    fields: tuple[str, ...] = _PASSED,
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, dict[str, Any]]:
    """Calibrate the raw hits of a chunk: (hits per event, flat hit fields with the calibrated
    ``energy`` and ``flags``, dense cell indices, cutflow step). Nothing is removed. Only
    ``fields`` (with ``cellid``, ``layer``, ``gain``) are read besides energy and flags.
    A cell read twice in one event is a DuplicateHitError (:func:`check_one_reading_per_cell`)."""
    needed = dict.fromkeys(("cellid", "layer", "gain", *fields, "energy", "flags"))
    counts, flat = flat_hits(events, tuple(needed))
    cell = cell_indices(events, flat["cellid"], geometry_name)
    check_one_reading_per_cell(events, counts, cell, flat["cellid"])
    calibrated, step = calibrate_flat(len(events), flat, cell, dense, steps)
    return counts, calibrated, cell, step


def calibrate_flat(
    n_events: int,
    flat: dict[str, np.ndarray],
    cell: np.ndarray,
    dense: DenseConstants,
    steps: CalibrationSteps,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Calibrate flat raw hit fields (``energy`` [ADC], ``layer``, optional ``gain`` and
    ``flags``) of ``n_events`` events: (the fields with calibrated ``energy`` and ``flags``,
    cutflow step)."""
    n = cell.size
    gain = flat.get("gain", np.zeros(n, np.uint8))
    flags = flat.get("flags", np.zeros(n, np.uint32))
    result = calibrate(flat["energy"], gain, flags, cell, flat["layer"], dense, steps)
    fields = {name: flat[name] for name in _PASSED if name in flat}
    fields["energy"] = result.energy
    fields["flags"] = result.flags
    return fields, cutflow_step(n_events, n_events, n, n, {}, result.flagged)


@dataclass
class CalibrateProcessor(processor.ProcessorABC):
    """Apply constants to every hit of a chunk and write the calibrated events as a shard."""

    constants: Constants
    shard_dir: str
    steps: CalibrationSteps = field(default_factory=CalibrationSteps)
    geometry: str = ""
    dense: DenseConstants = field(init=False, repr=False)

    def __post_init__(self) -> None:
        geometry = get_geometry(self.geometry or self.constants.provenance.geometry)
        self.geometry = geometry.name
        self.dense = self.constants.dense(geometry)

    def metadata(self) -> FileMetadata:
        p = self.constants.provenance
        return FileMetadata(
            stage=self.steps.stage,
            geometry=self.geometry,
            geometry_hash=p.geometry_hash,
            producer=f"calocoffea {__version__} calibrate",
            extra={"constants": p.method, "constants_sample": p.sample, "steps": vars(self.steps)},
        )

    def process(self, events: Any) -> dict[str, Any]:
        """Steps: flatten; calibrate (:func:`calocoffea.calibration.calibrate`); write shard."""
        key = chunk_key(events)
        counts, fields, _, step = calibrate_chunk(events, self.geometry, self.dense, self.steps)
        shard = write_shard(self.shard_dir, key, scalars(events), counts, fields, self.metadata())
        return {"cutflow": {"calibrate": step}, "shards": {key: shard}}

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator
