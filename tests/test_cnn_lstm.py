"""The ``cnn_lstm`` reconstruction (seed 000): training through the CLI, the model card and
curves, ONNX parity with torch, determinism, checkpoint resume, inference without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calocoffea.cli.main import main
from calocoffea.exceptions import MethodOptionsError, ModelError
from calocoffea.geometry import get_geometry
from calocoffea.methods import make_options, reconstruction_method
from calocoffea.models.cnn_lstm import (
    LAST,
    PARITY_TOLERANCE,
    Architecture,
    CnnLstmOptions,
    Trainer,
    build_network,
    copy_checkpoint,
    make_splits,
    torch_settings,
)
from calocoffea.models.inputs import build_inputs
from calocoffea.models.onnxmodel import card_path, load_model
from calocoffea.models.training import batch_hits, prepare_shards
from calocoffea.samples import calibrated_sample
from calocoffea.simulation.beam import Beam

# calocoffea.models.cnn_lstm imports torch only when it trains; these tests train.
torch = pytest.importorskip("torch", reason="cnn_lstm trains with torch (the train extra)")


GEOMETRY = "cepc_ahcal"
SEED = 3
STEPS = 120
VALIDATE_EVERY = 30
#: A tiny network: training takes a few seconds, what is tested is the machinery.
TINY = {
    "steps": STEPS,
    "batch_size": 64,
    "channels": 4,
    "hidden": 16,
    "validate_every": VALIDATE_EVERY,
    "learning_rate": 3e-3,
    "threads": 1,
}


def options(**extra: Any) -> list[str]:
    pairs = TINY | extra
    return [item for k, v in pairs.items() for item in ("--option", f"{k}={v}")]


def train(files: list[Path], output: Path, seed: int = SEED, **extra: Any) -> Path:
    argv = ["train", "--model", "cnn_lstm", *map(str, files), "-o", str(output)]
    argv += ["--seed", str(seed), *options(**extra)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["calocoffea", *argv])  # the card records sys.argv
        assert main(argv) == 0
    return output


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2500 calibrated electrons, trapezoidal 1-120 GeV spectrum (seed 000's training set)."""
    folder = tmp_path_factory.mktemp("cnn_lstm_sample")
    beam = Beam(energy_range_gev=(1.0, 120.0), spectrum="trapezoid")
    return calibrated_sample(GEOMETRY, "e-", beam, 2500, 11, folder / "electrons.root")


@pytest.fixture(scope="module")
def trained(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One training, keeping a checkpoint per validation."""
    folder = tmp_path_factory.mktemp("cnn_lstm_model")
    checkpoints = folder / "checkpoints"
    model = train([sample], folder / "model.onnx", checkpoint_dir=checkpoints,
                  keep_checkpoints="true")  # fmt: skip
    return {"model": model, "checkpoints": checkpoints, "folder": folder}


@pytest.fixture(scope="module")
def images(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Cell images and beam energies of the first 500 events of the sample."""
    loader = prepare_shards([sample], tmp_path_factory.mktemp("shards"), batch_showers=500)
    batch = next(loader.epoch(0, shuffle=False))
    shapes = {"cell_images": (None, 40, 18, 18)}
    inputs = build_inputs(shapes, batch_hits(batch), get_geometry(GEOMETRY))
    return {"images": inputs["cell_images"], "beam": batch.events["beam_energy"]}


def predictions(model: Path, images: dict[str, np.ndarray]) -> np.ndarray:
    return load_model(model, geometry=GEOMETRY).predict(images["images"])


# --- the model file, its card and curves -------------------------------------------------


def test_card_and_curves(trained: dict[str, Path]) -> None:
    model = trained["model"]
    card = json.loads(card_path(model).read_text())
    assert card["name"] == "cnn_lstm" and card["geometry"] == GEOMETRY
    assert card["inputs"] == [
        {"name": "cell_images", "shape": [None, 40, 18, 18], "dtype": "float32",
         "mean": None, "scale": None}
    ]  # fmt: skip
    assert card["output"]["name"] == "energy" and card["output"]["unit"] == "GeV"
    assert card["training_command"].startswith("calocoffea train --model cnn_lstm ")
    assert "torch" in card["versions"]
    metrics = card["metrics"]
    assert metrics["steps"] == STEPS and metrics["stopped"] == "steps"
    assert metrics["split_events"] == {"train": 1750, "validation": 375, "test": 375}
    assert metrics["onnx_parity_max_relative"] < PARITY_TOLERANCE
    for part in (metrics, metrics["sum_baseline"]):
        assert part["events"] == 375 and len(part["bins"]) == 8
        assert 0.9 < part["mean_response"] < 1.1
    assert model.stat().st_size < 2_000_000
    curves = json.loads(model.with_suffix(".curves.json").read_text())
    assert len(curves["train_loss_steps"]) == len(curves["learning_rate_steps"]) == STEPS
    assert curves["validation_steps"] == list(range(0, STEPS + 1, VALIDATE_EVERY))
    assert len(curves["validation_loss"]) == len(curves["validation_steps"])
    assert curves["learning_rate_steps"][-1] == pytest.approx(0.0, abs=1e-9)  # cosine to 0
    assert curves["best_step"] == metrics["best_step"]


def test_training_lowers_the_loss(sample: Path, tmp_path: Path) -> None:
    """From the uncorrected calibrated sum (g = 0: response ~0.87, ~13 % low) the network
    must learn the energy scale within 60 steps: losses fall below half their start."""
    o = make_options(CnnLstmOptions, TINY | {"steps": 60, "validate_every": 60})
    loader = prepare_shards([sample], tmp_path / "shards", batch_showers=o.batch_size, seed=SEED)
    splits = make_splits(loader, SEED, o)
    with torch_settings(torch, SEED, o.threads, torch.device("cpu")):
        trainer = Trainer(torch, splits, get_geometry(GEOMETRY), o, seed=SEED,
                          checkpoints=tmp_path / "checkpoints", log_offset=0.0)  # fmt: skip
        trainer.run()
    train_loss = trainer.curves["train_loss_steps"]
    initial, final = trainer.curves["validation_loss"]
    assert trainer.curves["validation_steps"] == [0, 60]
    assert np.mean(train_loss[-10:]) < 0.5 * np.mean(train_loss[:3])
    assert final < 0.5 * initial


def test_onnx_matches_torch_from_the_best_checkpoint(
    trained: dict[str, Path], images: dict[str, np.ndarray]
) -> None:
    card = json.loads(card_path(trained["model"]).read_text())
    state = torch.load(trained["checkpoints"] / "best.pt", weights_only=True)
    network = build_network(Architecture(**card["metrics"]["architecture"]))
    network.load_state_dict(state)
    with torch.no_grad():
        eager = network.eval()(torch.from_numpy(images["images"])).numpy().astype(np.float64)
    onnx = predictions(trained["model"], images)
    assert np.all(np.isfinite(onnx)) and np.all(eager > 0)
    assert np.max(np.abs(onnx - eager) / eager) < PARITY_TOLERANCE


# --- determinism and resuming ----------------------------------------------------------------


def test_same_seed_gives_the_same_model(
    sample: Path, trained: dict[str, Path], images: dict[str, np.ndarray], tmp_path: Path
) -> None:
    again = train([sample], tmp_path / "again.onnx")
    np.testing.assert_array_equal(predictions(again, images), predictions(trained["model"], images))


def test_resume_continues_where_the_checkpoint_stopped(
    sample: Path, trained: dict[str, Path], images: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """Resuming from the step-60 checkpoint gives the model of the uninterrupted run."""
    middle = trained["checkpoints"] / f"step-{2 * VALIDATE_EVERY:07d}.pt"
    state = torch.load(middle, weights_only=True)
    assert state["position"]["step"] == 2 * VALIDATE_EVERY
    folder = tmp_path / "resumed"
    copy_checkpoint(middle, folder)
    resumed = train([sample], tmp_path / "resumed.onnx", checkpoint_dir=folder, resume="true")
    np.testing.assert_array_equal(
        predictions(resumed, images), predictions(trained["model"], images)
    )
    curves = [json.loads(p.with_suffix(".curves.json").read_text())
              for p in (resumed, trained["model"])]  # fmt: skip
    assert curves[0] == curves[1]


def test_resume_refuses_another_training(
    sample: Path, trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy_checkpoint(trained["checkpoints"] / LAST, tmp_path / "other")
    argv = ["train", "--model", "cnn_lstm", str(sample), "-o", str(tmp_path / "x.onnx")]
    extra = options(hidden=8, checkpoint_dir=tmp_path / "other", resume="true")
    assert main([*argv, "--seed", str(SEED), *extra]) == 2
    assert "hidden: 16 then, 8 now" in capsys.readouterr().err
    assert main([*argv, *options(checkpoint_dir=tmp_path / "none", resume="true")]) == 2
    assert "last.pt does not exist" in capsys.readouterr().err


def test_options_are_checked() -> None:
    with pytest.raises(MethodOptionsError, match="unknown loss 'l3'; valid: relative"):
        make_options(CnnLstmOptions, {"loss": "l3"})
    with pytest.raises(MethodOptionsError, match="resume=true needs checkpoint_dir"):
        make_options(CnnLstmOptions, {"resume": "true"})
    with pytest.raises(MethodOptionsError, match="'channels' of cnn_lstm must be at least 1"):
        make_options(CnnLstmOptions, {"channels": "0"})


def test_other_geometries_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="one square-grid section"):
        Architecture.of(get_geometry("calice_siw_ecal_ahcal"), CnnLstmOptions())


# --- inference ---------------------------------------------------------------------------


def test_reconstruction_never_imports_torch(
    sample: Path, trained: dict[str, Path], images: dict[str, np.ndarray]
) -> None:
    """reconstruct_files with the plugin in a process where `import torch` fails; importing
    the training module does not import torch either."""
    script = (
        "import sys\n"
        "class NoTorch:\n"  # any `import torch` (or a submodule) now fails
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ImportError(f'{name} is blocked: inference must not import torch')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "import json\n"
        "import calocoffea.models.cnn_lstm\n"  # the training module imports torch lazily
        "from calocoffea.methods import reconstruction_method\n"
        "from calocoffea.runner import RunOptions, reconstruct_files\n"
        f"method = reconstruction_method('cnn_lstm', {GEOMETRY!r}, model={str(trained['model'])!r},"
        " batch_size=128)\n"
        f"result = reconstruct_files([{str(sample)!r}], method,"
        " run_options=RunOptions(chunksize=700))\n"
        "assert not any(name.split('.')[0] == 'torch' for name in sys.modules)\n"
        "print(json.dumps([float(e) for e in result.columns['energy'][:500]]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    energy = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(energy, predictions(trained["model"], images), rtol=1e-6)


def test_plugin_without_a_model_says_how_to_train_one() -> None:
    """cepc_ahcal has a shipped model; tile_24x24 (one square grid too) has none."""
    with pytest.raises(ModelError, match="calocoffea train --model cnn_lstm"):
        reconstruction_method("cnn_lstm", "tile_24x24")


def test_the_network_pads_layers_that_do_not_fill_a_superlayer() -> None:
    torch.manual_seed(0)
    architecture = Architecture(40, 18, 18, layers_per_superlayer=3, channels=2, hidden=4,
                                cell_scale_gev=0.02)  # fmt: skip
    network = build_network(architecture, log_offset=0.1)
    assert network.n_superlayers == 14 and network.padding == 2
    x = torch.zeros(3, 40, 18, 18)
    x[:, :, 9, 9] = 0.5
    with torch.no_grad():
        energy = network(x)
    np.testing.assert_allclose(energy.numpy(), 20.0 * np.exp(0.1), rtol=1e-6)


def test_checkpoint_folder_is_left_for_resuming(trained: dict[str, Path]) -> None:
    names = sorted(p.name for p in trained["checkpoints"].iterdir())
    steps = [f"step-{s:07d}.pt" for s in range(0, STEPS + 1, VALIDATE_EVERY)]
    assert names == sorted(["best.pt", "last.pt", *steps])
    for name in names:
        assert isinstance(torch.load(trained["checkpoints"] / name, weights_only=True), dict)
