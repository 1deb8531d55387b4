"""The energy-prediction term of the ``inverse_nonlinearity`` fit from a trained network
(seed 000: the network's energy of the corrected data should match the beam energy).

What to use when:

- ``--option energy_prediction=cnn_lstm`` (or any model shipped for the geometry, or a
  ``MODEL.onnx`` path) -- the plugin does everything below itself: a first refinement without
  the term, :meth:`FrozenNetworkCorrection.from_sample` on the data corrected by it, and the
  refinement with the term (:mod:`calocoffea.plugins.inverse_nonlinearity`).
- :class:`FrozenNetworkCorrection` -- the hook (a
  :data:`~calocoffea.nonlinearity_fit.PredictionHook`) for calling
  :func:`~calocoffea.nonlinearity_fit.refine` yourself; build it with
  :meth:`~FrozenNetworkCorrection.from_sample` (the plugin's data sample and its hit energies
  [GeV] at the constants to linearise around) or :meth:`~FrozenNetworkCorrection.from_hits`.
- :func:`load_network` -- a model by shipped name or path, checked against the geometry.

The loss ("frozen correction"). The CNN+LSTM (:mod:`calocoffea.models.cnn_lstm`) predicts
E_net = S exp(g): S the calibrated cell sum, g a per-event correction computed from the cell
images. Its factor r_i = E_net,i / S_i is evaluated once, on the data corrected by a first
fit, and held fixed; the hook's loss is

    L = mean_i ((r_i S_i - E_i) / E_i)^2,   S_i = sum of the hit energies of event i,

E_i the beam energy, and its gradient, exact for this L, is
dL/dE_h = 2 (r_i S_i - E_i) r_i / E_i^2 / N for every hit h of event i (N events count).

Why this form:

- the fit needs d loss / d (a, b) of ~13 000 cells at every L-BFGS-B step; onnxruntime gives no
  gradients, inference must not need torch, and finite differences through the network would
  cost one evaluation per parameter. With g held fixed the network's loss becomes a function
  of the event sums alone, with an analytic gradient;
- holding g fixed linearises the network around the first fit: dE_net/dE_h = exp(g)
  (1 + S dg/dE_h), and the frozen loss drops the second term, the change of the learnt
  correction with the hits. It is small where the solution lies: the first fit already
  corrects the hits to within a few %, and g moves with log S and the shower shape far less
  than S itself; refreeze (another pass) if the constants move much;
- the gradient is that of the loss the hook returns, not an approximation of another
  function's: value and gradient stay consistent, which L-BFGS-B's line search needs. At the
  freezing point the value equals the network's own relative loss on the data;
- events without a usable factor (no hits, a non-finite prediction) and events without a
  positive beam energy do not count (they are not in N).

For other regressors (``gbr``, ``software_compensation``) the same hook holds their ratio
E_net / S fixed; that is the same linearisation, but their output is not S times a factor by
construction, so the neglected term may be larger.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from calocoffea.exceptions import GeometryMismatchError, ModelError, did_you_mean
from calocoffea.geometry import Geometry, decode_cellid, get_geometry
from calocoffea.models.inputs import FlatHits, build_inputs
from calocoffea.models.onnxmodel import LoadedModel, load_model
from calocoffea.models.reconstruction import SHIPPED, shipped_model

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Events per onnxruntime call when freezing (cell images: 52 kB per event on cepc_ahcal).
BATCH_EVENTS = 1024


class HitSample(Protocol):
    """What :meth:`FrozenNetworkCorrection.from_sample` reads of a sample: per hit the dense
    cell index and position [mm], the event index into ``beam_gev`` (the plugin's
    :class:`~calocoffea.plugins.inverse_nonlinearity.Sample`)."""

    @property
    def cell(self) -> IntArray: ...
    @property
    def x_mm(self) -> FloatArray: ...
    @property
    def y_mm(self) -> FloatArray: ...
    @property
    def event(self) -> IntArray: ...
    @property
    def beam_gev(self) -> FloatArray: ...


def shipped_networks(geometry: str) -> list[str]:
    """Names of the models shipped for ``geometry`` (``models/<geometry>_<name>.onnx``)."""
    prefix = f"{geometry}_"
    return sorted(p.stem.removeprefix(prefix) for p in SHIPPED.glob(f"{prefix}*.onnx"))


def load_network(model: str | Path | LoadedModel, geometry: str | Geometry) -> LoadedModel:
    """A model by shipped name (``cnn_lstm``), ``.onnx`` path, or loaded, checked for
    ``geometry`` (:class:`GeometryMismatchError` when its card is for another one)."""
    geo = get_geometry(geometry)
    if isinstance(model, LoadedModel):
        if model.card.geometry_hash != geo.hash:
            raise GeometryMismatchError(
                f"model {model.card.name!r} ({model.source}) was trained for geometry "
                f"{model.card.geometry!r} (hash {model.card.geometry_hash}) but the sample is "
                f"{geo.name!r} (hash {geo.hash}); use a model trained for {geo.name!r}"
            )
        return model
    text = str(model)
    if text.endswith(".onnx"):
        return load_model(text, geometry=geo)
    names = shipped_networks(geo.name)
    if text not in names:
        raise ModelError(
            f"no network {text!r} is shipped for geometry {geo.name!r}"
            f"{did_you_mean(text, names)}; shipped: {', '.join(names) or 'none'}, or give a "
            "model file MODEL.onnx"
        )
    return load_model(shipped_model(text, geo.name), geometry=geo)


class FrozenNetworkCorrection:
    """Energy-prediction hook L = mean_i ((r_i S_i - E_i) / E_i)^2 with the network's factor
    r_i = E_net,i / S_i frozen (module docstring); ``factor[i]`` belongs to event i of the fit
    (the index the fit passes as ``hit_event``), NaN where the event does not count."""

    def __init__(self, factor: npt.ArrayLike, n_hits: int, *, source: str = "") -> None:
        self.factor = np.asarray(factor, dtype=np.float64)
        if self.factor.ndim != 1:
            raise ModelError(f"factor must be one value per event, got shape {self.factor.shape}")
        self.n_hits = int(n_hits)
        self.source = source

    def __repr__(self) -> str:
        used = int(np.count_nonzero(self.valid))
        return (f"FrozenNetworkCorrection({self.source or 'factors'}, {used} of {self.n_events}"
                f" events, {self.n_hits} hits)")  # fmt: skip

    @property
    def n_events(self) -> int:
        return int(self.factor.size)

    @property
    def valid(self) -> npt.NDArray[np.bool_]:
        return np.isfinite(self.factor)

    # ---- construction ----------------------------------------------------------------
    @classmethod
    def from_hits(
        cls,
        model: str | Path | LoadedModel,
        hits: FlatHits,
        geometry: str | Geometry,
        *,
        batch_events: int = BATCH_EVENTS,
    ) -> FrozenNetworkCorrection:
        """r of every event of ``hits`` (event k of ``hits`` is event k of the fit): the
        model's energy over the sum of the hit energies [GeV]."""
        network = load_network(model, geometry)
        geo = get_geometry(geometry)
        if batch_events < 1:
            raise ModelError(f"batch_events must be >= 1, got {batch_events}")
        shapes = {item.name: item.shape for item in network.card.inputs}
        n = len(hits)
        predicted = np.zeros(n)
        for start in range(0, n, batch_events):
            stop = min(start + batch_events, n)
            inputs = build_inputs(shapes, hits.events(start, stop), geo)
            predicted[start:stop] = network.predict(inputs, batch_size=stop - start)
        event = np.repeat(np.arange(n), hits.counts)
        sums = np.bincount(event, weights=hits.energy, minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            factor = np.where(sums > 0, predicted / sums, np.nan)
        factor = np.where(np.isfinite(factor), factor, np.nan)
        return cls(factor, int(hits.counts.sum()), source=f"{network.card.name} ({network.source})")

    @classmethod
    def from_sample(
        cls,
        model: str | Path | LoadedModel,
        sample: HitSample,
        hit_energy_gev: npt.ArrayLike,
        geometry: str | Geometry,
        *,
        batch_events: int = BATCH_EVENTS,
    ) -> FrozenNetworkCorrection:
        """r of every event of ``sample`` (events indexed like ``sample.beam_gev``, as the
        fit numbers them) from its hits with energies ``hit_energy_gev`` [GeV] (one per hit:
        the data corrected with the constants to linearise around)."""
        geo = get_geometry(geometry)
        network = load_network(model, geo)
        energy = np.asarray(hit_energy_gev, dtype=np.float64)
        cell = np.asarray(sample.cell, dtype=np.int64)
        event = np.asarray(sample.event, dtype=np.int64)
        n_events = int(np.asarray(sample.beam_gev).size)
        if energy.shape != cell.shape or event.shape != cell.shape:
            raise ModelError(
                f"{energy.size} hit energies for a sample of {cell.size} hits ({event.size} "
                "event indices); give one energy per hit of the sample, e.g. "
                "nonlinearity_fit.hit_energy_gev(sample.amplitude, a[sample.cell], ...)[0]"
            )
        if cell.size and (cell.min() < 0 or cell.max() >= geo.n_cells):
            raise GeometryMismatchError(
                f"sample cell indices {cell.min()}..{cell.max()} are not dense cells of "
                f"{geo.name!r} (0..{geo.n_cells - 1}); build the sample for {geo.name!r}"
            )
        if event.size and (event.min() < 0 or event.max() >= n_events):
            raise ModelError(
                f"sample event indices {event.min()}..{event.max()} do not index its "
                f"{n_events} beam energies; the sample is inconsistent"
            )
        order = np.argsort(event, kind="stable")
        _, layer, i, j = decode_cellid(geo.cellids()[cell[order]])
        hits = FlatHits(
            counts=np.bincount(event, minlength=n_events).astype(np.int64),
            layer=layer,
            i=i,
            j=j,
            x_mm=np.asarray(sample.x_mm, dtype=np.float64)[order],
            y_mm=np.asarray(sample.y_mm, dtype=np.float64)[order],
            energy=energy[order],
        )
        return cls.from_hits(network, hits, geo, batch_events=batch_events)

    # ---- the hook ----------------------------------------------------------------------
    def __call__(
        self, hit_energy_gev: FloatArray, hit_event: IntArray, beam_energy_gev: FloatArray
    ) -> tuple[float, FloatArray]:
        """(L, dL/dE_h for every hit) of the hit energies [GeV]."""
        energy = np.asarray(hit_energy_gev, dtype=np.float64)
        event = np.asarray(hit_event, dtype=np.int64)
        beam = np.asarray(beam_energy_gev, dtype=np.float64)
        self._check(energy, event, beam)
        sums = np.bincount(event, weights=energy, minlength=self.n_events)
        used = self.valid & np.isfinite(beam) & (beam > 0)
        n_used = max(int(np.count_nonzero(used)), 1)
        r = np.where(used, self.factor, 0.0)
        e = np.where(used, beam, 1.0)
        residual = np.where(used, (r * sums - e) / e, 0.0)
        loss = float(np.sum(residual * residual)) / n_used
        per_event = 2.0 * residual * r / e / n_used
        return loss, per_event[event]

    def _check(self, energy: FloatArray, event: IntArray, beam: FloatArray) -> None:
        how = (
            "build the hook from the sample the fit runs on "
            "(FrozenNetworkCorrection.from_sample(model, sample, hit_energy_gev, geometry))"
        )
        if energy.shape != event.shape:
            raise ModelError(
                f"{energy.size} hit energies but {event.size} hit event indices; the fit must "
                "pass one event index per hit"
            )
        if beam.size != self.n_events:
            raise ModelError(
                f"the fit has {beam.size} events but the network factors were frozen for "
                f"{self.n_events}; {how}"
            )
        if energy.size != self.n_hits:
            raise ModelError(
                f"the fit has {energy.size} hits but the network factors were frozen on "
                f"{self.n_hits}; {how}"
            )
        if event.size and (event.min() < 0 or event.max() >= self.n_events):
            raise ModelError(
                f"hit event indices {event.min()}..{event.max()} lie outside the "
                f"{self.n_events} frozen events; {how}"
            )


__all__ = [
    "BATCH_EVENTS",
    "FrozenNetworkCorrection",
    "HitSample",
    "load_network",
    "shipped_networks",
]
