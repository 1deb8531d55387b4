"""Plugins as users meet them: the inventory, ``calocoffea plugins``, the template package.

The template in ``examples/calocoffea-plugin-template`` is installed once per session with pip
into a temporary directory (never into the venv) and put on ``sys.path`` only by the tests that
use it; broken and duplicate plugins are fake distributions (a ``*.dist-info`` directory) in a
temporary directory. The registry cache is cleared around every test, so no other test sees
them. The built-in methods may or may not load while they are being written: nothing here
depends on that.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from calocoffea import registry
from calocoffea.cli.main import main
from calocoffea.conditions import nominal
from calocoffea.constants import Constants, Table, load_constants, nominal_constants
from calocoffea.exceptions import (
    FitError,
    MethodOptionsError,
    PluginLoadError,
    PluginLoadWarning,
    UnknownPluginError,
)
from calocoffea.geometry import get_geometry
from calocoffea.methods import (
    CalibrationMethod,
    ReconstructionMethod,
    calibration_method,
    make_options,
    reconstruction_method,
)
from calocoffea.runner import calibrate_files, digitize_files, fit_files
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate

TEMPLATE = Path(__file__).parents[1] / "examples" / "calocoffea-plugin-template"
GEOMETRY = "tile_24x24"  # 40 layers of 24 x 24 tiles
N_MUONS = 2500  # about 2300 hits per layer: a median to about 1.5 %
#: layer and factor of the miscalibration the method must find
SHIFTED_LAYER, SHIFT = 7, 1.25


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    registry.clear_cache()
    yield
    registry.clear_cache()


# ---- the template, installed with pip --------------------------------------------------


@pytest.fixture(scope="session")
def template_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template installed with pip (offline) into a directory of its own.

    The source is copied first: setuptools writes ``build/`` and ``*.egg-info`` beside it."""
    root = tmp_path_factory.mktemp("template")
    source, target = root / "source", root / "site"
    shutil.copytree(TEMPLATE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
               "--no-index", "--disable-pip-version-check", "--quiet",
               "--target", str(target), str(source)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return target


@pytest.fixture
def template(template_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The installed template on ``sys.path`` for one test; the cache is cleared around it."""
    monkeypatch.syspath_prepend(str(template_site))
    registry.clear_cache()
    yield template_site
    registry.clear_cache()


@pytest.fixture(scope="module")
def muon_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Muons at stage ``mip``: calibrated with the nominal constants, and with the constants
    of one layer off by SHIFT (the method must find 1 / SHIFT there)."""
    directory = tmp_path_factory.mktemp("muons")
    sim = simulate(
        GEOMETRY, "mu-", Beam(energies_gev=(10.0,), uniform=True), N_MUONS, 11,
        directory / "sim.root",
    )  # fmt: skip
    raw = digitize_files([sim], directory / "raw.root").output
    assert raw is not None
    constants = nominal_constants(nominal(GEOMETRY))
    geometry = get_geometry(GEOMETRY)
    scale = constants.tables["scale"]
    shifted = np.where(geometry.cell_layer == SHIFTED_LAYER, SHIFT, 1.0)
    miscalibrated = constants.replace(
        scale=Table("cell", scale.keys, scale.values * shifted, scale.uncertainties)
    )
    files = {}
    for name, c in (("nominal", constants), ("shifted", miscalibrated)):
        files[name] = calibrate_files([raw], directory / f"{name}.root", c).output
    return files


def _layer_scales(constants: Constants) -> tuple[np.ndarray, np.ndarray]:
    """The per-cell ``scale`` table folded back to one value per layer (checking that
    every cell of a layer has its layer's value)."""
    geometry = get_geometry(GEOMETRY)
    table = constants.tables["scale"]
    assert table.binning == "cell"
    assert np.array_equal(np.sort(table.keys), np.sort(geometry.cellids().astype(np.int64)))
    layer = geometry.cell_layer[geometry.cell_index(table.keys)]
    values, errors = np.zeros(geometry.n_layers), np.zeros(geometry.n_layers)
    for k in range(geometry.n_layers):
        in_layer = layer == k
        assert np.ptp(table.values[in_layer]) == 0
        values[k], errors[k] = table.values[in_layer][0], table.uncertainties[in_layer][0]
    return values, errors


def test_template_is_discovered(template: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "layer_equalisation" in registry.names("calibrations")
    assert "hit_count" in registry.names("reconstructions")
    infos = {(i.family, i.name): i for i in registry.inventory()}
    info = infos["calibrations", "layer_equalisation"]
    assert info.status == "ok"
    assert info.package == "calocoffea-plugin-template"
    assert info.version == "0.1.0"
    assert info.value == "calocoffea_plugin_template.calibration:LayerEqualisation"
    assert info.description.startswith("per-layer scale")
    assert issubclass(info.obj, CalibrationMethod)
    assert issubclass(infos["reconstructions", "hit_count"].obj, ReconstructionMethod)
    # the built-in geometries are listed beside it, from calocoffea itself
    assert infos["geometries", GEOMETRY].package == "calocoffea"

    assert main(["plugins", "list"]) == 0
    out = capsys.readouterr().out
    line = next(li for li in out.splitlines() if " layer_equalisation " in li)
    assert line.split()[:4] == [
        "calibrations", "layer_equalisation", "ok", "calocoffea-plugin-template==0.1.0"
    ]  # fmt: skip
    assert "hit_count" in out

    assert main(["plugins", "list", "--family", "reconstructions"]) == 0
    out = capsys.readouterr().out
    assert "hit_count" in out
    assert "layer_equalisation" not in out
    assert "tile_24x24" not in out


def test_show_lists_the_typed_options(template: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "show", "layer_equalisation"]) == 0
    out = capsys.readouterr().out
    assert "layer_equalisation  (calibration method)" in out
    assert "calocoffea-plugin-template==0.1.0" in out
    assert "run_type:     muon" in out
    assert "input_stage:  mip" in out
    assert "max_energy_mip: float = 5.0" in out
    assert "bins: int = 200" in out
    assert "Upper edge of the hit-energy histogram [MIP]" in out  # the field's docstring
    assert "relative to the constants the input was calibrated with" in out  # class docstring
    assert main(["plugins", "show", "hit_count"]) == 0
    assert "threshold_mip: float = 0.5" in capsys.readouterr().out


def test_show_documents_inherited_options(capsys: pytest.CaptureFixture[str]) -> None:
    """calibraton's Options inherit the shared seed 003 options: their docs are shown too."""
    assert main(["plugins", "show", "calibraton"]) == 0
    out = capsys.readouterr().out
    assert "bins_theta: int = 6" in out and "one per cell direction" in out  # its own
    assert "threshold_mev: float = 0.01491" in out
    assert "hits at or below this energy [MeV] are dropped" in out  # inherited


def test_layer_equalisation_of_a_calibrated_detector_is_one(
    template: Path, muon_files: dict[str, Path], tmp_path: Path
) -> None:
    """Tolerance from statistics: the method's own uncertainty (the standard error of a
    median, 1 / (2 f sqrt(N))) must be of the size expected from N hits, and the pulls of
    the 40 layers must be consistent with it: each within 5 sigma, and chi2 / 40 within
    its 3-sigma range 1 -+ 3 sqrt(2 / 40)."""
    method = calibration_method("layer_equalisation", GEOMETRY)
    constants, result = fit_files(method, [muon_files["nominal"]])
    scale, error = _layer_scales(constants)
    hits = result.collected.values().sum(axis=1)
    assert hits.min() > 0.8 * N_MUONS  # a muon crosses every layer
    # relative error x sqrt(N) = 1 / (2 f(m) m): 1.25 sigma / m for a Gaussian; about 0.55
    # for the muon spectrum (median m = 1.16 MIP, core about 0.5 MIP wide)
    relative = error / scale * np.sqrt(hits)
    assert np.all((relative > 0.3) & (relative < 0.9)), relative
    pulls = (scale - 1.0) / error
    assert np.all(np.abs(pulls) < 5), pulls
    assert abs(np.mean(pulls**2) - 1) < 3 * np.sqrt(2 / len(pulls)), pulls
    assert constants.provenance.method == "layer_equalisation"
    assert constants.provenance.geometry_hash == get_geometry(GEOMETRY).hash
    assert 1.0 < constants.provenance.fit_quality["reference_median_mip"] < 1.4
    # the constants are ordinary constants: saved, read back, laid over a full set
    again = load_constants(constants.save(tmp_path / "layer_equalisation.json"))
    np.testing.assert_allclose(_layer_scales(again)[0], scale)
    full = nominal_constants(nominal(GEOMETRY)).update(again)
    assert full.provenance.method == "nominal+layer_equalisation"
    full.dense(get_geometry(GEOMETRY))


def test_layer_equalisation_finds_a_miscalibrated_layer(
    template: Path, muon_files: dict[str, Path]
) -> None:
    """One layer calibrated SHIFT too high: its scale is 1 / SHIFT of the others'."""
    method = calibration_method("layer_equalisation", GEOMETRY, bins=400, max_energy_mip="8")
    assert method.options.max_energy_mip == 8.0
    constants, _ = fit_files(method, [muon_files["shifted"]])
    scale, error = _layer_scales(constants)
    others = np.delete(scale, SHIFTED_LAYER)
    pull = (scale[SHIFTED_LAYER] * SHIFT - np.mean(others)) / (SHIFT * error[SHIFTED_LAYER])
    assert abs(pull) < 5, (scale[SHIFTED_LAYER], np.mean(others))
    assert np.all(np.abs(others - 1) < 5 * np.delete(error, SHIFTED_LAYER))


def test_layer_equalisation_needs_enough_hits(template: Path, muon_files: dict[str, Path]) -> None:
    method = calibration_method("layer_equalisation", GEOMETRY, min_hits=10 * N_MUONS)
    with pytest.raises(FitError, match="fewer than 25000 hits; give more muon events"):
        fit_files(method, [muon_files["nominal"]])


def test_hit_count_reconstruction(template: Path, muon_files: dict[str, Path]) -> None:
    from coffea.nanoevents import NanoEventsFactory

    from calocoffea.schema import CaloSchema

    path = muon_files["nominal"]
    events = NanoEventsFactory.from_root(
        {str(path): "events"}, schemaclass=CaloSchema, mode="eager"
    ).events()
    with uproot.open(path) as file:
        hit_energy = file["events"]["hit_energy"].array()
    method = reconstruction_method("hit_count", GEOMETRY, gev_per_hit=0.1, threshold_mip=0.8)
    energy = method.predict(events)
    assert isinstance(energy, np.ndarray)
    assert energy.dtype == np.float64
    assert energy.shape == (N_MUONS,)
    expected = 0.1 * ak.to_numpy(ak.sum(hit_energy > 0.8, axis=1))
    np.testing.assert_allclose(energy, expected)
    # a zero threshold counts every hit of the (zero-suppressed) file
    every = reconstruction_method("hit_count", GEOMETRY, threshold_mip=0.0, gev_per_hit=1.0)
    np.testing.assert_array_equal(every.predict(events), ak.to_numpy(ak.num(hit_energy)))


# ---- options ---------------------------------------------------------------------------


def test_options_errors_name_what_is_valid(template: Path) -> None:
    with pytest.raises(MethodOptionsError, match=r"'nbins'.*valid: max_energy_mip, bins, min_hits"):
        calibration_method("layer_equalisation", GEOMETRY, nbins=3)
    with pytest.raises(
        MethodOptionsError,
        match=r"option 'bins' .* must be of type int, got 'many'; "
        r"options: max_energy_mip, bins, min_hits",
    ):
        calibration_method("layer_equalisation", GEOMETRY, bins="many")
    options = calibration_method("layer_equalisation", GEOMETRY, bins="50").options
    assert options.bins == 50
    with pytest.raises(MethodOptionsError, match="not both"):
        cls = registry.load("reconstructions", "hit_count")
        cls(GEOMETRY, cls.Options(), threshold_mip=1.0)


def test_options_of_the_wrong_type_that_are_not_strings(template: Path) -> None:
    cls = registry.load("calibrations", "layer_equalisation")
    with pytest.raises(MethodOptionsError, match="must be of type int"):
        make_options(cls.Options, {"bins": [1, 2]})


def test_boolean_options_from_the_command_line() -> None:
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Options:
        flag: bool = False

    assert make_options(Options, {"flag": "yes"}).flag is True
    assert make_options(Options, {"flag": "off"}).flag is False
    with pytest.raises(MethodOptionsError, match="true/false"):
        make_options(Options, {"flag": "ture"})


# ---- broken, unknown and duplicate plugins ---------------------------------------------


def _distribution(root: Path, name: str, entry_points: str) -> None:
    """A fake installed distribution ``name`` 0.1 in ``root`` with these entry points."""
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


@pytest.fixture
def broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A distribution ``fake-pkg`` whose calibration ``broken`` cannot be imported."""
    _distribution(
        tmp_path, "fake-pkg", "[calocoffea.calibrations]\nbroken = does_not_exist.module:Thing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.clear_cache()
    return "broken"


def test_broken_plugin_is_listed_and_the_others_still_are(
    broken: str, capsys: pytest.CaptureFixture[str]
) -> None:
    infos = {(i.family, i.name): i for i in registry.inventory()}
    info = infos["calibrations", broken]
    assert info.status == "broken"
    assert info.obj is None
    assert info.package == "fake-pkg"
    assert info.version == "0.1"
    assert info.error == "ModuleNotFoundError: No module named 'does_not_exist'"
    assert infos["geometries", GEOMETRY].status == "ok"

    assert main(["plugins", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(k for k, line in enumerate(lines) if line.split()[:2] == ["calibrations", broken])
    assert lines[row].split()[2:4] == ["broken", "fake-pkg==0.1"]
    assert "error: ModuleNotFoundError: No module named 'does_not_exist'" in lines[row + 1]
    assert any(line.split()[:3] == ["geometries", GEOMETRY, "ok"] for line in lines)
    assert "plugins are broken (" in lines[-1]
    assert "calibrations/broken" in lines[-1]

    assert main(["plugins", "show", broken]) == 0
    out = capsys.readouterr().out
    assert "status:       broken" in out
    assert "does_not_exist" in out


def test_broken_plugin_warns_in_load_all_and_raises_when_used(broken: str) -> None:
    with pytest.warns(PluginLoadWarning) as record:
        loaded = registry.load_all("calibrations")
    assert broken not in loaded
    assert any(f"'{broken}'" in str(w.message) and "does_not_exist" in str(w.message)
               for w in record)  # fmt: skip
    with pytest.raises(PluginLoadError, match="could not be imported") as info:
        calibration_method(broken, "cepc_ahcal")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_unknown_name_lists_what_is_installed(
    broken: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(UnknownPluginError, match=rf"unknown calibration method 'nope'.*{broken}"):
        calibration_method("nope", "cepc_ahcal")
    assert main(["plugins", "show", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown plugin 'nope'" in err
    assert "calibrations: " in err
    assert broken in err
    assert GEOMETRY in err
    assert main(["plugins", "show", "--family", "geometries", "tile_24x42"]) == 2
    assert "Did you mean 'tile_24x24'" in capsys.readouterr().err
    with pytest.raises(UnknownPluginError, match="unknown plugin family 'detectors'"):
        registry.inventory("detectors")


def test_duplicate_name_in_two_distributions_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("fake-a", "fake-b"):
        module = name.replace("-", "_")
        _distribution(tmp_path, name, f"[calocoffea.reconstructions]\ndup = {module}:Thing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.clear_cache()
    with pytest.warns(PluginLoadWarning, match=r"'dup' in group .* is declared twice"):
        names = registry.names("reconstructions")
    assert names.count("dup") == 1
    dup = [i for i in registry.inventory("reconstructions") if i.name == "dup"]
    assert len(dup) == 1
    assert dup[0].package in ("fake-a", "fake-b")
