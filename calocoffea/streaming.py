"""Whole showers from per-chunk shards, in shuffled batches, with bounded memory.

What to use when:

- :class:`ShowerLoader` -- train anything that needs whole showers (Calibr-A-Ton, the
  per-layer calibration, the networks) on more showers than fit in memory. It reads the
  shards that :func:`calocoffea.runner.fit_files` writes for ``needs_events`` methods (ROOT
  files of the events layout) or compact ``.npz`` shards (:func:`write_npz_shard`), and
  yields :class:`ShowerBatch` es: flat per-hit arrays, the batch-local shower index of every
  hit and per-shower scalars, so that a loss is a gather and a scatter-add over flat hits,
  never a Python loop over showers.
- :meth:`ShowerLoader.split` -- train/test split by shower (not by shard), deterministic.
- :meth:`ShowerLoader.subset` -- keep the showers of a mask (a fiducial selection).
- :meth:`ShowerLoader.scalars` -- per-shower scalars of every shower, without the hits.
- :func:`torch_batch` -- a batch as torch tensors (no copy); the only place torch appears.

Shuffling (seed 001's sharded shuffling, "mimic shuffle while avoiding OOM"): every epoch
the shard order is permuted; shards are read one after the other into a buffer; when the
buffer holds ``buffer_showers`` showers it is permuted as a whole, full batches are emitted
from its front and the other half is kept to mix with the next shards. At most
``buffer_showers`` plus the showers of one shard are held (and a transient copy while
mixing); :attr:`ShowerLoader.peak_buffered` reports the most held in the last epoch.
The order is a pure function of (``seed``, epoch): the same in every run and process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from calocoffea.exceptions import InputFileError, MissingBranchError

IntArray = npt.NDArray[np.int64]
AnyArray = npt.NDArray[Any]

#: Names of the arrays of a compact ``.npz`` shard that are not fields.
_COUNTS = "__counts__"
_EVENT = "event:"
_HIT = "hit:"


@dataclass(frozen=True)
class ShowerBatch:
    """Whole showers as flat arrays.

    ``hits[name]`` has one value per hit, showers one after the other; ``shower`` is the
    batch-local index (0 .. n_showers - 1) of the shower of each hit, for gathers and
    ``np.bincount`` / ``index_add_`` scatter-adds; ``events[name]`` has one value per
    shower; ``ids`` are the showers' global ids (position over all shards of the loader,
    in shard order), stable across epochs, subsets and splits.
    """

    hits: dict[str, AnyArray]
    events: dict[str, AnyArray]
    counts: IntArray
    ids: IntArray

    @property
    def n_showers(self) -> int:
        return int(self.counts.size)

    @property
    def n_hits(self) -> int:
        return int(self.counts.sum())

    @property
    def shower(self) -> IntArray:
        """Batch-local shower index of every hit."""
        return np.repeat(np.arange(self.counts.size, dtype=np.int64), self.counts)

    @property
    def offsets(self) -> IntArray:
        """First hit of each shower, and the total at the end (n_showers + 1 values)."""
        return np.concatenate(([0], np.cumsum(self.counts)))

    def sum_per_shower(self, values: AnyArray) -> npt.NDArray[np.float64]:
        """Per-shower sum of a per-hit array (float64)."""
        return np.bincount(self.shower, weights=values, minlength=self.n_showers).astype(
            np.float64, copy=False
        )

    # ---- construction helpers (vectorised over showers) ---------------------------
    def take(self, showers: IntArray) -> ShowerBatch:
        """The showers at batch positions ``showers``, in that order."""
        showers = np.asarray(showers, dtype=np.int64)
        starts = self.offsets[:-1][showers]
        lengths = self.counts[showers]
        index = _ranges(starts, lengths)
        return ShowerBatch(
            {k: v[index] for k, v in self.hits.items()},
            {k: v[showers] for k, v in self.events.items()},
            lengths,
            self.ids[showers],
        )

    def slice(self, start: int, stop: int) -> ShowerBatch:
        """Showers ``start .. stop`` (views, no copy)."""
        offsets = self.offsets
        first, last = int(offsets[start]), int(offsets[stop])
        return ShowerBatch(
            {k: v[first:last] for k, v in self.hits.items()},
            {k: v[start:stop] for k, v in self.events.items()},
            self.counts[start:stop],
            self.ids[start:stop],
        )

    @staticmethod
    def concatenate(batches: Sequence[ShowerBatch]) -> ShowerBatch:
        if len(batches) == 1:
            return batches[0]
        first = batches[0]
        return ShowerBatch(
            {k: np.concatenate([b.hits[k] for b in batches]) for k in first.hits},
            {k: np.concatenate([b.events[k] for b in batches]) for k in first.events},
            np.concatenate([b.counts for b in batches]),
            np.concatenate([b.ids for b in batches]),
        )


def _ranges(starts: IntArray, lengths: IntArray) -> IntArray:
    """``concatenate([arange(s, s + n) for s, n in zip(starts, lengths)])``, vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    shift = starts - np.concatenate(([0], np.cumsum(lengths)[:-1]))
    return np.repeat(shift, lengths) + np.arange(total, dtype=np.int64)


def write_npz_shard(
    path: str | os.PathLike[str],
    event_fields: Mapping[str, AnyArray],
    counts: AnyArray,
    hit_fields: Mapping[str, AnyArray],
) -> Path:
    """Write a compact shard (uncompressed ``.npz``: fast to read, for derived inputs such as
    binned hits); the same layout the loader reads from ROOT shards."""
    counts = np.asarray(counts, dtype=np.int64)
    n_hits = int(counts.sum())
    for name, values in event_fields.items():
        if len(values) != counts.size:
            raise ValueError(f"event field {name!r} has {len(values)} values for {counts.size}")
    for name, values in hit_fields.items():
        if len(values) != n_hits:
            raise ValueError(f"hit field {name!r} has {len(values)} values for {n_hits} hits")
    arrays = {_COUNTS: counts}
    arrays.update({_EVENT + k: np.asarray(v) for k, v in event_fields.items()})
    arrays.update({_HIT + k: np.asarray(v) for k, v in hit_fields.items()})
    target = Path(path)
    with open(target, "wb") as stream:
        np.savez(stream, **arrays)  # type: ignore[arg-type]
    return target.absolute()


# ------------------------------------------------------------------------------ shards


def _is_npz(path: str) -> bool:
    return path.endswith(".npz")


def _shard_size(path: str) -> int:
    """Number of showers in a shard, read without its hits."""
    if _is_npz(path):
        with np.load(path) as data:
            return int(data[_COUNTS].size)
    import uproot

    try:
        with uproot.open(path) as file:
            return int(file["events"].num_entries)
    except (OSError, KeyError, ValueError) as err:
        raise InputFileError(f"cannot read the shard {path}: {err}") from err


def _missing(path: str, kind: str, wanted: Sequence[str], available: Sequence[str]) -> None:
    missing = [name for name in wanted if name not in available]
    if missing:
        raise MissingBranchError(
            f"shard {path} has no {kind} field(s) {', '.join(map(repr, missing))}; it has "
            f"{', '.join(sorted(available)) or 'none'}; ask the loader for fields the method's "
            "collect writes"
        )


def _read_shard(
    path: str, fields: Sequence[str], event_fields: Sequence[str]
) -> tuple[IntArray, dict[str, AnyArray], dict[str, AnyArray]]:
    """(counts, hit fields, event fields) of a whole shard as numpy arrays."""
    if _is_npz(path):
        with np.load(path) as data:
            names = list(data.keys())
            hit_names = [n[len(_HIT) :] for n in names if n.startswith(_HIT)]
            event_names = [n[len(_EVENT) :] for n in names if n.startswith(_EVENT)]
            _missing(path, "hit", fields, hit_names)
            _missing(path, "event", event_fields, event_names)
            counts = data[_COUNTS].astype(np.int64)
            hits = {k: data[_HIT + k] for k in fields}
            events = {k: data[_EVENT + k] for k in event_fields}
        return counts, hits, events
    import awkward as ak
    import uproot

    try:
        with uproot.open(path) as file:
            tree = file["events"]
            keys = set(tree.keys())
            _missing(path, "hit", fields, [k[4:] for k in keys if k.startswith("hit_")])
            _missing(path, "event", event_fields, [k for k in keys if not k.startswith("hit_")])
            counts = np.asarray(tree["nhit"].array(library="np"), dtype=np.int64)
            hits = {
                k: ak.to_numpy(ak.flatten(tree["hit_" + k].array(library="ak"), axis=None))
                for k in fields
            }
            events = {k: np.asarray(tree[k].array(library="np")) for k in event_fields}
    except (OSError, KeyError, ValueError) as err:
        if isinstance(err, MissingBranchError):
            raise
        raise InputFileError(f"cannot read the shard {path}: {err}") from err
    return counts, hits, events


# ------------------------------------------------------------------------------ loader


class ShowerLoader:
    """Batches of whole showers from shards, shuffled with a bounded buffer.

    ``fields`` are hit fields (``hit_<name>`` branches of ROOT shards), ``event_fields``
    per-shower scalars. ``selection`` keeps, per shard, the sorted local entries to use
    (None: all); build it with :meth:`subset` and :meth:`split` rather than by hand.
    ``sizes`` (showers per shard) saves reading them when known.
    """

    def __init__(
        self,
        shard_paths: Sequence[str | os.PathLike[str]],
        *,
        fields: Sequence[str],
        event_fields: Sequence[str] = (),
        batch_showers: int = 500,
        buffer_showers: int = 50_000,
        seed: int = 0,
        drop_last: bool = False,
        selection: Sequence[IntArray | None] | None = None,
        sizes: Sequence[int] | None = None,
    ) -> None:
        self.shard_paths = tuple(str(p) for p in shard_paths)
        if batch_showers < 1:
            raise ValueError(f"batch_showers must be at least 1, got {batch_showers}")
        if buffer_showers < batch_showers:
            raise ValueError(
                f"buffer_showers ({buffer_showers}) must hold at least one batch "
                f"(batch_showers={batch_showers})"
            )
        if selection is not None and len(selection) != len(self.shard_paths):
            raise ValueError(
                f"selection has {len(selection)} entries for {len(self.shard_paths)} shards"
            )
        self.fields = tuple(fields)
        self.event_fields = tuple(event_fields)
        self.batch_showers = int(batch_showers)
        self.buffer_showers = int(buffer_showers)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.selection = None if selection is None else tuple(selection)
        self._sizes = None if sizes is None else tuple(int(s) for s in sizes)
        #: most showers held in memory during the last epoch (for checks and tuning)
        self.peak_buffered = 0

    def __repr__(self) -> str:
        return (
            f"ShowerLoader({len(self.shard_paths)} shards, {self.n_showers} showers, "
            f"fields={self.fields}, event_fields={self.event_fields}, "
            f"batch_showers={self.batch_showers}, buffer_showers={self.buffer_showers}, "
            f"seed={self.seed})"
        )

    # ---- sizes --------------------------------------------------------------------
    @property
    def shard_sizes(self) -> tuple[int, ...]:
        """Showers in each shard (all of them, before any selection); read once."""
        if self._sizes is None:
            self._sizes = tuple(_shard_size(p) for p in self.shard_paths)
        return self._sizes

    @property
    def _offsets(self) -> IntArray:
        return np.concatenate(([0], np.cumsum(self.shard_sizes, dtype=np.int64)))

    def _entries(self, k: int) -> IntArray:
        if self.selection is None or self.selection[k] is None:
            return np.arange(self.shard_sizes[k], dtype=np.int64)
        return np.asarray(self.selection[k], dtype=np.int64)

    @property
    def n_showers(self) -> int:
        """Showers this loader yields per epoch."""
        return sum(self._entries(k).size for k in range(len(self.shard_paths)))

    @property
    def ids(self) -> IntArray:
        """Global ids of the showers this loader yields, in shard order."""
        offsets = self._offsets
        parts = [offsets[k] + self._entries(k) for k in range(len(self.shard_paths))]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def __len__(self) -> int:
        """Batches per epoch."""
        n = self.n_showers
        return n // self.batch_showers if self.drop_last else -(-n // self.batch_showers)

    # ---- derived loaders ------------------------------------------------------------
    def _with(self, **changes: Any) -> ShowerLoader:
        values: dict[str, Any] = {
            "fields": self.fields,
            "event_fields": self.event_fields,
            "batch_showers": self.batch_showers,
            "buffer_showers": self.buffer_showers,
            "seed": self.seed,
            "drop_last": self.drop_last,
            "selection": self.selection,
            "sizes": self.shard_sizes,
        }
        values.update(changes)
        return ShowerLoader(self.shard_paths, **values)

    def with_options(self, **changes: Any) -> ShowerLoader:
        """A copy with other fields, batch size, buffer, seed or drop_last."""
        allowed = {"fields", "event_fields", "batch_showers", "buffer_showers", "seed",
                   "drop_last"}  # fmt: skip
        unknown = sorted(set(changes) - allowed)
        if unknown:
            raise ValueError(f"unknown loader option(s) {unknown}; valid: {sorted(allowed)}")
        return self._with(**changes)

    def subset(self, keep: npt.ArrayLike) -> ShowerLoader:
        """The showers where ``keep`` (one bool per shower of this loader, in :attr:`ids`
        order) is true."""
        mask = np.asarray(keep, dtype=bool)
        if mask.shape != (self.n_showers,):
            raise ValueError(f"keep has shape {mask.shape}; expected ({self.n_showers},)")
        selection, start = [], 0
        for k in range(len(self.shard_paths)):
            entries = self._entries(k)
            selection.append(entries[mask[start : start + entries.size]])
            start += entries.size
        return self._with(selection=tuple(selection))

    def split(self, train_fraction: float, seed: int) -> tuple[ShowerLoader, ShowerLoader]:
        """(train, test): a random ``train_fraction`` of the showers and the rest, by shower
        (showers of one shard go to both); disjoint, complete, the same for the same seed."""
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction}")
        n = self.n_showers
        n_train = round(train_fraction * n)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
        train = np.zeros(n, dtype=bool)
        train[rng.permutation(n)[:n_train]] = True
        return self.subset(train), self.subset(~train)

    # ---- reading --------------------------------------------------------------------
    def _read(self, k: int, fields: Sequence[str], event_fields: Sequence[str]) -> ShowerBatch:
        counts, hits, events = _read_shard(self.shard_paths[k], fields, event_fields)
        if counts.size != self.shard_sizes[k]:
            raise InputFileError(
                f"shard {self.shard_paths[k]} now holds {counts.size} showers, not "
                f"{self.shard_sizes[k]}; was it rewritten while in use?"
            )
        ids = self._offsets[k] + np.arange(counts.size, dtype=np.int64)
        block = ShowerBatch(hits, events, counts, ids)
        if self.selection is None or self.selection[k] is None:
            return block
        return block.take(np.asarray(self.selection[k], dtype=np.int64))

    def scalars(self, names: Sequence[str]) -> dict[str, AnyArray]:
        """Per-shower ``names`` of every shower of this loader, in :attr:`ids` order (the
        hits are not read)."""
        parts = [self._read(k, (), names) for k in range(len(self.shard_paths))]
        parts = [p for p in parts if p.n_showers] or parts[:1]
        if not parts:
            return {name: np.zeros(0) for name in names}
        return ShowerBatch.concatenate(parts).events

    # ---- iteration ------------------------------------------------------------------
    def __iter__(self) -> Iterator[ShowerBatch]:
        return self.epoch(0)

    def epoch(self, epoch: int = 0, *, shuffle: bool = True) -> Iterator[ShowerBatch]:
        """The batches of one epoch; ``shuffle=False`` reads the showers in shard order
        (for passes that only accumulate)."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(epoch)]))
        n_shards = len(self.shard_paths)
        order = rng.permutation(n_shards) if shuffle else np.arange(n_shards)
        batch = self.batch_showers
        keep = self.buffer_showers // 2 if shuffle else 0
        pool: list[ShowerBatch] = []
        pooled = 0
        self.peak_buffered = 0
        for k in order:
            block = self._read(int(k), self.fields, self.event_fields)
            if block.n_showers == 0:
                continue
            pool.append(block)
            pooled += block.n_showers
            self.peak_buffered = max(self.peak_buffered, pooled)
            if pooled < self.buffer_showers:
                continue
            mixed = self._mix(pool, rng, shuffle)
            emit = (mixed.n_showers - keep) // batch * batch
            for start in range(0, emit, batch):
                yield mixed.slice(start, start + batch)
            pool = [mixed.slice(emit, mixed.n_showers)]
            pooled = pool[0].n_showers
        if pooled == 0:
            return
        mixed = self._mix(pool, rng, shuffle)
        for start in range(0, mixed.n_showers, batch):
            stop = min(start + batch, mixed.n_showers)
            if stop - start < batch and self.drop_last:
                break
            yield mixed.slice(start, stop)

    @staticmethod
    def _mix(pool: list[ShowerBatch], rng: np.random.Generator, shuffle: bool) -> ShowerBatch:
        merged = ShowerBatch.concatenate(pool)
        return merged.take(rng.permutation(merged.n_showers)) if shuffle else merged


def torch_batch(batch: ShowerBatch, device: Any = "cpu") -> dict[str, Any]:
    """The batch as torch tensors: every hit and event field, ``shower`` (int64) and
    ``counts``; numpy arrays are shared, not copied, on the CPU. Needs the ``train`` extra."""
    import torch

    out: dict[str, Any] = {k: torch.as_tensor(v, device=device) for k, v in batch.hits.items()}
    out.update({k: torch.as_tensor(v, device=device) for k, v in batch.events.items()})
    out["shower"] = torch.as_tensor(batch.shower, device=device)
    out["counts"] = torch.as_tensor(batch.counts, device=device)
    return out


__all__ = ["ShowerBatch", "ShowerLoader", "torch_batch", "write_npz_shard"]
