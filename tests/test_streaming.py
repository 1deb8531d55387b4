"""The shower loader: whole showers in shuffled batches from shards, bounded memory."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from calocoffea.exceptions import MissingBranchError
from calocoffea.geometry import get_geometry
from calocoffea.io import FileMetadata, write_events
from calocoffea.streaming import ShowerBatch, ShowerLoader, torch_batch, write_npz_shard

#: showers per shard: uneven, one empty shard, one larger than the buffer
SIZES = (120, 37, 0, 260, 91, 55, 140, 1)
N = sum(SIZES)


def _shower_hits(rng: np.random.Generator, first_id: int, n: int) -> tuple:
    counts = rng.integers(0, 12, n)
    tag = np.repeat(first_id + np.arange(n), counts)  # every hit knows its shower
    energy = rng.exponential(1.0, tag.size).astype(np.float32)
    return counts, tag, energy


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """npz shards, two of them ROOT files of the events layout instead."""
    work = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(3)
    geometry = get_geometry("cepc_ahcal")
    metadata = FileMetadata(stage="sim", geometry=geometry.name, geometry_hash=geometry.hash)
    paths, first = [], 0
    for k, n in enumerate(SIZES):
        counts, tag, energy = _shower_hits(rng, first, n)
        ids = first + np.arange(n)
        if k in (1, 4):  # ROOT shards, as the runner writes them
            hits = {
                "cellid": np.zeros(tag.size, np.uint64), "layer": np.zeros(tag.size, np.int16),
                "x": energy, "y": energy, "z": energy, "energy": energy,
                "tag": tag.astype(np.int64),
            }  # fmt: skip
            chunk = ak.zip(
                {
                    "event": ids, "run": np.zeros(n, np.int32), "pdg": np.full(n, 11, np.int32),
                    "beam_energy": ids * 1.0, "e_ref": ids * 1.0,
                    "hit": ak.unflatten(ak.zip(hits), counts),
                },
                depth_limit=1,
            )  # fmt: skip
            paths.append(str(write_events(work / f"s{k}.root", [chunk], metadata)))
        else:
            path = write_npz_shard(
                work / f"s{k}.npz",
                {"e_ref": ids * 1.0, "event": ids},
                counts,
                {"tag": tag, "energy": energy},
            )
            paths.append(str(path))
        first += n
    return paths


def loader(shards: list[str], **options: object) -> ShowerLoader:
    kwargs: dict = {
        "fields": ("tag", "energy"), "event_fields": ("e_ref",), "seed": 1,
        "batch_showers": 50, "buffer_showers": 200,
    }  # fmt: skip
    kwargs.update(options)
    return ShowerLoader(shards, **kwargs)


def _check_whole(batch: ShowerBatch) -> None:
    """Every hit of the batch belongs to the shower its index names, in order."""
    assert batch.hits["tag"].size == batch.counts.sum()
    np.testing.assert_array_equal(batch.hits["tag"], batch.ids[batch.shower])
    np.testing.assert_array_equal(batch.events["e_ref"], batch.ids * 1.0)


def test_every_shower_once_per_epoch_as_whole_showers(shards: list[str]) -> None:
    data = loader(shards)
    assert data.n_showers == N
    assert data.shard_sizes == SIZES
    for epoch in (0, 1):
        seen = []
        batches = list(data.epoch(epoch))
        for batch in batches:
            _check_whole(batch)
            seen.append(batch.ids)
        ids = np.concatenate(seen)
        np.testing.assert_array_equal(np.sort(ids), np.arange(N))
        sizes = [b.n_showers for b in batches]
        assert all(s == 50 for s in sizes[:-1]) and 0 < sizes[-1] <= 50
        assert len(batches) == len(data)


def test_drop_last_and_sequential(shards: list[str]) -> None:
    data = loader(shards, drop_last=True)
    batches = list(data.epoch(0))
    assert all(b.n_showers == 50 for b in batches)
    assert len(batches) == N // 50 == len(data)
    ordered = np.concatenate([b.ids for b in loader(shards).epoch(0, shuffle=False)])
    np.testing.assert_array_equal(ordered, np.arange(N))


def test_order_is_a_function_of_seed_and_epoch(shards: list[str]) -> None:
    def order(seed: int, epoch: int) -> np.ndarray:
        return np.concatenate([b.ids for b in loader(shards, seed=seed).epoch(epoch)])

    np.testing.assert_array_equal(order(1, 0), order(1, 0))
    assert not np.array_equal(order(1, 0), order(2, 0))
    assert not np.array_equal(order(1, 0), order(1, 1))
    # the buffer mixes showers of different shards inside a batch
    first = next(iter(loader(shards).epoch(0)))
    shard_of = np.searchsorted(np.cumsum(SIZES), first.ids, side="right")
    assert np.unique(shard_of).size > 1


def test_buffer_bound(shards: list[str]) -> None:
    for buffer in (50, 200, 1000):
        data = loader(shards, buffer_showers=buffer)
        for _ in data.epoch(0):
            pass
        assert 0 < data.peak_buffered <= buffer + max(SIZES)
    with pytest.raises(ValueError, match="at least one batch"):
        ShowerLoader(shards, fields=("tag",), batch_showers=100, buffer_showers=10)


def test_split_by_shower(shards: list[str]) -> None:
    data = loader(shards)
    train, test = data.split(0.7, seed=5)
    assert train.n_showers == round(0.7 * N)
    assert np.intersect1d(train.ids, test.ids).size == 0
    np.testing.assert_array_equal(np.union1d(train.ids, test.ids), np.arange(N))
    # by shower, not by shard: most shards give showers to both samples
    shard_train = np.searchsorted(np.cumsum(SIZES), train.ids, side="right")
    shard_test = np.searchsorted(np.cumsum(SIZES), test.ids, side="right")
    assert np.intersect1d(shard_train, shard_test).size >= 5
    again, _ = data.split(0.7, seed=5)
    np.testing.assert_array_equal(again.ids, train.ids)
    other, _ = data.split(0.7, seed=6)
    assert not np.array_equal(other.ids, train.ids)
    for batch in train.epoch(3):  # a split loader still yields whole showers
        _check_whole(batch)
    seen = np.concatenate([b.ids for b in test.epoch(0)])
    np.testing.assert_array_equal(np.sort(seen), test.ids)
    with pytest.raises(ValueError, match=r"train_fraction"):
        data.split(1.0, seed=1)


def test_subset_and_scalars(shards: list[str]) -> None:
    data = loader(shards)
    e_ref = data.scalars(("e_ref",))["e_ref"]
    np.testing.assert_array_equal(e_ref, np.arange(N) * 1.0)
    kept = data.subset(e_ref % 3 == 0)
    np.testing.assert_array_equal(kept.ids, np.arange(0, N, 3))
    np.testing.assert_array_equal(kept.scalars(("e_ref",))["e_ref"], np.arange(0, N, 3) * 1.0)
    train, test = kept.split(0.5, seed=1)
    np.testing.assert_array_equal(np.union1d(train.ids, test.ids), kept.ids)


def test_missing_field_is_named(shards: list[str]) -> None:
    with pytest.raises(MissingBranchError, match=r"'nope'.*it has"):
        next(iter(loader(shards, fields=("nope",))))


def test_torch_batch_shares_memory(shards: list[str]) -> None:
    pytest.importorskip("torch")
    batch = next(iter(loader(shards)))
    tensors = torch_batch(batch)
    assert tensors["shower"].shape[0] == batch.n_hits
    assert float(tensors["energy"].sum()) == pytest.approx(float(batch.hits["energy"].sum()))


def test_batch_helpers() -> None:
    counts = np.array([2, 0, 3])
    batch = ShowerBatch({"v": np.arange(5.0)}, {"e": np.array([1.0, 2.0, 3.0])}, counts,
                        np.array([7, 8, 9]))  # fmt: skip
    np.testing.assert_array_equal(batch.shower, [0, 0, 2, 2, 2])
    np.testing.assert_array_equal(batch.sum_per_shower(batch.hits["v"]), [1.0, 0.0, 9.0])
    taken = batch.take(np.array([2, 0]))
    np.testing.assert_array_equal(taken.hits["v"], [2.0, 3.0, 4.0, 0.0, 1.0])
    np.testing.assert_array_equal(taken.ids, [9, 7])


def test_npz_shard_checks_lengths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hit field"):
        write_npz_shard(tmp_path / "x.npz", {}, np.array([2]), {"v": np.zeros(3)})
