"""Seed 002's perturbation study: linear response fits per grid point, the regression of a
and b on the scales, and the post-model correction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calocoffea.cli.main import main
from calocoffea.exceptions import FitError
from calocoffea.methods import reconstruction_method
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate
from calocoffea.study import A_TERMS, SMALL, TABLE1, Grid, _regress, perturbation_study

ENERGIES = (10.0, 20.0, 40.0, 80.0)
N_PER_ENERGY = 150


@pytest.fixture(scope="module")
def showers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("study") / "e.root"
    return simulate("cepc_ahcal", "e-", Beam(energies_gev=ENERGIES), N_PER_ENERGY, 7, path)


@pytest.fixture(scope="module")
def study(showers: Path) -> dict:
    return perturbation_study([showers], reconstruction_method("sum", "cepc_ahcal"), grid=SMALL)


def test_table1_is_the_seed_grid() -> None:
    assert len(TABLE1.points()) == 5 * 8 * 3 == 120


def test_every_grid_point_is_fitted_and_reported(study: dict) -> None:
    rows = study["rows"]
    assert len(rows) == len(SMALL.points())
    for r in rows:
        assert r["ndf"] == len(ENERGIES) - 2
        assert np.isfinite(r["chi2_ndf"]) and r["a_error"] > 0 and r["b_error_gev"] > 0
    # without perturbations the response is the plain sum's: slope near the e/mip of the sum
    plain = next(r for r in rows if (r["calibration"], r["noise_mev"], r["bias_mev"]) == (0, 0, 0))
    assert 0.85 < plain["a"] < 1.05


def test_noise_above_the_threshold_adds_hits_and_an_offset(study: dict) -> None:
    rows = {(r["calibration"], r["noise_mev"], r["bias_mev"]): r for r in study["rows"]}
    quiet, loud = rows[(0.0, 0.5, 0.0)], rows[(0.0, 1.5, 0.0)]
    assert quiet["noise_hits_per_event"] == 0  # 0.5 MeV noise never passes 0.6 MeV
    assert loud["noise_hits_per_event"] > 100
    # the noise hits add an offset, not a slope: b0 grows, a stays near the plain response
    assert loud["b_gev"] > 10 * abs(quiet["b_gev"]) and loud["b_gev"] > 0
    assert abs(loud["a"] - quiet["a"]) < 0.05


def test_post_model_correction_brings_the_response_to_one(study: dict) -> None:
    for r in study["rows"]:
        assert abs(r["corrected_response"] - 1) < 0.01, r
    summary = study["summary"]
    assert summary["max_corrected_response_deviation"] < 0.01
    assert summary["points_within_1_percent"] == summary["points"]
    # the error is that of the mean over energies: the deviation stays within a few of them
    for r in study["rows"]:
        assert 0 < r["corrected_response_error"] < 0.02
    assert summary["max_corrected_response_pull"] < 5
    table = study["post_model"]
    assert len(table) == len(study["rows"]) and {"a", "b_gev"} <= table[0].keys()


def test_regression_recovers_known_coefficients() -> None:
    """Weighted least squares on rows generated from known coefficients (with noise of the
    stated errors): every coefficient within 4 standard errors."""
    rng = np.random.default_rng(3)
    truth = np.array([0.96, -0.3, -0.05, 0.09, 0.01])
    rows = []
    for s_c, s_eps, b in TABLE1.points():
        step = float(s_eps + b > 0.6)
        x = np.array([1.0, step * s_eps, step * b, b, s_c])
        rows.append(
            {
                "calibration": s_c,
                "noise_mev": s_eps,
                "bias_mev": b,
                "a": float(x @ truth + rng.normal(0, 0.002)),
                "a_error": 0.002,
            }
        )
    fit = _regress(rows, "a", "a_error", A_TERMS, 0.6)
    pulls = (np.array(fit["coefficients"]) - truth) / np.array(fit["errors"])
    assert np.all(np.abs(pulls) < 4), pulls
    assert fit["chi2"] / fit["ndf"] < 2


def test_too_few_energies_are_refused(tmp_path: Path) -> None:
    path = simulate("cepc_ahcal", "e-", Beam(energies_gev=(10.0, 20.0)), 20, 1, tmp_path / "e.root")
    with pytest.raises(FitError, match="3 or more energies"):
        perturbation_study(
            [path], reconstruction_method("sum", "cepc_ahcal"), grid=Grid((0.0,), (0.0,), (0.0,))
        )


def test_command_line_writes_the_table_and_regression(
    showers: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "study.json"
    assert main(["study", "perturbations", str(showers), "--grid", "small", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "a = " in printed and "b0 [GeV] = " in printed and "±" in printed
    result = json.loads(out.read_text())
    assert len(result["rows"]) == len(SMALL.points())
    assert result["regression"]["a"]["terms"] == list(A_TERMS)
    assert (tmp_path / "study.png").stat().st_size > 10_000  # a and b against the noise
    assert (tmp_path / "study.pdf").read_bytes()[:5] == b"%PDF-"
