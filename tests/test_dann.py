"""Domain-adversarial training (DANN, Ganin & Lempitsky 2015) of ``cnn_lstm``: the gradient
reversal, the training with an unlabelled target sample (card, curves, ONNX parity, an
exported graph without the domain classifier), target labels never read, resume, and the
errors on bad options and target files."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import onnx
import pytest

from calocoffea import nonlinearity_fit as nl
from calocoffea.cli.main import main
from calocoffea.conditions import nominal
from calocoffea.exceptions import (
    GeometryMismatchError,
    InputFileError,
    MethodOptionsError,
    ModelError,
    StageMismatchError,
)
from calocoffea.geometry import get_geometry
from calocoffea.io import FileMetadata, read_events, read_metadata, write_events
from calocoffea.methods import make_options
from calocoffea.models import cnn_lstm
from calocoffea.models.cnn_lstm import (
    LAST,
    PARITY_TOLERANCE,
    Architecture,
    CnnLstmOptions,
    build_network,
    copy_checkpoint,
    domain_strength,
    export_onnx,
    gradient_reversal,
)
from calocoffea.models.inputs import build_inputs
from calocoffea.models.onnxmodel import card_path, load_model
from calocoffea.models.training import batch_hits, prepare_shards
from calocoffea.samples import calibrated_sample
from calocoffea.simulation.beam import Beam

torch = pytest.importorskip("torch", reason="cnn_lstm trains with torch (the train extra)")


GEOMETRY = "cepc_ahcal"
SEED = 5
STEPS = 60
VALIDATE_EVERY = 20
#: A tiny network and few steps: what is tested is the machinery, not the physics.
TINY = {
    "steps": STEPS,
    "batch_size": 64,
    "channels": 4,
    "hidden": 16,
    "domain_hidden": 8,
    "domain_weight": 0.5,
    "validate_every": VALIDATE_EVERY,
    "learning_rate": 3e-3,
    "threads": 1,
}


def train(source: Path, target: Path | str, output: Path, **extra: Any) -> Path:
    """``calocoffea train --model cnn_lstm SOURCE -o OUTPUT --option target=TARGET ...``."""
    pairs = TINY | {"target": target} | extra
    argv = ["train", "--model", "cnn_lstm", str(source), "-o", str(output), "--seed", str(SEED)]
    argv += [item for k, v in pairs.items() for item in ("--option", f"{k}={v}")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["calocoffea", *argv])  # the card records sys.argv
        assert main(argv) == 0
    return output


def direct(source: Path, target: Path | str, output: Path, **extra: Any) -> Path:
    """The training function itself (its exceptions reach the test)."""
    options = {k: str(v) for k, v in (TINY | {"target": target} | extra).items()}
    return cnn_lstm.train([str(source)], str(output), options=options, seed=SEED, command="t")


def rewrite(path: Path, output: Path, **changes: Any) -> Path:
    """``path`` written again with event fields replaced (``beam_energy=...``) or other
    metadata (``stage=...``, ``geometry=...``)."""
    events = read_events(path)
    for name in ("beam_energy",):
        if name in changes:
            events = ak.with_field(events, changes.pop(name), name)
    metadata = read_metadata(path)
    metadata = FileMetadata(**{**metadata.__dict__, "units": {}, **changes})
    return write_events(output, [events], metadata)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MC_digi: 1500 calibrated electrons, trapezoidal 1-120 GeV, nominal conditions."""
    folder = tmp_path_factory.mktemp("dann_source")
    beam = Beam(energy_range_gev=(1.0, 120.0), spectrum="trapezoid", size_mm=10.0)
    return calibrated_sample(GEOMETRY, "e-", beam, 1500, 21, folder / "mc.root")


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pseudo-data: 800 electrons with per-cell (a, b) the MC does not know and a shifted,
    wider spot, calibrated with the MC's (design) constants."""
    folder = tmp_path_factory.mktemp("dann_target")
    mc = nominal(GEOMETRY)
    data = nl.data_conditions(mc, 7, 0.01, 0.05)
    beam = Beam(energy_range_gev=(1.0, 120.0), spectrum="trapezoid", x_mm=5.0, y_mm=-5.0,
                size_mm=15.0)  # fmt: skip
    return calibrated_sample(GEOMETRY, "e-", beam, 800, 31, folder / "data.root",
                             conditions=data, constants_of=mc)  # fmt: skip


@pytest.fixture(scope="module")
def trained(source: Path, target: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One DANN training, keeping a checkpoint per validation."""
    folder = tmp_path_factory.mktemp("dann_model")
    checkpoints = folder / "checkpoints"
    model = train(source, target, folder / "dann.onnx", checkpoint_dir=checkpoints,
                  keep_checkpoints="true")  # fmt: skip
    return {"model": model, "checkpoints": checkpoints}


@pytest.fixture(scope="module")
def images(target: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """Cell images of the first 300 target events."""
    loader = prepare_shards([target], tmp_path_factory.mktemp("shards"), batch_showers=300)
    batch = next(loader.epoch(0, shuffle=False))
    shapes = {"cell_images": (None, 40, 18, 18)}
    return build_inputs(shapes, batch_hits(batch), get_geometry(GEOMETRY))["cell_images"]


def predictions(model: Path, images: np.ndarray) -> np.ndarray:
    return load_model(model, geometry=GEOMETRY).predict(images)


def curves_of(model: Path) -> dict[str, Any]:
    return json.loads(model.with_suffix(".curves.json").read_text())


# --- the gradient reversal -----------------------------------------------------------------


def test_gradient_reversal_is_the_identity_forward_and_reverses_scaled_gradients() -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 3, requires_grad=True)
    weights = torch.randn(5, 3)
    y = gradient_reversal(x, 0.3)
    assert torch.equal(y, x)
    (y * weights).sum().backward()
    torch.testing.assert_close(x.grad, -0.3 * weights)
    # between a feature layer and a classifier: the classifier's gradient is untouched, the
    # feature layer's is reversed and scaled
    features, classifier = torch.nn.Linear(4, 3), torch.nn.Linear(3, 1)
    inputs = torch.randn(6, 4)
    grads = []
    for strength in (None, 2.0):
        features.zero_grad()
        classifier.zero_grad()
        h = features(inputs)
        classifier(h if strength is None else gradient_reversal(h, strength)).sum().backward()
        grads.append((features.weight.grad.clone(), classifier.weight.grad.clone()))
    torch.testing.assert_close(grads[1][0], -2.0 * grads[0][0])
    torch.testing.assert_close(grads[1][1], grads[0][1])
    x.grad = None
    gradient_reversal(x, 0.0).sum().backward()
    assert torch.count_nonzero(x.grad) == 0


def test_domain_strength_follows_ganins_ramp_or_stays_constant() -> None:
    o = make_options(CnnLstmOptions, {"domain_weight": "0.4"})
    assert domain_strength(o, 0.0) == 0.0
    assert domain_strength(o, 0.5) == pytest.approx(0.4 * (2 / (1 + math.exp(-5)) - 1))
    assert domain_strength(o, 1.0) == pytest.approx(0.4, rel=1e-4)
    ramp = [domain_strength(o, p) for p in np.linspace(0, 1, 11)]
    assert ramp == sorted(ramp)
    constant = make_options(CnnLstmOptions, {"domain_weight": "0.4", "domain_schedule": "constant"})
    assert domain_strength(constant, 0.0) == domain_strength(constant, 0.7) == 0.4


# --- a DANN training -----------------------------------------------------------------------


def test_card_and_curves_record_the_domain_adversarial_training(
    trained: dict[str, Path], target: Path
) -> None:
    model = trained["model"]
    card = json.loads(card_path(model).read_text())
    assert card["training_sample"] == f"mc.root, {target.name} (unlabelled target)"
    metrics = card["metrics"]
    assert metrics["steps"] == STEPS and metrics["onnx_parity_max_relative"] < PARITY_TOLERANCE
    assert metrics["options"]["target"] == str(target)
    domain = metrics["domain"]
    assert domain["target_sample"] == [target.name]
    assert domain["target_split_events"] == {"train": 560, "validation": 120, "test": 120}
    assert domain["weight"] == 0.5 and domain["schedule"] == "ganin"
    for key in ("test_accuracy", "validation_accuracy_best", "validation_accuracy_final"):
        assert 0.0 <= domain[key] <= 1.0
    curves = curves_of(model)
    steps = list(range(0, STEPS + 1, VALIDATE_EVERY))
    assert curves["validation_steps"] == steps
    for name in ("validation_loss", *cnn_lstm.DOMAIN_CURVES[2:]):
        assert len(curves[name]) == len(steps), name
    assert all(0.0 <= a <= 1.0 for a in curves["domain_validation_accuracy"])
    assert all(0.0 < loss < 5.0 for loss in curves["domain_validation_loss"])
    assert len(curves["domain_loss_steps"]) == len(curves["train_loss_steps"]) == STEPS
    ramp = curves["domain_lambda_steps"]
    assert ramp[0] == 0.0 and ramp == sorted(ramp) and 0.45 < ramp[-1] <= 0.5
    # model selection on the source validation loss, never on the domain scores
    assert curves["best_step"] > 0, curves["validation_loss"]  # the network did learn
    best = curves["validation_steps"].index(curves["best_step"])
    assert curves["validation_loss"][best] == min(curves["validation_loss"])


def test_onnx_equals_the_torch_regression_path(
    trained: dict[str, Path], images: np.ndarray
) -> None:
    card = json.loads(card_path(trained["model"]).read_text())
    network = build_network(Architecture(**card["metrics"]["architecture"]))
    network.load_state_dict(torch.load(trained["checkpoints"] / "best.pt", weights_only=True))
    with torch.no_grad():
        eager = network.eval()(torch.from_numpy(images)).numpy().astype(np.float64)
    onnx_energy = predictions(trained["model"], images)
    assert np.all(eager > 0)
    assert np.max(np.abs(onnx_energy - eager) / eager) < PARITY_TOLERANCE


def test_the_exported_graph_holds_no_domain_classifier(trained: dict[str, Path]) -> None:
    """Same initializers (count and size) as the plain network of the same architecture;
    the checkpoint shows the classifier existed."""
    card = json.loads(card_path(trained["model"]).read_text())
    architecture = Architecture(**card["metrics"]["architecture"])
    plain = onnx.load_from_string(export_onnx(torch, build_network(architecture), architecture))
    dann = onnx.load(str(trained["model"]))

    def sizes(model: onnx.ModelProto) -> list[int]:
        return sorted(int(np.prod(t.dims)) for t in model.graph.initializer)

    assert sizes(dann) == sizes(plain)
    assert not any("domain" in t.name for t in dann.graph.initializer)
    assert [i.name for i in dann.graph.input] == ["cell_images"]
    assert [o.name for o in dann.graph.output] == ["energy"]
    state = torch.load(trained["checkpoints"] / LAST, weights_only=True)
    classifier = sum(v.numel() for v in state["domain"]["model"].values())
    assert classifier == (16 + 1) * 8 + (8 + 1) * 8 + (8 + 1)  # hidden 16 -> 8 -> 8 -> 1
    assert card["metrics"]["parameters"] == sum(sizes(plain))


def test_target_beam_energies_are_never_used(
    source: Path, target: Path, trained: dict[str, Path], images: np.ndarray, tmp_path: Path
) -> None:
    """Permuting the target's beam energies gives the very same model and curves."""
    beam = np.asarray(read_events(target).beam_energy)
    permuted = np.random.default_rng(1).permutation(beam)[::-1] * 1.7
    assert not np.allclose(permuted, beam)
    relabelled = rewrite(target, tmp_path / target.name, beam_energy=permuted)
    again = train(source, relabelled, tmp_path / "again.onnx")
    np.testing.assert_array_equal(predictions(again, images), predictions(trained["model"], images))
    assert curves_of(again) == curves_of(trained["model"])


def test_resume_with_a_target_continues_where_the_checkpoint_stopped(
    source: Path, target: Path, trained: dict[str, Path], images: np.ndarray, tmp_path: Path
) -> None:
    """From step 20 (the target stream in its third epoch) to the uninterrupted model."""
    middle = trained["checkpoints"] / f"step-{VALIDATE_EVERY:07d}.pt"
    state = torch.load(middle, weights_only=True)
    assert state["position"]["step"] == VALIDATE_EVERY
    assert state["domain"]["position"] == {"epoch": 2, "batch": 4}  # 8 target batches an epoch
    folder = tmp_path / "resumed"
    copy_checkpoint(middle, folder)
    resumed = train(source, target, tmp_path / "resumed.onnx", checkpoint_dir=folder,
                    resume="true")  # fmt: skip
    np.testing.assert_array_equal(
        predictions(resumed, images), predictions(trained["model"], images)
    )
    assert curves_of(resumed) == curves_of(trained["model"])


def test_resume_refuses_a_checkpoint_of_another_mode(
    source: Path, trained: dict[str, Path], tmp_path: Path
) -> None:
    copy_checkpoint(trained["checkpoints"] / LAST, tmp_path / "other")
    with pytest.raises(ModelError, match="target_events: 560 then, 0 now"):
        direct(source, "", tmp_path / "x.onnx", checkpoint_dir=tmp_path / "other", resume="true")


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("domain_weight", "-0.1", "'domain_weight' of cnn_lstm must be >= 0, got -0.1"),
        ("domain_weight", "nan", "'domain_weight' of cnn_lstm must be >= 0, got nan"),
        ("domain_schedule", "linear", "unknown domain_schedule 'linear'; valid: ganin, constant"),
        ("domain_gamma", "0", "'domain_gamma' of cnn_lstm must be positive, got 0.0"),
        ("domain_hidden", "0", "'domain_hidden' of cnn_lstm must be at least 1, got 0"),
        ("target", " , ", "option 'target' of cnn_lstm names no file"),
    ],
)
def test_bad_domain_options_are_refused(option: str, value: str, message: str) -> None:
    with pytest.raises(MethodOptionsError, match=re.escape(message)):
        make_options(CnnLstmOptions, {option: value})


def test_target_files_are_split_at_commas_and_pathsep() -> None:
    o = make_options(CnnLstmOptions, {"target": f"a.root, b.root{os.pathsep}c.root,"})
    assert o.target_files == ("a.root", "b.root", "c.root")
    assert make_options(CnnLstmOptions, {}).target_files == ()


def test_bad_target_files_are_refused(source: Path, target: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.root"
    why = f"target file {missing} (option target) does not exist"
    with pytest.raises(InputFileError, match=re.escape(why)):
        direct(source, f"{target},{missing}", tmp_path / "x.onnx")
    mip = rewrite(target, tmp_path / "mip.root", stage="mip")
    with pytest.raises(StageMismatchError, match=re.escape(f"target file {mip} is at stage 'mip'")):
        direct(source, mip, tmp_path / "x.onnx")
    other = rewrite(target, tmp_path / "other.root", geometry="tile_24x24")
    with pytest.raises(GeometryMismatchError, match="is for geometry 'tile_24x24', the training"):
        direct(source, other, tmp_path / "x.onnx")
    with pytest.raises(ModelError, match=r"fewer than one batch \(batch_size=1024\)"):
        direct(source, target, tmp_path / "x.onnx", batch_size=1024, buffer_events=2048)
    assert not (tmp_path / "x.onnx").exists()
