"""What every model's training shares (calocoffea.models.training)."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from calocoffea.exceptions import InputFileError, ModelError
from calocoffea.geometry import get_geometry
from calocoffea.io import read_events
from calocoffea.models.inputs import FlatHits, build_inputs
from calocoffea.models.training import (
    features_of,
    prepare_shards,
    split_loader,
    standardisation,
    test_metrics,
)
from calocoffea.samples import calibrated_sample
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate

GEOMETRY = "cepc_ahcal"
SHAPES = {"layer_sums_and_shapes": (None, 48), "density_sums": (None, 15)}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    work = tmp_path_factory.mktemp("training")
    return [
        calibrated_sample(GEOMETRY, "e-", Beam((5.0, 30.0)), 60, 1, work / "a.root"),
        calibrated_sample(GEOMETRY, "e-", Beam((50.0,)), 70, 2, work / "b.root"),
    ]


def test_shards_hold_every_event_in_file_order(files: list[Path], tmp_path: Path) -> None:
    loader = prepare_shards(files, tmp_path, shard_events=50, batch_showers=32)
    assert loader.n_showers == 190 and len(loader.shard_sizes) == 5
    inputs, events = features_of(loader, SHAPES, get_geometry(GEOMETRY))
    assert np.array_equal(events["event_id"], np.arange(190))
    beams = [ak.to_numpy(read_events(f).beam_energy) for f in files]
    assert np.array_equal(events["beam_energy"], np.concatenate(beams))
    # the same features as inference builds from the events (float32 shards: ~1e-7)
    direct = [build_inputs(SHAPES, FlatHits.from_events(read_events(f)), get_geometry(GEOMETRY))
              for f in files]  # fmt: skip
    for name in SHAPES:
        expected = np.concatenate([d[name] for d in direct])
        np.testing.assert_allclose(inputs[name], expected, rtol=1e-5, atol=1e-6)


def test_split_is_by_event_disjoint_complete_and_seeded(files: list[Path], tmp_path: Path) -> None:
    loader = prepare_shards(files, tmp_path, shard_events=50)
    geo = get_geometry(GEOMETRY)
    ids = [
        [features_of(part, SHAPES, geo)[1]["event_id"] for part in split_loader(loader, seed)]
        for seed in (3, 3, 4)
    ]
    train, val, test = ids[0]
    assert (train.size, val.size, test.size) == (133, 28, 29)
    assert np.array_equal(np.sort(np.concatenate(ids[0])), np.arange(190))
    assert all(np.array_equal(a, b) for a, b in zip(ids[0], ids[1], strict=True))
    assert not np.array_equal(ids[0][0], ids[2][0])
    # by event, not by energy block: every beam energy is in every part
    beam = features_of(loader, SHAPES, geo)[1]["beam_energy"]
    for part in ids[0]:
        assert set(beam[part]) == {5.0, 30.0, 50.0}


def test_too_few_events_cannot_be_split(files: list[Path], tmp_path: Path) -> None:
    loader = prepare_shards(files[:1], tmp_path).subset(np.arange(120) < 2)
    with pytest.raises(ModelError, match=r"too few for a train/validation/test split"):
        split_loader(loader, 0)


def test_training_needs_calibrated_files(tmp_path: Path) -> None:
    sim = simulate(GEOMETRY, "e-", Beam((10.0,)), 5, 1, tmp_path / "sim.root")
    with pytest.raises(InputFileError, match=r"stage 'sim'.*calocoffea calibrate --to gev"):
        prepare_shards([sim], tmp_path / "shards")


def test_metrics_per_beam_energy_bin() -> None:
    rng = np.random.default_rng(7)
    beam = np.repeat([10.0, 20.0, 40.0, 80.0], 2000)
    energy = beam * (1.02 + 0.1 / np.sqrt(beam) * rng.standard_normal(beam.size))
    m = test_metrics(energy, beam, bins=4)
    assert [b["events"] for b in m["bins"]] == [2000] * 4
    for row, e in zip(m["bins"], (10.0, 20.0, 40.0, 80.0), strict=True):
        sigma = 0.1 / np.sqrt(e) / 1.02
        # mean within 5 standard errors, resolution within 5 of its ~1/sqrt(2n) error
        assert row["response"] == pytest.approx(1.02, abs=5 * sigma / np.sqrt(2000))
        assert row["resolution"] == pytest.approx(sigma, rel=5 / np.sqrt(2 * 2000))


def test_standardisation_keeps_constant_features_finite() -> None:
    mean, scale = standardisation([[1.0, 5.0], [3.0, 5.0]])
    assert mean == (2.0, 5.0) and scale == (1.0, 1.0)
