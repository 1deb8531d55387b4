"""``inverse_nonlinearity``: per-cell electronics non-linearity (a, b) that makes data look
like MC_digi (seed 000, "Calib cell level parameter a, b").

What to use when: the simulation is digitised with nominal (a, b) (it does not know each
cell's front end) and the data differ from it cell by cell; this method learns, per cell, the
(a, b) whose inverse x = y / (b - a y / X) turns the data amplitudes into the MC_digi ones.
It needs electrons (or any showers) in data and in a reference MC_digi file with the same beam
energies; the equations are in :mod:`calocoffea.nonlinearity_fit`.

``collect`` (whole events, ``needs_events``) keeps per hit the dense cell, the
high-gain-equivalent amplitude y [ADC] (stored as ``energy``: pedestal subtracted and low gain
times the gain ratio, steps 1-2 of :mod:`calocoffea.calibration`, with the starting
constants), whether it was clipped (SATURATED; its amplitude is the cell's range top), and the
position; per event the beam
energy. ``fit``:

1. reads the reference (option ``reference``, a raw MC_digi file of the same geometry) the same
   way and applies the MC's own inverse with the starting (a, b): x, what calibration expects;
2. weights data and MC events so that both have the overlap of their distributions of shower
   centroids (per beam energy; ``reweight_beam_profile``): the beam spots of data and MC
   differ (seed 000) and a cell's spectrum depends on where the showers hit; the fractions of
   events outside the overlap are reported (``profile_*_outside_overlap``). The energy-sum
   term uses all events unweighted (a contained shower's sum hardly depends on its impact);
3. per cell, matched quantiles of y (data) and x (MC, weighted), censored below the clipped
   fraction of either sample; closed-form (a, b) and Gauss-Newton to the exact 1-D W2;
4. jointly refines all fitted cells with the energy-sum term (calibrated event sums of the
   corrected data against MC_digi's, per beam energy, by quantiles) and an optional
   energy-prediction hook (``energy_prediction``: a callable or ``"module:function"``,
   :data:`calocoffea.nonlinearity_fit.PredictionHook`), weights ``weight_*``. A network
   (``energy_prediction=cnn_lstm``, any model shipped for the geometry, or ``MODEL.onnx``)
   takes two passes: the refinement without the term, then the network's per-event
   correction E_net / S frozen on the data corrected by it
   (:class:`calocoffea.models.prediction.FrozenNetworkCorrection`) and the refinement with
   the term from the same closed-form start (``fit_quality["prediction"]`` reports both);
5. returns ``nonlinearity_a``, ``nonlinearity_b`` and ``nonlinearity_status`` for every cell;
   lay them over the starting constants with :meth:`Constants.update`.

Cells with fewer than ``min_hits`` hits in either sample (status 1) or whose fit fails
(status 2) keep the starting (a, b), with the spread of the fitted cells as uncertainty; they
are counted in ``fit_quality``. Nothing is defaulted silently.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import awkward as ak
import numpy as np
import numpy.typing as npt

from calocoffea import nonlinearity_fit as nl
from calocoffea.conditions import PARAMETERS
from calocoffea.constants import Constants, Table, design_constants
from calocoffea.digitization import inverse_nonlinearity
from calocoffea.exceptions import (
    FitError,
    FitWarning,
    GeometryMismatchError,
    InputFileError,
    MethodOptionsError,
    ModelError,
)
from calocoffea.flags import HitFlag
from calocoffea.io import read_events, read_metadata
from calocoffea.methods import CalibrationMethod, PriorConstants
from calocoffea.streaming import ShowerBatch, ShowerLoader

if TYPE_CHECKING:
    from calocoffea.models.onnxmodel import LoadedModel

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Above this fraction of events outside the beam-profile overlap the fit warns.
MAX_OUTSIDE_OVERLAP = 0.5
#: Status codes of the ``nonlinearity_status`` table.
STATUS = {0: "ok", 1: "too_few_hits", 2: "failed_fit"}
#: Hit fields ``collect`` keeps (and reads from the reference file).
_RAW_FIELDS = ("cellid", "energy", "gain", "flags", "x", "y", "z")
#: Hit fields of the shards (``energy`` holds the amplitude y [ADC]; the shard format
#: requires ``cellid``, ``x``, ``y``, ``z`` and ``energy``).
_KEPT = ("cell", "layer", "energy", "clipped", "x", "y")


@dataclass(frozen=True)
class InverseNonlinearityOptions:
    """Options of :class:`InverseNonlinearity`."""

    #: the MC_digi reference: a raw file of the same geometry digitised with nominal (a, b)
    reference: str = ""
    #: starting constants of both samples (correctionlib JSON; the MC's own): empty = design
    constants: str = ""
    #: fewest hits in both samples for a cell's own fit
    min_hits: int = 200
    #: quantile levels per cell, uniform in [p_low, clipped fraction - 0.01]
    n_levels: int = 100
    p_low: float = 0.01
    #: width of the Gaussian prior on a around the starting a (0: none); default: the design
    #: per-cell spread of ``nonlinearity_a`` (:data:`calocoffea.conditions.PARAMETERS`)
    prior_sigma_a: float = PARAMETERS["nonlinearity_a"].spread
    #: weights of the loss terms: cell-level W2, event energy sum, energy prediction
    weight_cell: float = 1.0
    weight_energy_sum: float = 1.0
    weight_prediction: float = 1.0
    #: energy-prediction loss: a callable or "module:function" (a PredictionHook), or a
    #: network (a model name shipped for the geometry, e.g. cnn_lstm, or a path MODEL.onnx)
    #: whose correction is frozen on a first fit; None: no such term
    energy_prediction: str | Callable[..., Any] | None = None
    #: run the joint refinement after the closed-form per-cell fit
    refine: bool = True
    max_iterations: int = 100
    #: reweight data and MC to the overlap of their shower-centroid distributions
    reweight_beam_profile: bool = True
    profile_bin_mm: float = 5.0

    def __post_init__(self) -> None:
        if self.min_hits < 10:
            raise MethodOptionsError(f"min_hits must be at least 10, got {self.min_hits}")
        if self.n_levels < 5:
            raise MethodOptionsError(f"n_levels must be at least 5, got {self.n_levels}")
        if not 0.0 <= self.p_low < 0.5:
            raise MethodOptionsError(f"p_low must be in [0, 0.5), got {self.p_low}")
        numbers = ("weight_cell", "weight_energy_sum", "weight_prediction", "profile_bin_mm",
                   "prior_sigma_a")  # fmt: skip
        for name in numbers:
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise MethodOptionsError(f"option {name} must be a number >= 0, got {value!r}")


@dataclass(frozen=True)
class Sample:
    """Hits and events of one sample as flat arrays (``event`` indexes ``beam_gev``)."""

    cell: IntArray
    layer: IntArray
    amplitude: FloatArray
    clipped: npt.NDArray[np.bool_]
    x_mm: FloatArray
    y_mm: FloatArray
    event: IntArray
    beam_gev: FloatArray

    @property
    def n_events(self) -> int:
        return self.beam_gev.size


class InverseNonlinearity(PriorConstants, CalibrationMethod):
    """Per-cell (a, b) of the electronics non-linearity from data vs MC_digi spectra."""

    description: ClassVar[str] = (
        "per-cell electronics non-linearity (a, b): inverse function that makes data match "
        "MC_digi (quantile W2 per cell + event energy sum)"
    )
    url: ClassVar[str] = "https://github.com/calocoffea/calocoffea/issues/7"
    Options: ClassVar[type] = InverseNonlinearityOptions
    run_type: ClassVar[str] = "physics"
    input_stage: ClassVar[str] = "raw"
    needs_events: ClassVar[bool] = True
    options: InverseNonlinearityOptions

    # ---- constants -------------------------------------------------------------------

    # ---- collect ---------------------------------------------------------------------
    def hit_fields(
        self, events: Any, where: str
    ) -> tuple[dict[str, Any], IntArray, dict[str, Any]]:
        """(event fields, hits per event, kept hit fields) of raw events; ``where`` names
        the file in errors."""
        hits = events.hits
        missing = [n for n in _RAW_FIELDS if n not in hits.fields]
        if missing:
            raise InputFileError(
                f"{where}: the hits lack the field(s) {', '.join('hit_' + m for m in missing)} "
                "that inverse_nonlinearity needs; give it raw files from `calocoffea digitize`"
            )
        if "beam_energy" not in events.fields:
            raise InputFileError(f"{where}: no event field 'beam_energy'; give digitised files")
        counts = ak.to_numpy(ak.num(hits, axis=1)).astype(np.int64)
        flat = {n: ak.to_numpy(ak.flatten(hits[n], axis=1)) for n in _RAW_FIELDS}
        adc = np.asarray(flat["energy"], np.float64)
        bad = ~np.isfinite(adc)
        if np.any(bad):
            raise InputFileError(
                f"{where}: {np.count_nonzero(bad)} hits have a non-finite ADC value (e.g. "
                f"{adc[bad][:3].tolist()}); the file is corrupt or not a raw file: re-digitise it"
            )
        geometry = self.detector
        cell = geometry.cell_index(flat["cellid"])
        if np.any(cell < 0):
            raise GeometryMismatchError(
                f"{where}: {np.count_nonzero(cell < 0)} hits have cell ids that are not cells "
                f"of {geometry.name!r} (e.g. {flat['cellid'][cell < 0][:3].tolist()}); was it "
                f"made for another geometry? build the method for the file's geometry"
            )
        clipped = (np.asarray(flat["flags"]) & HitFlag.SATURATED) != 0
        amplitude = self.amplitude(adc, np.asarray(flat["gain"]), cell, clipped)
        fields = {n: ak.to_numpy(events[n]) for n in ("event", "run", "pdg") if n in events.fields}
        fields["beam_energy"] = np.asarray(ak.to_numpy(events["beam_energy"]), np.float64)
        kept = {
            "cellid": flat["cellid"],
            "cell": cell.astype(np.int32),
            "layer": geometry.cell_layer[cell].astype(np.int16),
            "energy": amplitude,
            "clipped": clipped.astype(np.uint8),
            "x": np.asarray(flat["x"], np.float32),
            "y": np.asarray(flat["y"], np.float32),
            "z": np.asarray(flat["z"], np.float32),
        }
        return fields, counts, kept

    def amplitude(
        self,
        adc: FloatArray,
        gain: npt.NDArray[np.integer],
        cell: IntArray,
        clipped: npt.NDArray[np.bool_],
    ) -> FloatArray:
        """High-gain-equivalent amplitude [ADC]: pedestal of the gain read subtracted, low
        gain times the gain ratio; clipped hits at their cell's range top."""
        c, s = self._dense.cells, self._dense.settings
        low = gain == 1
        amplitude = adc - np.where(low, c["pedestal_lg_adc"][cell], c["pedestal_hg_adc"][cell])
        amplitude = np.where(low, amplitude * c["gain_ratio"][cell], amplitude)
        top = (s["lg_saturation_adc"] - c["pedestal_lg_adc"][cell]) * c["gain_ratio"][cell]
        return np.where(clipped, top, amplitude)

    def collect(self, events: Any) -> tuple[dict[str, Any], IntArray, dict[str, Any]]:
        """The chunk's hits (cell, layer, amplitude, clipped, x, y) and beam energies."""
        metadata = getattr(events, "metadata", None) or {}
        return self.hit_fields(events, str(metadata.get("filename", "the input")))

    # ---- reading ---------------------------------------------------------------------
    def read_data(self, shard_paths: Sequence[str]) -> Sample:
        """The collected data from the shards, in shard order."""
        loader = ShowerLoader(
            shard_paths,
            fields=_KEPT,
            event_fields=("beam_energy",),
            batch_showers=100_000,
            buffer_showers=100_000,
        )
        batches = list(loader.epoch(0, shuffle=False))
        if not batches:
            raise FitError("inverse_nonlinearity: the data have no events")
        batch = ShowerBatch.concatenate(batches)
        return _sample(batch.events["beam_energy"], batch.counts, batch.hits)

    def read_reference(self) -> Sample:
        """The MC_digi reference file, checked and read like the data."""
        path = self.options.reference
        if not path:
            raise MethodOptionsError(
                "inverse_nonlinearity needs the MC_digi reference: --option reference=MC.root "
                "(a raw file digitised with nominal conditions, same geometry and energies)"
            )
        if not Path(path).exists():
            raise InputFileError(f"reference {path}: no such file; give the MC_digi raw file")
        metadata = read_metadata(path)
        geometry = self.detector
        if metadata.geometry_hash != geometry.hash:
            raise GeometryMismatchError(
                f"reference {path} is for geometry {metadata.geometry!r} (hash "
                f"{metadata.geometry_hash}) but the data are {geometry.name!r} (hash "
                f"{geometry.hash}); digitise the MC for {geometry.name!r}"
            )
        events = read_events(path, stage="raw")
        if len(events) == 0:
            raise InputFileError(f"reference {path} has no events")
        fields, counts, hits = self.hit_fields(events, f"reference {path}")
        return _sample(fields["beam_energy"], counts, hits)

    # ---- fit -------------------------------------------------------------------------
    def fit(self, accumulated: Any) -> Constants:
        """(a, b) per cell (steps in the module docstring)."""
        o = self.options
        data = self.read_data(list(accumulated))
        mc = self.read_reference()
        common = np.intersect1d(np.unique(data.beam_gev), np.unique(mc.beam_gev))
        if common.size == 0:
            raise FitError(
                f"inverse_nonlinearity: the data beam energies {np.unique(data.beam_gev)} and "
                f"the reference's {np.unique(mc.beam_gev)} have none in common; simulate the "
                "reference at the data's energies"
            )
        dense = self._dense
        scale = dense.settings["nonlinearity_scale_adc"]
        a0, b0 = dense.cells["nonlinearity_a"], dense.cells["nonlinearity_b"]
        target = inverse_nonlinearity(mc.amplitude, a0[mc.cell], b0[mc.cell], scale)
        hits_d, hits_m = self.hit_constants(data), self.hit_constants(mc)
        w_data, weights, lost_d, lost_m = self.mc_weights(data, mc, hits_d, hits_m, a0, b0, scale)
        n_cells = self.detector.n_cells
        if max(lost_d, lost_m) > MAX_OUTSIDE_OVERLAP:
            warnings.warn(
                f"inverse_nonlinearity: {100 * lost_d:.0f} % of the data and {100 * lost_m:.0f} "
                "% of the reference events lie outside the overlap of their beam profiles; the "
                "cells compared see different showers and the fit is biased: simulate the "
                "reference with the data's beam spot",
                FitWarning,
                stacklevel=2,
            )
        q = nl.cell_quantiles(
            data.amplitude, data.cell, data.clipped, target, mc.cell, mc.clipped, n_cells,
            target_weights=weights, data_weights=w_data, n_levels=o.n_levels, p_low=o.p_low,
        )  # fmt: skip
        n_data = np.bincount(data.cell[w_data > 0], minlength=n_cells)
        n_mc = np.bincount(mc.cell[weights > 0], minlength=n_cells)
        enough = (n_data >= o.min_hits) & (n_mc >= o.min_hits)
        q = dataclasses.replace(q, valid=q.valid & enough[:, None])
        prior = nl.Prior(
            a0,
            o.prior_sigma_a,
            np.minimum(_kish(data.cell, w_data, n_cells), _kish(mc.cell, weights, n_cells)),
        )
        cells = nl.fit_cells(q, scale, a0, b0, prior=prior if o.prior_sigma_a > 0 else None)
        status = np.where(enough, np.where(cells.converged, 0, 2), 1)
        if not np.any(status == 0):
            raise FitError(
                f"inverse_nonlinearity: no cell has {o.min_hits} hits in both samples and a "
                f"converged fit (most hits in a cell: data {int(n_data.max())}, reference "
                f"{int(n_mc.max())}); give more events or lower min_hits"
            )
        ok = status == 0
        a = np.where(ok, cells.a, a0)
        b = np.where(ok, cells.b, b0)
        sample = self.event_sample(data, mc, hits_d, hits_m, a0, b0, scale)
        loss_weights, hook = refined_weights(o), self.hook()
        prediction: dict[str, Any] = {}
        iterations = o.max_iterations if o.refine else 0
        network = self.network()
        if network is not None and o.weight_prediction > 0:
            # pass 1 without the term; the network's correction is frozen on its result
            first = nl.refine(q, sample, a, b, ok, scale, weights=loss_weights, prior=prior,
                              max_iterations=iterations)  # fmt: skip
            hook, prediction = self.frozen_network(network, data, sample, first, scale)
        refined = nl.refine(q, sample, a, b, ok, scale, weights=loss_weights, hook=hook,
                            prior=prior, max_iterations=iterations)  # fmt: skip
        start = nl.total_loss(a0, b0, q, sample, scale, loss_weights, hook, prior)[0]
        quality = {
            "cells": int(n_cells),
            **{STATUS[k]: int(np.count_nonzero(status == k)) for k in STATUS},
            "min_hits": o.min_hits,
            "hits_data": int(data.cell.size),
            "hits_reference": int(mc.cell.size),
            "events_data": data.n_events,
            "events_reference": mc.n_events,
            "beam_energies_gev": [float(e) for e in common],
            "loss_nominal": start,
            "loss_closed_form": refined.before,
            "loss_refined": refined.after,
            "refine_iterations": refined.iterations,
            "refine_message": refined.message,
            "gauss_newton_iterations": cells.iterations,
            "profile_reweighted": bool(o.reweight_beam_profile),
            "profile_data_outside_overlap": lost_d,
            "profile_reference_outside_overlap": lost_m,
            "reference": str(o.reference),
            **({"prediction": prediction} if prediction else {}),
        }
        return self.constants(refined.a, refined.b, cells, status, quality, data, mc)

    def hook(self) -> nl.PredictionHook | None:
        """The energy-prediction loss named by the option (None: no such term, or a network:
        that becomes a hook on the data inside ``fit``, :meth:`network`)."""
        value = self.options.energy_prediction
        if isinstance(value, str | Path) and is_network(str(value)):
            return None
        return resolve_hook(value)

    def network(self) -> LoadedModel | None:
        """The model the option names (a shipped name or ``.onnx``; checked for the geometry),
        a :class:`~calocoffea.models.onnxmodel.LoadedModel`; None for anything else."""
        value = self.options.energy_prediction
        if not isinstance(value, str | Path) or not is_network(str(value)):
            return None
        from calocoffea.models.prediction import load_network

        try:
            return load_network(str(value), self.detector)
        except (ModelError, GeometryMismatchError) as err:
            raise MethodOptionsError(
                f"energy_prediction={str(value)!r}: {err} (or give a hook: a callable or "
                "'module:function')"
            ) from err

    def frozen_network(
        self,
        network: LoadedModel,
        data: Sample,
        sample: nl.EventSample,
        first: nl.Refined,
        scale: float,
    ) -> tuple[nl.PredictionHook, dict[str, Any]]:
        """The hook of ``network`` frozen on the data corrected by the first pass ``first``,
        and what ``fit_quality["prediction"]`` reports of it."""
        from calocoffea.models.prediction import FrozenNetworkCorrection

        energy, _, _ = nl.hit_energy_gev(
            sample.y, first.a[sample.cell], first.b[sample.cell], sample.hits, scale
        )
        hook = FrozenNetworkCorrection.from_sample(network, data, energy, self.detector)
        used = hook.valid & (data.beam_gev > 0)
        return hook, {
            "network": hook.source,
            "frozen_on": "data corrected by the refinement without the term",
            "events": int(np.count_nonzero(used)),
            "factor_mean": float(np.mean(hook.factor[used])) if np.any(used) else None,
            "loss_first_pass": first.after,
            "first_pass_iterations": first.iterations,
        }

    def hit_constants(self, sample: Sample) -> nl.HitConstants:
        """Per-hit constants of the chain after the inverse non-linearity (GeV)."""
        c, layers = self._dense.cells, self._dense.layers
        per_layer = layers["mip_mev"] / layers["sampling_fraction"] / 1000.0
        return nl.HitConstants(
            spe_adc=c["spe_adc"][sample.cell],
            n_pixels=c["n_pixels"][sample.cell],
            gev_per_pe=c["scale"][sample.cell] * per_layer[sample.layer]
            / c["light_yield_pe"][sample.cell],
            occupancy=self._dense.settings["desaturation_occupancy"],
        )  # fmt: skip

    def mc_weights(
        self,
        data: Sample,
        mc: Sample,
        hits_d: nl.HitConstants,
        hits_m: nl.HitConstants,
        a0: FloatArray,
        b0: FloatArray,
        scale: float,
    ) -> tuple[FloatArray, FloatArray, float, float]:
        """Per-hit data and MC weights from the beam-profile reweighting (ones when off),
        and the fractions of data and of MC events outside the overlap."""
        if not self.options.reweight_beam_profile:
            return np.ones(data.cell.size), np.ones(mc.cell.size), 0.0, 0.0
        parts = []
        for s, h in ((data, hits_d), (mc, hits_m)):
            e, _, _ = nl.hit_energy_gev(s.amplitude, a0[s.cell], b0[s.cell], h, scale)
            cx, cy = nl.centroids(e, s.x_mm, s.y_mm, s.event, s.n_events)
            parts.append((s.beam_gev, cx, cy))
        w_d, w_m, lost_d, lost_m = nl.beam_profile_weights(
            parts[0], parts[1], self.options.profile_bin_mm
        )
        return w_d[data.event], w_m[mc.event], lost_d, lost_m

    def event_sample(
        self,
        data: Sample,
        mc: Sample,
        hits_d: nl.HitConstants,
        hits_m: nl.HitConstants,
        a0: FloatArray,
        b0: FloatArray,
        scale: float,
    ) -> nl.EventSample:
        """The data events with their MC_digi energy-sum targets by rank."""
        e_mc, _, _ = nl.hit_energy_gev(mc.amplitude, a0[mc.cell], b0[mc.cell], hits_m, scale)
        sums_mc = np.asarray(np.bincount(mc.event, weights=e_mc, minlength=mc.n_events), float)
        targets = nl.sorted_targets(sums_mc, mc.beam_gev, np.ones(mc.n_events), data.beam_gev)
        return nl.EventSample(data.amplitude, data.cell, data.event, hits_d, data.beam_gev,
                              targets)  # fmt: skip

    def constants(
        self,
        a: FloatArray,
        b: FloatArray,
        cells: nl.CellFit,
        status: IntArray,
        quality: dict[str, Any],
        data: Sample,
        mc: Sample,
    ) -> Constants:
        """The tables ``nonlinearity_a``, ``nonlinearity_b`` and ``nonlinearity_status``."""
        ok = status == 0
        cellids = self.detector.cellids().astype(np.int64)
        sigma_a = np.where(ok, cells.sigma_a, float(np.std(a[ok])))
        sigma_b = np.where(ok, cells.sigma_b, float(np.std(b[ok])))
        design = design_constants(self.geometry)
        return Constants(
            {
                "nonlinearity_a": Table("cell", cellids, a, sigma_a, "1"),
                "nonlinearity_b": Table("cell", cellids, b, sigma_b, "1"),
                "nonlinearity_status": Table(
                    "cell", cellids, status.astype(np.float64), np.zeros(status.size), "1"
                ),
            },
            dataclasses.replace(
                design.provenance,
                method="inverse_nonlinearity",
                sample=(
                    f"{data.n_events} data events vs {mc.n_events} MC_digi events "
                    f"({self.options.reference})"
                ),
                fit_quality=quality,
            ),
        )


def refined_weights(options: InverseNonlinearityOptions) -> nl.Weights:
    return nl.Weights(options.weight_cell, options.weight_energy_sum, options.weight_prediction)


def is_network(value: str) -> bool:
    """Whether an ``energy_prediction`` string names a network: a model file ``.onnx`` or a
    bare name (no ``:``, no path separator), looked up among the shipped models."""
    return value.endswith(".onnx") or (bool(value) and not any(c in value for c in ":/\\"))


def resolve_hook(value: str | Callable[..., Any] | None) -> nl.PredictionHook | None:
    """A callable from the option ``energy_prediction``: itself, or ``"module:function"``
    (a network name is resolved by :meth:`InverseNonlinearity.network`, not here)."""
    if value is None or value == "":
        return None
    if callable(value):
        return value
    module, sep, name = str(value).partition(":")
    if not sep:
        raise MethodOptionsError(
            f"energy_prediction={value!r} must be a callable, 'module:function', a network "
            "shipped for the geometry (e.g. cnn_lstm) or a model file MODEL.onnx"
        )
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise MethodOptionsError(f"energy_prediction={value!r} cannot be imported: {err}") from err
    if not callable(found):
        raise MethodOptionsError(f"energy_prediction={value!r} is not callable")
    return cast(nl.PredictionHook, found)


def _kish(cell: IntArray, weights: FloatArray, n_cells: int) -> FloatArray:
    """Effective number of hits per cell, (sum w)^2 / sum w^2."""
    total = np.bincount(cell, weights=weights, minlength=n_cells)
    squares = np.bincount(cell, weights=weights * weights, minlength=n_cells)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(squares > 0, total * total / squares, 0.0)


def _sample(beam: Any, counts: Any, hits: dict[str, Any]) -> Sample:
    counts = np.asarray(counts, np.int64)
    return Sample(
        cell=np.asarray(hits["cell"], np.int64),
        layer=np.asarray(hits["layer"], np.int64),
        amplitude=np.asarray(hits["energy"], np.float64),
        clipped=np.asarray(hits["clipped"]) != 0,
        x_mm=np.asarray(hits["x"], np.float64),
        y_mm=np.asarray(hits["y"], np.float64),
        event=np.repeat(np.arange(counts.size), counts),
        beam_gev=np.asarray(beam, np.float64),
    )


__all__ = ["STATUS", "InverseNonlinearity", "InverseNonlinearityOptions"]
