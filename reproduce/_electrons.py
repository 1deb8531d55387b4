"""Shared by the reconstruction reproductions: calibrated electron samples on `cepc_ahcal`.

Beam: a 10 mm Gaussian spot on the detector centre (the demo's, a corner shared by four
cells). Digitisation: the nominal conditions, calibrated with their constants ("realistic
digitisation, nominal chain"); ``effects=False`` switches the ADC clipping and the SiPM
saturation off, to attribute what a model gains to them. Files are made two at a time.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from calocoffea.samples import calibrated_sample
from calocoffea.simulation.beam import Beam

GEOMETRY = "cepc_ahcal"
SPOT_MM = 10.0
#: the continuous training spectrum of seed 000: 1-120 GeV, more events at low energy
TRAINING_RANGE_GEV = (1.0, 120.0)


def _one(args: tuple[Beam, int, int, str, bool]) -> str:
    beam, events, seed, path, effects = args
    return str(calibrated_sample(GEOMETRY, "e-", beam, events, seed, path,
                                 clipping=effects, saturation=effects))  # fmt: skip


def make(jobs: list[tuple[Beam, int, int, str, bool]], workers: int = 2) -> list[Path]:
    """``calibrated_sample`` for every (beam, events, seed, path, effects), in parallel."""
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return [Path(p) for p in pool.map(_one, jobs)]


def training_files(directory: Path, events: int, per_file: int, seed: int) -> list[Path]:
    """``events`` trapezoid 1-120 GeV electrons in files of ``per_file``."""
    beam = Beam(energy_range_gev=TRAINING_RANGE_GEV, spectrum="trapezoid", size_mm=SPOT_MM)
    n_files = max(1, -(-events // per_file))
    jobs = [
        (beam, min(per_file, events - k * per_file), seed + k,
         str(directory / f"electrons-trapezoid-{k:02d}.gev.root"), True)
        for k in range(n_files)
    ]  # fmt: skip
    return make(jobs)


def fixed_energy_files(
    directory: Path, energies: tuple[float, ...], events: int, seed: int, effects: bool, tag: str
) -> list[Path]:
    """``events`` electrons at each of ``energies``, one file per energy."""
    jobs = [
        (Beam((e,), size_mm=SPOT_MM), events, seed + k,
         str(directory / f"electrons-{tag}-{e:g}GeV.gev.root"), effects)
        for k, e in enumerate(energies)
    ]  # fmt: skip
    return make(jobs)
