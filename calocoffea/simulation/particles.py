"""Particles the fast simulation knows: name, PDG id, mass and shower type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from calocoffea.exceptions import SimulationConfigError

ShowerType = Literal["em", "hadron", "muon"]


@dataclass(frozen=True)
class Particle:
    name: str
    pdg: int
    mass_gev: float
    shower: ShowerType

    def beta_gamma(self, energy_gev: float) -> float:
        """beta gamma = p/m for a particle of total energy ``energy_gev``."""
        if self.mass_gev == 0:
            return float("inf")
        p = max(energy_gev**2 - self.mass_gev**2, 0.0) ** 0.5
        return p / self.mass_gev


PARTICLES: dict[str, Particle] = {
    p.name: p
    for p in (
        Particle("e-", 11, 0.000511, "em"),
        Particle("e+", -11, 0.000511, "em"),
        Particle("gamma", 22, 0.0, "em"),
        Particle("pi+", 211, 0.13957, "hadron"),
        Particle("pi-", -211, 0.13957, "hadron"),
        Particle("mu-", 13, 0.10566, "muon"),
        Particle("mu+", -13, 0.10566, "muon"),
    )
}
ALIASES = {
    "electron": "e-",
    "positron": "e+",
    "photon": "gamma",
    "pion": "pi+",
    "muon": "mu-",
    "pi": "pi+",
    "mu": "mu-",
}


def get_particle(name: str) -> Particle:
    """A particle by name (``e-``, ``gamma``, ``pi+``, ``mu-``...); the error lists them."""
    key = ALIASES.get(name, name)
    try:
        return PARTICLES[key]
    except KeyError:
        raise SimulationConfigError(
            f"unknown particle {name!r}; valid particles: {', '.join(PARTICLES)} "
            f"(aliases: {', '.join(ALIASES)})"
        ) from None
