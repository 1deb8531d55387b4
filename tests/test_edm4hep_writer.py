"""Tests of the test helper _edm4hep_root: EDM4hep files written with ROOT in podio's layout.

The written values read back with uproot and ROOT, and the branches, uproot interpretations
and streamer infos are compared with those of a real podio-written file
(``shared/data/edm4hep_podio_sample.root``, beside the repository).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ROOT
import uproot
from _edm4hep_root import (
    EDM4HEP_VERSION,
    PODIO_VERSION,
    SCHEMA_VERSION,
    collection_id,
    write_edm4hep_file,
)
from uproot.interpretation.grouped import AsGrouped
from uproot.interpretation.identify import UnknownInterpretation

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "edm4hep_podio_sample.root"
COLLECTION = "HcalBarrelCollection"
CONTRIBUTIONS = f"{COLLECTION}Contributions"
MC = "MCParticles"
ENCODING = "system:8,barrel:3,module:4,layer:8,slice:5,x:32:-16,y:-16"
N_EVENTS = 3

EVENTS_BRANCHES = [
    "EventHeader",
    "_EventHeader_weights",
    COLLECTION,
    f"_{COLLECTION}_contributions",
    CONTRIBUTIONS,
    f"_{CONTRIBUTIONS}_particle",
    MC,
    f"_{MC}_parents",
    f"_{MC}_daughters",
    "GPIntKeys",
    "GPIntValues",
    "GPFloatKeys",
    "GPFloatValues",
    "GPDoubleKeys",
    "GPDoubleValues",
    "GPStringKeys",
    "GPStringValues",
]
PARAMETER_BRANCHES = EVENTS_BRANCHES[-8:]


def make_events(n_events: int = N_EVENTS, seed: int = 20240611) -> list[dict[str, Any]]:
    """Seeded random events in write_edm4hep_file's input format."""
    rng = np.random.default_rng(seed)
    events = []
    for i in range(n_events):
        n = int(rng.integers(200, 400))
        events.append(
            {
                "event_number": 100 + i,
                "run_number": 7,
                "hits": {
                    "cellID": rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True),
                    "energy": rng.exponential(0.002, n),
                    "x": rng.normal(0.0, 300.0, n),
                    "y": rng.normal(0.0, 300.0, n),
                    "z": rng.uniform(-2000.0, 2000.0, n),
                    "time": rng.normal(5.0, 2.0, n),
                    "pdg": rng.choice(np.array([11, -11, 22, 211, -211, 2112]), n),
                },
                "particles": [
                    {
                        "PDG": -211,
                        "generatorStatus": 1,
                        "mass": 0.13957039,
                        "momentum": (*rng.normal(0.0, 1.0, 2), 20.0 + rng.normal()),
                        "vertex": tuple(rng.normal(0.0, 1.0, 3)),
                        "charge": -1.0,
                    },
                    {
                        "PDG": 22,
                        "generatorStatus": 0,
                        "mass": 0.0,
                        "momentum": (0.1, 0.2, 1.5),
                        "vertex": (1.0, 2.0, 3.0),
                        "charge": 0.0,
                    },
                ],
            }
        )
    return events


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    events = make_events()
    path = tmp_path_factory.mktemp("edm4hep") / "sim.edm4hep.root"
    assert write_edm4hep_file(path, events, encoding=ENCODING) == path
    return path, events


@pytest.fixture(scope="module")
def sample() -> Any:
    if not SAMPLE.is_file():
        pytest.skip(
            f"../shared/data/edm4hep_podio_sample.root not found: {SAMPLE} is absent, so the "
            "layout cannot be compared with a real podio-written file"
        )
    with uproot.open(SAMPLE) as file:
        yield file


def _column(tree: Any, name: str) -> list[np.ndarray]:
    return list(tree[name].array(library="np"))


# --------------------------------------------------------------------------- values


def test_hits_and_contributions_read_back(written: tuple[Path, list[dict[str, Any]]]) -> None:
    path, events = written
    with uproot.open(path) as file:
        tree = file["events"]
        assert tree.num_entries == N_EVENTS
        columns = {
            key: _column(tree, f"{COLLECTION}.{key}")
            for key in ("cellID", "energy", "position.x", "position.y", "position.z")
        }
        begin = _column(tree, f"{COLLECTION}.contributions_begin")
        end = _column(tree, f"{COLLECTION}.contributions_end")
        links = _column(tree, f"_{COLLECTION}_contributions.index")
        link_ids = _column(tree, f"_{COLLECTION}_contributions.collectionID")
        contribution = {
            key: _column(tree, f"{CONTRIBUTIONS}.{key}")
            for key in ("PDG", "energy", "time", "stepPosition.x", "stepPosition.y")
        }
        step_z = _column(tree, f"{CONTRIBUTIONS}.stepPosition.z")
        particle = _column(tree, f"_{CONTRIBUTIONS}_particle.index")
        particle_ids = _column(tree, f"_{CONTRIBUTIONS}_particle.collectionID")

    for k, event in enumerate(events):
        hits = event["hits"]
        n = len(hits["cellID"])
        assert columns["cellID"][k].dtype == np.uint64
        np.testing.assert_array_equal(columns["cellID"][k], hits["cellID"])
        assert columns["energy"][k].dtype == np.float32
        np.testing.assert_array_equal(columns["energy"][k], hits["energy"].astype(np.float32))
        for axis in "xyz":
            expected = hits[axis].astype(np.float32)
            np.testing.assert_array_equal(columns[f"position.{axis}"][k], expected)
        np.testing.assert_array_equal(contribution["stepPosition.x"][k], hits["x"].astype("f4"))
        np.testing.assert_array_equal(contribution["stepPosition.y"][k], hits["y"].astype("f4"))
        np.testing.assert_array_equal(step_z[k], hits["z"].astype("f4"))
        # podio's one-to-many layout: hit k owns relation entries [begin, end) = [k, k+1)
        np.testing.assert_array_equal(begin[k], np.arange(n, dtype=np.uint32))
        np.testing.assert_array_equal(end[k], np.arange(1, n + 1, dtype=np.uint32))
        np.testing.assert_array_equal(links[k], np.arange(n, dtype=np.int32))
        assert set(link_ids[k].tolist()) == {collection_id(CONTRIBUTIONS)}
        np.testing.assert_array_equal(contribution["PDG"][k], hits["pdg"].astype(np.int32))
        np.testing.assert_array_equal(contribution["energy"][k], hits["energy"].astype("f4"))
        np.testing.assert_array_equal(contribution["time"][k], hits["time"].astype("f4"))
        np.testing.assert_array_equal(particle[k], np.zeros(n, dtype=np.int32))
        assert set(particle_ids[k].tolist()) == {collection_id(MC)}


def test_particles_and_header_read_back(written: tuple[Path, list[dict[str, Any]]]) -> None:
    path, events = written
    with uproot.open(path) as file:
        tree = file["events"]
        particles = tree[MC].arrays(library="np")
        header = tree["EventHeader"].arrays(library="np")
        parents = _column(tree, f"_{MC}_parents.index")
        daughters = _column(tree, f"_{MC}_daughters.index")
        weights = _column(tree, "_EventHeader_weights")

    for k, event in enumerate(events):
        expected = event["particles"]
        got = {key[len(MC) + 1 :]: value[k] for key, value in particles.items()}
        assert got["PDG"].tolist() == [p["PDG"] for p in expected]
        assert got["generatorStatus"].tolist() == [p["generatorStatus"] for p in expected]
        assert got["charge"].tolist() == [p["charge"] for p in expected]
        assert got["mass"].dtype == np.float64
        assert got["mass"].tolist() == [p["mass"] for p in expected]
        for i, axis in enumerate("xyz"):
            assert got[f"momentum.{axis}"].tolist() == [p["momentum"][i] for p in expected]
            assert got[f"vertex.{axis}"].tolist() == [p["vertex"][i] for p in expected]
            assert got[f"endpoint.{axis}"].tolist() == [0.0, 0.0]
        for key in ("parents_begin", "parents_end", "daughters_begin", "daughters_end"):
            assert got[key].tolist() == [0, 0]
        assert len(parents[k]) == len(daughters[k]) == 0

        assert header["EventHeader.eventNumber"][k].tolist() == [event["event_number"]]
        assert header["EventHeader.runNumber"][k].tolist() == [event["run_number"]]
        assert header["EventHeader.timeStamp"][k].tolist() == [0]
        assert header["EventHeader.weight"][k].tolist() == [1.0]
        assert header["EventHeader.weights_begin"][k].tolist() == [0]
        assert header["EventHeader.weights_end"][k].tolist() == [0]
        assert len(weights[k]) == 0


# --------------------------------------------------------------------------- layout


def test_trees_and_branch_names(written: tuple[Path, list[dict[str, Any]]]) -> None:
    path, _ = written
    with uproot.open(path) as file:
        assert sorted(file.keys(cycle=False)) == ["events", "metadata", "podio_metadata"]
        events = file["events"]
        assert [branch.name for branch in events.branches] == EVENTS_BRANCHES
        assert [sub.name for sub in events[COLLECTION].branches] == [
            f"{COLLECTION}.{member}"
            for member in (
                "cellID",
                "energy",
                "position.x",
                "position.y",
                "position.z",
                "contributions_begin",
                "contributions_end",
            )
        ]
        assert [sub.name for sub in events[f"_{COLLECTION}_contributions"].branches] == [
            f"_{COLLECTION}_contributions.index",
            f"_{COLLECTION}_contributions.collectionID",
        ]
        assert [branch.name for branch in file["metadata"].branches] == PARAMETER_BRANCHES
        assert [branch.name for branch in file["podio_metadata"].branches] == [
            "events___idTable",
            "events___CollectionTypeInfo",
            "metadata___idTable",
            "metadata___CollectionTypeInfo",
            "PodioBuildVersion",
            "edm4hep___Version",
        ]
        assert file["events"].title == "events data tree"
        assert file["podio_metadata"].title == "metadata tree for podio I/O functionality"
        for name in ("events", "metadata", "podio_metadata"):
            for branch in file[name].branches:
                assert branch.member("fSplitLevel") == 99, branch.name


def test_podio_metadata(written: tuple[Path, list[dict[str, Any]]]) -> None:
    path, _ = written
    names = ["EventHeader", COLLECTION, CONTRIBUTIONS, MC]
    with uproot.open(path) as file:
        meta = file["podio_metadata"]
        table = meta["events___idTable"]
        assert table["m_names"].array(library="np")[0].tolist() == names
        ids = table["m_collectionIDs"].array(library="np")[0]
        assert ids.tolist() == [collection_id(name) for name in names]
        info = "events___CollectionTypeInfo"
        assert meta[f"{info}._0"].array(library="np")[0].tolist() == ids.tolist()
        assert meta[f"{info}._2"].array(library="np")[0].tolist() == [False] * 4
        assert meta[f"{info}._3"].array(library="np")[0].tolist() == [SCHEMA_VERSION] * 4
        assert meta["metadata___idTable"]["m_names"].array(library="np")[0].tolist() == []
        assert len(meta["metadata___CollectionTypeInfo._0"].array(library="np")[0]) == 0
        for branch, version in (
            ("PodioBuildVersion", PODIO_VERSION),
            ("edm4hep___Version", EDM4HEP_VERSION),
        ):
            values = meta[branch].arrays(library="np")
            assert tuple(int(values[key][0]) for key in ("major", "minor", "patch")) == version


def test_cellid_encoding_in_metadata_frame(written: tuple[Path, list[dict[str, Any]]]) -> None:
    path, _ = written
    with uproot.open(path) as file:
        meta = file["metadata"]
        assert meta.num_entries == 1
        assert meta["GPStringKeys"].array(library="ak")[0].tolist() == [
            f"{COLLECTION}__CellIDEncoding"
        ]
        assert meta["GPStringValues"].array(library="ak")[0].tolist() == [[ENCODING]]
        for name in PARAMETER_BRANCHES[:-2]:
            assert meta[name].array(library="ak")[0].tolist() == [], name
        for name in PARAMETER_BRANCHES:
            assert file["events"][name].array(library="ak").tolist() == [[]] * N_EVENTS, name


@pytest.mark.parametrize(("encoding", "write_encoding_metadata"), [(None, True), (ENCODING, False)])
def test_no_metadata_frame_without_encoding(
    tmp_path: Path, encoding: str | None, write_encoding_metadata: bool
) -> None:
    path = write_edm4hep_file(
        tmp_path / "plain.root",
        make_events(1),
        encoding=encoding,
        write_encoding_metadata=write_encoding_metadata,
    )
    with uproot.open(path) as file:
        assert sorted(file.keys(cycle=False)) == ["events", "podio_metadata"]
        assert "metadata___idTable" not in file["podio_metadata"]
        assert [branch.name for branch in file["events"].branches] == EVENTS_BRANCHES


def test_collection_ids_are_podio_hashes() -> None:
    # IDs podio 1.1 gave these names in the sample file (MurmurHash3_x86_32, seed 0)
    assert collection_id("SimCalorimeterHitCollection") == 3045618892
    assert collection_id("CaloHitContributionCollection") == 3470328915
    assert collection_id("MCParticleCollection") == 4183352422
    assert collection_id("EventHeader") == 3616779153


def test_other_names_and_second_call_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing but the file may appear in the working directory
    events = make_events(2, seed=3)
    path = write_edm4hep_file(
        "ecal.root", events, collection="ECalBarrelCollection", mc_collection="MCParticle"
    )
    path = write_edm4hep_file(
        path,
        events,
        collection="ECalBarrelCollection",
        mc_collection="MCParticle",
        encoding="system:5",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ecal.root"]
    with uproot.open(path) as file:
        tree = file["events"]
        energy = tree["ECalBarrelCollection.energy"].array(library="np")
        assert [len(e) for e in energy] == [len(e["hits"]["energy"]) for e in events]
        ids = tree["_ECalBarrelCollectionContributions_particle.collectionID"].array()
        assert set(np.concatenate(ids.to_list()).tolist()) == {collection_id("MCParticle")}
        assert file["metadata"]["GPStringKeys"].array(library="ak")[0].tolist() == [
            "ECalBarrelCollection__CellIDEncoding"
        ]


def test_rejects_inconsistent_input(tmp_path: Path) -> None:
    events = make_events(1)
    events[0]["hits"]["x"] = events[0]["hits"]["x"][:-1]
    with pytest.raises(ValueError, match=r"hits\['x'\]"):
        write_edm4hep_file(tmp_path / "bad.root", events)
    with pytest.raises(ValueError, match="must differ"):
        write_edm4hep_file(tmp_path / "bad.root", make_events(1), mc_collection="EventHeader")
    events = make_events(1)
    events[0]["particles"] = []
    with pytest.raises(ValueError, match="needs a particle"):
        write_edm4hep_file(tmp_path / "bad.root", events)


# --------------------------------------------------------------------------- vs podio


def _describe(branch: Any) -> tuple[Any, ...]:
    """What uproot makes of a branch, free of addresses and file names."""
    interpretation = branch.interpretation
    if isinstance(interpretation, AsGrouped):
        text = "AsGroup"
    elif isinstance(interpretation, UnknownInterpretation):
        text = "UnknownInterpretation"
    else:
        text = str(interpretation)
    return (
        branch.typename,
        text,
        str(branch.member("fClassName")),
        branch.member("fType"),
        branch.member("fStreamerType"),
        branch.member("fSplitLevel"),
    )


def _layout(branch: Any, prefix: str) -> list[tuple[Any, ...]]:
    rows = [("<top>", *_describe(branch))]
    for sub in branch.branches:
        name = sub.name[len(prefix) :] if sub.name.startswith(prefix) else sub.name
        rows.append((name, *_describe(sub)))
    return rows


COMPARED = [
    ("events", COLLECTION, "SimCalorimeterHitCollection"),
    ("events", f"_{COLLECTION}_contributions", "_SimCalorimeterHitCollection_contributions"),
    ("events", CONTRIBUTIONS, "CaloHitContributionCollection"),
    ("events", f"_{CONTRIBUTIONS}_particle", "_CaloHitContributionCollection_particle"),
    ("events", MC, "MCParticleCollection"),
    ("events", f"_{MC}_parents", "_MCParticleCollection_parents"),
    ("events", f"_{MC}_daughters", "_MCParticleCollection_daughters"),
    ("events", "EventHeader", "EventHeader"),
    ("events", "_EventHeader_weights", "_EventHeader_weights"),
    *[("events", name, name) for name in PARAMETER_BRANCHES],
    ("podio_metadata", "events___idTable", "events___idTable"),
    ("podio_metadata", "events___CollectionTypeInfo", "events___CollectionTypeInfo"),
    ("podio_metadata", "PodioBuildVersion", "PodioBuildVersion"),
    ("podio_metadata", "edm4hep___Version", "edm4hep___Version"),
]


@pytest.mark.parametrize(("tree", "ours", "theirs"), COMPARED, ids=[c[1] for c in COMPARED])
def test_interpretations_match_podio_sample(
    written: tuple[Path, list[dict[str, Any]]], sample: Any, tree: str, ours: str, theirs: str
) -> None:
    path, _ = written
    with uproot.open(path) as file:
        assert _layout(file[tree][ours], ours) == _layout(sample[tree][theirs], theirs)


def test_streamers_match_podio_sample(
    written: tuple[Path, list[dict[str, Any]]], sample: Any
) -> None:
    """Same class versions and checksums: cling's structs are podio's, member for member."""

    def versions(file: Any) -> dict[str, dict[int, int]]:
        return {
            name: {version: info.member("fCheckSum") for version, info in infos.items()}
            for name, infos in file.file.streamers.items()
            if name.startswith(("edm4hep::", "podio::", "vector<", "tuple<"))
        }

    path, _ = written
    with uproot.open(path) as file:
        ours = versions(file)
    theirs = versions(sample)
    assert {
        "edm4hep::SimCalorimeterHitData",
        "edm4hep::CaloHitContributionData",
        "edm4hep::MCParticleData",
        "edm4hep::EventHeaderData",
        "podio::ObjectID",
        "podio::CollectionIDTable",
    } <= set(ours)
    assert {name: theirs.get(name) for name in ours} == ours


# --------------------------------------------------------------------------- ROOT


def test_opens_in_root(written: tuple[Path, list[dict[str, Any]]]) -> None:
    path, events = written
    file = ROOT.TFile.Open(str(path))
    try:
        assert file and not file.IsZombie()
        tree = file.Get("events")
        assert tree.GetEntries() == N_EVENTS
        assert file.Get("podio_metadata").GetEntries() == 1
        assert file.Get("metadata").GetEntries() == 1
        assert tree.GetEntry(1) > 0
        hits = getattr(tree, COLLECTION)
        assert hits.size() == len(events[1]["hits"]["cellID"])
        assert hits[0].cellID == int(events[1]["hits"]["cellID"][0])
        assert hits[3].position.z == pytest.approx(events[1]["hits"]["z"][3], rel=1e-6)
        meta = file.Get("podio_metadata")
        meta.GetEntry(0)
        types = [str(ROOT.std.get[1](info)) for info in meta.events___CollectionTypeInfo]
        assert types == [
            "edm4hep::EventHeaderCollection",
            "edm4hep::SimCalorimeterHitCollection",
            "edm4hep::CaloHitContributionCollection",
            "edm4hep::MCParticleCollection",
        ]
    finally:
        file.Close()


def test_opens_in_root_without_the_declarations(
    written: tuple[Path, list[dict[str, Any]]],
) -> None:
    """A fresh ROOT, which knows none of the structs, reads the file from its streamer infos."""
    path, events = written
    script = (
        "import sys, ROOT\n"
        "f = ROOT.TFile.Open(sys.argv[1])\n"
        "t = f.Get('events')\n"
        f"n = t.Draw('{COLLECTION}.energy', '', 'goff')\n"
        "print(t.GetEntries(), n, sum(t.GetV1()[i] for i in range(n)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    entries, n_hits, total = result.stdout.split()
    assert int(entries) == N_EVENTS
    assert int(n_hits) == sum(len(e["hits"]["energy"]) for e in events)
    expected = sum(float(e["hits"]["energy"].astype(np.float32).sum()) for e in events)
    assert float(total) == pytest.approx(expected, rel=1e-5)
