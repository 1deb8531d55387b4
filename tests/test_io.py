"""Tests of calocoffea.io: layout, round trips, ROOT compatibility, atomic writes, errors."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from _events import make_events

from calocoffea.exceptions import (
    InputFileError,
    MissingBranchError,
    OutputPathError,
    StageMismatchError,
)
from calocoffea.io import (
    METADATA_KEY,
    REQUIRED_BRANCHES,
    STAGES,
    FileMetadata,
    open_events,
    read_events,
    read_metadata,
    write_events,
)

N_EVENTS = 300

SCALAR_TYPENAMES = {
    "event": "int64_t",
    "run": "int32_t",
    "pdg": "int32_t",
    "beam_energy": "double",
    "beam_x": "double",
    "beam_y": "double",
    "edep_active": "double",
    "fem": "float",
    "fem_ecal": "float",
    "fem_hcal": "float",
    "nhit": "int32_t",
}
HIT_TYPENAMES = {
    "hit_cellid": "uint64_t[]",
    "hit_layer": "int16_t[]",
    "hit_i": "int16_t[]",
    "hit_j": "int16_t[]",
    "hit_x": "float[]",
    "hit_y": "float[]",
    "hit_z": "float[]",
    "hit_energy": "float[]",
    "hit_time": "float[]",
    "hit_flags": "uint32_t[]",
    "hit_gain": "uint8_t[]",
}


def split(events: ak.Array, sizes: list[int]) -> Iterator[ak.Array]:
    start = 0
    for size in sizes:
        yield events[start : start + size]
        start += size


@pytest.fixture(scope="module")
def events() -> ak.Array:
    return make_events(N_EVENTS)


@pytest.fixture(scope="module")
def metadata() -> FileMetadata:
    return FileMetadata(
        stage="sim",
        geometry="cepc_ahcal",
        geometry_hash="0123abcd",
        producer="calocoffea 0.1.0 test",
        extra={"seed": 1, "particle": "e-", "command": "pytest"},
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, events, metadata) -> Path:
    path = tmp_path_factory.mktemp("io") / "events.root"
    return write_events(path, split(events, [120, 0, 100, 80]), metadata)


@pytest.fixture(scope="module")
def hsimple() -> Path:
    spec = importlib.util.find_spec("ROOT")
    if spec is None or spec.origin is None:
        pytest.skip("ROOT is not installed")
    path = Path(spec.origin).parent / "tutorials" / "hsimple.root"
    if not path.is_file():
        pytest.skip(f"ROOT's tutorial file {path} is absent")
    return path


def assert_same_events(read: ak.Array, written: ak.Array) -> None:
    """Every scalar and hit field of ``written`` equals that of ``read``, bit for bit."""
    for name in written.fields:
        if name == "hit":
            continue
        assert read[name].type.content == written[name].type.content, name
        np.testing.assert_array_equal(ak.to_numpy(read[name]), ak.to_numpy(written[name]))
    np.testing.assert_array_equal(ak.num(read.hits), ak.num(written.hit))
    for name in written.hit.fields:
        flat_read = ak.to_numpy(ak.flatten(read.hits[name]))
        flat_written = ak.to_numpy(ak.flatten(written.hit[name]))
        assert flat_read.dtype == flat_written.dtype, name
        np.testing.assert_array_equal(flat_read, flat_written)


# --------------------------------------------------------------------------- layout


def test_layout_seen_by_plain_uproot(written: Path) -> None:
    with uproot.open(written) as file:
        assert file.classnames(cycle=False) == {"events": "TTree", METADATA_KEY: "TObjString"}
        tree = file["events"]
        assert tree.num_entries == N_EVENTS
        assert dict(tree.typenames()) == {**SCALAR_TYPENAMES, **HIT_TYPENAMES}


def test_all_hit_branches_share_one_counter(written: Path) -> None:
    with uproot.open(written) as file:
        tree = file["events"]
        counters = {b.count_branch.name for b in tree.branches if b.count_branch is not None}
        assert counters == {"nhit"}
        assert {b.name for b in tree.branches if b.count_branch is not None} == set(HIT_TYPENAMES)
        assert tree["nhit"].count_branch is None


def test_compression_is_zstd(written: Path) -> None:
    with uproot.open(written) as file:
        assert isinstance(file.file.compression, uproot.ZSTD)
        assert file.file.compression.level == 5
        branch = file["events"]["hit_energy"]
        assert branch.compressed_bytes < branch.uncompressed_bytes
        basket = branch.basket(0)
        start = branch.member("fBasketSeek")[0] + basket.member("fKeylen")
    with open(written, "rb") as raw:
        raw.seek(start)
        assert raw.read(2) == b"ZS"  # ROOT's tag of a ZSTD-compressed block


@pytest.mark.parametrize(
    ("compression", "expected"),
    [("zstd", uproot.ZSTD), ("zlib", uproot.ZLIB), ("lz4", uproot.LZ4), (None, type(None))],
)
def test_compression_choices(tmp_path: Path, events, metadata, compression, expected) -> None:
    path = write_events(tmp_path / "events.root", [events], metadata, compression=compression)
    with uproot.open(path) as file:
        assert isinstance(file.file.compression, expected)
    assert_same_events(read_events(path), events)


def test_unknown_compression_is_refused(tmp_path: Path, events, metadata) -> None:
    with pytest.raises(ValueError, match=r"unknown compression 'gzip'.*zstd"):
        write_events(tmp_path / "events.root", [events], metadata, compression="gzip")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- round trips


def test_values_round_trip_exactly(written: Path, events) -> None:
    assert_same_events(read_events(written, stage="sim"), events)


def test_metadata_round_trips(written: Path, metadata) -> None:
    assert read_metadata(written) == metadata
    assert read_metadata(written).units["hit_energy"] == "MeV"


def test_multi_chunk_equals_single_chunk(tmp_path: Path, written: Path, events, metadata) -> None:
    single = write_events(tmp_path / "single.root", [events], metadata)
    with uproot.open(single) as one, uproot.open(written) as many:
        assert one["events"].keys() == many["events"].keys()
        assert ak.array_equal(one["events"].arrays(), many["events"].arrays())


def test_read_events_entry_range(written: Path, events) -> None:
    part = read_events(written, entry_start=50, entry_stop=75)
    assert_same_events(part, events[50:75])


def test_output_of_read_events_can_be_written_again(tmp_path: Path, written, events) -> None:
    raw = FileMetadata(stage="raw", producer="test")
    path = write_events(tmp_path / "again.root", [read_events(written)], raw)
    assert_same_events(read_events(path, stage="raw"), events)


def test_fields_are_cast_to_documented_types(tmp_path: Path, events, metadata) -> None:
    wide = ak.zip(
        {
            "event": ak.values_astype(events.event, np.int32),
            "run": ak.values_astype(events.run, np.int64),
            "pdg": events.pdg,
            "beam_energy": events.beam_energy,
            "hit": ak.zip(
                {
                    name: ak.values_astype(events.hit[name], np.float64)
                    for name in ("x", "y", "z", "energy")
                }
                | {
                    "cellid": ak.values_astype(events.hit.cellid, np.int64),
                    "layer": ak.values_astype(events.hit.layer, np.int64),
                }
            ),
        },
        depth_limit=1,
    )
    path = write_events(tmp_path / "cast.root", [wide], metadata)
    with uproot.open(path) as file:
        types = file["events"].typenames()
    assert types["event"] == "int64_t"
    assert types["run"] == "int32_t"
    assert types["hit_cellid"] == "uint64_t[]"
    assert types["hit_layer"] == "int16_t[]"
    assert types["hit_energy"] == "float[]"


def test_values_that_do_not_fit_are_refused(tmp_path: Path, events, metadata) -> None:
    bad = ak.with_field(
        events, ak.values_astype(events.hit.layer, np.int64) + 40000, ["hit", "layer"]
    )
    with pytest.raises(ValueError, match=r"hit field 'layer'.*int16"):
        write_events(tmp_path / "bad.root", [bad], metadata)
    assert list(tmp_path.iterdir()) == []


def test_missing_required_field_is_named(tmp_path: Path, events, metadata) -> None:
    with pytest.raises(ValueError, match=r"energy"):
        write_events(
            tmp_path / "bad.root", [ak.with_field(events, events.hit[["x", "y"]], "hit")], metadata
        )
    with pytest.raises(ValueError, match=r"beam_energy"):
        write_events(tmp_path / "bad.root", [events[["event", "run", "pdg", "hit"]]], metadata)
    assert list(tmp_path.iterdir()) == []


def test_chunks_must_be_awkward_records(tmp_path: Path, events, metadata) -> None:
    with pytest.raises(ValueError, match=r"chunk 1 is a dict"):
        write_events(tmp_path / "bad.root", [events[:10], {"event": [1]}], metadata)
    assert list(tmp_path.iterdir()) == []


def test_chunks_with_other_fields_are_refused(tmp_path: Path, events, metadata) -> None:
    chunks = [events[:10], events[10:20][["event", "run", "pdg", "beam_energy", "hit"]]]
    with pytest.raises(ValueError, match=r"chunk 1 has fields"):
        write_events(tmp_path / "bad.root", chunks, metadata)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- ROOT


@pytest.fixture(scope="module")
def root():
    return pytest.importorskip("ROOT")


def test_root_reads_the_file(root, written: Path, metadata) -> None:
    file = root.TFile.Open(str(written))
    try:
        assert file.Get("events").GetEntries() == N_EVENTS
        assert file.GetCompressionAlgorithm() == int(root.RCompressionSetting.EAlgorithm.kZSTD)
        assert file.Get(METADATA_KEY).GetString().Data() == metadata.to_json()
    finally:
        file.Close()


def test_rdataframe_sums_hit_energy(root, written: Path, events) -> None:
    frame = root.RDataFrame("events", str(written))
    expected = ak.sum(ak.values_astype(events.hit.energy, np.float64))
    assert frame.Sum("hit_energy").GetValue() == pytest.approx(expected, rel=1e-9)
    assert frame.Sum("nhit").GetValue() == ak.sum(ak.num(events.hit))


# --------------------------------------------------------------------------- atomic writes


def failing_chunks(events: ak.Array, error: BaseException) -> Iterator[ak.Array]:
    yield events[:100]
    yield events[100:200]
    raise error


def test_missing_directory_is_an_output_path_error(tmp_path: Path, events, metadata) -> None:
    path = tmp_path / "no" / "such" / "dir" / "events.root"
    with pytest.raises(OutputPathError, match=r"does not exist.*mkdir -p"):
        write_events(path, [events], metadata)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_directory_is_an_output_path_error(events, metadata) -> None:
    path = Path("/proc/calocoffea-test-events.root")
    with pytest.raises(OutputPathError, match=r"calocoffea-test-events.root"):
        write_events(path, [events], metadata)
    assert not path.exists()
    assert not [name for name in os.listdir("/proc") if "calocoffea" in name]


@pytest.mark.parametrize("error", [RuntimeError("simulation failed"), KeyboardInterrupt()])
def test_failure_mid_way_leaves_nothing(tmp_path: Path, events, metadata, error) -> None:
    with pytest.raises(type(error)):
        write_events(tmp_path / "events.root", failing_chunks(events, error), metadata)
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_an_existing_file(tmp_path: Path, events, metadata) -> None:
    path = write_events(tmp_path / "events.root", [events[:10]], metadata)
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        write_events(path, failing_chunks(events, RuntimeError("boom")), metadata)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_empty_chunks_are_refused(tmp_path: Path, metadata) -> None:
    with pytest.raises(ValueError, match=r"no chunks to write"):
        write_events(tmp_path / "events.root", [], metadata)
    assert list(tmp_path.iterdir()) == []


def test_metadata_extra_must_be_json(tmp_path: Path, events) -> None:
    bad = FileMetadata(stage="sim", extra={"path": tmp_path})
    with pytest.raises(ValueError, match=r"JSON"):
        write_events(tmp_path / "events.root", [events], bad)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- metadata


def test_metadata_default_units_follow_stage() -> None:
    for stage, unit in STAGES.items():
        units = FileMetadata(stage=stage).units
        assert units["hit_energy"] == unit
        assert units["hit_x"] == units["hit_y"] == units["hit_z"] == "mm"
        assert units["hit_time"] == "ns"
        assert units["beam_energy"] == "GeV"
        assert units["edep_active"] == "MeV"


def test_metadata_rejects_unknown_stage() -> None:
    with pytest.raises(ValueError, match=r"unknown stage 'adc'.*'sim'.*'raw'.*'mip'.*'gev'"):
        FileMetadata(stage="adc")


def test_metadata_rejects_units_against_stage() -> None:
    with pytest.raises(ValueError, match=r"hit_energy"):
        FileMetadata(stage="raw", units={"hit_energy": "MeV"})


def test_metadata_json_round_trip(metadata) -> None:
    assert FileMetadata.from_json(metadata.to_json()) == metadata
    with pytest.raises(ValueError, match=r"stage"):
        FileMetadata.from_json('{"geometry": "x"}')


# --------------------------------------------------------------------------- read errors


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=r"nothing.root.*does not exist"):
        open_events(tmp_path / "nothing.root")


def test_text_file_is_not_root(tmp_path: Path) -> None:
    path = tmp_path / "notes.root"
    path.write_text("these are not the events you are looking for\n" * 20)
    with pytest.raises(InputFileError, match=r"cannot read .*notes\.root as a ROOT file"):
        open_events(path)
    with pytest.raises(InputFileError, match=r"notes.root"):
        read_metadata(path)


def test_hsimple_has_no_events_tree(hsimple: Path) -> None:
    with pytest.raises(InputFileError, match=r"hsimple.root has no TTree 'events'.*ntuple"):
        open_events(hsimple)


def test_hsimple_ntuple_lacks_the_branches(hsimple: Path) -> None:
    with pytest.raises(MissingBranchError) as info:
        open_events(hsimple, treename="ntuple", stage="sim")
    for name in REQUIRED_BRANCHES:
        assert name in str(info.value)
    assert "hsimple.root" in str(info.value)


def test_hsimple_has_no_metadata(hsimple: Path) -> None:
    with pytest.raises(InputFileError, match=r"not written by calocoffea.*stage="):
        read_metadata(hsimple)


def write_foreign(path: Path, events: ak.Array, hit_fields: list[str], metadata: str | None):
    """A file written by plain uproot, like calocoffea's but with chosen hit fields."""
    flat = ak.flatten(events.hit)
    hits = ak.unflatten(ak.zip({f: flat[f] for f in hit_fields}), ak.num(events.hit))
    with uproot.recreate(path) as file:
        columns = {n: events[n] for n in ("event", "run", "pdg", "beam_energy")}
        file.mktree("events", {**columns, "hit": hits})
        if metadata is not None:
            file[METADATA_KEY] = metadata
    return path


def test_missing_hit_energy_is_named(tmp_path: Path, events, metadata) -> None:
    fields = ["cellid", "layer", "x", "y", "z", "time"]
    path = write_foreign(tmp_path / "noenergy.root", events, fields, metadata.to_json())
    with pytest.raises(MissingBranchError, match=r"noenergy.root[\s\S]*hit_energy") as info:
        open_events(path)
    assert "nhit" not in str(info.value).split("it has:")[0]


def test_missing_branch_suggests_close_names(tmp_path: Path, events, metadata) -> None:
    flat = ak.flatten(events.hit)
    hits = ak.unflatten(
        ak.zip(
            {**{f: flat[f] for f in ["cellid", "layer", "x", "y", "z"]}, "energie": flat.energy}
        ),
        ak.num(events.hit),
    )
    path = tmp_path / "typo.root"
    with uproot.recreate(path) as file:
        file.mktree(
            "events", {n: events[n] for n in ("event", "run", "pdg", "beam_energy")} | {"hit": hits}
        )
        file[METADATA_KEY] = metadata.to_json()
    with pytest.raises(MissingBranchError, match=r"hit_energy \(closest: hit_energie"):
        open_events(path)


def test_file_without_metadata_needs_a_stage(tmp_path: Path, events) -> None:
    fields = ["cellid", "layer", "x", "y", "z", "energy"]
    path = write_foreign(tmp_path / "foreign.root", events, fields, None)
    with pytest.raises(InputFileError, match=r"foreign.root.*not written by calocoffea.*stage="):
        open_events(path)
    tree = open_events(path, stage="raw")
    try:
        assert tree.num_entries == N_EVENTS
    finally:
        tree.file.close()
    assert ak.all(read_events(path, stage="raw").hits.energy == events.hit.energy)


def test_stage_mismatch(written: Path) -> None:
    with pytest.raises(
        StageMismatchError, match=r"stage 'sim' \(hit_energy in MeV\).*'raw' \(ADC\)"
    ):
        open_events(written, stage="raw")
    with pytest.raises(StageMismatchError, match=r"digitize"):
        read_events(written, stage="mip")


def test_unknown_stage_requested(written: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown stage 'MeV'"):
        open_events(written, stage="MeV")


def test_file_identity_follows_the_description_not_the_path(tmp_path: Path) -> None:
    """The same simulation written twice (another directory, another day) has the same
    UUID, hence the same digitisation; another seed or run gives another identity."""
    from calocoffea.runner import digitize_files
    from calocoffea.simulation.beam import Beam
    from calocoffea.simulation.run import simulate

    beam = Beam(energies_gev=(10.0,))
    paths = []
    for where, seed, run in (("a", 3, 0), ("b", 3, 0), ("c", 4, 0), ("d", 3, 1)):
        (tmp_path / where).mkdir()
        paths.append(simulate("cepc_ahcal", "e-", beam, 20, seed, tmp_path / where / "e.root",
                              run=run))  # fmt: skip
    uuids = [str(uproot.open(p).file.uuid) for p in paths]
    assert uuids[0] == uuids[1]
    assert len(set(uuids)) == 3
    raw = [digitize_files([p], p.with_name("raw.root")).output for p in paths[:2]]
    first, second = (read_events(r) for r in raw)
    assert ak.all(first.hits.energy == second.hits.energy)
