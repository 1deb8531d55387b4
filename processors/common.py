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

import contextlib
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import awkward as ak
import numpy as np

from calocoffea.exceptions import (
    BranchTypeError,
    CalocoffeaError,
    DuplicateHitError,
    GeometryMismatchError,
    PluginRuntimeError,
)
from calocoffea.geometry import get_geometry
from calocoffea.io import HIT_DTYPES, HIT_PREFIX, FileMetadata, safe_child, write_events

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
    """Hits per event and the flat numpy array of each of ``fields`` that the hits have,
    documented fields as their documented type (:func:`as_documented`)."""
    hits = events.hits
    counts = ak.to_numpy(ak.num(hits, axis=1)).astype(np.int64)
    available = set(hits.fields)
    flat = {
        name: as_documented(events, name, ak.to_numpy(ak.flatten(hits[name], axis=1)))
        for name in fields
        if name in available
    }
    return counts, flat


def as_documented(events: Any, name: str, values: np.ndarray) -> np.ndarray:
    """The values of hit field ``name`` as its documented type (:data:`HIT_DTYPES`), as
    :func:`~calocoffea.io.write_events` writes them; :func:`~calocoffea.io.open_events`
    lets through only kinds that cast safely (integers for integers, numbers for floats).
    Integers of the same width keep their bits (signed cell ids); narrower integers must fit,
    else a :class:`~calocoffea.exceptions.BranchTypeError`."""
    dtype = HIT_DTYPES.get(name)
    if dtype is None or values.dtype == dtype:
        return values
    if values.dtype.kind in "iu" and dtype.kind in "iu":
        if values.dtype.itemsize == dtype.itemsize:
            return values.view(dtype)
        info = np.iinfo(dtype)
        if values.size and (values.min() < info.min or values.max() > info.max):
            raise BranchTypeError(
                f"{where_in_file(events, HIT_PREFIX + name)}: values {values.min()} to "
                f"{values.max()} do not fit {dtype}, the type calocoffea reads it as; fix the "
                "producer of these values"
            )
    return values.astype(dtype)


def where_in_file(events: Any, branch: str | None = None) -> str:
    """``file: tree 'events'[, branch 'b'], entries a-b`` of the chunk ``events``."""
    meta = events.metadata
    where = f"{meta.get('filename', '?')}: tree {meta.get('treename', 'events')!r}"
    if branch is not None:
        where += f", branch {branch!r}"
    if "entrystart" in meta:
        where += f", entries {meta['entrystart']}-{meta['entrystop']}"
    return where


def cell_indices(events: Any, cellid: np.ndarray, geometry_name: str) -> np.ndarray:
    """Dense cell index of every hit; a GeometryMismatchError naming the chunk's file and
    entries if a cell id is not a cell of the geometry."""
    geometry = get_geometry(geometry_name)
    cell = geometry.cell_index(cellid)
    if np.any(cell < 0):
        bad = cellid[cell < 0][:3].tolist()
        raise GeometryMismatchError(
            f"{where_in_file(events, 'hit_cellid')}: {np.count_nonzero(cell < 0)} hits have "
            f"cell ids that are not cells of {geometry_name!r} (e.g. {bad}); the file was made "
            "for another geometry, or its cell ids are damaged: check its geometry "
            "(`calocoffea info FILE`) and process it with that geometry's conditions and "
            "constants"
        )
    return cell


def _cell_keys(counts: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """One key per hit, equal for hits of one cell in one event: event x cells + cell."""
    event_of_hit = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    return event_of_hit * (int(cell.max(initial=0)) + 1) + cell


def check_one_reading_per_cell(
    events: Any, counts: np.ndarray, cell: np.ndarray, cellid: np.ndarray
) -> None:
    """A :class:`~calocoffea.exceptions.DuplicateHitError` naming the file, entry, event
    and cell if a cell has more than one hit in one event: a read-out reads each cell once
    per event, so raw (and calibrated) hits twice in a cell are a damaged or doubly merged
    file, not physics. (Simulated deposits may be split: :func:`merge_same_cell`.)"""
    key = _cell_keys(counts, cell)
    if key.size < 2 or np.all(key[1:] > key[:-1]):  # hits in cell order: nothing repeats
        return
    ordered = np.sort(key)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if repeated.size == 0:
        return
    first = int(np.flatnonzero(key == repeated[0])[0])
    k = int(np.searchsorted(np.cumsum(counts), first, side="right"))  # its event in the chunk
    entry = int(events.metadata.get("entrystart", 0)) + k
    number = f" (event {int(events.event[k])})" if "event" in events.fields else ""
    meta = events.metadata
    raise DuplicateHitError(
        f"{meta.get('filename', '?')}: tree {meta.get('treename', 'events')!r}, entry "
        f"{entry}{number}: cell {int(cellid[first])} is read "
        f"{int(np.count_nonzero(key == repeated[0]))} times, but a read-out gives one reading "
        f"per cell and event ({repeated.size} repeated readings in entries "
        f"{meta.get('entrystart', 0)}-{meta.get('entrystop', len(counts))}); the file was "
        "merged or written twice over: fix its producer or remove the repeated hits"
    )


def merge_same_cell(
    counts: np.ndarray, flat: dict[str, np.ndarray], cell: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray, int]:
    """Simulated deposits of one event in one cell as one hit, as the cell reads them: at the
    place of its first deposit, ``energy`` and ``edep`` summed, the earliest ``time``, the
    other fields of the first deposit. Only ``valid`` deposits are merged (invalid ones stay
    where they are, to be counted and removed). Returns counts, fields, cells, valid mask and
    the number of deposits merged into an earlier one; the same arrays if there are none."""
    key = _cell_keys(counts, cell)
    if not valid.all():
        key = np.where(valid, key, -1 - np.arange(cell.size))  # a group of their own
    if key.size < 2 or np.all(key[1:] > key[:-1]):  # hits in cell order: nothing repeats
        return counts, flat, cell, valid, 0
    ordered = np.sort(key)
    if not np.any(ordered[1:] == ordered[:-1]):  # the usual case
        return counts, flat, cell, valid, 0
    order = np.argsort(key, kind="stable")
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # of each group
    firsts = order[starts]  # the first deposit of each group (a stable sort)
    place = np.argsort(firsts)  # groups in file order
    keep = firsts[place]
    merged = {name: values[keep] for name, values in flat.items()}
    for name in ("energy", "edep"):
        if name in flat:
            total = np.add.reduceat(flat[name][order].astype(np.float64), starts)
            merged[name] = total[place].astype(flat[name].dtype)
    if "time" in flat:
        merged["time"] = np.minimum.reduceat(flat["time"][order], starts)[place]
    event_of_hit = np.repeat(np.arange(counts.size), counts)
    new_counts = np.bincount(event_of_hit[keep], minlength=counts.size).astype(counts.dtype)
    return new_counts, merged, cell[keep], valid[keep], key.size - keep.size


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
    path = safe_child(directory, f"{stem}-{key[1]:012d}-{os.getpid()}.root")
    write_events(path, [chunk], metadata, compression="lz4")  # temporary: fast, not small
    return str(path)


@contextlib.contextmanager
def plugin_errors(method: Any, family: str, step: str, events: Any) -> Iterator[None]:
    """Around a plugin's per-chunk code (``step``, e.g. ``collect``): an error it raises
    becomes a :class:`~calocoffea.exceptions.PluginRuntimeError` that names the plugin, the
    chunk's file and entry range, with the error as its ``__cause__``. Calocoffea errors,
    which already say what is wrong with the input, pass unchanged."""
    try:
        yield
    except CalocoffeaError:
        raise
    except Exception as err:
        from calocoffea import registry

        cls = type(method)
        name = registry.name_of(cls, family)
        plugin = f"{name!r} ({cls.__module__}.{cls.__qualname__})" if name else cls.__qualname__
        meta = events.metadata
        raise PluginRuntimeError(
            f"plugin {plugin} raised {type(err).__name__} in {step}() on {meta['filename']} "
            f"entries {meta['entrystart']}-{meta['entrystop']}: {err}; this is an error of the "
            "plugin, not of calocoffea: fix it or report it to its authors with this file and "
            "entry range (the original error, with its traceback, is the cause of this one), or "
            "use another method"
        ) from err
