"""Calibrated samples in one call: simulate -> digitise -> calibrate to GeV.

What to use when:

- :func:`calibrated_sample` -- a ``gev``-stage file of the parametrised simulation, digitised
  with the given detector conditions (default: the nominal ones of the geometry) and
  calibrated with the constants of those conditions: "realistic digitisation, calibrated with
  the nominal chain". ``constants_of=`` calibrates with the constants of other conditions
  (pseudo-data digitised with effects the MC does not know, calibrated with the MC's
  constants, e.g. ``constants_of=nominal(geometry)``). Switch the digitiser's ADC clipping
  off with ``clipping=False`` and the SiPM saturation off with ``saturation=False`` (pixel
  counts raised so far that the response is linear, in both the conditions and the
  constants) to attribute what a reconstruction gains to those effects. Intermediate files
  are removed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from calocoffea.calibration import CalibrationSteps
from calocoffea.conditions import Conditions, nominal
from calocoffea.constants import nominal_constants
from calocoffea.digitization import DigitizationOptions
from calocoffea.runner import RunOptions, calibrate_files, digitize_files
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate

#: SiPM pixels per cell with saturation "off": 1 - exp(-N_pe/N_pix) is linear to 1e-4 at
#: the largest hits of a 120 GeV shower.
UNSATURATED_PIXELS = 1.0e9


def calibrated_sample(
    geometry: str,
    particle: str,
    beam: Beam,
    events: int,
    seed: int,
    output: str | Path,
    *,
    conditions: Conditions | None = None,
    constants_of: Conditions | None = None,
    clipping: bool = True,
    saturation: bool = True,
    run_options: RunOptions | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``output``: ``events`` (per beam point) calibrated showers; returns its path.

    Digitised with ``conditions`` (default: the nominal ones), calibrated with the nominal
    constants of ``constants_of`` (default: ``conditions``); ``saturation=False`` raises the
    pixel counts of both. An existing ``output`` is an error unless ``overwrite``; the
    intermediate ``<output>.sim.root`` and ``<output>.raw.root`` are this function's own
    (replaced if a killed run left them, removed at the end)."""
    target = Path(output)
    conditions = conditions or nominal(geometry)
    calibration = constants_of or conditions
    if not saturation:
        pixels = np.full(conditions.n_cells, UNSATURATED_PIXELS)
        conditions = conditions.with_values(label=f"{conditions.label}, unsaturated",
                                            n_pixels=pixels)  # fmt: skip
        calibration = (conditions if constants_of is None else
                       constants_of.with_values(label=f"{constants_of.label}, unsaturated",
                                                n_pixels=pixels))  # fmt: skip
    sim = target.with_name(target.name + ".sim.root")
    raw = target.with_name(target.name + ".raw.root")
    try:
        simulate(geometry, particle, beam, events, seed, sim)
        options = dataclasses.replace(DigitizationOptions(), clipping=clipping)
        digitize_files([sim], raw, conditions=conditions, seed=seed + 1, options=options,
                       run_options=run_options, overwrite=True)  # fmt: skip
        calibrate_files([raw], target, nominal_constants(calibration),
                        steps=CalibrationSteps(to_gev=True), run_options=run_options,
                        overwrite=overwrite)  # fmt: skip
    finally:
        sim.unlink(missing_ok=True)
        raw.unlink(missing_ok=True)
    return target


__all__ = ["UNSATURATED_PIXELS", "calibrated_sample"]
