"""Bad input files, one test per kind of damage: a precise error and nothing written, or
counted and warned about; and ``skip_bad_files`` (``--skip-bad-files``).

The catalogue (what a job does with each; the error's class in
:mod:`calocoffea.exceptions`):

==  ==============================  ===========================================================
 1  truncated file                  CorruptFileError before any work (size below the header's)
 2  corrupted basket                CorruptFileError naming branch and entries, from the chunk
 3  no ``events`` tree              MissingTreeError listing what the file holds
 4  missing branch                  MissingBranchError with the closest names
 5  wrong branch type               BranchTypeError; integers for float fields are accepted
 6  hit counter mismatch            HitCounterError: every ``hit_*`` branch counted by ``nhit``
 7  NaN or infinite energy          counted, excluded, InvalidInputWarning
 8  negative deposit (sim)          counted, excluded, InvalidInputWarning
 9  cell id outside the geometry    GeometryMismatchError naming file, entries, cell ids
10  one cell twice in one event     raw and calibrated input: DuplicateHitError naming file,
                                    entry, event and cell; simulated input: the deposits are
                                    summed before digitisation (counted as merged_same_cell)
11  empty file (0 entries)          EmptyInputError (nothing to do)
12  events without hits             processed and counted like any other
==  ==============================  ===========================================================
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
import uproot

from calocoffea.cli.main import main
from calocoffea.conditions import nominal
from calocoffea.constants import nominal_constants
from calocoffea.digitization import DigitizationOptions
from calocoffea.exceptions import (
    BranchTypeError,
    CorruptFileError,
    DuplicateHitError,
    EmptyInputError,
    GeometryMismatchError,
    HitCounterError,
    InputFileError,
    InvalidInputWarning,
    MissingBranchError,
    MissingTreeError,
)
from calocoffea.io import METADATA_KEY, read_events, read_metadata, write_events
from calocoffea.runner import (
    RunOptions,
    RunResult,
    calibrate_files,
    digitize_files,
    histogram_files,
)
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate

N_EVENTS = 40


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A simulated file and the raw file digitised from it."""
    directory = tmp_path_factory.mktemp("valid")
    sim = simulate(
        "cepc_ahcal", "e-", Beam(energies_gev=(10.0,)), N_EVENTS, 3, directory / "sim.root"
    )
    raw = digitize_files([sim], directory / "raw.root").output
    assert raw is not None
    return {"sim": sim, "raw": raw}


# --------------------------------------------------------------------------- the jobs

Job = Callable[..., RunResult]


def _digitize(files: list[Path], output: Path, **kwargs: Any) -> RunResult:
    return digitize_files(files, output, **kwargs)


def _calibrate(files: list[Path], output: Path, **kwargs: Any) -> RunResult:
    return calibrate_files(files, output, nominal_constants(nominal("cepc_ahcal")), **kwargs)


def _histogram(files: list[Path], output: Path, **kwargs: Any) -> RunResult:
    return histogram_files(files, output, **kwargs)


#: job name -> (stage of its input, the job)
JOBS: dict[str, tuple[str, Job]] = {
    "digitize": ("sim", _digitize),
    "calibrate": ("raw", _calibrate),
    "histogram": ("sim", _histogram),
}


def _nothing_written(output: Path) -> None:
    """No output, no histogram side file, no temporary or shard directory beside them."""
    assert not output.exists()
    assert not output.with_name(output.name + ".json").exists()
    left = [p.name for p in output.parent.iterdir() if p.name.startswith(f".{output.name}")]
    assert not left, f"left behind: {left}"


def _fails(job: str, bad: Path, error: type[Exception], match: str, **kwargs: Any) -> None:
    """``job`` on ``bad`` raises ``error`` whose message matches ``match``; nothing written."""
    output = bad.with_name(f"out-{job}.root")
    with pytest.raises(error, match=match) as info:
        JOBS[job][1]([bad], output, **kwargs)
    assert type(info.value) is error
    _nothing_written(output)


# --------------------------------------------------------------------------- damaged copies


def _branches(path: Path) -> tuple[dict[str, ak.Array], str]:
    """Every branch but the counter, and the metadata JSON, of the file at ``path``."""
    with uproot.open(path) as file:
        arrays = file["events"].arrays()
        metadata = str(file[METADATA_KEY])
    return {name: arrays[name] for name in arrays.fields if name != "nhit"}, metadata


def _write(
    path: Path,
    branches: dict[str, Any],
    metadata: str,
    *,
    own_counter: tuple[str, ...] = (),
    treename: str = "events",
) -> Path:
    """A tree of ``branches``: jagged ``hit_*`` ones counted by ``nhit``, except those in
    ``own_counter`` (counted by ``n<name>``), everything else as given."""
    hits = {
        n[4:]: a
        for n, a in branches.items()
        if n.startswith("hit_") and n not in own_counter and isinstance(a, ak.Array) and a.ndim == 2
    }
    rest = {n: a for n, a in branches.items() if n[4:] not in hits or not n.startswith("hit_")}
    columns = {**rest, "hit": ak.zip(hits)}
    types = {
        name: "string" if isinstance(a, np.ndarray) else a.type.content
        for name, a in columns.items()
    }
    counter = iter(range(1 << 30))  # the same UUIDs in every file: the same random numbers
    uuids = lambda: uuid.uuid5(uuid.NAMESPACE_OID, str(next(counter)))  # noqa: E731
    with uproot.recreate(path, uuid_function=uuids) as file:
        tree = file.mktree(
            treename,
            types,
            counter_name=lambda counted: "n" + counted,
            field_name=lambda outer, inner: f"{outer}_{inner}" if outer else inner,
        )
        tree.extend(columns)
        file[METADATA_KEY] = metadata
    return path


def _changed(src: Path, dst: Path, change: Callable[[dict[str, Any]], None], **kw: Any) -> Path:
    branches, metadata = _branches(src)
    change(branches)
    return _write(dst, branches, metadata, **kw)


def _truncated(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _corrupt_basket(src: Path, dst: Path, branch: str = "hit_energy", basket: int = 0) -> Path:
    """A copy with the middle half of the compressed data of one basket of ``branch`` zeroed."""
    with uproot.open(src) as file:
        b = file["events"][branch]
        seek = int(b.member("fBasketSeek")[basket])
        size = int(b.member("fBasketBytes")[basket])
        start = seek + b.basket_key(basket).fKeylen + 9  # key, then ROOT's compression header
    data = bytearray(src.read_bytes())
    length = (seek + size - start) // 2
    data[start + length // 2 : start + length // 2 + length] = bytes(length)
    dst.write_bytes(bytes(data))
    return dst


def _split(path: Path, dst: Path, chunks: int) -> Path:
    """``path`` rewritten in ``chunks`` baskets per branch."""
    events = read_events(path)
    parts = np.array_split(np.arange(len(events)), chunks)
    return write_events(dst, [events[p[0] : p[-1] + 1] for p in parts], read_metadata(path))


# --------------------------------------------------------------------------- 1. truncated


@pytest.mark.parametrize("job", JOBS)
def test_truncated_file(valid: dict[str, Path], tmp_path: Path, job: str) -> None:
    bad = _truncated(valid[JOBS[job][0]], tmp_path / "cut.root")
    _fails(
        job,
        bad,
        CorruptFileError,
        r"cut\.root is truncated: .*ends at byte \d+ but it has \d+ bytes.*copy it again",
    )


# --------------------------------------------------------------------------- 2. basket


@pytest.mark.parametrize("job", JOBS)
def test_corrupted_basket(valid: dict[str, Path], tmp_path: Path, job: str) -> None:
    bad = _corrupt_basket(valid[JOBS[job][0]], tmp_path / "damaged.root")
    _fails(
        job,
        bad,
        CorruptFileError,
        rf"damaged\.root: tree 'events', branch 'hit_energy', entries 0-{N_EVENTS}: cannot "
        r"be read \(.+\).*copy it again.*--skip-bad-files",
    )


def test_corrupted_basket_on_a_worker_process(valid: dict[str, Path], tmp_path: Path) -> None:
    bad = _corrupt_basket(valid["sim"], tmp_path / "damaged.root")
    _fails(
        "histogram",
        bad,
        CorruptFileError,
        r"damaged\.root: tree 'events', branch 'hit_energy'",
        run_options=RunOptions("futures", workers=2),
    )


def test_corrupted_second_basket_names_its_entries(valid: dict[str, Path], tmp_path: Path) -> None:
    two = _split(valid["sim"], tmp_path / "two.root", 2)
    bad = _corrupt_basket(two, tmp_path / "damaged.root", "hit_x", basket=1)
    half = N_EVENTS // 2
    _fails(
        "digitize",
        bad,
        CorruptFileError,
        rf"branch 'hit_x', entries {half}-{N_EVENTS}:",
        run_options=RunOptions(chunksize=half),
    )


# --------------------------------------------------------------------------- 3. tree


@pytest.mark.parametrize("job", JOBS)
def test_missing_events_tree(valid: dict[str, Path], tmp_path: Path, job: str) -> None:
    branches, metadata = _branches(valid[JOBS[job][0]])
    bad = _write(tmp_path / "notree.root", branches, metadata, treename="Events")
    _fails(
        job,
        bad,
        MissingTreeError,
        r"notree\.root has no TTree 'events' \(it holds: Events \(TTree\), "
        r"calocoffea_metadata \(TObjString\)\).*calocoffea convert",
    )


# --------------------------------------------------------------------------- 4. branch


@pytest.mark.parametrize("job", JOBS)
def test_missing_branch_suggests_close_names(
    valid: dict[str, Path], tmp_path: Path, job: str
) -> None:
    def rename(branches: dict[str, Any]) -> None:
        branches["hit_energie"] = branches.pop("hit_energy")

    bad = _changed(valid[JOBS[job][0]], tmp_path / "typo.root", rename)
    _fails(
        job,
        bad,
        MissingBranchError,
        r"(?s)tree 'events' in .*typo\.root lacks .*hit_energy \(closest: hit_energie"
        r".*rename the branches",
    )


# --------------------------------------------------------------------------- 5. types


def _as(name: str, make: Callable[[ak.Array], Any]) -> Callable[[dict[str, Any]], None]:
    def change(branches: dict[str, Any]) -> None:
        branches[name] = make(branches[name])

    return change


def _astype(dtype: Any) -> Callable[[ak.Array], ak.Array]:
    return lambda a: ak.values_astype(a, dtype)


def _strings(a: ak.Array) -> np.ndarray:
    """One string per event: the event's values, space-separated."""
    return np.array([" ".join(str(v) for v in event) for event in ak.to_list(a)])


def _lists(a: ak.Array) -> ak.Array:
    return ak.unflatten(a, np.ones(len(a), int))


#: case -> (branch, how it is written, what the message says about it)
WRONG_TYPES = {
    "layer as float": ("hit_layer", _astype(np.float32), r"'hit_layer' holds float32.*integer"),
    "cellid as double": ("hit_cellid", _astype(np.float64), r"'hit_cellid' holds float64"),
    "energy as text": ("hit_energy", _strings, r"'hit_energy' holds char\*, not a list of num"),
    "event as float": ("event", _astype(np.float64), r"'event' holds float64.*integer"),
    "beam_energy jagged": ("beam_energy", _lists, r"'beam_energy' holds .*\[\], not one number"),
}


@pytest.mark.parametrize("case", WRONG_TYPES)
@pytest.mark.parametrize("job", JOBS)
def test_wrong_branch_type(valid: dict[str, Path], tmp_path: Path, job: str, case: str) -> None:
    name, make, match = WRONG_TYPES[case]
    bad = _changed(valid[JOBS[job][0]], tmp_path / "typed.root", _as(name, make))
    _fails(job, bad, BranchTypeError, rf"typed\.root: tree 'events', branch {match}.*write it as")


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("hit_energy", np.int32),
        ("hit_layer", np.int64),
        ("hit_cellid", np.int64),
        ("hit_x", np.float64),
        ("event", np.int32),
        ("beam_energy", np.float32),
    ],
)
def test_safe_types_are_read_as_the_documented_ones(
    valid: dict[str, Path], tmp_path: Path, name: str, dtype: Any
) -> None:
    """Integers for a float field, other widths of integers or floats: the same histograms as
    the file with the documented types holding the same values."""
    branches, metadata = _branches(valid["sim"])
    original = branches[name]
    documented = original.type.content.content if original.ndim == 2 else original.type.content
    other = ak.values_astype(original, dtype)
    same = ak.values_astype(other, documented.primitive)
    expected = histogram_files([_write(tmp_path / "doc.root", {**branches, name: same}, metadata)])
    path = _write(tmp_path / "other.root", {**branches, name: other}, metadata)
    with uproot.open(path) as file:
        interpretation = file["events"][name].interpretation
        found = getattr(interpretation, "content", interpretation).to_dtype
    assert found == np.dtype(dtype)
    got = histogram_files([path])
    assert expected.cutflow == got.cutflow
    assert expected.histograms.keys() == got.histograms.keys()
    for key, h in expected.histograms.items():
        assert np.array_equal(h.view(flow=True), got.histograms[key].view(flow=True)), key


def test_integers_that_do_not_fit_their_documented_type(
    valid: dict[str, Path], tmp_path: Path
) -> None:
    def widen(branches: dict[str, Any]) -> None:
        layer = branches["hit_layer"]
        flat = ak.to_numpy(ak.flatten(layer)).astype(np.int64)
        flat[2] = 70_000
        branches["hit_layer"] = ak.unflatten(flat, ak.num(layer))

    bad = _changed(valid["sim"], tmp_path / "wide.root", widen)
    _fails(
        "histogram",
        bad,
        BranchTypeError,
        rf"wide\.root: tree 'events', branch 'hit_layer', entries 0-{N_EVENTS}: values -?\d+ to "
        r"70000 do not fit int16",
    )


# --------------------------------------------------------------------------- 6. counters


@pytest.mark.parametrize("job", JOBS)
def test_hit_branches_with_another_counter(
    valid: dict[str, Path], tmp_path: Path, job: str
) -> None:
    def shorten(branches: dict[str, Any]) -> None:
        energy = ak.to_list(branches["hit_energy"])
        energy[3] = energy[3][:-1]  # one hit fewer in event 3
        branches["hit_energy"] = ak.values_astype(ak.Array(energy), np.float32)

    bad = _changed(
        valid[JOBS[job][0]], tmp_path / "counters.root", shorten, own_counter=("hit_energy",)
    )
    _fails(
        job,
        bad,
        HitCounterError,
        r"counters\.root: tree 'events': branch 'hit_energy' is counted by 'nhit_energy' "
        r"but .* by 'nhit'.*one counter",
    )


# --------------------------------------------------------------------------- 7, 8. values


def _with_energy(src: Path, dst: Path, values: list[float]) -> Path:
    def spoil(branches: dict[str, Any]) -> None:
        energy = branches["hit_energy"]
        flat = ak.to_numpy(ak.flatten(energy)).copy()
        flat[: len(values)] = values
        branches["hit_energy"] = ak.unflatten(flat, ak.num(energy))

    return _changed(src, dst, spoil)


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ([np.nan], "invalid_deposit"),
        ([np.inf, -np.inf], "invalid_deposit"),
        ([-1.0, -0.5], "invalid_deposit"),
    ],
)
def test_invalid_deposits_are_counted_excluded_and_warned_in_digitize(
    valid: dict[str, Path], tmp_path: Path, values: list[float], reason: str
) -> None:
    bad = _with_energy(valid["sim"], tmp_path / "values.root", values)
    with pytest.warns(InvalidInputWarning, match=rf"digitize: {len(values)} hits with NaN"):
        result = digitize_files(
            [bad], tmp_path / "out.root", options=DigitizationOptions(zero_suppression=False)
        )
    assert result.cutflow["digitize"]["removed"][reason] == len(values)


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ([np.nan], "non_finite_energy"),
        ([np.inf, -np.inf], "non_finite_energy"),
        ([-1.0, -0.5], "invalid_deposit"),
    ],
)
def test_invalid_deposits_are_counted_excluded_and_warned_in_histograms(
    valid: dict[str, Path], tmp_path: Path, values: list[float], reason: str
) -> None:
    bad = _with_energy(valid["sim"], tmp_path / "values.root", values)
    with pytest.warns(InvalidInputWarning, match=rf"histogram: {len(values)} hits with NaN"):
        result = histogram_files([bad])
    step = result.cutflow["histogram"]
    assert step["removed"][reason] == len(values)
    assert step["hits_out"] == step["hits_in"] - len(values)
    assert result.histograms["hit_energy"].sum(flow=True) == step["hits_out"]


def test_negative_energies_of_raw_hits_are_kept(valid: dict[str, Path], tmp_path: Path) -> None:
    """Below the pedestal is a reading, not an error: raw (and calibrated) hits may be < 0."""
    bad = _with_energy(valid["raw"], tmp_path / "below.root", [-3.0])
    step = histogram_files([bad]).cutflow["histogram"]
    assert step["hits_out"] == step["hits_in"]


# --------------------------------------------------------------------------- 9. cells


@pytest.mark.parametrize("job", JOBS)
def test_cell_outside_the_geometry(valid: dict[str, Path], tmp_path: Path, job: str) -> None:
    def spoil(branches: dict[str, Any]) -> None:
        cellid = branches["hit_cellid"]
        flat = ak.to_numpy(ak.flatten(cellid)).copy()
        flat[5] = 12345
        branches["hit_cellid"] = ak.unflatten(flat, ak.num(cellid))

    bad = _changed(valid[JOBS[job][0]], tmp_path / "cells.root", spoil)
    _fails(
        job,
        bad,
        GeometryMismatchError,
        rf"cells\.root: tree 'events', branch 'hit_cellid', entries 0-{N_EVENTS}: 1 hits "
        r"have cell ids that are not cells of 'cepc_ahcal' \(e\.g\. \[12345\]\).*geometry",
    )


# --------------------------------------------------------------------------- 10. duplicates


def _duplicate(src: Path, dst: Path, event: int, energy_factor: float = 1.0) -> Path:
    """Event ``event``'s first hit once more at the end of its hits; both hits get
    ``energy_factor`` times its energy."""

    def change(branches: dict[str, Any]) -> None:
        for name in [n for n in branches if n.startswith("hit_")]:
            lists = ak.to_list(branches[name])
            if name == "hit_energy":
                lists[event][0] *= energy_factor
            lists[event].append(lists[event][0])
            branches[name] = ak.values_astype(
                ak.Array(lists), branches[name].type.content.content.primitive
            )

    return _changed(src, dst, change)


@pytest.mark.parametrize("job", ["calibrate", "histogram"])
def test_raw_hits_twice_in_one_cell_are_an_error(
    valid: dict[str, Path], tmp_path: Path, job: str
) -> None:
    bad = _duplicate(valid["raw"], tmp_path / "twice.root", 7)
    cellid = int(read_events(valid["raw"]).hits.cellid[7][0])
    _fails(
        job,
        bad,
        DuplicateHitError,
        rf"twice\.root: tree 'events', entry 7 \(event 7\): cell {cellid} is read 2 times"
        r".*one reading per cell and event",
    )


def test_simulated_deposits_in_one_cell_are_summed_before_digitisation(
    valid: dict[str, Path], tmp_path: Path
) -> None:
    """A deposit split in two (the second half at the end of its event) digitises exactly like
    the whole deposit: random numbers are keyed by the position of a cell's first hit (and by
    the file's UUID, the same in both copies)."""
    split = _duplicate(valid["sim"], tmp_path / "split.root", 7, energy_factor=0.5)
    whole = _changed(valid["sim"], tmp_path / "whole.root", lambda branches: None)
    expected = digitize_files([whole], tmp_path / "whole-raw.root")
    got = digitize_files([split], tmp_path / "split-raw.root")
    assert got.cutflow["digitize"]["removed"]["merged_same_cell"] == 1
    assert got.cutflow["digitize"]["hits_in"] == expected.cutflow["digitize"]["hits_in"] + 1
    assert got.cutflow["digitize"]["hits_out"] == expected.cutflow["digitize"]["hits_out"]
    assert got.output is not None and expected.output is not None
    a, b = read_events(expected.output), read_events(got.output)
    for name in a.hits.fields:
        assert ak.all(a.hits[name] == b.hits[name]), name


# --------------------------------------------------------------------------- 11. empty


@pytest.mark.parametrize("job", JOBS)
def test_empty_file_is_nothing_to_do(valid: dict[str, Path], tmp_path: Path, job: str) -> None:
    source = valid[JOBS[job][0]]
    bad = write_events(tmp_path / "empty.root", [read_events(source)[:0]], read_metadata(source))
    _fails(
        job,
        bad,
        EmptyInputError,
        r"empty\.root: tree 'events' has no entries: nothing to process.*remove it",
    )


# --------------------------------------------------------------------------- 12. no hits


@pytest.mark.parametrize("emptied", [[0, 3, 4], list(range(N_EVENTS))])
def test_events_without_hits_are_processed_and_counted(
    valid: dict[str, Path], tmp_path: Path, emptied: list[int]
) -> None:
    events = read_events(valid["sim"])
    keep = np.ones(len(events), bool)
    keep[emptied] = False
    hits = events.hits[ak.broadcast_arrays(keep, events.hits.energy)[0]]
    path = write_events(
        tmp_path / "nohits.root", [ak.with_field(events, hits, "hits")], read_metadata(valid["sim"])
    )
    result = histogram_files([path], tmp_path / "h.root")
    nhit = result.histograms["nhit"]
    assert nhit.sum(flow=True) == N_EVENTS
    assert nhit[{"beam_energy": sum, "nhit": 0}] == len(emptied)
    assert result.histograms["energy_sum"].sum(flow=True) == N_EVENTS
    step = result.cutflow["histogram"]
    assert step["events_in"] == step["events_out"] == N_EVENTS
    assert step["hits_in"] == int(ak.sum(ak.num(hits)))
    raw = digitize_files([path], tmp_path / "raw.root")
    assert raw.output is not None
    assert len(read_events(raw.output)) == N_EVENTS
    assert raw.cutflow["digitize"]["events_out"] == N_EVENTS


# --------------------------------------------------------------------------- skip bad files


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three simulated files, two baskets per branch."""
    directory = tmp_path_factory.mktemp("three")
    out = []
    for seed in (11, 12, 13):
        sim = simulate(
            "cepc_ahcal",
            "e-",
            Beam(energies_gev=(10.0,)),
            N_EVENTS,
            seed,
            directory / f"s{seed}.root",
        )
        out.append(_split(sim, directory / f"sim{seed}.root", 2))
    return out


DAMAGE = {
    "second basket": lambda src, dst: _corrupt_basket(src, dst, "hit_energy", basket=1),
    "truncated": _truncated,
}


@pytest.mark.parametrize("executor", ["iterative", "futures"])
@pytest.mark.parametrize("damage", DAMAGE)
def test_skip_bad_files_in_histograms(
    three: list[Path], tmp_path: Path, damage: str, executor: str
) -> None:
    """The first half of the damaged file reads fine; it is dropped with the rest."""
    bad = DAMAGE[damage](three[1], tmp_path / "bad.root")
    options = RunOptions(executor, workers=2, chunksize=N_EVENTS // 2)
    good = histogram_files([three[0], three[2]], run_options=options)
    output = tmp_path / "h.root"
    with pytest.raises(CorruptFileError, match=r"bad\.root"):
        histogram_files([three[0], bad, three[2]], output, run_options=options)
    _nothing_written(output)

    with pytest.warns(InvalidInputWarning, match=r"skipped 1 of 3 input files.*bad\.root"):
        result = histogram_files(
            [three[0], bad, three[2]], output, run_options=options, skip_bad_files=True
        )
    assert list(result.cutflow["skipped_files"]) == [str(bad)]
    reason = result.cutflow["skipped_files"][str(bad)]
    assert (
        "branch 'hit_energy', entries 20-40" if damage == "second basket" else "truncated"
    ) in reason
    assert result.cutflow["histogram"] == good.cutflow["histogram"]
    assert result.histograms.keys() == good.histograms.keys()
    for key, h in good.histograms.items():
        assert np.array_equal(h.view(flow=True), result.histograms[key].view(flow=True)), key
    assert output.exists()
    written = json.loads(output.with_name("h.root.json").read_text())
    assert written.keys() == good.histograms.keys()


def test_skip_bad_files_in_digitize_records_them_in_the_output(
    three: list[Path], tmp_path: Path
) -> None:
    bad = _corrupt_basket(three[1], tmp_path / "bad.root", "hit_cellid", basket=1)
    options = RunOptions(chunksize=N_EVENTS // 2)
    with pytest.warns(InvalidInputWarning, match=r"bad\.root"):
        result = digitize_files(
            [three[0], bad, three[2]],
            tmp_path / "raw.root",
            run_options=options,
            skip_bad_files=True,
        )
    good = digitize_files([three[0], three[2]], tmp_path / "good.root", run_options=options)
    assert result.output is not None and good.output is not None
    a, b = read_events(result.output), read_events(good.output)
    assert len(a) == 2 * N_EVENTS
    assert ak.all(a.hits.energy == b.hits.energy)
    extra = read_metadata(result.output).extra
    assert list(extra["skipped_inputs"]) == [str(bad)]
    assert extra["inputs"] == [str(three[0]), str(three[2])]


def test_skip_bad_files_in_calibrate(valid: dict[str, Path], tmp_path: Path) -> None:
    bad = _truncated(valid["raw"], tmp_path / "bad.root")
    with pytest.warns(InvalidInputWarning, match=r"bad\.root"):
        result = _calibrate([valid["raw"], bad], tmp_path / "mip.root", skip_bad_files=True)
    assert list(result.cutflow["skipped_files"]) == [str(bad)]
    assert result.cutflow["calibrate"]["events_in"] == N_EVENTS


@pytest.mark.parametrize("job", JOBS)
def test_skip_bad_files_when_every_file_is_bad(
    valid: dict[str, Path], tmp_path: Path, job: str
) -> None:
    bad = _truncated(valid[JOBS[job][0]], tmp_path / "bad.root")
    worse = _corrupt_basket(valid[JOBS[job][0]], tmp_path / "worse.root")
    output = tmp_path / "out.root"
    with pytest.raises(
        InputFileError, match=r"every input file is bad.*bad\.root.*worse\.root"
    ) as info:
        JOBS[job][1]([bad, worse], output, skip_bad_files=True)
    assert type(info.value) is InputFileError
    _nothing_written(output)


def test_cli_skip_bad_files(three: list[Path], tmp_path: Path, capsys: Any) -> None:
    bad = _corrupt_basket(three[1], tmp_path / "bad.root")
    output = tmp_path / "h.root"
    files = [str(three[0]), str(bad), str(three[2])]
    assert main(["histogram", *files, "-o", str(output)]) == 2
    assert "bad.root: tree 'events', branch 'hit_energy'" in capsys.readouterr().err
    _nothing_written(output)
    with pytest.warns(InvalidInputWarning, match=r"bad\.root"):
        assert main(["histogram", *files, "-o", str(output), "--skip-bad-files"]) == 0
    printed = capsys.readouterr().out
    assert f"skipped files:\n  {bad}: " in printed
    assert output.exists()
