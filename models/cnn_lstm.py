"""The CNN+LSTM energy regression of seed 000: a CNN reads the hit image of each super-layer,
an LSTM follows the shower through the super-layers, a head gives the energy [GeV].

What to use when:

- :func:`train` -- what ``calocoffea train --model cnn_lstm FILES... -o MODEL.onnx`` runs
  (through :meth:`calocoffea.plugins.cnn_lstm.CnnLstm.train`): train on calibrated
  (``gev``) files, export the best validation state to ONNX, write the card and the curves.
- :class:`CnnLstmOptions` -- the training options (``--option key=value``), every default
  with its meaning and unit.
- :func:`build_network` -- the torch module alone (for studies; the plugin never needs it).
- option ``target=FILES`` -- domain-adversarial training (DANN) towards unlabelled files of
  another domain, e.g. data (below); :func:`gradient_reversal` is its reversal layer.

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

Domain-adversarial training (DANN, Ganin & Lempitsky 2015, https://arxiv.org/abs/1409.7495),
seed 000's answer to the gap between simulation and data: option ``target`` names unlabelled
calibrated files of the target domain (data, or pseudo-data with effects the MC does not
model), read like the training files but without their beam energies (the loader reads
only ``event_id``: the target's labels never reach the training). The target is split like
the source (70/15/15, :func:`make_target_splits`) and streamed by its own shuffling loader
(seed :func:`target_seed`, full batches only). Every step pairs a source batch with a target
batch of the same size (the first events of the next target batch when the source batch is
the short last one of an epoch; a new target epoch starts when one is used up), runs both
through the CNN and the LSTM in one pass, and minimises

    regression loss (source) + BCE(domain classifier(GRL(h)), source 0 / target 1)

where h is the final LSTM state, the features the head reads (the global features S and
hits carry no parameters and are not given to the classifier), and GRL the gradient-reversal
layer (:func:`gradient_reversal`: identity forward, -lambda x gradient backward): the
classifier (:func:`build_domain_classifier`, two ReLU layers of ``domain_hidden``) learns
to tell the domains apart while the CNN and the LSTM learn features it cannot, and that
still give the energy. lambda follows Ganin's ramp lambda_p = ``domain_weight`` x
(2 / (1 + exp(-``domain_gamma`` p)) - 1) over the progress p = step / planned steps, or is
constant (option ``domain_schedule``). One AdamW and one learning-rate schedule drive both.
Each validation also records the domain loss (mean BCE, both domains weighted alike) and
the balanced domain accuracy (0.5: the features do not tell the domains apart) of the
source validation split against the target's, in the curves (``domain_validation_*``,
per step ``domain_loss_steps`` and ``domain_lambda_steps``). The best state is still the
one of the lowest regression loss on the SOURCE validation split: the target has no labels,
and a low domain accuracy alone says nothing about the energy. ``last.pt`` also holds the
classifier, its best state and the position in the target stream (resume continues the
same target sequence); ``best.pt`` and the ONNX file hold the regression network alone (the
classifier is a separate module, never exported: same inputs, outputs and weights as a
plain model). The card lists the target files in its training sample, marked "(unlabelled
target)", and ``metrics["domain"]`` gives the target sample and split, the DANN options and
the domain scores (test splits with the best state; validation at the best and last step).
Without ``target`` the training is exactly the plain one above (bit-identical model).

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
import functools
import io
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from calocoffea.exceptions import (
    GeometryMismatchError,
    InputFileError,
    MethodOptionsError,
    ModelError,
    StageMismatchError,
)
from calocoffea.geometry import Geometry
from calocoffea.io import read_metadata
from calocoffea.methods import make_options, require_torch
from calocoffea.models.inputs import build_inputs, image_shape, mip_scale_gev
from calocoffea.models.onnxmodel import cpu_session, current_versions
from calocoffea.models.training import (
    batch_hits,
    check_options,
    check_training_files,
    iter_inputs,
    model_input,
    prepare_shards,
    scratch_directory,
    split_loader,
    test_metrics,
    write_model,
)
from calocoffea.streaming import ShowerBatch, ShowerLoader

FloatArray = npt.NDArray[np.float64]

#: Model name (card, shipped file ``models/<geometry>_cnn_lstm.onnx``).
NAME = "cnn_lstm"
#: The input the network reads (:mod:`calocoffea.models.inputs`).
INPUT = "cell_images"
#: The graph output.
OUTPUT = "energy"
LOSSES = ("relative", "stochastic")
DOMAIN_SCHEDULES = ("ganin", "constant")
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
#: Stream key of the target loader's shuffling seed (:func:`target_seed`).
TARGET_STREAM = 0xDA22
#: Curves of domain-adversarial training (per step, then per validation).
DOMAIN_CURVES = ("domain_loss_steps", "domain_lambda_steps", "domain_validation_loss",
                 "domain_validation_accuracy", "domain_validation_accuracy_source",
                 "domain_validation_accuracy_target")  # fmt: skip
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
    #: unlabelled target-domain files (calibrated, stage 'gev', the training files' geometry;
    #: e.g. data) for domain-adversarial training, separated by commas (or os.pathsep); their
    #: beam energies are never read. Empty: plain training on the training files alone
    target: str = ""
    #: largest strength lambda of the gradient reversal (dimensionless): the features get
    #: -lambda x the gradient of the domain loss (a BCE, ~0.69 at confusion) besides that of
    #: the regression loss (~4e-3 here). 0.1: enough to drive the domain accuracy to 0.5 on
    #: cepc_ahcal pseudo-data, while 1 (Ganin's) cost the regression much of its resolution
    domain_weight: float = 0.1
    #: "ganin": lambda_p = domain_weight x (2 / (1 + exp(-domain_gamma p)) - 1) over the
    #: training progress p = step / planned steps in [0, 1] (Ganin & Lempitsky 2015);
    #: "constant": lambda = domain_weight from the first step
    domain_schedule: str = "ganin"
    #: gamma of the "ganin" ramp (dimensionless; 10: lambda reaches 76 % of its maximum at
    #: p = 0.2 and 98.7 % at p = 0.5)
    domain_gamma: float = 10.0
    #: units of each of the two hidden layers of the domain classifier
    domain_hidden: int = 32

    def __post_init__(self) -> None:
        if self.domain_schedule not in DOMAIN_SCHEDULES:
            raise MethodOptionsError(
                f"unknown domain_schedule {self.domain_schedule!r}; valid: "
                f"{', '.join(DOMAIN_SCHEDULES)}"
            )
        if self.loss not in LOSSES:
            raise MethodOptionsError(f"unknown loss {self.loss!r}; valid: {', '.join(LOSSES)}")
        check_options(
            "cnn_lstm", self,
            at_least_one=("steps", "epochs", "batch_size", "layers_per_superlayer", "channels",
                          "hidden", "domain_hidden"),
            non_negative=("patience", "validate_every", "validation_events", "threads",
                          "weight_decay", "tolerance", "cell_scale_gev", "max_minutes",
                          "domain_weight"),
        )  # fmt: skip
        if not (math.isfinite(self.domain_gamma) and self.domain_gamma > 0):
            raise MethodOptionsError(
                f"option 'domain_gamma' of cnn_lstm must be positive, got {self.domain_gamma} "
                "(10 is Ganin's; for a constant strength use domain_schedule=constant)"
            )
        if self.target and not self.target_files:
            raise MethodOptionsError(
                f"option 'target' of cnn_lstm names no file ({self.target!r}); give the "
                "unlabelled target files separated by commas, or leave target empty"
            )
        if self.resume and not self.checkpoint_dir:
            raise MethodOptionsError(
                "resume=true needs checkpoint_dir=FOLDER, the folder of the run to continue "
                "(its last.pt)"
            )

    @property
    def target_files(self) -> tuple[str, ...]:
        """The paths of option ``target`` (split at commas and os.pathsep, blanks dropped)."""
        parts = re.split(f"[,{re.escape(os.pathsep)}]", self.target)
        return tuple(p.strip() for p in parts if p.strip())


#: Options that fix the network or the sequence of steps: a checkpoint is resumed only with
#: the same values.
_TRAJECTORY = ("steps", "epochs", "batch_size", "learning_rate", "cosine", "weight_decay",
               "tolerance", "validate_every", "validation_events", "layers_per_superlayer",
               "channels", "hidden", "loss", "cell_scale_gev", "buffer_events",
               "domain_weight", "domain_schedule", "domain_gamma", "domain_hidden")  # fmt: skip


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
            return self.regress(*self.encode(cell_images))

        def encode(self, cell_images: Any) -> tuple[Any, Any, Any]:
            """(final LSTM state (N, hidden): the learnt features that the head and, in
            domain-adversarial training, the domain classifier read; the cell sum S (N,);
            the two global features (N, 2))."""
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
            return state[-1], total, globals_

        def regress(self, features: Any, total: Any, globals_: Any) -> Any:
            """The head: energy [GeV] (N,) from what :meth:`encode` gives."""
            g = self.head(torch.cat([features, globals_], 1))[:, 0]
            return total * torch.exp(g)

    return CnnLstmNetwork


def build_domain_classifier(hidden: int, domain_hidden: int) -> Any:
    """The domain classifier of domain-adversarial training: the ``hidden`` features of
    :meth:`encode` -> two ReLU layers of ``domain_hidden`` units -> one logit (target: 1,
    source: 0). Apply :func:`gradient_reversal` to its input; it is never exported."""
    torch = require_torch("cnn_lstm")
    nn = torch.nn
    return nn.Sequential(nn.Linear(hidden, domain_hidden), nn.ReLU(),
                         nn.Linear(domain_hidden, domain_hidden), nn.ReLU(),
                         nn.Linear(domain_hidden, 1))  # fmt: skip


def gradient_reversal(features: Any, strength: float) -> Any:
    """The gradient-reversal layer of Ganin & Lempitsky (2015): ``features`` unchanged
    forward, the gradient times ``-strength`` backward."""
    torch = require_torch("cnn_lstm")
    return _reversal_class(torch).apply(features, float(strength))


@functools.cache
def _reversal_class(torch: Any) -> Any:
    function: Any = torch.autograd.Function

    class GradientReversal(function):
        @staticmethod
        def forward(ctx: Any, x: Any, strength: float) -> Any:
            ctx.strength = strength
            return x.view_as(x)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> tuple[Any, None]:
            return -ctx.strength * grad, None

    return GradientReversal


def domain_strength(o: CnnLstmOptions, progress: float) -> float:
    """lambda at training progress ``progress`` in [0, 1] (option ``domain_schedule``)."""
    if o.domain_schedule == "constant":
        return o.domain_weight
    p = min(max(progress, 0.0), 1.0)
    return o.domain_weight * (2.0 / (1.0 + math.exp(-o.domain_gamma * p)) - 1.0)


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


def target_seed(seed: int) -> int:
    """The shuffling seed of the target's training loader (another stream than the
    source's)."""
    return int(np.random.SeedSequence([int(seed), TARGET_STREAM]).generate_state(1)[0])


def make_target_splits(loader: ShowerLoader, seed: int, o: CnnLstmOptions) -> Splits:
    """The target files split like the training files (:func:`make_splits`), their beam
    energies dropped (only ``event_id`` is read: unlabelled); the training part shuffles with
    :func:`target_seed` and yields full batches only (each step pairs a source batch with a
    target batch of the same size)."""
    unlabelled = loader.with_options(event_fields=("event_id",))
    splits = make_splits(unlabelled, seed, o)
    train = splits.train.with_options(seed=target_seed(seed), drop_last=True)
    if len(train) == 0:
        raise ModelError(
            f"the target files give {train.n_showers} training events (70 % of "
            f"{loader.n_showers}), fewer than one batch (batch_size={o.batch_size}); give "
            "more target events or a smaller batch_size"
        )
    return Splits(train, splits.validation, splits.test)


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


def _state_of(module: Any) -> dict[str, Any]:
    """A CPU copy of the state dict of ``module`` ({} for None)."""
    if module is None:
        return {}
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _tensor(torch: Any, array: npt.ArrayLike, device: Any) -> Any:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)


# ------------------------------------------------------------------------------ training


class Trainer:
    """One training run: network, optimizer, schedule, data position, curves, checkpoints;
    with ``target`` (the target files' splits) also the domain classifier and the position
    in the target stream (domain-adversarial training, module docstring)."""

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
        target: Splits | None = None,
    ) -> None:
        self.torch, self.splits, self.geometry, self.o, self.seed = torch, splits, geometry, o, seed
        self.target = target
        self.checkpoints = checkpoints
        self.device = device_of(torch)
        #: where the training ran ("cpu" or "cuda"), for the card
        self.trained_on = str(self.device.type)
        self.architecture = Architecture.of(geometry, o)
        self.shapes = {INPUT: (None, *image_shape(geometry))}
        self.network = build_network(self.architecture, log_offset).to(self.device)
        parameters = list(self.network.parameters())
        #: the domain classifier (None in plain training); built after the network, so that
        #: the network starts from the same weights with and without a target
        self.domain: Any = None
        if target is not None:
            self.domain = build_domain_classifier(o.hidden, o.domain_hidden).to(self.device)
            parameters += list(self.domain.parameters())
        self.optimizer = torch.optim.AdamW(parameters, lr=o.learning_rate,
                                           weight_decay=o.weight_decay)  # fmt: skip
        self.batches_per_epoch = len(splits.train)
        self.planned_steps = min(o.steps, o.epochs * self.batches_per_epoch)
        self.scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.planned_steps)
            if o.cosine
            else torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        )
        self.step, self.epoch, self.batch_in_epoch, self.stale = 0, 0, 0, 0
        #: position in the target stream: its epoch and the batches of it already used
        self.target_epoch, self.target_batch = 0, 0
        self._target_batches: Iterator[ShowerBatch] | None = None
        self.best_loss, self.best_step = math.inf, 0
        self.best_state = _state_of(self.network)
        self.best_domain_state = _state_of(self.domain)
        self.curves: dict[str, Any] = {
            "loss": o.loss,
            "train_loss_steps": [],
            "learning_rate_steps": [],
            "validation_steps": [],
            "validation_loss": [],
        }
        if target is not None:
            self.curves |= {name: [] for name in DOMAIN_CURVES}
        self.seconds = 0.0
        self.stopped = ""

    # ---- state ----------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the checkpoint."""
        values = {name: getattr(self.o, name) for name in _TRAJECTORY}
        values.update({"seed": self.seed, "train_events": self.splits.train.n_showers})
        values["target_events"] = self.target.train.n_showers if self.target else 0
        return values

    def checkpoint(self) -> dict[str, Any]:
        state = {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint(),
            "model": _state_of(self.network),
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
        if self.domain is not None:
            state["domain"] = {
                "model": _state_of(self.domain),
                "position": {"epoch": self.target_epoch, "batch": self.target_batch},
            }
            state["best"]["domain"] = self.best_domain_state
        return state

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
        if ("domain" in state) != (self.domain is not None):
            differ["target"] = ("given" if "domain" in state else "none",
                                "given" if self.domain is not None else "none")  # fmt: skip
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
        if self.domain is not None:
            self.domain.load_state_dict(state["domain"]["model"])
            self.best_domain_state = best["domain"]
            target = state["domain"]["position"]
            self.target_epoch, self.target_batch = target["epoch"], target["batch"]
            self._target_batches = None
        self.curves = state["curves"]
        self.seconds = float(state["seconds"])

    def load_best(self) -> None:
        """Put the best state (network, and domain classifier) into the modules."""
        self.network.load_state_dict(self.best_state)
        if self.domain is not None:
            self.domain.load_state_dict(self.best_domain_state)

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

    def domain_step(
        self, images: npt.NDArray[Any], beam: npt.NDArray[Any], target: npt.NDArray[Any]
    ) -> tuple[float, float, float]:
        """One domain-adversarial step on a source batch (``images``, ``beam``) and a
        target batch of the same size: regression loss (source) + domain BCE (source 0,
        target 1) through the gradient reversal; (regression loss, domain loss, lambda)."""
        torch = self.torch
        self.network.train()
        self.domain.train()
        n = len(images)
        both = _tensor(torch, np.concatenate([images, target]), self.device)
        features, total, globals_ = self.network.encode(both)
        energy = self.network.regress(features[:n], total[:n], globals_[:n])
        regression = loss_of(torch, energy, _tensor(torch, beam, self.device), self.o.loss).mean()
        strength = domain_strength(self.o, self.step / self.planned_steps)
        logits = self.domain(gradient_reversal(features, strength))[:, 0]
        labels = torch.cat([torch.zeros(n, device=self.device),
                            torch.ones(len(target), device=self.device)])  # fmt: skip
        domain = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        (regression + domain).backward()
        self.optimizer.step()
        self.scheduler.step()
        return float(regression.detach()), float(domain.detach()), strength

    def next_target(self, n: int) -> npt.NDArray[Any]:
        """The cell images of the next ``n`` events of the target stream (the first ``n``
        of its next full batch; a new shuffled epoch when one is used up)."""
        assert self.target is not None
        while True:
            if self._target_batches is None:
                self._target_batches = self.target.train.epoch(self.target_epoch)
                for _ in range(self.target_batch):  # resumed: used before the checkpoint
                    next(self._target_batches, None)
            batch = next(self._target_batches, None)
            if batch is not None:
                self.target_batch += 1
                break
            self.target_epoch, self.target_batch, self._target_batches = (
                self.target_epoch + 1, 0, None,
            )  # fmt: skip
        inputs = build_inputs(self.shapes, batch_hits(batch.slice(0, n)), self.geometry)
        return inputs[INPUT]

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

    def _domain_pass(self, loader: ShowerLoader, label: float) -> dict[str, float]:
        """Over ``loader`` (no gradients): the summed domain BCE against ``label``, the
        correctly classified events, the events, and the summed regression loss when the
        loader has beam energies (the source)."""
        torch = self.torch
        self.network.eval()
        self.domain.eval()
        sums = {"bce": 0.0, "correct": 0.0, "events": 0.0, "regression": 0.0}
        with torch.no_grad():
            for inputs, events in iter_inputs(loader, self.shapes, self.geometry, shuffle=False):
                features, total, globals_ = self.network.encode(
                    _tensor(torch, inputs[INPUT], self.device)
                )
                logits = self.domain(features)[:, 0]
                sums["bce"] += float(torch.nn.functional.binary_cross_entropy_with_logits(
                    logits, torch.full_like(logits, label), reduction="sum"))  # fmt: skip
                sums["correct"] += float(((logits > 0) == bool(label)).sum())
                sums["events"] += logits.numel()
                if "beam_energy" in events:
                    energy = self.network.regress(features, total, globals_)
                    beam = _tensor(torch, events["beam_energy"], self.device)
                    sums["regression"] += float(loss_of(torch, energy, beam, self.o.loss).sum())
        return sums

    def domain_scores(
        self, source: ShowerLoader, target: ShowerLoader
    ) -> tuple[float, dict[str, float]]:
        """(mean regression loss on ``source``, domain scores): the domain loss (mean BCE,
        the two domains weighted alike) and accuracy (balanced: the mean of the fractions of
        source events classified source and of target events classified target; 0.5 is a
        classifier that cannot tell them apart)."""
        s, t = self._domain_pass(source, 0.0), self._domain_pass(target, 1.0)
        n_s, n_t = max(s["events"], 1.0), max(t["events"], 1.0)
        accuracy_source, accuracy_target = s["correct"] / n_s, t["correct"] / n_t
        return s["regression"] / n_s, {
            "loss": 0.5 * (s["bce"] / n_s + t["bce"] / n_t),
            "accuracy": 0.5 * (accuracy_source + accuracy_target),
            "accuracy_source": accuracy_source,
            "accuracy_target": accuracy_target,
        }

    def validate(self) -> bool:
        """Validate, keep the best state, checkpoint; True when patience ran out. The best
        state is the one of the lowest regression loss on the source validation split (the
        target has no labels), with and without a target."""
        if self.target is None:
            loss = self.validation_loss()
        else:
            loss, scores = self.domain_scores(self.splits.validation, self.target.validation)
            for key, value in scores.items():
                self.curves[f"domain_validation_{key}"].append(value)
        self.curves["validation_steps"].append(self.step)
        self.curves["validation_loss"].append(loss)
        if loss < self.best_loss * (1.0 - self.o.tolerance):
            self.best_loss, self.best_step, self.stale = loss, self.step, 0
            self.best_state = _state_of(self.network)
            self.best_domain_state = _state_of(self.domain)
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
                images, beam = inputs[INPUT], events["beam_energy"]
                if self.target is None:
                    loss = domain_loss = self.train_step(images, beam)
                else:
                    loss, domain_loss, strength = self.domain_step(
                        images, beam, self.next_target(len(images))
                    )
                    self.curves["domain_loss_steps"].append(domain_loss)
                    self.curves["domain_lambda_steps"].append(strength)
                self.curves["train_loss_steps"].append(loss)
                self.curves["learning_rate_steps"].append(float(self.scheduler.get_last_lr()[0]))
                self.step, self.batch_in_epoch = self.step + 1, k + 1
                self.seconds = before + time.perf_counter() - start
                if not (math.isfinite(loss) and math.isfinite(domain_loss)):
                    raise ModelError(
                        f"cnn_lstm: the training loss became {loss} (domain loss {domain_loss}) "
                        f"at step {self.step}; lower learning_rate (now {o.learning_rate}) or "
                        "check the inputs for events without energy"
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
    session = cpu_session(data)
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
    targets = check_target_files(o.target_files, geometry)
    started = time.perf_counter()
    with scratch_directory(NAME) as scratch:
        loader = prepare_shards(
            files, Path(scratch) / "shards", batch_showers=o.batch_size,
            buffer_showers=o.buffer_events, seed=seed,
        )  # fmt: skip
        splits = make_splits(loader, seed, o)
        target = None
        if targets:
            target_loader = prepare_shards(
                targets, Path(scratch) / "target-shards", batch_showers=o.batch_size,
                buffer_showers=o.buffer_events, seed=seed,
            )  # fmt: skip
            target = make_target_splits(target_loader, seed, o)
        baseline = sum_baseline(splits.train)
        checkpoints = Path(o.checkpoint_dir) if o.checkpoint_dir else Path(scratch) / "checkpoints"
        device = device_of(torch)
        with torch_settings(torch, seed, o.threads, device):
            trainer = Trainer(torch, splits, geometry, o, seed=seed, checkpoints=checkpoints,
                              log_offset=baseline.log_offset, target=target)  # fmt: skip
            if o.resume:
                trainer.resume()
            trainer.run()
            trainer.load_best()
            domain_test = (
                trainer.domain_scores(splits.test, target.test)[1] if target is not None else None
            )
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
        if domain_test is not None:
            metrics["domain"] = domain_metrics(trainer, targets, domain_test)
        sample = [*files, *(f"{Path(t).name} (unlabelled target)" for t in targets)]
        return write_model(
            data,
            output,
            name=NAME,
            geometry=geometry,
            inputs=[model_input(INPUT, geometry)],
            output_name=OUTPUT,
            training_sample=sample,
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


def domain_metrics(
    trainer: Trainer, targets: Sequence[str], test: Mapping[str, float]
) -> dict[str, Any]:
    """The card's ``metrics["domain"]``: the target sample and its split, the options of
    the domain-adversarial training, the domain classifier's scores (accuracy 0.5: the
    features do not tell the domains apart) on the test splits (source against target) with
    the best state, and on the validation splits at the best and at the last validation."""
    assert trainer.target is not None
    curves, o = trainer.curves, trainer.o
    best = curves["validation_steps"].index(trainer.best_step)
    return {
        "target_sample": [Path(t).name for t in targets],
        "target_split_events": {
            "train": trainer.target.train.n_showers,
            "validation": trainer.target.validation.n_showers,
            "test": trainer.target.test.n_showers,
        },
        "weight": o.domain_weight,
        "schedule": o.domain_schedule,
        "gamma": o.domain_gamma,
        "hidden": o.domain_hidden,
        "lambda_final": curves["domain_lambda_steps"][-1] if trainer.step else 0.0,
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
        "test_accuracy_source": test["accuracy_source"],
        "test_accuracy_target": test["accuracy_target"],
        "validation_accuracy_best": curves["domain_validation_accuracy"][best],
        "validation_accuracy_final": curves["domain_validation_accuracy"][-1],
        "selection": "best state by the regression loss on the source validation split",
    }


def check_target_files(paths: Sequence[str], geometry: Geometry) -> tuple[str, ...]:
    """The target files (option ``target``), checked: they exist, are calibrated (stage
    ``gev``) and of ``geometry``; else an error naming the file, why, and what to do."""
    for path in paths:
        if not Path(path).is_file():
            raise InputFileError(
                f"target file {path} (option target) does not exist; give the calibrated "
                f"(stage 'gev') {geometry.name} files of the target domain, separated by commas"
            )
        metadata = read_metadata(path)
        if metadata.stage != "gev":
            raise StageMismatchError(
                f"target file {path} is at stage {metadata.stage!r}; domain-adversarial "
                "training reads calibrated files (stage 'gev'): calibrate it with the "
                "constants of the training files (`calocoffea calibrate --to gev`) first"
            )
        if metadata.geometry != geometry.name:
            raise GeometryMismatchError(
                f"target file {path} is for geometry {metadata.geometry!r}, the training "
                f"files for {geometry.name!r}; give target files of {geometry.name!r}"
            )
    return tuple(paths)


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
    "build_domain_classifier",
    "build_network",
    "copy_checkpoint",
    "domain_strength",
    "export_onnx",
    "gradient_reversal",
    "loss_of",
    "parameter_count",
    "train",
]
