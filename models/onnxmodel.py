"""Model files: one self-contained ONNX file plus its model card, and their inference.

What to use when:

- :class:`ModelCard` -- what a model expects and means: inputs (names, shapes with the
  dynamic batch axis, dtype, normalisation), output (name, meaning, unit), geometry and its
  hash, training sample and exact command, test metrics, versions, creation date.
- :func:`save_model` -- write ``model.onnx`` and its card ``model.card.json`` after checking
  the graph (``onnx.checker``, no external data) against the card.
- :func:`load_model` -- read both back, check the geometry hash and the input signature;
  gives a :class:`LoadedModel` whose :meth:`~LoadedModel.predict` runs onnxruntime.

Naming: the card of ``path/name.onnx`` is ``path/name.card.json`` (:func:`card_path`).
The batch axis is the first axis of every input and of the output; in the card's shapes it
is written ``null`` (JSON) / ``None`` (Python). Normalisation is per feature along the last
axis: ``(x - mean) / scale``, applied by :meth:`LoadedModel.predict` before the graph runs.

Inference never imports torch; onnxruntime is imported when the first session is created.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import external_data_helper

from calocoffea import __version__
from calocoffea.exceptions import GeometryMismatchError, ModelError, did_you_mean
from calocoffea.geometry import Geometry, get_geometry
from calocoffea.io import atomic_write

_FORMAT = "calocoffea-model-card"
_FORMAT_VERSION = 1
#: Input dtypes a card may declare (numpy names; ONNX element types of the same name).
DTYPES = ("float16", "float32", "float64", "int32", "int64")
#: onnxruntime graph optimisation levels by name.
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
#: Versions every card records; ``torch``/``sklearn`` are added when a trainer gives them.
REQUIRED_VERSIONS = ("calocoffea", "onnx", "onnxruntime")
#: Rows per onnxruntime call in :meth:`LoadedModel.predict` unless told otherwise.
DEFAULT_BATCH_SIZE = 65536


def card_path(model_path: str | Path) -> Path:
    """The model card beside an ONNX file: ``model.onnx`` -> ``model.card.json``."""
    return Path(model_path).with_suffix(".card.json")


def current_versions(**extra: str) -> dict[str, str]:
    """calocoffea, onnx and onnxruntime versions here, plus ``extra`` (e.g. ``torch=...``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ort_version = version("onnxruntime")
    except PackageNotFoundError:  # pragma: no cover - onnxruntime is a core dependency
        ort_version = "unknown"
    return {"calocoffea": __version__, "onnx": onnx.__version__, "onnxruntime": ort_version} | {
        k: str(v) for k, v in extra.items()
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ModelInput:
    """One graph input: ``shape`` has ``None`` for the batch axis (first) and sizes after it;
    ``mean``/``scale`` (one number per feature of the last axis) or neither."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"
    mean: tuple[float, ...] | None = None
    scale: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        where = f"input {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ModelError(f"an input name must be a non-empty string, got {self.name!r}")
        shape = tuple(self.shape)
        if not shape or shape[0] is not None:
            raise ModelError(
                f"{where}: shape {list(shape)} must start with the batch axis written None "
                "(null in JSON), e.g. [None, 38]"
            )
        if any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in shape[1:]):
            raise ModelError(f"{where}: shape {list(shape)} must have positive sizes after None")
        object.__setattr__(self, "shape", shape)
        if self.dtype not in DTYPES:
            raise ModelError(
                f"{where}: unknown dtype {self.dtype!r}{did_you_mean(self.dtype, DTYPES)}; "
                f"use one of {', '.join(DTYPES)}"
            )
        if (self.mean is None) != (self.scale is None):
            raise ModelError(f"{where}: give both mean and scale for normalisation, or neither")
        if self.mean is not None and self.scale is not None:
            n = shape[-1] if len(shape) > 1 else 1
            for label, values in (("mean", self.mean), ("scale", self.scale)):
                numbers = tuple(float(v) for v in values)
                if len(numbers) != n:
                    raise ModelError(
                        f"{where}: {label} has {len(numbers)} values but the last axis of "
                        f"shape {list(shape)} has {n} features"
                    )
                if not all(math.isfinite(v) for v in numbers):
                    raise ModelError(f"{where}: {label} has non-finite values")
                object.__setattr__(self, label, numbers)
            if any(v == 0.0 for v in self.scale):
                raise ModelError(f"{where}: scale has zeros (a constant feature); use 1 there")

    def normalise(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """``(x - mean) / scale`` along the last axis, or ``x`` without normalisation."""
        if self.mean is None or self.scale is None:
            return x
        return (x - np.asarray(self.mean)) / np.asarray(self.scale)


@dataclass(frozen=True)
class ModelOutput:
    """The graph output the model card describes: its name, meaning and unit."""

    name: str
    meaning: str
    unit: str

    def __post_init__(self) -> None:
        for label in ("name", "meaning", "unit"):
            value = getattr(self, label)
            if not isinstance(value, str) or not value:
                raise ModelError(f"output {label} must be a non-empty string, got {value!r}")


@dataclass(frozen=True)
class ModelCard:
    """What a model file expects and means; saved as JSON beside it (:func:`card_path`)."""

    name: str
    inputs: tuple[ModelInput, ...]
    output: ModelOutput
    geometry: str
    geometry_hash: str
    training_sample: str
    training_command: str
    metrics: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=current_versions)
    created: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if not self.inputs:
            raise ModelError(f"model card {self.name!r}: a model needs at least one input")
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ModelError(f"model card {self.name!r}: repeated input names {names}")
        for label in ("name", "geometry", "geometry_hash", "training_sample", "training_command"):
            value = getattr(self, label)
            if not isinstance(value, str) or not value:
                raise ModelError(f"model card field {label!r} must be a non-empty string")
        missing = [k for k in REQUIRED_VERSIONS if k not in self.versions]
        if missing:
            raise ModelError(
                f"model card {self.name!r}: versions lack {missing}; "
                "build them with current_versions(torch=..., sklearn=...)"
            )
        try:
            datetime.fromisoformat(self.created)
        except (TypeError, ValueError) as err:
            raise ModelError(
                f"model card field 'created' must be an ISO 8601 date, got {self.created!r}"
            ) from err
        try:
            json.dumps(dict(self.metrics), allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ModelError(
                f"model card field 'metrics' must be finite JSON values ({err})"
            ) from err
        object.__setattr__(self, "metrics", dict(self.metrics))
        object.__setattr__(self, "versions", {k: str(v) for k, v in self.versions.items()})

    @classmethod
    def for_geometry(cls, geometry: str | Geometry, **fields: Any) -> ModelCard:
        """A card for ``geometry`` (name and hash filled in from :func:`get_geometry`)."""
        geo = get_geometry(geometry)
        return cls(geometry=geo.name, geometry_hash=geo.hash, **fields)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["inputs"] = [
            {**i, "shape": list(i["shape"]), "mean": _list(i["mean"]), "scale": _list(i["scale"])}
            for i in data["inputs"]
        ]
        return {"format": _FORMAT, "format_version": _FORMAT_VERSION, **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "model card") -> ModelCard:
        """The card of a :meth:`to_dict` mapping; errors name ``source`` and the field."""
        if not isinstance(data, Mapping) or data.get("format") != _FORMAT:
            raise ModelError(
                f"{source}: not a calocoffea model card (no format {_FORMAT!r}); give the card "
                "that save_model wrote beside the ONNX file (model.card.json)"
            )
        if data.get("format_version") != _FORMAT_VERSION:
            raise ModelError(
                f"{source}: model card format_version {data.get('format_version')!r} is not "
                f"{_FORMAT_VERSION}; re-export the model with this calocoffea"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields - {"format", "format_version"})
        if unknown:
            hints = ", ".join(f"{name!r}{did_you_mean(name, fields)}" for name in unknown)
            raise ModelError(
                f"{source}: unknown fields {hints}; the card's fields are {sorted(fields)}: "
                "rename or remove the others"
            )
        try:
            inputs = tuple(
                _from_fields(ModelInput, item, f"{source}: field 'inputs[{n}]'")
                for n, item in enumerate(_required(data, "inputs", source))
            )
            output = _from_fields(ModelOutput, _required(data, "output", source), "output")
            kwargs = {k: _required(data, k, source) for k in fields - {"inputs", "output"}}
            return cls(inputs=inputs, output=output, **kwargs)
        except ModelError as err:
            message = str(err)
            if message.startswith(source):
                raise
            raise ModelError(f"{source}: {message}") from err

    def save(self, path: str | Path) -> Path:
        """Write the card as JSON (atomically); returns the path."""
        target = Path(path)
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        with atomic_write(target) as temporary:
            temporary.write_text(text)
        return target

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        source = Path(path)
        try:
            text = source.read_text()
        except FileNotFoundError as err:
            raise ModelError(
                f"model card {source} does not exist; every ONNX model needs its card beside "
                f"it (model.onnx -> model.card.json): write it with save_model(model, card, path)"
            ) from err
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ModelError(
                f"model card {source} is not valid JSON ({err}); fix it, or copy the card again "
                "from where the model was exported (save_model writes it)"
            ) from err
        return cls.from_dict(data, source=f"model card {source}")

    def input(self, name: str) -> ModelInput:
        for item in self.inputs:
            if item.name == name:
                return item
        names = [i.name for i in self.inputs]
        raise ModelError(f"model {self.name!r} has no input {name!r}{did_you_mean(name, names)}")


def _list(values: Sequence[float] | None) -> list[float] | None:
    return None if values is None else list(values)


def _required(data: Mapping[str, Any], key: str, source: str) -> Any:
    if key not in data:
        raise ModelError(f"{source}: missing field {key!r}")
    return data[key]


def _from_fields(cls: type[Any], item: Any, where: str) -> Any:
    if not isinstance(item, Mapping):
        raise ModelError(f"{where} must be a JSON object, got {type(item).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(item) - names)
    if unknown:
        raise ModelError(f"{where} has unknown fields {unknown}; expected {sorted(names)}")
    try:
        return cls(**item)
    except TypeError as err:
        raise ModelError(f"{where}: {err}") from err
    except ModelError as err:
        raise ModelError(f"{where}: {err}") from err


# --- graph checks ------------------------------------------------------------------------


def _parse(data: bytes, where: str) -> onnx.ModelProto:
    try:
        model = onnx.load_model_from_string(data)
    except Exception as err:  # protobuf DecodeError and friends
        raise ModelError(
            f"{where} is not a readable ONNX file ({type(err).__name__}: {err}); it may be "
            "truncated or corrupt: copy it again or re-export it with save_model"
        ) from err
    return model


def _check_graph(model: onnx.ModelProto, where: str) -> None:
    external = [
        t.name
        for t in external_data_helper._get_all_tensors(model)
        if external_data_helper.uses_external_data(t)
    ]
    if external:
        raise ModelError(
            f"{where} references external data for {external[:5]}; model files must be one "
            "self-contained file: export with external_data=False (torch.onnx.export) or "
            "load the data and save with onnx.save_model(..., save_as_external_data=False)"
        )
    if not model.graph.output:
        raise ModelError(
            f"{where} has no graph outputs; it may be truncated or corrupt: copy it again or "
            "re-export it with save_model"
        )
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise ModelError(
            f"{where} fails onnx.checker ({err}); it may be corrupt or made by an exporter that "
            "writes invalid graphs: copy it again or re-export it with save_model"
        ) from err


def _dims(value: onnx.ValueInfoProto) -> list[int | None] | None:
    """Sizes of a graph value, None for a symbolic/unknown axis; None when no shape."""
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]


def _dtype_name(value: onnx.ValueInfoProto) -> str:
    elem = value.type.tensor_type.elem_type
    try:
        return str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)))
    except (KeyError, TypeError, ValueError):
        return onnx.TensorProto.DataType.Name(elem)


def _check_signature(model: onnx.ModelProto, card: ModelCard, where: str) -> None:
    """The card's inputs and output match the graph: names, ranks, dtypes, batch axis."""
    initializers = {t.name for t in model.graph.initializer}
    graph_inputs = {v.name: v for v in model.graph.input if v.name not in initializers}
    problems: list[str] = []
    card_names = [i.name for i in card.inputs]
    if sorted(graph_inputs) != sorted(card_names):
        problems.append(f"inputs are {sorted(graph_inputs)} in the graph, {card_names} in the card")
    for item in card.inputs:
        value = graph_inputs.get(item.name)
        if value is not None:
            problems += _compare(value, f"input {item.name!r}", item.shape, item.dtype)
    graph_outputs = {v.name: v for v in model.graph.output}
    output = graph_outputs.get(card.output.name)
    if output is None:
        problems.append(
            f"output {card.output.name!r} of the card is not a graph output "
            f"{sorted(graph_outputs)}{did_you_mean(card.output.name, graph_outputs)}"
        )
    else:
        problems += _compare(output, f"output {card.output.name!r}", None, None)
    if problems:
        raise ModelError(
            f"{where}: the model card {card.name!r} does not match the graph: "
            + "; ".join(problems)
            + ". Fix the card (or re-export the model) so both describe the same signature"
        )


def _compare(
    value: onnx.ValueInfoProto, label: str, shape: tuple[int | None, ...] | None, dtype: str | None
) -> list[str]:
    dims = _dims(value)
    problems = []
    if dims is None or not dims or dims[0] is not None:
        problems.append(
            f"{label} has shape {dims} in the graph, without a dynamic batch axis first; "
            "export with a dynamic first axis (dynamic_axes / dynamic_shapes)"
        )
    if shape is not None and dims is not None:
        if len(dims) != len(shape):
            problems.append(f"{label} has rank {len(dims)} in the graph, {len(shape)} in the card")
        else:
            for axis, (g, c) in enumerate(zip(dims[1:], shape[1:], strict=True), start=1):
                if g is not None and g != c:
                    problems.append(f"{label} axis {axis} is {g} in the graph, {c} in the card")
    graph_dtype = _dtype_name(value)
    if dtype is not None and graph_dtype != dtype:
        problems.append(f"{label} is {graph_dtype} in the graph, {dtype} in the card")
    if dtype is None and not graph_dtype.startswith(("float", "bfloat")):
        problems.append(f"{label} is {graph_dtype} in the graph; a model output must be float")
    return problems


# --- save and load -----------------------------------------------------------------------


def save_model(model: bytes | onnx.ModelProto, card: ModelCard, path: str | Path) -> Path:
    """Check ``model`` against ``card`` and write ``path`` (``.onnx``) and its card.

    The ONNX file is self-contained (external data is refused), passes ``onnx.checker`` and
    has the card's inputs and output. Both files are written through temporary names, so an
    error leaves neither. Returns the ONNX path.
    """
    target = Path(path)
    if target.suffix != ".onnx":
        raise ModelError(f"model path {target} must end in .onnx (its card: {card_path(target)})")
    where = f"model for {target}"
    proto = _parse(bytes(model), where) if isinstance(model, bytes | bytearray) else model
    if not isinstance(proto, onnx.ModelProto):
        raise ModelError(f"save_model takes ONNX bytes or an onnx.ModelProto, got {type(model)}")
    _check_graph(proto, where)
    _check_signature(proto, card, where)
    try:
        data = proto.SerializeToString()
    except ValueError as err:  # protobuf's 2 GB limit
        raise ModelError(f"{where} cannot be one file ({err}); make the model smaller") from err
    with atomic_write(target) as temporary:
        temporary.write_bytes(data)
    try:
        card.save(card_path(target))
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


def load_model(
    path: str | Path,
    geometry: str | Geometry | None = None,
    *,
    intra_op_threads: int = 1,
    graph_optimization: str = "all",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> LoadedModel:
    """Read ``path`` and its card; check the geometry hash (when ``geometry`` is given) and
    the graph against the card. The onnxruntime session is created on the first predict."""
    source = Path(path)
    card = ModelCard.load(card_path(source))
    if geometry is not None:
        geo = get_geometry(geometry)
        if geo.hash != card.geometry_hash:
            raise GeometryMismatchError(
                f"model {card.name!r} ({source}, card {card_path(source)}) was trained for "
                f"geometry {card.geometry!r} "
                f"(hash {card.geometry_hash}) but the input is {geo.name!r} (hash {geo.hash}); "
                f"use a model trained for {geo.name!r}, or retrain it on a {geo.name!r} sample "
                f"(the card's command: {card.training_command})"
            )
    try:
        data = source.read_bytes()
    except FileNotFoundError as err:
        raise ModelError(
            f"ONNX file {source} does not exist but its card {card_path(source)} does; "
            "copy the model file beside its card or re-export it with save_model"
        ) from err
    proto = _parse(data, f"ONNX file {source}")
    _check_graph(proto, f"ONNX file {source}")
    _check_signature(proto, card, f"ONNX file {source}")
    return LoadedModel(
        card,
        data,
        source=str(source),
        intra_op_threads=intra_op_threads,
        graph_optimization=graph_optimization,
        batch_size=batch_size,
    )


class LoadedModel:
    """A checked model in memory; the onnxruntime session is made on first use, per process.

    Pickling keeps the ONNX bytes and the card and drops the session, so processors that hold
    a model ship to Dask workers, and each worker makes its own session.
    """

    def __init__(
        self,
        card: ModelCard,
        onnx_bytes: bytes,
        *,
        source: str = "<memory>",
        intra_op_threads: int = 1,
        graph_optimization: str = "all",
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if graph_optimization not in OPTIMIZATION_LEVELS:
            raise ModelError(
                f"unknown graph_optimization {graph_optimization!r}"
                f"{did_you_mean(graph_optimization, OPTIMIZATION_LEVELS)}; "
                f"use one of {', '.join(OPTIMIZATION_LEVELS)}"
            )
        if intra_op_threads < 0:
            raise ModelError("intra_op_threads must be >= 0 (0: onnxruntime's choice)")
        _check_batch_size(batch_size)
        self.card = card
        self.onnx_bytes = onnx_bytes
        self.source = source
        self.intra_op_threads = intra_op_threads
        self.graph_optimization = graph_optimization
        self.batch_size = batch_size
        self._session: Any = None

    def __repr__(self) -> str:
        return f"LoadedModel({self.card.name!r}, source={self.source!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_session"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def session(self) -> Any:
        """The onnxruntime ``InferenceSession`` (CPU), created on first access."""
        if self._session is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = self.intra_op_threads
            options.inter_op_num_threads = 1
            levels = {
                "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            }
            options.graph_optimization_level = levels[self.graph_optimization]
            self._session = ort.InferenceSession(
                self.onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"]
            )
        return self._session

    def predict(
        self,
        features: npt.ArrayLike | Mapping[str, npt.ArrayLike],
        batch_size: int | None = None,
    ) -> npt.NDArray[np.float64]:
        """The card's output for each row: normalise, cast to the input dtype, run in
        batches of ``batch_size`` rows, return float64 (shape ``(n,)`` for one value per
        row). ``features`` is an array for a one-input model, else a mapping by input name.
        An empty input gives an empty output without creating a session."""
        size = self.batch_size if batch_size is None else batch_size
        _check_batch_size(size)
        arrays = self._prepare(features)
        n = next(iter(arrays.values())).shape[0]
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        name = self.card.output.name
        parts = [
            self.session.run([name], {k: v[start : start + size] for k, v in arrays.items()})[0]
            for start in range(0, n, size)
        ]
        result = np.concatenate(parts).astype(np.float64, copy=False)
        if result.ndim == 2 and result.shape[1] == 1:
            result = result[:, 0]
        return result

    def _prepare(
        self, features: npt.ArrayLike | Mapping[str, npt.ArrayLike]
    ) -> dict[str, np.ndarray]:
        if isinstance(features, Mapping):
            given = dict(features)
        elif len(self.card.inputs) == 1:
            given = {self.card.inputs[0].name: features}
        else:
            names = [i.name for i in self.card.inputs]
            raise ModelError(f"model {self.card.name!r} has inputs {names}: pass a dict by name")
        for name in given:
            self.card.input(name)  # unknown names
        arrays: dict[str, np.ndarray] = {}
        rows = set()
        for item in self.card.inputs:
            if item.name not in given:
                raise ModelError(f"model {self.card.name!r}: no features for input {item.name!r}")
            arrays[item.name] = self._one(item, given[item.name])
            rows.add(arrays[item.name].shape[0])
        if len(rows) > 1:
            raise ModelError(f"model {self.card.name!r}: inputs have different row counts {rows}")
        return arrays

    def _one(self, item: ModelInput, values: npt.ArrayLike) -> np.ndarray:
        where = f"model {self.card.name!r} ({self.source}) input {item.name!r}"
        x = np.asarray(values)
        if x.dtype.kind not in "biuf":
            raise ModelError(f"{where}: features must be numbers, got dtype {x.dtype}")
        expected = tuple(item.shape[1:])
        if x.ndim != len(item.shape) or x.shape[1:] != expected:
            raise ModelError(
                f"{where}: features have shape {x.shape}, expected (n, "
                f"{', '.join(map(str, expected))}) as in the model card; compute the features "
                "the card describes, or use a model made for these features"
            )
        x = x.astype(np.float64, copy=False)
        bad = ~np.isfinite(x)
        if bad.any():
            rows = np.unique(np.nonzero(bad)[0])
            raise ModelError(
                f"{where}: {int(bad.sum())} non-finite feature values (NaN or inf) in "
                f"{rows.size} rows, first rows {rows[:5].tolist()}; drop or fix those events "
                "before reconstruction"
            )
        return np.ascontiguousarray(item.normalise(x).astype(item.dtype))


def cpu_session(data: bytes, threads: int = 1) -> Any:
    """An onnxruntime session of the graph ``data`` on the CPU with ``threads`` intra-op
    threads and full graph optimisation, as inference makes it (training's parity checks)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ModelError(f"batch_size must be a positive integer, got {batch_size!r}")
