"""The reconstruct processor: one energy per event from a reconstruction method.

Output per chunk, under ``columns`` (concatenated by the runner in (file, entry) order):
``file`` (the input's index), ``entry`` (the event's entry in its file), ``beam_energy``
[GeV], ``energy`` [GeV] (the method's estimate) and ``clipped_hits`` (hits flagged SATURATED:
their energy is only a lower bound). Under ``ordered`` (summed by the runner in (file, entry)
order, so float sums are the same on every executor): the histograms ``energy``
(reconstructed energy) and ``response`` (E / E_beam against the beam energy), with a
``method`` category.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import awkward as ak
import hist
import numpy as np
from coffea import processor

from calocoffea.flags import HitFlag
from calocoffea.methods import ReconstructionMethod
from calocoffea.processors.common import (
    chunk_key,
    cutflow_step,
    global_entries,
    plugin_errors,
)


def reconstruction_histograms(label: str) -> dict[str, hist.Hist]:
    """Empty ``energy`` and ``response`` histograms for the method called ``label``."""
    method = hist.axis.StrCategory([label], name="method", label="reconstruction")
    return {
        "energy": hist.Hist(
            method,
            hist.axis.Regular(600, 0.0, 300.0, name="energy_gev", label="E_reco [GeV]"),
            storage=hist.storage.Double(),
        ),
        "response": hist.Hist(
            method,
            hist.axis.Regular(60, 0.0, 300.0, name="beam_energy_gev", label="E_beam [GeV]"),
            hist.axis.Regular(200, 0.0, 2.0, name="response", label="E_reco / E_beam"),
            storage=hist.storage.Double(),
        ),
    }


@dataclass
class ReconstructProcessor(processor.ProcessorABC):
    """``method.predict`` on every chunk, with the beam energy and the clipped-hit count."""

    method: ReconstructionMethod
    label: str = "reconstruction"
    #: input file (absolute path) -> its index, for the ``file`` column (-1: not given)
    file_ranks: dict[str, int] = field(default_factory=dict)

    def process(self, events: Any) -> dict[str, Any]:
        """Steps: predict; count clipped hits; fill the histograms; return the columns."""
        with plugin_errors(self.method, "reconstructions", "predict", events):
            energy = np.asarray(self.method.predict(events), dtype=np.float64)
        saturated = (events.hits.flags & int(HitFlag.SATURATED)) != 0
        beam = ak.to_numpy(events.beam_energy).astype(np.float64)
        rank = self.file_ranks.get(str(Path(chunk_key(events)[0]).absolute()), -1)
        columns = {
            "file": np.full(len(events), rank, dtype=np.int32),
            "entry": global_entries(events),
            "beam_energy": beam,
            "energy": energy,
            "clipped_hits": ak.to_numpy(ak.sum(saturated, axis=1)).astype(np.int64),
        }
        histograms = reconstruction_histograms(self.label)
        histograms["energy"].fill(method=self.label, energy_gev=energy)
        with np.errstate(divide="ignore", invalid="ignore"):
            response = np.where(beam > 0, energy / beam, np.nan)
        histograms["response"].fill(method=self.label, beam_energy_gev=beam, response=response)
        step = cutflow_step(len(events), len(events), 0, 0)
        key = chunk_key(events)
        return {
            "cutflow": {"reconstruct": step},
            "columns": {key: columns},
            "ordered": {key: histograms},
        }

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator
