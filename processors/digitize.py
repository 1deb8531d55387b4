"""The digitize processor: simulated deposits [MeV] -> raw hits [ADC] (seed 000 chain)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from coffea import processor

from calocoffea import __version__, rng
from calocoffea.conditions import Conditions
from calocoffea.digitization import DigitizationOptions, digitize
from calocoffea.flags import count_flags
from calocoffea.io import FileMetadata
from calocoffea.processors.common import (
    cell_indices,
    chunk_key,
    cutflow_step,
    file_identity,
    flat_hits,
    global_entries,
    merge_same_cell,
    scalars,
    write_shard,
)

_PASSED = ("cellid", "layer", "i", "j", "x", "y", "z")


@dataclass
class DigitizeProcessor(processor.ProcessorABC):
    """Digitise every hit of a chunk and write the chunk's raw events as a shard.

    Holds only configuration (pickles; no state between chunks). Random numbers are keyed
    by (``seed``, file UUID, global entry, hit, stream): the output does not depend on the
    executor or the chunking.
    """

    conditions: Conditions
    seed: int
    shard_dir: str
    options: DigitizationOptions = field(default_factory=DigitizationOptions)

    def metadata(self, extra: dict[str, Any] | None = None) -> FileMetadata:
        """Metadata of the raw files this processor writes."""
        return FileMetadata(
            stage="raw",
            geometry=self.conditions.geometry,
            geometry_hash=self.conditions.geometry_hash,
            producer=f"calocoffea {__version__} digitize",
            extra={
                "seed": self.seed,
                "conditions": self.conditions.label,
                "conditions_seed": self.conditions.seed,
                "zero_suppression": self.options.zero_suppression,
                "clipping": self.options.clipping,
                "threshold_mip": self.options.threshold(self.conditions.electronics),
                **({"dual_gain": True} if self.options.dual_gain else {}),
                **(extra or {}),
            },
        )

    def process(self, events: Any) -> dict[str, Any]:
        """Steps: digitise the chunk (:func:`digitize_chunk`); write the shard; return cutflow
        and shard path."""
        key = chunk_key(events)
        counts, hit_fields, step = digitize_chunk(events, self.conditions, self.seed, self.options)
        shard = write_shard(
            self.shard_dir, key, scalars(events), counts, hit_fields, self.metadata()
        )
        return {"cutflow": {"digitize": step}, "shards": {key: shard}}

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


def digitize_chunk(
    events: Any,
    conditions: Conditions,
    seed: int,
    options: DigitizationOptions,
    fields: tuple[str, ...] = (*_PASSED, "time"),
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """Digitise the simulated hits of a chunk: (kept hits per event, flat raw hit fields,
    cutflow step).

    Steps: flatten hits; remove invalid deposits (NaN, negative: counted); look up cells;
    digitise (:func:`calocoffea.digitization.digitize`, random numbers keyed by ``seed``, the
    file's UUID and the global entry); keep hits above threshold in live cells. Of the
    passed-through hit fields only ``fields`` are read (``cellid`` always).

    Deposits of one event in one cell are summed first (:func:`merge_same_cell`, counted as
    ``merged_same_cell``): the cell is read once, and its response is not linear."""
    counts, flat = flat_hits(events, tuple(dict.fromkeys(("cellid", *fields, "energy"))))
    n_in = flat["energy"].size
    valid = np.isfinite(flat["energy"]) & (flat["energy"] >= 0)
    cell = cell_indices(events, flat["cellid"], conditions.geometry)
    counts, flat, cell, valid, merged = merge_same_cell(counts, flat, cell, valid)
    energy = flat["energy"].astype(np.float64)
    keys = rng.event_keys(rng.file_key(seed, file_identity(events)), global_entries(events))
    result = digitize(np.where(valid, energy, 0.0), cell, keys, counts, conditions, options)
    keep = result.keep & valid
    event_of_hit = np.repeat(np.arange(len(counts)), counts)
    out_counts = np.bincount(event_of_hit[keep], minlength=len(counts))
    hit_fields = {name: flat[name][keep] for name in _PASSED if name in flat}
    hit_fields["energy"] = result.adc[keep]
    if "time" in fields:
        time = (flat["time"] if "time" in flat else 0.0) + result.time
        hit_fields["time"] = np.broadcast_to(time, energy.shape)[keep]
    hit_fields["flags"] = result.flags[keep]
    hit_fields["gain"] = result.gain[keep]
    hit_fields["edep"] = energy[keep]
    if result.adc_lg is not None:  # dual-gain read-out: the low gain of every hit
        hit_fields["adc_lg"] = result.adc_lg[keep].astype(np.float32)
    dead = conditions.dead[cell]
    removed = {
        "invalid_deposit": int(np.count_nonzero(~valid)),
        "dead_cell": int(np.count_nonzero(valid & dead)),
        "below_threshold": int(np.count_nonzero(valid & ~dead & ~result.keep)),
        **({"merged_same_cell": merged} if merged else {}),
    }
    flagged = {name: n for name, n in count_flags(hit_fields["flags"]).items() if name != "dead"}
    step = cutflow_step(len(events), len(events), n_in, int(keep.sum()), removed, flagged)
    return out_counts, hit_fields, step
