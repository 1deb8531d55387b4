"""Bits of ``hit_flags``: what the read-out or the calibration did to a hit.

Flags are set, never used to drop a hit silently: a hit that is removed is counted in the
cutflow with its reason instead (see :mod:`calocoffea.processors`).
"""

from __future__ import annotations

import enum

import numpy as np
import numpy.typing as npt


class HitFlag(enum.IntFlag):
    """One bit each; combine with ``|``, test with ``flags & HitFlag.SATURATED``."""

    #: read on the low gain (the high gain passed its switch point)
    LOW_GAIN = 1
    #: ADC clipped at the range top (low-gain saturation or 12-bit overflow); the calibrated
    #: energy is the range top
    SATURATED = 2
    #: cell marked dead in the conditions
    DEAD = 4
    #: cell marked noisy in the conditions
    NOISY = 8
    #: SiPM occupancy above the de-saturation limit: linear continuation used
    EXTRAPOLATED = 16


def count_flags(flags: npt.NDArray[np.integer]) -> dict[str, int]:
    """Number of hits with each flag set, by lower-case flag name."""
    flags = np.asarray(flags)
    return {str(flag.name).lower(): int(np.count_nonzero(flags & int(flag))) for flag in HitFlag}
