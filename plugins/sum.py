"""``sum``: the calibrated energy sum, the reference every other reconstruction is judged by.

Hits at stage ``gev`` are already sampling-fraction corrected per layer by the calibration
(MIP x E_MIP(layer) / f_MIP(layer)), so the event energy is their sum. Hits flagged as
clipped (SATURATED) are kept at their range top, as the calibration set them; the
reconstruct processor counts them per event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import awkward as ak
import numpy as np
import numpy.typing as npt

from calocoffea.methods import ReconstructionMethod


@dataclass(frozen=True)
class SumOptions:
    """Options of :class:`SumReconstruction`."""

    #: hits below this energy [GeV] are left out (0: every hit the calibration kept)
    threshold_gev: float = 0.0


class SumReconstruction(ReconstructionMethod):
    """Event energy [GeV] = sum of the calibrated hit energies at stage ``gev``."""

    description: ClassVar[str] = "calibrated hit-energy sum (sampling-fraction corrected)"
    url: ClassVar[str] = "https://doi.org/10.1088/1748-0221/6/04/P04003"
    Options: ClassVar[type] = SumOptions
    input_stage: ClassVar[str] = "gev"
    options: SumOptions

    def predict(self, events: Any) -> npt.NDArray[np.float64]:
        energy = events.hits.energy
        if self.options.threshold_gev > 0:
            energy = energy[energy >= self.options.threshold_gev]
        return ak.to_numpy(ak.sum(energy, axis=1)).astype(np.float64)


__all__ = ["SumOptions", "SumReconstruction"]
