"""The dual-branch 3D CNN of seed 001: the EM fractions of a hadron shower in the ECAL and the
HCAL from voxel grids, and the energy from the e/h formula.

What to use when:

- :func:`train` -- what ``calocoffea train --model dual_branch_cnn FILES... -o MODEL.onnx``
  runs (through :meth:`calocoffea.plugins.dual_branch_cnn.DualBranchCnn.train`): train on
  calibrated (``gev``) pion files that carry the truth ``fem_ecal`` and ``fem_hcal`` (the
  simulation writes them), fit the e/h of each section, export to ONNX, write the card and
  the curves.
- :class:`DualBranchOptions` -- the training options (``--option key=value``).
- :func:`build_network` -- the torch module alone (for studies; inference never needs it).

The network (seed 001's ``TripleHeadFEMNet``; inputs ``voxels_ecal`` and ``voxels_hcal``,
each section's grid around the shower normalised to its maximum (:mod:`.voxels`), and
``section_sums`` [GeV], the calibrated energy of each section):

1. an ECAL and an HCAL branch, each conv 3x3x3 (``channels``), ReLU, conv 3x3x3 with stride
   ``stride`` (2 x ``channels``), ReLU; the seed's second convolution has stride 1, the
   stride here (the issue's "a stride before the shared block") divides the shared block's
   cost by 8 so that it trains on two CPU cores;
2. the HCAL features are resized (trilinear) to the ECAL's grid and concatenated (the seed's
   ``F.interpolate``); a shared conv 3x3x3 (``shared_channels``), ReLU, global average;
3. the section energies enter as log(1 + E_s / 1 GeV) through a dense layer (``hidden``); the
   seed feeds them raw, which puts 1 and 100 GeV events on very different scales;
4. a fusion MLP (2 x ``hidden``, ``hidden``) and two heads, f_em(ECAL) and f_em(HCAL), each
   a sigmoid (the seed's heads are linear: a fraction outside [0, 1] means nothing);
5. the energy E = Σ_s k_s (e/h)_s E_s / (1 + f_s ((e/h)_s - 1)) over the sections s, the
   e/h formula of seed 001 with E_s the calibrated section energy. In the seed E_s is at the
   electromagnetic scale; here the calibrated energies are at the MIP scale, so each section
   also has its electromagnetic scale k_s (1 / electron response). After training, k_s and
   (e/h)_s are fitted with iminuit on the training split: minimise Σ (E - E_beam)² / E_beam
   (each event weighted by a stochastic variance, as ``software_compensation`` does) with
   the network's f_em fixed. They are constants in the exported graph and in the card;
6. optional (``direct_energy``): a fifth head, E_direct = (Σ_s E_s) exp(g), trained on
   ((E_direct - E_beam) / E_beam)², weight ``energy_weight``; exported as ``energy_direct``.

Outputs: ``energy`` [GeV] (the card's output, what ``calocoffea reconstruct`` writes),
``fem_ecal``, ``fem_hcal`` (and ``energy_direct``). The loss is the mean squared error of the
two fractions against the truth (seed 001), over the events whose section has energy
(where f_em is undefined, the truth is NaN and the term is left out).

Training: AdamW, cosine annealing over the planned steps, batches from the streaming
:class:`~calocoffea.streaming.ShowerLoader` whose inputs are built by the same functions as
inference (:func:`~.training.iter_inputs`), train / validation / test split by event; the
state with the lowest validation loss is kept; stops on ``steps``, ``epochs``, ``patience``
or ``max_minutes``. With ``checkpoint_dir`` the best and last network states are saved
there (``best.pt``, ``last.pt``, state dicts read with ``torch.load(weights_only=True)``);
resuming a run is not supported for this model yet (``cnn_lstm`` has it). Export: opset 17,
TorchScript exporter, dynamic batch axis; the parity of every output between torch and
onnxruntime on the test split must stay below 1e-5 (relative for energies, absolute for the
fractions), else training fails.
"""

from __future__ import annotations

import dataclasses
import io
import math
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
from calocoffea.models.inputs import VOXEL_PRESETS, input_shape
from calocoffea.models.onnxmodel import cpu_session, current_versions
from calocoffea.models.training import (
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
from calocoffea.streaming import ShowerLoader

FloatArray = npt.NDArray[np.float64]

#: Model name (card, shipped file ``models/<geometry>_dual_branch_cnn.onnx``).
NAME = "dual_branch_cnn"
#: The sections the network reads, in the order of ``section_sums``.
SECTIONS = ("ecal", "hcal")
#: Graph inputs.
VOXEL_INPUTS = tuple(f"voxels_{s}" for s in SECTIONS)
SUMS = "section_sums"
#: Graph outputs: the energy (the card's), the fractions, the optional direct energy.
OUTPUT = "energy"
FEM_OUTPUTS = tuple(f"fem_{s}" for s in SECTIONS)
DIRECT = "energy_direct"
#: Scale [GeV] of the section energies in log(1 + E_s / scale).
SUM_SCALE_GEV = 1.0
#: Limits of the fitted constants: e/h and the electromagnetic scale k of each section.
E_OVER_H_LIMITS = (0.2, 10.0)
EM_SCALE_LIMITS = (0.2, 5.0)
OPSET = 17
#: Largest accepted torch / onnxruntime difference (relative for energies, absolute for
#: the fractions) on the test split.
PARITY_TOLERANCE = 1e-5
#: Events per batch when evaluating (no gradients).
EVAL_BATCH = 512
#: Training events used by the e/h fit (the first ones of the training split).
FIT_EVENTS = 50_000


@dataclass(frozen=True)
class DualBranchOptions:
    """Training options of ``dual_branch_cnn`` (``--option key=value``)."""

    #: voxel grids: "default" (ECAL 16 x 30 x 16 at 5 mm, HCAL 12 x 48 x 12 at 30 mm, trains
    #: on CPU cores) or "seed001" (40 x 30 x 40 and 40 x 48 x 40, the seed's: for a GPU)
    preset: str = "default"
    #: most optimizer steps (the cosine horizon when fewer than epochs x batches per epoch)
    steps: int = 3000
    #: most passes over the training split
    epochs: int = 20
    #: events per training batch
    batch_size: int = 64
    #: AdamW's initial learning rate
    learning_rate: float = 2e-3
    #: anneal the learning rate to 0 along a cosine over the planned steps (false: constant)
    cosine: bool = True
    #: AdamW's decoupled weight decay
    weight_decay: float = 1e-4
    #: channels of each branch's first convolution (the second has twice as many)
    channels: int = 8
    #: channels of the shared convolution
    shared_channels: int = 32
    #: units of the energy layer and of the fusion MLP's last layer (the first has twice)
    hidden: int = 32
    #: stride of each branch's second convolution (1: the seed's network)
    stride: int = 2
    #: also train and export a direct energy head (``energy_direct``)
    direct_energy: bool = False
    #: weight of the direct energy's loss against the f_em losses
    energy_weight: float = 1.0
    #: steps between validations; 0: once per epoch
    validate_every: int = 200
    #: events of the validation split used per validation (its first ones); 0: all
    validation_events: int = 4000
    #: stop after this many validations without improvement; 0: never stop early
    patience: int = 8
    #: a validation improves when its loss falls below best x (1 - tolerance)
    tolerance: float = 1e-4
    #: events held by the shuffle buffer of the training loader
    buffer_events: int = 5000
    #: stop training after this many minutes of wall time; 0: no limit
    max_minutes: float = 0.0
    #: folder for best.pt and last.pt; empty: none kept
    checkpoint_dir: str = ""
    #: torch threads while training (0: torch's default)
    threads: int = 0

    def __post_init__(self) -> None:
        if self.preset not in VOXEL_PRESETS:
            raise MethodOptionsError(
                f"unknown preset {self.preset!r} of dual_branch_cnn; valid: "
                f"{', '.join(VOXEL_PRESETS)}"
            )
        check_options(
            "dual_branch_cnn", self,
            at_least_one=("steps", "epochs", "batch_size", "channels", "shared_channels",
                          "hidden", "stride"),
            non_negative=("energy_weight", "validate_every", "validation_events", "patience",
                          "tolerance", "weight_decay", "max_minutes", "threads"),
        )  # fmt: skip


@dataclass(frozen=True)
class Architecture:
    """What :func:`build_network` needs: the grid shapes and the sizes."""

    ecal_shape: tuple[int, int, int]
    hcal_shape: tuple[int, int, int]
    channels: int
    shared_channels: int
    hidden: int
    stride: int
    direct_energy: bool

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """The ECAL branch's output grid (where the HCAL features are resized to)."""
        return tuple(-(-n // self.stride) for n in self.ecal_shape)  # type: ignore[return-value]

    @classmethod
    def of(cls, geometry: Geometry, o: DualBranchOptions) -> Architecture:
        shapes = [input_shape(name, geometry, preset=o.preset)[1:] for name in VOXEL_INPUTS]
        return cls(
            tuple(int(d) for d in shapes[0]),  # type: ignore[arg-type]
            tuple(int(d) for d in shapes[1]),  # type: ignore[arg-type]
            o.channels, o.shared_channels, o.hidden, o.stride, o.direct_energy,
        )  # fmt: skip


def check_geometry(geometry: Geometry) -> None:
    """The network needs a geometry whose sections are exactly ECAL and HCAL."""
    names = tuple(s.name for s in geometry.sections)
    if names != SECTIONS:
        raise ModelError(
            f"dual_branch_cnn reads an ECAL and an HCAL section; geometry {geometry.name!r} "
            f"has sections {names}; use calice_siw_ecal_ahcal (or a geometry with sections "
            "named ecal and hcal), or a single-section model (cnn_lstm, gbr)"
        )


# ------------------------------------------------------------------------------ network


def build_network(architecture: Architecture) -> Any:
    """The torch module (CPU, float32, initialised from torch's global generator)."""
    torch = require_torch("dual_branch_cnn")
    return _network_class(torch)(architecture)


def _network_class(torch: Any) -> type:
    """The module class, defined here so that importing this module never imports torch."""
    nn = torch.nn
    module: Any = nn.Module

    def branch(c: int, stride: int) -> Any:
        return nn.Sequential(
            nn.Conv3d(1, c, 3, padding=1), nn.ReLU(),
            nn.Conv3d(c, 2 * c, 3, stride=stride, padding=1), nn.ReLU(),
        )  # fmt: skip

    class DualBranchNetwork(module):
        """(voxels_ecal, voxels_hcal, section_sums) -> (energy, fem_ecal, fem_hcal[, direct])."""

        def __init__(self, a: Architecture) -> None:
            super().__init__()
            self.size = a.feature_shape
            self.ecal = branch(a.channels, a.stride)
            self.hcal = branch(a.channels, a.stride)
            self.shared = nn.Sequential(
                nn.Conv3d(4 * a.channels, a.shared_channels, 3, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool3d(1), nn.Flatten(),
            )  # fmt: skip
            self.energy_fc = nn.Sequential(nn.Linear(len(SECTIONS), a.hidden), nn.ReLU())
            self.fusion = nn.Sequential(
                nn.Linear(a.shared_channels + a.hidden, 2 * a.hidden), nn.ReLU(),
                nn.Linear(2 * a.hidden, a.hidden), nn.ReLU(),
            )  # fmt: skip
            self.fem = nn.Linear(a.hidden, len(SECTIONS))
            self.direct = nn.Linear(a.hidden, 1) if a.direct_energy else None
            if self.direct is not None:
                with torch.no_grad():
                    self.direct.weight.zero_()
            self.register_buffer("em_scale", torch.ones(len(SECTIONS)))
            self.register_buffer("e_over_h", torch.ones(len(SECTIONS)))

        def features(self, voxels_ecal: Any, voxels_hcal: Any, section_sums: Any) -> Any:
            e = self.ecal(voxels_ecal.unsqueeze(1))
            h = self.hcal(voxels_hcal.unsqueeze(1))
            h = nn.functional.interpolate(h, size=self.size, mode="trilinear",
                                          align_corners=False)  # fmt: skip
            shower = self.shared(torch.cat([e, h], 1))
            energy = self.energy_fc(torch.log1p(section_sums / SUM_SCALE_GEV))
            return self.fusion(torch.cat([shower, energy], 1))

        def forward(self, voxels_ecal: Any, voxels_hcal: Any, section_sums: Any) -> Any:
            z = self.features(voxels_ecal, voxels_hcal, section_sums)
            fem = torch.sigmoid(self.fem(z))
            energy = (self.em_scale * self.e_over_h * section_sums
                      / (1.0 + fem * (self.e_over_h - 1.0))).sum(1)  # fmt: skip
            outputs = [energy, fem[:, 0], fem[:, 1]]
            if self.direct is not None:
                outputs.append(section_sums.sum(1) * torch.exp(self.direct(z)[:, 0]))
            return tuple(outputs)

    return DualBranchNetwork


def output_names(direct_energy: bool) -> tuple[str, ...]:
    """The graph's outputs, in the network's order."""
    return (OUTPUT, *FEM_OUTPUTS, *((DIRECT,) if direct_energy else ()))


def e_over_h_energy(
    sums: npt.ArrayLike, fem: npt.ArrayLike, em_scale: npt.ArrayLike, e_over_h: npt.ArrayLike
) -> FloatArray:
    """E = Σ_s k_s (e/h)_s E_s / (1 + f_s ((e/h)_s - 1)) in numpy (float64); ``sums`` and
    ``fem`` of shape (events, sections), the constants one per section."""
    s, f = np.asarray(sums, dtype=np.float64), np.asarray(fem, dtype=np.float64)
    k, eh = np.asarray(em_scale, dtype=np.float64), np.asarray(e_over_h, dtype=np.float64)
    return np.sum(k * eh * s / (1.0 + f * (eh - 1.0)), axis=1)


def fit_e_over_h(
    sums: npt.ArrayLike, fem: npt.ArrayLike, beam_gev: npt.ArrayLike
) -> dict[str, Any]:
    """k_s and (e/h)_s of every section by iminuit: minimise Σ (E - E_beam)² / E_beam with
    :func:`e_over_h_energy` (the fractions fixed). Returns the values, errors and fit state."""
    from iminuit import Minuit

    s = np.asarray(sums, dtype=np.float64)
    f = np.clip(np.nan_to_num(np.asarray(fem, dtype=np.float64)), 0.0, 1.0)
    beam = np.asarray(beam_gev, dtype=np.float64)
    n = s.shape[1]

    def cost(p: npt.NDArray[np.float64]) -> float:
        e = e_over_h_energy(s, f, p[:n], p[n:])
        return float(np.sum((e - beam) ** 2 / beam))

    start = [*(beam.sum() / max(s.sum(), 1e-9) for _ in range(n)), *(1.2 for _ in range(n))]
    names = [*(f"em_scale_{x}" for x in SECTIONS), *(f"e_over_h_{x}" for x in SECTIONS)]
    m = Minuit(cost, np.array(start, dtype=np.float64), name=names)
    m.errordef = Minuit.LEAST_SQUARES
    for k in range(n):
        m.limits[k] = EM_SCALE_LIMITS
        m.limits[n + k] = E_OVER_H_LIMITS
    m.migrad()
    m.hesse()
    values = np.array(m.values, dtype=np.float64)
    return {
        "em_scale": [float(v) for v in values[:n]],
        "e_over_h": [float(v) for v in values[n:]],
        "errors": {name: float(m.errors[name]) for name in names},
        "valid": bool(m.valid),
        "fval": float(m.fval),
        "events": int(beam.size),
    }


# ------------------------------------------------------------------------------ training


def _tensor(torch: Any, array: npt.ArrayLike, device: Any) -> Any:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)


@dataclass(frozen=True)
class Splits:
    train: ShowerLoader
    validation: ShowerLoader
    test: ShowerLoader


def make_splits(loader: ShowerLoader, seed: int, o: DualBranchOptions) -> Splits:
    train, validation, test = split_loader(loader, seed)
    if o.validation_events and validation.n_showers > o.validation_events:
        validation = validation.subset(np.arange(validation.n_showers) < o.validation_events)
    evaluation = {"batch_showers": EVAL_BATCH, "buffer_showers": max(EVAL_BATCH, o.batch_size)}
    return Splits(train, validation.with_options(**evaluation), test.with_options(**evaluation))


def truth_fem(events: Mapping[str, npt.NDArray[Any]]) -> FloatArray:
    """(events, sections) of the truth f_em; a file without them is a ModelError."""
    missing = [f for f in FEM_OUTPUTS if f not in events]
    if missing:
        raise ModelError(
            f"dual_branch_cnn learns the EM fractions and needs the truth fields "
            f"{', '.join(FEM_OUTPUTS)} in the training files; {', '.join(missing)} missing: "
            "train on simulated files of a geometry with ECAL and HCAL sections"
        )
    return np.column_stack([np.asarray(events[f], dtype=np.float64) for f in FEM_OUTPUTS])


class Trainer:
    """One training run: network, optimizer, schedule, curves, best state."""

    def __init__(
        self, torch: Any, splits: Splits, geometry: Geometry, o: DualBranchOptions, seed: int
    ) -> None:
        self.torch, self.splits, self.geometry, self.o, self.seed = torch, splits, geometry, o, seed
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.architecture = Architecture.of(geometry, o)
        self.shapes = {
            **{name: input_shape(name, geometry, preset=o.preset) for name in VOXEL_INPUTS},
            SUMS: input_shape(SUMS, geometry),
        }
        self.network = build_network(self.architecture).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.network.parameters(), lr=o.learning_rate, weight_decay=o.weight_decay
        )
        self.planned_steps = min(o.steps, o.epochs * len(splits.train))
        self.scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.planned_steps)
            if o.cosine
            else torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        )
        self.step, self.stale = 0, 0
        self.best_loss, self.best_step = math.inf, 0
        self.best_state = self._state_copy()
        self.curves: dict[str, Any] = {
            "loss": "fem_mse" + ("+energy" if o.direct_energy else ""),
            "train_loss_steps": [],
            "learning_rate_steps": [],
            "validation_steps": [],
            "validation_loss": [],
        }
        self.seconds = 0.0
        self.stopped = ""

    def _state_copy(self) -> dict[str, Any]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.network.state_dict().items()}

    def tensors(self, inputs: Mapping[str, npt.NDArray[Any]]) -> list[Any]:
        return [_tensor(self.torch, inputs[name], self.device) for name in (*VOXEL_INPUTS, SUMS)]

    def loss(self, outputs: Sequence[Any], events: Mapping[str, npt.NDArray[Any]]) -> Any:
        """Mean squared error of the fractions over the defined ones (+ the direct energy)."""
        torch = self.torch
        truth = _tensor(torch, truth_fem(events), self.device)
        fem = torch.stack([outputs[1], outputs[2]], 1)
        defined = torch.isfinite(truth)
        squared = torch.where(defined, fem - torch.nan_to_num(truth), torch.zeros_like(fem))
        loss = squared.square().sum() / defined.sum().clamp(min=1)
        if self.o.direct_energy:
            beam = _tensor(torch, events["beam_energy"], self.device)
            loss = loss + self.o.energy_weight * ((outputs[3] - beam) / beam).square().mean()
        return loss

    def train_step(self, inputs: Mapping[str, npt.NDArray[Any]], events: Any) -> float:
        self.network.train()
        loss = self.loss(self.network(*self.tensors(inputs)), events)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    def predict(
        self, loader: ShowerLoader
    ) -> Iterator[tuple[dict[str, npt.NDArray[Any]], dict[str, npt.NDArray[Any]], list[Any]]]:
        """(inputs, events, torch outputs on the CPU as numpy) per batch, shard order."""
        self.network.eval()
        with self.torch.no_grad():
            for inputs, events in iter_inputs(loader, self.shapes, self.geometry, shuffle=False):
                outputs = self.network(*self.tensors(inputs))
                yield inputs, events, [o.to("cpu").numpy() for o in outputs]

    def validation_loss(self) -> float:
        total, n = 0.0, 0
        self.network.eval()
        with self.torch.no_grad():
            for inputs, events in iter_inputs(
                self.splits.validation, self.shapes, self.geometry, shuffle=False
            ):
                outputs = self.network(*self.tensors(inputs))
                size = len(events["beam_energy"])
                total += float(self.loss(outputs, events)) * size
                n += size
        return total / max(n, 1)

    def validate(self) -> bool:
        loss = self.validation_loss()
        self.curves["validation_steps"].append(self.step)
        self.curves["validation_loss"].append(loss)
        if loss < self.best_loss * (1.0 - self.o.tolerance):
            self.best_loss, self.best_step, self.stale = loss, self.step, 0
            self.best_state = self._state_copy()
        else:
            self.stale += 1
        if self.o.checkpoint_dir:
            folder = Path(self.o.checkpoint_dir)
            folder.mkdir(parents=True, exist_ok=True)
            for name, state in (("last.pt", self._state_copy()), ("best.pt", self.best_state)):
                temporary = folder / f".{name}.tmp"
                self.torch.save(state, temporary)
                temporary.replace(folder / name)
        return bool(self.o.patience and self.stale >= self.o.patience)

    def run(self) -> None:
        o = self.o
        start = time.perf_counter()
        deadline = start + 60.0 * o.max_minutes if o.max_minutes else math.inf
        self.validate()
        epoch = 0
        while not self.stopped:
            if epoch >= o.epochs:
                self.stopped = "epochs"
                break
            for inputs, events in iter_inputs(
                self.splits.train, self.shapes, self.geometry, epoch=epoch
            ):
                loss = self.train_step(inputs, events)
                if not math.isfinite(loss):
                    raise ModelError(
                        f"dual_branch_cnn: the training loss became {loss} at step "
                        f"{self.step + 1}; lower learning_rate (now {o.learning_rate})"
                    )
                self.step += 1
                self.curves["train_loss_steps"].append(loss)
                self.curves["learning_rate_steps"].append(float(self.scheduler.get_last_lr()[0]))
                if o.validate_every and self.step % o.validate_every == 0 and self.validate():
                    self.stopped = "patience"
                elif self.step >= self.planned_steps:
                    self.stopped = "steps"
                elif time.perf_counter() > deadline:
                    self.stopped = "max_minutes"
                if self.stopped:
                    break
            else:
                epoch += 1
                if not o.validate_every and self.validate():
                    self.stopped = "patience"
        if self.curves["validation_steps"][-1] != self.step:
            self.validate()
        self.seconds = time.perf_counter() - start


# ------------------------------------------------------------------------------ export


def export_onnx(torch: Any, network: Any, architecture: Architecture) -> bytes:
    """The network (CPU, eval) as one self-contained ONNX file with a dynamic batch axis
    (the TorchScript exporter's deprecation warning is silenced here, and only here)."""
    network = network.to("cpu").eval()
    example = (
        torch.zeros(2, *architecture.ecal_shape),
        torch.zeros(2, *architecture.hcal_shape),
        torch.ones(2, len(SECTIONS)),
    )
    names = output_names(architecture.direct_energy)
    inputs = [*VOXEL_INPUTS, SUMS]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            network, example, buffer, input_names=inputs, output_names=list(names),
            dynamic_axes={name: {0: "batch"} for name in (*inputs, *names)},
            opset_version=OPSET, dynamo=False,
        )  # fmt: skip
    return buffer.getvalue()


def onnx_outputs(session: Any, inputs: Mapping[str, npt.NDArray[Any]]) -> list[Any]:
    """Every output of the graph for ``inputs``, run by the onnxruntime ``session`` (a
    :class:`~calocoffea.models.onnxmodel.LoadedModel`'s ``session``, or
    :func:`~calocoffea.models.onnxmodel.cpu_session` of the exported bytes)."""
    feed = {name: np.ascontiguousarray(inputs[name], dtype=np.float32)
            for name in (*VOXEL_INPUTS, SUMS)}  # fmt: skip
    return list(session.run(None, feed))


@dataclass(frozen=True)
class TestResult:
    """The test split through the exported graph: outputs, truth, and the parity."""

    outputs: dict[str, FloatArray]
    sums: FloatArray
    fem_truth: FloatArray
    beam_gev: FloatArray
    parity: float


def evaluate_test(trainer: Trainer, data: bytes) -> TestResult:
    """Run the final network (torch) and the graph (onnxruntime) on the test split."""
    names = output_names(trainer.o.direct_energy)
    parts: dict[str, list[FloatArray]] = {n: [] for n in (*names, "sums", "fem", "beam")}
    worst = 0.0
    session = cpu_session(data)
    for inputs, events, torch_out in trainer.predict(trainer.splits.test):
        onnx_out = onnx_outputs(session, inputs)
        for name, a, b in zip(names, torch_out, onnx_out, strict=True):
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            scale = 1.0 if name in FEM_OUTPUTS else np.maximum(np.abs(a64), 1e-6)
            if a64.size:
                worst = max(worst, float(np.max(np.abs(a64 - b64) / scale)))
            parts[name].append(b64)
        parts["sums"].append(np.asarray(inputs[SUMS], dtype=np.float64))
        parts["fem"].append(truth_fem(events))
        parts["beam"].append(np.asarray(events["beam_energy"], dtype=np.float64))
    joined = {k: np.concatenate(v) for k, v in parts.items()}
    return TestResult({n: joined[n] for n in names}, joined["sums"], joined["fem"],
                      joined["beam"], worst)  # fmt: skip


def fem_metrics(predicted: npt.ArrayLike, truth: npt.ArrayLike) -> dict[str, float]:
    """RMSE, bias and Pearson correlation of predicted against true fractions (events where
    the truth is defined)."""
    p, t = np.asarray(predicted, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    ok = np.isfinite(t)
    p, t = p[ok], t[ok]
    if p.size < 2:
        return {"events": int(p.size), "rmse": math.nan, "bias": math.nan, "correlation": math.nan}
    spread = p.std() * t.std()
    return {
        "events": int(p.size),
        "rmse": float(np.sqrt(np.mean((p - t) ** 2))),
        "bias": float(np.mean(p - t)),
        "correlation": float(np.mean((p - p.mean()) * (t - t.mean())) / spread)
        if spread > 0
        else math.nan,
    }


# ------------------------------------------------------------------------------ entry


def fit_constants(trainer: Trainer) -> dict[str, Any]:
    """k_s and (e/h)_s on (the first :data:`FIT_EVENTS` of) the training split, the best
    state's fractions; written into the network's buffers."""
    sums, fems, beams, n = [], [], [], 0
    loader = trainer.splits.train.with_options(batch_showers=EVAL_BATCH,
                                               buffer_showers=EVAL_BATCH)  # fmt: skip
    for inputs, events, outputs in trainer.predict(loader):
        sums.append(np.asarray(inputs[SUMS], dtype=np.float64))
        fems.append(np.column_stack([outputs[1], outputs[2]]))
        beams.append(np.asarray(events["beam_energy"], dtype=np.float64))
        n += len(beams[-1])
        if n >= FIT_EVENTS:
            break
    fit = fit_e_over_h(np.concatenate(sums), np.concatenate(fems), np.concatenate(beams))
    torch = trainer.torch
    with torch.no_grad():
        trainer.network.em_scale.copy_(torch.tensor(fit["em_scale"]))
        trainer.network.e_over_h.copy_(torch.tensor(fit["e_over_h"]))
    return fit


def train(
    files: Sequence[str],
    output: str,
    *,
    options: Mapping[str, str],
    seed: int,
    command: str,
) -> Path:
    """Train ``dual_branch_cnn`` on calibrated pion ``files``; write ``output`` (.onnx), its
    card and ``<output>.curves.json``; returns the ONNX path (module docstring)."""
    torch = require_torch("dual_branch_cnn")
    o: DualBranchOptions = make_options(DualBranchOptions, dict(options))
    geometry = check_training_files(files)
    check_geometry(geometry)
    started = time.perf_counter()
    with scratch_directory(NAME) as scratch:
        loader = prepare_shards(
            files, Path(scratch) / "shards", batch_showers=o.batch_size,
            buffer_showers=o.buffer_events, seed=seed,
        )  # fmt: skip
        truth_fem({f: np.zeros(0) for f in loader.event_fields})  # the fields exist
        splits = make_splits(loader, seed, o)
        previous = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
        torch.use_deterministic_algorithms(True)
        if o.threads:
            torch.set_num_threads(o.threads)
        torch.manual_seed(seed)
        try:
            trainer = Trainer(torch, splits, geometry, o, seed)
            trained_on = trainer.device.type
            trainer.run()
            trainer.network.load_state_dict(trainer.best_state)
            trainer.network.to("cpu")
            trainer.device = torch.device("cpu")
            fit = fit_constants(trainer)
            data = export_onnx(torch, trainer.network, trainer.architecture)
            result = evaluate_test(trainer, data)
        finally:
            torch.set_num_threads(previous[0])
            torch.use_deterministic_algorithms(previous[1])
        if result.parity > PARITY_TOLERANCE:
            raise ModelError(
                f"dual_branch_cnn: onnxruntime and torch differ by up to {result.parity:.2e} "
                f"on the test split, more than {PARITY_TOLERANCE:g}: the export is wrong; "
                "report it with the torch and onnxruntime versions"
            )
        metrics = {
            **test_metrics(result.outputs[OUTPUT], result.beam_gev),
            **{
                f"fem_{s}": fem_metrics(result.outputs[f"fem_{s}"], result.fem_truth[:, k])
                for k, s in enumerate(SECTIONS)
            },
            "e_over_h_fit": fit,
            "sum": test_metrics(result.sums.sum(axis=1), result.beam_gev),
            "e_over_h_with_true_fem": test_metrics(
                e_over_h_energy(
                    result.sums, np.nan_to_num(result.fem_truth), fit["em_scale"], fit["e_over_h"]
                ),
                result.beam_gev,
            ),
            "onnx_parity_max": result.parity,
            "validation_loss_best": trainer.best_loss,
            "best_step": trainer.best_step,
            "steps": trainer.step,
            "stopped": trainer.stopped,
            "split_events": {
                "train": splits.train.n_showers,
                "validation": splits.validation.n_showers,
                "test": splits.test.n_showers,
            },
            "parameters": int(sum(p.numel() for p in trainer.network.parameters())),
            "architecture": dataclasses.asdict(trainer.architecture),
            "options": dataclasses.asdict(o),
            "device": trained_on,
            "training_seconds": trainer.seconds,
            "seconds_per_step": trainer.seconds / max(trainer.step, 1),
            "total_seconds": time.perf_counter() - started,
        }
        if o.direct_energy:
            metrics["energy_direct"] = test_metrics(result.outputs[DIRECT], result.beam_gev)
        return write_model(
            data,
            output,
            name=NAME,
            geometry=geometry,
            inputs=[
                *(model_input(name, geometry, preset=o.preset) for name in VOXEL_INPUTS),
                model_input(SUMS, geometry),
            ],
            output_name=OUTPUT,
            training_sample=files,
            command=command,
            metrics=metrics,
            versions=current_versions(torch=torch.__version__),
            curves=trainer.curves | {"stopped": trainer.stopped, "best_step": trainer.best_step},
        )


__all__ = [
    "Architecture",
    "DualBranchOptions",
    "build_network",
    "e_over_h_energy",
    "export_onnx",
    "fem_metrics",
    "fit_e_over_h",
    "output_names",
    "train",
]
