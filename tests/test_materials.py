"""Tests of calocoffea.materials: mixture rules, MIP most probable values, GFlash check value.

Reference numbers are the [computed] tables of PHYSICS.md; the tolerances are the rounding
of those tables (2 %), not statistics (nothing here is random).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from calocoffea.exceptions import GeometryError
from calocoffea.materials import (
    MATERIALS,
    landau_mpv_mev,
    landau_width_mev,
    material,
    mixture,
)
from calocoffea.simulation.showers import gflash_longitudinal

REL = 0.02

# (slabs (material, mm), active index, expected {property: value}) from PHYSICS.md's
# structure table; lengths in cm, critical energy in MeV.
STRUCTURES = {
    "20mm_Fe_3mm_polystyrene": (
        [("Fe", 20.0), ("polystyrene", 3.0)],
        1,
        {"x0_cm": 2.01, "rm_cm": 1.92, "ec_mev": 22.1, "lambda_cm": 18.7},
    ),
    "2.1mm_W_0.5mm_Si": (
        [("W", 2.1), ("Si", 0.5)],
        1,
        {"x0_cm": 0.43, "rm_cm": 1.10, "ec_mev": 8.25, "lambda_cm": 11.7},
    ),
    "6.05mm_Pb_0.32mm_Si_3mm_air": (
        [("Pb", 6.05), ("Si", 0.32), ("air", 3.0)],
        1,
        {"x0_cm": 0.87, "rm_cm": 2.44, "ec_mev": 7.5},
    ),
    "20mm_Cu_3mm_polystyrene": (
        [("Cu", 20.0), ("polystyrene", 3.0)],
        1,
        {"x0_cm": 1.64, "rm_cm": 1.76, "ec_mev": 19.8, "lambda_cm": 17.1},
    ),
}


def _mix(slabs: list[tuple[str, float]], active: int):
    return mixture([(material(name), mm) for name, mm in slabs], active)


@pytest.mark.parametrize("structure", list(STRUCTURES))
def test_mixture_reproduces_physics_table(structure: str) -> None:
    slabs, active, expected = STRUCTURES[structure]
    m = _mix(slabs, active)
    found = {
        "x0_cm": m.x0_mm / 10.0,
        "rm_cm": m.moliere_radius_mm / 10.0,
        "ec_mev": m.critical_energy,
        "lambda_cm": m.lambda_i_mm / 10.0,
    }
    for key, value in expected.items():
        assert found[key] == pytest.approx(value, rel=REL), (structure, key, found[key])


def test_mixture_bookkeeping() -> None:
    """Thickness and mean density add up; Ec = E_s X0 / R_M; 0 < sampling fraction < 1."""
    m = _mix([("Fe", 20.0), ("polystyrene", 3.0)], 1)
    assert m.thickness_mm == pytest.approx(23.0)
    fe, ps = material("Fe"), material("polystyrene")
    assert m.density == pytest.approx((fe.density * 20.0 + ps.density * 3.0) / 23.0)
    assert m.critical_energy == pytest.approx(21.2052 * m.x0_mm / m.moliere_radius_mm)
    assert 0.0 < m.mip_sampling_fraction < 1.0
    assert ps.z < m.z < fe.z  # mass-weighted Z lies between the components


def test_single_slab_mixture_is_the_material() -> None:
    for name in ("Fe", "W", "Si"):
        mat = material(name)
        m = _mix([(name, 5.0)], 0)
        assert m.x0_mm == pytest.approx(mat.x0_mm)
        assert m.lambda_i_mm == pytest.approx(mat.lambda_i_mm)
        assert m.critical_energy == pytest.approx(mat.critical_energy)
        assert m.mip_sampling_fraction == pytest.approx(1.0)


def test_mixture_without_material_raises() -> None:
    with pytest.raises(GeometryError, match="positive thicknesses"):
        _mix([("Fe", 0.0), ("Si", 0.0)], 1)


@pytest.mark.parametrize(
    ("name", "thickness_mm", "expected_mev"),
    [
        ("polystyrene", 3.0, 0.474),  # PHYSICS.md [computed]
        ("Si", 0.32, 0.089),  # "88-90 keV"
        ("Si", 0.5, 0.145),
    ],
)
@pytest.mark.parametrize("beta_gamma", [100.0, 1.0e4])
def test_landau_mpv(name: str, thickness_mm: float, expected_mev: float, beta_gamma: float) -> None:
    mpv = landau_mpv_mev(material(name), thickness_mm, beta_gamma)
    assert mpv == pytest.approx(expected_mev, rel=REL)


def test_landau_mpv_scintillator_near_cepc_value() -> None:
    """Polyvinyltoluene, 3 mm, 10 GeV muon: 0.465 MeV computed, CEPC quotes 0.461 MeV."""
    muon_bg = 10.0 / 0.10566
    assert landau_mpv_mev(material("scintillator"), 3.0, muon_bg) == pytest.approx(0.461, rel=REL)


def test_landau_mpv_reaches_fermi_plateau_and_scales_sublinearly() -> None:
    si = material("Si")
    plateau = [landau_mpv_mev(si, 0.32, bg) for bg in (1e3, 1e4, 1e5)]
    assert max(plateau) - min(plateau) < 1e-3 * plateau[0]
    # MPV per unit thickness grows with thickness (the ln(xi/I) term)
    thin, thick = landau_mpv_mev(si, 0.3, 1e3), landau_mpv_mev(si, 0.6, 1e3)
    assert 2.0 * thin < thick < 2.2 * thin


def test_landau_width_is_linear_in_thickness() -> None:
    ps = material("polystyrene")
    assert landau_width_mev(ps, 6.0) == pytest.approx(2.0 * landau_width_mev(ps, 3.0))
    # xi = 0.1535 <Z/A> rho x[cm]
    assert landau_width_mev(ps, 3.0) == pytest.approx(0.153537 * 0.53768 * 1.060 * 0.3)


def test_unknown_material_lists_known_ones() -> None:
    with pytest.raises(GeometryError) as info:
        material("unobtainium")
    message = str(info.value)
    assert "unobtainium" in message
    for name in MATERIALS:
        assert name in message


def test_unknown_material_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="known materials"):
        material("steel")


def test_gflash_check_value_fe_polystyrene() -> None:
    """PHYSICS.md check: 10 GeV e- in 20 mm Fe + 3 mm polystyrene, T_sam 4.6 X0, alpha 3.6."""
    fe, ps = material("Fe"), material("polystyrene")
    m = mixture([(fe, 20.0), (ps, 3.0)], 1)
    fs = m.x0_mm / (20.0 + 3.0)
    e_hat = 1.0 / (1.0 + 0.007 * (fe.z - ps.z))
    mu_t, s_t, mu_a, s_a = gflash_longitudinal(np.array([10.0]), m.critical_energy, m.z, fs, e_hat)
    assert float(np.exp(mu_t[0])) == pytest.approx(4.6, rel=0.03)
    assert float(np.exp(mu_a[0])) == pytest.approx(3.6, rel=0.03)
    # homogeneous T before the sampling corrections: ln y - 0.812 = 5.3
    t_hom = math.log(10_000.0 / m.critical_energy) - 0.812
    assert t_hom == pytest.approx(5.3, rel=0.03)
    # widths follow 1/(-2.5 + 1.25 ln y), 1/(-0.82 + 0.79 ln y), both within the 0.5 clamp
    ln_y = math.log(10_000.0 / m.critical_energy)
    assert float(s_t[0]) == pytest.approx(1.0 / (-2.5 + 1.25 * ln_y))
    assert float(s_a[0]) == pytest.approx(1.0 / (-0.82 + 0.79 * ln_y))
