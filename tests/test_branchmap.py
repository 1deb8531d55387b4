"""Tests of calocoffea.branchmap: flat ntuples read through a TOML branch map."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
import uproot

from calocoffea.branchmap import PRODUCER, BranchMap, MappedNtuple
from calocoffea.exceptions import BranchMapError, InputFileError
from calocoffea.geometry import get_geometry
from calocoffea.io import HIT_DTYPES, SCALAR_DTYPES, read_events, read_metadata, write_events
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate

EXAMPLE = Path(__file__).parents[1] / "examples" / "branchmap.toml"

#: The example map without tree, counter, geometry and unit conversions of hits:
#: what the std::vector ntuple below needs.
VECTOR_MAP: dict[str, Any] = {
    "stage": "sim",
    "event": {"event": "EventNumber", "run": "RunNumber", "pdg": 11, "beam_energy": "Ebeam"},
    "hits": {
        "cellid": "CellID",
        "layer": "K",
        "i": "I",
        "j": "J",
        "x": "HitX",
        "y": "HitY",
        "z": "HitZ",
        "energy": {"branch": "HitEnergy", "unit": "keV"},
        "time": {"branch": "HitTime", "unit": "ps"},
    },
}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def native_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("branchmap") / "native.root"
    return simulate("cepc_ahcal", "e-", Beam(energies_gev=(10.0,)), 50, 3, path)


@pytest.fixture(scope="module")
def native(native_path: Path) -> ak.Array:
    return read_events(native_path)


def _f32(array: ak.Array) -> ak.Array:
    return ak.values_astype(array, np.float32)


def _write_flat(
    path: Path,
    scalars: Mapping[str, Any],
    jagged: Mapping[str, ak.Array],
    counter: str | None = "nHits",
    treename: str = "hits",
) -> Path:
    """A flat ntuple written by uproot: C-style arrays counted by ``counter`` (one counter
    per branch, n<branch>, where ``counter`` is None)."""
    columns = {name: ak.Array(np.asarray(values)) for name, values in scalars.items()}
    columns.update(jagged)
    with uproot.recreate(path) as file:
        tree = file.mktree(
            treename,
            {name: column.type.content for name, column in columns.items()},
            counter_name=(lambda counted: counter) if counter else (lambda c: "n" + c),
        )
        tree.extend(columns)
    return path


def _foreign_columns(native: ak.Array) -> tuple[dict[str, Any], dict[str, ak.Array]]:
    """The native events as a foreign ntuple would hold them: cm, GeV, MeV beam energy."""
    hits = native.hits
    scalars = {
        "EventNumber": ak.to_numpy(native.event),
        "RunNumber": ak.to_numpy(native.run),
        "BeamEnergy": ak.to_numpy(native.beam_energy) * 1000.0,  # MeV
    }
    jagged = {
        "CellID": hits.cellid,
        "K": ak.values_astype(hits.layer, np.int32),
        "I": hits.i,
        "J": hits.j,
        "HitX": _f32(hits.x / 10.0),  # cm
        "HitY": _f32(hits.y / 10.0),
        "HitZ": _f32(hits.z / 10.0),
        "HitEnergy": _f32(hits.energy / 1000.0),  # GeV
        "HitTime": hits.time,
    }
    return scalars, jagged


@pytest.fixture(scope="module")
def carray_path(native: ak.Array, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The native events as C-style arrays HitX[nHits] and so on, written by uproot."""
    scalars, jagged = _foreign_columns(native)
    path = tmp_path_factory.mktemp("branchmap") / "carrays.root"
    return _write_flat(path, scalars, jagged)


@pytest.fixture(scope="module")
def vector_path(native: ak.Array, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The native events as std::vector branches written by ROOT: x, y, z in mm as
    double, layer as int, energy in keV, time in ps."""
    root = pytest.importorskip("ROOT")
    path = tmp_path_factory.mktemp("branchmap") / "vectors.root"
    hits = native.hits
    columns = {
        "CellID": ("unsigned long long", hits.cellid),
        "K": ("int", hits.layer),
        "I": ("short", hits.i),
        "J": ("short", hits.j),
        "HitX": ("double", hits.x),
        "HitY": ("double", hits.y),
        "HitZ": ("double", hits.z),
        "HitEnergy": ("float", _f32(hits.energy * 1000.0)),  # keV
        "HitTime": ("float", _f32(hits.time * 1000.0)),  # ps
    }
    file = root.TFile(str(path), "RECREATE")
    tree = root.TTree("hits", "foreign hits")
    event = np.zeros(1, np.int64)
    run = np.zeros(1, np.int32)
    beam = np.zeros(1, np.float64)
    tree.Branch("EventNumber", event, "EventNumber/L")
    tree.Branch("RunNumber", run, "RunNumber/I")
    tree.Branch("Ebeam", beam, "Ebeam/D")
    vectors = {name: root.std.vector[ctype]() for name, (ctype, _) in columns.items()}
    for name, vector in vectors.items():
        tree.Branch(name, vector)
    lists = {name: values.tolist() for name, (_, values) in columns.items()}
    for k in range(len(native)):
        event[0], run[0], beam[0] = native.event[k], native.run[k], native.beam_energy[k]
        for name, vector in vectors.items():
            vector.clear()
            for value in lists[name][k]:
                vector.push_back(value)
        tree.Fill()
    tree.Write()
    file.Close()
    return path


def _read(path: Path, mapping: BranchMap | Mapping[str, Any], step: int = 50_000) -> ak.Array:
    branch_map = mapping if isinstance(mapping, BranchMap) else BranchMap.from_dict(mapping)
    chunks = list(MappedNtuple(path, branch_map).chunks(step))
    return ak.concatenate(chunks) if len(chunks) > 1 else chunks[0]


def _assert_same_events(got: ak.Array, native: ak.Array) -> None:
    """Integers exactly, floats to the float32 rounding of a unit conversion (and to 1e-35
    absolutely: the simulation writes subnormal deposits, 1e-45 MeV, whose conversion to
    GeV and back loses their few bits)."""
    assert len(got) == len(native)
    got_hits = got.hit if "hit" in got.fields else got.hits
    for name in ("event", "run", "pdg"):
        values = ak.to_numpy(got[name])
        assert values.dtype == SCALAR_DTYPES[name]
        np.testing.assert_array_equal(values, ak.to_numpy(native[name]))
    assert ak.to_numpy(got.beam_energy).dtype == np.float64
    np.testing.assert_allclose(got.beam_energy, native.beam_energy, rtol=1e-12)
    assert ak.num(got_hits, axis=1).tolist() == ak.num(native.hits, axis=1).tolist()
    mine, theirs = ak.flatten(got_hits, axis=1), ak.flatten(native.hits, axis=1)
    assert mine.fields == [n for n in HIT_DTYPES if n in mine.fields]
    for name in mine.fields:
        values = ak.to_numpy(mine[name])
        assert values.dtype == HIT_DTYPES[name], name
        if values.dtype.kind == "f":
            np.testing.assert_allclose(values, ak.to_numpy(theirs[name]), rtol=1e-6, atol=1e-35)
        else:
            np.testing.assert_array_equal(values, ak.to_numpy(theirs[name]))


# --------------------------------------------------------------------------- reading


def test_example_map_parses() -> None:
    branch_map = BranchMap.load(EXAMPLE)
    assert (branch_map.tree, branch_map.stage, branch_map.geometry) == ("hits", "sim", "cepc_ahcal")
    assert branch_map.counter == "nHits"
    assert branch_map.hits["x"].factor == 10.0
    assert branch_map.hits["energy"].factor == 1000.0
    assert branch_map.event["beam_energy"].factor == pytest.approx(1e-3)
    assert branch_map.event["pdg"].value == 11
    assert branch_map.branches()[:2] == ["nHits", "EventNumber"]
    assert "HitTime" in branch_map.branches()
    assert BranchMap.from_dict(branch_map.to_dict()) == branch_map


def test_c_arrays_with_counter(carray_path: Path, native: ak.Array) -> None:
    """The example map reads the C-style-array ntuple back to the native events, in any
    chunking."""
    branch_map = BranchMap.load(EXAMPLE)
    assert uproot.open(carray_path)["hits/HitX"].typename == "float[]"
    _assert_same_events(_read(carray_path, branch_map), native)
    chunks = list(MappedNtuple(carray_path, branch_map).chunks(step_events=7))
    assert [len(c) for c in chunks] == [7] * 7 + [1]
    _assert_same_events(ak.concatenate(chunks), native)


def test_std_vectors_without_counter(vector_path: Path, native: ak.Array) -> None:
    assert uproot.open(vector_path)["hits/HitX"].typename == "std::vector<double>"
    _assert_same_events(_read(vector_path, VECTOR_MAP), native)


def test_converted_file_round_trip(carray_path: Path, native: ak.Array, tmp_path: Path) -> None:
    """chunks, metadata and identity are what write_events takes; the file keeps the
    ntuple's UUID and records the map."""
    ntuple = MappedNtuple(carray_path, BranchMap.load(EXAMPLE))
    assert ntuple.num_entries == len(native)
    with uproot.open(carray_path) as file:
        assert ntuple.identity == file.file.uuid
    out = write_events(
        tmp_path / "converted.root", ntuple.chunks(20), ntuple.metadata(), identity=ntuple.identity
    )
    _assert_same_events(read_events(out, stage="sim"), native)
    with uproot.open(out) as file:
        assert file.file.uuid == ntuple.identity
    metadata = read_metadata(out)
    assert metadata.stage == "sim"
    assert metadata.producer == PRODUCER
    assert metadata.geometry == "cepc_ahcal"
    assert metadata.geometry_hash == get_geometry("cepc_ahcal").hash
    assert metadata.extra["source"] == str(carray_path)
    assert metadata.extra["format"] == "ntuple"
    assert metadata.extra["tree"] == "hits"
    assert BranchMap.from_dict(metadata.extra["branch_map"]) == ntuple.branch_map


def test_describe(carray_path: Path, native: ak.Array) -> None:
    text = "\n".join(MappedNtuple(carray_path, EXAMPLE).describe())
    assert f"hits ({len(native)} entries)" in text
    assert re.search(r"hits\.x\s+<- HitX \(float\[\], cm -> mm, x 10\)", text)
    assert re.search(r"event\.pdg\s+= 11 \(constant\)", text)
    assert "hits.flags" in text and "not mapped" in text
    mean = float(np.mean(ak.num(native.hits, axis=1)))
    assert f"hits/event  {mean:.1f} mean" in text


def test_constants_in_event(carray_path: Path, native: ak.Array) -> None:
    mapping = BranchMap.load(EXAMPLE).to_dict()
    mapping["event"].update(run=5, pdg=-211, beam_energy={"value": 30000, "unit": "MeV"})
    events = _read(carray_path, mapping)
    assert ak.to_numpy(events.run).dtype == np.int32
    assert set(ak.to_numpy(events.run)) == {5}
    assert set(ak.to_numpy(events.pdg)) == {-211}
    np.testing.assert_allclose(events.beam_energy, 30.0)
    assert ak.to_numpy(events.event).tolist() == ak.to_numpy(native.event).tolist()


def test_flags_default_to_zero_and_optional_fields(carray_path: Path, native: ak.Array) -> None:
    mapping = BranchMap.load(EXAMPLE).to_dict()
    for name in ("i", "j", "time"):
        del mapping["hits"][name]
    hits = _read(carray_path, mapping).hit
    assert hits.fields == ["cellid", "layer", "x", "y", "z", "energy", "flags"]
    flags = ak.to_numpy(ak.flatten(hits.flags))
    assert flags.dtype == np.uint32 and not flags.any()


# --------------------------------------------------------------------------- stages and units


def _small_ntuple(path: Path, energy: list[list[float]], energy_dtype: Any = np.float32) -> Path:
    counts = [len(e) for e in energy]
    hits = {
        "CellID": ak.values_astype(ak.Array([list(range(1, n + 1)) for n in counts]), np.uint64),
        "K": ak.Array([[3] * n for n in counts]),
        "HitX": _f32(ak.Array([[1.0] * n for n in counts])),
        "HitE": ak.values_astype(ak.Array(energy), energy_dtype),
    }
    scalars = {"Evt": np.arange(len(energy)), "Ebeam": np.full(len(energy), 10.0)}
    return _write_flat(path, scalars, hits)


def _small_map(energy: Any, **top: Any) -> dict[str, Any]:
    return {
        **top,
        "event": {"event": "Evt", "run": 1, "pdg": 11, "beam_energy": "Ebeam"},
        "hits": {
            "cellid": "CellID",
            "layer": "K",
            "x": "HitX",
            "y": "HitX",
            "z": "HitX",
            "energy": energy,
        },
    }


def test_energy_in_kev_for_stage_sim(tmp_path: Path) -> None:
    path = _small_ntuple(tmp_path / "kev.root", [[1500.0, 250.0], [], [4.0]])
    ntuple = MappedNtuple(
        path, BranchMap.from_dict(_small_map({"branch": "HitE", "unit": "keV"}, stage="sim"))
    )
    (events,) = ntuple.chunks()
    np.testing.assert_allclose(ak.flatten(events.hit.energy), [1.5, 0.25, 0.004], rtol=1e-6)
    assert ntuple.metadata().stage == "sim"
    assert ntuple.metadata().geometry == "" and ntuple.metadata().geometry_hash == ""


def test_adc_means_raw_and_mip_means_mip(tmp_path: Path) -> None:
    path = _small_ntuple(tmp_path / "adc.root", [[812, 40], [3]], np.int32)
    raw = BranchMap.from_dict(_small_map({"branch": "HitE", "unit": "ADC"}))
    assert raw.stage == "raw"
    (events,) = MappedNtuple(path, raw).chunks()
    assert ak.flatten(events.hit.energy).tolist() == [812.0, 40.0, 3.0]
    assert ak.to_numpy(ak.flatten(events.hit.energy)).dtype == np.float32
    assert BranchMap.from_dict(_small_map({"branch": "HitE", "unit": "MIP"})).stage == "mip"
    calibrated = BranchMap.from_dict(_small_map({"branch": "HitE", "unit": "MeV"}, stage="gev"))
    assert calibrated.hits["energy"].factor == pytest.approx(1e-3)
    assert BranchMap.from_dict(_small_map("HitE", stage="mip")).hits["energy"].factor == 1.0


@pytest.mark.parametrize(
    ("energy", "top", "message"),
    [
        (
            {"branch": "E", "unit": "MeV"},
            {"stage": "raw"},
            r"'MeV' is a unit of energy.*stage 'raw'",
        ),
        ({"branch": "E", "unit": "ADC"}, {"stage": "sim"}, r"'ADC' is a unit of ADC counts.*MeV"),
        ({"branch": "E", "unit": "MIP"}, {"stage": "gev"}, r"valid units: eV, keV, MeV, GeV"),
        ({"branch": "E", "unit": "GeV"}, {}, r'stage: not given.*"sim".*"gev"'),
        ("E", {}, r"stage: not given, and hits.energy has no unit"),
        ({"branch": "E", "unit": "Gev"}, {}, r"unknown unit 'Gev' \(did you mean 'GeV'\?\)"),
        ("E", {"stage": "calibrated"}, r"unknown stage 'calibrated'; valid stages: 'sim'"),
    ],
)
def test_wrong_stage_and_unit(energy: Any, top: dict[str, str], message: str) -> None:
    with pytest.raises(BranchMapError, match=message):
        BranchMap.from_dict(_small_map(energy, **top))


@pytest.mark.parametrize(
    ("where", "entry", "message"),
    [
        (
            "hits",
            {"x": {"branch": "HitX", "unit": "inch"}},
            r"hits\.x\.unit: unknown unit 'inch'.*um, mm, cm, m",
        ),
        ("hits", {"x": {"branch": "HitX", "unit": "ns"}}, r"'ns' is a unit of time, not of length"),
        (
            "hits",
            {"layer": {"branch": "K", "unit": "mm"}},
            r"hits\.layer\.unit: layer is a plain number",
        ),
        ("event", {"beam_energy": {"value": 10, "unit": "mev"}}, r"did you mean 'MeV'"),
        ("event", {"run": 1.5}, r"event\.run: 1\.5 is not a whole number that int32"),
        ("event", {"pdg": True}, r"event\.pdg: expected a branch name in quotes or a number"),
        ("hits", {"x": 1.0}, r"hits\.x: expected a branch name.*constants are for \[event\]"),
        ("hits", {"x": {"value": 1.0}}, r"hits\.x: unknown key 'value'; valid keys: branch, unit"),
        ("event", {"run": {"branch": "R", "value": 1}}, r"exactly one of 'branch' and 'value'"),
    ],
)
def test_bad_entries(where: str, entry: dict[str, Any], message: str) -> None:
    mapping = _small_map("HitE", stage="sim")
    mapping[where].update(entry)
    with pytest.raises(BranchMapError, match=message):
        BranchMap.from_dict(mapping, where="branch map my.toml")
    with pytest.raises(BranchMapError, match=r"^branch map my\.toml: "):
        BranchMap.from_dict(mapping, where="branch map my.toml")


# --------------------------------------------------------------------------- map errors


def test_required_field_not_mapped() -> None:
    mapping = _small_map("HitE", stage="sim")
    del mapping["event"]["beam_energy"]
    del mapping["hits"]["z"]
    with pytest.raises(BranchMapError, match=r"required fields event\.beam_energy, hits\.z are"):
        BranchMap.from_dict(mapping)
    with pytest.raises(BranchMapError, match=r"no \[hits\] table"):
        BranchMap.from_dict({"stage": "sim", "event": mapping["event"]})


def test_unknown_keys_list_the_valid_ones() -> None:
    mapping = _small_map("HitE", stage="sim")
    with pytest.raises(
        BranchMapError,
        match=r"top level: unknown key 'trees' \(did you mean 'tree'\?\); "
        r"valid keys: tree, stage, geometry, event, hits",
    ):
        BranchMap.from_dict({**mapping, "trees": "hits"})
    mapping["hits"]["energie"] = "E"
    with pytest.raises(
        BranchMapError,
        match=r"\[hits\]: unknown key 'energie' \(did you mean 'energy'\?\); "
        r"valid keys: counter, cellid",
    ):
        BranchMap.from_dict(mapping)
    mapping = _small_map("HitE", stage="sim")
    mapping["event"]["fem_ecal"] = "FemEcal"  # fem_<section> is a valid event key
    assert "fem_ecal" in BranchMap.from_dict(mapping).event


def test_malformed_toml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('stage = "sim"\n[event]\npdg = e-\n')
    with pytest.raises(
        BranchMapError, match=r"branch map .*broken\.toml, line 3: not valid TOML"
    ) as info:
        BranchMap.load(path)
    assert "3 | pdg = e-" in str(info.value)
    with pytest.raises(BranchMapError, match=r"absent\.toml does not exist"):
        BranchMap.load(tmp_path / "absent.toml")


# --------------------------------------------------------------------------- file errors


def test_missing_branch_names_the_closest(carray_path: Path) -> None:
    mapping = BranchMap.load(EXAMPLE).to_dict()
    mapping["hits"]["x"] = {"branch": "HitXX", "unit": "cm"}
    mapping["event"]["run"] = "Run"
    with pytest.raises(BranchMapError) as info:
        MappedNtuple(carray_path, BranchMap.from_dict(mapping))
    message = str(info.value)
    assert "hits.x = 'HitXX': no such branch (closest: HitX" in message
    assert "event.run = 'Run': no such branch (closest: RunNumber" in message
    assert str(carray_path) in message


def test_mismatched_hit_counts_name_the_entry(tmp_path: Path) -> None:
    counts = [3, 1, 2, 4, 0]
    hits = {
        "CellID": ak.values_astype(ak.Array([[1] * n for n in counts]), np.uint64),
        "K": ak.Array([[2] * n for n in counts]),
        "HitX": _f32(ak.Array([[1.0] * n for n in counts])),
        "HitE": _f32(ak.Array([[1.0] * (n + (k == 3)) for k, n in enumerate(counts)])),
    }
    scalars = {"Evt": np.arange(5), "Ebeam": np.full(5, 10.0)}
    path = _write_flat(tmp_path / "ragged.root", scalars, hits, counter=None)
    ntuple = MappedNtuple(path, BranchMap.from_dict(_small_map("HitE", stage="sim")))
    pattern = (
        r"hits\.cellid = 'CellID' and hits\.energy = 'HitE' disagree .* at entry 3 \(4 and 5\)"
    )
    with pytest.raises(BranchMapError, match=pattern):
        list(ntuple.chunks(step_events=2))
    mapping = _small_map("HitX", stage="sim")
    mapping["hits"]["counter"] = "nHitE"
    with pytest.raises(
        BranchMapError, match=r"hits\.counter = 'nHitE' and hits\.cellid .* entry 3"
    ):
        list(MappedNtuple(path, BranchMap.from_dict(mapping)).chunks())


def test_values_that_do_not_fit_name_the_entry(tmp_path: Path) -> None:
    counts = [1, 2, 1]
    hits = {
        "CellID": ak.values_astype(ak.Array([[1] * n for n in counts]), np.uint64),
        "K": ak.Array([[1], [2, 70000], [3]]),
        "HitX": _f32(ak.Array([[1.0] * n for n in counts])),
        "HitE": _f32(ak.Array([[1.0] * n for n in counts])),
    }
    path = _write_flat(tmp_path / "big.root", {"Evt": np.arange(3), "Ebeam": np.ones(3)}, hits)
    ntuple = MappedNtuple(path, BranchMap.from_dict(_small_map("HitE", stage="sim")))
    with pytest.raises(BranchMapError, match=r"hits\.layer = 'K' holds 70000 at entry 1.*int16"):
        list(ntuple.chunks())


def test_wrong_kind_of_branch(carray_path: Path) -> None:
    mapping = BranchMap.load(EXAMPLE).to_dict()
    mapping["hits"]["layer"] = "RunNumber"
    mapping["event"]["event"] = "HitX"
    with pytest.raises(BranchMapError) as info:
        MappedNtuple(carray_path, BranchMap.from_dict(mapping))
    message = str(info.value)
    assert "hits.layer = 'RunNumber' (int32_t): one value per entry" in message
    assert "event.event = 'HitX' (float[]): an array per entry" in message


def test_tree_errors(carray_path: Path, tmp_path: Path) -> None:
    mapping = BranchMap.load(EXAMPLE).to_dict()
    path = tmp_path / "rntuple.root"
    with uproot.recreate(path) as file:
        file["hits"] = {"x": np.arange(3)}  # uproot writes an RNTuple
    with pytest.raises(BranchMapError, match=r"tree 'hits' .* is a ROOT::RNTuple, not a TTree"):
        MappedNtuple(path, BranchMap.from_dict(mapping))
    mapping["tree"] = "hit"
    with pytest.raises(BranchMapError, match=r"tree 'hit' .* does not exist \(closest: hits\)"):
        MappedNtuple(carray_path, BranchMap.from_dict(mapping))
    path = tmp_path / "two.root"
    with uproot.recreate(path) as file:
        for name in ("a", "b"):
            file.mktree(name, {"x": "int64"}).extend({"x": np.arange(3)})
    del mapping["tree"]
    with pytest.raises(BranchMapError, match=r"holds 2 TTrees .* add tree = \"NAME\""):
        MappedNtuple(path, BranchMap.from_dict(mapping))
    with pytest.raises(InputFileError, match=r"absent\.root does not exist"):
        MappedNtuple(tmp_path / "absent.root", BranchMap.from_dict(mapping))


def test_unknown_geometry(carray_path: Path) -> None:
    mapping = BranchMap.load(EXAMPLE).to_dict()
    mapping["geometry"] = "cepc_ahcl"
    with pytest.raises(BranchMapError, match=r"geometry: unknown geometry 'cepc_ahcl'.*cepc_ahcal"):
        MappedNtuple(carray_path, BranchMap.from_dict(mapping))


@pytest.fixture(scope="module")
def split_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two split objects a and b with members of the same names (a/x, b/x) and a branch
    whose name looks like an expression, evt[0]; written by ROOT."""
    root = pytest.importorskip("ROOT")
    root.gInterpreter.Declare(
        "struct CalocoffeaTestHits { std::vector<unsigned long long> cellid; "
        "std::vector<int> layer; std::vector<float> x; std::vector<float> e; };"
    )
    path = tmp_path_factory.mktemp("branchmap") / "split.root"
    file = root.TFile(str(path), "RECREATE")
    tree = root.TTree("t", "split objects")
    event = np.zeros(1, np.int64)
    tree.Branch("evt[0]", event, "evt/L")
    objects = {name: root.CalocoffeaTestHits() for name in ("a", "b")}
    for name, hits in objects.items():
        tree.Branch(name, hits, 32000, 99)
    for k in range(4):
        event[0] = 100 + k
        for scale, hits in enumerate(objects.values(), start=1):
            for member in (hits.cellid, hits.layer, hits.x, hits.e):
                member.clear()
            for h in range(k):
                hits.cellid.push_back(10 * k + h)
                hits.layer.push_back(h)
                hits.x.push_back(scale * (k + 0.5 * h))
                hits.e.push_back(scale * 2.0)
        tree.Fill()
    tree.Write()
    file.Close()
    return path


@pytest.mark.parametrize("members", [("a/x", "a/x"), ("a/x", "b/x")], ids=["unique", "clash"])
def test_odd_branch_names(split_path: Path, members: tuple[str, str]) -> None:
    """Names that read as expressions, and members of the same short name, are read as
    the branches they name (the second case reads branch by branch)."""
    mapping = {
        "stage": "sim",
        "event": {"event": "evt[0]", "run": 1, "pdg": 11, "beam_energy": 10.0},
        "hits": {
            "cellid": "a/cellid",
            "layer": "a/layer",
            "x": members[0],
            "y": members[1],
            "z": "a/x",
            "energy": "a/e",
        },
    }
    events = _read(split_path, mapping, step=3)
    assert ak.to_numpy(events.event).tolist() == [100, 101, 102, 103]
    assert ak.num(events.hit, axis=1).tolist() == [0, 1, 2, 3]
    assert events.hit.x.tolist() == [[], [1.0], [2.0, 2.5], [3.0, 3.5, 4.0]]
    scale = 2.0 if members[1] == "b/x" else 1.0
    assert events.hit.y.tolist() == [
        [],
        [scale],
        [2 * scale, 2.5 * scale],
        [3 * scale, 3.5 * scale, 4 * scale],
    ]
    assert ak.to_numpy(ak.flatten(events.hit.layer)).dtype == np.int16


def test_command_line_reads_the_ntuple_through_the_map(
    carray_path: Path, native: ak.Array, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`info --map` describes the mapping; `convert --map` and `histogram --map` read the
    ntuple as the native file (same events, same histograms)."""
    from calocoffea.cli.main import main

    example = str(EXAMPLE)
    assert main(["info", "--map", example, str(carray_path)]) == 0
    out = capsys.readouterr().out
    assert "HitX" in out and "cm -> mm" in out
    converted = tmp_path / "converted.root"
    assert main(["convert", str(carray_path), "--map", example, "-o", str(converted)]) == 0
    _assert_same_events(read_events(converted), native)
    direct, reference = tmp_path / "h-map.root", tmp_path / "h-native.root"
    assert main(["histogram", str(carray_path), "--map", example, "-o", str(direct)]) == 0
    assert main(["histogram", str(converted), "-o", str(reference)]) == 0
    import json

    got = json.loads(Path(f"{direct}.json").read_text())
    want = json.loads(Path(f"{reference}.json").read_text())
    assert got == want
