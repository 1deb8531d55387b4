"""Resolution and linearity of a beam-energy scan, from one reconstructed energy per event.

What to use when:

- :func:`scan_summary` -- the whole scan as a JSON-ready dict (the ``scans`` entries of
  ``results.json`` and the input of :mod:`calocoffea.plotting`): the Gaussian core at every
  beam energy, the fraction of events with a clipped hit, and the resolution
  a/sqrt(E) (+) c and linearity fitted over the energies where fewer than
  ``max_clipped_fraction`` of the events have a clipped hit. The other energies are kept,
  marked ``used_in_fit: false``, with their clipped fraction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from calocoffea.exceptions import FitError
from calocoffea.fitting import gaussian_core, linearity, resolution

#: Energies with at least this fraction of events with a clipped hit are left out of the fits.
MAX_CLIPPED_FRACTION = 0.01


def scan_summary(
    beam_energy: npt.ArrayLike,
    energy: npt.ArrayLike,
    clipped_hits: npt.ArrayLike,
    *,
    label: str = "",
    max_clipped_fraction: float = MAX_CLIPPED_FRACTION,
) -> dict[str, Any]:
    """Per-point cores and the resolution and linearity fits of a scan (module docstring).

    Raises FitError if fewer than three beam energies are usable."""
    beam = np.asarray(beam_energy, dtype=np.float64)
    e = np.asarray(energy, dtype=np.float64)
    clipped = np.asarray(clipped_hits) > 0
    points = np.unique(beam)
    rows: dict[str, list[Any]] = {k: [] for k in (
        "energy_gev", "mean_gev", "mean_error_gev", "sigma_over_e", "sigma_over_e_error",
        "clipped_fraction", "used_in_fit", "events")}  # fmt: skip
    for point in points:
        at = beam == point
        core = gaussian_core(e[at])
        mean, sigma = core.values["mean"], core.values["sigma"]
        fraction = float(np.mean(clipped[at]))
        rows["energy_gev"].append(float(point))
        rows["mean_gev"].append(mean)
        rows["mean_error_gev"].append(core.errors["mean"])
        rows["sigma_over_e"].append(sigma / mean)
        rows["sigma_over_e_error"].append(core.errors["sigma"] / mean)
        rows["clipped_fraction"].append(fraction)
        rows["used_in_fit"].append(bool(fraction < max_clipped_fraction))
        rows["events"].append(int(np.count_nonzero(at)))
    used = np.array(rows["used_in_fit"])
    if used.sum() < 3:
        raise FitError(
            f"scan {label!r}: only {int(used.sum())} beam energies have fewer than "
            f"{max_clipped_fraction:.0%} of events with a clipped hit; resolution and "
            "linearity need 3"
        )
    x = np.array(rows["energy_gev"])[used]
    res = resolution(
        x, np.array(rows["sigma_over_e"])[used], np.array(rows["sigma_over_e_error"])[used]
    )
    lin = linearity(x, np.array(rows["mean_gev"])[used], np.array(rows["mean_error_gev"])[used])
    slope, offset = lin.values["slope"], lin.values["offset"]
    all_x = np.array(rows["energy_gev"])
    deviation = (np.array(rows["mean_gev"]) - (slope * all_x + offset)) / (slope * all_x + offset)
    return {
        "label": label,
        **rows,
        "max_clipped_fraction": max_clipped_fraction,
        "resolution": {
            "a": res.values["a"],
            "a_error": res.errors["a"],
            "c": res.values["c"],
            "c_error": res.errors["c"],
            "chi2_ndf": res.chi2_ndf,
            "valid": bool(res.valid),
        },
        "linearity": {
            "slope": slope,
            "slope_error": lin.errors["slope"],
            "offset": offset,
            "offset_error": lin.errors["offset"],
            "deviation": deviation.tolist(),
            "max_deviation": float(np.max(np.abs(deviation[used]))),
        },
    }


__all__ = ["MAX_CLIPPED_FRACTION", "scan_summary"]
