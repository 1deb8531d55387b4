"""``calibraton``: Calibr-A-Ton, binned cell constants learnt from whole showers (seed 003).

What to use when:

- :class:`Calibraton` (``calibraton``) -- cell responses that depend on position and energy
  (dead material, non-linearity, ring- or energy-dependent biases): constants
  C(ℓ, r, θ, S) in bins of layer, ring, theta and cell energy (:mod:`calocoffea.binned`)
  such that Σ_i C_i S_i reproduces a reference energy E_ref per shower (eq. 2), found by
  minimising eq. 3 with Adam and cosine annealing.
- :class:`~calocoffea.plugins.per_layer.PerLayer` (``per_layer``) -- the baseline of
  seed 003, one constant per layer (eq. 4), trained by the same engine.
- :func:`calibrated_energies` / :func:`apply_to_events` -- Σ C·S per shower [GeV] with
  learnt constants (either method); :func:`response` E_cal / E_ref (eq. 5);
  :func:`resolution_by_energy` the seed's resolution estimator, RMS / median of the response
  per energy point, and :func:`fit_resolution` its curve sqrt(a²/E + c²).

The equations (seed 003, arXiv:2504.02006):

- eq. 2: Σ_i C(pos_i, S_i) S_i -> E_ref over the cells i of a shower;
- eq. 3: L = Σ_j |Σ_i C S - E_ref^j| / E_ref^j (``loss="l1"``; ``"l2"`` squares the
  relative difference); we average over the showers of a batch instead of summing (the same
  minimum; Adam's steps do not depend on the scale of the loss);
- eq. 4: the per-layer loss, Σ_ℓ C_ℓ S_ℓ with S_ℓ the layer sums;
- eq. 5: response = Σ C S / E_ref;
- §3.3: S = A x E_raw, with the absorber correction A the mean over the training showers of
  E_ref / Σ_i E_raw,i (the mean of 1/response at C = 1; ~75.9 in the seed's Geant4 sample,
  ours is computed from the training data and recorded);
- §3.4 and eq. 6: the binning (:class:`calocoffea.binned.CalibratonBinning`).

How the fit runs (``needs_events``): ``collect`` writes each chunk's hits above threshold
(cell index, layer, energy [MeV]) and E_ref per shower into a shard (the runner does the
writing); ``fit`` receives the shard paths and

1. keeps the showers whose beam impact lies in the fiducial rings (seed: electrons aimed at
   the innermost 26 rings; files without ``beam_x``/``beam_y`` keep every shower) and splits
   them by shower into training and test samples (``train_fraction``; seed: 3.5e5 / 1.5e5);
2. reads the training showers once for A and a sample of hits for the quantile edges;
3. reads every shower once more and writes compact shards of (bin, Σ S) per shower and bin:
   the loss depends on the hits only through these sums, so training sees the same loss and
   gradients from fewer numbers (a few hundred per shower for Calibr-A-Ton, one per layer for
   the per-layer fit);
4. trains: constants start at 1; batches of ``batch_showers`` whole showers (seed: 500) from
   a :class:`~calocoffea.streaming.ShowerLoader` with a bounded shuffle buffer; per batch a
   gather of the constants by flat bin, a scatter-add per shower (``index_add_``), the loss,
   an Adam step and a cosine-annealed learning rate (``CosineAnnealingLR`` over the planned
   steps); after each epoch the loss on the whole test sample; training stops when it has not
   improved by ``tolerance`` for ``patience`` epochs and the best epoch's constants are kept.

Loss curves (train per ``log_every`` steps and per epoch, test per epoch, the learning rate)
and the numbers of showers, bins, empty bins and A are in ``provenance.fit_quality``.
torch is the optional extra ``train``; only ``fit`` imports it.
"""

from __future__ import annotations

import functools
import tempfile
import time
import warnings
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import awkward as ak
import numpy as np
import numpy.typing as npt

from calocoffea.binned import (
    SEED_BINS,
    SEED_THRESHOLD_MEV,
    BinnedConstants,
    CalibratonBinning,
    default_fiducial_rings,
    layer_tables,
)
from calocoffea.cellcoords import rings_and_angles
from calocoffea.constants import Constants, Provenance
from calocoffea.exceptions import (
    ConstantsError,
    FitError,
    FitWarning,
    GeometryMismatchError,
    MethodOptionsError,
    MissingBranchError,
)
from calocoffea.fitting import FitResult, rms_over_median
from calocoffea.fitting import resolution as fit_resolution_curve
from calocoffea.geometry import Geometry, get_geometry
from calocoffea.methods import CalibrationMethod, fit_quality_json, require_torch
from calocoffea.processors.common import cell_indices, flat_hits
from calocoffea.streaming import ShowerBatch, ShowerLoader, write_npz_shard

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

URL = "https://arxiv.org/abs/2504.02006"
LOSSES = ("l1", "l2")
#: Hit fields ``collect`` writes besides those every events file has.
_HIT_FIELDS = ("cellid", "layer", "x", "y", "z", "energy")
#: Showers per read in the preparation passes (a few MB of hits each).
_PREPARE_SHOWERS = 5_000
#: Showers per batch when evaluating the test loss (no gradients: larger is faster).
_EVAL_SHOWERS = 20_000
#: How many empty bins ``fit_quality`` lists by label.
_LISTED = 20


# ------------------------------------------------------------------------------ options


@dataclass(frozen=True)
class ShowerFitOptions:
    """Options every seed 003 method shares (the training engine and the inputs)."""

    #: event field holding the reference energy E_ref [GeV] (the generator energy by default)
    reference: str = "beam_energy"
    #: hits at or below this energy [MeV] are dropped (seed 003: E_thr = 14.91 keV, a tenth
    #: of a MIP in 320 um Si; for scintillator tiles use e.g. half a MIP, 0.23 MeV)
    threshold_mev: float = SEED_THRESHOLD_MEV
    #: rings 1..n of the first section are fiducial; 0: the rule of
    #: :func:`calocoffea.binned.default_fiducial_rings` (26 of HGCAL's 35, as the seed)
    fiducial_rings: int = 0
    #: keep only showers whose beam impact (beam_x, beam_y) lies in a fiducial ring
    fiducial_showers: bool = True
    #: with fiducial_showers, keep impacts in rings 1..n; 0: the fiducial rings (the seed).
    #: Calibrating every ring while dropping showers that leak out of the side: n < rings
    shower_rings: int = 0
    #: "l1": eq. 3, mean |E - E_ref| / E_ref; "l2": mean ((E - E_ref) / E_ref)^2
    loss: str = "l1"
    #: Adam's initial learning rate (cosine-annealed to 0 over the planned steps)
    learning_rate: float = 1e-3
    #: most passes over the training sample
    epochs: int = 20
    #: showers per batch (seed 003: 500)
    batch_showers: int = 500
    #: showers held by the shuffle buffer (memory: about 2 kB per shower after binning)
    buffer_showers: int = 50_000
    #: fraction of the showers used for training, the rest for the test loss (seed: 0.7)
    train_fraction: float = 0.7
    #: stop after this many epochs without improving the test loss; 0: never stop early
    patience: int = 3
    #: an epoch improves when the test loss falls below best x (1 - tolerance)
    tolerance: float = 1e-4
    #: seed of the split, the shuffling and the binning sample
    seed: int = 0
    #: training losses are averaged over this many steps in fit_quality (seed 003: 14)
    log_every: int = 14
    #: torch threads during the fit; 0: torch's default
    threads: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise MethodOptionsError(f"unknown loss {self.loss!r}; valid: {', '.join(LOSSES)}")
        if not 0.0 < self.train_fraction < 1.0:
            raise MethodOptionsError(
                f"train_fraction must lie in (0, 1), got {self.train_fraction}"
            )
        positive = {
            "learning_rate": self.learning_rate,
            "epochs": self.epochs,
            "batch_showers": self.batch_showers,
            "log_every": self.log_every,
        }
        for name, value in positive.items():
            if not value > 0:
                raise MethodOptionsError(f"option {name!r} must be positive, got {value!r}")
        if self.buffer_showers < self.batch_showers:
            raise MethodOptionsError(
                f"buffer_showers ({self.buffer_showers}) must hold at least one batch "
                f"({self.batch_showers} showers)"
            )
        for name in ("fiducial_rings", "shower_rings", "patience", "threads"):
            if getattr(self, name) < 0:
                raise MethodOptionsError(f"option {name!r} must be >= 0")


@dataclass(frozen=True)
class CalibratonOptions(ShowerFitOptions):
    """Options of :class:`Calibraton` (bins per dimension: seed 003 §3.4)."""

    #: layer bins per S bin (eq. 6); 0: one per layer
    bins_layer: int = SEED_BINS[0]
    #: ring bins over the fiducial rings; 0: one per ring
    bins_ring: int = SEED_BINS[1]
    #: theta bins; 0: one per cell direction (with the two above and bins_s=1: per cell)
    bins_theta: int = SEED_BINS[2]
    #: cell-energy bins (also of the hadronic section)
    bins_s: int = SEED_BINS[3]
    #: hits sampled for the quantile edges
    binning_hits: int = 2_000_000

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("bins_s", "binning_hits"):
            if getattr(self, name) < 1:
                raise MethodOptionsError(f"option {name!r} must be at least 1")
        for name in ("bins_layer", "bins_ring", "bins_theta"):
            if getattr(self, name) < 0:
                raise MethodOptionsError(
                    f"option {name!r} must be at least 1, or 0 for one bin per cell value"
                )


# ------------------------------------------------------------------------------ method base


@dataclass(frozen=True)
class Binner:
    """How hits map to trainable constants."""

    #: trainable constants; index ``n_bins`` is the slot of hits fixed to factor 1
    n_bins: int
    #: (dense cell index, layer, S [GeV]) of flat hits -> flat bin index
    index: Callable[[IntArray, IntArray, FloatArray], IntArray]
    #: what fit_quality records about the binning
    quality: dict[str, Any]
    #: the method's own description of it (Calibr-A-Ton: the CalibratonBinning)
    binning: Any = None


@dataclass(frozen=True)
class Prepared:
    """What the preparation passes give the training: compact shards and their summary."""

    train: ShowerLoader
    test: ShowerLoader
    n_bins: int
    absorber_correction: float
    hits_per_bin: IntArray
    quality: dict[str, Any]
    #: what :meth:`ShowerCalibration.make_binner` built (Calibr-A-Ton: the binning)
    binning: Any = None


class ShowerCalibration(CalibrationMethod):
    """Shared by the seed 003 methods: collect whole showers, prepare, train, report.

    Subclasses say how hits map to constants: :meth:`make_binner` returns a :class:`Binner`
    (number of trainable constants, function from (cell, layer, S [GeV]) to flat bin, with
    the index ``n_bins`` for hits whose factor is fixed to 1), and :meth:`constants` turns
    the trained values into the method's constants."""

    run_type: ClassVar[str] = "physics"
    input_stage: ClassVar[str] = "sim"
    needs_events: ClassVar[bool] = True
    options: ShowerFitOptions

    # ---- geometry helpers ---------------------------------------------------------
    @property
    def fiducial_rings(self) -> int:
        return self.options.fiducial_rings or default_fiducial_rings(self.detector)

    @functools.cached_property
    def cell_coordinates(self) -> tuple[IntArray, FloatArray]:
        """(ring, theta) of every cell (cellids order), computed once per process."""
        return rings_and_angles(self.detector)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("cell_coordinates", None)  # rebuilt where the method runs
        return state

    # ---- collect ------------------------------------------------------------------
    def collect(self, events: Any) -> tuple[dict[str, Any], IntArray, dict[str, Any]]:
        """The chunk's hits above threshold with their dense cell index, and per shower
        E_ref (``e_ref`` [GeV]) and the beam impact (NaN where the file has none)."""
        counts, flat = flat_hits(events, _HIT_FIELDS)
        missing = [name for name in _HIT_FIELDS if name not in flat]
        where = events.metadata.get("filename", "the input") if hasattr(events, "metadata") else ""
        if missing:
            raise MissingBranchError(
                f"{where}: {type(self).__name__} needs the hit field(s) "
                f"{', '.join('hit_' + m for m in missing)}"
            )
        reference = self.options.reference
        if reference not in events.fields:
            scalars = sorted(f for f in events.fields if f != "hits")
            raise MissingBranchError(
                f"{where}: no event field {reference!r} for the reference energy E_ref; the "
                f"events have {', '.join(scalars)}; set the option reference=<field> to one "
                "holding E_ref [GeV]"
            )
        e_ref = np.asarray(ak.to_numpy(events[reference]), dtype=np.float64)
        bad = ~(np.isfinite(e_ref) & (e_ref > 0))
        if np.any(bad):
            raise FitError(
                f"{where}: {np.count_nonzero(bad)} events have a reference energy "
                f"{reference!r} that is not a positive number (e.g. {e_ref[bad][:3].tolist()}); "
                "E_ref divides the loss: select events with a known E_ref"
            )
        cell = cell_indices(events, flat["cellid"], self.geometry)
        keep = np.asarray(flat["energy"]) > self.options.threshold_mev
        shower = np.repeat(np.arange(counts.size), counts)
        kept_counts = np.bincount(shower[keep], minlength=counts.size).astype(np.int64)
        hit_fields = {name: np.asarray(flat[name])[keep] for name in _HIT_FIELDS}
        hit_fields["cell"] = cell[keep].astype(np.int32)
        n = counts.size
        event_fields: dict[str, Any] = {
            name: ak.to_numpy(events[name]) for name in ("event", "run", "pdg", "beam_energy")
        }
        event_fields["e_ref"] = e_ref
        for name in ("beam_x", "beam_y"):
            present = name in events.fields
            event_fields[name] = (
                np.asarray(ak.to_numpy(events[name]), np.float64) if present else np.full(n, np.nan)
            )
        return event_fields, kept_counts, hit_fields

    # ---- hooks ----------------------------------------------------------------------
    @abstractmethod
    def make_binner(self, sample: dict[str, npt.NDArray[Any]]) -> Binner:
        """How hits map to constants, from a sample of training hits (``cell``, ``layer``,
        ``s`` [GeV]; empty unless :meth:`wants_sample`)."""

    def wants_sample(self) -> int:
        """Training hits to sample for :meth:`make_binner` (0: none)."""
        return 0

    # ---- fit --------------------------------------------------------------------------
    def prepare(self, shard_paths: Sequence[str], directory: str) -> Prepared:
        """Steps 1-3 of the module docstring; compact shards go to ``directory``."""
        o = self.options
        paths = [str(p) for p in shard_paths]
        if not paths:
            raise FitError(f"{type(self).__name__}: no shards to fit; give at least one input file")
        loader = ShowerLoader(
            paths,
            fields=("cell", "layer", "energy"),
            event_fields=("e_ref",),
            batch_showers=_PREPARE_SHOWERS,
            buffer_showers=_PREPARE_SHOWERS,
            seed=o.seed,
        )
        quality: dict[str, Any] = {"showers_in": loader.n_showers}
        loader = self._fiducial(loader, quality)
        if loader.n_showers < 2:
            raise FitError(
                f"{type(self).__name__}: {loader.n_showers} shower(s) to fit after the "
                "fiducial selection; give more showers (and check the beam position)"
            )
        train, test = loader.split(o.train_fraction, o.seed)
        if train.n_showers == 0 or test.n_showers == 0:
            raise FitError(
                f"{type(self).__name__}: the split of {loader.n_showers} showers with "
                f"train_fraction={o.train_fraction} leaves an empty sample; give more showers"
            )
        absorber, sample = self._first_pass(train)
        binner = self.make_binner(sample)
        quality.update(binner.quality)
        quality.update(
            {"showers_train": train.n_showers, "showers_test": test.n_showers,
             "absorber_correction": absorber}
        )  # fmt: skip
        hits_per_bin = np.zeros(binner.n_bins + 1, np.int64)
        compact = {}
        for name, part in (("train", train), ("test", test)):
            out = Path(directory) / name
            out.mkdir(parents=True, exist_ok=True)
            shards, counts = self._compact(part, absorber, binner, out)
            if name == "train":
                hits_per_bin = counts
            compact[name] = ShowerLoader(
                shards,
                fields=("bin", "s"),
                event_fields=("e_ref",),
                batch_showers=o.batch_showers if name == "train" else _EVAL_SHOWERS,
                buffer_showers=(
                    max(o.buffer_showers, o.batch_showers) if name == "train" else _EVAL_SHOWERS
                ),
                seed=o.seed,
            )
        return Prepared(
            compact["train"], compact["test"], binner.n_bins, absorber, hits_per_bin, quality,
            binner.binning,
        )  # fmt: skip

    def _fiducial(self, loader: ShowerLoader, quality: dict[str, Any]) -> ShowerLoader:
        if not self.options.fiducial_showers:
            quality["fiducial_selection"] = "off"
            return loader
        beam = loader.with_options(event_fields=("beam_x", "beam_y")).scalars(("beam_x", "beam_y"))
        x, y = beam["beam_x"], beam["beam_y"]
        rings = self.options.shower_rings or self.fiducial_rings
        known = np.isfinite(x) & np.isfinite(y)
        keep = np.ones(x.size, dtype=bool)
        if np.any(known):
            geometry = self.detector
            ring, _ = self.cell_coordinates
            first_layer = np.zeros(int(known.sum()), np.int64)
            cellid, inside = geometry.cell_of(first_layer, x[known], y[known])
            index = geometry.cell_index(cellid)
            ring_of = np.where(inside & (index >= 0), ring[np.maximum(index, 0)], 0)
            keep[known] = inside & (ring_of >= 1) & (ring_of <= rings)
        quality["fiducial_selection"] = {
            "rings": rings,
            "kept": int(keep.sum()),
            "rejected": int((~keep).sum()),
            "without_beam_position": int((~known).sum()),
        }
        return loader.subset(keep)

    def _first_pass(self, train: ShowerLoader) -> tuple[float, dict[str, npt.NDArray[Any]]]:
        """Absorber correction (mean of E_ref / Σ E_raw over the training showers) and a
        random sample of training hits."""
        wanted = self.wants_sample()
        rng = np.random.default_rng(np.random.SeedSequence([self.options.seed, 0xB1A5]))
        ratio_sum, n_ratio, probability = 0.0, 0, 1.0
        sample: dict[str, list[npt.NDArray[Any]]] = {"cell": [], "layer": [], "energy": []}
        n_train = train.n_showers
        for i, batch in enumerate(train.epoch(0, shuffle=False)):
            raw = batch.sum_per_shower(batch.hits["energy"].astype(np.float64))
            ok = raw > 0
            ratio_sum += float(np.sum(batch.events["e_ref"][ok] * 1000.0 / raw[ok]))
            n_ratio += int(ok.sum())
            if not wanted:
                continue
            if i == 0 and batch.n_hits:
                expected = batch.n_hits / batch.n_showers * n_train
                probability = min(1.0, wanted / expected)
            take = rng.random(batch.n_hits) < probability
            for name in sample:
                sample[name].append(batch.hits[name][take])
        if n_ratio == 0:
            raise FitError(
                f"{type(self).__name__}: no training shower has a hit above the threshold "
                f"{self.options.threshold_mev} MeV; lower threshold_mev or check the input"
            )
        absorber = ratio_sum / n_ratio
        joined = {k: np.concatenate(v) if v else np.zeros(0) for k, v in sample.items()}
        joined["s"] = joined["energy"].astype(np.float64) * absorber / 1000.0
        return absorber, joined

    def _compact(
        self,
        part: ShowerLoader,
        absorber: float,
        binner: Binner,
        directory: Path,
    ) -> tuple[list[str], IntArray]:
        """Write (bin, Σ S) per shower and bin; return the shards and hits per bin."""
        shards: list[str] = []
        hits_per_bin = np.zeros(binner.n_bins + 1, np.int64)
        width = binner.n_bins + 1
        for k, batch in enumerate(part.epoch(0, shuffle=False)):
            s = batch.hits["energy"].astype(np.float64) * (absorber / 1000.0)
            cell = batch.hits["cell"].astype(np.int64)
            flat = binner.index(cell, batch.hits["layer"].astype(np.int64), s)
            hits_per_bin += np.bincount(flat, minlength=width)
            key = batch.shower * width + flat
            unique, inverse = np.unique(key, return_inverse=True)
            summed = np.bincount(inverse, weights=s, minlength=unique.size)
            shower, bins = np.divmod(unique, width)
            counts = np.bincount(shower, minlength=batch.n_showers)
            path = directory / f"compact-{k:06d}.npz"
            write_npz_shard(
                path,
                {"e_ref": batch.events["e_ref"].astype(np.float32), "id": batch.ids},
                counts,
                {"bin": bins.astype(np.int32), "s": summed.astype(np.float32)},
            )
            shards.append(str(path))
        return shards, hits_per_bin

    def fit(self, accumulated: Sequence[str]) -> Constants:
        """Constants from the shards ``collect`` wrote (paths in (file, entry) order)."""
        torch = require_torch("the seed 003 calibrations (calibraton, per_layer)")
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="calocoffea-seed003-") as directory:
            prepared = self.prepare(accumulated, directory)
            prepare_s = time.perf_counter() - start
            values, history = train_constants(torch, prepared, self.options)
        history["seconds"] = {"prepare": prepare_s, "total": time.perf_counter() - start}
        quality = {**prepared.quality, **history}
        return self.constants(values, prepared, quality)

    @abstractmethod
    def constants(
        self, values: FloatArray, prepared: Prepared, quality: dict[str, Any]
    ) -> Constants:
        """The method's constants from the trained values."""

    def provenance(self, prepared: Prepared, quality: dict[str, Any], method: str) -> Provenance:
        g = self.detector
        return Provenance(
            method=method,
            geometry=g.name,
            geometry_hash=g.hash,
            sample=(
                f"{prepared.train.n_showers} training and {prepared.test.n_showers} test showers "
                f"(E_ref = {self.options.reference})"
            ),
            fit_quality=fit_quality_json(quality),
        )

    # ---- apply ------------------------------------------------------------------------
    def apply(
        self,
        adc: npt.NDArray[np.float64],
        gain: npt.NDArray[np.integer],
        flags: npt.NDArray[np.integer],
        cell: npt.NDArray[np.int64],
        layer: npt.NDArray[np.integer],
        constants: Constants,
    ) -> npt.NDArray[np.float64]:
        """Calibrated energy [GeV] of each flat hit: ``adc`` holds the hit energies at this
        method's input stage (``sim``: MeV); ``gain`` and ``flags`` are not used. Hits at or
        below the threshold give 0. The inputs are not modified."""
        return hit_energies(constants, self.detector, cell, adc)


# ------------------------------------------------------------------------------ training


def _loss(torch: Any, energy: Any, e_ref: Any, kind: str) -> Any:
    relative = (energy - e_ref) / e_ref
    return relative.abs() if kind == "l1" else relative.square()


def _batch_tensors(torch: Any, batch: ShowerBatch) -> tuple[Any, Any, Any, Any]:
    bins = torch.from_numpy(np.ascontiguousarray(batch.hits["bin"], dtype=np.int64))
    s = torch.from_numpy(np.ascontiguousarray(batch.hits["s"], dtype=np.float32))
    shower = torch.from_numpy(batch.shower)
    e_ref = torch.from_numpy(np.ascontiguousarray(batch.events["e_ref"], dtype=np.float32))
    return bins, s, shower, e_ref


def _shower_energies(torch: Any, table: Any, bins: Any, s: Any, shower: Any, n: int) -> Any:
    """Σ_i C[bin_i] S_i per shower: a gather and a scatter-add over flat hits."""
    contribution = table.index_select(0, bins) * s
    return torch.zeros(n, dtype=table.dtype).index_add_(0, shower, contribution)


def evaluate_loss(torch: Any, loader: ShowerLoader, values: Any, kind: str) -> float:
    """Mean loss (eq. 3 per shower, averaged) of constants ``values`` (torch, n_bins) over
    every shower of ``loader``."""
    total, n = 0.0, 0
    with torch.no_grad():
        table = torch.cat([values.detach(), torch.ones(1, dtype=values.dtype)])
        for batch in loader.epoch(0, shuffle=False):
            bins, s, shower, e_ref = _batch_tensors(torch, batch)
            energy = _shower_energies(torch, table, bins, s, shower, batch.n_showers)
            total += float(_loss(torch, energy, e_ref, kind).sum())
            n += batch.n_showers
    return total / max(n, 1)


def train_constants(
    torch: Any, prepared: Prepared, o: ShowerFitOptions
) -> tuple[FloatArray, dict[str, Any]]:
    """Adam + cosine annealing on eq. 3 (or its square) with early stopping on the test
    loss; the constants of the best epoch and the loss history."""
    threads = torch.get_num_threads()
    if o.threads:
        torch.set_num_threads(o.threads)
    try:
        return _train(torch, prepared, o)
    finally:
        torch.set_num_threads(threads)


def _train(torch: Any, prepared: Prepared, o: ShowerFitOptions) -> tuple[FloatArray, dict]:
    train, test = prepared.train, prepared.test
    params = torch.ones(prepared.n_bins, dtype=torch.float32, requires_grad=True)
    one = torch.ones(1, dtype=torch.float32)
    optimizer = torch.optim.Adam([params], lr=o.learning_rate)
    steps_per_epoch = len(train)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, o.epochs * steps_per_epoch)
    )
    initial = evaluate_loss(torch, test, params, o.loss)
    best, best_epoch, best_values = initial, 0, params.detach().clone()
    history: dict[str, Any] = {
        "loss": o.loss,
        "test_loss_initial": initial,
        "train_loss_epoch": [],
        "test_loss_epoch": [],
        "train_loss_steps": [],
        "learning_rate_steps": [],
        "steps_per_log": o.log_every,
    }
    window: list[float] = []
    step, stale, stopped = 0, 0, False
    epoch_seconds = []
    for epoch in range(o.epochs):
        t0 = time.perf_counter()
        epoch_sum, epoch_n = 0.0, 0
        for batch in train.epoch(epoch):
            bins, s, shower, e_ref = _batch_tensors(torch, batch)
            table = torch.cat([params, one])
            energy = _shower_energies(torch, table, bins, s, shower, batch.n_showers)
            loss = _loss(torch, energy, e_ref, o.loss).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            value = float(loss.detach())
            window.append(value)
            epoch_sum += value * batch.n_showers
            epoch_n += batch.n_showers
            step += 1
            if len(window) == o.log_every:
                history["train_loss_steps"].append(sum(window) / len(window))
                history["learning_rate_steps"].append(float(scheduler.get_last_lr()[0]))
                window.clear()
        test_loss = evaluate_loss(torch, test, params, o.loss)
        history["train_loss_epoch"].append(epoch_sum / max(epoch_n, 1))
        history["test_loss_epoch"].append(test_loss)
        epoch_seconds.append(time.perf_counter() - t0)
        if test_loss < best * (1.0 - o.tolerance):
            best, best_epoch, best_values, stale = test_loss, epoch + 1, params.detach().clone(), 0
        else:
            stale += 1
            if o.patience and stale >= o.patience:
                stopped = True
                break
    history.update(
        {
            "steps": step,
            "epochs_run": len(history["test_loss_epoch"]),
            "best_epoch": best_epoch,
            "test_loss_best": best,
            "stopped_early": stopped,
            "epoch_seconds": epoch_seconds,
        }
    )
    values = best_values.numpy().astype(np.float64)
    return values, history


# ------------------------------------------------------------------------------ Calibr-A-Ton


class Calibraton(ShowerCalibration):
    """Calibr-A-Ton: constants C(ℓ, r, θ, S) minimising eq. 3 over whole showers."""

    description: ClassVar[str] = (
        "Calibr-A-Ton: binned constants C(layer, ring, theta, S) from whole showers against "
        "E_ref, relative L1 loss with Adam and cosine annealing, quantile binning (seed 003)"
    )
    url: ClassVar[str] = URL
    Options: ClassVar[type] = CalibratonOptions
    options: CalibratonOptions

    def wants_sample(self) -> int:
        return self.options.binning_hits

    def binning(self, sample: dict[str, npt.NDArray[Any]]) -> CalibratonBinning:
        """The quantile binning from a sample of training hits (``cell``, ``layer``, ``s``)."""
        o = self.options
        geometry = self.detector
        ring, theta = self.cell_coordinates
        cell = sample["cell"].astype(np.int64)
        first = geometry.layer_section[geometry.cell_layer] == 0
        fiducial_cells = first & (ring >= 1) & (ring <= self.fiducial_rings)
        return CalibratonBinning.from_hits(
            sample["layer"],
            ring[cell],
            theta[cell],
            sample["s"],
            n_em_layers=len(geometry.sections[0].layers),
            n_layers=geometry.n_layers,
            fiducial_rings=self.fiducial_rings,
            bins=(o.bins_layer, o.bins_ring, o.bins_theta, o.bins_s),
            cell_theta=theta[fiducial_cells],
        )

    def make_binner(self, sample: dict[str, npt.NDArray[Any]]) -> Binner:
        binning = self.binning(sample)
        ring, theta = self.cell_coordinates

        def index(cell: IntArray, layer: IntArray, s: FloatArray) -> IntArray:
            return binning.index(layer, ring[cell], theta[cell], s)

        return Binner(binning.n_bins, index, {"bins": binning.bins}, binning)

    def constants(
        self, values: FloatArray, prepared: Prepared, quality: dict[str, Any]
    ) -> Constants:
        binning: CalibratonBinning = prepared.binning
        ring, theta = self.cell_coordinates
        used = binning.used_slots() & binning.reachable(self.detector.cell_layer, ring, theta)
        empty = np.flatnonzero(used & (prepared.hits_per_bin[: binning.n_bins] == 0))
        values = np.where(prepared.hits_per_bin[: binning.n_bins] > 0, values, 1.0)
        quality["empty_bins"] = {
            "count": int(empty.size),
            "of": int(used.sum()),
            "first": binning.labels(empty[:_LISTED]),
        }
        quality["hits_per_bin"] = {
            "min_used": int(prepared.hits_per_bin[: binning.n_bins][used].min()),
            "median_used": float(np.median(prepared.hits_per_bin[: binning.n_bins][used])),
        }
        if empty.size:
            warnings.warn(
                f"calibraton: {empty.size} of {int(used.sum())} bins hold no training hit and "
                f"keep the factor 1 (e.g. {binning.labels(empty[:3])}); give more showers or "
                "fewer bins (bins_layer, bins_ring, bins_theta, bins_s)",
                FitWarning,
                stacklevel=3,
            )
        geometry = self.detector
        return BinnedConstants(
            tables=layer_tables(geometry, prepared.absorber_correction, self.options.threshold_mev),
            provenance=self.provenance(prepared, quality, "calibraton"),
            binning=binning,
            factors=values,
        )


# ------------------------------------------------------------------------------ evaluation


def hit_energies(
    constants: Constants,
    geometry: str | Geometry,
    cell: npt.ArrayLike,
    energy_mev: npt.ArrayLike,
) -> FloatArray:
    """Calibrated energy C·S [GeV] of each hit (dense cell index, raw energy [MeV]) with the
    constants of :class:`Calibraton` (:class:`~calocoffea.binned.BinnedConstants`) or of
    :class:`~calocoffea.plugins.per_layer.PerLayer` (table ``layer_scale``); hits at or
    below the fit's threshold give 0."""
    geometry = get_geometry(geometry)
    constants.check_geometry(geometry, "the geometry of these hits")
    cell = np.asarray(cell, dtype=np.int64)
    energy = np.asarray(energy_mev, dtype=np.float64)
    if np.any((cell < 0) | (cell >= geometry.n_cells)):
        raise GeometryMismatchError(
            f"cell indices outside 0..{geometry.n_cells - 1} of {geometry.name!r}; map cell ids "
            "with Geometry.cell_index first"
        )
    layer = geometry.cell_layer[cell]
    absorber = _layer_array(constants, "absorber_correction", geometry)
    threshold = _layer_array(constants, "threshold_mev", geometry)
    s = absorber[layer] * energy / 1000.0
    if isinstance(constants, BinnedConstants):
        ring, theta = rings_and_angles(geometry)
        factor = constants.evaluate(layer, ring[cell], theta[cell], s)
    else:
        factor = _layer_array(constants, "layer_scale", geometry)[layer]
    return np.where(energy > threshold[layer], factor * s, 0.0)


def _layer_array(constants: Constants, name: str, geometry: Geometry) -> FloatArray:
    if name not in constants.tables:
        raise ConstantsError(
            f"constants ({constants.provenance.method}) have no table {name!r} (they have "
            f"{', '.join(constants.tables)}); use the output of the calibraton or per_layer fit"
        )
    table = constants.tables[name]
    values = np.full(geometry.n_layers, np.nan)
    ok = (table.keys >= 0) & (table.keys < geometry.n_layers)
    values[table.keys[ok]] = table.values[ok]
    if np.any(np.isnan(values)):
        raise ConstantsError(f"table {name!r} lacks layers of {geometry.name!r}")
    return values


def calibrated_energies(
    constants: Constants,
    geometry: str | Geometry,
    cell: npt.ArrayLike,
    energy_mev: npt.ArrayLike,
    counts: npt.ArrayLike,
) -> FloatArray:
    """Σ C·S per shower [GeV] of flat hits (showers one after the other, ``counts`` hits
    each)."""
    counts = np.asarray(counts, dtype=np.int64)
    per_hit = hit_energies(constants, geometry, cell, energy_mev)
    shower = np.repeat(np.arange(counts.size), counts)
    summed = np.bincount(shower, weights=per_hit, minlength=counts.size)
    return summed.astype(np.float64, copy=False)


def apply_to_events(
    constants: Constants,
    events: Any,
    *,
    geometry: str | Geometry | None = None,
    reference: str = "beam_energy",
) -> tuple[FloatArray, FloatArray]:
    """(E_cal [GeV], E_ref [GeV]) per event of ``events`` (awkward records with ``hits``,
    e.g. :func:`calocoffea.io.read_events`); the geometry is the constants' unless given."""
    geo = get_geometry(geometry if geometry is not None else constants.provenance.geometry)
    constants.check_geometry(geo, "the geometry given")
    if reference not in events.fields:
        raise MissingBranchError(
            f"the events have no field {reference!r} for E_ref; they have "
            f"{', '.join(f for f in events.fields if f != 'hits')}"
        )
    hits = events.hits
    counts = ak.to_numpy(ak.num(hits, axis=1))
    cellid = ak.to_numpy(ak.flatten(hits.cellid))
    cell = geo.cell_index(cellid)
    if np.any(cell < 0):
        raise GeometryMismatchError(
            f"{np.count_nonzero(cell < 0)} hits have cell ids that are not cells of "
            f"{geo.name!r} (e.g. {cellid[cell < 0][:3].tolist()}); were the events made for "
            "another geometry?"
        )
    energy = ak.to_numpy(ak.flatten(hits.energy))
    e_cal = calibrated_energies(constants, geo, cell, energy, counts)
    return e_cal, np.asarray(ak.to_numpy(events[reference]), dtype=np.float64)


def uncalibrated_energies(
    events: Any, absorber_correction: float, threshold_mev: float = SEED_THRESHOLD_MEV
) -> FloatArray:
    """A x Σ E_raw [GeV] per event (C = 1): the seed's "uncalibrated" response."""
    energy = events.hits.energy
    kept = ak.where(energy > threshold_mev, energy, 0.0)
    return absorber_correction * np.asarray(ak.to_numpy(ak.sum(kept, axis=1))) / 1000.0


def response(e_cal: npt.ArrayLike, e_ref: npt.ArrayLike) -> FloatArray:
    """eq. 5: E_cal / E_ref per shower."""
    return np.asarray(e_cal, dtype=np.float64) / np.asarray(e_ref, dtype=np.float64)


@dataclass(frozen=True)
class ResolutionTable:
    """Per energy point: median E_ref [GeV], RMS/median of the response and its error,
    median response, number of showers."""

    energy: FloatArray
    resolution: FloatArray
    error: FloatArray
    median: FloatArray
    n: IntArray

    def rows(self) -> Iterator[tuple[float, float, float, float, int]]:
        yield from zip(
            self.energy.tolist(), self.resolution.tolist(), self.error.tolist(),
            self.median.tolist(), self.n.tolist(), strict=True,
        )  # fmt: skip


def resolution_by_energy(
    resp: npt.ArrayLike,
    e_ref: npt.ArrayLike,
    edges: npt.ArrayLike | None = None,
    *,
    min_showers: int = 20,
) -> ResolutionTable:
    """The seed's resolution estimator, RMS / median of the response
    (:func:`calocoffea.fitting.rms_over_median`), per energy point: the distinct E_ref values
    when there are at most 50 (a beam scan), otherwise bins of E_ref with ``edges`` (default
    10 equal bins over the range). Points with fewer than ``min_showers`` are skipped."""
    r = np.asarray(resp, dtype=np.float64)
    e = np.asarray(e_ref, dtype=np.float64)
    distinct = np.unique(e)
    if edges is None and distinct.size <= 50:
        groups = [e == value for value in distinct]
    else:
        edges_ = np.linspace(e.min(), e.max(), 11) if edges is None else np.asarray(edges)
        index = np.clip(np.searchsorted(edges_, e, side="right") - 1, 0, edges_.size - 2)
        groups = [index == k for k in range(edges_.size - 1)]
    rows = []
    for mask in groups:
        if mask.sum() < min_showers:
            continue
        estimate = rms_over_median(r[mask])
        rows.append(
            (float(np.median(e[mask])), estimate.value, estimate.error,
             float(np.median(r[mask])), int(mask.sum()))
        )  # fmt: skip
    if not rows:
        raise FitError(
            f"resolution_by_energy: no energy point has {min_showers} showers; give more "
            "showers or wider energy bins"
        )
    columns = list(zip(*rows, strict=True))
    return ResolutionTable(
        np.array(columns[0]), np.array(columns[1]), np.array(columns[2]),
        np.array(columns[3]), np.array(columns[4], dtype=np.int64),
    )  # fmt: skip


def fit_resolution(table: ResolutionTable) -> FitResult:
    """sqrt(a²/E + c²) through the points (seed 003, Figs. 7 and 11; noise term off)."""
    return fit_resolution_curve(table.energy, table.resolution, table.error, fix={"b": 0.0})


__all__ = [
    "Binner",
    "Calibraton",
    "CalibratonOptions",
    "Prepared",
    "ResolutionTable",
    "ShowerCalibration",
    "ShowerFitOptions",
    "apply_to_events",
    "calibrated_energies",
    "fit_resolution",
    "hit_energies",
    "resolution_by_energy",
    "response",
    "train_constants",
    "uncalibrated_energies",
]
