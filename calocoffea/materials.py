"""Materials and the mixture rules that turn a layer into an effective medium.

What to use when:

- :data:`MATERIALS` / :func:`material` -- the properties of one pure material.
- :func:`mixture` -- the effective radiation length, Moliere radius, critical energy,
  nuclear interaction length and MIP sampling fraction of a stack of slabs (a layer).
- :func:`landau_mpv_mev` / :func:`landau_width_mev` -- the most probable energy loss of a
  minimum ionising particle in a thin active layer and the Landau width, from the
  Landau-Vavilov-Bichsel formula (PDG review "Passage of particles through matter",
  eq. 34.12), used for muons and for hadron tracks before their first interaction.

Values are the PDG "Atomic and nuclear properties of materials" tables [memory: standard
values not re-read here]; PHYSICS.md holds the summary and the computed checks
(20 mm Fe + 3 mm polystyrene: X0 = 2.01 cm, R_M = 1.92 cm, Ec = 22.1 MeV).
Units: densities g/cm3, X0 and lambda_I in g/cm2, energies MeV, excitation energies eV.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from calocoffea.exceptions import GeometryError

#: Electron mass [MeV] and the Bethe constant K/2 = 2 pi N_A r_e^2 m_e c^2 / 2 [MeV cm2/mol].
ELECTRON_MASS_MEV = 0.51099895
HALF_K_MEV_CM2_PER_MOL = 0.153537
#: Scale energy of the Moliere radius, E_s = m_e c^2 sqrt(4 pi / alpha) [MeV].
ES_MEV = 21.2052


@dataclass(frozen=True)
class Material:
    """A pure material (or a compound with effective Z) and its PDG properties."""

    name: str
    z: float  # (effective, mass-weighted) atomic number
    z_over_a: float  # <Z/A> [mol/g]
    density: float  # [g/cm3]
    x0: float  # radiation length [g/cm2]
    lambda_i: float  # nuclear interaction length [g/cm2]
    dedx_min: float  # minimum ionisation [MeV cm2/g]
    critical_energy: float  # Rossi critical energy for electrons [MeV]
    mean_excitation_ev: float  # I [eV]
    plasma_energy_ev: float  # hbar omega_p [eV], sets the density effect

    @property
    def x0_mm(self) -> float:
        return 10.0 * self.x0 / self.density

    @property
    def lambda_i_mm(self) -> float:
        return 10.0 * self.lambda_i / self.density


# PDG atomic and nuclear properties [memory]. Scintillator is polyvinyltoluene (BC-408,
# EJ-200 class), the base of the CALICE and CEPC AHCAL tiles.
MATERIALS: dict[str, Material] = {
    m.name: m
    for m in (
        Material("Fe", 26, 0.46557, 7.874, 13.84, 132.1, 1.451, 21.68, 286.0, 55.17),
        Material("W", 74, 0.40252, 19.30, 6.76, 191.9, 1.145, 7.97, 727.0, 80.32),
        Material("Pb", 82, 0.39575, 11.35, 6.37, 199.6, 1.122, 7.43, 823.0, 61.07),
        Material("Cu", 29, 0.45636, 8.96, 12.86, 137.3, 1.403, 19.42, 322.0, 58.27),
        Material("Si", 14, 0.49848, 2.329, 21.82, 108.4, 1.664, 40.19, 173.0, 31.05),
        Material("polystyrene", 5.61, 0.53768, 1.060, 43.79, 81.7, 1.936, 93.11, 68.7, 21.75),
        Material("scintillator", 5.58, 0.54141, 1.032, 43.90, 81.3, 1.956, 94.11, 64.7, 21.54),
        Material("air", 7.31, 0.49919, 0.001205, 36.62, 90.1, 1.815, 87.92, 85.7, 0.71),
    )
}


def material(name: str) -> Material:
    """The material called ``name``; the error lists the known ones."""
    try:
        return MATERIALS[name]
    except KeyError:
        raise GeometryError(
            f"unknown material {name!r}; known materials: {', '.join(sorted(MATERIALS))}. "
            "Add it to calocoffea.materials.MATERIALS with its PDG properties."
        ) from None


@dataclass(frozen=True)
class Mixture:
    """Effective properties of slabs traversed in sequence (mass-fraction rules)."""

    thickness_mm: float
    density: float  # mean density [g/cm3]
    z: float  # mass-weighted Z
    x0_mm: float
    moliere_radius_mm: float
    critical_energy: float  # [MeV]
    lambda_i_mm: float
    mip_sampling_fraction: float  # MIP deposit in the active slab / in the whole layer


def mixture(slabs: Sequence[tuple[Material, float]], active: int) -> Mixture:
    """Mix slabs ``(material, thickness_mm)``; ``active`` is the index of the sensitive slab.

    1/X0 = sum w/X0_j, 1/R_M = (1/E_s) sum w Ec_j/X0_j (so Ec = E_s X0 / R_M),
    1/lambda = sum w/lambda_j, all by mass fraction w (PDG; PHYSICS.md).
    """
    areal = [m.density * t / 10.0 for m, t in slabs]  # g/cm2
    total = sum(areal)
    thickness = sum(t for _, t in slabs)
    if total <= 0 or thickness <= 0:
        raise GeometryError(f"layer {slabs!r} has no material; give positive thicknesses")
    w = [a / total for a in areal]
    inv_x0 = sum(wi / m.x0 for wi, (m, _) in zip(w, slabs, strict=True))
    inv_rm = sum(wi * m.critical_energy / m.x0 for wi, (m, _) in zip(w, slabs, strict=True))
    inv_rm /= ES_MEV
    inv_lambda = sum(wi / m.lambda_i for wi, (m, _) in zip(w, slabs, strict=True))
    density = total / (thickness / 10.0)
    mip = [a * m.dedx_min for a, (m, _) in zip(areal, slabs, strict=True)]
    x0 = 1.0 / inv_x0
    return Mixture(
        thickness_mm=thickness,
        density=density,
        z=sum(wi * m.z for wi, (m, _) in zip(w, slabs, strict=True)),
        x0_mm=10.0 * x0 / density,
        moliere_radius_mm=10.0 / inv_rm / density,
        critical_energy=ES_MEV * inv_rm * x0,
        lambda_i_mm=10.0 / inv_lambda / density,
        mip_sampling_fraction=mip[active] / sum(mip),
    )


def landau_width_mev(mat: Material, thickness_mm: float, beta: float = 1.0) -> float:
    """Landau width xi = (K/2) <Z/A> x / beta^2 [MeV] for a slab of ``thickness_mm``."""
    return HALF_K_MEV_CM2_PER_MOL * mat.z_over_a * mat.density * thickness_mm / 10.0 / beta**2


def landau_mpv_mev(mat: Material, thickness_mm: float, beta_gamma: float) -> float:
    """Most probable energy loss [MeV] of a unit-charge particle (PDG eq. 34.12).

    Delta_p = xi [ln(2 m c^2 (beta gamma)^2 / I) + ln(xi / I) + j - beta^2 - delta],
    j = 0.200, with the high-energy density effect delta = 2 ln(hbar w_p / I) + 2 ln(bg) - 1
    (floored at 0). 3 mm polyvinyltoluene gives 0.465 MeV for a 10 GeV muon (CEPC quotes
    0.461 MeV); 320 um silicon gives 0.090 MeV.
    """
    beta2 = beta_gamma**2 / (1.0 + beta_gamma**2)
    xi = landau_width_mev(mat, thickness_mm, math.sqrt(beta2))
    i_mev = mat.mean_excitation_ev * 1e-6
    delta = max(
        0.0,
        2.0 * math.log(mat.plasma_energy_ev / mat.mean_excitation_ev)
        + 2.0 * math.log(beta_gamma)
        - 1.0,
    )
    return xi * (
        math.log(2.0 * ELECTRON_MASS_MEV * beta_gamma**2 / i_mev)
        + math.log(xi / i_mev)
        + 0.200
        - beta2
        - delta
    )
