"""The reconstruct processor: one energy per event from a reconstruction method.

Output per chunk, under ``columns`` (concatenated by the runner in (file, entry) order):
``beam_energy`` [GeV], ``energy`` [GeV] (the method's estimate) and ``clipped_hits`` (hits
flagged SATURATED: their energy is only a lower bound).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import awkward as ak
import numpy as np
from coffea import processor

from calocoffea.flags import HitFlag
from calocoffea.methods import ReconstructionMethod
from calocoffea.processors.common import chunk_key, cutflow_step


@dataclass
class ReconstructProcessor(processor.ProcessorABC):
    """``method.predict`` on every chunk, with the beam energy and the clipped-hit count."""

    method: ReconstructionMethod
    extra: dict[str, Any] = field(default_factory=dict)

    def process(self, events: Any) -> dict[str, Any]:
        """Steps: predict; count clipped hits; return the per-event columns."""
        energy = np.asarray(self.method.predict(events), dtype=np.float64)
        saturated = (events.hits.flags & int(HitFlag.SATURATED)) != 0
        columns = {
            "beam_energy": ak.to_numpy(events.beam_energy).astype(np.float64),
            "energy": energy,
            "clipped_hits": ak.to_numpy(ak.sum(saturated, axis=1)).astype(np.int64),
        }
        step = cutflow_step(len(events), len(events), 0, 0)
        return {"cutflow": {"reconstruct": step}, "columns": {chunk_key(events): columns}}

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator
