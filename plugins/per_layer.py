"""``per_layer``: one constant per layer against a reference energy (seed 003, eq. 4).

What to use when: the baseline of seed 003 and the standard calibration of sampling
calorimeters whose cells respond alike within a layer: it corrects layer-to-layer scales
(sampling fraction, absorber thickness, a whole layer's miscalibration) but not what varies
inside a layer (ring, energy): use :class:`~calocoffea.plugins.calibraton.Calibraton` there.

The constants C_ℓ minimise eq. 4, L = Σ_j |Σ_ℓ C_ℓ S_ℓ^j - E_ref^j| / E_ref^j with S_ℓ^j the
sum of the cell energies of layer ℓ in shower j [GeV, after the absorber correction
S = A x E [MeV] / 1000, A the mean over the training showers of E_ref / Σ E_raw]. The fit is
the Calibr-A-Ton engine (:mod:`calocoffea.plugins.calibraton`: collect whole showers, split by
shower, Adam with cosine annealing on batches of showers, early stopping on the test loss)
with the layer as the bin: every shower reduces to its layer sums, so each step is cheap.

Constants (:class:`~calocoffea.constants.Constants`, tables per layer): ``layer_scale`` C_ℓ
(1 where nothing was learnt; a layer without training hits keeps 1 and is listed in
``fit_quality``), ``absorber_correction`` A and ``threshold_mev``. The calibrated shower
energy is Σ_hits A C_ℓ E [MeV] / 1000 over hits above the threshold
(:func:`calocoffea.plugins.calibraton.calibrated_energies`). Uncertainties are not estimated
(0).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from calocoffea.binned import layer_tables
from calocoffea.constants import Constants, Table
from calocoffea.exceptions import FitWarning
from calocoffea.plugins.calibraton import (
    URL,
    Binner,
    FloatArray,
    IntArray,
    Prepared,
    ShowerCalibration,
    ShowerFitOptions,
)


@dataclass(frozen=True)
class PerLayerOptions(ShowerFitOptions):
    """Options of :class:`PerLayer` (those of the shared engine)."""


class PerLayer(ShowerCalibration):
    """One constant per layer minimising the relative L1 loss to E_ref (seed 003 eq. 4)."""

    description: ClassVar[str] = (
        "per-layer calibration: one constant per layer from whole showers against E_ref, "
        "relative L1 loss with Adam and cosine annealing (seed 003 eq. 4, the baseline)"
    )
    url: ClassVar[str] = URL
    Options: ClassVar[type] = PerLayerOptions
    options: PerLayerOptions

    def make_binner(self, sample: dict[str, npt.NDArray[Any]]) -> Binner:
        """The bin of a hit is its layer."""

        def index(cell: IntArray, layer: IntArray, s: FloatArray) -> IntArray:
            return layer

        return Binner(self.detector.n_layers, index, {"bins": {"layer": self.detector.n_layers}})

    def constants(
        self, values: FloatArray, prepared: Prepared, quality: dict[str, Any]
    ) -> Constants:
        geometry = self.detector
        n = geometry.n_layers
        hits = prepared.hits_per_bin[:n]
        empty = np.flatnonzero(hits == 0)
        values = np.where(hits > 0, values, 1.0)
        quality["empty_layers"] = empty.tolist()
        quality["hits_per_layer"] = hits.tolist()
        if empty.size:
            warnings.warn(
                f"per_layer: layers {empty.tolist()} hold no training hit and keep the constant 1",
                FitWarning,
                stacklevel=3,
            )
        keys = np.arange(n, dtype=np.int64)
        tables = {
            "layer_scale": Table("layer", keys, values, np.zeros(n), "1"),
            **layer_tables(geometry, prepared.absorber_correction, self.options.threshold_mev),
        }
        return Constants(tables, self.provenance(prepared, quality, "per_layer"))


__all__ = ["PerLayer", "PerLayerOptions"]
