"""The built-in geometries (DESIGN.md table), registered as entry points in pyproject.toml.

Each factory returns a :class:`~calocoffea.geometry.Geometry`. Where a seed leaves a
dimension open the choice is marked ``[guess]`` in the notes with its reason; ``[read]``
numbers come from the source named, ``[memory]`` ones are standard values not re-read.
"""

from __future__ import annotations

import math

from calocoffea.geometry import Geometry, Layer, Section
from calocoffea.grids import HexGrid, SquareGrid

#: Measured EM stochastic terms [sqrt(GeV)] the simulation is tuned to.
AHCAL_STOCHASTIC = 0.219  # CALICE AHCAL electrons, JINST 6 P04003 [memory]
SIW_ECAL_STOCHASTIC = 0.166  # CALICE Si-W ECAL, arXiv:0811.2354 [read]
HGCAL_EE_STOCHASTIC = 0.21  # seed 003, unbiased Geant4 d2 EE [read]
E_OVER_H = 1.3  # Fe/scintillator [memory]; used as the guess for the other structures


def naive_stochastic_term(layer: Layer) -> float:
    """The textbook EM sampling term 2.7 % sqrt(d_active[mm] / f_samp) (PHYSICS.md)."""
    return 0.027 * math.sqrt(layer.active_mm / layer.medium.mip_sampling_fraction)


_AHCAL_LAYER = Layer("Fe", 20.0, "scintillator", 3.0)


def _scaled_stochastic(layer: Layer) -> float:
    """[guess] for structures without a beam test: the naive term scaled by the ratio
    measured/naive of the CALICE AHCAL (0.219/0.29), since the naive formula overestimates
    the measured term of SiPM-on-tile calorimeters by the same mechanism."""
    return naive_stochastic_term(layer) * AHCAL_STOCHASTIC / naive_stochastic_term(_AHCAL_LAYER)


def cepc_ahcal() -> Geometry:
    """CEPC AHCAL prototype (seed 000): 40 layers, 18 x 18 tiles of 40 x 40 x 3 mm, steel."""
    return Geometry(
        name="cepc_ahcal",
        description="CEPC AHCAL prototype: 40 layers of 20 mm steel + 3 mm scintillator, "
        "18 x 18 cells of 40 x 40 mm (12960 channels)",
        source="seed 000 (CEPC AHCAL beam test); PHYSICS.md",
        sections=(
            Section(
                name="hcal",
                layers=(_AHCAL_LAYER,) * 40,
                grid=SquareGrid(18, 18, 40.0),
                stochastic_term=AHCAL_STOCHASTIC,
                e_over_h=E_OVER_H,
                notes=(
                    "40 layers, 72 x 72 cm, 4 x 4 x 0.3 cm cells, 12960 channels [read, seed 000]",
                    "20 mm steel absorber per layer [guess: PHYSICS.md structure; the seed quotes "
                    "4.6 lambda_I for 40 layers, 20 mm Fe + 3 mm gives 4.9]",
                    "scintillator = polyvinyltoluene; MIP MPV 0.465 MeV computed (CEPC 0.461)",
                ),
            ),
        ),
    )


def calice_siw_ecal_ahcal() -> Geometry:
    """CALICE Si-W ECAL (30 layers) followed by a 48-layer AHCAL (seed 001)."""
    ecal_layers = (Layer("W", 2.1, "Si", 0.5),) * 20 + (Layer("W", 4.2, "Si", 0.5),) * 10
    return Geometry(
        name="calice_siw_ecal_ahcal",
        description="CALICE Si-W ECAL (20 x 2.1 mm + 10 x 4.2 mm W, 0.5 mm Si, 5 x 5 mm "
        "cells) + AHCAL (48 x (20 mm Fe + 3 mm scintillator), 30 x 30 mm cells)",
        source="seed 001; CALICE Si-W ECAL arXiv:0811.2354",
        sections=(
            Section(
                name="ecal",
                layers=ecal_layers,
                grid=SquareGrid(40, 40, 5.0),
                stochastic_term=SIW_ECAL_STOCHASTIC,
                e_over_h=E_OVER_H,
                notes=(
                    "30 layers, 5 x 5 mm Si pads, about 24 X0 and 1 lambda_I [read, DESIGN.md]",
                    "40 x 40 cells (20 x 20 cm) [guess: seed 001's ECAL voxel grid is 40 wide; "
                    "the physics prototype was 18 x 18 cm]",
                    "no PCB, carbon fibre or air in the slabs [guess: not given]",
                    "e/h = 1.3 [guess: seed 001 calls the ECAL non-compensating]",
                ),
            ),
            Section(
                name="hcal",
                layers=(_AHCAL_LAYER,) * 48,
                grid=SquareGrid(40, 40, 30.0),
                stochastic_term=AHCAL_STOCHASTIC,
                e_over_h=E_OVER_H,
                notes=(
                    "48 layers of 30 x 30 mm tiles [read, DESIGN.md / seed 001]",
                    "40 x 40 tiles [guess: seed 001's HCAL voxel grid is 40 wide]",
                    "20 mm steel + 3 mm scintillator [guess: as cepc_ahcal]",
                ),
            ),
        ),
    )


def hgcal_ee() -> Geometry:
    """The d2 electromagnetic section of seed 003 (HGCAL-like, hexagonal silicon)."""
    return Geometry(
        name="hgcal_ee",
        description="HGCAL-like EE (seed 003 'd2'): 26 layers of 6.05 mm Pb + 0.32 mm Si "
        "with 3 mm gaps, 3571 hexagonal cells (10 mm circumradius) in 35 rings",
        source="seed 003 (Calibr-A-Ton), section 3.1",
        sections=(
            Section(
                name="ee",
                layers=(Layer("Pb", 6.05, "Si", 0.32, gap_mm=3.0),) * 26,
                grid=HexGrid(rings=35, radius_mm=10.0),
                stochastic_term=HGCAL_EE_STOCHASTIC,
                e_over_h=E_OVER_H,
                notes=(
                    "26 layers, 6.05 mm Pb + 320 um Si, 3 mm between layers, 3571 cells in 35 "
                    "rings, cells inscribed in a 10 mm circle [read, seed 003]",
                    "the 3 mm gaps are air [guess: the seed says 'distant']",
                    "the FH/BH hadronic sections of d2 are not modelled",
                ),
            ),
        ),
    )


def tile_24x24() -> Geometry:
    """SiPM-on-tile Cu/scintillator calorimeter of seed 004 (WGAN aging study)."""
    layer = Layer("Cu", 20.0, "scintillator", 5.0)
    return Geometry(
        name="tile_24x24",
        description="Cu/scintillator SiPM-on-tile: 40 layers of 20 mm Cu + 5 mm scintillator, "
        "24 x 24 tiles of 30 x 30 mm",
        source="seed 004 (WGAN aging); Arratia et al., NIM A 1047 (2023) 167866",
        sections=(
            Section(
                name="hcal",
                layers=(layer,) * 40,
                grid=SquareGrid(24, 24, 30.0),
                stochastic_term=_scaled_stochastic(layer),
                e_over_h=E_OVER_H,
                notes=(
                    "20 mm Cu, 5 mm scintillator, 24 x 24 cells [read, seed 004]",
                    "40 layers [guess: the seed gives no count; 40 layers are 5.5 lambda_I, "
                    "enough to contain the seed's 10 GeV pions]",
                    "30 mm pitch [guess: the CALICE tile size; 72 cm across]",
                    "stochastic term: naive 2.7 % sqrt(d/f) scaled to the AHCAL measurement "
                    "[guess]",
                ),
            ),
        ),
    )


def cusi_module() -> Geometry:
    """Cu/Si test-stand module of seed 002: 50 x 50 x 75 cells of 2 x 2 x 4 cm."""
    layer = Layer("Cu", 39.7, "Si", 0.3)
    return Geometry(
        name="cusi_module",
        description="Cu/Si module: 75 layers of 39.7 mm Cu + 0.3 mm Si, 50 x 50 cells of "
        "20 x 20 mm (187500 cells)",
        source="seed 002 (Akchurin et al.)",
        sections=(
            Section(
                name="hcal",
                layers=(layer,) * 75,
                grid=SquareGrid(50, 50, 20.0),
                stochastic_term=_scaled_stochastic(layer),
                e_over_h=E_OVER_H,
                notes=(
                    "1 x 1 x 3 m, 50 x 50 x 75 cells of 2 x 2 x 4 cm [read, seed 002]",
                    "0.3 mm Si per 40 mm layer, the rest Cu [guess: the seed gives the cell "
                    "depth only; 300 um is the common sensor thickness]",
                    "stochastic term scaled from the AHCAL [guess]",
                ),
            ),
        ),
    )
