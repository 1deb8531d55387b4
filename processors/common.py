"""What every calocoffea processor shares: chunk identity, flat hits, shards, cutflow steps.

A processor's output is a dict of addable things, in four parts (see
:func:`calocoffea.runner.run`):

- ``cutflow``: ``{step: {"events_in": n, ..., "removed": {reason: n}, "flagged": {...}}}``,
  integers only, so any order of accumulation gives the same result;
- ``counts``: unweighted histograms (integer contents: exact in any order);
- ``ordered``: ``{chunk key: {name: hist}}`` of weighted histograms, summed by the runner in
  (file, entry start) order so that floating-point sums are the same on every executor;
- ``shards``: ``{chunk key: path}`` of per-chunk event files, merged by the runner in the
  same order into the output file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from calocoffea.exceptions import GeometryMismatchError
from calocoffea.geometry import get_geometry
from calocoffea.io import FileMetadata, write_events

ChunkKey = tuple[str, int]


def chunk_key(events: Any) -> ChunkKey:
    """(file name, first entry) of the chunk ``events`` came from."""
    return str(events.metadata["filename"]), int(events.metadata["entrystart"])


def global_entries(events: Any) -> np.ndarray:
    """Entry numbers of the chunk's events in their file."""
    return int(events.metadata["entrystart"]) + np.arange(len(events), dtype=np.int64)


def file_identity(events: Any) -> str:
    """The identity of the chunk's file: its ROOT UUID (the same on every worker)."""
    return str(events.metadata["fileuuid"])


def flat_hits(events: Any, fields: tuple[str, ...]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Hits per event and the flat numpy array of each of ``fields`` that the hits have."""
    hits = events.hits
    counts = ak.to_numpy(ak.num(hits, axis=1)).astype(np.int64)
    available = set(hits.fields)
    flat = {
        name: ak.to_numpy(ak.flatten(hits[name], axis=1)) for name in fields if name in available
    }
    return counts, flat


def cell_indices(events: Any, cellid: np.ndarray, geometry_name: str) -> np.ndarray:
    """Dense cell index of every hit; a GeometryMismatchError naming the chunk's file if a
    cell id is not a cell of the geometry."""
    geometry = get_geometry(geometry_name)
    cell = geometry.cell_index(cellid)
    if np.any(cell < 0):
        bad = cellid[cell < 0][:3].tolist()
        raise GeometryMismatchError(
            f"{events.metadata['filename']}: {np.count_nonzero(cell < 0)} hits have cell ids "
            f"that are not cells of {geometry_name!r} (e.g. {bad}); was the file made for "
            "another geometry?"
        )
    return cell


def scalars(events: Any) -> dict[str, np.ndarray]:
    """Every event-level field of the chunk, as numpy arrays."""
    return {name: ak.to_numpy(events[name]) for name in events.fields if name != "hits"}


def cutflow_step(
    events_in: int,
    events_out: int,
    hits_in: int,
    hits_out: int,
    removed: dict[str, int] | None = None,
    flagged: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One step of the cutflow: events and hits in and out, removed and flagged by reason."""
    return {
        "events_in": int(events_in),
        "events_out": int(events_out),
        "hits_in": int(hits_in),
        "hits_out": int(hits_out),
        "removed": {k: int(v) for k, v in (removed or {}).items()},
        "flagged": {k: int(v) for k, v in (flagged or {}).items()},
    }


def write_shard(
    directory: str,
    key: ChunkKey,
    event_fields: dict[str, np.ndarray],
    counts: np.ndarray,
    hit_fields: dict[str, np.ndarray],
    metadata: FileMetadata,
) -> str:
    """Write one chunk's events to ``directory`` and return the shard's path."""
    hits = ak.unflatten(ak.zip(hit_fields, depth_limit=1), counts)
    chunk = ak.zip({**event_fields, "hit": hits}, depth_limit=1)
    stem = hashlib.sha1(key[0].encode()).hexdigest()[:12]
    path = Path(directory) / f"{stem}-{key[1]:012d}-{os.getpid()}.root"
    write_events(path, [chunk], metadata, compression="lz4")  # temporary: fast, not small
    return str(path)
