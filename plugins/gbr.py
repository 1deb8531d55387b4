"""``gbr``: gradient-boosted regression trees on layer sums and shower shapes, run as ONNX.

What to use when:

- ``--method gbr`` -- a fast learned energy correction, trained on showers of the kind it
  will see (electrons, or pions) over a wide energy range: it corrects the calibrated sum
  (leakage, non-linearity, the dependence on the shower depth) event by event from the
  longitudinal profile and a few shape observables. Cheap to train (60 000 events in 8 s
  on one CPU core, no torch) and to run; a per-layer network (``cnn_lstm``) sees the cell
  images but needs torch and far more events to train.
- ``--method sum`` (plus a linear correction) -- the reference ``gbr`` is judged against.
  For electrons the sum is already close to optimal: trained on 42 000 electrons, ``gbr``
  corrects the response below ~20 GeV (E/E_beam at 2 GeV 1.025 against 1.083 for the line)
  but its resolution at a fixed beam energy is the sum's (0.161 against 0.154 at 2 GeV,
  equal within 1 % from 10 GeV up). Hadron showers, whose sum fluctuates with the
  electromagnetic fraction, are where the shapes should help more (not measured yet).

Training (:meth:`GradientBoosting.train`, ``calocoffea train --model gbr FILES -o gbr.onnx
--option max_iter=300 --seed 1``) fits scikit-learn's
:class:`~sklearn.ensemble.HistGradientBoostingRegressor` on the input
``layer_sums_and_shapes`` (:mod:`calocoffea.models.inputs`) of the training part of a seeded
by-event split, stops early on the validation part, exports the trees with skl2onnx and
writes the ONNX file with its card (metrics on the test part, the fraction of test events
where scikit-learn and onnxruntime agree, and on the same events the metrics of the plain
sum and of the sum corrected by a line fitted to the training events).

Target (:class:`GbrTrainOptions` ``target``): ``ratio`` (default) regresses
E_beam / E_sum, the factor that corrects the calibrated sum, and the graph multiplies the
prediction by E_sum (the ``energy`` shower shape) with an appended ``Mul``. The squared
error of the ratio weighs every event by its relative error, which is what the resolution
measures, and the trees only model a slowly varying correction instead of the whole
1-120 GeV range in piecewise-constant steps. ``energy`` regresses E_beam [GeV] directly:
its squared error in GeV is dominated by the high-energy events. Measured on 60 000
trapezoid 1-120 GeV electrons (cepc_ahcal, three split seeds, default options), the test
relative rms of E/E_beam - 1 was 0.0541 with ``ratio``, 0.0561 with ``energy`` and 0.0566
for the sum corrected by a line; in the lowest eighth of the events (1-11 GeV) the
resolution was 0.112 against 0.116 and the response 1.017 against 1.026. Hence ``ratio``.

Inference is :class:`~calocoffea.models.reconstruction.OnnxReconstruction`'s: onnxruntime
only, scikit-learn and skl2onnx are imported by :meth:`GradientBoosting.train` alone.
Features are float32 in training as in the graph: the tree thresholds that scikit-learn
learns from float32 values compare the same way in the float32 ONNX trees.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from calocoffea.exceptions import MethodOptionsError, ModelError
from calocoffea.methods import make_options
from calocoffea.models.features import SHAPE_NAMES
from calocoffea.models.reconstruction import OnnxOptions, OnnxReconstruction

if TYPE_CHECKING:
    from types import ModuleType

    from calocoffea.geometry import Geometry

FloatArray = npt.NDArray[np.float64]

#: The model's one input (:data:`calocoffea.models.inputs.BUILDERS`).
INPUT = "layer_sums_and_shapes"
#: The graph output: the event energy [GeV], shape (batch, 1).
OUTPUT = "energy"
#: Targets the trees can regress (see the module docstring).
TARGETS = ("ratio", "energy")
#: Relative tolerance of the scikit-learn / onnxruntime parity recorded in the card.
PARITY_RTOL = 1e-5
#: Card metric: the fraction of test events within :data:`PARITY_RTOL`.
PARITY_KEY = "parity_fraction_1e-5"
#: ONNX opsets of the exported graph (TreeEnsembleRegressor is in ``ai.onnx.ml``).
OPSETS = {"": 17, "ai.onnx.ml": 3}
#: The protobuf warning of a bool in an ONNX ints attribute (see :func:`export`).
_BOOL_ATTRIBUTE = r"Field onnx\.AttributeProto\.ints: Expected an int, got a boolean"
#: Oldest scikit-learn whose HistGradientBoostingRegressor.fit takes ``X_val``/``y_val``.
MIN_SKLEARN = (1, 7)


@dataclass(frozen=True)
class GbrTrainOptions:
    """Training options of :class:`GradientBoosting` (``--option KEY=VALUE``)."""

    #: what the trees regress: ``ratio`` = E_beam / E_sum (energy = prediction x E_sum in
    #: the graph) or ``energy`` = E_beam [GeV]
    target: str = "ratio"
    #: boosting iterations at most (one tree each); early stopping usually ends sooner
    max_iter: int = 500
    #: shrinkage: each tree's prediction is scaled by this before it is added
    learning_rate: float = 0.1
    #: leaves per tree at most
    max_leaf_nodes: int = 31
    #: training events per leaf at least (100: smoother corrections than scikit-learn's 20)
    min_samples_leaf: int = 100
    #: L2 penalty on the leaf values, in units of the summed hessian (events) of a leaf
    l2_regularization: float = 1.0
    #: histogram bins per feature (at most 255)
    max_bins: int = 255
    #: stop after this many iterations without a validation-loss improvement over ``tol``
    patience: int = 20
    #: smallest validation-loss decrease that counts as an improvement (target units squared)
    tol: float = 1e-7
    #: fraction of the events for early stopping (validation), split by event with the seed
    validation_fraction: float = 0.15
    #: fraction of the events held out for the card's metrics and the parity check
    test_fraction: float = 0.15
    #: OpenMP threads of the fit (1: on busy shared cores, 2 threads spin-waited and made a
    #: 42 000-event fit 10 times slower)
    threads: int = 1

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise MethodOptionsError(
                f"unknown target {self.target!r} for gbr; use one of {', '.join(TARGETS)}"
            )
        for name in ("max_iter", "min_samples_leaf", "patience", "threads"):
            if getattr(self, name) < 1:
                raise MethodOptionsError(
                    f"gbr option {name} must be >= 1, got {getattr(self, name)}"
                )
        if self.max_leaf_nodes < 2:
            raise MethodOptionsError(
                f"gbr option max_leaf_nodes must be >= 2, got {self.max_leaf_nodes}"
            )
        if not 2 <= self.max_bins <= 255:
            raise MethodOptionsError(f"gbr option max_bins must lie in 2..255, got {self.max_bins}")
        if not self.learning_rate > 0:
            raise MethodOptionsError(
                f"gbr option learning_rate must be > 0, got {self.learning_rate}"
            )
        if not (self.l2_regularization >= 0 and self.tol >= 0):
            raise MethodOptionsError("gbr options l2_regularization and tol must be >= 0")
        train = 1.0 - self.validation_fraction - self.test_fraction
        if min(self.validation_fraction, self.test_fraction, train) <= 0:
            raise MethodOptionsError(
                f"gbr options validation_fraction={self.validation_fraction} and "
                f"test_fraction={self.test_fraction} must be > 0 and leave events to train on"
            )

    @property
    def fractions(self) -> tuple[float, float, float]:
        """(train, validation, test) fractions of the by-event split."""
        train = 1.0 - self.validation_fraction - self.test_fraction
        return train, self.validation_fraction, self.test_fraction


class GradientBoosting(OnnxReconstruction):
    """Event energy [GeV] from gradient-boosted trees on layer sums and shower shapes."""

    description: ClassVar[str] = (
        "gradient-boosted trees (scikit-learn, run as ONNX) on layer sums and shower shapes"
    )
    url: ClassVar[str] = (
        "https://scikit-learn.org/stable/modules/generated/"
        "sklearn.ensemble.HistGradientBoostingRegressor.html"
    )
    Options: ClassVar[type] = OnnxOptions
    #: the frozen dataclass of the training options (``calocoffea train --option``)
    TrainOptions: ClassVar[type] = GbrTrainOptions
    model_name: ClassVar[str] = "gbr"

    @classmethod
    def train(
        cls,
        files: list[str],
        output: str,
        *,
        options: dict[str, str],
        seed: int,
        command: str,
    ) -> Path:
        """Fit the trees on calibrated ``files``; write ``output`` (.onnx) and its card.

        Steps: parse the options; read the files into shards and split them by event with
        ``seed``; build ``layer_sums_and_shapes`` (float32); fit with early stopping on the
        validation part; export to ONNX (ratio x E_sum for the ``ratio`` target); compare
        scikit-learn and onnxruntime on the test part; write the model with its card."""
        from calocoffea.models.onnxmodel import current_versions
        from calocoffea.models.training import (
            check_training_files,
            model_input,
            test_metrics,
            write_model,
        )

        opts: GbrTrainOptions = make_options(GbrTrainOptions, dict(options))
        sklearn, skl2onnx = require_training()
        geometry = check_training_files(files)
        column = sum_column(geometry.n_layers)
        started = time.perf_counter()
        (x_train, b_train), (x_val, b_val), (x_test, b_test) = _split_features(
            files, geometry, seed, opts.fractions
        )
        estimator = _fit(opts, seed, (x_train, b_train), (x_val, b_val), column)
        proto = export(estimator, x_train.shape[1], opts.target, column)
        reference = sklearn_energy(estimator, x_test, opts.target, column)
        onnx_energy = run_onnx(proto, x_test)
        fraction = parity_fraction(reference, onnx_energy, PARITY_RTOL)
        metrics = {
            **test_metrics(onnx_energy, b_test),
            PARITY_KEY: fraction,
            "parity_max_relative": _max_relative(reference, onnx_energy),
            "target": opts.target,
            "iterations": int(estimator.n_iter_),
            "split_events": {"train": len(b_train), "validation": len(b_val), "test": len(b_test)},
            "training_seconds": round(time.perf_counter() - started, 1),
            "options": dataclasses.asdict(opts),
            "sum_reference": test_metrics(x_test[:, column].astype(np.float64), b_test),
            "linear_sum_reference": test_metrics(
                linear_sum(x_train, b_train, x_test, column), b_test
            ),
        }
        return write_model(
            proto,
            output,
            name=Path(output).stem,
            geometry=geometry,
            inputs=[model_input(INPUT, geometry)],
            output_name=OUTPUT,
            training_sample=files,
            command=command,
            metrics=metrics,
            versions=current_versions(sklearn=sklearn.__version__, skl2onnx=skl2onnx.__version__),
            curves=loss_curves(estimator, opts.target),
        )


# --- training helpers ----------------------------------------------------------------------


def require_training() -> tuple[ModuleType, ModuleType]:
    """(sklearn, skl2onnx), or a ModuleNotFoundError that says how to install the optional
    extra ``train``; a scikit-learn without ``fit(X_val=...)`` is a ModelError."""
    try:
        import skl2onnx
        import sklearn
    except ImportError as err:
        raise ModuleNotFoundError(
            f"gbr trains with scikit-learn and skl2onnx ({err.name} is missing), the optional "
            "extra 'train': `pip install 'calocoffea[train]'` (inference needs neither)",
            name=err.name,
        ) from err
    version = tuple(int(p) for p in sklearn.__version__.split(".")[:2] if p.isdigit())
    if version < MIN_SKLEARN:
        raise ModelError(
            f"gbr needs scikit-learn >= {'.'.join(map(str, MIN_SKLEARN))} for early stopping on "
            f"the validation events (HistGradientBoostingRegressor.fit(X_val=...)), found "
            f"{sklearn.__version__}: `pip install -U 'scikit-learn>=1.7'`"
        )
    return sklearn, skl2onnx


def sum_column(n_layers: int) -> int:
    """Column of E_sum (the ``energy`` shower shape) in ``layer_sums_and_shapes``."""
    return n_layers + SHAPE_NAMES.index("energy")


Part = tuple[npt.NDArray[np.float32], FloatArray]


def _split_features(
    files: list[str], geometry: Geometry, seed: int, fractions: tuple[float, float, float]
) -> tuple[Part, Part, Part]:
    """(float32 features, beam energy [GeV]) of the train, validation and test events."""
    from calocoffea.models.inputs import input_shape
    from calocoffea.models.training import (
        features_of,
        prepare_shards,
        scratch_directory,
        split_loader,
    )

    shapes = {INPUT: input_shape(INPUT, geometry)}
    with scratch_directory("gbr") as scratch:
        loader = prepare_shards(files, scratch, batch_showers=4096, seed=seed)
        parts = []
        for part in split_loader(loader, seed, fractions):
            inputs, events = features_of(part, shapes, geometry)
            parts.append((inputs[INPUT].astype(np.float32), events["beam_energy"]))
    return parts[0], parts[1], parts[2]


def target_values(
    x: npt.NDArray[np.float32], beam_gev: FloatArray, target: str, column: int
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """(what the trees regress, which events can be used): for ``ratio`` events without
    energy (E_sum = 0) have no ratio and are left out."""
    beam = np.asarray(beam_gev, dtype=np.float64)
    if target == "energy":
        return beam, np.ones(beam.size, dtype=bool)
    total = x[:, column].astype(np.float64)
    usable = total > 0
    return np.divide(beam, total, out=np.zeros_like(beam), where=usable), usable


def _fit(opts: GbrTrainOptions, seed: int, train: Part, validation: Part, column: int) -> Any:
    """The fitted HistGradientBoostingRegressor, stopped early on ``validation``."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    (x, beam), (x_val, beam_val) = train, validation
    y, keep = target_values(x, beam, opts.target, column)
    y_val, keep_val = target_values(x_val, beam_val, opts.target, column)
    if keep.sum() < 2 * opts.min_samples_leaf or keep_val.sum() < 1:
        raise ModelError(
            f"gbr has {int(keep.sum())} training and {int(keep_val.sum())} validation events "
            f"with energy; it needs at least {2 * opts.min_samples_leaf} (2 x min_samples_leaf)"
            " to split: give more events or lower min_samples_leaf"
        )
    estimator = HistGradientBoostingRegressor(
        loss="squared_error",
        learning_rate=opts.learning_rate,
        max_iter=opts.max_iter,
        max_leaf_nodes=opts.max_leaf_nodes,
        min_samples_leaf=opts.min_samples_leaf,
        l2_regularization=opts.l2_regularization,
        max_bins=opts.max_bins,
        early_stopping=True,
        scoring="loss",
        n_iter_no_change=opts.patience,
        tol=opts.tol,
        random_state=seed,
    )
    with threadpool_limits(limits=opts.threads, user_api="openmp"):
        estimator.fit(x[keep], y[keep], X_val=x_val[keep_val], y_val=y_val[keep_val])
    return estimator


def sklearn_energy(
    estimator: Any, x: npt.NDArray[np.float32], target: str, column: int
) -> FloatArray:
    """Energies [GeV] from scikit-learn's ``predict`` on the float32 features (float64)."""
    predicted = np.asarray(estimator.predict(x), dtype=np.float64)
    if target == "ratio":
        predicted = predicted * x[:, column].astype(np.float64)
    return predicted


def linear_sum(
    x_train: npt.NDArray[np.float32],
    beam_train: FloatArray,
    x: npt.NDArray[np.float32],
    column: int,
) -> FloatArray:
    """The reference gbr must beat: a * E_sum + b [GeV] for ``x``, with the line fitted to
    the beam energies of the training events by least squares."""
    slope, offset = np.polyfit(x_train[:, column].astype(np.float64), beam_train, 1)
    return np.asarray(slope * x[:, column].astype(np.float64) + offset, dtype=np.float64)


def export(estimator: Any, n_features: int, target: str, column: int) -> onnx.ModelProto:
    """The trees as ONNX: input ``layer_sums_and_shapes`` float32 (batch, n_features),
    output ``energy`` float32 (batch, 1); ``ratio`` multiplies by column ``column``."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    with warnings.catch_warnings():
        # skl2onnx (1.20) writes the leaves' nodes_missing_value_tracks_true as Python
        # False; protobuf 6 stores it as 0 with this warning (protobuf 7.34 will refuse it)
        warnings.filterwarnings("ignore", _BOOL_ATTRIBUTE, DeprecationWarning)
        trees = to_onnx(
            estimator,
            initial_types=[(INPUT, FloatTensorType([None, n_features]))],
            target_opset=dict(OPSETS),
        )
    return energy_graph(trees, target, column)


def energy_graph(trees: onnx.ModelProto, target: str, column: int) -> onnx.ModelProto:
    """``trees`` (one input, one output of shape (batch, 1)) with the batch axis named
    ``batch`` and the output renamed ``energy``; for ``ratio`` the output is the trees'
    times the input's column ``column``."""
    graph = trees.graph
    (tree_output,) = [v.name for v in graph.output]
    nodes = list(graph.node)
    initializers = list(graph.initializer)
    if target == "ratio":
        index = numpy_helper.from_array(np.array([column], dtype=np.int64), "sum_column")
        initializers.append(index)
        nodes += [
            helper.make_node("Gather", [INPUT, "sum_column"], ["energy_sum"], axis=1),
            helper.make_node("Mul", [tree_output, "energy_sum"], [OUTPUT]),
        ]
    else:
        nodes.append(helper.make_node("Identity", [tree_output], [OUTPUT]))
    inputs = [onnx.ValueInfoProto.FromString(v.SerializeToString()) for v in graph.input]
    for value in inputs:  # name the dynamic axis: "batch" as in the other models
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    new_graph = helper.make_graph(
        nodes,
        "gbr",
        inputs,
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 1])],
        initializer=initializers,
    )
    versions: dict[str, int] = {}
    for opset in trees.opset_import:  # skl2onnx may list a domain twice
        versions[opset.domain] = max(versions.get(opset.domain, 0), opset.version)
    model = helper.make_model(
        new_graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(versions.items())],
        producer_name="calocoffea gbr",
    )
    model.ir_version = trees.ir_version
    return model


def run_onnx(model: onnx.ModelProto, x: npt.NDArray[np.float32]) -> FloatArray:
    """The graph's energies for ``x`` with onnxruntime (CPU, one thread), as float64."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    (out,) = session.run([OUTPUT], {INPUT: np.ascontiguousarray(x, dtype=np.float32)})
    return np.asarray(out, dtype=np.float64).reshape(-1)


def _relative(reference: FloatArray, other: FloatArray) -> FloatArray:
    a, b = np.asarray(reference, dtype=np.float64), np.asarray(other, dtype=np.float64)
    diff = np.abs(b - a)
    scale = np.abs(a)
    return np.divide(diff, scale, out=np.where(diff == 0, 0.0, np.inf), where=scale > 0)


def parity_fraction(reference: FloatArray, other: FloatArray, rtol: float = PARITY_RTOL) -> float:
    """Fraction of events where ``other`` equals ``reference`` within ``rtol`` relative
    (both zero counts as equal); 1.0 for no events."""
    if np.size(reference) == 0:
        return 1.0
    return float(np.mean(_relative(reference, other) <= rtol))


def _max_relative(reference: FloatArray, other: FloatArray) -> float:
    rel = _relative(reference, other)
    finite = rel[np.isfinite(rel)]
    return float(finite.max()) if finite.size else 0.0


def loss_curves(estimator: Any, target: str) -> dict[str, Any]:
    """Training and validation loss per iteration (iteration 0: the constant baseline).

    scikit-learn's scores with ``scoring='loss'`` are minus its loss, the half squared error
    of the target (``ratio``: dimensionless; ``energy``: GeV^2); the training loss is on a
    subsample of at most 10 000 training events."""
    return {
        "loss": f"half squared error of the target {target!r}",
        "iteration": list(range(len(estimator.train_score_))),
        "train_loss": [float(-v) for v in estimator.train_score_],
        "validation_loss": [float(-v) for v in estimator.validation_score_],
    }


__all__ = [
    "GbrTrainOptions",
    "GradientBoosting",
    "energy_graph",
    "export",
    "linear_sum",
    "loss_curves",
    "parity_fraction",
    "require_training",
    "sklearn_energy",
    "sum_column",
    "target_values",
]
