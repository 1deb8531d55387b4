"""What every model's training shares: data from calibrated files, the event split, the
model file with its card, and the metrics on the test sample.

What to use when:

- :func:`prepare_shards` -- read calibrated (``gev``) files chunk by chunk into compact
  ``.npz`` shards of whole showers (hits: layer, i, j, x, y, energy; per event: beam energy,
  the truth fields the file has, a global event id) and give a
  :class:`~calocoffea.streaming.ShowerLoader` over them: the streaming, shuffling source of
  the networks (a training set larger than memory works: at most the loader's buffer is
  held).
- :func:`split_loader` -- train / validation / test loaders, split by event with a seeded
  permutation (never by energy block or file), the same for the same seed.
- :func:`batch_hits` -- a :class:`~calocoffea.streaming.ShowerBatch` as
  :class:`~calocoffea.models.inputs.FlatHits`, so training builds its inputs with the very
  functions inference uses (:func:`~calocoffea.models.inputs.build_inputs`).
- :func:`features_of` -- the named inputs and the per-event fields of a whole loader in
  memory (``gbr`` and software compensation fit on a few hundred thousand rows).
- :func:`test_metrics` -- what a card records: per beam-energy bin mean response and
  resolution on the test sample, and the overall relative RMS.
- :func:`write_model` -- the card (with the training sample, the exact command, the test
  metrics and the versions) and the ONNX file, through :func:`~.onnxmodel.save_model`.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import numpy.typing as npt
import onnx
import uproot

from calocoffea.exceptions import InputFileError, MethodOptionsError, ModelError
from calocoffea.geometry import Geometry, decode_cellid, get_geometry
from calocoffea.io import atomic_write, read_metadata
from calocoffea.models.inputs import FlatHits, build_inputs, input_shape
from calocoffea.models.onnxmodel import ModelCard, ModelInput, ModelOutput, save_model
from calocoffea.streaming import ShowerBatch, ShowerLoader, write_npz_shard

FloatArray = npt.NDArray[np.float64]

#: Hit fields of the training shards (``x``/``y`` are the cell centre [mm]).
HIT_FIELDS: tuple[str, ...] = ("layer", "i", "j", "x", "y", "energy")
#: Per-event truth fields copied into the shards when the files have them.
TRUTH_FIELDS: tuple[str, ...] = ("fem", "fem_ecal", "fem_hcal")
#: Events per shard written by :func:`prepare_shards`.
SHARD_EVENTS = 20_000


def check_training_files(files: Sequence[str | Path]) -> Geometry:
    """The common geometry of calibrated training files; wrong stage or mixed geometries
    are an :class:`InputFileError` naming the file."""
    if not files:
        raise InputFileError("no training files given")
    geometries = set()
    for path in files:
        metadata = read_metadata(path)
        if metadata.stage != "gev":
            raise InputFileError(
                f"{path} is at stage {metadata.stage!r}; models train on calibrated files "
                "(stage 'gev'): run `calocoffea calibrate --to gev` first"
            )
        geometries.add(metadata.geometry)
    if len(geometries) > 1:
        raise InputFileError(f"training files mix geometries {sorted(geometries)}; use one")
    return get_geometry(geometries.pop())


def prepare_shards(
    files: Sequence[str | Path],
    directory: str | Path,
    *,
    batch_showers: int = 256,
    buffer_showers: int = 20_000,
    seed: int = 0,
    shard_events: int = SHARD_EVENTS,
) -> ShowerLoader:
    """Shards of the calibrated ``files`` in ``directory`` and a loader over all of them.

    Event field ``event_id`` numbers the events over all files in order (the split key);
    ``beam_energy`` [GeV] is the target, truth fields are copied when present."""
    check_training_files(files)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[Path] = []
    sizes: list[int] = []
    first_id = 0
    event_fields: tuple[str, ...] = ()
    for n_file, path in enumerate(files):
        with uproot.open(path) as file:
            tree = file["events"]
            truth = tuple(f for f in TRUTH_FIELDS if f in tree.keys())
            fields = ("beam_energy", *truth)
            if event_fields and event_fields != fields:
                raise InputFileError(
                    f"{path} has truth fields {truth}, the files before it {event_fields[1:]}; "
                    "train on files of one kind"
                )
            event_fields = fields
            hit_branches = ["hit_layer", "hit_cellid", "hit_x", "hit_y", "hit_energy"]
            for chunk in tree.iterate(
                [*hit_branches, *fields], step_size=shard_events, library="ak"
            ):
                counts = ak.to_numpy(ak.num(chunk["hit_energy"])).astype(np.int64)
                _, _, i, j = decode_cellid(ak.to_numpy(ak.flatten(chunk["hit_cellid"])))
                hits = {
                    "layer": ak.to_numpy(ak.flatten(chunk["hit_layer"])).astype(np.int16),
                    "i": np.asarray(i, dtype=np.int16),
                    "j": np.asarray(j, dtype=np.int16),
                    "x": ak.to_numpy(ak.flatten(chunk["hit_x"])).astype(np.float32),
                    "y": ak.to_numpy(ak.flatten(chunk["hit_y"])).astype(np.float32),
                    "energy": ak.to_numpy(ak.flatten(chunk["hit_energy"])).astype(np.float32),
                }
                n = counts.size
                events = {f: ak.to_numpy(chunk[f]).astype(np.float64) for f in fields}
                events["event_id"] = np.arange(first_id, first_id + n, dtype=np.int64)
                shard = out / f"shard-{n_file:04d}-{len(shards):05d}.npz"
                shards.append(write_npz_shard(shard, events, counts, hits))
                sizes.append(n)
                first_id += n
    if first_id == 0:
        raise InputFileError(f"the training files {list(map(str, files))} hold no events")
    return ShowerLoader(
        shards,
        fields=HIT_FIELDS,
        event_fields=(*event_fields, "event_id"),
        batch_showers=batch_showers,
        buffer_showers=max(buffer_showers, batch_showers),
        seed=seed,
        sizes=sizes,
    )


def split_loader(
    loader: ShowerLoader, seed: int, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> tuple[ShowerLoader, ShowerLoader, ShowerLoader]:
    """(train, validation, test) by event with a seeded permutation; disjoint and complete."""
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-9:
        raise ModelError(f"split fractions {fractions} must be three positive numbers summing to 1")
    n = loader.n_showers
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5B117]))
    order = rng.permutation(n)
    n_train, n_val = round(fractions[0] * n), round(fractions[1] * n)
    parts = []
    for chosen in (order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]):
        keep = np.zeros(n, dtype=bool)
        keep[chosen] = True
        parts.append(loader.subset(keep))
    if min(len(p) for p in parts) == 0:
        raise ModelError(
            f"{n} events are too few for a train/validation/test split {fractions}; "
            "give more events"
        )
    return parts[0], parts[1], parts[2]


def batch_hits(batch: ShowerBatch) -> FlatHits:
    """The hits of a loader batch as :class:`FlatHits` (float64 energies and positions)."""
    h = batch.hits
    return FlatHits(
        counts=np.diff(batch.offsets).astype(np.int64),
        layer=h["layer"].astype(np.int64),
        i=h["i"].astype(np.int64),
        j=h["j"].astype(np.int64),
        x_mm=h["x"].astype(np.float64),
        y_mm=h["y"].astype(np.float64),
        energy=h["energy"].astype(np.float64),
    )


def iter_inputs(
    loader: ShowerLoader,
    shapes: Mapping[str, tuple[int | None, ...]],
    geometry: Geometry,
    *,
    epoch: int = 0,
    shuffle: bool = True,
) -> Iterator[tuple[dict[str, npt.NDArray[Any]], dict[str, npt.NDArray[Any]]]]:
    """(inputs by name, per-event fields) for every batch of one epoch of ``loader``."""
    for batch in loader.epoch(epoch, shuffle=shuffle):
        yield build_inputs(shapes, batch_hits(batch), geometry), batch.events


def features_of(
    loader: ShowerLoader, shapes: Mapping[str, tuple[int | None, ...]], geometry: Geometry
) -> tuple[dict[str, npt.NDArray[Any]], dict[str, npt.NDArray[Any]]]:
    """All inputs and per-event fields of ``loader`` in memory, in shard order."""
    parts = list(iter_inputs(loader, shapes, geometry, shuffle=False))
    if not parts:
        raise ModelError("the loader holds no events")
    inputs = {name: np.concatenate([p[0][name] for p in parts]) for name in shapes}
    events = {name: np.concatenate([p[1][name] for p in parts]) for name in parts[0][1]}
    return inputs, events


def test_metrics(
    predicted: npt.ArrayLike, beam_gev: npt.ArrayLike, bins: int = 8
) -> dict[str, Any]:
    """Mean response E/E_beam and resolution (rms of E/E_beam - 1 after the bin's mean)
    per beam-energy bin (quantile edges: equal event counts), and overall."""
    e = np.asarray(predicted, dtype=np.float64)
    beam = np.asarray(beam_gev, dtype=np.float64)
    ratio = e / beam
    edges = np.unique(np.quantile(beam, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, beam, side="right") - 1, 0, edges.size - 2)
    rows = []
    for b in range(edges.size - 1):
        r = ratio[which == b]
        if r.size < 2:
            continue
        rows.append(
            {
                "beam_low_gev": float(edges[b]),
                "beam_high_gev": float(edges[b + 1]),
                "events": int(r.size),
                "response": float(r.mean()),
                "resolution": float(r.std(ddof=1) / r.mean()),
            }
        )
    return {
        "events": int(e.size),
        "relative_rms": float(np.sqrt(np.mean((ratio - 1.0) ** 2))),
        "mean_response": float(ratio.mean()),
        "bins": rows,
    }


test_metrics.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def standardisation(x: npt.ArrayLike) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-feature (mean, scale) along the last axis for a card; constant features get
    scale 1."""
    a = np.asarray(x, dtype=np.float64)
    a = a.reshape(-1, a.shape[-1])
    mean = a.mean(axis=0)
    scale = a.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in scale)


def write_model(
    model: onnx.ModelProto | bytes,
    output: str | Path,
    *,
    name: str,
    geometry: Geometry,
    inputs: Sequence[ModelInput],
    output_name: str,
    training_sample: Sequence[str | Path],
    command: str,
    metrics: Mapping[str, Any],
    versions: Mapping[str, str],
    curves: Mapping[str, Any] | None = None,
) -> Path:
    """Save ``model`` with its card (and ``<output>.curves.json`` with the loss curves)."""
    card = ModelCard.for_geometry(
        geometry,
        name=name,
        inputs=tuple(inputs),
        output=ModelOutput(output_name, "reconstructed particle energy", "GeV"),
        training_sample=", ".join(Path(p).name for p in training_sample),
        training_command=command,
        metrics=metrics,
        versions=versions,
    )
    path = save_model(model, card, output)
    if curves is not None:
        with atomic_write(Path(output).with_suffix(".curves.json")) as temporary:
            temporary.write_text(json.dumps(curves, indent=1, allow_nan=False) + "\n")
    return path


def model_input(
    name: str, geometry: Geometry, normalisation: tuple[Any, Any] | None = None, **options: Any
) -> ModelInput:
    """The card entry of input ``name`` (shape from :func:`input_shape`), float32."""
    mean, scale = normalisation if normalisation is not None else (None, None)
    return ModelInput(name, input_shape(name, geometry, **options), "float32", mean, scale)


def check_options(
    model: str,
    options: Any,
    *,
    at_least_one: Sequence[str] = (),
    non_negative: Sequence[str] = (),
    positive: Sequence[str] = ("learning_rate",),
) -> None:
    """The range checks a network's training options share: integers at least 1, numbers
    finite and >= 0, numbers > 0, and a shuffle buffer that holds a batch (when the options
    have ``buffer_events`` and ``batch_size``); a :class:`MethodOptionsError` names the
    option, the model and the value."""
    for name in at_least_one:
        if getattr(options, name) < 1:
            raise MethodOptionsError(
                f"option {name!r} of {model} must be at least 1, got {getattr(options, name)}"
            )
    for name in non_negative:
        value = getattr(options, name)
        if not (math.isfinite(value) and value >= 0):
            raise MethodOptionsError(f"option {name!r} of {model} must be >= 0, got {value}")
    for name in positive:
        value = getattr(options, name)
        if not (math.isfinite(value) and value > 0):
            raise MethodOptionsError(f"option {name!r} of {model} must be positive, got {value}")
    buffer, batch = getattr(options, "buffer_events", None), getattr(options, "batch_size", None)
    if buffer is not None and batch is not None and buffer < batch:
        raise MethodOptionsError(
            f"buffer_events ({buffer}) must hold at least one batch (batch_size={batch})"
        )


def scratch_directory(prefix: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder for shards and checkpoints, removed when training ends."""
    return tempfile.TemporaryDirectory(prefix=f"calocoffea-{prefix}-")


__all__ = [
    "HIT_FIELDS",
    "batch_hits",
    "check_options",
    "check_training_files",
    "features_of",
    "iter_inputs",
    "model_input",
    "prepare_shards",
    "scratch_directory",
    "split_loader",
    "standardisation",
    "test_metrics",
    "write_model",
]
