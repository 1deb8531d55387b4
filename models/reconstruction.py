"""Reconstruction from an ONNX model file: the method every learned model runs through.

What to use when:

- :class:`OnnxReconstruction` (plugin ``onnx``, option ``model=PATH``) -- any model file
  with a card whose inputs are named after the builders of :mod:`calocoffea.models.inputs`;
  ``calocoffea reconstruct IN --method model.onnx`` uses it.
- Subclasses (``gbr``, ``cnn_lstm``, ``software_compensation``) set :attr:`model_name`: with
  no ``model`` option they load the model shipped for the geometry
  (``models/<geometry>_<model_name>.onnx``, :func:`shipped_model`), and they know how to
  train one (:meth:`OnnxReconstruction.train`, ``calocoffea train --model NAME``).

Inference (:meth:`OnnxReconstruction.predict`): the chunk's hits are read once into
:class:`~calocoffea.models.inputs.FlatHits`; inputs are built and run one batch of events at
a time (bounded memory: cell images are 52 kB per event on ``cepc_ahcal``); batch boundaries
sit at multiples of ``batch_size`` in the file's global entry numbers, so the same event
is always computed in the same batch whatever the chunking or executor (onnxruntime may pick
another kernel for another batch size). The model and its lazy onnxruntime session live in
the method, which is pickled to the workers without the session. torch is never imported.
"""

from __future__ import annotations

import functools
import importlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from calocoffea.exceptions import ModelError
from calocoffea.methods import ReconstructionMethod
from calocoffea.models.inputs import FlatHits, build_inputs
from calocoffea.models.onnxmodel import LoadedModel, card_path, load_model

#: Folder of the shipped models (this package's source folder).
SHIPPED = Path(__file__).resolve().parent


def shipped_model(model_name: str, geometry: str) -> Path:
    """``models/<geometry>_<model_name>.onnx``; a missing file is a :class:`ModelError` that
    says how to train one."""
    path = SHIPPED / f"{geometry}_{model_name}.onnx"
    if not path.exists() or not card_path(path).exists():
        raise ModelError(
            f"no {model_name!r} model is shipped for geometry {geometry!r} ({path} missing); "
            f"train one with `calocoffea train --model {model_name} FILES... -o model.onnx` "
            f"and pass it with --option model=model.onnx (or --method model.onnx)"
        )
    return path


def aligned_batches(entry_start: int, n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) event ranges of a chunk of ``n`` events whose first event is global entry
    ``entry_start``, cut at multiples of ``batch_size`` in global entry numbers."""
    if n <= 0:
        return []
    first = entry_start - entry_start % batch_size
    cuts = list(range(first + batch_size, entry_start + n, batch_size))
    edges = [entry_start, *cuts, entry_start + n]
    return [(a - entry_start, b - entry_start) for a, b in itertools.pairwise(edges)]


@dataclass(frozen=True)
class OnnxOptions:
    """Options of :class:`OnnxReconstruction` and the learned models built on it."""

    #: model file (.onnx with its .card.json beside it); empty: the shipped model
    model: str = ""
    #: events per onnxruntime call, aligned to global entry numbers
    batch_size: int = 1024
    #: onnxruntime intra-op threads (1 per worker: results identical on every executor)
    intra_op_threads: int = 1


class OnnxReconstruction(ReconstructionMethod):
    """Event energy [GeV] from an ONNX model file run with onnxruntime."""

    description: ClassVar[str] = "an ONNX model file with its model card (option model=PATH)"
    url: ClassVar[str] = "https://onnxruntime.ai/docs/api/python/api_summary.html"
    Options: ClassVar[type] = OnnxOptions
    input_stage: ClassVar[str] = "gev"
    #: name of the shipped model file (``<geometry>_<model_name>.onnx``); empty: none
    model_name: ClassVar[str] = ""
    #: "module:function" that trains the model (:meth:`train`); empty: no training
    trainer: ClassVar[str] = ""
    options: OnnxOptions

    def __init__(self, geometry: str, options: Any = None, **kwargs: Any) -> None:
        super().__init__(geometry, options, **kwargs)
        if self.options.batch_size < 1:
            raise ModelError(f"batch_size must be >= 1, got {self.options.batch_size}")
        _ = self.model  # load and check now: a bad file fails before any chunk runs

    @property
    def model_path(self) -> Path:
        if self.options.model:
            return Path(self.options.model)
        if not self.model_name:
            raise ModelError(
                "the onnx reconstruction needs a model file: --option model=PATH "
                "(or --method PATH.onnx)"
            )
        return shipped_model(self.model_name, self.geometry)

    @functools.cached_property
    def model(self) -> LoadedModel:
        """The checked model (card, graph, geometry hash); its session is made on first use."""
        return load_model(
            self.model_path,
            geometry=self.geometry,
            intra_op_threads=self.options.intra_op_threads,
            batch_size=self.options.batch_size,
        )

    def predict(self, events: Any) -> npt.NDArray[np.float64]:
        hits = FlatHits.from_events(events)
        start = int(getattr(events, "metadata", {}).get("entrystart", 0) or 0)
        return self.predict_hits(hits, entry_start=start)

    def predict_hits(self, hits: FlatHits, entry_start: int = 0) -> npt.NDArray[np.float64]:
        """Energies of the events of ``hits`` (the first is global entry ``entry_start``)."""
        shapes = {item.name: item.shape for item in self.model.card.inputs}
        parts = [
            self.model.predict(
                build_inputs(shapes, hits.events(a, b), self.detector), batch_size=b - a
            )
            for a, b in aligned_batches(entry_start, len(hits), self.options.batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)

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
        """Train this model on calibrated ``files``; write ``output`` (.onnx) and its card:
        the function :attr:`trainer` names (imported only now: it may need torch)."""
        if not cls.trainer:
            raise ModelError(
                f"{cls.__name__} runs a given model file and cannot train one; train a named "
                "model: calocoffea train --model gbr|cnn_lstm|dual_branch_cnn|"
                "software_compensation"
            )
        module, _, function = cls.trainer.partition(":")
        train = getattr(importlib.import_module(module), function)
        return Path(train(files, output, options=options, seed=seed, command=command))


__all__ = ["OnnxOptions", "OnnxReconstruction", "aligned_batches", "shipped_model"]
