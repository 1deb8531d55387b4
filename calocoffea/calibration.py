"""Apply calibration constants to flat raw hits: ADC -> MIP -> GeV.

What to use when:

- :func:`calibrate` -- the whole chain on flattened hits (the calibrate processor calls it on
  each chunk) with :class:`CalibrationSteps` saying which steps run.
- :func:`range_top_mip` -- the calibrated value [MIP] of each cell's low-gain range top, the
  energy a clipped hit is set to.

The chain, per hit (constants per cell, :meth:`Constants.dense`):

1. pedestal subtraction of the gain the hit was read on;
2. gain selection: low-gain amplitudes times the high/low gain ratio (high-gain equivalent);
3. inverse electronics non-linearity x = y / (b - a y / X);
4. ADC -> fired pixels (/ SPE gain), SiPM de-saturation -> p.e., / light yield -> MIP;
5. per-cell (and per-layer) multiplicative constants ``scale``;
6. MIP -> GeV: x E_MIP(layer) / f_MIP(layer) / 1000 (sampling-fraction correction).

Hits flagged SATURATED are set to the range top of their cell and counted; hits whose
amplitude lies beyond the asymptote of the non-linearity are clipped there and flagged too.
Nothing is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from calocoffea.constants import DenseConstants
from calocoffea.digitization import desaturation, inverse_nonlinearity
from calocoffea.flags import HitFlag

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class CalibrationSteps:
    """Which steps :func:`calibrate` runs; ``to_gev=False`` stops at MIP."""

    pedestal: bool = True
    gain_selection: bool = True
    nonlinearity: bool = True
    desaturation: bool = True
    scale: bool = True
    to_gev: bool = False

    @property
    def stage(self) -> str:
        return "gev" if self.to_gev else "mip"


@dataclass
class Calibrated:
    """Calibrated energies (MIP or GeV) and updated flags, one per input hit."""

    energy: FloatArray
    flags: npt.NDArray[np.uint32]
    flagged: dict[str, int] = field(default_factory=dict)


def _to_mip(
    amplitude: FloatArray,
    cell: npt.NDArray[np.int64],
    constants: DenseConstants,
    steps: CalibrationSteps,
) -> tuple[FloatArray, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """High-gain-equivalent amplitude [ADC] -> MIP; also (beyond asymptote, extrapolated)."""
    c, s = constants.cells, constants.settings
    x = amplitude
    beyond = np.zeros(amplitude.shape, bool)
    if steps.nonlinearity:
        a, b = c["nonlinearity_a"][cell], c["nonlinearity_b"][cell]
        x = inverse_nonlinearity(amplitude, a, b, s["nonlinearity_scale_adc"])
        beyond = ~np.isfinite(x)
        if np.any(beyond):  # clip just below the asymptote b X / a
            limit = 0.999 * b * s["nonlinearity_scale_adc"] / np.maximum(a, 1e-300)
            x = np.where(beyond, inverse_nonlinearity(limit, a, b, s["nonlinearity_scale_adc"]), x)
    pixels = x / c["spe_adc"][cell]
    extrapolated = np.zeros(amplitude.shape, bool)
    if steps.desaturation:
        n_pix = c["n_pixels"][cell]
        occupancy = s["desaturation_occupancy"]
        extrapolated = pixels > occupancy * n_pix
        pixels = desaturation(pixels, n_pix, occupancy)
    mip = pixels / c["light_yield_pe"][cell]
    return mip, beyond, extrapolated


def calibrate(
    adc: FloatArray,
    gain: npt.NDArray[np.integer],
    flags: npt.NDArray[np.integer],
    cell: npt.NDArray[np.int64],
    layer: npt.NDArray[np.integer],
    constants: DenseConstants,
    steps: CalibrationSteps | None = None,
) -> Calibrated:
    """Calibrate flat raw hits: ADC, gain (0 high, 1 low), flags, dense cell index, layer."""
    steps = steps or CalibrationSteps()
    c = constants.cells
    adc = np.asarray(adc, np.float64)
    low = np.asarray(gain) == 1
    saturated = (np.asarray(flags) & HitFlag.SATURATED) != 0
    amplitude = adc
    if steps.pedestal:
        amplitude = adc - np.where(low, c["pedestal_lg_adc"][cell], c["pedestal_hg_adc"][cell])
    if steps.gain_selection:
        amplitude = np.where(low, amplitude * c["gain_ratio"][cell], amplitude)
    mip, beyond, extrapolated = _to_mip(amplitude, cell, constants, steps)
    if np.any(saturated):  # the range top of the cell, wherever the ADC value stands
        mip[saturated] = range_top_mip(cell[saturated], constants, steps)
    energy = mip
    if steps.scale:
        energy = energy * c["scale"][cell]
    if steps.to_gev:
        layers = constants.layers
        energy = energy * (layers["mip_mev"] / layers["sampling_fraction"] / 1000.0)[layer]
    out_flags = np.asarray(flags, np.uint32).copy()
    out_flags[beyond] |= np.uint32(HitFlag.SATURATED)
    out_flags[extrapolated] |= np.uint32(HitFlag.EXTRAPOLATED)
    flagged = {
        "saturated": int(np.count_nonzero(saturated | beyond)),
        "extrapolated": int(np.count_nonzero(extrapolated)),
    }
    return Calibrated(energy=energy, flags=out_flags, flagged=flagged)


def range_top_mip(
    cell: npt.NDArray[np.int64], constants: DenseConstants, steps: CalibrationSteps | None = None
) -> FloatArray:
    """Calibrated energy [MIP, before ``scale``] of each cell's low-gain range top."""
    steps = steps or CalibrationSteps()
    c, s = constants.cells, constants.settings
    amplitude = (s["lg_saturation_adc"] - c["pedestal_lg_adc"][cell]) * c["gain_ratio"][cell]
    mip, _, _ = _to_mip(amplitude, cell, constants, steps)
    return mip


__all__ = ["Calibrated", "CalibrationSteps", "calibrate", "range_top_mip"]
