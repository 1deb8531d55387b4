"""Physics of the fast simulation against its parametrisations and beam-test values.

Sample sizes are chosen so that the statistical error of each asserted number is well
inside its tolerance (the tolerances come from the issue; the seeds are varied).
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from calocoffea import fitting
from calocoffea.geometry import get_geometry
from calocoffea.showershape import (
    containment_radius,
    fit_shower_max,
    gflash_expected_profile,
    longitudinal_profile,
    sampling_corrected_sum,
)
from calocoffea.simulation import Beam, Simulation, get_particle, showers


def simulate(geometry: str, particle: str, energies, events: int, seed: int, **spot) -> ak.Array:
    sim = Simulation(
        get_geometry(geometry), get_particle(particle), Beam.points(energies, **spot), events, seed
    )
    return ak.concatenate(list(sim))


def section_layers(geometry: str, index: int = 0) -> slice:
    g = get_geometry(geometry)
    sel = np.flatnonzero(g.layer_section == index)
    return slice(int(sel[0]), int(sel[-1]) + 1)


@pytest.mark.parametrize("geometry", ["cepc_ahcal", "calice_siw_ecal_ahcal"])
@pytest.mark.parametrize("seed", [11, 12])
def test_shower_maximum_follows_gflash(geometry: str, seed: int) -> None:
    g = get_geometry(geometry)
    start, end = g.layer_depth_x0
    layers = section_layers(geometry)
    energies = [10.0, 30.0, 100.0]
    t_sim, t_exp = [], []
    for e in energies:
        ev = simulate(geometry, "e-", [e], 300, seed)
        t_sim.append(fit_shower_max(start, end, longitudinal_profile(ev, g), last=layers.stop))
        expected, _ = gflash_expected_profile(g, e, 40_000, seed)
        t_exp.append(fit_shower_max(start, end, expected, last=layers.stop))
    # 300 showers give a statistical error of about 0.05 X0 on the fitted maximum
    assert np.allclose(t_sim, t_exp, atol=0.3), (t_sim, t_exp)
    slope = np.polyfit(np.log(energies), t_sim, 1)[0]
    assert 0.8 <= slope <= 1.2
    # the PDG estimate ln(E/Ec) - 0.5 lies about 1 X0 deeper for these sampling structures
    ec = g.layers[0].medium.critical_energy
    offset = np.array(t_sim) - (np.log(np.array(energies) * 1000 / ec) - 0.5)
    assert np.all((offset > -1.6) & (offset < -0.4)), offset


@pytest.mark.parametrize("seed", [21, 22])
def test_transverse_containment_on_5mm_cells(seed: int) -> None:
    geometry = "calice_siw_ecal_ahcal"
    rm = get_geometry(geometry).layers[0].medium.moliere_radius_mm
    for e in (10.0, 30.0):
        # a realistic beam spot; with the beam on a cell corner cell centres bias R90 low
        ev = simulate(geometry, "e-", [e], 300, seed, size_mm=5.0)
        r90 = containment_radius(ev, 0.9, layers=section_layers(geometry))
        assert 0.8 <= r90 / rm <= 1.6, r90 / rm


def resolution_scan(geometry: str, energies, events: int, seed: int, section: int = 0):
    g = get_geometry(geometry)
    samples = (
        sampling_corrected_sum(simulate(geometry, "e-", [e], events, seed), g, section=section)
        for e in energies
    )
    scan = fitting.energy_scan(energies, samples)
    return scan.resolution, scan.linearity


@pytest.mark.parametrize("seed", [31, 32])
def test_ahcal_electron_resolution_and_linearity(seed: int) -> None:
    res, lin = resolution_scan("cepc_ahcal", [10, 20, 40, 60, 90, 120], 600, seed)
    # 600 events per point: a known to about +-0.006, c to about +-0.005
    assert 0.19 <= res.values["a"] <= 0.25, res
    assert res.values["c"] <= 0.02, res
    assert lin.max_deviation <= 0.01, lin


@pytest.mark.parametrize("seed", [41, 42])
def test_siw_ecal_electron_resolution(seed: int) -> None:
    res, lin = resolution_scan("calice_siw_ecal_ahcal", [6, 10, 15, 20, 30, 45], 1000, seed)
    assert 0.14 <= res.values["a"] <= 0.19, res
    assert lin.max_deviation <= 0.01, lin


@pytest.mark.parametrize("seed", [51, 52])
def test_muon_mip_peak(seed: int) -> None:
    ev = simulate("cepc_ahcal", "mu-", [10.0], 500, seed)
    assert ak.all(ak.num(ev.hit) == 40)  # one hit per layer
    deposits = ak.to_numpy(ak.flatten(ev.hit.energy)).astype(np.float64)
    # most probable value from a Landau fit to 0.5-3 MPV (20000 deposits: +-0.3 %)
    mpv = fitting.landau_mpv(deposits)
    assert abs(mpv.value / 0.461 - 1) < 0.03, mpv
    # Landau tail: the mean sits well above the peak and a few % are beyond 3 MPV
    assert deposits.mean() > 1.15 * mpv.value
    assert 0.01 < np.mean(deposits > 3 * mpv.value) < 0.15


@pytest.mark.parametrize("energy", [5.0, 20.0, 80.0])
def test_fem_sampler_matches_parametrisation(energy: float) -> None:
    rng = np.random.default_rng(int(energy))
    n = 40_000
    f = showers.sample_fem(rng, np.full(n, energy))
    mean, sigma = showers.fem_mean(energy), showers.fem_sigma(energy)
    assert np.all((f >= 0) & (f <= 1))
    assert abs(f.mean() - mean) < 5 * sigma / np.sqrt(n)
    assert abs(f.std() / sigma - 1) < 5 / np.sqrt(2 * n)


def test_e_over_pi_parametrisation() -> None:
    # e/pi = 1/(<f_em> + (1 - <f_em>) h/e): 1 for e/h = 1, rising towards e/h at low energy
    e = np.array([2.0, 10.0, 100.0, 1000.0])
    assert np.allclose(showers.e_over_pi(e, 1.0), 1.0)
    r = showers.e_over_pi(e, 1.3)
    assert np.all(np.diff(r) < 0) and np.all((r > 1) & (r < 1.3))


@pytest.mark.parametrize("energy", [10.0, 40.0])
def test_pion_response_follows_e_over_pi(energy: float) -> None:
    # the Cu/Si module is 19 lambda_I deep and 3 lambda_I wide: leakage is small, so the
    # pion/electron response ratio follows the e/h model; MIP track and leakage account
    # for the few % left
    g = get_geometry("cusi_module")
    pions = simulate("cusi_module", "pi+", [energy], 400, 7)
    electrons = simulate("cusi_module", "e-", [energy], 200, 7)
    ratio = np.mean(electrons.edep_active) / np.mean(pions.edep_active)
    expected = showers.e_over_pi(energy, g.sections[0].e_over_h)
    error = ratio * np.std(pions.edep_active) / np.mean(pions.edep_active) / np.sqrt(400)
    assert abs(ratio - expected) < 0.04 * expected + 4 * error, (ratio, expected)
    fem = ak.to_numpy(pions.fem)
    assert abs(np.mean(fem) - showers.fem_mean(energy)) < 0.05
