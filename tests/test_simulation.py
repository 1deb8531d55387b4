"""The simulation's bookkeeping: beam, reproducibility, MC truth, particles."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
from scipy import stats

from calocoffea.exceptions import SimulationConfigError
from calocoffea.geometry import get_geometry
from calocoffea.showershape import fit_shower_max, longitudinal_profile, sampling_corrected_sum
from calocoffea.simulation import BLOCK_EVENTS, Beam, Simulation, get_particle
from calocoffea.simulation.beam import TRAPEZOID_TOP_OVER_BOTTOM


def run(geometry="cepc_ahcal", particle="e-", beam=None, events=100, seed=1) -> ak.Array:
    beam = beam or Beam.points([20.0])
    sim = Simulation(get_geometry(geometry), get_particle(particle), beam, events, seed)
    return ak.concatenate(list(sim))


def test_energy_points_give_events_per_point_in_order() -> None:
    ev = run(beam=Beam.points([10.0, 30.0]), events=250)
    assert len(ev) == 500
    assert np.all(ev.beam_energy[:250] == 10.0) and np.all(ev.beam_energy[250:] == 30.0)
    assert np.array_equal(ak.to_numpy(ev.event), np.arange(500))


@pytest.mark.parametrize("seed", [1, 2])
def test_flat_and_trapezoid_spectra(seed: int) -> None:
    low, high, n = 1.0, 120.0, 4000
    flat = run(beam=Beam(energy_range_gev=(low, high)), events=n, seed=seed, particle="mu-")
    u = (ak.to_numpy(flat.beam_energy) - low) / (high - low)
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    trap = run(
        beam=Beam(energy_range_gev=(low, high), spectrum="trapezoid"), events=n, seed=seed,
        particle="mu-",
    )  # fmt: skip
    u = (ak.to_numpy(trap.beam_energy) - low) / (high - low)
    s = TRAPEZOID_TOP_OVER_BOTTOM - 1

    def cdf(x: np.ndarray) -> np.ndarray:
        return (x + s * x**2 / 2) / (1 + s / 2)

    assert stats.kstest(u, cdf).pvalue > 1e-3
    # falling density: more events in the lower half
    assert np.mean(u < 0.5) > 0.55


def test_beam_spot_and_uniform_front_face() -> None:
    ev = run(beam=Beam.points([10.0], x_mm=30.0, y_mm=-20.0, size_mm=8.0), events=2000,
             particle="mu-")  # fmt: skip
    x, y = ak.to_numpy(ev.beam_x), ak.to_numpy(ev.beam_y)
    for v, mean in ((x, 30.0), (y, -20.0)):
        assert abs(v.mean() - mean) < 5 * 8.0 / np.sqrt(2000)
        assert abs(v.std() / 8.0 - 1) < 5 / np.sqrt(2 * 2000)
    uni = run(beam=Beam.points([10.0], uniform=True), events=2000, particle="mu-")
    half = 0.5 * 18 * 40.0
    assert np.all(np.abs(ak.to_numpy(uni.beam_x)) <= half)
    assert stats.kstest((ak.to_numpy(uni.beam_x) + half) / (2 * half), "uniform").pvalue > 1e-3


def test_same_seed_same_events_and_blocks_are_independent_of_chunking() -> None:
    g, p, b = get_geometry("cepc_ahcal"), get_particle("e-"), Beam.points([15.0])
    a = Simulation(g, p, b, 2 * BLOCK_EVENTS + 7, seed=3)
    full = ak.concatenate(list(a))
    # block 1 alone is the same as block 1 of the whole run
    assert ak.array_equal(a.block(1), full[BLOCK_EVENTS : 2 * BLOCK_EVENTS])
    again = ak.concatenate(list(Simulation(g, p, b, 2 * BLOCK_EVENTS + 7, seed=3)))
    assert ak.array_equal(full, again)
    other = ak.concatenate(list(Simulation(g, p, b, 2 * BLOCK_EVENTS + 7, seed=4)))
    assert not ak.array_equal(full.hit.energy, other.hit.energy)


@pytest.mark.parametrize(
    ("particle", "fem"), [("e-", 1.0), ("e+", 1.0), ("gamma", 1.0), ("mu-", 0.0)]
)
def test_truth_fields(particle: str, fem: float) -> None:
    ev = run(geometry="calice_siw_ecal_ahcal", particle=particle, events=50)
    assert set(ev.fields) >= {"event", "run", "pdg", "beam_energy", "beam_x", "beam_y",
                              "edep_active", "fem", "fem_ecal", "fem_hcal", "hit"}  # fmt: skip
    assert np.all(ev.pdg == get_particle(particle).pdg)
    assert np.allclose(ak.to_numpy(ev.fem), fem)
    hit_sum = ak.to_numpy(ak.sum(ev.hit.energy, axis=1))
    assert np.allclose(hit_sum, ak.to_numpy(ev.edep_active), rtol=1e-5)
    g = get_geometry("calice_siw_ecal_ahcal")
    assert np.all(g.validate_cellids(ak.to_numpy(ak.flatten(ev.hit.cellid))))
    # hits are unique cells per event
    for cells in ev.hit.cellid[:5]:
        assert len(np.unique(ak.to_numpy(cells))) == len(cells)


def test_pion_truth_per_section() -> None:
    ev = run(geometry="calice_siw_ecal_ahcal", particle="pi-", events=300)
    fem = ak.to_numpy(ev.fem)
    assert np.all((fem >= 0) & (fem <= 1))
    assert 0.1 < fem.mean() < 0.8
    hcal = ak.to_numpy(ev.fem_hcal)
    assert np.nanmax(hcal) <= 1 and np.nanmin(hcal) >= 0


def test_energy_is_conserved_for_contained_electrons() -> None:
    g = get_geometry("cepc_ahcal")
    ev = run(events=500, seed=7)
    e = sampling_corrected_sum(ev, g)
    # 45 X0 deep, 72 cm wide: containment is complete to well below the 1 % resolution of
    # the mean (0.22/sqrt(20)/sqrt(500) = 0.2 %)
    assert abs(e.mean() / 20.0 - 1) < 0.01


def test_photon_showers_start_later_than_electrons() -> None:
    g = get_geometry("calice_siw_ecal_ahcal")
    start, end = g.layer_depth_x0
    t = {}
    for particle in ("e-", "gamma"):
        ev = run(geometry="calice_siw_ecal_ahcal", particle=particle, events=600, seed=5)
        t[particle] = fit_shower_max(start, end, longitudinal_profile(ev, g), last=30)
    # PDG: C = +0.5 for photons, -0.5 for electrons; the conversion length is 9/7 X0
    assert 0.7 < t["gamma"] - t["e-"] < 1.7, t


def test_muons_cross_every_layer_on_the_beam_line() -> None:
    ev = run(particle="mu+", beam=Beam.points([50.0], x_mm=50.0, y_mm=50.0), events=20)
    assert ak.all(ak.num(ev.hit) == 40)
    assert np.allclose(ak.to_numpy(ak.flatten(ev.hit.x)), 60.0)  # centre of the tile


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"energies_gev": (10.0,), "energy_range_gev": (1.0, 2.0)}, "not both"),
        ({}, "not both or neither"),
        ({"energies_gev": (float("nan"),)}, "positive number"),
        ({"energy_range_gev": (5.0, 5.0)}, "LOW < HIGH"),
        ({"energies_gev": (1.0,), "spectrum": "gaussian"}, "valid spectra"),
        ({"energies_gev": (1.0,), "size_mm": -1.0}, ">= 0"),
    ],
)
def test_bad_beam(kwargs: dict, message: str) -> None:
    with pytest.raises(SimulationConfigError, match=message):
        Beam(**kwargs)


def test_bad_event_count_and_seed() -> None:
    g, p, b = get_geometry("cepc_ahcal"), get_particle("e-"), Beam.points([1.0])
    with pytest.raises(SimulationConfigError, match="positive integer"):
        Simulation(g, p, b, 0, 1)
    with pytest.raises(SimulationConfigError, match="seed"):
        Simulation(g, p, b, 10, -1)
