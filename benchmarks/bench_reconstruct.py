"""Inference speed of the learned reconstructions, per core: onnxruntime against the framework
each model was trained in (torch eager for ``cnn_lstm``, scikit-learn for ``gbr``, numpy for
``software_compensation``), with onnxruntime's graph optimisation levels and batch sizes.

Usage::

    python benchmarks/bench_reconstruct.py [--events 4000] [--repeat 3]

Inputs: calibrated ``cepc_ahcal`` electrons at 60 GeV (10 mm spot), built once with the
features the reconstruct processor builds (:func:`calocoffea.models.inputs.build_inputs`).
Models: ``cnn_lstm`` with its default architecture (random weights: the speed does not depend
on their values; exported exactly as training exports it), ``gbr`` fitted here with the
plugin's tree settings (60 iterations, what early stopping chose on 60,000 electrons) and
exported with the plugin's exporter, ``software_compensation`` with typical parameters.
Every figure is events/s of the model alone on one thread (torch.set_num_threads(1),
intra_op_num_threads=1, sklearn under one OpenMP thread), the best of ``--repeat`` runs over
all events; the ratio column is onnxruntime over the framework in the same run. The last
table is the whole reconstruct path (features + model) of :class:`OnnxReconstruction`.
This is a script, not a test: it prints tables and exits 0.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _single_thread  # noqa: F401  (one thread per library, before numpy)
import numpy as np

GEOMETRY = "cepc_ahcal"
BATCHES = (64, 1024)
LEVELS = ("disable", "basic", "all")


def best_rate(run: Callable[[], Any], n: int, repeat: int) -> float:
    """Events per second of ``run`` over ``n`` events: the best of ``repeat`` timings."""
    run()  # warm-up (allocations, lazy initialisation)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return n / min(times)


def ort_session(data: bytes, level: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


def batched(fn: Callable[[np.ndarray], Any], x: np.ndarray, size: int) -> Callable[[], None]:
    def run() -> None:
        for start in range(0, len(x), size):
            fn(x[start : start + size])

    return run


def cnn_lstm(x: np.ndarray) -> tuple[bytes, dict[int, Callable[[np.ndarray], Any]]]:
    import torch

    from calocoffea.geometry import get_geometry
    from calocoffea.models.cnn_lstm import (
        Architecture,
        CnnLstmOptions,
        build_network,
        export_onnx,
    )

    torch.manual_seed(0)
    arch = Architecture.of(get_geometry(GEOMETRY), CnnLstmOptions())
    net = build_network(arch, 0.0).eval()
    data = export_onnx(torch, net, arch)

    def eager(batch: np.ndarray) -> Any:
        with torch.inference_mode():
            return net(torch.from_numpy(batch))

    return data, {0: eager}


def gbr(x: np.ndarray, beam: np.ndarray) -> tuple[bytes, dict[int, Callable[[np.ndarray], Any]]]:
    from sklearn.ensemble import HistGradientBoostingRegressor

    from calocoffea.geometry import get_geometry
    from calocoffea.plugins.gbr import export, sum_column

    column = sum_column(get_geometry(GEOMETRY).n_layers)
    estimator = HistGradientBoostingRegressor(
        max_iter=60, max_leaf_nodes=31, min_samples_leaf=100, l2_regularization=1.0,
        early_stopping=False, random_state=0,
    )  # fmt: skip
    estimator.fit(x, beam / np.maximum(x[:, column], 1e-6))
    data = export(estimator, x.shape[1], "ratio", column).SerializeToString()

    def sklearn(batch: np.ndarray) -> Any:
        return estimator.predict(batch) * batch[:, column]

    return data, {0: sklearn}


def software_compensation(x: np.ndarray) -> tuple[bytes, dict[int, Callable[[np.ndarray], Any]]]:
    from calocoffea.plugins.software_compensation import (
        compensated_energy,
        pandora_graph,
        representative_densities,
    )

    parameters = (1.6, -0.002, 0.0, -0.03, 0.0, 0.0, 0.5, 1.0, -0.05)
    rho = representative_densities()
    data = pandora_graph(parameters, rho).SerializeToString()
    return data, {0: lambda batch: compensated_energy(parameters, batch, rho)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=4000, help="events timed per run")
    parser.add_argument("--repeat", type=int, default=3, help="timings per figure (best kept)")
    args = parser.parse_args()
    import torch
    from threadpoolctl import threadpool_limits

    from calocoffea.geometry import get_geometry
    from calocoffea.io import read_events
    from calocoffea.machine import describe
    from calocoffea.methods import reconstruction_method
    from calocoffea.models.inputs import FlatHits, build_inputs, input_shape
    from calocoffea.samples import calibrated_sample
    from calocoffea.simulation.beam import Beam

    torch.set_num_threads(1)
    geometry = get_geometry(GEOMETRY)
    names = ("cell_images", "layer_sums_and_shapes", "density_sums")
    shapes = {n: input_shape(n, geometry, bins=15) for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        path = calibrated_sample(GEOMETRY, "e-", Beam((60.0,), size_mm=10.0), args.events, 3,
                                 Path(tmp) / "e60.root")  # fmt: skip
        events = read_events(path)
        hits = FlatHits.from_events(events)
        beam = np.asarray(events.beam_energy, dtype=np.float64)
    inputs = {k: v.astype(np.float32) for k, v in build_inputs(shapes, hits, geometry).items()}
    n = len(hits)
    models = {
        "cnn_lstm": ("torch eager", "cell_images", cnn_lstm(inputs["cell_images"])),
        "gbr": ("scikit-learn", "layer_sums_and_shapes",
                gbr(inputs["layer_sums_and_shapes"], beam)),
        "software_compensation": ("numpy", "density_sums",
                                  software_compensation(inputs["density_sums"])),
    }  # fmt: skip
    print(f"{datetime.date.today().isoformat()}, {describe()}; {n} electrons at 60 GeV, "
          f"one thread; events/s (best of {args.repeat})")  # fmt: skip
    print(f"{'model':<22} {'batch':>6} {'framework':>13} {'events/s':>10} {'ORT disable':>12} "
          f"{'ORT basic':>10} {'ORT all':>10} {'ORT all / fw':>13}")  # fmt: skip
    with threadpool_limits(limits=1):
        for name, (framework, input_name, (data, reference)) in models.items():
            x = inputs[input_name]
            for size in BATCHES:
                fw = best_rate(batched(reference[0], x, size), n, args.repeat)
                rates = {}
                for level in LEVELS:
                    session = ort_session(data, level)
                    output = session.get_outputs()[0].name

                    def run_ort(
                        batch: np.ndarray, s: Any = session, o: str = output, i: str = input_name
                    ) -> Any:
                        return s.run([o], {i: batch})

                    rates[level] = best_rate(batched(run_ort, x, size), n, args.repeat)
                print(f"{name:<22} {size:>6} {framework:>13} {fw:>10.0f} "
                      f"{rates['disable']:>12.0f} {rates['basic']:>10.0f} {rates['all']:>10.0f} "
                      f"{rates['all'] / fw:>13.2f}")  # fmt: skip
        print()
        print("whole reconstruct path (features + onnxruntime 'all', batch 1024), events/s:")
        with tempfile.TemporaryDirectory() as tmp:
            from calocoffea.models.onnxmodel import current_versions
            from calocoffea.models.training import model_input, write_model

            for name, (_, input_name, (data, _)) in models.items():
                import onnx

                model_path = write_model(
                    onnx.load_model_from_string(data), Path(tmp) / f"{name}.onnx", name=name,
                    geometry=geometry, inputs=[model_input(input_name, geometry, bins=15)],
                    output_name="energy", training_sample=["benchmark"], command="benchmark",
                    metrics={}, versions=current_versions(),
                )  # fmt: skip
                method = reconstruction_method("onnx", GEOMETRY, model=str(model_path))
                rate = best_rate(lambda m=method: m.predict_hits(hits), n, args.repeat)
                print(f"  {name:<22} {rate:>10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
