"""The processing subcommands: digitize -> calibrate apply -> histogram, constants, conditions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import uproot

from calocoffea.cli import executor
from calocoffea.cli.main import main, parser
from calocoffea.conditions import PARAMETERS, Conditions
from calocoffea.constants import load_constants
from calocoffea.io import read_metadata
from calocoffea.runner import EXECUTORS, RunOptions
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate

QUIET = ["--no-progress"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small simulated file, its digitised form and the nominal constants of cepc_ahcal."""
    directory = tmp_path_factory.mktemp("processing")
    sim = simulate(
        "cepc_ahcal", "e-", Beam(energies_gev=(10.0,)), events=60, seed=1,
        output=directory / "sim.root",
    )  # fmt: skip
    raw, constants = directory / "raw.root", directory / "constants.json"
    assert main(["digitize", str(sim), "-o", str(raw), *QUIET]) == 0
    assert main(["constants", "nominal", "--geometry", "cepc_ahcal", "-o", str(constants)]) == 0
    return {"sim": sim, "raw": raw, "constants": constants}


def hits(file: uproot.ReadOnlyDirectory) -> int:
    return int(file["events"]["nhit"].array(library="np").sum())


def test_digitize_writes_raw_and_prints_the_cutflow(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    raw = tmp_path / "raw.root"
    argv = ["digitize", str(files["sim"]), "-o", str(raw), "--seed", "3", *QUIET]
    assert main([*argv, "--threshold-mip", "0.3", "--chunksize", "25"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {raw}" in out
    for text in ("cutflow:", "digitize", "events 60 -> 60", "below_threshold", "low_gain"):
        assert text in out
    meta = read_metadata(raw)
    assert meta.stage == "raw" and meta.geometry == "cepc_ahcal"
    with uproot.open(raw) as f, uproot.open(files["raw"]) as nominal:
        assert f["events"].num_entries == 60
        # a lower threshold keeps more hits than the default 0.5 MIP
        assert hits(f) > hits(nominal)


def test_digitize_without_zero_suppression_keeps_every_hit(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    raw = tmp_path / "all.root"
    argv = ["digitize", str(files["sim"]), "-o", str(raw), "--no-zero-suppression", *QUIET]
    assert main(argv) == 0
    capsys.readouterr()
    with uproot.open(raw) as f, uproot.open(files["sim"]) as sim:
        assert hits(f) == hits(sim)


def test_digitize_with_drawn_conditions(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    conditions, raw = tmp_path / "cond.npz", tmp_path / "raw.root"
    draw = ["conditions", "draw", "--geometry", "cepc_ahcal", "--seed", "7", "-o", str(conditions)]
    assert main([*draw, "--dead-fraction", "0.2"]) == 0
    argv = ["digitize", str(files["sim"]), "-o", str(raw), "--conditions", str(conditions)]
    assert main([*argv, *QUIET]) == 0
    out = capsys.readouterr().out
    removed = out.split("removed:")[1].split("\n")[0]
    assert "dead_cell 0" not in removed and "dead_cell" in removed
    assert read_metadata(raw).stage == "raw"


@pytest.mark.parametrize("unit", ["mip", "gev"])
def test_calibrate_apply_writes_the_stage_asked_for(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path, unit: str
) -> None:
    out_file = tmp_path / f"{unit}.root"
    argv = ["calibrate", "apply", str(files["raw"]), "--constants", str(files["constants"])]
    assert main([*argv, "-o", str(out_file), "--to", unit, *QUIET]) == 0
    out = capsys.readouterr().out
    assert f"wrote {out_file}" in out and "calibrate" in out and "events 60 -> 60" in out
    assert "removed: none" in out
    meta = read_metadata(out_file)
    assert meta.stage == unit and meta.geometry == "cepc_ahcal"
    with uproot.open(out_file) as f:
        energy = np.asarray(f["events"]["edep_active"].array(library="np"))
        assert f["events"].num_entries == 60 and np.all(energy > 0)


def test_calibrate_apply_steps_switch_off(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["calibrate", "apply", str(files["raw"]), "--constants", str(files["constants"])]
    full, partial = tmp_path / "full.root", tmp_path / "partial.root"
    assert main([*argv, "-o", str(full), *QUIET]) == 0
    skip = ["--no-pedestal", "--no-nonlinearity", "--no-desaturation", "--no-scale"]
    assert main([*argv, "-o", str(partial), *skip, "--no-gain-selection", *QUIET]) == 0
    capsys.readouterr()
    steps = read_metadata(partial).extra["steps"]
    assert not any(steps[k] for k in ("pedestal", "gain_selection", "nonlinearity", "scale"))
    with uproot.open(full) as a, uproot.open(partial) as b:
        ea, eb = (np.sum(t["events"]["hit_energy"].array()) for t in (a, b))
        assert ea != pytest.approx(eb)


def test_histogram_of_calibrated_file_and_of_raw_with_constants(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    gev = tmp_path / "gev.root"
    argv = ["calibrate", "apply", str(files["raw"]), "--constants", str(files["constants"])]
    assert main([*argv, "-o", str(gev), "--to", "gev", *QUIET]) == 0
    capsys.readouterr()
    assert read_metadata(gev).stage == "gev"

    direct, on_the_fly = tmp_path / "h.root", tmp_path / "h_raw.root"
    assert main(["histogram", str(gev), "-o", str(direct), "--beam-energies", "10", *QUIET]) == 0
    out = capsys.readouterr().out
    assert f"wrote {direct}" in out and f"{direct}.json" in out and "lossless UHI" in out
    assert "histogram" in out and "events 60 -> 60" in out

    argv = ["histogram", str(files["raw"]), "-o", str(on_the_fly), "--to", "gev"]
    assert main([*argv, "--constants", str(files["constants"]), *QUIET]) == 0
    out = capsys.readouterr().out
    assert "calibrate" in out and "histogram" in out

    with uproot.open(direct) as a, uproot.open(on_the_fly) as b:
        assert {"energy_sum", "nhit", "longitudinal"} <= {k.split(";")[0] for k in a.keys()}
        sums = [h["energy_sum"].to_hist() for h in (a, b)]
        assert sums[0].sum() == sums[1].sum() == 60
        assert sums[0].axes[1].label == "Energy sum [GeV]"
        assert np.array_equal(sums[0].values(), sums[1].values())
    uhi = json.loads(Path(f"{direct}.json").read_text())
    assert "energy_sum" in uhi and "longitudinal" in uhi


def test_histogram_to_without_constants_is_an_error(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "h.root"
    assert main(["histogram", str(files["raw"]), "-o", str(out), "--to", "gev", *QUIET]) == 2
    assert "--constants" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_histogram_constants_need_raw_input(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "h.root"
    argv = ["histogram", str(files["sim"]), "-o", str(out), "--constants", str(files["constants"])]
    assert main([*argv, *QUIET]) == 2
    err = capsys.readouterr().err
    assert str(files["sim"]) in err and "raw" in err
    assert os.listdir(tmp_path) == []


def test_constants_nominal_round_trip(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "c.json"
    assert main(["constants", "nominal", "--geometry", "cepc_ahcal", "-o", str(path)]) == 0
    out = capsys.readouterr().out
    assert str(path) in out and "12960 cells" in out
    constants = load_constants(path)
    assert constants.provenance.method == "nominal"
    assert constants.provenance.geometry == "cepc_ahcal"
    assert constants.tables["spe_adc"].keys.size == 12960
    assert path.read_text() == files["constants"].read_text()


def test_conditions_draw_and_show(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "cond.npz"
    argv = ["conditions", "draw", "--geometry", "cepc_ahcal", "--seed", "42", "-o", str(path)]
    assert main([*argv, "--noisy-fraction", "0.1", "--label", "test beam 2025"]) == 0
    assert str(path) in capsys.readouterr().out
    conditions = Conditions.load(path)
    assert (conditions.seed, conditions.label) == (42, "test beam 2025")
    assert 0.05 < conditions.noisy.mean() < 0.15 and not conditions.dead.any()

    assert main(["conditions", "show", str(path)]) == 0
    out = capsys.readouterr().out
    for text in ("cepc_ahcal", "42", "test beam 2025", "mean", "std", "min", "max"):
        assert text in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    for name, parameter in PARAMETERS.items():
        assert parameter.unit in lines[name]
    mean = float(lines["spe_adc"][2])
    assert mean == pytest.approx(conditions.values["spe_adc"].mean(), rel=1e-3)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["draw", "--geometry", "cepc_ahcal", "--seed", "1", "--dead-fraction", "1.5"], "[0, 1)"),
        (["draw", "--geometry", "atlas", "--seed", "1"], "atlas"),
        (["show", "missing.npz"], "not a calocoffea conditions file"),
    ],
)
def test_conditions_errors(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    if argv[0] == "draw":
        argv = [*argv, "-o", "cond.npz"]
    assert main(["conditions", *argv]) == 2
    assert message in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def options(*argv: str) -> RunOptions:
    args = parser().parse_args(["digitize", "in.root", "-o", "out.root", *argv])
    return executor.run_options(args)


def test_executor_options() -> None:
    assert executor.EXECUTORS == EXECUTORS
    default = options()
    assert (default.executor, default.workers, default.chunksize) == ("iterative", 1, 50_000)
    assert default.scheduler is None
    assert not options("--no-progress").progress
    assert options("--executor", "futures", "--workers", "3", "--chunksize", "100") == RunOptions(
        "futures", 3, 100, None, False
    )
    remote = options("--scheduler", "tcp://localhost:8786", "--workers", "2")
    assert (remote.executor, remote.scheduler) == ("dask", "tcp://localhost:8786")
    remote = options("--executor", "futures", "--scheduler", "tcp://host:8786")
    assert remote.executor == "dask"
    for parser_argv in (["--executor", "spark"], ["--workers", "two"]):
        with pytest.raises(SystemExit) as info:
            options(*parser_argv)
        assert info.value.code == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "0"], "workers must be at least 1, got 0"),
        (["--chunksize", "0"], "chunksize must be at least 1 event"),
    ],
)
def test_bad_executor_options_exit_2(
    files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    argv: list[str],
    message: str,
) -> None:
    out = tmp_path / "raw.root"
    assert main(["digitize", str(files["sim"]), "-o", str(out), *argv, *QUIET]) == 2
    err = capsys.readouterr().err
    assert err.startswith("calocoffea digitize: error:") and message in err
    assert "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_digitize_wrong_stage_names_the_file(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "raw.root"
    assert main(["digitize", str(files["raw"]), "-o", str(out), *QUIET]) == 2
    err = capsys.readouterr().err
    assert err.startswith("calocoffea digitize: error:")
    assert str(files["raw"]) in err and "raw" in err and "sim" in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("command", ["digitize", "calibrate", "histogram"])
def test_missing_input_exits_2(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    missing, out = tmp_path / "missing.root", tmp_path / "out.root"
    argv = {
        "digitize": ["digitize", str(missing)],
        "calibrate": ["calibrate", "apply", str(missing), "--constants", str(files["constants"])],
        "histogram": ["histogram", str(missing)],
    }[command]
    assert main([*argv, "-o", str(out), *QUIET]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"calocoffea {command}: error:") and str(missing) in err
    assert os.listdir(tmp_path) == []


def test_output_directory_must_exist(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "missing" / "c.json"
    assert main(["constants", "nominal", "--geometry", "cepc_ahcal", "-o", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["digitize", str(files["sim"]), "-o", str(out), *QUIET]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_constants_of_another_geometry_are_refused(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    constants, out = tmp_path / "hgcal.json", tmp_path / "mip.root"
    assert main(["constants", "nominal", "--geometry", "hgcal_ee", "-o", str(constants)]) == 0
    capsys.readouterr()
    argv = ["calibrate", "apply", str(files["raw"]), "--constants", str(constants)]
    assert main([*argv, "-o", str(out), *QUIET]) == 2
    err = capsys.readouterr().err
    assert err.startswith("calocoffea calibrate: error:")
    assert "hgcal_ee" in err and "cepc_ahcal" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == ["hgcal.json"]
