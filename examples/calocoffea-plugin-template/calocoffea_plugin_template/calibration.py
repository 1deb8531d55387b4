"""``layer_equalisation``: one scale per layer that equalises the median muon hit response.

Muons cross every layer as MIPs, so after calibration every layer should see the same hit
spectrum. The method fills a per-layer histogram of hit energies [MIP] in ``collect``; ``fit``
takes the median of each layer and returns per-cell ``scale`` constants (each cell gets the
value of its layer) that bring every layer's median to the median of all layers together.
The median, not 1 MIP, is the target: 1 MIP is the most probable value of the Landau-like
spectrum, and its median lies above it (about 1.16 MIP for scintillator tiles).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import awkward as ak
import hist
import numpy as np
import numpy.typing as npt

from calocoffea.constants import Constants, Provenance, Table
from calocoffea.exceptions import FitError
from calocoffea.geometry import get_geometry
from calocoffea.methods import CalibrationMethod


@dataclasses.dataclass(frozen=True)
class LayerEqualisationOptions:
    """Options of :class:`LayerEqualisation`."""

    max_energy_mip: float = 5.0
    """Upper edge of the hit-energy histogram [MIP]; hits above it still count as above."""
    bins: int = 200
    """Bins of the hit-energy histogram between 0 and ``max_energy_mip``."""
    min_hits: int = 100
    """Fewest hits a layer needs; fewer is an error (give more muon events)."""


class LayerEqualisation(CalibrationMethod):
    """Per-layer scale that equalises the median muon hit energy of every layer.

    The scales are relative to the constants the input was calibrated with: multiply them
    into those constants' ``scale`` to calibrate raw data."""

    description: ClassVar[str] = "per-layer scale equalising the median muon hit energy [MIP]"
    url: ClassVar[str] = "https://example.org/calocoffea-plugin-template"
    Options: ClassVar[type] = LayerEqualisationOptions
    run_type: ClassVar[str] = "muon"
    input_stage: ClassVar[str] = "mip"

    def collect(self, events: Any) -> hist.Hist:
        """Per-layer histogram of the hit energies of this chunk (integer counts)."""
        o = self.options
        h = hist.Hist(
            hist.axis.Integer(0, get_geometry(self.geometry).n_layers, name="layer"),
            hist.axis.Regular(o.bins, 0.0, o.max_energy_mip, name="energy", label="E [MIP]"),
            storage=hist.storage.Int64(),
        )
        hits = ak.flatten(events.hits)
        h.fill(layer=ak.to_numpy(hits.layer), energy=ak.to_numpy(hits.energy))
        return h

    def fit(self, accumulated: hist.Hist) -> Constants:
        """Per-cell ``scale``: median of all layers / median of the cell's layer."""
        geometry = get_geometry(self.geometry)
        counts = accumulated.view(flow=True)  # [layer(+flow), energy(+flow)]
        edges = accumulated.axes["energy"].edges
        per_layer = counts[1:-1]  # drop the layer under/overflow: not layers of the detector
        n_hits = per_layer.sum(axis=1)
        few = np.flatnonzero(n_hits < self.options.min_hits)
        if few.size:
            raise FitError(
                f"layer_equalisation: layers {few.tolist()} have fewer than "
                f"{self.options.min_hits} hits; give more muon events or lower min_hits"
            )
        median, error = np.transpose([_median(row, edges) for row in per_layer])
        reference, _ = _median(per_layer.sum(axis=0), edges)
        scale = reference / median
        layer = geometry.cell_layer
        table = Table(
            "cell",
            geometry.cellids().astype(np.int64),
            scale[layer],
            (scale * error / median)[layer],
        )
        quality = {"reference_median_mip": reference, "min_hits_per_layer": int(n_hits.min())}
        provenance = Provenance(
            method="layer_equalisation",
            geometry=geometry.name,
            geometry_hash=geometry.hash,
            fit_quality=quality,
        )
        return Constants({"scale": table}, provenance)


def _median(
    counts: npt.NDArray[np.int64], edges: npt.NDArray[np.float64], spread: float = 0.1
) -> tuple[float, float]:
    """Median of a histogram (with flow bins) and its standard error 1 / (2 f sqrt(N)),
    where the density f at the median is estimated from the quantiles 0.5 -+ ``spread``."""
    cumulative = np.cumsum(counts[:-1])  # counts below each edge (underflow first)
    n = float(cumulative[-1] + counts[-1])

    def quantile(q: float) -> float:
        return float(np.interp(q * n, cumulative, edges))

    width = quantile(0.5 + spread) - quantile(0.5 - spread)
    return quantile(0.5), width / (2 * spread) / (2 * np.sqrt(n))
