"""Score calibration constants against the known truth of pseudo-data.

What to use when:

- :func:`score_constants` -- fitted against true per-cell constants (any method: MIP scales,
  gain ratios, Calibr-A-Ton factors): the RMS and mean of fit / true - 1, the mean absolute
  error, R² and the same RMS once the common scale is divided out. Returns a
  :class:`ConstantsScore`.
- :func:`shower_coverage` -- per cell, in how many showers it carries at least a given
  fraction of the shower's energy: which cells a shower-based fit can constrain.
- :func:`expected_precision` -- the statistical limit of a per-cell fit from showers (the
  Cramér-Rao bound of the linear model, module notes below), to compare a score with.

The other half of a score is the resolution after applying the constants
(:func:`calocoffea.fitting.resolution` on the calibrated energies); the demo's report and
``reproduce/calibraton_cells.py`` show both.

Definitions, over the scored cells k with fitted f_k and true t_k:

- ``rms`` = sqrt(mean((f/t - 1)²)), ``bias`` = mean(f/t - 1);
- ``mae`` = mean(|f - t|) in the unit of the constants, ``mae_relative`` = mean(|f/t - 1|);
- ``r2`` = 1 - Σ(f - t)² / Σ(t - mean t)²: the fraction of the true cell-to-cell spread the
  fit recovers (1: perfect, 0: no better than the mean, negative: worse);
- ``rms_scaled``: the RMS of (f/t)/median(f/t) - 1, for fits that fix the constants only up
  to a common factor (a shower fit absorbs the mean leakage into every constant).

Statistical limit of a shower fit (what :func:`expected_precision` computes). For showers j
with reference E_j, Σ_k c_k S_jk ≈ E_j with a relative fluctuation σ of the shower sum, so
near the solution the Fisher information of c_k is Σ_j (S_jk / E_j)² / σ²: a cell that
carries a fraction φ of the shower in n showers is known no better than σ / (φ √n), e.g.
0.02 / (0.01 · √200) = 14 % at 1 % in 200 showers. Correlations between cells only widen it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from calocoffea.exceptions import ConstantsError

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ConstantsScore:
    """Fitted against true constants over the scored cells (module docstring)."""

    cells: int  # cells scored
    of: int  # cells offered (the length of the inputs)
    rms: float
    bias: float
    mae: float
    mae_relative: float
    r2: float
    rms_scaled: float
    #: RMS of t / mean(t) - 1: the spread the fit had to recover
    true_spread: float

    @property
    def fraction(self) -> float:
        """Fraction of the offered cells that were scored."""
        return self.cells / self.of if self.of else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fraction": self.fraction}

    def line(self) -> str:
        """One line for logs and README."""
        return (
            f"{self.cells} of {self.of} cells ({100 * self.fraction:.1f} %): RMS(fit/true - 1) "
            f"{100 * self.rms:.2f} % (bias {100 * self.bias:+.2f} %, after the common scale "
            f"{100 * self.rms_scaled:.2f} %), MAE {self.mae:.4g}, R² {self.r2:.3f}; true spread "
            f"{100 * self.true_spread:.1f} %"
        )


def score_constants(
    fitted: npt.ArrayLike,
    true: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
) -> ConstantsScore:
    """Score ``fitted`` against ``true`` (same length, one value per cell) over the cells
    where ``mask`` is True (all cells when None). Cells where either value is not finite, or
    the truth is not positive, cannot be scored and are refused: select them out with
    ``mask``."""
    f = np.asarray(fitted, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if f.shape != t.shape or f.ndim != 1:
        raise ConstantsError(
            f"fitted and true constants must be 1-d arrays of one length, got shapes {f.shape} "
            f"and {t.shape}"
        )
    keep = np.ones(f.size, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if keep.shape != f.shape:
        raise ConstantsError(f"mask has shape {keep.shape}, the constants {f.shape}")
    bad = keep & ~(np.isfinite(f) & np.isfinite(t) & (t > 0))
    if np.any(bad):
        first = np.flatnonzero(bad)[:5].tolist()
        raise ConstantsError(
            f"{int(bad.sum())} scored cells have a non-finite fit or a non-positive truth "
            f"(cells {first}); leave them out with the mask"
        )
    if not np.any(keep):
        raise ConstantsError("no cell to score: the mask selects none")
    f, t = f[keep], t[keep]
    ratio = f / t
    deviation = ratio - 1.0
    scaled = ratio / np.median(ratio) - 1.0
    total = float(np.sum((t - t.mean()) ** 2))
    r2 = 1.0 - float(np.sum((f - t) ** 2)) / total if total > 0 else float("nan")
    return ConstantsScore(
        cells=int(keep.sum()),
        of=int(keep.size),
        rms=float(np.sqrt(np.mean(deviation**2))),
        bias=float(np.mean(deviation)),
        mae=float(np.mean(np.abs(f - t))),
        mae_relative=float(np.mean(np.abs(deviation))),
        r2=r2,
        rms_scaled=float(np.sqrt(np.mean(scaled**2))),
        true_spread=float(np.std(t) / np.mean(t)),
    )


def _shower_fractions(
    cell: npt.ArrayLike, energy: npt.ArrayLike, counts: npt.ArrayLike, n_cells: int
) -> tuple[npt.NDArray[np.int64], FloatArray]:
    cell = np.asarray(cell, dtype=np.int64)
    energy = np.asarray(energy, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.int64)
    if cell.shape != energy.shape or counts.sum() != cell.size:
        raise ConstantsError(
            f"{cell.size} cells, {energy.size} energies and {int(counts.sum())} hits counted "
            "per shower do not match"
        )
    if cell.size and (cell.min() < 0 or cell.max() >= n_cells):
        raise ConstantsError(f"cell indices must lie in 0..{n_cells - 1}")
    shower = np.repeat(np.arange(counts.size), counts)
    total = np.bincount(shower, weights=energy, minlength=counts.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(total[shower] > 0, energy / total[shower], 0.0)
    return cell, fraction


def shower_coverage(
    cell: npt.ArrayLike,
    energy: npt.ArrayLike,
    counts: npt.ArrayLike,
    n_cells: int,
    fraction: float = 0.01,
) -> npt.NDArray[np.int64]:
    """Per cell (dense index), the number of showers in which it carries at least
    ``fraction`` of the shower's energy; hits are flat (``cell``, ``energy``) with
    ``counts`` hits per shower (a cell appears at most once per shower)."""
    cell, share = _shower_fractions(cell, energy, counts, n_cells)
    return np.bincount(cell[share >= fraction], minlength=n_cells).astype(np.int64)


def expected_precision(
    cell: npt.ArrayLike,
    energy: npt.ArrayLike,
    counts: npt.ArrayLike,
    n_cells: int,
    sigma: float,
) -> FloatArray:
    """Per cell, the smallest relative uncertainty a fit of one constant per cell can reach
    from these showers: σ / sqrt(Σ_j φ_jk²), φ_jk the share of shower j in cell k and σ the
    relative fluctuation of the shower sum (module docstring); inf for cells no shower
    reaches."""
    cell, share = _shower_fractions(cell, energy, counts, n_cells)
    information = np.bincount(cell, weights=share**2, minlength=n_cells)
    with np.errstate(divide="ignore"):
        return np.where(information > 0, sigma / np.sqrt(information), np.inf)


__all__ = ["ConstantsScore", "expected_precision", "score_constants", "shower_coverage"]
