"""Tests of calocoffea.schema: coffea NanoEvents over files written by calocoffea.io."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
from _events import make_events
from coffea.nanoevents import NanoEventsFactory

from calocoffea.io import FileMetadata, write_events
from calocoffea.schema import CaloSchema

HIT_FIELDS = ["cellid", "layer", "i", "j", "x", "y", "z", "energy", "time", "flags", "gain"]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ak.Array]:
    events = make_events(250)
    path = tmp_path_factory.mktemp("schema") / "events.root"
    write_events(path, [events[:100], events[100:]], FileMetadata(stage="sim"))
    return path, events


def nanoevents(path: Path, mode: str) -> ak.Array:
    factory = NanoEventsFactory.from_root({str(path): "events"}, schemaclass=CaloSchema, mode=mode)
    return factory.events()


@pytest.mark.parametrize("mode", ["eager", "virtual"])
def test_hits_equal_what_was_written(written, mode: str) -> None:
    path, events = written
    loaded = nanoevents(path, mode)
    assert len(loaded) == len(events)
    np.testing.assert_array_equal(ak.num(loaded.hits), ak.num(events.hit))
    for name in HIT_FIELDS:
        assert ak.all(loaded.hits[name] == events.hit[name]), name
    assert ak.all(loaded.hits.energy == events.hit.energy)
    assert ak.all(loaded.hits.x == events.hit.x)


def test_top_level_fields(written) -> None:
    path, events = written
    loaded = nanoevents(path, "eager")
    assert loaded.fields == [*events.fields[:-1], "hits"]
    assert loaded.hits.fields == HIT_FIELDS
    np.testing.assert_array_equal(ak.to_numpy(loaded.beam_energy), ak.to_numpy(events.beam_energy))
    np.testing.assert_array_equal(ak.to_numpy(loaded.fem_ecal), ak.to_numpy(events.fem_ecal))


def test_hits_are_calohit_records(written) -> None:
    path, events = written
    loaded = nanoevents(path, "eager")
    assert ak.flatten(loaded.hits).layout.parameter("__record__") == "CaloHit"
    expected = np.hypot(events.hit.x, events.hit.y)
    assert ak.all(loaded.hits.r == expected)


def test_schema_tables() -> None:
    assert CaloSchema.collections == {"hit_": "hits"}
    assert CaloSchema.record_names["hits"] == "CaloHit"
    assert CaloSchema.counters["hits"] == "nhit"
