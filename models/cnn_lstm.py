"""The CNN+LSTM energy regression of seed 000: a CNN reads the hit image of each super-layer,
an LSTM follows the shower through the super-layers, a head gives the energy [GeV].

What to use when:

- :func:`train` -- what ``calocoffea train --model cnn_lstm FILES... -o MODEL.onnx`` runs
  (through :meth:`calocoffea.plugins.cnn_lstm.CnnLstm.train`): train on calibrated
  (``gev``) files, export the best validation state to ONNX, write the card and the curves.
- :class:`CnnLstmOptions` -- the training options (``--option key=value``), every default
  with its meaning and unit.
- :func:`build_network` -- the torch module alone (for studies; the plugin never needs it).

The network (input ``cell_images`` [GeV], shape (N, layers, nx, ny); output ``energy`` [GeV],
shape (N,)):

1. cells are scaled inside the graph, z = log(1 + E / e0) with e0 one MIP (option
   ``cell_scale_gev``): linear below a MIP, logarithmic above, so the card needs no
   normalisation and a 4 GeV core cell does not drown a 20 MeV halo hit;
2. consecutive layers are grouped into super-layers of ``layers_per_superlayer`` channels
   (zero layers are appended when the count does not divide); one small CNN shared by every
   super-layer: conv 3x3 (``channels``), ReLU, conv 3x3 stride 2 (2 x ``channels``), ReLU,
   then the mean and the maximum of each channel over the image, plus log(1 + E_SL / 1 GeV)
   of the super-layer's energy sum;
3. an LSTM (``hidden`` units) reads these vectors from the front super-layer to the back:
   the development of the shower along depth;
4. a head (``hidden`` ReLU units) on the final LSTM state and two global features computed
   in the graph, log(S / 20 GeV) of the cell sum S and log(1 + hits) / 5, gives g, and
   E = S exp(g): the network learns a per-event correction of the calibrated sum (linearity
   comes for free, an empty event gives 0). Before training, g's bias is the mean of
   log(E_beam / S) over the training sample and the head's last weights are zero, so
   training starts from the sum's mean scale.

Training: AdamW with cosine annealing over the planned steps, batches of whole events from
the streaming :class:`~calocoffea.streaming.ShowerLoader` (:func:`~.training.prepare_shards`;
the inputs of each batch are built by :func:`~.training.iter_inputs`, so a sample larger than
memory works), train/validation/test split by event (:func:`~.training.split_loader`).
The loss (option ``loss``):

- ``relative`` (default): mean ((E - E_beam) / E_beam)^2. Per beam energy this is the
  squared relative resolution plus the squared relative bias, the two numbers the
  resolution study reports, with every energy counting alike in those units;
- ``stochastic``: mean (E - E_beam)^2 / (E_beam x 1 GeV), each event in units of a
  sampling-dominated resolution (sigma^2 ~ E): less weight on the low energies, whose
  relative resolution is large and hard to improve.

Every ``validate_every`` steps the loss on (the first ``validation_events`` of) the
validation split is computed; the state with the lowest one is kept, training stops after
``patience`` validations without improvement, after ``steps`` steps or ``epochs`` epochs, or
after ``max_minutes``. Checkpoints (``torch.save`` of state dicts; read back with
``torch.load(..., weights_only=True)``): ``last.pt`` (everything needed to resume: model,
optimizer, scheduler, position in the data, best state, curves), ``best.pt`` (the best model
state), and with ``keep_checkpoints`` one ``step-NNNNNNN.pt`` per validation. ``resume=true``
continues from ``<checkpoint_dir>/last.pt`` exactly where it stopped: with the same options
and threads the result is the one of an uninterrupted run.

Export: the best state, on the CPU, with torch's TorchScript-based exporter (``dynamo=False``:
the dynamo exporter needs onnxscript, not a dependency here), opset 17, a dynamic batch axis,
one self-contained file. The card's metrics: :func:`~.training.test_metrics` of the ONNX
predictions on the test split, the same for the calibrated sum corrected linearly
(E' = (S - b) / a, a and b fitted on the training split: the baseline), and
``onnx_parity_max_relative``, the largest |E_onnx - E_torch| / |E_torch| over the test split
(must stay below 1e-5, else training fails). torch is imported only inside :func:`train` and
:func:`build_network`; seeded and deterministic (``torch.use_deterministic_algorithms``); the
GPU when ``torch.cuda.is_available()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from calocoffea.exceptions import MethodOptionsError, ModelError
from calocoffea.geometry import Geometry
from calocoffea.methods import make_options, require_torch
from calocoffea.models.inputs import image_shape, mip_scale_gev
from calocoffea.models.onnxmodel import current_versions
from calocoffea.models.training import (
    check_training_files,
    iter_inputs,
    model_input,
    prepare_shards,
    scratch_directory,
    split_loader,
    test_metrics,
    write_model,
)
from calocoffea.streaming import ShowerLoader

FloatArray = npt.NDArray[np.float64]

#: Model name (card, shipped file ``models/<geometry>_cnn_lstm.onnx``).
NAME = "cnn_lstm"
#: The input the network reads (:mod:`calocoffea.models.inputs`).
INPUT = "cell_images"
#: The graph output.
OUTPUT = "energy"
LOSSES = ("relative", "stochastic")
#: Scale [GeV] of a super-layer's energy in its feature log(1 + E_SL / scale).
SUPERLAYER_SCALE_GEV = 1.0
#: Reference [GeV] of the global feature log(S / reference) of the cell sum S.
SUM_REFERENCE_GEV = 20.0
#: Added to S [GeV] inside the logarithm (an empty event stays finite).
SUM_FLOOR_GEV = 1e-3
#: Divides log(1 + hits) in the global hit-count feature.
HITS_SCALE = 5.0
#: ONNX opset of the export.
OPSET = 17
#: Largest accepted |E_onnx - E_torch| / |E_torch| on the test split.
PARITY_TOLERANCE = 1e-5
#: Events per batch when evaluating (validation, test, parity): no gradients, larger is faster.
EVAL_BATCH = 1024
#: Version of the checkpoint layout.
CHECKPOINT_FORMAT = 1
LAST = "last.pt"
BEST = "best.pt"


# ------------------------------------------------------------------------------ options


@dataclass(frozen=True)
class CnnLstmOptions:
    """Training options of ``cnn_lstm`` (``--option key=value``)."""

    #: most optimizer steps (the cosine horizon when fewer than epochs x batches per epoch)
    steps: int = 20_000
    #: most passes over the training split
    epochs: int = 30
    #: events per training batch
    batch_size: int = 256
    #: AdamW's initial learning rate
    learning_rate: float = 2e-3
    #: anneal the learning rate to 0 along a cosine over the planned steps (false: constant)
    cosine: bool = True
    #: AdamW's decoupled weight decay
    weight_decay: float = 1e-4
    #: stop after this many validations without improvement; 0: never stop early
    patience: int = 10
    #: a validation improves when its loss falls below best x (1 - tolerance)
    tolerance: float = 1e-4
    #: steps between validations (and checkpoints); 0: once per epoch
    validate_every: int = 250
    #: events of the validation split used per validation (its first ones); 0: all
    validation_events: int = 20_000
    #: folder of the checkpoints; empty: a scratch folder removed at the end
    checkpoint_dir: str = ""
    #: continue from <checkpoint_dir>/last.pt (same options, files and seed)
    resume: bool = False
    #: also keep step-NNNNNNN.pt at every validation (last.pt and best.pt are always written)
    keep_checkpoints: bool = False
    #: consecutive layers per super-layer (one CNN image with this many channels)
    layers_per_superlayer: int = 4
    #: channels of the first convolution (the second has twice as many)
    channels: int = 16
    #: LSTM state size and hidden units of the head
    hidden: int = 64
    #: "relative": ((E - E_beam) / E_beam)^2; "stochastic": (E - E_beam)^2 / (E_beam x 1 GeV)
    loss: str = "relative"
    #: e0 [GeV] of the cell scaling log(1 + E / e0); 0: one MIP of the geometry (mean over
    #: layers of the calibrated MIP energy)
    cell_scale_gev: float = 0.0
    #: events held by the shuffle buffer of the training loader (memory: the hits only)
    buffer_events: int = 20_000
    #: stop training after this many minutes of wall time (a checkpoint allows resuming);
    #: 0: no limit
    max_minutes: float = 0.0
    #: torch threads while training (0: torch's default)
    threads: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise MethodOptionsError(f"unknown loss {self.loss!r}; valid: {', '.join(LOSSES)}")
        at_least_one = ("steps", "epochs", "batch_size", "layers_per_superlayer", "channels",
                        "hidden")  # fmt: skip
        for name in at_least_one:
            if getattr(self, name) < 1:
                raise MethodOptionsError(
                    f"option {name!r} of cnn_lstm must be at least 1, got {getattr(self, name)}"
                )
        non_negative = ("patience", "validate_every", "validation_events", "threads",
                        "weight_decay", "tolerance", "cell_scale_gev", "max_minutes")  # fmt: skip
        for name in non_negative:
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise MethodOptionsError(f"option {name!r} of cnn_lstm must be >= 0, got {value}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise MethodOptionsError(
                f"option 'learning_rate' of cnn_lstm must be positive, got {self.learning_rate}"
            )
        if self.buffer_events < self.batch_size:
            raise MethodOptionsError(
                f"buffer_events ({self.buffer_events}) must hold at least one batch "
                f"(batch_size={self.batch_size})"
            )
        if self.resume and not self.checkpoint_dir:
            raise MethodOptionsError(
                "resume=true needs checkpoint_dir=FOLDER, the folder of the run to continue "
                "(its last.pt)"
            )


#: Options that fix the network or the sequence of steps: a checkpoint is resumed only with
#: the same values.
_TRAJECTORY = ("steps", "epochs", "batch_size", "learning_rate", "cosine", "weight_decay",
               "tolerance", "validate_every", "validation_events", "layers_per_superlayer",
               "channels", "hidden", "loss", "cell_scale_gev", "buffer_events")  # fmt: skip


@dataclass(frozen=True)
class Architecture:
    """What :func:`build_network` needs: the image shape and the sizes."""

    n_layers: int
    nx: int
    ny: int
    layers_per_superlayer: int
    channels: int
    hidden: int
    #: e0 [GeV] of log(1 + E / e0)
    cell_scale_gev: float

    @property
    def n_superlayers(self) -> int:
        return -(-self.n_layers // self.layers_per_superlayer)

    @classmethod
    def of(cls, geometry: Geometry, options: CnnLstmOptions) -> Architecture:
        n_layers, nx, ny = image_shape(geometry)
        scale = options.cell_scale_gev or float(np.mean(mip_scale_gev(geometry)))
        return cls(n_layers, nx, ny, options.layers_per_superlayer, options.channels,
                   options.hidden, scale)  # fmt: skip


# ------------------------------------------------------------------------------ network


def build_network(architecture: Architecture, log_offset: float = 0.0) -> Any:
    """The torch module (CPU, float32, initialised from torch's global generator); ``g``
    starts at ``log_offset`` for every event (module docstring, step 4)."""
    torch = require_torch("cnn_lstm")
    return _network_class(torch)(architecture, log_offset)


def _network_class(torch: Any) -> type:
    """The module class, defined here so that importing this module never imports torch."""
    nn = torch.nn
    module: Any = nn.Module

    class CnnLstmNetwork(module):
        """cell_images [GeV] (N, layers, nx, ny) -> energy [GeV] (N,)."""

        def __init__(self, a: Architecture, log_offset: float) -> None:
            super().__init__()
            self.lps, self.nx, self.ny = a.layers_per_superlayer, a.nx, a.ny
            self.n_superlayers = a.n_superlayers
            self.padding = a.n_superlayers * a.layers_per_superlayer - a.n_layers
            self.cell_scale = float(a.cell_scale_gev)
            c = a.channels
            self.cnn = nn.Sequential(
                nn.Conv2d(a.layers_per_superlayer, c, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(c, 2 * c, 3, stride=2, padding=1),
                nn.ReLU(),
            )
            self.n_features = 2 * (2 * c) + 1
            self.lstm = nn.LSTM(self.n_features, a.hidden, batch_first=True)
            self.head = nn.Sequential(nn.Linear(a.hidden + 2, a.hidden), nn.ReLU(),
                                      nn.Linear(a.hidden, 1))  # fmt: skip
            with torch.no_grad():
                self.head[2].weight.zero_()
                self.head[2].bias.fill_(float(log_offset))

        def forward(self, cell_images: Any) -> Any:
            x = cell_images
            if self.padding:
                x = nn.functional.pad(x, (0, 0, 0, 0, 0, self.padding))
            images = torch.log1p(x / self.cell_scale).reshape(-1, self.lps, self.nx, self.ny)
            maps = self.cnn(images)
            superlayer_sums = x.reshape(-1, self.lps * self.nx * self.ny).sum(1, keepdim=True)
            features = torch.cat(
                [maps.mean((2, 3)), maps.amax((2, 3)),
                 torch.log1p(superlayer_sums / SUPERLAYER_SCALE_GEV)], 1,
            )  # fmt: skip
            _, (state, _) = self.lstm(features.reshape(-1, self.n_superlayers, self.n_features))
            total = x.sum((1, 2, 3))
            hits = (x > 0).to(x.dtype).sum((1, 2, 3))
            globals_ = torch.stack(
                [torch.log((total + SUM_FLOOR_GEV) / SUM_REFERENCE_GEV),
                 torch.log1p(hits) / HITS_SCALE], 1,
            )  # fmt: skip
            g = self.head(torch.cat([state[-1], globals_], 1))[:, 0]
            return total * torch.exp(g)

    return CnnLstmNetwork


def parameter_count(network: Any) -> int:
    """Trainable parameters of ``network``."""
    return int(sum(p.numel() for p in network.parameters() if p.requires_grad))


def loss_of(torch: Any, energy: Any, beam_gev: Any, kind: str) -> Any:
    """Per-event loss (module docstring) of predictions ``energy`` against ``beam_gev``."""
    if kind == "relative":
        return ((energy - beam_gev) / beam_gev).square()
    return (energy - beam_gev).square() / beam_gev


# ------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class Splits:
    """The loaders of one training: train (shuffled), validation (a fixed subset), test."""

    train: ShowerLoader
    validation: ShowerLoader
    test: ShowerLoader


def make_splits(loader: ShowerLoader, seed: int, o: CnnLstmOptions) -> Splits:
    """Split by event; validation keeps its first ``validation_events`` (shard order)."""
    train, validation, test = split_loader(loader, seed)
    if o.validation_events and validation.n_showers > o.validation_events:
        validation = validation.subset(np.arange(validation.n_showers) < o.validation_events)
    evaluation = {"batch_showers": EVAL_BATCH, "buffer_showers": max(EVAL_BATCH, o.batch_size)}
    return Splits(train, validation.with_options(**evaluation), test.with_options(**evaluation))


@dataclass(frozen=True)
class SumBaseline:
    """The calibrated sum corrected linearly, E' = (S - b) / a, fitted on the training split
    (least squares of S against E_beam); ``log_offset`` is the mean of log(E_beam / S)."""

    a: float
    b: float
    log_offset: float

    def correct(self, s: npt.ArrayLike) -> FloatArray:
        return (np.asarray(s, dtype=np.float64) - self.b) / self.a


def sum_baseline(train: ShowerLoader) -> SumBaseline:
    """One pass over the training hits (no images) for :class:`SumBaseline`."""
    n, sx, sy, sxx, sxy, log_sum, n_log = 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0
    for batch in train.epoch(0, shuffle=False):
        s = batch.sum_per_shower(batch.hits["energy"].astype(np.float64))
        beam = np.asarray(batch.events["beam_energy"], dtype=np.float64)
        n += s.size
        sx, sy = sx + beam.sum(), sy + s.sum()
        sxx, sxy = sxx + (beam * beam).sum(), sxy + (beam * s).sum()
        ok = s > 0
        log_sum += float(np.log(beam[ok] / s[ok]).sum())
        n_log += int(ok.sum())
    denominator = n * sxx - sx * sx
    if n_log == 0 or denominator <= 0:
        raise ModelError(
            "the training split has no event with energy, or a single beam energy: the "
            "network corrects the calibrated sum and needs showers at several energies; "
            "train on a continuous spectrum (Beam(energy_range_gev=(1, 120)))"
        )
    a = (n * sxy - sx * sy) / denominator
    return SumBaseline(a=float(a), b=float((sy - a * sx) / n), log_offset=log_sum / n_log)


# ------------------------------------------------------------------------------ torch setup


def device_of(torch: Any) -> Any:
    """The GPU when torch sees one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def torch_settings(torch: Any, seed: int, threads: int, device: Any) -> Iterator[None]:
    """Seeded, deterministic torch with ``threads`` threads; restored on exit."""
    previous = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1])


def _tensor(torch: Any, array: npt.ArrayLike, device: Any) -> Any:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)


# ------------------------------------------------------------------------------ training


class Trainer:
    """One training run: network, optimizer, schedule, data position, curves, checkpoints."""

    def __init__(
        self,
        torch: Any,
        splits: Splits,
        geometry: Geometry,
        o: CnnLstmOptions,
        *,
        seed: int,
        checkpoints: Path,
        log_offset: float,
    ) -> None:
        self.torch, self.splits, self.geometry, self.o, self.seed = torch, splits, geometry, o, seed
        self.checkpoints = checkpoints
        self.device = device_of(torch)
        #: where the training ran ("cpu" or "cuda"), for the card
        self.trained_on = str(self.device.type)
        self.architecture = Architecture.of(geometry, o)
        self.shapes = {INPUT: (None, *image_shape(geometry))}
        self.network = build_network(self.architecture, log_offset).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.network.parameters(), lr=o.learning_rate, weight_decay=o.weight_decay
        )
        self.batches_per_epoch = len(splits.train)
        self.planned_steps = min(o.steps, o.epochs * self.batches_per_epoch)
        self.scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.planned_steps)
            if o.cosine
            else torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        )
        self.step, self.epoch, self.batch_in_epoch, self.stale = 0, 0, 0, 0
        self.best_loss, self.best_step = math.inf, 0
        self.best_state = self._state_copy()
        self.curves: dict[str, Any] = {
            "loss": o.loss,
            "train_loss_steps": [],
            "learning_rate_steps": [],
            "validation_steps": [],
            "validation_loss": [],
        }
        self.seconds = 0.0
        self.stopped = ""

    # ---- state ----------------------------------------------------------------------
    def _state_copy(self) -> dict[str, Any]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.network.state_dict().items()}

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the checkpoint."""
        values = {name: getattr(self.o, name) for name in _TRAJECTORY}
        values.update({"seed": self.seed, "train_events": self.splits.train.n_showers})
        return values

    def checkpoint(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint(),
            "model": self._state_copy(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "position": {"step": self.step, "epoch": self.epoch, "batch": self.batch_in_epoch},
            "best": {
                "loss": self.best_loss,
                "step": self.best_step,
                "stale": self.stale,
                "model": self.best_state,
            },
            "curves": self.curves,
            "seconds": self.seconds,
        }

    def save(self) -> None:
        """``last.pt`` and ``best.pt`` (and ``step-NNNNNNN.pt`` with keep_checkpoints),
        written through temporary names."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        targets = [(LAST, self.checkpoint()), (BEST, self.best_state)]
        if self.o.keep_checkpoints:
            targets.append((f"step-{self.step:07d}.pt", targets[0][1]))
        for name, state in targets:
            temporary = self.checkpoints / f".{name}.tmp"
            self.torch.save(state, temporary)
            temporary.replace(self.checkpoints / name)

    def resume(self) -> None:
        """Continue from ``last.pt``; a missing or foreign checkpoint is a ModelError."""
        path = self.checkpoints / LAST
        if not path.exists():
            raise ModelError(
                f"resume=true but {path} does not exist; give the checkpoint_dir of an earlier "
                "run (it writes last.pt at every validation), or drop resume to start afresh"
            )
        state = self.torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ModelError(
                f"{path} has checkpoint format {state.get('format')!r}, this calocoffea writes "
                f"{CHECKPOINT_FORMAT}; start a new run without resume"
            )
        mine = self.fingerprint()
        differ = {k: (v, mine.get(k)) for k, v in state["fingerprint"].items() if mine.get(k) != v}
        if differ:
            listed = ", ".join(
                f"{k}: {old!r} then, {new!r} now" for k, (old, new) in differ.items()
            )
            raise ModelError(
                f"{path} belongs to another training ({listed}); resume with the same options, "
                "files and --seed, or start afresh without resume"
            )
        self.network.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        position, best = state["position"], state["best"]
        self.step, self.epoch, self.batch_in_epoch = (
            position["step"], position["epoch"], position["batch"],
        )  # fmt: skip
        self.best_loss, self.best_step, self.stale = best["loss"], best["step"], best["stale"]
        self.best_state = best["model"]
        self.curves = state["curves"]
        self.seconds = float(state["seconds"])

    # ---- steps ----------------------------------------------------------------------
    def train_step(self, images: npt.NDArray[Any], beam: npt.NDArray[Any]) -> float:
        torch = self.torch
        self.network.train()
        energy = self.network(_tensor(torch, images, self.device))
        loss = loss_of(torch, energy, _tensor(torch, beam, self.device), self.o.loss).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    def predict(self, loader: ShowerLoader) -> Iterator[tuple[npt.NDArray[Any], FloatArray, Any]]:
        """(images, beam energies, torch predictions on the device) per batch, shard order."""
        self.network.eval()
        with self.torch.no_grad():
            for inputs, events in iter_inputs(loader, self.shapes, self.geometry, shuffle=False):
                images = inputs[INPUT]
                yield (
                    images,
                    events["beam_energy"],
                    self.network(_tensor(self.torch, images, self.device)),
                )

    def validation_loss(self) -> float:
        total, n = 0.0, 0
        for _, beam, energy in self.predict(self.splits.validation):
            beam_t = _tensor(self.torch, beam, self.device)
            total += float(loss_of(self.torch, energy, beam_t, self.o.loss).sum())
            n += beam.size
        return total / max(n, 1)

    def validate(self) -> bool:
        """Validate, keep the best state, checkpoint; True when patience ran out."""
        loss = self.validation_loss()
        self.curves["validation_steps"].append(self.step)
        self.curves["validation_loss"].append(loss)
        if loss < self.best_loss * (1.0 - self.o.tolerance):
            self.best_loss, self.best_step, self.stale = loss, self.step, 0
            self.best_state = self._state_copy()
        else:
            self.stale += 1
        self.save()
        return bool(self.o.patience and self.stale >= self.o.patience)

    # ---- loop -----------------------------------------------------------------------
    def run(self) -> None:
        """Train until steps, epochs, patience or time run out (module docstring)."""
        o = self.o
        start, before = time.perf_counter(), self.seconds
        deadline = start + 60.0 * o.max_minutes if o.max_minutes else math.inf
        if self.step == 0 and not self.curves["validation_steps"]:
            self.validate()  # the starting point: the sum's mean scale
        while not self.stopped:
            if self.step >= self.planned_steps or self.epoch >= o.epochs:
                self.stopped = "steps" if self.step >= self.planned_steps else "epochs"
                break
            batches = iter_inputs(self.splits.train, self.shapes, self.geometry, epoch=self.epoch)
            for k, (inputs, events) in enumerate(batches):
                if k < self.batch_in_epoch:
                    continue  # resumed: these were trained on before the checkpoint
                loss = self.train_step(inputs[INPUT], events["beam_energy"])
                self.curves["train_loss_steps"].append(loss)
                self.curves["learning_rate_steps"].append(float(self.scheduler.get_last_lr()[0]))
                self.step, self.batch_in_epoch = self.step + 1, k + 1
                self.seconds = before + time.perf_counter() - start
                if not math.isfinite(loss):
                    raise ModelError(
                        f"cnn_lstm: the training loss became {loss} at step {self.step}; lower "
                        f"learning_rate (now {o.learning_rate}) or check the inputs for "
                        "events without energy"
                    )
                if o.validate_every and self.step % o.validate_every == 0 and self.validate():
                    self.stopped = "patience"
                elif self.step >= self.planned_steps:
                    self.stopped = "steps"
                elif time.perf_counter() > deadline:
                    self.stopped = "max_minutes"
                if self.stopped:
                    break
            else:
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                if not o.validate_every and self.validate():
                    self.stopped = "patience"
        if self.curves["validation_steps"][-1] != self.step:
            self.validate()  # the final state is a candidate too
        self.seconds = before + time.perf_counter() - start


# ------------------------------------------------------------------------------ export


def export_onnx(torch: Any, network: Any, architecture: Architecture) -> bytes:
    """The network (CPU, eval) as one self-contained ONNX file with a dynamic batch axis.

    The TorchScript-based exporter warns that it is deprecated, that tracing nn.LSTM turns
    some of its checks into constants, and that an LSTM exported with a batch other than 1
    may misbehave with variable sequence lengths; none applies (the sequence length is
    fixed by the geometry) and the parity check on the test split proves the graph, so
    those warnings are silenced here, and only here."""
    network = network.to("cpu").eval()
    example = torch.zeros(2, architecture.n_layers, architecture.nx, architecture.ny)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*LSTM.*", category=UserWarning)
        torch.onnx.export(
            network,
            (example,),
            buffer,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def onnx_session(data: bytes) -> Any:
    """An onnxruntime session (CPU, one thread, full optimisation) as inference makes it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class TestResult:
    """Predictions on the test split: ONNX, the corrected sum, the beam; the parity."""

    energy_onnx: FloatArray
    energy_sum: FloatArray
    beam_gev: FloatArray
    parity_max_relative: float


def evaluate_test(trainer: Trainer, data: bytes, baseline: SumBaseline) -> TestResult:
    """Run the best state (torch, eager) and the exported graph (onnxruntime) on the test
    split; the largest relative difference between the two."""
    session = onnx_session(data)
    parts: dict[str, list[FloatArray]] = {"onnx": [], "sum": [], "beam": []}
    worst = 0.0
    for images, beam, energy in trainer.predict(trainer.splits.test):
        torch_energy = energy.to("cpu").numpy().astype(np.float64)
        onnx_energy = session.run([OUTPUT], {INPUT: images})[0].astype(np.float64)
        scale = np.maximum(np.abs(torch_energy), np.finfo(np.float32).tiny)
        if onnx_energy.size:
            worst = max(worst, float(np.max(np.abs(onnx_energy - torch_energy) / scale)))
        parts["onnx"].append(onnx_energy)
        parts["sum"].append(baseline.correct(images.sum(axis=(1, 2, 3), dtype=np.float64)))
        parts["beam"].append(np.asarray(beam, dtype=np.float64))
    joined = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    return TestResult(joined["onnx"], joined["sum"], joined["beam"], worst)


# ------------------------------------------------------------------------------ entry


def train(
    files: Sequence[str],
    output: str,
    *,
    options: Mapping[str, str],
    seed: int,
    command: str,
) -> Path:
    """Train ``cnn_lstm`` on calibrated ``files``; write ``output`` (.onnx), its card and
    ``<output>.curves.json``; returns the ONNX path (module docstring)."""
    torch = require_torch("cnn_lstm")
    o: CnnLstmOptions = make_options(CnnLstmOptions, dict(options))
    geometry = check_training_files(files)
    image_shape(geometry)  # a geometry without one square-grid section fails before any work
    started = time.perf_counter()
    with scratch_directory(NAME) as scratch:
        loader = prepare_shards(
            files, Path(scratch) / "shards", batch_showers=o.batch_size,
            buffer_showers=o.buffer_events, seed=seed,
        )  # fmt: skip
        splits = make_splits(loader, seed, o)
        baseline = sum_baseline(splits.train)
        checkpoints = Path(o.checkpoint_dir) if o.checkpoint_dir else Path(scratch) / "checkpoints"
        device = device_of(torch)
        with torch_settings(torch, seed, o.threads, device):
            trainer = Trainer(torch, splits, geometry, o, seed=seed, checkpoints=checkpoints,
                              log_offset=baseline.log_offset)  # fmt: skip
            if o.resume:
                trainer.resume()
            trainer.run()
            trainer.network.load_state_dict(trainer.best_state)
            data = export_onnx(torch, trainer.network, trainer.architecture)
            trainer.device = torch.device("cpu")
            result = evaluate_test(trainer, data, baseline)
        if result.parity_max_relative > PARITY_TOLERANCE:
            keep = f" (checkpoints in {checkpoints})" if o.checkpoint_dir else ""
            raise ModelError(
                f"cnn_lstm: onnxruntime and torch differ by up to {result.parity_max_relative:.2e} "
                f"(relative) on the test split, more than {PARITY_TOLERANCE:g}: the export is "
                f"wrong{keep}; report it with the torch and onnxruntime versions"
            )
        metrics = card_metrics(trainer, result, baseline, time.perf_counter() - started)
        return write_model(
            data,
            output,
            name=NAME,
            geometry=geometry,
            inputs=[model_input(INPUT, geometry)],
            output_name=OUTPUT,
            training_sample=files,
            command=command,
            metrics=metrics,
            versions=current_versions(torch=torch.__version__),
            curves=trainer.curves | {"stopped": trainer.stopped, "best_step": trainer.best_step},
        )


def card_metrics(
    trainer: Trainer, result: TestResult, baseline: SumBaseline, seconds: float
) -> dict[str, Any]:
    """What the card records: test metrics of the network and of the corrected sum, the
    parity, the sizes and the training's course."""
    return {
        **test_metrics(result.energy_onnx, result.beam_gev),
        "sum_baseline": test_metrics(result.energy_sum, result.beam_gev)
        | {"a": baseline.a, "b_gev": baseline.b},
        "onnx_parity_max_relative": result.parity_max_relative,
        "loss": trainer.o.loss,
        "validation_loss_best": trainer.best_loss,
        "best_step": trainer.best_step,
        "steps": trainer.step,
        "stopped": trainer.stopped,
        "split_events": {
            "train": trainer.splits.train.n_showers,
            "validation": trainer.splits.validation.n_showers,
            "test": trainer.splits.test.n_showers,
        },
        "parameters": parameter_count(trainer.network),
        "architecture": dataclasses.asdict(trainer.architecture),
        "options": dataclasses.asdict(trainer.o),
        "device": trainer.trained_on,
        "training_seconds": trainer.seconds,
        "seconds_per_step": trainer.seconds / max(trainer.step, 1),
        "total_seconds": seconds,
    }


def copy_checkpoint(source: str | Path, folder: str | Path) -> Path:
    """Make ``source`` (e.g. a kept ``step-NNNNNNN.pt``) the ``last.pt`` of ``folder``, to
    resume from that point with ``resume=true checkpoint_dir=folder``."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(source, target / LAST))


__all__ = [
    "Architecture",
    "CnnLstmOptions",
    "SumBaseline",
    "Trainer",
    "build_network",
    "copy_checkpoint",
    "export_onnx",
    "loss_of",
    "parameter_count",
    "train",
]
