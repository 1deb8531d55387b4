"""Model files and cards (calocoffea.models.onnxmodel), on small graphs built with onnx.helper."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calocoffea.exceptions import GeometryMismatchError, ModelError
from calocoffea.models.onnxmodel import (
    LoadedModel,
    ModelCard,
    ModelInput,
    ModelOutput,
    card_path,
    load_model,
    save_model,
)

N_FEATURES = 4
W = np.array([0.5, -1.25, 2.0, 0.75])
B = 3.0


def linear_model(
    n_features: int = N_FEATURES, dtype: int = TensorProto.FLOAT, batch: str | int = "batch"
) -> onnx.ModelProto:
    """y = X·w + b with a dynamic batch axis, output shape (batch, 1)."""
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    w = numpy_helper.from_array(W[:n_features].reshape(-1, 1).astype(np_dtype), "w")
    b = numpy_helper.from_array(np.array([B], dtype=np_dtype), "b")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["energy"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", dtype, [batch, n_features])],
        [helper.make_tensor_value_info("energy", dtype, [batch, 1])],
        initializer=[w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def make_card(geometry: str = "cepc_ahcal", **input_fields: Any) -> ModelCard:
    fields: dict[str, Any] = {"name": "x", "shape": (None, N_FEATURES), "dtype": "float32"}
    fields.update(input_fields)
    return ModelCard.for_geometry(
        geometry,
        name="linear",
        inputs=(ModelInput(**fields),),
        output=ModelOutput("energy", "reconstructed particle energy", "GeV"),
        training_sample="none: hand-made weights",
        training_command="python -c 'build the linear test model'",
        metrics={"resolution_10gev": 0.12},
    )


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return save_model(linear_model(), make_card(), tmp_path / "linear.onnx")


def features(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(10.0, 3.0, size=(n, N_FEATURES))


def test_round_trip(saved: Path) -> None:
    assert card_path(saved) == saved.with_name("linear.card.json")
    assert card_path(saved).exists()
    model = load_model(saved, geometry="cepc_ahcal")
    assert model.card == make_card().__class__.load(card_path(saved))
    assert model.card.inputs[0].shape == (None, N_FEATURES)
    assert set(model.card.versions) >= {"calocoffea", "onnx", "onnxruntime"}
    data = json.loads(card_path(saved).read_text())
    assert data["inputs"][0]["shape"] == [None, N_FEATURES]
    assert data["output"]["unit"] == "GeV"
    assert ModelCard.from_dict(data) == model.card


def test_predict_matches_numpy(saved: Path) -> None:
    model = load_model(saved)
    assert model._session is None  # lazy
    x = features(1000)
    y = model.predict(x)
    assert y.dtype == np.float64 and y.shape == (1000,)
    expected = x.astype(np.float32).astype(np.float64) @ W + B
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    assert model._session is not None


def test_normalisation_applied(tmp_path: Path) -> None:
    mean, scale = (1.0, 2.0, 3.0, 4.0), (2.0, 0.5, 1.0, 4.0)
    # float64 graph: the check is of the normalisation, not of float32 rounding near zero
    card = make_card(dtype="float64", mean=mean, scale=scale)
    path = save_model(linear_model(dtype=TensorProto.DOUBLE), card, tmp_path / "n.onnx")
    model = load_model(path)
    assert model.card.inputs[0].mean == mean
    x = features(200)
    expected = ((x - mean) / np.asarray(scale)) @ W + B
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-6)


def test_batches_equal_one_pass(saved: Path) -> None:
    model = load_model(saved, batch_size=7)
    x = features(1001)
    np.testing.assert_array_equal(model.predict(x), model.predict(x, batch_size=5000))
    np.testing.assert_array_equal(model.predict(x, batch_size=1), model.predict(x))


def test_empty_input_gives_empty_output(saved: Path) -> None:
    model = load_model(saved)
    y = model.predict(np.zeros((0, N_FEATURES)))
    assert y.shape == (0,) and y.dtype == np.float64
    assert model._session is None


def test_float64_graph(tmp_path: Path) -> None:
    path = save_model(
        linear_model(dtype=TensorProto.DOUBLE), make_card(dtype="float64"), tmp_path / "d.onnx"
    )
    x = features(50)
    np.testing.assert_allclose(load_model(path).predict(x), x @ W + B, rtol=1e-12)


def test_pickle_drops_session(saved: Path) -> None:
    model = load_model(saved, intra_op_threads=1, graph_optimization="basic")
    x = features(20)
    before = model.predict(x)
    copy = pickle.loads(pickle.dumps(model))
    assert isinstance(copy, LoadedModel) and copy._session is None
    assert model._session is not None  # the original keeps its session
    np.testing.assert_array_equal(copy.predict(x), before)


def test_inference_does_not_import_torch(saved: Path) -> None:
    script = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "import numpy as np\n"
        "from calocoffea.models.onnxmodel import load_model\n"
        f"print(load_model({str(saved)!r}).predict(np.ones((2, 4)))[0])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == pytest.approx(W.sum() + B)


# --- bad input -----------------------------------------------------------------------------


def test_other_geometry_is_refused(saved: Path) -> None:
    with pytest.raises(GeometryMismatchError, match=r"'cepc_ahcal'.*'hgcal_ee'.*retrain"):
        load_model(saved, geometry="hgcal_ee")


def test_card_not_matching_graph_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"axis 1 is 4 in the graph, 5 in the card"):
        save_model(linear_model(), make_card(shape=(None, 5)), tmp_path / "a.onnx")
    with pytest.raises(ModelError, match=r"float32 in the graph, float64 in the card"):
        save_model(linear_model(), make_card(dtype="float64"), tmp_path / "b.onnx")
    with pytest.raises(ModelError, match=r"inputs are \['x'\] in the graph, \['hits'\]"):
        save_model(linear_model(), make_card(name="hits"), tmp_path / "c.onnx")
    with pytest.raises(ModelError, match="rank 2 in the graph, 3 in the card"):
        save_model(linear_model(), make_card(shape=(None, 4, 1)), tmp_path / "d.onnx")
    with pytest.raises(ModelError, match="without a dynamic batch axis"):
        save_model(linear_model(batch=8), make_card(), tmp_path / "e.onnx")
    assert list(tmp_path.iterdir()) == []


def test_edited_card_is_refused_on_load(saved: Path) -> None:
    data = json.loads(card_path(saved).read_text())
    data["inputs"][0]["shape"] = [None, 6]
    card_path(saved).write_text(json.dumps(data))
    with pytest.raises(ModelError, match=r"linear\.onnx.*axis 1 is 4 in the graph, 6"):
        load_model(saved)


def test_malformed_card_names_file_and_field(saved: Path) -> None:
    data = json.loads(card_path(saved).read_text())
    data["inputs"][0]["shape"] = [4, 4]
    card_path(saved).write_text(json.dumps(data))
    with pytest.raises(ModelError, match=r"linear\.card\.json: field 'inputs\[0\]'.*batch axis"):
        load_model(saved)
    data["inputs"][0]["shape"] = [None, 4]
    del data["geometry_hash"]
    card_path(saved).write_text(json.dumps(data))
    with pytest.raises(ModelError, match=r"linear\.card\.json: missing field 'geometry_hash'"):
        load_model(saved)


def test_corrupt_onnx_is_refused(saved: Path) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"linear\.onnx.*(truncated or corrupt|onnx\.checker)"):
        load_model(saved)
    saved.write_bytes(b"\xff\x00 not a protobuf at all" * 3)
    with pytest.raises(ModelError, match=r"linear\.onnx"):
        load_model(saved)


def test_missing_card_is_refused(saved: Path) -> None:
    card_path(saved).unlink()
    with pytest.raises(ModelError, match=r"linear\.card\.json does not exist.*save_model"):
        load_model(saved)


def test_external_data_is_refused(tmp_path: Path) -> None:
    model = linear_model()
    onnx.save_model(
        model,
        tmp_path / "ext.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="ext.onnx.data",
        size_threshold=0,
    )
    external = onnx.load_model(tmp_path / "ext.onnx", load_external_data=False)
    with pytest.raises(ModelError, match=r"external data.*external_data=False"):
        save_model(external, make_card(), tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
    assert not card_path(tmp_path / "out.onnx").exists()


def test_non_finite_features_are_refused(saved: Path) -> None:
    x = features(10)
    x[3, 1] = np.nan
    x[7, 0] = np.inf
    with pytest.raises(ModelError, match=r"2 non-finite feature values.*first rows \[3, 7\]"):
        load_model(saved).predict(x)


def test_wrong_feature_shape_is_refused(saved: Path) -> None:
    with pytest.raises(ModelError, match=r"shape \(10, 3\), expected \(n, 4\)"):
        load_model(saved).predict(np.ones((10, 3)))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"dtype": "float"}, "unknown dtype 'float'"),
        ({"mean": (0.0,) * 4}, "both mean and scale"),
        ({"mean": (0.0,) * 3, "scale": (1.0,) * 3}, "mean has 3 values"),
        ({"mean": (0.0,) * 4, "scale": (1.0, 0.0, 1.0, 1.0)}, "scale has zeros"),
    ],
)
def test_bad_card_inputs(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        make_card(**fields)


def test_bad_options(saved: Path) -> None:
    with pytest.raises(ModelError, match="did you mean 'all'"):
        load_model(saved, graph_optimization="All")
    with pytest.raises(ModelError, match="batch_size must be a positive integer"):
        load_model(saved).predict(features(3), batch_size=0)
    with pytest.raises(ModelError, match=r"must end in \.onnx"):
        save_model(linear_model(), make_card(), saved.with_suffix(".bin"))
