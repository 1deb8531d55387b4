"""A histogram processor whose chunks wait at a gate, for tests that interrupt a run.

Each chunk marks that it started (a file ``started-<pid>-<file>-<entry start>`` in the gate
directory, so the test knows which worker process holds which chunk), then waits until the
file ``release`` exists there, then runs as :class:`HistogramProcessor`. A test can so
kill a worker while it certainly holds a chunk, without relying on timing. Dask workers
import this module by name: start them with the tests directory on ``PYTHONPATH``.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calocoffea.processors.common import chunk_key
from calocoffea.processors.histogram import HistogramProcessor

#: How long a chunk waits for the release before it fails [s].
GATE_TIMEOUT_S = 60.0


@dataclass
class GatedHistogramProcessor(HistogramProcessor):
    """:class:`HistogramProcessor` whose chunks wait for ``<gate>/release``."""

    gate: str = ""

    def process(self, events: Any) -> dict[str, Any]:
        """Steps: mark the chunk as started, wait for the release, fill the histograms."""
        gate = Path(self.gate)
        filename, start = chunk_key(events)
        stem = hashlib.sha1(filename.encode()).hexdigest()[:8]
        (gate / f"started-{os.getpid()}-{stem}-{start}").touch()
        deadline = time.monotonic() + GATE_TIMEOUT_S
        while not (gate / "release").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gate {gate} was not opened in {GATE_TIMEOUT_S} s")
            time.sleep(0.01)
        return super().process(events)


def started(gate: Path) -> list[tuple[int, str]]:
    """(worker pid, chunk) of every chunk start so far, a chunk run twice listed twice."""
    out = []
    for marker in gate.glob("started-*"):
        _, pid, chunk = marker.name.split("-", 2)
        out.append((int(pid), chunk))
    return out
