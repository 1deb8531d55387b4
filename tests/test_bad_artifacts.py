"""Bad artifacts: constants, models, plugins, configuration and outputs.

One test per case. Each checks the exact exception type, that the message names the file or
object, says why and says how to fix it, and, where a job writes output, that nothing is
left behind: no output and no temporary file in its directory.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from test_onnxmodel import features, linear_model, make_card

from calocoffea import registry
from calocoffea.branchmap import BranchMap
from calocoffea.cli.main import main
from calocoffea.conditions import nominal
from calocoffea.constants import Table, load_constants, nominal_constants
from calocoffea.exceptions import (
    BranchMapError,
    ConstantsError,
    GeometryMismatchError,
    MethodOptionsError,
    ModelError,
    OutputPathError,
    PluginLoadError,
    PluginRuntimeError,
)
from calocoffea.methods import (
    CalibrationMethod,
    ReconstructionMethod,
    calibration_method,
    parse_options,
)
from calocoffea.models.onnxmodel import card_path, load_model, save_model
from calocoffea.runner import (
    RunOptions,
    calibrate_files,
    digitize_files,
    fit_files,
    histogram_files,
    reconstruct_files,
    write_histograms,
)
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate

GEOMETRY = "cepc_ahcal"
N_EVENTS, CHUNK = 40, 20  # two chunks: entries 0-20 and 20-40
REWRITE = r"calocoffea constants nominal"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small simulated file and its raw form, in a directory of their own."""
    directory = tmp_path_factory.mktemp("artifacts")
    sim = simulate(GEOMETRY, "e-", Beam(energies_gev=(20.0,)), N_EVENTS, 2, directory / "s.root")
    raw = digitize_files([sim], directory / "raw.root").output
    assert raw is not None
    return {"sim": sim, "raw": raw}


@pytest.fixture
def out(tmp_path: Path) -> Iterator[Path]:
    """An empty output directory; the test fails if anything is left in it unexpectedly."""
    directory = tmp_path / "out"
    directory.mkdir()
    yield directory


def left_in(directory: Path) -> list[str]:
    """Everything in ``directory``, hidden temporaries and shard directories included."""
    return sorted(p.name for p in directory.iterdir())


def saved_constants(path: Path, geometry: str = GEOMETRY, **tables: Table) -> Path:
    constants = nominal_constants(nominal(geometry))
    constants.replace(**tables).save(path)
    return path


# ---- 1. constants for another geometry ----------------------------------------------------


def test_constants_for_another_geometry(inputs: dict[str, Path], out: Path) -> None:
    path = saved_constants(out / "hgcal.json", "hgcal_ee")
    constants = load_constants(path)
    with pytest.raises(GeometryMismatchError) as info:
        calibrate_files([inputs["raw"]], out / "mip.root", constants)
    message = str(info.value)
    assert str(path) in message  # the file
    assert "'hgcal_ee'" in message and "raw.root" in message and f"'{GEOMETRY}'" in message
    assert f"calocoffea constants nominal --geometry {GEOMETRY}" in message  # the fix
    assert left_in(out) == ["hgcal.json"]


# ---- 2. constants that fail the correctionlib schema ----------------------------------------


def _drop_output(payload: dict[str, Any]) -> None:
    del payload["corrections"][1]["output"]


def _schema_v1(payload: dict[str, Any]) -> None:
    payload["schema_version"] = 1


def _bad_leaf(payload: dict[str, Any]) -> None:
    node = payload["corrections"][0]["data"]  # kind -> layer -> i -> j -> value
    for _ in range(3):
        node = node["content"][0]["value"]
    node["content"][0]["value"] = "not a number"


@pytest.mark.parametrize(
    ("spoil", "where"),
    [
        (_drop_output, r"corrections\[1\]\.output \(correction 'pedestal_lg_adc'\): Field req"),
        (_schema_v1, r"schema_version: Input should be 2"),
        (_bad_leaf, r"corrections\[0\]\.data\..*\(correction 'pedestal_hg_adc'\)"),
    ],
    ids=["missing-output", "schema-v1", "bad-content"],
)
def test_constants_failing_the_correctionlib_schema(
    tmp_path: Path, spoil: Callable[[dict[str, Any]], None], where: str
) -> None:
    path = saved_constants(tmp_path / "c.json")
    payload = json.loads(path.read_text())
    spoil(payload)
    path.write_text(json.dumps(payload))
    with pytest.raises(ConstantsError) as info:
        load_constants(path)
    message = str(info.value)
    assert str(path) in message and "correctionlib's schema v2" in message
    assert re.search(where, message), message
    assert REWRITE in message


# ---- 3. constants missing cells ---------------------------------------------------------


def test_constants_missing_cells(inputs: dict[str, Path], out: Path) -> None:
    table = nominal_constants(nominal(GEOMETRY)).tables["spe_adc"]
    partial = Table("cell", table.keys[100:], table.values[100:], table.uncertainties[100:])
    path = saved_constants(out / "partial.json", spe_adc=partial)
    with pytest.raises(ConstantsError) as info:
        calibrate_files([inputs["raw"]], out / "mip.root", load_constants(path))
    message = str(info.value)
    assert str(path) in message and "'spe_adc'" in message
    assert "misses 100 of 12960 cells" in message
    assert "give values for every cell or an explicit default (defaults={'spe_adc'" in message
    assert left_in(out) == ["partial.json"]


# ---- 4-6. ONNX models -------------------------------------------------------------------


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return save_model(linear_model(), make_card(), tmp_path / "linear.onnx")


def test_onnx_with_wrong_inputs(model: Path) -> None:
    card = json.loads(card_path(model).read_text())
    card["inputs"][0]["name"] = "hits"
    card_path(model).write_text(json.dumps(card))
    with pytest.raises(ModelError) as info:
        load_model(model)
    message = str(info.value)
    assert str(model) in message
    assert "inputs are ['x'] in the graph, ['hits'] in the card" in message
    assert "Fix the card (or re-export the model)" in message

    # features that do not match the card's inputs
    loaded = load_model(save_model(linear_model(), make_card(), model.with_name("ok.onnx")))
    with pytest.raises(ModelError) as info:
        loaded.predict(features(10)[:, :3])
    message = str(info.value)
    assert "ok.onnx" in message and "input 'x'" in message
    assert "shape (10, 3), expected (n, 4)" in message and "compute the features" in message


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_onnx(model: Path, damage: str) -> None:
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\xff\x00 junk" * 9)
    with pytest.raises(ModelError) as info:
        load_model(model)
    message = str(info.value)
    assert str(model) in message
    assert "corrupt" in message
    assert "copy it again or re-export it with save_model" in message


def test_model_card_for_another_geometry(model: Path) -> None:
    with pytest.raises(GeometryMismatchError) as info:
        load_model(model, geometry="hgcal_ee")
    message = str(info.value)
    assert str(model) in message and str(card_path(model)) in message
    assert f"trained for geometry '{GEOMETRY}'" in message and "'hgcal_ee'" in message
    assert "use a model trained for 'hgcal_ee', or retrain it" in message


# ---- 7. a plugin that fails to import -----------------------------------------------------


@pytest.fixture
def fake_calibrations(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Install extra fake entry points in the calibrations group (the others stay real)."""
    real = registry.entry_points

    def install(**values: str) -> None:
        eps = [EntryPoint(n, v, "calocoffea.calibrations") for n, v in values.items()]

        def entry_points(*, group: str) -> list[EntryPoint]:
            found = list(real(group=group))
            return found + [ep for ep in eps if ep.group == group]

        monkeypatch.setattr(registry, "entry_points", entry_points)
        registry.clear_cache()

    yield install
    registry.clear_cache()


@pytest.mark.parametrize("broken", ["missing-module", "missing-dependency"])
def test_plugin_that_fails_to_import(
    fake_calibrations: Callable[..., None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    broken: str,
) -> None:
    if broken == "missing-module":
        module, missing = "calocoffea_no_such_plugin_xyz", "calocoffea_no_such_plugin_xyz"
    else:  # the plugin's module exists but imports a package that is not installed
        module, missing = "calocoffea_test_broken_plugin", "calocoffea_missing_dependency_xyz"
        (tmp_path / f"{module}.py").write_text(f"import {missing}\n")
        monkeypatch.syspath_prepend(str(tmp_path))
    fake_calibrations(exploding=f"{module}:Method")
    with pytest.raises(PluginLoadError) as info:
        calibration_method("exploding", GEOMETRY)
    message = str(info.value)
    assert "plugin 'exploding' of group 'calocoffea.calibrations'" in message  # entry point
    assert f"(module '{module}')" in message
    assert f"ModuleNotFoundError: No module named '{missing}'" in message  # the import error
    assert "is installed in this environment and imports" in message and "reinstall" in message
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


# ---- 8. a plugin that raises inside a chunk -----------------------------------------------


class ExplodingReconstruction(ReconstructionMethod):
    """Raises on the second chunk, as a plugin with a bug would."""

    input_stage: ClassVar[str] = "sim"

    def predict(self, events: Any) -> Any:
        if events.metadata["entrystart"] >= CHUNK:
            raise ZeroDivisionError("a cluster with no hits")
        return np.asarray(events.beam_energy, dtype=np.float64)


class ExplodingCalibration(CalibrationMethod):
    """Raises on the second chunk, as a plugin with a bug would."""

    input_stage: ClassVar[str] = "sim"

    def collect(self, events: Any) -> Any:
        if events.metadata["entrystart"] >= CHUNK:
            raise ZeroDivisionError("a cluster with no hits")
        return {"events": len(events)}

    def fit(self, accumulated: Any) -> Any:  # pragma: no cover - never reached
        raise AssertionError("fit must not run after a failed chunk")


@pytest.mark.parametrize("executor", ["iterative", "futures"])
@pytest.mark.parametrize("family", ["reconstruction", "calibration"])
def test_plugin_that_raises_inside_a_chunk(
    inputs: dict[str, Path], out: Path, executor: str, family: str
) -> None:
    options = RunOptions(executor, workers=2, chunksize=CHUNK)
    with pytest.raises(PluginRuntimeError) as info:
        if family == "reconstruction":
            method: Any = ExplodingReconstruction(GEOMETRY)
            reconstruct_files([inputs["sim"]], method, output=out / "r.root", run_options=options)
        else:
            fit_files(ExplodingCalibration(GEOMETRY), [inputs["sim"]], run_options=options)
    message = str(info.value)
    step = "predict" if family == "reconstruction" else "collect"
    name = f"Exploding{family.capitalize()}"
    assert f"plugin {name} raised ZeroDivisionError in {step}()" in message  # the plugin
    assert f"{inputs['sim']} entries {CHUNK}-{N_EVENTS}" in message  # file and entries
    assert "fix it or report it to its authors" in message  # what to do
    cause = info.value.__cause__
    assert isinstance(cause, ZeroDivisionError) and str(cause) == "a cluster with no hits"
    assert left_in(out) == []


# ---- 9. configuration with an unknown key -------------------------------------------------


@pytest.mark.parametrize(
    ("typo", "where", "close"),
    [("trees", "top level", "tree"), ("energie", "[hits]", "energy")],
)
def test_branch_map_with_an_unknown_key(tmp_path: Path, typo: str, where: str, close: str) -> None:
    text = textwrap.dedent(
        """
        tree = "hits"
        stage = "sim"
        [event]
        event = "EventNumber"
        run = 7
        pdg = 11
        beam_energy = { branch = "BeamEnergy", unit = "GeV" }
        [hits]
        cellid = "CellID"
        layer = "K"
        x = "X"
        y = "Y"
        z = "Z"
        energy = "E"
        """
    )
    text = text.replace('tree = "hits"', 'trees = "hits"') if typo == "trees" else text
    text = text.replace('energy = "E"', 'energie = "E"') if typo == "energie" else text
    path = tmp_path / "map.toml"
    path.write_text(text)
    with pytest.raises(BranchMapError) as info:
        BranchMap.load(path)
    message = str(info.value)
    assert str(path) in message and where in message
    assert f"unknown key '{typo}' (did you mean '{close}'?)" in message
    assert "valid keys: " in message


def test_method_option_with_an_unknown_key() -> None:
    with pytest.raises(MethodOptionsError) as info:
        calibration_method("mip", GEOMETRY, **parse_options(["min_entry=10"]))
    message = str(info.value)
    assert "unknown option(s) 'min_entry' (did you mean 'min_entries'?)" in message
    assert "MipOptions" in message and "valid: " in message and "min_entries" in message
    assert "calocoffea plugins show" in message


# ---- 10. an output that already exists --------------------------------------------------


def _jobs(inputs: dict[str, Path]) -> dict[str, Callable[..., Any]]:
    constants = nominal_constants(nominal(GEOMETRY))

    def histograms() -> Any:
        return histogram_files([inputs["raw"]], constants=constants).histograms

    method = ExplodingReconstruction(GEOMETRY)
    options = RunOptions(chunksize=N_EVENTS)  # one chunk: the method does not raise
    return {
        "digitize_files": lambda o, **kw: digitize_files([inputs["sim"]], o, **kw),
        "calibrate_files": lambda o, **kw: calibrate_files([inputs["raw"]], o, constants, **kw),
        "histogram_files": lambda o, **kw: histogram_files(
            [inputs["raw"]], o, constants=constants, **kw
        ),
        "reconstruct_files": lambda o, **kw: reconstruct_files(
            [inputs["sim"]], method, output=o, run_options=options, **kw
        ),
        "write_histograms": lambda o, **kw: write_histograms(histograms(), o, **kw),
    }


JOBS = ["digitize_files", "calibrate_files", "histogram_files", "reconstruct_files",
        "write_histograms"]  # fmt: skip


@pytest.mark.parametrize("job", JOBS)
def test_existing_output_is_not_overwritten(inputs: dict[str, Path], out: Path, job: str) -> None:
    run = _jobs(inputs)[job]
    target = out / "o.root"
    target.write_text("an earlier result")
    with pytest.raises(OutputPathError) as info:
        run(target)
    message = str(info.value)
    assert str(target) in message and "already exists" in message
    assert "use --force (overwrite=True)" in message
    assert target.read_text() == "an earlier result"
    assert left_in(out) == ["o.root"]

    run(target, overwrite=True)
    assert target.read_bytes()[:4] == b"root"
    assert not [name for name in left_in(out) if name.startswith(".")]


def test_existing_histogram_json_is_not_overwritten(inputs: dict[str, Path], out: Path) -> None:
    side = out / "h.root.json"
    side.write_text("{}")
    with pytest.raises(OutputPathError, match=r"h\.root\.json already exists.*--force"):
        histogram_files([inputs["raw"]], out / "h.root")
    assert left_in(out) == ["h.root.json"] and side.read_text() == "{}"


@pytest.mark.parametrize(
    "command",
    [
        ["constants", "nominal", "--geometry", GEOMETRY],
        ["conditions", "draw", "--geometry", GEOMETRY, "--seed", "3"],
        ["simulate", "-g", GEOMETRY, "-p", "e-", "--energy", "10", "-n", "5"],
        ["digitize", "{sim}", "--no-progress"],
        ["calibrate", "fit", "{raw}", "--method", "pedestal"],
        ["histogram", "{raw}", "--constants", "{constants}", "--no-progress"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_cli_needs_force_to_replace_an_output(
    inputs: dict[str, Path],
    out: Path,
    command: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    constants = saved_constants(out.parent / "constants.json")
    names = {"sim": inputs["sim"], "raw": inputs["raw"], "constants": constants}
    argv = [c.format(**names) for c in command]
    target = out / "o.out"
    target.write_text("an earlier result")
    assert main([*argv, "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert str(target) in err and "already exists" in err and "--force" in err
    assert target.read_text() == "an earlier result" and left_in(out) == ["o.out"]
    if command[:2] != ["calibrate", "fit"]:  # a pedestal fit needs a pedestal run
        assert main([*argv, "-o", str(target), "--force"]) == 0
        assert target.read_text(errors="replace") != "an earlier result"


# ---- 11. an unwritable output directory ---------------------------------------------------


def test_unwritable_output_directory(inputs: dict[str, Path], tmp_path: Path) -> None:
    constants = nominal_constants(nominal(GEOMETRY))
    locked = tmp_path / "locked"
    if os.geteuid() == 0:  # root writes anywhere: make the directory a file instead
        locked.write_text("a file where the directory should be")
        why = r"is a file, not a directory"
    else:
        locked.mkdir(mode=0o500)
        why = r"is not writable by this user; choose a directory you can write to"
    try:
        where = re.escape(f"{locked / 'h.root'}: ")
        with pytest.raises(OutputPathError, match=rf"{where}.*{why}") as info:
            histogram_files([inputs["raw"]], locked / "h.root", constants=constants)
        assert "create the directory first" in str(info.value) or "choose" in str(info.value)
        if locked.is_dir():
            assert left_in(locked) == []
    finally:
        if locked.is_dir():
            locked.chmod(0o700)
