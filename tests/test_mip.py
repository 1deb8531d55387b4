"""The ``mip`` calibration: per-cell light yield from muon spectra (Landau (x) Gauss)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calocoffea.cli.main import main
from calocoffea.conditions import PARAMETERS, Conditions, ConditionsConfig
from calocoffea.constants import Table, load_constants, nominal_constants
from calocoffea.geometry import get_geometry
from calocoffea.methods import calibration_method
from calocoffea.runner import digitize_files, fit_files
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate

GEOMETRY = "cepc_ahcal"
N_MU = 30_000  # a 30 mm beam spot: a few hundred cells with >= 300 hits
LY_SPREAD = 0.10  # hidden per-cell spread of the light yield (the MIP scale)
#: systematic allowance on the mean of fit/true - 1: the reference MPV is taken from
#: muons with design conditions and the fit shape is shared; measured -0.4 % on 12960 cells
SYSTEMATIC = 0.006


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | Conditions]:
    work = tmp_path_factory.mktemp("mip")
    geometry = get_geometry(GEOMETRY)
    beam = Beam(energies_gev=(10.0,), size_mm=30.0)
    muons = simulate(GEOMETRY, "mu-", beam, N_MU, 21, work / "mu.root")
    mean = PARAMETERS["light_yield_pe"].mean
    pseudo = Conditions.draw(
        geometry, 5, ConditionsConfig(overrides={"light_yield_pe": (mean, LY_SPREAD * mean)})
    )
    design = pseudo.with_values(
        label="design", **{k: np.full(pseudo.n_cells, p.mean) for k, p in PARAMETERS.items()}
    )
    data = digitize_files([muons], work / "data.root", conditions=pseudo, seed=1)
    reference = digitize_files([muons], work / "ref.root", conditions=design, seed=2)
    # what the electronics calibration would have given: everything but the light yield
    prior = nominal_constants(pseudo)
    ly = prior.tables["light_yield_pe"]
    prior = prior.replace(
        light_yield_pe=Table("cell", ly.keys, np.full(ly.keys.size, mean), ly.uncertainties)
    )
    prior.save(work / "prior.json")
    return {
        "data": data.output,
        "reference": reference.output,
        "prior": work / "prior.json",
        "pseudo": pseudo,
        "work": work,
    }


@pytest.fixture(scope="module")
def fitted(runs: dict) -> tuple:
    ref_method = calibration_method("mip", GEOMETRY)
    _, collected = fit_files(ref_method, [runs["reference"]])
    reference = ref_method.reference(collected.collected)
    method = calibration_method(
        "mip", GEOMETRY, constants=str(runs["prior"]), reference_mpv_mip=reference
    )
    constants, result = fit_files(method, [runs["data"]])
    return constants, result.collected, reference


def test_reference_is_the_photostatistics_shift(fitted: tuple) -> None:
    """The fitted Landau MPV of a design cell sits below 1 MIP (p.e. statistics)."""
    _, _, reference = fitted
    assert 0.75 < reference < 0.95


def test_light_yield_matches_the_truth_within_its_errors(fitted: tuple, runs: dict) -> None:
    constants, _, _ = fitted
    status = constants.tables["mip_status"].values
    ok = status == 0
    n = int(ok.sum())
    assert n > 200
    truth = runs["pseudo"].values["light_yield_pe"][ok]
    table = constants.tables["light_yield_pe"]
    ratio = table.values[ok] / truth - 1
    pull = ratio / (table.uncertainties[ok] / truth)
    rms = float(np.sqrt(np.mean(ratio**2)))
    # mean: statistical error of the mean plus the documented systematic allowance
    assert abs(ratio.mean()) < 3 * rms / np.sqrt(n) + SYSTEMATIC
    # the fit's uncertainties describe its scatter: pull width 1 within 3 standard errors
    # of a width (1/sqrt(2n)) plus 10 % for the shared-shape approximation
    assert abs(pull.std() - 1) < 3 / np.sqrt(2 * n) + 0.10
    # and the calibration removes most of the hidden 10 % spread
    assert rms < 0.5 * LY_SPREAD


def test_cells_with_few_hits_fall_back_and_are_counted(fitted: tuple) -> None:
    constants, collected, _ = fitted
    entries = collected.values().sum(axis=1)
    status = constants.tables["mip_status"].values
    quality = constants.provenance.fit_quality
    few = entries < calibration_method("mip", GEOMETRY).options.min_entries
    assert np.array_equal(status == 1, few)
    assert quality["too_few_entries"] == int(few.sum()) > 0
    assert quality["ok"] + quality["too_few_entries"] + quality["failed_fit"] == few.size
    assert quality["fallback"].startswith("layer mean")
    # a fallback cell takes the mean correction of its layer's fitted cells
    geometry = get_geometry(GEOMETRY)
    ly = constants.tables["light_yield_pe"].values
    layer = geometry.cell_layer
    for lay in np.unique(layer[status == 0])[:3]:
        fitted_mean = ly[(layer == lay) & (status == 0)].mean()
        assert np.allclose(ly[(layer == lay) & (status == 1)], fitted_mean)


def test_cli_fit_writes_constants_ready_to_apply(runs: dict, fitted: tuple, capsys) -> None:
    constants, _, reference = fitted
    out = runs["work"] / "mip.json"
    code = main(
        ["calibrate", "fit", "--method", "mip", str(runs["data"]), "-o", str(out),
         "--option", f"constants={runs['prior']}", "--option", f"reference_mpv_mip={reference}",
         "--base", str(runs["prior"])]
    )  # fmt: skip
    assert code == 0
    written = load_constants(out)
    assert written.provenance.method == "nominal+mip"
    np.testing.assert_allclose(
        written.tables["light_yield_pe"].values, constants.tables["light_yield_pe"].values
    )
    written.dense(get_geometry(GEOMETRY))  # complete: every table the chain needs
    assert "too_few_entries" in capsys.readouterr().out


def test_cli_unknown_method_lists_the_installed_ones(capsys) -> None:
    assert main(["calibrate", "fit", "--method", "nope", "x.root", "-o", "y.json"]) == 2
    err = capsys.readouterr().err
    assert "unknown calibration method 'nope'" in err and "mip" in err


def test_wrong_run_type_is_refused(runs: dict, tmp_path: Path) -> None:
    from calocoffea.exceptions import InputFileError

    electrons = simulate(GEOMETRY, "e-", Beam(energies_gev=(10.0,)), 20, 3, tmp_path / "e.root")
    raw = digitize_files([electrons], tmp_path / "e_raw.root", conditions=runs["pseudo"])
    with pytest.raises(InputFileError, match=r"'physics' run.*'muon' runs"):
        fit_files(calibration_method("mip", GEOMETRY), [raw.output])
