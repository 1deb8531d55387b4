"""The ``software_compensation`` plugin: the Pandora form as an ONNX graph, its training
through ``calocoffea train``, and reconstruction with the trained model.

Samples: pions on ``cepc_ahcal``, training at 10-60 GeV and an independent held-out sample at
15, 35 and 55 GeV, 300 events per energy each (about 10 s in all).

What is asserted about the physics, and why (measured with 8 pairs of seeds at this size):
the median response of the held-out pions is 1 within 4 standard errors (observed 0.985 to
1.009); the held-out loss Σ (E - E_beam)²/E_beam over the core events, software compensation
over the sum with the linear response correction of the training sample, was 0.83 to 1.08:
at this size software compensation is not robustly better than the corrected sum (its gain,
a few % in σ/E, is shown on 40 000 pions by ``reproduce/software_compensation.py``), so the
test only asserts that it is not much worse (< 1.3), which a failed fit would break.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from calocoffea.cli.main import main
from calocoffea.exceptions import MethodOptionsError, ModelError
from calocoffea.geometry import get_geometry
from calocoffea.io import read_events
from calocoffea.methods import reconstruction_method
from calocoffea.models.features import DENSITY_EDGES_MIP
from calocoffea.models.inputs import FlatHits, build_inputs
from calocoffea.models.onnxmodel import current_versions, load_model
from calocoffea.models.training import model_input, write_model
from calocoffea.plugins.software_compensation import (
    PARAMETER_NAMES,
    PARITY_TOLERANCE,
    SoftwareCompensation,
    compensated_energy,
    max_relative_difference,
    onnx_energy,
    pandora_graph,
    representative_densities,
)
from calocoffea.runner import reconstruct_files
from calocoffea.samples import calibrated_sample
from calocoffea.scan import scan_summary
from calocoffea.simulation.beam import Beam

GEOMETRY = "cepc_ahcal"
TRAIN_ENERGIES = (10.0, 20.0, 30.0, 40.0, 50.0, 60.0)
HELD_OUT_ENERGIES = (15.0, 35.0, 55.0)
N = 300
N_BINS = len(DENSITY_EDGES_MIP)


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("sc")
    train = calibrated_sample(GEOMETRY, "pi-", Beam(TRAIN_ENERGIES), N, 3, work / "train.root")
    held = calibrated_sample(GEOMETRY, "pi-", Beam(HELD_OUT_ENERGIES), N, 4, work / "held.root")
    return train, held


@pytest.fixture(scope="module")
def trained(samples: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("model") / "sc.onnx"
    argv = ["train", "--model", "software_compensation", str(samples[0]), "-o", str(output)]
    assert main([*argv, "--seed", "0", "--option", "core_window=3"]) == 0
    return output


def _card(path: Path) -> dict:
    return json.loads(path.with_suffix(".card.json").read_text())


def test_the_graph_computes_the_formula_with_its_guards() -> None:
    """Random sums, E_est below, inside and above the range, p2 > 0 at low E_est (guard)."""
    rng = np.random.default_rng(1)
    x = rng.exponential(1.0, (500, N_BINS)) * (rng.random((500, N_BINS)) < 0.6)
    x *= rng.uniform(0.05, 5.0, (500, 1))
    parameters = (2.5, -0.07, 0.0009, 0.2, -0.02, 1e-4, 0.17, 0.22, -0.09)
    rho = representative_densities()
    limits = (3.0, 50.0)
    graph = pandora_graph(parameters, rho, limits)
    x32 = x.astype(np.float32)
    expected = compensated_energy(parameters, x32, rho, limits)
    assert max_relative_difference(onnx_energy(graph, x), expected) < PARITY_TOLERANCE
    s = np.clip(x.sum(axis=1), *limits)
    p2 = 0.2 - 0.02 * s + 1e-4 * s * s
    assert np.any(p2 > 0) and np.any(p2 < 0)  # the p2 guard is exercised
    low = x.sum(axis=1) < limits[0]
    clamped = compensated_energy(parameters, x32[low], rho, (limits[0], limits[0]))
    np.testing.assert_allclose(expected[low], clamped, rtol=1e-12)


def test_training_writes_the_model_and_its_card(trained: Path) -> None:
    card = _card(trained)
    assert card["name"] == "software_compensation"
    assert card["inputs"][0]["name"] == "density_sums"
    assert card["inputs"][0]["shape"] == [None, N_BINS]
    assert card["training_command"].startswith("calocoffea")
    assert set(current_versions()) | {"iminuit"} <= set(card["versions"])
    metrics = card["metrics"]
    fit = metrics["fit"]
    assert fit["valid"] is True
    assert list(fit["parameters"]) == list(PARAMETER_NAMES)
    assert all(math.isfinite(v) for v in (*fit["parameters"].values(), *fit["errors"].values()))
    assert 0 < fit["events_left_out"] < 0.1 * fit["events_fitted"]
    assert metrics["parity_max_relative_difference"] <= PARITY_TOLERANCE
    split = metrics["split_events"]
    assert sum(split.values()) == N * len(TRAIN_ENERGIES)
    assert metrics["test"]["events"] == split["test"]
    assert metrics["validation"]["ratio_to_train"] <= metrics["validation"]["ratio_allowed"]


def _held_out_features(path: Path) -> np.ndarray:
    geometry = get_geometry(GEOMETRY)
    item = model_input("density_sums", geometry, bins=N_BINS)
    hits = FlatHits.from_events(read_events(path))
    return build_inputs({item.name: item.shape}, hits, geometry)[item.name]


def test_the_loaded_model_matches_the_numpy_formula(
    trained: Path, samples: tuple[Path, Path]
) -> None:
    x = _held_out_features(samples[1])
    fit = _card(trained)["metrics"]["fit"]
    reference = compensated_energy(
        list(fit["parameters"].values()),
        x.astype(np.float32),
        representative_densities(),
        tuple(fit["e_est_range_gev"]),
    )
    predicted = load_model(trained, GEOMETRY).predict(x)
    assert max_relative_difference(predicted, reference) <= PARITY_TOLERANCE


def test_reconstruction_of_held_out_pions(trained: Path, samples: tuple[Path, Path]) -> None:
    train, held = samples
    method = reconstruction_method("software_compensation", GEOMETRY, model=str(trained))
    sc = reconstruct_files([held], method).columns
    plain = reconstruct_files([held], reconstruction_method("sum", GEOMETRY)).columns
    beam, energy = sc["beam_energy"], sc["energy"]
    assert np.array_equal(beam, plain["beam_energy"]) and np.all(np.isfinite(energy))
    # median response: 1 within 4 standard errors of the held-out median and of the fit's
    # scale (set by the fitted events); leakage tails, left out of the fit, pull the mean low
    response = energy / beam
    width = 1.4826 * np.median(np.abs(response - np.median(response)))
    fitted = _card(trained)["metrics"]["fit"]["events_fitted"]
    tolerance = 4 * 1.2533 * width * math.sqrt(1 / response.size + 1 / fitted)
    assert abs(np.median(response) - 1) < tolerance
    # against the sum at unit response (linear correction of the training sample), on the
    # events of the sum's core at each energy (module docstring: measured 0.83 to 1.08)
    train_sum = reconstruct_files([train], reconstruction_method("sum", GEOMETRY)).columns
    line = scan_summary(train_sum["beam_energy"], train_sum["energy"],
                        train_sum["clipped_hits"])["linearity"]  # fmt: skip
    corrected = (plain["energy"] - line["offset"]) / line["slope"]
    ratio = plain["energy"] / beam
    core = np.zeros(beam.size, dtype=bool)
    for point in HELD_OUT_ENERGIES:
        at = beam == point
        median = np.median(ratio[at])
        core[at] = np.abs(ratio[at] - median) < 3 * 1.4826 * np.median(np.abs(ratio[at] - median))
    loss_sc = np.mean((energy[core] - beam[core]) ** 2 / beam[core])
    loss_sum = np.mean((corrected[core] - beam[core]) ** 2 / beam[core])
    assert loss_sc < 1.3 * loss_sum


def _wrong_bins_model(path: Path) -> Path:
    geometry = get_geometry(GEOMETRY)
    rho = representative_densities()[:-1]
    return write_model(
        pandora_graph((1.5, 0, 0, -0.01, 0, 0, 0, 1, 0), rho), path, name="sc14",
        geometry=geometry, inputs=[model_input("density_sums", geometry, bins=N_BINS - 1)],
        output_name="energy", training_sample=["none"], command="built by the test",
        metrics={}, versions=current_versions(),
    )  # fmt: skip


def test_a_card_with_the_wrong_number_of_density_bins_is_refused(
    tmp_path: Path, samples: tuple[Path, Path]
) -> None:
    model = _wrong_bins_model(tmp_path / "sc14.onnx")
    with pytest.raises(ModelError, match="density_sums"):
        reconstruction_method("software_compensation", GEOMETRY, model=str(model))
    generic = reconstruction_method("onnx", GEOMETRY, model=str(model))
    with pytest.raises(ModelError, match="bins"):
        reconstruct_files([samples[1]], generic)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"loss": "huber"}, "unknown loss"),
        ({"start": "1,2,3"}, "9 finite numbers"),
        ({"fix": "a3"}, "unknown parameter"),
        ({"strategy": "3"}, "strategy"),
        ({"final_density_mip": "50"}, "open last bin"),
        ({"learning_rate": "1"}, "unknown option"),
    ],
)
def test_bad_training_options(tmp_path: Path, option: dict, message: str) -> None:
    with pytest.raises(MethodOptionsError, match=message):
        SoftwareCompensation.train(
            [], str(tmp_path / "m.onnx"), options=option, seed=0, command="test"
        )
