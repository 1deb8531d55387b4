"""The collect processor: runs a calibration method's ``collect`` on every chunk.

For methods that learn from histograms the output is ``{"collected": ...}``, summed by
coffea (integer histograms add exactly in any order). For methods that need whole events
(``needs_events``) the chunk's events are written as a shard and only its path travels back,
so nothing large crosses Dask; ``fit`` then receives the shard paths in (file, entry) order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coffea import processor

from calocoffea import __version__
from calocoffea.io import FileMetadata
from calocoffea.methods import CalibrationMethod
from calocoffea.processors.common import chunk_key, cutflow_step, plugin_errors, write_shard


@dataclass
class CollectProcessor(processor.ProcessorABC):
    """``method.collect`` per chunk; shards of the events for ``needs_events`` methods."""

    method: CalibrationMethod
    shard_dir: str = ""
    geometry_hash: str = ""

    def process(self, events: Any) -> dict[str, Any]:
        """Steps: collect; for whole-event methods, write the collected events as a shard."""
        with plugin_errors(self.method, "calibrations", "collect", events):
            collected = self.method.collect(events)
        step = cutflow_step(len(events), len(events), 0, 0)
        if not self.method.needs_events:
            return {"cutflow": {"collect": step}, "collected": collected}
        event_fields, counts, hit_fields = collected
        metadata = FileMetadata(
            stage=self.method.input_stage,
            geometry=self.method.geometry,
            geometry_hash=self.geometry_hash,
            producer=f"calocoffea {__version__} collect ({type(self.method).__name__})",
        )
        key = chunk_key(events)
        path = write_shard(self.shard_dir, key, event_fields, counts, hit_fields, metadata)
        return {"cutflow": {"collect": step}, "shards": {key: path}}

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator
