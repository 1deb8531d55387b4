"""Electronics calibrations (pedestal, gain ratio, SPE) on simulated calibration runs.

Each method runs end to end (``runner.fit_files``) on a run simulated with conditions drawn
from a seed, and its constants are scored against the truth
(:func:`calocoffea.calibruns.expected_constants`) with pulls (fit - truth) / error over the
cells whose fit is ok. With N cells the mean of N unit pulls has a standard error 1/sqrt(N)
and their standard deviation 1/sqrt(2N): the tolerances are 4 of those, plus the allowance
each test derives where the estimator has a known second-order effect.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from calocoffea import calibruns, rng
from calocoffea.cli.main import main
from calocoffea.conditions import Conditions, ConditionsConfig
from calocoffea.constants import Constants, design_constants, load_constants
from calocoffea.digitization import DigitizationOptions, digitize
from calocoffea.exceptions import (
    FitWarning,
    InputFileError,
    MethodOptionsError,
    MissingBranchError,
    SimulationConfigError,
)
from calocoffea.geometry import get_geometry
from calocoffea.io import read_events, read_metadata
from calocoffea.methods import calibration_method
from calocoffea.plugins.electronics import (
    STATUS_FAILED,
    STATUS_OK,
    STATUS_TOO_FEW,
    GainRatio,
    Pedestal,
    SinglePhotoelectron,
)
from calocoffea.runner import RunResult, digitize_files, fit_files
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate

GEOMETRY = "cepc_ahcal"
PEDESTAL_EVENTS = 400
LED_EVENTS = 400
LED_LAYERS = 16  # the LED run pulses the first 16 layers (5184 cells): fast, yet many pulls


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("electronics")


@pytest.fixture(scope="module")
def conditions() -> Conditions:
    """Hidden per-cell truth with some dead and some noisy cells."""
    config = ConditionsConfig(dead_fraction=0.003, noisy_fraction=0.003)
    return Conditions.draw(GEOMETRY, 21, config, label="electronics test")


@pytest.fixture(scope="module")
def truth(conditions: Conditions) -> dict[str, np.ndarray]:
    return calibruns.expected_constants(conditions)


@pytest.fixture(scope="module")
def pedestal_file(conditions: Conditions, workdir: Path) -> Path:
    return calibruns.pedestal_run(conditions, PEDESTAL_EVENTS, 1, workdir / "pedestal.root")


@pytest.fixture(scope="module")
def pedestal_fit(pedestal_file: Path) -> tuple[Constants, RunResult]:
    return fit_files(Pedestal(GEOMETRY), [pedestal_file])


@pytest.fixture(scope="module")
def led_cells(conditions: Conditions) -> np.ndarray:
    return np.flatnonzero(get_geometry(GEOMETRY).cell_layer < LED_LAYERS)


@pytest.fixture(scope="module")
def led_file(conditions: Conditions, led_cells: np.ndarray, workdir: Path) -> Path:
    return calibruns.led_run(conditions, LED_EVENTS, 2, workdir / "led.root", cells=led_cells)


@pytest.fixture(scope="module")
def spe_fit(led_file: Path) -> tuple[Constants, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        constants, _ = fit_files(SinglePhotoelectron(GEOMETRY), [led_file])
    return constants, list(caught)


def _pulls(constants: Constants, name: str, status: str, truth: np.ndarray) -> np.ndarray:
    table = constants.tables[name]
    ok = constants.tables[status].values == STATUS_OK
    return (table.values[ok] - truth[ok]) / table.uncertainties[ok]


def _check_pulls(
    pulls: np.ndarray, what: str, mean_offset: float = 0.0, allowance: float = 0.0
) -> None:
    n = pulls.size
    mean, std = float(pulls.mean()), float(pulls.std())
    print(f"\n{what}: {n} cells, pull mean {mean:+.3f}, std {std:.3f}")
    assert abs(mean - mean_offset) < 4 / np.sqrt(n) + allowance, what
    assert abs(std - 1) < 4 / np.sqrt(2 * n) + allowance, what


# ------------------------------------------------------------------------------ runs


def test_runs_are_deterministic_and_keyed_by_cell(conditions: Conditions) -> None:
    key = calibruns.run_key(5, "pedestal")
    cells = np.array([3, 70, 900])
    hg, lg = calibruns.pedestal_readings(conditions, key, np.arange(50), cells)
    again, _ = calibruns.pedestal_readings(conditions, key, np.arange(50), cells[1:])
    assert np.array_equal(hg[:, 1:], again)  # a cell's numbers do not depend on the others
    other, _ = calibruns.pedestal_readings(conditions, calibruns.run_key(6, "pedestal"),
                                           np.arange(50), cells)  # fmt: skip
    assert not np.array_equal(hg, other)
    assert np.all(hg == np.rint(hg)) and np.all(lg == np.rint(lg))
    led = calibruns.led_readings(conditions, calibruns.run_key(5, "led"), np.arange(50), cells)
    assert np.array_equal(
        led, calibruns.led_readings(conditions, calibruns.run_key(5, "led"), np.arange(50), cells)
    )


def test_run_files_say_what_they_hold(
    pedestal_file: Path, led_file: Path, conditions: Conditions, led_cells: np.ndarray
) -> None:
    meta = read_metadata(pedestal_file)
    assert meta.stage == "raw" and meta.extra["run_type"] == "pedestal"
    assert meta.extra["events"] == PEDESTAL_EVENTS
    assert meta.extra["dead_cells_skipped"] == int(conditions.dead.sum())
    events = read_events(pedestal_file, entry_stop=2)
    assert set(events.hits.fields) >= {"cellid", "energy", "adc_lg", "gain", "flags", "x"}
    live = conditions.n_cells - int(conditions.dead.sum())
    assert np.all(ak.num(events.hits) == live)
    led = read_metadata(led_file)
    assert led.extra["run_type"] == "led" and led.extra["mu_led"] == calibruns.MU_LED
    assert led.extra["cells_read"] == int(np.count_nonzero(~conditions.dead[led_cells]))


def test_bad_run_requests_are_errors(conditions: Conditions, workdir: Path) -> None:
    with pytest.raises(SimulationConfigError, match="events"):
        calibruns.pedestal_run(conditions, 0, 1, workdir / "none.root")
    with pytest.raises(SimulationConfigError, match="mu_led"):
        calibruns.led_run(conditions, 10, 1, workdir / "none.root", mu_led=-1.0)
    with pytest.raises(SimulationConfigError, match="unknown calibration run type"):
        calibruns.calibration_run("cosmic", conditions, 10, 1, workdir / "none.root")
    assert not (workdir / "none.root").exists()


# ------------------------------------------------------------------------------ pedestal


@pytest.mark.parametrize("gain", ["hg", "lg"])
def test_pedestal_pulls(pedestal_fit: tuple, truth: dict, gain: str) -> None:
    constants, _ = pedestal_fit
    pulls = _pulls(constants, f"pedestal_{gain}_adc", "pedestal_status",
                   truth[f"pedestal_{gain}_adc"])  # fmt: skip
    _check_pulls(pulls, f"pedestal {gain}")
    # the noise is a scale estimated with an error proportional to itself: with n readings
    # its pulls are shifted by -1.5 / sqrt(2 n) at second order (E[eps - eps^2] / c with
    # eps the relative error, c^2 = 1 / 2n); allowance: a quarter of that shift
    shift = -1.5 / np.sqrt(2 * PEDESTAL_EVENTS)
    noise = _pulls(constants, f"noise_{gain}_adc", "pedestal_status", truth[f"noise_{gain}_adc"])
    _check_pulls(noise, f"noise {gain}", mean_offset=shift, allowance=0.25 * abs(shift))


def test_pedestal_reports_dead_cells(pedestal_fit: tuple, conditions: Conditions) -> None:
    constants, _ = pedestal_fit
    status = constants.tables["pedestal_status"].values
    assert np.array_equal(status == STATUS_TOO_FEW, conditions.dead)
    quality = constants.provenance.fit_quality
    assert quality["status_counts"]["too_few_entries"] == int(conditions.dead.sum())
    assert len(quality["not_ok_cells"]["too_few_entries"]) == min(20, int(conditions.dead.sum()))
    # explicit fallback: the mean of the good cells, their spread as uncertainty
    table = constants.tables["pedestal_hg_adc"]
    good = status == STATUS_OK
    assert np.allclose(table.values[~good], table.values[good].mean())
    assert np.allclose(table.uncertainties[~good], table.values[good].std())
    assert set(constants.tables) == {
        "pedestal_hg_adc", "pedestal_lg_adc", "noise_hg_adc", "noise_lg_adc", "pedestal_status"
    }  # fmt: skip


def test_pedestal_with_two_levels_fails_and_warns(pedestal_fit: tuple) -> None:
    """A cell whose high gain jumps between two pedestals is not Gaussian: status 2."""
    _, result = pedestal_fit
    h = result.collected.copy()
    view = h.view(flow=True)
    cell = 100
    view[cell, 0, :] = np.roll(view[cell, 0, :], 12) // 2 + view[cell, 0, :] // 2
    with pytest.warns(FitWarning, match="failed in 1 of"):
        constants = Pedestal(GEOMETRY).fit(h)
    assert constants.tables["pedestal_status"].values[cell] == STATUS_FAILED
    assert constants.provenance.fit_quality["gains"]["hg"]["status_counts"]["failed"] == 1
    assert constants.provenance.fit_quality["gains"]["lg"]["status_counts"]["failed"] == 0


# ------------------------------------------------------------------------------ SPE


def test_spe_pulls(spe_fit: tuple, truth: dict, led_cells: np.ndarray) -> None:
    constants, _ = spe_fit
    pulls = _pulls(constants, "spe_adc", "spe_status", truth["spe_adc"])
    assert pulls.size > 0.99 * led_cells.size
    # the a-term of the non-linearity makes the spacing ~5e-5 low (calibruns docstring):
    # a pull shift of -5e-5 / (relative error ~0.4 %) ~ -0.012; allowance 0.02
    _check_pulls(pulls, "spe", allowance=0.02)
    relative = constants.provenance.fit_quality["relative_error_median"]
    assert relative < 0.01  # the demo statistics measure the SPE gain to better than 1 %


def test_spe_reports_unresolved_and_missing_cells(
    spe_fit: tuple, conditions: Conditions, led_cells: np.ndarray
) -> None:
    constants, caught = spe_fit
    status = constants.tables["spe_status"].values
    pulsed = np.zeros(conditions.n_cells, bool)
    pulsed[led_cells] = True
    # cells not pulsed or dead: too few entries; noisy cells (noise 5 x 3 ADC against a
    # 30 ADC spacing): peaks unresolved, failed
    assert np.all(status[~pulsed | conditions.dead] == STATUS_TOO_FEW)
    noisy = pulsed & conditions.noisy & ~conditions.dead
    assert noisy.sum() > 0 and np.all(status[noisy] == STATUS_FAILED)
    counts = constants.provenance.fit_quality["status_counts"]
    assert counts["failed"] == int(np.count_nonzero(status == STATUS_FAILED))
    assert counts["too_few_entries"] == int(np.count_nonzero(~pulsed | conditions.dead))
    messages = [str(w.message) for w in caught if issubclass(w.category, FitWarning)]
    assert len(messages) == 1 and f"failed in {counts['failed']} of" in messages[0]
    table = constants.tables["spe_adc"]
    fallback = constants.provenance.fit_quality["fallback"]["spe_adc"]
    assert np.allclose(table.values[status != STATUS_OK], fallback)
    assert fallback == pytest.approx(table.values[status == STATUS_OK].mean())


def test_spe_refuses_a_pedestal_run(pedestal_file: Path) -> None:
    with pytest.raises(InputFileError, match=r"'pedestal' run.*'led' runs"):
        fit_files(SinglePhotoelectron(GEOMETRY), [pedestal_file])


# ------------------------------------------------------------------------------ gain ratio


@pytest.fixture(scope="module")
def dual_gain_file(conditions: Conditions, workdir: Path) -> Path:
    sim = simulate(GEOMETRY, "e-", Beam(energies_gev=(40.0,), size_mm=60.0), 1500, 8,
                   workdir / "electrons.root")  # fmt: skip
    options = DigitizationOptions(dual_gain=True)
    raw = workdir / "electrons-raw.root"
    digitize_files([sim], raw, conditions=conditions, seed=4, options=options)
    return raw


@pytest.fixture(scope="module")
def pedestal_json(pedestal_fit: tuple, workdir: Path) -> Path:
    return pedestal_fit[0].save(workdir / "pedestal.json")


def test_gain_ratio_pulls(dual_gain_file: Path, pedestal_json: Path, truth: dict) -> None:
    assert read_metadata(dual_gain_file).extra["dual_gain"] is True
    constants, _ = fit_files(GainRatio(GEOMETRY, pedestals=str(pedestal_json)), [dual_gain_file])
    pulls = _pulls(constants, "gain_ratio", "gain_ratio_status", truth["gain_ratio"])
    assert pulls.size > 200
    _check_pulls(pulls, "gain ratio (through the pedestals)")


def test_gain_ratio_free_offset_needs_no_pedestals(dual_gain_file: Path, truth: dict) -> None:
    constants, _ = fit_files(GainRatio(GEOMETRY, free_offset=True), [dual_gain_file])
    pulls = _pulls(constants, "gain_ratio", "gain_ratio_status", truth["gain_ratio"])
    _check_pulls(pulls, "gain ratio (free offset, design pedestals)")
    assert constants.provenance.fit_quality["pedestals"] == "design values"


def test_gain_ratio_reports_cells_without_overlap_hits(
    dual_gain_file: Path, pedestal_json: Path, conditions: Conditions
) -> None:
    method = GainRatio(GEOMETRY, pedestals=str(pedestal_json), min_hits=20)
    constants, result = fit_files(method, [dual_gain_file])
    status = constants.tables["gain_ratio_status"].values
    hits = result.collected.view()[:, 0]
    assert np.array_equal(status == STATUS_TOO_FEW, hits < 20)
    assert np.all(status[conditions.dead] == STATUS_TOO_FEW)
    quality = constants.provenance.fit_quality
    assert quality["status_counts"]["too_few_entries"] == int(np.count_nonzero(hits < 20))
    ratio = constants.tables["gain_ratio"]
    good = status == STATUS_OK
    assert np.allclose(ratio.values[~good], quality["fallback"]["gain_ratio"])
    assert quality["fallback"]["gain_ratio"] == pytest.approx(ratio.values[good].mean())


def test_gain_ratio_needs_the_low_gain_of_every_hit(led_file: Path) -> None:
    with pytest.raises(MissingBranchError, match=r"hit_adc_lg.*dual_gain=True"):
        fit_files(GainRatio(GEOMETRY), [led_file])


# ------------------------------------------------------------------------------ digitiser


def test_dual_gain_leaves_the_digitiser_output_unchanged(conditions: Conditions) -> None:
    generator = np.random.default_rng(3)
    counts = generator.integers(0, 50, 400)
    n = int(counts.sum())
    cell = generator.integers(0, conditions.n_cells, n)
    energy = generator.exponential(1.0, n) * generator.choice([1.0, 30.0, 300.0], n)
    keys = rng.event_keys(rng.file_key(2, "dual-gain"), np.arange(counts.size))
    plain = digitize(energy, cell, keys, counts, conditions)
    dual = digitize(energy, cell, keys, counts, conditions, DigitizationOptions(dual_gain=True))
    assert plain.adc_lg is None and dual.adc_lg is not None
    for name in ("adc", "gain", "flags", "time", "keep"):
        assert np.array_equal(getattr(plain, name), getattr(dual, name)), name
    assert plain.removed == dual.removed and plain.flagged == dual.flagged
    low = dual.gain == 1
    assert low.any() and np.array_equal(dual.adc_lg[low], dual.adc[low])
    # high-gain hits: the same signal on the low gain, with its own noise
    v = conditions.values
    high = ~low & dual.keep & ~conditions.noisy[cell]
    expected = (dual.adc[high] - v["pedestal_hg_adc"][cell[high]]) / v["gain_ratio"][cell[high]]
    residual = dual.adc_lg[high] - v["pedestal_lg_adc"][cell[high]] - expected
    assert abs(residual.mean()) < 0.05 and 1.2 < residual.std() < 2.0


def test_digitize_files_writes_adc_lg_only_with_dual_gain(
    conditions: Conditions, workdir: Path
) -> None:
    sim = simulate(GEOMETRY, "e-", Beam(energies_gev=(10.0,)), 20, 3, workdir / "few.root")
    plain = digitize_files([sim], workdir / "few-raw.root", conditions=conditions, seed=1)
    assert plain.output is not None
    assert "adc_lg" not in read_events(plain.output).hits.fields
    assert "dual_gain" not in read_metadata(plain.output).extra


# ------------------------------------------------------------------------------ CLI, plugins


def test_cli_writes_a_run_the_method_fits(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    path = workdir / "cli-pedestal.root"
    argv = ["calibrun", "pedestal", "-g", GEOMETRY, "-n", "60", "--seed", "3", "-o", str(path)]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    constants, _ = fit_files(Pedestal(GEOMETRY), [path])
    assert constants.provenance.fit_quality["status_counts"]["ok"] == get_geometry(GEOMETRY).n_cells
    assert main(["calibrun", "led", "-g", GEOMETRY, "-n", "0", "--seed", "3", "-o",
                 str(workdir / "x.root")]) == 2  # fmt: skip
    assert "positive number of events" in capsys.readouterr().err


def test_cli_checks_the_conditions_geometry(
    conditions: Conditions, workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    npz = conditions.save(workdir / "conditions.npz")
    argv = ["calibrun", "led", "-g", "tile_24x24", "--conditions", str(npz), "-n", "5",
            "--seed", "1", "-o", str(workdir / "y.root")]  # fmt: skip
    assert main(argv) == 2
    assert "are for geometry 'cepc_ahcal'" in capsys.readouterr().err
    assert not (workdir / "y.root").exists()


def test_methods_are_plugins_with_typed_options() -> None:
    method = calibration_method("spe", GEOMETRY, adc_max="800", photostatistics="poisson")
    assert isinstance(method, SinglePhotoelectron) and method.options.adc_max == 800
    assert isinstance(calibration_method("gain_ratio", GEOMETRY), GainRatio)
    assert calibration_method("pedestal", GEOMETRY).run_type == "pedestal"
    with pytest.raises(MethodOptionsError, match="unknown photostatistics"):
        SinglePhotoelectron(GEOMETRY, photostatistics="gaussian")
    with pytest.raises(MethodOptionsError, match="valid:"):
        calibration_method("pedestal", GEOMETRY, min_entrie=3)
    for cls in (Pedestal, GainRatio, SinglePhotoelectron):
        assert cls.description and cls.url.startswith("https://") and cls.input_stage == "raw"


def test_constants_lay_over_the_design_values(
    pedestal_fit: tuple, spe_fit: tuple, pedestal_json: Path
) -> None:
    geometry = get_geometry(GEOMETRY)
    pedestal, spe = pedestal_fit[0], spe_fit[0]
    merged = design_constants(geometry).update(load_constants(pedestal_json), spe)
    dense = merged.dense(geometry)
    assert np.array_equal(dense.cells["pedestal_hg_adc"], pedestal.tables["pedestal_hg_adc"].values)
    assert np.array_equal(dense.cells["spe_adc"], spe.tables["spe_adc"].values)
    assert merged.provenance.method == "design+pedestal+spe"
    assert set(merged.provenance.fit_quality) == {"design", "pedestal", "spe"}
