"""``moment_ratio``: per-cell aging coefficients from the ratio of mean hit energies, the
baseline of the aging calibrations.

What to use when:

- :class:`MomentRatio` (``moment_ratio``) -- the first thing a physicist tries: one pass, no
  training, an error bar per cell. Each fitted cell gets its full statistical error, so cells
  seen in few events land far from the truth: keep ``max_error`` (cells not known to better
  than a few % keep A = 1). Compare with ``wgan_aging`` (same samples, same cells).
- :func:`truncated_moments` -- per-cell moments of the hits below a per-cell quantile.

The estimator, for cell i::

    A_i = m_undamaged,i / m_damaged,i,    m = mean energy [MeV] of the cell's hits with E > 0

Zeros excluded: aging scales the amplitude of a hit, not whether the cell fires (at stage
``sim`` there is no threshold), so the events where the cell is empty carry no information on
A and averaging over them only adds the fluctuation of the cell's occupancy (about 20 % larger
errors at 5000 events of 10 GeV pions in ``tile_24x24``). A threshold on the damaged sample
would break this: there, compare samples above thresholds scaled by A.

Truncated mean (``truncation`` = t > 0): in each sample and cell the highest fraction t of the
hits is dropped before averaging; the same quantile in both samples keeps the estimator
scale-equivariant (a cell scaled by A has its truncated mean scaled by A) and tames the
Landau-like tail. Uncertainty of every fitted cell: A times the relative error of the ratio,
sqrt(v_u / (n_u m_u²) + v_d / (n_d m_d²)), on the hits kept (:func:`calocoffea.aging.ratio_errors`;
for truncated means this ignores the fluctuation of the cut, a small underestimate).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from calocoffea.aging import (
    AgingCalibration,
    AgingOptions,
    CellMoments,
    CellSample,
    CellSelection,
    ratio_errors,
)
from calocoffea.exceptions import MethodOptionsError

FloatArray = npt.NDArray[np.float64]
URL = "https://arxiv.org/abs/2411.03891"


@dataclass(frozen=True)
class MomentRatioOptions(AgingOptions):
    """Options of :class:`MomentRatio` (the samples and cells: :class:`AgingOptions`)."""

    #: fraction of each cell's highest hits dropped before averaging, in [0, 1) (0: plain mean)
    truncation: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.truncation) and 0.0 <= self.truncation < 1.0):
            raise MethodOptionsError(
                f"truncation must lie in [0, 1) (the fraction of the highest hits dropped per "
                f"cell), got {self.truncation}"
            )


def truncated_moments(sample: CellSample, n_cells: int, truncation: float) -> CellMoments:
    """Per-cell hit counts, means and variances of the hits below the cell's (1 - t)
    quantile: the ceil((1 - t) n) lowest of its n hits (every hit for t = 0)."""
    if truncation == 0.0:
        return sample.moments(n_cells)
    order = np.lexsort((sample.energy_mev, sample.cell))
    cell = sample.cell[order]
    n = np.bincount(cell, minlength=n_cells)
    first = np.concatenate(([0], np.cumsum(n)[:-1]))
    rank = np.arange(cell.size) - first[cell]
    kept = rank < np.ceil((1.0 - truncation) * n)[cell]
    below = dataclasses.replace(sample, cell=cell[kept], energy_mev=sample.energy_mev[order][kept])
    return below.moments(n_cells)


class MomentRatio(AgingCalibration):
    """A_i = mean undamaged / mean damaged hit energy of each fitted cell."""

    description: ClassVar[str] = (
        "aging coefficients per cell from the ratio of mean (optionally truncated) hit "
        "energies of an undamaged and a damaged sample: the baseline of seed 004"
    )
    url: ClassVar[str] = URL
    Options: ClassVar[type] = MomentRatioOptions
    method_name: ClassVar[str] = "moment_ratio"
    options: MomentRatioOptions

    def estimate(
        self, reference: CellSample, damaged: CellSample, selection: CellSelection
    ) -> tuple[FloatArray, dict[str, Any]]:
        n_cells = self.detector.n_cells
        t = self.options.truncation
        undamaged_m = truncated_moments(reference, n_cells, t)
        damaged_m = truncated_moments(damaged, n_cells, t)
        cells = selection.trained
        values = undamaged_m.mean[cells] / damaged_m.mean[cells]
        errors = ratio_errors(undamaged_m, damaged_m)[cells]
        quality = {
            "estimator": "mean over hits with E > 0" + (f", top {t:g} dropped" if t else ""),
            "median_relative_error": float(np.median(errors)),
        }
        return values, quality


__all__ = ["MomentRatio", "MomentRatioOptions", "truncated_moments"]
