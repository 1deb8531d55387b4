"""Fast parametrised shower simulation, the embedded default data source.

- :func:`simulate` -- events of one particle type in a geometry, written to a ROOT file.
- :class:`~calocoffea.simulation.engine.Simulation` -- the same as an iterator of awkward
  blocks, for use in memory.
- :class:`~calocoffea.simulation.beam.Beam` -- beam energies and spot.
- :mod:`~calocoffea.simulation.showers` -- the parametrisations (GFlash EM showers,
  hadron showers with f_em and e/h, Landau MIP tracks), one formula per function.
"""

from __future__ import annotations

from calocoffea.simulation.beam import Beam
from calocoffea.simulation.engine import BLOCK_EVENTS, Simulation
from calocoffea.simulation.particles import PARTICLES, Particle, get_particle

__all__ = ["BLOCK_EVENTS", "PARTICLES", "Beam", "Particle", "Simulation", "get_particle"]
