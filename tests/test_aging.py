"""Seed 004: the aging effect, the ``moment_ratio`` baseline and the ``wgan_aging`` method.

Samples: 10 GeV pions on the axis of ``tile_24x24``, 2000 events each (the reproduction
uses 5000), from independent simulation seeds: the undamaged reference, the source of the
damaged sample, plus small files for the bad-input cases.

The statistical tests were run once with three seed sets (SEEDS below and the same shifted
by +100 and +200); measured then: 28, 29, 29 cells fitted by ``moment_ratio``, pull RMS
1.03 / 1.04 / 0.81 (allowed 1 +- 0.40); ``wgan_aging`` (the short training below) MAE
0.0165 / 0.0162 / 0.0164 against 0.0180 at A = 1, where these samples allow 0.0160 / 0.0160
/ 0.0159 (:func:`_expected_floor`) and the test asks for 0.0170 or less.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from calocoffea.aging import (
    SEED004_START_MAE,
    TABLE,
    Aging,
    AgingOptions,
    age_energies,
    aging_coefficients,
    aging_strength,
    aging_truth,
    apply_aging_files,
    cell_deposits_mev,
    central_cells,
    coefficients_of,
    read_cell_sample,
    trainable_cells,
)
from calocoffea.cli.main import main
from calocoffea.constants import Constants, load_constants
from calocoffea.exceptions import (
    ConstantsError,
    FitWarning,
    GeometryError,
    GeometryMismatchError,
    InputFileError,
    MethodOptionsError,
    OutputPathError,
)
from calocoffea.geometry import get_geometry
from calocoffea.io import read_events, read_metadata, write_events
from calocoffea.methods import calibration_method
from calocoffea.runner import fit_files
from calocoffea.scoring import score_constants
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate

GEOMETRY = "tile_24x24"
EVENTS = 2000
#: simulation seeds: reference, damaged source (independent events)
SEEDS = (7101, 7102)


def _pions(path: Path, events: int, seed: int, geometry: str = GEOMETRY) -> Path:
    return simulate(geometry, "pi+", Beam(energies_gev=(10.0,)), events, seed, path)


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Reference, damaged (independent events), the aged reference (same events) and the
    aging truth."""
    work = tmp_path_factory.mktemp("aging")
    reference = _pions(work / "reference.root", EVENTS, SEEDS[0])
    source = _pions(work / "source.root", EVENTS, SEEDS[1])
    deposits, _ = cell_deposits_mev([reference])
    aging = Aging.from_deposits(GEOMETRY, deposits, deposit_sample="reference")
    damaged = apply_aging_files([source], work / "damaged.root", aging)
    same_events = apply_aging_files([reference], work / "aged-reference.root", aging)
    return {
        "work": work,
        "reference": reference,
        "source": source,
        "damaged": damaged,
        "same_events": same_events,
        "aging": aging,
        "deposits": deposits,
    }


def _fit(name: str, damaged: Path, reference: Path, **options: object) -> tuple:
    method = calibration_method(name, GEOMETRY, reference=str(reference), **options)
    constants, _ = fit_files(method, [damaged])
    return constants, coefficients_of(constants, GEOMETRY)


# ---- the aging effect -------------------------------------------------------------------


@pytest.mark.parametrize("target", [SEED004_START_MAE, 0.005])
def test_strength_gives_the_target_mae_on_the_central_cells(samples: dict, target: float) -> None:
    central = central_cells(GEOMETRY)
    aging = Aging.from_deposits(GEOMETRY, samples["deposits"], target_mae=target)
    assert aging.mae_at_one(central) == pytest.approx(target, rel=1e-12)
    assert aging.origin["target_mae"] == target


def test_coefficients_are_linear_in_the_deposit(samples: dict) -> None:
    d = samples["deposits"]
    aging: Aging = samples["aging"]
    k = aging.strength
    np.testing.assert_allclose(aging.coefficients - 1.0, k * d / d.max(), rtol=1e-12, atol=1e-15)
    assert aging.coefficients.max() == pytest.approx(1.0 + k)
    assert np.argmax(aging.coefficients) == np.argmax(d)
    assert np.all(aging.coefficients[d == 0] == 1.0)
    np.testing.assert_allclose(aging_coefficients([0.0, 1.0, 3.0], 0.3), [1.0, 1.1, 1.3])


def test_damaged_is_undamaged_over_a_hit_by_hit(samples: dict) -> None:
    geometry = get_geometry(GEOMETRY)
    before, after = read_events(samples["source"]), read_events(samples["damaged"])
    aging: Aging = samples["aging"]
    assert ak.all(ak.num(before.hits) == ak.num(after.hits))
    for name in ("event", "beam_energy", "edep_active"):
        np.testing.assert_array_equal(ak.to_numpy(before[name]), ak.to_numpy(after[name]))
    cell = geometry.cell_index(ak.to_numpy(ak.flatten(after.hits.cellid)))
    e_before = ak.to_numpy(ak.flatten(before.hits.energy)).astype(np.float64)
    e_after = ak.to_numpy(ak.flatten(after.hits.energy))
    # written as float32, the type of hit_energy: the same rounding of the same quotient
    expected = (e_before / aging.coefficients[cell]).astype(np.float32)
    np.testing.assert_array_equal(e_after, expected)
    np.testing.assert_array_equal(ak.to_numpy(ak.flatten(after.hits.edep)), e_before)
    np.testing.assert_array_equal(aging_truth(samples["damaged"]), aging.coefficients)
    extra = read_metadata(samples["damaged"]).extra
    assert extra["aging"]["strength"] == aging.strength
    assert extra["particle"] == "pi+"
    np.testing.assert_allclose(age_energies([2.0, 3.0], [0, 1], [2.0, 1.5]), [1.0, 2.0])


def test_central_cells_are_the_middle_square_of_every_layer() -> None:
    geometry = get_geometry(GEOMETRY)
    central = central_cells(geometry)
    assert central.sum() == 8 * 8 * geometry.n_layers
    x, y, _ = geometry.centre(geometry.cellids()[central])
    assert np.abs(x).max() == pytest.approx(3.5 * 30.0)
    assert np.abs(y).max() == pytest.approx(3.5 * 30.0)
    with pytest.raises(GeometryError, match="does not fit the 24 x 24 grid"):
        central_cells(geometry, 25)
    with pytest.raises(GeometryError, match="square grids"):
        central_cells("hgcal_ee")


def test_strength_rejects_what_it_cannot_reach() -> None:
    with pytest.raises(ValueError, match="positive number"):
        aging_strength([1.0, 2.0], [True, False], target_mae=0.0)
    with pytest.raises(ValueError, match="no deposit in the selected cells"):
        aging_strength([0.0, 2.0], [True, False])
    with pytest.raises(ValueError, match="at least one"):
        aging_strength([1.0, 2.0], [False, False])


def test_aging_files_refuse_bad_outputs_and_geometries(samples: dict, tmp_path: Path) -> None:
    aging: Aging = samples["aging"]
    with pytest.raises(OutputPathError, match="also an input"):
        apply_aging_files([samples["source"]], samples["source"], aging)
    other = _pions(tmp_path / "ahcal.root", 20, 5, geometry="cepc_ahcal")
    with pytest.raises(GeometryMismatchError, match=r"ahcal\.root.*cepc_ahcal"):
        apply_aging_files([other], tmp_path / "out.root", aging)
    with pytest.raises(InputFileError, match="no aging truth"):
        aging_truth(samples["reference"])


# ---- moment_ratio -------------------------------------------------------------------------


@pytest.mark.parametrize("truncation", [0.0, 0.2])
def test_moment_ratio_is_exact_on_the_same_events(samples: dict, truncation: float) -> None:
    """Aged copy of the reference against the reference: the ratio of (truncated) means of
    every fitted cell is A, up to float32 rounding (the estimator is scale-equivariant)."""
    constants, a = _fit(
        "moment_ratio", samples["same_events"], samples["reference"], truncation=truncation
    )
    truth = samples["aging"].coefficients
    trained = a != 1.0
    assert constants.provenance.fit_quality["cells"]["trained"] == trained.sum() > 20
    np.testing.assert_allclose(a[trained], truth[trained], rtol=2e-6)


def test_moment_ratio_errors_describe_its_scatter(samples: dict) -> None:
    """Independent events: pulls (fit - truth) / uncertainty over the fitted cells have RMS 1
    within 3 standard errors of an RMS from that many cells (sqrt(1 / (2 n)))."""
    constants, a = _fit("moment_ratio", samples["damaged"], samples["reference"])
    table = constants.tables[TABLE]
    index = get_geometry(GEOMETRY).cell_index(table.keys.astype(np.uint64))
    error = np.empty(a.size)
    error[index] = table.uncertainties
    truth = samples["aging"].coefficients
    trained = a != 1.0
    n = int(trained.sum())
    pull_rms = float(np.sqrt(np.mean(((a - truth)[trained] / error[trained]) ** 2)))
    assert abs(pull_rms - 1.0) < 3.0 * math.sqrt(1.0 / (2 * n))
    assert constants.provenance.method == "moment_ratio"


def test_apply_multiplies_by_the_coefficient(samples: dict) -> None:
    constants, a = _fit("moment_ratio", samples["same_events"], samples["reference"])
    method = calibration_method("moment_ratio", GEOMETRY, reference=str(samples["reference"]))
    energy = np.array([1.0, 2.0, 3.0])
    cell = np.array([0, int(np.argmax(a)), 5])
    zeros = np.zeros(3, np.int64)
    out = method.apply(energy, zeros, zeros, cell, zeros, constants)
    np.testing.assert_allclose(out, energy * a[cell])
    assert energy.tolist() == [1.0, 2.0, 3.0]


# ---- wgan_aging ---------------------------------------------------------------------------


def _expected_floor(samples: dict) -> tuple[float, float]:
    """(MAE of A = 1, MAE expected if every fitted cell were measured to its statistical
    error) over the central cells: untrained cells keep |A - 1|, fitted ones err by
    sqrt(2 / pi) sigma A on average (Gaussian)."""
    central = central_cells(GEOMETRY)
    n_cells = central.size
    reference = read_cell_sample(samples["reference"], GEOMETRY).moments(n_cells)
    damaged = read_cell_sample(samples["damaged"], GEOMETRY).moments(n_cells)
    selection = trainable_cells(reference, damaged, central, AgingOptions().max_error)
    truth = samples["aging"].coefficients
    fitted = selection.trained
    per_cell = np.where(
        fitted, math.sqrt(2 / math.pi) * selection.errors * truth, np.abs(truth - 1.0)
    )
    return float(np.mean(np.abs(truth[central] - 1.0))), float(np.mean(per_cell[central]))


def test_wgan_aging_improves_on_no_calibration(samples: dict) -> None:
    """A few hundred steps (50 warm-up critic steps, then 15 epochs of 4 generator and 20
    critic steps; a larger learning rate and a shorter average than the defaults, made for
    hundreds of epochs) must recover at least half of the improvement over A = 1 that the
    statistics of these samples allow (:func:`_expected_floor`); the truth is only
    monitored."""
    constants, a = _fit(
        "wgan_aging", samples["damaged"], samples["reference"], epochs=15, learning_rate=0.02,
        averaging=0.9, patience=0, threads=1, truth=str(samples["damaged"]),
    )  # fmt: skip
    truth = samples["aging"].coefficients
    central = central_cells(GEOMETRY)
    mae = score_constants(a, truth, central).mae
    at_one, floor = _expected_floor(samples)
    assert at_one == pytest.approx(SEED004_START_MAE, rel=0.05)
    assert mae < at_one - 0.5 * (at_one - floor)
    quality = constants.provenance.fit_quality
    assert quality["epochs_run"] == len(quality["wasserstein_epoch"]) == len(quality["mae_epoch"])
    assert quality["mae_initial"] == pytest.approx(at_one)
    assert quality["wasserstein_smoothed"][-1] < quality["wasserstein_epoch"][0]
    assert constants.provenance.method == "wgan_aging"


def test_wgan_aging_is_deterministic(samples: dict) -> None:
    options = {"epochs": 1, "warmup_critic_steps": 2, "threads": 1, "seed": 3}
    _, first = _fit("wgan_aging", samples["damaged"], samples["reference"], **options)
    _, second = _fit("wgan_aging", samples["damaged"], samples["reference"], **options)
    np.testing.assert_array_equal(first, second)
    assert np.any(first != 1.0)


# ---- options and bad input -------------------------------------------------------------------


def test_options_are_validated() -> None:
    with pytest.raises(MethodOptionsError, match=r"'epoch'.*valid: reference"):
        calibration_method("wgan_aging", GEOMETRY, epoch=3)
    bad = [
        ("moment_ratio", {"truncation": 1.0}, "truncation must lie in"),
        ("moment_ratio", {"max_error": 0.0}, "max_error must be a positive"),
        ("moment_ratio", {"central_size": 0}, "central_size must be at least 1"),
        ("wgan_aging", {"epochs": 0}, "epochs must be at least 1"),
        ("wgan_aging", {"smoothing": 1.0}, r"smoothing must lie in \[0, 1\)"),
        ("wgan_aging", {"averaging": -0.1}, r"averaging must lie in \[0, 1\)"),
        ("wgan_aging", {"learning_rate": -1.0}, "learning_rate must be a positive"),
        ("wgan_aging", {"n_critic": "many"}, "must be of type int"),
    ]
    for name, options, message in bad:
        with pytest.raises(MethodOptionsError, match=message):
            calibration_method(name, GEOMETRY, **options)
    method = calibration_method("wgan_aging", GEOMETRY, epochs="3", central_only="off")
    assert method.options.epochs == 3 and method.options.central_only is False


def test_reference_must_be_given_and_exist(samples: dict, tmp_path: Path) -> None:
    with pytest.raises(MethodOptionsError, match="reference=PATH"):
        fit_files(calibration_method("moment_ratio", GEOMETRY), [samples["damaged"]])
    missing = tmp_path / "nowhere.root"
    with pytest.raises(InputFileError, match=r"nowhere\.root.*does not exist"):
        _fit("moment_ratio", samples["damaged"], missing)
    with pytest.raises(InputFileError, match="no aging truth"):
        _fit("wgan_aging", samples["damaged"], samples["reference"], truth=samples["reference"])


def test_samples_of_different_geometries_are_refused(samples: dict, tmp_path: Path) -> None:
    other = _pions(tmp_path / "ahcal.root", 20, 6, geometry="cepc_ahcal")
    with pytest.raises(GeometryMismatchError, match=r"reference.*ahcal\.root.*cepc_ahcal"):
        _fit("moment_ratio", samples["damaged"], other)


def _rewrite(source: Path, target: Path, change: object) -> Path:
    events = read_events(source)
    return write_events(target, [change(events)], read_metadata(source))  # type: ignore[operator]


def test_empty_cells_keep_one_and_are_counted(samples: dict, tmp_path: Path) -> None:
    """The busiest central cell removed from the reference: no hit there, so it keeps A = 1
    with a FitWarning and is counted as empty; the other cells are fitted as usual."""
    geometry = get_geometry(GEOMETRY)
    hottest = int(np.argmax(samples["deposits"]))
    hottest_id = geometry.cellids()[hottest]

    def drop(events: ak.Array) -> ak.Array:
        return ak.with_field(events, events.hits[events.hits.cellid != hottest_id], "hits")

    reference = _rewrite(samples["reference"], tmp_path / "holed.root", drop)
    with pytest.warns(FitWarning, match=r"1 of 2560 candidate cells have no hit.*keep A = 1"):
        constants, a = _fit("moment_ratio", samples["damaged"], reference)
    assert a[hottest] == 1.0
    assert constants.provenance.fit_quality["cells"]["empty"] == 1
    assert np.sum(a != 1.0) > 20


@pytest.mark.parametrize("which", ["damaged", "reference"])
def test_non_finite_energies_name_the_file(samples: dict, tmp_path: Path, which: str) -> None:
    def poison(events: ak.Array) -> ak.Array:
        energy = ak.to_numpy(ak.flatten(events.hits.energy)).copy()
        energy[7] = np.nan
        hits = ak.with_field(events.hits, ak.unflatten(energy, ak.num(events.hits)), "energy")
        return ak.with_field(events, hits, "hits")

    bad = _rewrite(samples[which], tmp_path / f"nan-{which}.root", poison)
    inputs = {"damaged": samples["damaged"], "reference": samples["reference"], which: bad}
    with pytest.raises(InputFileError, match=rf"nan-{which}\.root: 1 hits have non-finite"):
        _fit("moment_ratio", inputs["damaged"], inputs["reference"])
    with pytest.raises(InputFileError, match=rf"nan-{which}\.root: 1 hits have non-finite"):
        apply_aging_files([bad], tmp_path / "aged.root", samples["aging"])


def test_aging_rejects_a_deposit_table_of_another_size() -> None:
    with pytest.raises(GeometryMismatchError, match="3 deposits for the 23040 cells"):
        Aging.from_deposits(GEOMETRY, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="one value per cell"):
        dataclasses.replace(Aging.from_deposits("tile_24x24", np.ones(23040)), coefficients=[1.0])


# ---- command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "extra"),
    [("moment_ratio", []), ("wgan_aging", ["epochs=1", "warmup_critic_steps=2", "threads=1"])],
)
def test_command_line_fit(samples: dict, tmp_path: Path, method: str, extra: list[str]) -> None:
    out = tmp_path / f"{method}.json"
    options = [f"reference={samples['reference']}", *extra]
    argv = ["calibrate", "fit", "--method", method, str(samples["damaged"]), "-o", str(out)]
    for option in options:
        argv += ["--option", option]
    assert main(argv) == 0
    constants = load_constants(out)
    assert TABLE in constants.tables
    assert method in constants.provenance.method
    a = coefficients_of(constants, GEOMETRY)
    assert np.all(a > 0) and np.sum(a != 1.0) > 20


@pytest.mark.parametrize("executor", ["futures", "dask"])
def test_fit_is_identical_on_every_executor(samples: dict, executor: str) -> None:
    """The damaged events reach the fit as shards in (file, entry) order whatever runs the
    collect step: the same constants on a process pool and a Dask LocalCluster."""
    from calocoffea.runner import RunOptions

    method = calibration_method("moment_ratio", GEOMETRY, reference=str(samples["reference"]))
    iterative, _ = fit_files(method, [samples["damaged"]], run_options=RunOptions(chunksize=700))
    other, _ = fit_files(
        method,
        [samples["damaged"]],
        run_options=RunOptions(executor, workers=2, chunksize=700),
    )
    np.testing.assert_array_equal(
        coefficients_of(other, GEOMETRY), coefficients_of(iterative, GEOMETRY)
    )


def test_aged_raw_data_calibrate_back_through_the_scale_table(tmp_path: Path) -> None:
    """Aging as a detector condition: raw data digitised with aged conditions, calibrated
    with the unaged constants plus the coefficients as the ``scale`` table, give exactly the
    energies of the aged conditions' own (truth) constants; without it, aged cells read low."""
    from calocoffea.aging import aged_conditions, as_scale, cell_deposits_mev
    from calocoffea.conditions import nominal
    from calocoffea.constants import Provenance, Table, nominal_constants
    from calocoffea.runner import calibrate_files, digitize_files

    geometry = get_geometry(GEOMETRY)
    sim = simulate(GEOMETRY, "pi+", Beam((10.0,)), 100, 21, tmp_path / "sim.root")
    deposits, _ = cell_deposits_mev([sim])
    aging = Aging.from_deposits(GEOMETRY, deposits)
    base = nominal(GEOMETRY)
    raw = digitize_files([sim], tmp_path / "raw.root", conditions=aged_conditions(base, aging),
                         seed=3).output  # fmt: skip
    learned = Constants(
        {"aging_coefficient": Table("cell", geometry.cellids().astype(np.int64),
                                    aging.coefficients, np.zeros(geometry.n_cells), "1")},
        Provenance("truth", geometry.name, geometry.hash),
    )  # fmt: skip
    energies = {}
    for name, constants in {
        "unaged": nominal_constants(base),
        "scale": nominal_constants(base).update(as_scale(learned)),
        "truth": nominal_constants(aged_conditions(base, aging)),
    }.items():
        out = calibrate_files([raw], tmp_path / f"{name}.root", constants).output
        hits = read_events(out).hits
        energies[name] = ak.to_numpy(ak.flatten(hits.energy)).astype(np.float64)
        cell = geometry.cell_index(ak.to_numpy(ak.flatten(hits.cellid)))
    np.testing.assert_allclose(energies["scale"], energies["truth"], rtol=1e-6)
    ratio = energies["truth"] / energies["unaged"]
    np.testing.assert_allclose(ratio, aging.coefficients[cell], rtol=1e-6)
    assert aging.coefficients[cell].max() > 1.1
    with pytest.raises(ConstantsError, match="no table 'aging_coefficient'"):
        as_scale(nominal_constants(base))
