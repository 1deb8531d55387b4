"""Simulate straight to a ROOT file of events (the `calocoffea simulate` command)."""

from __future__ import annotations

import os
from pathlib import Path

from tqdm import tqdm

from calocoffea import __version__
from calocoffea.geometry import Geometry, get_geometry
from calocoffea.io import FileMetadata, write_events
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.engine import BLOCK_EVENTS, Simulation
from calocoffea.simulation.particles import get_particle


def simulate(
    geometry: str | Geometry,
    particle: str,
    beam: Beam,
    events: int,
    seed: int,
    output: str | os.PathLike[str],
    *,
    run: int = 0,
    progress: bool = False,
) -> Path:
    """Simulate and write ``output``; the file appears complete or not at all."""
    geo = get_geometry(geometry)
    sim = Simulation(geo, get_particle(particle), beam, events, seed, run=run)
    metadata = FileMetadata(
        stage="sim",
        geometry=geo.name,
        geometry_hash=geo.hash,
        producer=f"calocoffea {__version__} simulate",
        extra={
            "particle": sim.particle.name,
            "seed": seed,
            "run": run,
            "events": sim.n_events,
            "block_events": BLOCK_EVENTS,
            "beam": {
                "energies_gev": list(beam.energies_gev),
                "energy_range_gev": list(beam.energy_range_gev or ()),
                "spectrum": beam.spectrum,
                "x_mm": beam.x_mm,
                "y_mm": beam.y_mm,
                "size_mm": beam.size_mm,
                "uniform": beam.uniform,
            },
        },
    )
    blocks = tqdm(
        sim,
        total=sim.n_blocks,
        unit="block",
        desc=f"{sim.particle.name} in {geo.name}",
        disable=not progress or sim.n_blocks < 3,
    )
    return write_events(output, blocks, metadata)
