"""The ONNX reconstruction path (calocoffea.models.reconstruction, the reconstruct processor
and `calocoffea reconstruct`), on small graphs built with onnx.helper."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import onnx
import pytest
import uproot
from onnx import TensorProto, helper, numpy_helper

from calocoffea.cli.main import main
from calocoffea.exceptions import GeometryMismatchError, ModelError
from calocoffea.geometry import get_geometry
from calocoffea.methods import reconstruction_method
from calocoffea.models.inputs import FlatHits, build_inputs
from calocoffea.models.onnxmodel import ModelInput, current_versions
from calocoffea.models.reconstruction import aligned_batches, shipped_model
from calocoffea.models.training import model_input, write_model
from calocoffea.runner import RunOptions, reconstruct_files
from calocoffea.samples import calibrated_sample
from calocoffea.simulation.beam import Beam

GEOMETRY = "cepc_ahcal"
ENERGIES = (10.0, 40.0)
N = 150


def _model(name: str, n_in: int, hidden: int = 0, seed: int = 0) -> onnx.ModelProto:
    """energy = ones · x (hidden = 0) or a random two-layer ReLU network of x."""
    rng = np.random.default_rng(seed)
    x = helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", n_in])
    y = helper.make_tensor_value_info("energy", TensorProto.FLOAT, ["batch", 1])
    if hidden == 0:
        w = numpy_helper.from_array(np.ones((n_in, 1), np.float32), "w")
        nodes = [helper.make_node("MatMul", [name, "w"], ["energy"])]
        init = [w]
    else:
        w1 = numpy_helper.from_array(rng.normal(0, 0.3, (n_in, hidden)).astype(np.float32), "w1")
        w2 = numpy_helper.from_array(rng.normal(0, 0.3, (hidden, 1)).astype(np.float32), "w2")
        nodes = [
            helper.make_node("MatMul", [name, "w1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["energy"]),
        ]
        init = [w1, w2]
    graph = helper.make_graph(nodes, "test", [x], [y], initializer=init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _save(path: Path, name: str, geometry: str = GEOMETRY, hidden: int = 0, **kw: int) -> Path:
    geo = get_geometry(geometry)
    item = model_input(name, geo, **kw)
    n_in = int(np.prod(item.shape[1:]))
    return write_model(
        _model(name, n_in, hidden), path, name=path.stem, geometry=geo, inputs=[item],
        output_name="energy", training_sample=["none"], command="built by the test",
        metrics={}, versions=current_versions(),
    )  # fmt: skip


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("reco")
    return calibrated_sample(GEOMETRY, "e-", Beam(ENERGIES, size_mm=20.0), N, 5, work / "e.root")


@pytest.fixture(scope="module")
def sum_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save(tmp_path_factory.mktemp("m") / "layer_sum.onnx", "layer_sums")


@pytest.fixture(scope="module")
def mlp_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save(tmp_path_factory.mktemp("m") / "mlp.onnx", "layer_sums_and_shapes", hidden=16)


@pytest.mark.parametrize(
    ("start", "n", "size", "expected"),
    [
        (0, 10, 4, [(0, 4), (4, 8), (8, 10)]),
        (6, 10, 4, [(0, 2), (2, 6), (6, 10)]),
        (8, 4, 4, [(0, 4)]),
        (9, 2, 100, [(0, 2)]),
        (3, 0, 4, []),
    ],
)
def test_batches_are_cut_at_global_multiples(start, n, size, expected) -> None:
    assert aligned_batches(start, n, size) == expected


def test_an_onnx_layer_sum_equals_the_sum_plugin(sample: Path, sum_model: Path) -> None:
    onnx_sum = reconstruct_files([sample], reconstruction_method("onnx", GEOMETRY,
                                                                 model=str(sum_model)))  # fmt: skip
    plain = reconstruct_files([sample], reconstruction_method("sum", GEOMETRY))
    a, b = onnx_sum.columns, plain.columns
    assert np.array_equal(a["beam_energy"], b["beam_energy"])
    assert np.array_equal(a["entry"], np.tile(np.arange(len(ENERGIES) * N), 1))
    # float32 inputs and sum: relative rounding of order 1e-7 per term
    np.testing.assert_allclose(a["energy"], b["energy"], rtol=2e-6)
    h = onnx_sum.histograms
    assert h["energy"].sum() == h["response"].sum() == len(ENERGIES) * N
    assert [ax.name for ax in h["response"].axes] == ["method", "beam_energy_gev", "response"]


def test_results_do_not_depend_on_chunking(sample: Path, mlp_model: Path) -> None:
    method = reconstruction_method("onnx", GEOMETRY, model=str(mlp_model), batch_size=64)
    runs = [
        reconstruct_files([sample], method, run_options=RunOptions(chunksize=size)).columns
        for size in (300, 37)
    ]
    assert np.array_equal(runs[0]["energy"], runs[1]["energy"])


def test_dask_gives_the_iterative_result(sample: Path, mlp_model: Path) -> None:
    """Two workers of a Dask LocalCluster, each with its own lazily made session."""
    method = reconstruction_method("onnx", GEOMETRY, model=str(mlp_model), batch_size=64)
    local = reconstruct_files([sample], method, run_options=RunOptions(chunksize=70))
    dask = reconstruct_files(
        [sample], method, run_options=RunOptions(executor="dask", workers=2, chunksize=70)
    )
    for name in ("entry", "beam_energy", "energy", "clipped_hits"):
        assert np.array_equal(local.columns[name], dask.columns[name])
    for name, h in local.histograms.items():
        assert np.array_equal(h.values(flow=True), dask.histograms[name].values(flow=True))


def test_the_method_pickles_without_a_session(sample: Path, sum_model: Path) -> None:
    method = reconstruction_method("onnx", GEOMETRY, model=str(sum_model))
    hits = FlatHits.from_events(__import__("calocoffea.io", fromlist=["x"]).read_events(sample))
    before = method.predict_hits(hits)
    assert method.model._session is not None
    clone = pickle.loads(pickle.dumps(method))
    assert clone.model._session is None
    assert np.array_equal(clone.predict_hits(hits), before)


def test_an_empty_chunk_gives_an_empty_result(sum_model: Path) -> None:
    method = reconstruction_method("onnx", GEOMETRY, model=str(sum_model))
    empty = FlatHits(*(np.zeros(0, dtype=t) for t in (np.int64,) * 4 + (np.float64,) * 3))
    out = method.predict_hits(empty, entry_start=100)
    assert out.shape == (0,) and out.dtype == np.float64
    assert method.model._session is None  # nothing ran


def test_events_without_hits_give_the_model_of_zero_inputs(sum_model: Path) -> None:
    method = reconstruction_method("onnx", GEOMETRY, model=str(sum_model))
    hits = FlatHits(np.array([0, 2, 0]), np.array([1, 2]), np.array([3, 4]), np.array([5, 6]),
                    np.zeros(2), np.zeros(2), np.array([1.5, 2.5]))  # fmt: skip
    np.testing.assert_allclose(method.predict_hits(hits), [0.0, 4.0, 0.0])


def test_cli_writes_tree_histograms_and_provenance(
    sample: Path, sum_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "reco.root"
    assert main(["reconstruct", str(sample), "--method", str(sum_model), "-o", str(out)]) == 0
    with uproot.open(out) as f:
        tree = f["reconstruction"].arrays(library="np")
        assert set(tree) == {"file", "entry", "beam_energy", "energy", "clipped_hits"}
        assert tree["energy"].size == len(ENERGIES) * N and np.all(tree["file"] == 0)
        assert f["energy"].values().sum() == len(ENERGIES) * N
        assert list(f["energy"].axis(0).labels()) == ["layer_sum"]
        assert str(sample.absolute()) in str(f["provenance"])
    # the output cannot be an input
    assert main(["reconstruct", str(sample), "-o", str(sample)]) == 2


# --- bad input ---------------------------------------------------------------------------


def test_a_model_for_another_geometry_is_refused(tmp_path: Path) -> None:
    path = _save(tmp_path / "tile.onnx", "layer_sums", geometry="tile_24x24")
    with pytest.raises(GeometryMismatchError, match=r"trained for geometry 'tile_24x24'"):
        reconstruction_method("onnx", GEOMETRY, model=str(path))


def test_inputs_without_a_builder_are_refused(tmp_path: Path) -> None:
    geo = get_geometry(GEOMETRY)
    item = ModelInput("layer_energies", (None, 40), "float32")
    path = write_model(
        _model("layer_energies", 40), tmp_path / "odd.onnx", name="odd", geometry=geo,
        inputs=[item], output_name="energy", training_sample=["none"], command="test",
        metrics={}, versions=current_versions(),
    )  # fmt: skip
    method = reconstruction_method("onnx", GEOMETRY, model=str(path))
    hits = FlatHits(np.array([1]), np.array([0]), np.array([0]), np.array([0]),
                    np.zeros(1), np.zeros(1), np.ones(1))  # fmt: skip
    with pytest.raises(ModelError, match=r"'layer_energies' has no feature builder.*layer_sums"):
        method.predict_hits(hits)


def test_inputs_of_the_wrong_size_are_refused(tmp_path: Path) -> None:
    """A layer-sum model made for 30 layers on a 40-layer geometry."""
    geo = get_geometry(GEOMETRY)
    item = ModelInput("layer_sums", (None, 30), "float32")
    path = write_model(
        _model("layer_sums", 30), tmp_path / "short.onnx", name="short", geometry=geo,
        inputs=[item], output_name="energy", training_sample=["none"], command="test",
        metrics={}, versions=current_versions(),
    )  # fmt: skip
    method = reconstruction_method("onnx", GEOMETRY, model=str(path))
    hits = FlatHits(np.array([1]), np.array([0]), np.array([0]), np.array([0]),
                    np.zeros(1), np.zeros(1), np.ones(1))  # fmt: skip
    with pytest.raises(ModelError, match=r"shape \(1, 40\), expected \(n, 30\)"):
        method.predict_hits(hits)


def test_a_corrupt_onnx_file_is_refused(sum_model: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(sum_model.read_bytes()[: len(sum_model.read_bytes()) // 2])
    broken.with_suffix(".card.json").write_text(sum_model.with_suffix(".card.json").read_text())
    with pytest.raises(ModelError, match=r"broken.onnx is not a readable ONNX file"):
        reconstruction_method("onnx", GEOMETRY, model=str(broken))


def test_the_onnx_method_needs_a_model_file() -> None:
    with pytest.raises(ModelError, match=r"needs a model file: --option model=PATH"):
        reconstruction_method("onnx", GEOMETRY)


def test_a_missing_shipped_model_says_how_to_train_one() -> None:
    with pytest.raises(ModelError, match=r"calocoffea train --model gbr"):
        shipped_model("gbr", "hgcal_ee")


def test_cell_images_need_a_single_square_grid_section() -> None:
    geo = get_geometry("calice_siw_ecal_ahcal")
    hits = FlatHits(np.array([1]), np.array([0]), np.array([0]), np.array([0]),
                    np.zeros(1), np.zeros(1), np.ones(1))  # fmt: skip
    with pytest.raises(ModelError, match=r"one square-grid section"):
        build_inputs({"cell_images": (None, 1, 1, 1)}, hits, geo)


@pytest.mark.parametrize("name", ["gbr", "cnn_lstm", "software_compensation"])
def test_shipped_models_give_identical_results_on_dask(sample: Path, name: str) -> None:
    """The shipped model of each learned reconstruction: iterative (one chunk) and a Dask
    LocalCluster with 2 workers and small chunks agree bit for bit."""
    method = reconstruction_method(name, GEOMETRY, batch_size=128)
    local = reconstruct_files([sample], method)
    dask = reconstruct_files(
        [sample], method, run_options=RunOptions(executor="dask", workers=2, chunksize=90)
    )
    assert np.array_equal(local.columns["energy"], dask.columns["energy"])
    assert np.all(np.isfinite(local.columns["energy"]))
    card = method.model.card
    assert card.geometry == GEOMETRY
    # the exact retraining command: `calocoffea train` or the reproduction that ships it
    assert card.training_command.startswith(("calocoffea train", "python reproduce/"))
