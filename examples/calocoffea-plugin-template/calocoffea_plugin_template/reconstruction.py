"""``hit_count``: energy from the number of hits, as a digital (semi-digital) HCAL measures it.

Each hit above a threshold counts once, whatever its amplitude, so the estimator is insensitive
to Landau fluctuations of single hits; its weakness is saturation at high energy density.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import awkward as ak
import numpy as np
import numpy.typing as npt

from calocoffea.methods import ReconstructionMethod


@dataclasses.dataclass(frozen=True)
class HitCountOptions:
    """Options of :class:`HitCount`."""

    threshold_mip: float = 0.5
    """A hit counts if its energy is above this [MIP]."""
    gev_per_hit: float = 0.05
    """Energy per counted hit [GeV]; fit it to beams of known energy for your detector."""


class HitCount(ReconstructionMethod):
    """E [GeV] = (number of hits above ``threshold_mip``) x ``gev_per_hit``."""

    description: ClassVar[str] = "digital estimator: hits above threshold x GeV per hit"
    url: ClassVar[str] = "https://example.org/calocoffea-plugin-template"
    Options: ClassVar[type] = HitCountOptions
    input_stage: ClassVar[str] = "mip"

    def predict(self, events: Any) -> npt.NDArray[np.float64]:
        """One energy [GeV] per event."""
        n_hits = ak.sum(events.hits.energy > self.options.threshold_mip, axis=1)
        return ak.to_numpy(n_hits).astype(np.float64) * self.options.gev_per_hit
