"""The command line end to end: simulate -> ROOT file -> uproot / NanoEvents / info."""

from __future__ import annotations

import os
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from calocoffea.cli.main import main
from calocoffea.io import STAGES

DOCUMENTED = {
    "event", "run", "pdg", "beam_energy", "beam_x", "beam_y", "edep_active", "fem",
    "nhit", "hit_cellid", "hit_layer", "hit_i", "hit_j", "hit_x", "hit_y", "hit_z",
    "hit_energy", "hit_time", "hit_flags",
}  # fmt: skip


def simulate(path: Path, *extra: str, seed: int = 5, energy: str = "10,30") -> int:
    return main(
        ["simulate", "--geometry", "cepc_ahcal", "--particle", "e-", "--energy", energy,
         "--events", "50", "--seed", str(seed), "-o", str(path), *extra]
    )  # fmt: skip


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "electrons.root"
    assert simulate(path) == 0
    return path


def test_plain_uproot_sees_the_documented_tree(sample: Path) -> None:
    with uproot.open(sample) as f:
        tree = f["events"]
        assert DOCUMENTED <= set(tree.keys())
        assert tree.num_entries == 100
        assert tree["hit_cellid"].typename == "uint64_t[]"
        counters = {tree[k].count_branch.name for k in tree.keys() if k.startswith("hit_")}
        assert counters == {"nhit"}
        beam = tree["beam_energy"].array(library="np")
        assert sorted(set(beam)) == [10.0, 30.0]


def test_nanoevents_with_caloschema(sample: Path) -> None:
    from coffea.nanoevents import NanoEventsFactory

    from calocoffea.schema import CaloSchema

    events = NanoEventsFactory.from_root(
        {str(sample): "events"}, schemaclass=CaloSchema, mode="eager"
    ).events()
    assert len(events) == 100
    energy = ak.sum(events.hits.energy, axis=1)
    assert np.allclose(ak.to_numpy(energy), ak.to_numpy(events.edep_active), rtol=1e-5)
    assert ak.all(ak.num(events.hits) > 0)


def test_same_seed_same_events_other_seed_other(tmp_path: Path, sample: Path) -> None:
    again, other = tmp_path / "again.root", tmp_path / "other.root"
    assert simulate(again) == 0
    assert simulate(other, seed=6) == 0
    with uproot.open(sample) as a, uproot.open(again) as b, uproot.open(other) as c:
        for key in ("hit_cellid", "hit_energy", "beam_x", "edep_active"):
            assert ak.array_equal(a["events"][key].array(), b["events"][key].array())
        assert not ak.array_equal(
            a["events"]["hit_energy"].array(), c["events"]["hit_energy"].array()
        )


def test_info_describes_the_file(sample: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(sample)]) == 0
    out = capsys.readouterr().out
    for text in ("cepc_ahcal", "sim", "MeV", "100", "e- (100)", "10, 30 GeV"):
        assert text in out
    assert set(STAGES) >= {"sim"}


def test_geometries_lists_all(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["geometries"]) == 0
    out = capsys.readouterr().out
    for name in ("cepc_ahcal", "calice_siw_ecal_ahcal", "hgcal_ee", "tile_24x24", "cusi_module"):
        assert name in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--geometry", "atlas"], "installed: calice_siw_ecal_ahcal, cepc_ahcal"),
        (["--particle", "kaon"], "valid particles: e-, e+, gamma"),
        (["--energy", "0"], "must be a positive number"),
        (["--energy", "-5,10"], "must be a positive number"),
        (["--events", "0"], "positive number of events"),
        (["--energy-range", "50:10"], "LOW < HIGH"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "bad.root"
    base = {"--geometry": "cepc_ahcal", "--particle": "e-", "--energy": "10", "--events": "10"}
    if "--energy-range" in args:
        del base["--energy"]
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = ["simulate", *[f"{k}={v}" for k, v in base.items()], "-o", str(out)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "missing" / "out.root"
    assert simulate(target) == 2
    err = capsys.readouterr().err
    assert str(target.parent) in err and "mkdir" in err
    assert not target.parent.exists()


def test_reading_a_foreign_root_file_names_what_is_missing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = pytest.importorskip("ROOT")
    hsimple = Path(root.__file__).parent / "tutorials" / "hsimple.root"
    if not hsimple.exists():
        pytest.skip("ROOT's tutorials are not installed")
    assert main(["info", str(hsimple)]) == 2
    err = capsys.readouterr().err
    assert "no TTree 'events'" in err and "ntuple" in err

    from calocoffea.exceptions import MissingBranchError
    from calocoffea.io import open_events

    with pytest.raises(MissingBranchError, match="hit_energy") as info:
        open_events(hsimple, treename="ntuple", stage="sim")
    assert str(hsimple) in str(info.value)
