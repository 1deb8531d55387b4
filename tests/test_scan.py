"""`calocoffea fit resolution`: reconstruct, per-point cores, resolution and linearity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calocoffea.calibration import CalibrationSteps
from calocoffea.cli.main import main
from calocoffea.conditions import nominal
from calocoffea.constants import nominal_constants
from calocoffea.exceptions import FitError
from calocoffea.methods import reconstruction_method
from calocoffea.registry import names
from calocoffea.runner import calibrate_files, digitize_files, reconstruct_files
from calocoffea.scan import scan_summary
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate

GEOMETRY = "cepc_ahcal"
ENERGIES = (5.0, 10.0, 15.0, 20.0, 60.0)
N = 300


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("scan")
    sim = simulate(GEOMETRY, "e-", Beam(energies_gev=ENERGIES, x_mm=20, y_mm=20), N, 8,
                   work / "e.root")  # fmt: skip
    conditions = nominal(GEOMETRY)
    raw = digitize_files([sim], work / "raw.root", conditions=conditions, seed=2)
    out = calibrate_files([raw.output], work / "gev.root", nominal_constants(conditions),
                          steps=CalibrationSteps(to_gev=True))  # fmt: skip
    assert out.output is not None
    return out.output


def test_reconstruct_gives_one_energy_per_event_in_order(calibrated: Path) -> None:
    result = reconstruct_files([calibrated], reconstruction_method("sum", GEOMETRY))
    c = result.columns
    assert c["energy"].size == c["beam_energy"].size == len(ENERGIES) * N
    assert np.array_equal(c["beam_energy"], np.repeat(ENERGIES, N))  # file order kept
    response = c["energy"] / c["beam_energy"]
    # the MIP-scale sum of an electron shower: e/mip below 1 (sampling of soft electrons),
    # leakage and threshold losses
    assert 0.75 < np.median(response) < 0.95


def test_fit_resolution_cli(calibrated: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "fit.json"
    assert main(["fit", "resolution", str(calibrated), "-o", str(out)]) == 0
    scan = json.loads(out.read_text())
    assert scan["energy_gev"] == list(ENERGIES)
    a, c = scan["resolution"]["a"], scan["resolution"]["c"]
    # cepc_ahcal electrons: ~22 %/sqrt(E) (PHYSICS.md); 300 events per point
    assert 0.15 < a < 0.30 and c < 0.05
    assert scan["linearity"]["max_deviation"] < 0.03
    used = scan["used_in_fit"]
    assert all(used[k] == (scan["clipped_fraction"][k] < 0.01) for k in range(len(used)))
    printed = capsys.readouterr().out
    assert "a = " in printed and "wrote" in printed


def test_energies_with_clipping_are_left_out() -> None:
    rng = np.random.default_rng(1)
    beam = np.repeat([10.0, 20.0, 40.0, 80.0], 500)
    energy = beam * (1 + rng.normal(0, 0.2, beam.size) / np.sqrt(beam))
    clipped = np.where((beam == 80.0) & (rng.random(beam.size) < 0.3), 2, 0)
    scan = scan_summary(beam, energy, clipped)
    assert scan["used_in_fit"] == [True, True, True, False]
    assert scan["clipped_fraction"][3] == pytest.approx(np.mean(clipped[beam == 80] > 0))
    with pytest.raises(FitError, match="only 2 beam energies"):
        scan_summary(beam, energy, np.where(beam >= 40, 1, 0))


def test_unknown_reconstruction_lists_the_installed_ones(capsys) -> None:
    """The message lists every installed reconstruction, in the registry's order."""
    assert main(["fit", "resolution", "x.root", "--method", "nope", "-o", "y.json"]) == 2
    installed = names("reconstructions")
    assert {"sum", "onnx", "gbr", "cnn_lstm", "software_compensation"} <= set(installed)
    assert f"installed: {', '.join(installed)}." in capsys.readouterr().err
