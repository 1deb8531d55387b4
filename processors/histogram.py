"""The histogram processor: physics histograms and a cutflow from events of any stage.

Histograms (named axes; names match the columns they come from):

=================  =========================================  ========  ======================
name               axes                                       storage   reduced
=================  =========================================  ========  ======================
``energy_sum``     beam_energy, energy (event sum)            counts    any order (exact)
``nhit``           beam_energy, nhit                          counts    any order (exact)
``hit_energy``     cell (dense index), energy (per hit)       counts    any order (exact)
``occupancy``      layer, i, j                                counts    any order (exact)
``longitudinal``   beam_energy, layer; weight = energy        double    (file, entry) order
``transverse``     beam_energy, r [mm]; weight = energy       double    (file, entry) order
``cell_energy``    layer, i, j; weight = energy               double    (file, entry) order
=================  =========================================  ========  ======================

Raw (ADC) input can be calibrated on the fly with constants (``constants=``): the
calibrate+histogram path that needs no intermediate file. Simulated input can also be
digitised on the fly (``conditions=`` and ``seed=``, with constants): digitise + calibrate +
histogram in one pass, hit for hit what the digitize and histogram jobs give one after the
other. ``histograms=`` fills only the named histograms (all by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import awkward as ak
import hist
import numpy as np
from coffea import processor

from calocoffea.calibration import CalibrationSteps
from calocoffea.conditions import Conditions, mip_reference_mev
from calocoffea.constants import Constants, DenseConstants
from calocoffea.digitization import DigitizationOptions
from calocoffea.exceptions import CalocoffeaError, StageMismatchError
from calocoffea.flags import count_flags
from calocoffea.geometry import Geometry, decode_cellid, get_geometry
from calocoffea.io import STAGES
from calocoffea.processors.calibrate import calibrate_chunk, calibrate_flat
from calocoffea.processors.common import (
    cell_indices,
    check_one_reading_per_cell,
    chunk_key,
    cutflow_step,
    flat_hits,
)
from calocoffea.processors.digitize import digitize_chunk

#: Typical response per GeV of beam at each stage, times the MIP-equivalent per GeV.
_ADC_PER_MIP = 345.0
#: Every histogram the processor can fill: the count histograms, then the weighted ones.
COUNT_HISTOGRAMS = ("energy_sum", "nhit", "hit_energy", "occupancy")
WEIGHTED_HISTOGRAMS = ("longitudinal", "transverse", "cell_energy")


def energy_per_gev(geometry: Geometry, stage: str) -> float:
    """Rough signal per GeV of beam energy in the unit of ``stage`` (for axis ranges)."""
    f_mip = float(np.mean(geometry.layer_property("mip_sampling_fraction")))
    mip_mev = float(np.mean(mip_reference_mev(geometry)))
    per_gev = {
        "sim": 1000.0 * f_mip,
        "mip": 1000.0 * f_mip / mip_mev,
        "raw": 1000.0 * f_mip / mip_mev * _ADC_PER_MIP,
        "gev": 1.0,
    }
    return per_gev[stage]


def beam_energy_axis(energies_gev: tuple[float, ...]) -> hist.axis.Variable:
    """Variable bins centred on the beam energy points (edges halfway between them)."""
    points = np.unique(np.asarray(energies_gev, dtype=np.float64))
    if points.size == 0:
        return hist.axis.Variable([0.0, 1000.0], name="beam_energy", label="Beam energy [GeV]")
    middle = 0.5 * (points[1:] + points[:-1])
    edges = np.concatenate([[0.5 * points[0]], middle, [1.5 * points[-1]]])
    return hist.axis.Variable(edges, name="beam_energy", label="Beam energy [GeV]")


@dataclass
class HistogramProcessor(processor.ProcessorABC):
    """Fill the histograms of the module docstring for events at ``stage``.

    ``constants`` (with ``steps``) calibrates raw input on the fly; the filled stage is then
    ``steps.stage``. With ``conditions`` too, simulated input is digitised first (random
    numbers keyed by ``seed``, as the digitize processor). Axis ranges follow the beam
    energies and the stage. ``histograms`` names the histograms to fill (empty: all).
    """

    geometry: str
    stage: str
    beam_energies_gev: tuple[float, ...] = ()
    constants: Constants | None = None
    steps: CalibrationSteps = field(default_factory=CalibrationSteps)
    hit_energy_bins: int = 100
    histograms: tuple[str, ...] = ()
    conditions: Conditions | None = None
    seed: int = 0
    digitization: DigitizationOptions = field(default_factory=DigitizationOptions)
    dense: DenseConstants | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise StageMismatchError(f"unknown stage {self.stage!r}; valid: {', '.join(STAGES)}")
        known = COUNT_HISTOGRAMS + WEIGHTED_HISTOGRAMS
        unknown = [name for name in self.histograms if name not in known]
        if unknown:
            raise CalocoffeaError(f"unknown histogram(s) {unknown}; known: {', '.join(known)}")
        self.histograms = tuple(self.histograms) or known
        geometry = get_geometry(self.geometry)
        if self.conditions is not None:
            if self.stage != "sim" or self.constants is None:
                raise StageMismatchError(
                    f"conditions digitise simulated input before calibrating it: give sim "
                    f"input (not {self.stage!r}) and constants, or drop the conditions"
                )
            self.conditions.check_geometry(geometry, f"the geometry {geometry.name!r}")
            self.dense = self.constants.dense(geometry)
        elif self.constants is not None:
            if self.stage != "raw":
                raise StageMismatchError(
                    f"constants calibrate raw (ADC) input, but the input is at stage "
                    f"{self.stage!r}; drop the constants or give raw input"
                )
            self.dense = self.constants.dense(geometry)

    @property
    def hit_fields(self) -> tuple[str, ...]:
        """The hit fields the chosen histograms need besides energy and flags (what is read)."""
        needed = ["cellid", "layer"]
        if {"occupancy", "cell_energy"} & set(self.histograms):
            needed += ["i", "j"]
        if "transverse" in self.histograms:
            needed += ["x", "y"]
        return tuple(needed)

    @property
    def filled_stage(self) -> str:
        return self.steps.stage if self.constants is not None else self.stage

    # ---- histogram definitions ---------------------------------------------------------
    def _axes(self) -> dict[str, Any]:
        geometry = get_geometry(self.geometry)
        unit = STAGES[self.filled_stage]
        per_gev = energy_per_gev(geometry, self.filled_stage)
        e_max = max(self.beam_energies_gev, default=100.0)
        mip = per_gev / (energy_per_gev(geometry, "mip"))  # one MIP in this unit
        hit_max = 4096.0 if self.filled_stage == "raw" else 8.0 * mip
        rows = geometry._index_table[0]
        i0, j0 = rows[:, 3].min(), rows[:, 5].min()
        i1, j1 = (rows[:, 3] + rows[:, 4]).max(), (rows[:, 5] + rows[:, 6]).max()
        r_max = float(np.hypot(*max(s.grid.half_width_mm for s in geometry.sections)))
        return {
            "beam_energy": beam_energy_axis(self.beam_energies_gev),
            "energy_sum": hist.axis.Regular(
                400, 0.0, 1.6 * e_max * per_gev, name="energy", label=f"Energy sum [{unit}]"
            ),
            "energy_hit": hist.axis.Regular(
                self.hit_energy_bins, 0.0, hit_max, name="energy", label=f"Hit energy [{unit}]"
            ),
            "nhit": hist.axis.Integer(0, 4000, name="nhit", label="Hits per event"),
            "cell": hist.axis.Integer(0, geometry.n_cells, name="cell", label="Cell index"),
            "layer": hist.axis.Integer(0, geometry.n_layers, name="layer", label="Layer"),
            "i": hist.axis.Integer(int(i0), int(i1), name="i", label="Cell i"),
            "j": hist.axis.Integer(int(j0), int(j1), name="j", label="Cell j"),
            "r": hist.axis.Regular(100, 0.0, r_max, name="r", label="Radius [mm]"),
        }

    def _book(self) -> tuple[dict[str, hist.Hist], dict[str, hist.Hist]]:
        a = self._axes()
        counts: dict[str, hist.Hist] = {
            "energy_sum": hist.Hist(
                a["beam_energy"], a["energy_sum"], storage=hist.storage.Int64()
            ),
            "nhit": hist.Hist(a["beam_energy"], a["nhit"], storage=hist.storage.Int64()),
            "hit_energy": hist.Hist(a["cell"], a["energy_hit"], storage=hist.storage.Int64()),
            "occupancy": hist.Hist(a["layer"], a["i"], a["j"], storage=hist.storage.Int64()),
        }
        weighted: dict[str, hist.Hist] = {
            "longitudinal": hist.Hist(a["beam_energy"], a["layer"], storage=hist.storage.Double()),
            "transverse": hist.Hist(a["beam_energy"], a["r"], storage=hist.storage.Double()),
            "cell_energy": hist.Hist(a["layer"], a["i"], a["j"], storage=hist.storage.Double()),
        }
        keep = set(self.histograms)
        return (
            {k: h for k, h in counts.items() if k in keep},
            {k: h for k, h in weighted.items() if k in keep},
        )

    # ---- processing --------------------------------------------------------------------
    def process(self, events: Any) -> dict[str, Any]:
        """Steps: calibrate raw hits if constants are given; drop non-finite energies and
        negative simulated deposits (counted); fill count histograms; fill weighted histograms
        under the chunk key. Raw or calibrated hits read once per cell and event (else a
        DuplicateHitError); simulated deposits split over one cell are histogrammed as
        stored."""
        steps: dict[str, Any] = {}
        negative = 0
        if self.conditions is not None and self.dense is not None:
            counts, raw, steps["digitize"] = digitize_chunk(
                events, self.conditions, self.seed, self.digitization, self.hit_fields
            )
            cell = get_geometry(self.geometry).cell_index(raw["cellid"])
            flat, steps["calibrate"] = calibrate_flat(
                len(events), raw, cell, self.dense, self.steps
            )
        elif self.dense is not None:
            counts, flat, cell, steps["calibrate"] = calibrate_chunk(
                events, self.geometry, self.dense, self.steps, self.hit_fields
            )
        else:
            counts, flat = flat_hits(events, (*self.hit_fields, "energy", "flags"))
            cell = cell_indices(events, flat["cellid"], self.geometry)
            if self.stage == "sim":  # a deposit is never negative; a reading can be
                below = np.isfinite(flat["energy"]) & (flat["energy"] < 0)
                negative = int(np.count_nonzero(below))
                if negative:
                    flat = {**flat, "energy": np.where(below, np.nan, flat["energy"])}
            else:
                check_one_reading_per_cell(events, counts, cell, flat["cellid"])
        beam = ak.to_numpy(events.beam_energy).astype(np.float64)
        h, w, finite = self.fill(beam, counts, flat, cell)
        flags = flat.get("flags")
        flagged = (
            {} if flags is None else {k: v for k, v in count_flags(flags[finite]).items() if v}
        )
        steps["histogram"] = cutflow_step(
            len(events),
            len(events),
            finite.size,
            int(finite.sum()),
            {
                "non_finite_energy": int(np.count_nonzero(~finite)) - negative,
                **({"invalid_deposit": negative} if negative else {}),
            },
            flagged,
        )
        return {"cutflow": steps, "counts": h, "ordered": {chunk_key(events): w}}

    def fill(
        self,
        beam: np.ndarray,
        counts: np.ndarray,
        flat: dict[str, np.ndarray],
        cell: np.ndarray,
    ) -> tuple[dict[str, hist.Hist], dict[str, hist.Hist], np.ndarray]:
        """Book and fill the histograms of one chunk from flat hits (``energy``, ``layer``,
        ``cellid``, optional ``flags``; ``i``, ``j``, ``x``, ``y`` as :attr:`hit_fields` says;
        ``i`` and ``j`` optional) and dense cell indices; also the mask of finite energies."""
        energy = np.asarray(flat["energy"], np.float64)
        finite = np.isfinite(energy)
        event_of_hit = np.repeat(np.arange(len(counts)), counts)
        e = energy[finite]
        h, w = self._book()
        if "energy_sum" in h:
            sums = np.bincount(event_of_hit[finite], weights=e, minlength=len(counts))
            h["energy_sum"].fill(beam_energy=beam, energy=sums)
        if "nhit" in h:
            nhit = np.bincount(event_of_hit[finite], minlength=len(counts))
            h["nhit"].fill(beam_energy=beam, nhit=nhit)
        if "hit_energy" in h:
            h["hit_energy"].fill(cell=cell[finite], energy=e)
        layer = flat["layer"][finite]
        if "occupancy" in h or "cell_energy" in w:
            if "i" in flat and "j" in flat:
                i, j = flat["i"][finite], flat["j"][finite]
            else:
                _, _, i, j = decode_cellid(flat["cellid"][finite])
            if "occupancy" in h:
                h["occupancy"].fill(layer=layer, i=i, j=j)
            if "cell_energy" in w:
                w["cell_energy"].fill(layer=layer, i=i, j=j, weight=e)
        if "longitudinal" in w or "transverse" in w:
            hit_beam = beam[event_of_hit][finite]
            if "longitudinal" in w:
                w["longitudinal"].fill(beam_energy=hit_beam, layer=layer, weight=e)
            if "transverse" in w:
                r = np.hypot(flat["x"][finite], flat["y"][finite])
                w["transverse"].fill(beam_energy=hit_beam, r=r, weight=e)
        return h, w, finite

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator
