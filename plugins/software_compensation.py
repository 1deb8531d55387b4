"""``software_compensation``: per-hit energy-density weights of the ILD/Pandora form, fitted
with iminuit on pion samples and run as a small ONNX graph.

What to use when:

- :class:`SoftwareCompensation` (``software_compensation``) -- hadron energies from a trained
  model file (option ``model=PATH``, or the model shipped for the geometry); it runs through
  the same onnxruntime path as every learned model (:class:`~calocoffea.models.reconstruction.
  OnnxReconstruction`), its input is ``density_sums``.
- :meth:`SoftwareCompensation.train` (``calocoffea train --model software_compensation``) --
  fit the 9 weights on calibrated pion files; options: :class:`TrainingOptions`.
- :func:`compensated_energy` -- the formula in numpy (float64), the reference the ONNX graph
  is checked against; :func:`pandora_graph` -- the formula as an ONNX graph.

The form (PandoraPFA LCContent ``LCSoftwareCompensation``): with E_b the energy of the event
in hit-density bin b (:data:`~calocoffea.models.features.DENSITY_EDGES_MIP`, density = hit
energy in MIP of its layer), E_est = Σ_b E_b the uncompensated sum [GeV] and ρ_b the density
representing bin b [MIP]::

    p1 = a0 + a1 E_est + a2 E_est²,   p2 = b0 + b1 E_est + b2 E_est²,
    p3 = c0 / (c1 + exp(c2 E_est)),   w(ρ) = p1 exp(p2 ρ) + p3,   E_SC = Σ_b w(ρ_b) E_b.

ρ_b is the bin centre, as Pandora's ``FindDensity`` does; the open last bin [100, ∞) MIP is
represented by ``final_density_mip`` = 110, the ILD/CLIC ``FinalEnergyDensityBin`` for the same
edges [read: DDMarlinPandora steering]. Units: a0, c0, c1 none; a1, c2 1/GeV; a2 1/GeV²;
b0 1/MIP; b1 1/(MIP GeV); b2 1/(MIP GeV²).

The fit minimises Σ (E_SC - E_beam)² / E_beam over the training events (option ``loss``).
Dividing by E_beam makes each term a χ² up to a constant: the variance of a hadron energy is
dominated by the stochastic term, σ² ≈ a² E, so every event counts with its statistical
weight and the high energies (residuals larger by √E) do not dominate; PandoraAnalysis fits
the same χ² with a² = 0.5. Before the fit, events whose uncompensated response E_est/E_beam
lies more than ``core_window`` robust widths (1.4826 MAD) from the median at their beam
energy are left out: these are showers leaking out of the back (late first interaction),
whose non-Gaussian tail otherwise dominates the squared residuals and pulls the weights into
a leakage correction that widens the Gaussian core (measured on ``cepc_ahcal``, 10-80 GeV:
the core σ/E at 10 GeV went from 13.7 % for the sum to 17 % with SC fitted on all events).

Train over a wider beam-energy range than the one you reconstruct, preferably a continuous
spectrum: the weights depend on E_est and minimise a squared error over the training
spectrum, so near its ends the estimate is pulled towards the middle (measured: trained on
10-80 GeV, the response at 80 GeV is 0.97 and its peak artificially narrow), and on a few
discrete energies the fit can gain by pulling events towards the nearest one.
``reproduce/software_compensation.py`` trains on a flat 5-100 GeV spectrum and tests at
10-80 GeV.

Two guards on top of Pandora's form, because the fit constrains the weights only where the
training events put energy: p1, p2, p3 are evaluated at E_est clamped to the range of the
fitted events (``e_est_range_gev`` in the card; a punch-through pion with E_est = 1 GeV
otherwise gets the extrapolated polynomials), and p2 is at most 0 (weights never grow with
density). Measured without them on 1800 training pions: p2 = +0.25/MIP at E_est = 3.5 GeV,
where no training event has dense hits, and one 15 GeV test pion reconstructed at 87 TeV.
The fit runs Pandora's form first and then with p2 <= 0 from that minimum (imposed from the
start, Migrad can stall where p2 > 0 for every event).

Minuit works in scaled parameters (E_est over the median training sum, ρ over 10 MIP) with
an analytic gradient; the card stores the parameters in the units above, their errors (Hesse
from Migrad, scaled by sqrt(fval/ndf) since the per-event variance a² is not known), fval,
validity, the validation check and the test metrics. The graph computes in float64 between a
float32 input and a float32 output; training checks it against :func:`compensated_energy` on
the test events (``parity_max_relative_difference`` in the card, at most
:data:`PARITY_TOLERANCE`).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from calocoffea.exceptions import FitWarning, MethodOptionsError, ModelError, did_you_mean
from calocoffea.geometry import Geometry
from calocoffea.methods import make_options
from calocoffea.models.features import DENSITY_EDGES_MIP
from calocoffea.models.onnxmodel import current_versions
from calocoffea.models.reconstruction import OnnxReconstruction
from calocoffea.models.training import (
    check_training_files,
    features_of,
    model_input,
    prepare_shards,
    scratch_directory,
    split_loader,
    test_metrics,
    write_model,
)

FloatArray = npt.NDArray[np.float64]

#: The 9 parameters of the Pandora form, in its order, and their units.
PARAMETER_NAMES: tuple[str, ...] = ("a0", "a1", "a2", "b0", "b1", "b2", "c0", "c1", "c2")
PARAMETER_UNITS: tuple[str, ...] = (
    "1", "1/GeV", "1/GeV^2", "1/MIP", "1/(MIP GeV)", "1/(MIP GeV^2)", "1", "1", "1/GeV",
)  # fmt: skip
#: Starting values of PandoraAnalysis ``PandoraPFA_SoftwareCompensation`` [read] (there in
#: GeV and GeV/dm³; a start only: the fit moves them several widths).
PANDORA_START: tuple[float, ...] = (1.0, -0.03, 0.0003, -0.02, -0.0004, -2e-6, 0.2, 0.3, -0.1)
#: Loss forms of the fit: the χ² of the module docstring, or the squared relative residual.
LOSSES: tuple[str, ...] = ("chi2", "relative")
#: Density scale [MIP] of Minuit's internal parameters (conditioning only).
DENSITY_SCALE_MIP = 10.0
#: Largest relative difference allowed between the ONNX graph and :func:`compensated_energy`.
PARITY_TOLERANCE = 1e-5
#: Beam energies with at most this many distinct values are taken as beam points by the core
#: window; more (a continuous spectrum) are grouped in :data:`WINDOW_BINS` quantile bins.
MAX_BEAM_POINTS = 64
WINDOW_BINS = 20
#: Fewest events of a beam point (or bin) for the core window to cut there.
MIN_WINDOW_EVENTS = 20
#: 1.4826 MAD estimates sigma for a Gaussian.
MAD_TO_SIGMA = 1.4826
#: Opset of the exported graph.
OPSET = 17


@dataclass(frozen=True)
class TrainingOptions:
    """Options of :meth:`SoftwareCompensation.train` (``--option KEY=VALUE``)."""

    #: 9 starting values a0,...,c2 separated by commas; empty: :data:`PANDORA_START`
    start: str = ""
    #: parameters held at their starting values, names separated by commas (e.g. ``a2,b2``)
    fix: str = ""
    #: ``chi2``: Σ (E_SC - E)²/E [GeV]; ``relative``: Σ (E_SC/E - 1)² (low energies count more)
    loss: str = "chi2"
    #: leave out training events whose uncompensated response lies more than this many robust
    #: widths from the median at their beam energy (leakage tails); 0: fit every event
    core_window: float = 3.0
    #: Minuit strategy (0 fast, 1 iminuit's default, 2 careful); 2: on 40 000 cepc_ahcal pions
    #: it reached a lower loss than 1 and nearly the same weights for two split seeds (the
    #: loss has several minima), in under 15 s
    strategy: int = 2
    #: most loss evaluations Migrad may use
    max_calls: int = 100_000
    #: density [MIP] that represents the open last bin (>= 100 MIP)
    final_density_mip: float = 110.0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise MethodOptionsError(
                f"unknown loss {self.loss!r}{did_you_mean(self.loss, LOSSES)}; "
                f"use one of {', '.join(LOSSES)}"
            )
        if self.strategy not in (0, 1, 2):
            raise MethodOptionsError(f"strategy must be 0, 1 or 2, got {self.strategy}")
        if not self.core_window >= 0:
            raise MethodOptionsError(f"core_window must be >= 0, got {self.core_window}")
        if self.max_calls < 100:
            raise MethodOptionsError(f"max_calls must be >= 100, got {self.max_calls}")
        if not self.final_density_mip >= DENSITY_EDGES_MIP[-1]:
            raise MethodOptionsError(
                f"final_density_mip {self.final_density_mip} must lie in the open last bin, "
                f">= {DENSITY_EDGES_MIP[-1]} MIP"
            )
        self.start_values()
        self.fixed_names()

    def start_values(self) -> tuple[float, ...]:
        """The starting values, :data:`PANDORA_START` unless ``start`` is given."""
        if not self.start.strip():
            return PANDORA_START
        try:
            values = tuple(float(v) for v in self.start.split(","))
        except ValueError as err:
            raise MethodOptionsError(
                f"start {self.start!r} must be 9 numbers separated by commas ({err})"
            ) from err
        if len(values) != len(PARAMETER_NAMES) or not all(map(math.isfinite, values)):
            raise MethodOptionsError(
                f"start {self.start!r} must be 9 finite numbers, for {', '.join(PARAMETER_NAMES)}"
            )
        return values

    def fixed_names(self) -> tuple[str, ...]:
        """The names in ``fix``; an unknown one is a :class:`MethodOptionsError`."""
        names = tuple(n.strip() for n in self.fix.split(",") if n.strip())
        for name in names:
            if name not in PARAMETER_NAMES:
                raise MethodOptionsError(
                    f"fix: unknown parameter {name!r}{did_you_mean(name, PARAMETER_NAMES)}; "
                    f"the parameters are {', '.join(PARAMETER_NAMES)}"
                )
        if len(names) == len(PARAMETER_NAMES):
            raise MethodOptionsError("fix names every parameter; leave at least one free")
        return names


# --- the formula ---------------------------------------------------------------------------


def representative_densities(final_density_mip: float = 110.0) -> FloatArray:
    """ρ_b [MIP] of every density bin: the bin centres, ``final_density_mip`` for the last."""
    edges = np.asarray(DENSITY_EDGES_MIP, dtype=np.float64)
    return np.append(0.5 * (edges[:-1] + edges[1:]), final_density_mip)


def compensated_energy(
    parameters: npt.ArrayLike,
    density_sums: npt.ArrayLike,
    densities_mip: npt.ArrayLike,
    e_est_range_gev: tuple[float, float] = (0.0, math.inf),
) -> FloatArray:
    """E_SC [GeV] per event of the Pandora form with the two guards (module docstring):
    p1, p2, p3 at E_est clamped to ``e_est_range_gev``, p2 at most 0; float64."""
    a0, a1, a2, b0, b1, b2, c0, c1, c2 = np.asarray(parameters, dtype=np.float64)
    x = np.asarray(density_sums, dtype=np.float64)
    rho = np.asarray(densities_mip, dtype=np.float64)
    s = np.clip(x.sum(axis=1), *e_est_range_gev)
    p1 = a0 + a1 * s + a2 * s * s
    p2 = np.minimum(b0 + b1 * s + b2 * s * s, 0.0)
    p3 = c0 / (c1 + np.exp(c2 * s))
    weights = p1[:, None] * np.exp(p2[:, None] * rho[None, :]) + p3[:, None]
    return np.asarray((weights * x).sum(axis=1), dtype=np.float64)


def _scalar(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=np.float64), name)


def pandora_graph(
    parameters: npt.ArrayLike,
    densities_mip: npt.ArrayLike,
    e_est_range_gev: tuple[float, float] = (0.0, math.inf),
) -> onnx.ModelProto:
    """:func:`compensated_energy` as an ONNX graph: float32 ``density_sums`` [batch, bins] in,
    float32 ``energy`` [batch, 1] out, float64 inside; the parameters, densities and the
    E_est range are initializers."""
    values = np.asarray(parameters, dtype=np.float64)
    rho = np.asarray(densities_mip, dtype=np.float64).reshape(1, -1)
    n_bins = rho.shape[1]
    init = [_scalar(n, float(v)) for n, v in zip(PARAMETER_NAMES, values, strict=True)]
    init += [
        numpy_helper.from_array(rho, "density_mip"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "bin_axis"),
        _scalar("e_est_low", float(e_est_range_gev[0])),
        _scalar("e_est_high", float(e_est_range_gev[1])),
        _scalar("zero", 0.0),
    ]
    node = helper.make_node
    nodes = [
        node("Cast", ["density_sums"], ["x"], to=TensorProto.DOUBLE),
        node("ReduceSum", ["x", "bin_axis"], ["e_sum"], keepdims=1),
        node("Max", ["e_sum", "e_est_low"], ["e_above"]),
        node("Min", ["e_above", "e_est_high"], ["e_est"]),
        node("Mul", ["e_est", "e_est"], ["e_est2"]),
    ]
    for out, (k0, k1, k2) in (("p1", ("a0", "a1", "a2")), ("p2_poly", ("b0", "b1", "b2"))):
        nodes += [
            node("Mul", ["e_est", k1], [f"{out}_lin"]),
            node("Mul", ["e_est2", k2], [f"{out}_quad"]),
            node("Add", [k0, f"{out}_lin"], [f"{out}_sum"]),
            node("Add", [f"{out}_sum", f"{out}_quad"], [out]),
        ]
    nodes += [
        node("Min", ["p2_poly", "zero"], ["p2"]),
        node("Mul", ["e_est", "c2"], ["c2_e"]),
        node("Exp", ["c2_e"], ["exp_c2_e"]),
        node("Add", ["c1", "exp_c2_e"], ["p3_denominator"]),
        node("Div", ["c0", "p3_denominator"], ["p3"]),
        node("Mul", ["p2", "density_mip"], ["p2_rho"]),
        node("Exp", ["p2_rho"], ["exp_p2_rho"]),
        node("Mul", ["p1", "exp_p2_rho"], ["p1_exp"]),
        node("Add", ["p1_exp", "p3"], ["weight"]),
        node("Mul", ["weight", "x"], ["weighted"]),
        node("ReduceSum", ["weighted", "bin_axis"], ["energy_double"], keepdims=1),
        node("Cast", ["energy_double"], ["energy"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "software_compensation",
        [helper.make_tensor_value_info("density_sums", TensorProto.FLOAT, ["batch", n_bins])],
        [helper.make_tensor_value_info("energy", TensorProto.FLOAT, ["batch", 1])],
        initializer=init,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="calocoffea"
    )
    onnx.checker.check_model(model)
    return model


def onnx_energy(model: onnx.ModelProto, density_sums: npt.ArrayLike) -> FloatArray:
    """The graph's output for ``density_sums`` (cast to float32) with onnxruntime, 1 thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    x = np.ascontiguousarray(np.asarray(density_sums, dtype=np.float32))
    return np.asarray(session.run(["energy"], {"density_sums": x})[0][:, 0], dtype=np.float64)


# --- the fit -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoreWindow:
    """Per beam point (or beam-energy bin), the median and robust width of the response
    E_est/E_beam; :meth:`keep` selects the events within ``window`` widths of the median."""

    edges: tuple[float, ...]
    median: tuple[float, ...]
    width: tuple[float, ...]
    window: float

    @classmethod
    def of(cls, sums: FloatArray, beam: FloatArray, window: float) -> CoreWindow:
        points = np.unique(beam)
        if points.size <= MAX_BEAM_POINTS:
            inner = 0.5 * (points[1:] + points[:-1])
        else:
            inner = np.unique(np.quantile(beam, np.linspace(0, 1, WINDOW_BINS + 1))[1:-1])
        edges = np.concatenate(([-np.inf], inner, [np.inf]))
        which = np.searchsorted(edges, beam, side="right") - 1
        ratio = sums / beam
        median, width = [], []
        for b in range(edges.size - 1):
            r = ratio[which == b]
            centre = float(np.median(r)) if r.size else 1.0
            spread = MAD_TO_SIGMA * float(np.median(np.abs(r - centre))) if r.size else 0.0
            small = r.size < MIN_WINDOW_EVENTS or spread <= 0
            median.append(centre)
            width.append(math.inf if small else spread)
        return cls(tuple(edges.tolist()), tuple(median), tuple(width), float(window))

    def keep(self, sums: FloatArray, beam: FloatArray) -> npt.NDArray[np.bool_]:
        if self.window <= 0:
            return np.ones(sums.size, dtype=bool)
        which = np.searchsorted(np.asarray(self.edges), beam, side="right") - 1
        median, width = np.asarray(self.median)[which], np.asarray(self.width)[which]
        return np.asarray(np.abs(sums / beam - median) <= self.window * width)


class Loss:
    """The fit's loss of the scaled parameters q (``errordef`` 1) and its analytic gradient.

    Scaled: E_est -> x = E_est / ``energy_scale``, ρ -> ρ / :data:`DENSITY_SCALE_MIP`;
    :meth:`to_pandora` gives the parameters of the form (module docstring)."""

    errordef: ClassVar[float] = 1.0

    def __init__(
        self,
        density_sums: FloatArray,
        beam: FloatArray,
        densities_mip: FloatArray,
        *,
        loss: str,
        energy_scale: float,
    ) -> None:
        self.x = np.asarray(density_sums, dtype=np.float64)
        self.beam = np.asarray(beam, dtype=np.float64)
        self.rho = np.asarray(densities_mip, dtype=np.float64)
        self.sums = self.x.sum(axis=1)
        self.scaled = self.sums / energy_scale
        self.energy_scale = energy_scale
        #: apply the guard p2 <= 0 (False: Pandora's form as it is, the first fit stage)
        self.guard = True
        #: per-event factor of the squared residual: 1/E (chi2) or 1/E² (relative)
        self.inverse_variance = 1.0 / self.beam if loss == "chi2" else 1.0 / self.beam**2

    @property
    def scale(self) -> FloatArray:
        """Pandora parameter = scaled parameter x this, element by element."""
        e, r = self.energy_scale, DENSITY_SCALE_MIP
        return np.array([1, 1 / e, 1 / e**2, 1 / r, 1 / (r * e), 1 / (r * e**2), 1, 1, 1 / e])

    def to_pandora(self, q: npt.ArrayLike) -> FloatArray:
        return np.asarray(q, dtype=np.float64) * self.scale

    def from_pandora(self, p: npt.ArrayLike) -> FloatArray:
        return np.asarray(p, dtype=np.float64) / self.scale

    def _terms(self, q: npt.ArrayLike) -> tuple[FloatArray, ...]:
        q0, q1, q2, q3, q4, q5, q6, q7, q8 = np.asarray(q, dtype=np.float64)
        x = self.scaled
        p1 = q0 + q1 * x + q2 * x * x
        p2_poly = (q3 + q4 * x + q5 * x * x) / DENSITY_SCALE_MIP
        p2 = np.minimum(p2_poly, 0.0) if self.guard else p2_poly
        with np.errstate(over="ignore", invalid="ignore"):
            exp_c2 = np.exp(q8 * x)
            exp_rho = np.exp(p2[:, None] * self.rho[None, :])
            denominator = q7 + exp_c2
            u = (exp_rho * self.x).sum(axis=1)
            v = (exp_rho * self.x * self.rho[None, :]).sum(axis=1)
            v = v * (p2_poly < 0) if self.guard else v
            energy = p1 * u + q6 / denominator * self.sums
        return energy, p1, u, v, exp_c2, denominator

    def __call__(self, q: npt.ArrayLike) -> float:
        energy = self._terms(q)[0]
        with np.errstate(over="ignore", invalid="ignore"):
            value = float(np.sum((energy - self.beam) ** 2 * self.inverse_variance))
        return value if math.isfinite(value) else 1e300

    def grad(self, q: npt.ArrayLike) -> FloatArray:
        energy, p1, u, v, exp_c2, denominator = self._terms(q)
        c0 = float(np.asarray(q)[6])
        x, s = self.scaled, self.sums
        with np.errstate(over="ignore", invalid="ignore"):
            r = 2.0 * (energy - self.beam) * self.inverse_variance
            d_p2 = p1 * v / DENSITY_SCALE_MIP
            columns = (
                u, u * x, u * x * x, d_p2, d_p2 * x, d_p2 * x * x,
                s / denominator, -s * c0 / denominator**2, -s * c0 * x * exp_c2 / denominator**2,
            )  # fmt: skip
            g = np.array([np.sum(r * c) for c in columns])
        return np.where(np.isfinite(g), g, 0.0)


@dataclass(frozen=True)
class WeightFit:
    """The fitted parameters (Pandora units), their errors and the fit's quality."""

    parameters: tuple[float, ...]
    errors: tuple[float, ...]
    fval: float
    valid: bool
    edm: float
    calls: int
    events: int
    left_out: int
    energy_scale_gev: float
    #: E_est range [GeV] of the fitted events: p1, p2, p3 are evaluated inside it
    e_est_range_gev: tuple[float, float]
    window: CoreWindow

    def card_entry(self) -> dict[str, Any]:
        return {
            "parameters": dict(zip(PARAMETER_NAMES, self.parameters, strict=True)),
            "errors": dict(zip(PARAMETER_NAMES, self.errors, strict=True)),
            "units": dict(zip(PARAMETER_NAMES, PARAMETER_UNITS, strict=True)),
            "fval": self.fval,
            "valid": self.valid,
            "edm": self.edm,
            "calls": self.calls,
            "events_fitted": self.events,
            "events_left_out": self.left_out,
            "energy_scale_gev": self.energy_scale_gev,
            "e_est_range_gev": list(self.e_est_range_gev),
        }


def fit_weights(
    density_sums: FloatArray,
    beam: FloatArray,
    densities_mip: FloatArray,
    options: TrainingOptions,
) -> WeightFit:
    """Migrad fit of the 9 parameters on the events within the core window (module
    docstring); warns with :class:`FitWarning` when the minimum is not valid."""
    from iminuit import Minuit

    sums = density_sums.sum(axis=1)
    if np.any(beam <= 0) or not np.all(np.isfinite(beam)):
        raise ModelError("training events need a positive beam energy; use beam-test samples")
    window = CoreWindow.of(sums, beam, options.core_window)
    keep = window.keep(sums, beam) & (sums > 0)
    if keep.sum() <= 3 * len(PARAMETER_NAMES):
        raise ModelError(
            f"only {int(keep.sum())} training events with energy inside the core window "
            f"(core_window={options.core_window}); give more events or a wider window"
        )
    scale = float(np.median(sums[keep]))
    loss = Loss(density_sums[keep], beam[keep], densities_mip, loss=options.loss,
                energy_scale=scale)  # fmt: skip
    start = loss.from_pandora(options.start_values())
    minuit = Minuit(loss, start, grad=loss.grad, name=PARAMETER_NAMES)
    minuit.strategy = options.strategy
    minuit.errors = np.maximum(0.1 * np.abs(start), 0.01)
    for name in options.fixed_names():
        minuit.fixed[name] = True
    loss.guard = False  # Pandora's form first: with p2 <= 0 imposed from the start, Migrad
    minuit.migrad(ncall=options.max_calls)  # can stall where p2 > 0 for every event
    loss.guard = True
    minuit.migrad(ncall=options.max_calls)
    if not minuit.valid:  # a second call starts from the first's minimum and covariance
        minuit.migrad(ncall=options.max_calls)
    ndf = max(int(keep.sum()) - minuit.nfit, 1)
    errors = np.asarray(minuit.errors) * math.sqrt(max(minuit.fval, 0.0) / ndf)
    if not minuit.valid:
        warnings.warn(
            f"software compensation fit: Migrad's minimum is not valid (EDM {minuit.fmin.edm:.3g}"
            f", {minuit.nfcn} calls); the weights are kept but check them: try strategy=2, "
            "other start values, or fix weakly constrained parameters (fix=a2,b2)",
            FitWarning,
            stacklevel=2,
        )
    return WeightFit(
        parameters=tuple(float(v) for v in loss.to_pandora(minuit.values)),
        errors=tuple(float(v) for v in np.abs(errors * loss.scale)),
        fval=float(minuit.fval),
        valid=bool(minuit.valid),
        edm=float(minuit.fmin.edm),
        calls=int(minuit.nfcn),
        events=int(keep.sum()),
        left_out=int((~keep).sum()),
        energy_scale_gev=scale,
        e_est_range_gev=(float(sums[keep].min()), float(sums[keep].max())),
        window=window,
    )


def scaled_sum_factor(sums: FloatArray, beam: FloatArray) -> float:
    """k minimising Σ (k E_est - E)²/E: the uncompensated sum at unit response, for a
    baseline."""
    return float(np.sum(sums) / np.sum(sums * sums / beam))


def validation_check(
    fit: WeightFit,
    train: tuple[FloatArray, FloatArray],
    validation: tuple[FloatArray, FloatArray],
    densities_mip: FloatArray,
    loss: str,
) -> dict[str, Any]:
    """Loss per event on the training and validation events inside the core window, and of
    the scaled uncompensated sum; warns when the validation is worse than statistics allow
    (4 σ of a mean of n squared Gaussian residuals: 1 + 4 sqrt(2/n))."""
    (x_train, beam_train), (x_val, beam_val) = train, validation
    keep = fit.window.keep(x_val.sum(axis=1), beam_val)
    x, beam = x_val[keep], beam_val[keep]
    power = 1 if loss == "chi2" else 2

    def per_event(energy: FloatArray, target: FloatArray) -> float:
        return float(np.mean((energy - target) ** 2 / target**power)) if target.size else 0.0

    k = scaled_sum_factor(x_train.sum(axis=1), beam_train)
    train_loss = fit.fval / max(fit.events, 1)
    energy = compensated_energy(fit.parameters, x, densities_mip, fit.e_est_range_gev)
    val_loss = per_event(energy, beam)
    allowed = 1.0 + 4.0 * math.sqrt(2.0 / max(int(keep.sum()), 1))
    ratio = val_loss / train_loss if train_loss > 0 else math.inf
    if ratio > allowed:
        warnings.warn(
            f"software compensation: the loss per event on the validation events is {ratio:.2f}"
            f" times the training one (allowed {allowed:.2f} for {int(keep.sum())} events); "
            "the training sample may not represent the validation one: give more events",
            FitWarning,
            stacklevel=2,
        )
    return {
        "events": int(keep.sum()),
        "loss_per_event_train": train_loss,
        "loss_per_event": val_loss,
        "loss_per_event_scaled_sum": per_event(k * x.sum(axis=1), beam),
        "ratio_to_train": ratio,
        "ratio_allowed": allowed,
    }


# --- the plugin ----------------------------------------------------------------------------


def _density_features(loader: Any, geometry: Geometry) -> tuple[FloatArray, FloatArray]:
    item = model_input("density_sums", geometry, bins=len(DENSITY_EDGES_MIP))
    inputs, events = features_of(loader, {item.name: item.shape}, geometry)
    return (np.asarray(inputs[item.name], dtype=np.float64),
            np.asarray(events["beam_energy"], dtype=np.float64))  # fmt: skip


class SoftwareCompensation(OnnxReconstruction):
    """Hadron energy [GeV] from energy-density weights of the Pandora form (ONNX model)."""

    description: ClassVar[str] = (
        "software compensation: hit-energy-density weights of the ILD/Pandora form (9 "
        "parameters fitted with iminuit), run as an ONNX graph"
    )
    url: ClassVar[str] = "https://doi.org/10.1088/1748-0221/7/09/P09017"
    model_name: ClassVar[str] = "software_compensation"
    TrainingOptions: ClassVar[type] = TrainingOptions

    def __init__(self, geometry: str, options: Any = None, **kwargs: Any) -> None:
        super().__init__(geometry, options, **kwargs)
        card = self.model.card
        expected = (None, len(DENSITY_EDGES_MIP))
        shapes = [(item.name, tuple(item.shape)) for item in card.inputs]
        if shapes != [("density_sums", expected)]:
            raise ModelError(
                f"{self.model_path} is not a software compensation model for this calocoffea: "
                f"its inputs are {shapes}, expected [('density_sums', {expected})] (one sum "
                f"per bin of DENSITY_EDGES_MIP); retrain it with `calocoffea train --model "
                "software_compensation`, or run it with --method PATH.onnx if it is another model"
            )

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
        """Fit the weights on calibrated pion ``files``; write ``output`` and its card.

        Steps: shards and a seeded split by event (70/15/15 %); density sums; the Migrad fit
        on the training part (:func:`fit_weights`); the loss on the validation part
        (:func:`validation_check`); the graph, its parity with :func:`compensated_energy`
        and the metrics on the test part; the model file with its card."""
        import iminuit

        opts: TrainingOptions = make_options(TrainingOptions, options)
        densities = representative_densities(opts.final_density_mip)
        geometry = check_training_files(files)
        with scratch_directory("software-compensation") as scratch:
            loader = prepare_shards(files, scratch, seed=seed)
            train, validation, test = (
                _density_features(part, geometry) for part in split_loader(loader, seed)
            )
        fit = fit_weights(*train, densities, opts)
        checked = validation_check(fit, train, validation, densities, opts.loss)
        model = pandora_graph(fit.parameters, densities, fit.e_est_range_gev)
        x_test, beam_test = test
        predicted = onnx_energy(model, x_test)
        reference = compensated_energy(
            fit.parameters, x_test.astype(np.float32), densities, fit.e_est_range_gev
        )
        parity = max_relative_difference(predicted, reference)
        if parity > PARITY_TOLERANCE:
            raise ModelError(
                f"the ONNX graph differs from the numpy formula by {parity:.3g} (relative) on "
                f"the test events, above {PARITY_TOLERANCE}; the fitted parameters "
                f"{fit.parameters} may make the weights overflow: retrain with other start "
                "values or fixed parameters"
            )
        k = scaled_sum_factor(train[0].sum(axis=1), train[1])
        metrics = {
            "test": test_metrics(predicted, beam_test),
            "test_scaled_sum": {"factor": k, **test_metrics(k * x_test.sum(axis=1), beam_test)},
            "parity_max_relative_difference": parity,
            "fit": fit.card_entry(),
            "validation": checked,
            "options": dataclasses.asdict(opts),
            "density_edges_mip": list(DENSITY_EDGES_MIP),
            "density_mip": densities.tolist(),
            "split_events": {
                "train": int(train[1].size),
                "validation": int(validation[1].size),
                "test": int(beam_test.size),
            },
        }
        return write_model(
            model,
            output,
            name=cls.model_name,
            geometry=geometry,
            inputs=[model_input("density_sums", geometry, bins=len(DENSITY_EDGES_MIP))],
            output_name="energy",
            training_sample=files,
            command=command,
            metrics=metrics,
            versions=current_versions(iminuit=iminuit.__version__),
        )


def max_relative_difference(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """max |a - b| / max(|b|, 1e-12) (0 for empty arrays)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.size == 0:
        return 0.0
    return float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-12)))


__all__ = [
    "LOSSES",
    "PANDORA_START",
    "PARAMETER_NAMES",
    "PARAMETER_UNITS",
    "PARITY_TOLERANCE",
    "CoreWindow",
    "Loss",
    "SoftwareCompensation",
    "TrainingOptions",
    "WeightFit",
    "compensated_energy",
    "fit_weights",
    "onnx_energy",
    "pandora_graph",
    "representative_densities",
    "scaled_sum_factor",
    "validation_check",
]
