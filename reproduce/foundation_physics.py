"""Reproduce the foundation's physics numbers on full samples and record them in README.

Prints, for the fast simulation: the depth of shower maximum against GFlash and PDG,
the 90 % containment radius on the 5 mm Si-W ECAL cells, the electron resolution and
linearity of the plain active-energy sum (cepc_ahcal 10-120 GeV, Si-W ECAL 6-45 GeV), the
muon MIP peak, and the pion resolution and e/pi of the plain sum beside the CALICE values.
Run: ``make reproduce`` (or ``python reproduce/foundation_physics.py [--events N]``).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import awkward as ak
import numpy as np

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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _readme import machine, write_block


def simulate(geometry: str, particle: str, energy: float, events: int, seed: int, **spot):
    sim = Simulation(get_geometry(geometry), get_particle(particle),
                     Beam.points([energy], **spot), events, seed)  # fmt: skip
    return ak.concatenate(list(sim))


def section_sum(ev: ak.Array, geometry: str, section: int) -> np.ndarray:
    return sampling_corrected_sum(ev, get_geometry(geometry), section=section)


def shower_max(lines: list[str], events: int) -> None:
    lines.append(
        "| geometry | E [GeV] | t_max sim [X0] | GFlash [X0] | PDG ln(E/Ec)-0.5 | offset |"
    )
    lines.append("|---|---|---|---|---|---|")
    for name in ("cepc_ahcal", "calice_siw_ecal_ahcal"):
        g = get_geometry(name)
        start, end = g.layer_depth_x0
        last = len(g.sections[0].layers)
        ec = g.layers[0].medium.critical_energy
        for e in (10.0, 30.0, 100.0):
            ev = simulate(name, "e-", e, events, 1)
            sim = fit_shower_max(start, end, longitudinal_profile(ev, g), last=last)
            exp = fit_shower_max(start, end, gflash_expected_profile(g, e)[0], last=last)
            pdg = np.log(e * 1000 / ec) - 0.5
            lines.append(
                f"| {name} | {e:g} | {sim:.2f} | {exp:.2f} | {pdg:.2f} | {sim - pdg:+.2f} |"
            )


def containment(lines: list[str], events: int) -> None:
    name = "calice_siw_ecal_ahcal"
    rm = get_geometry(name).layers[0].medium.moliere_radius_mm
    for e in (10.0, 30.0, 100.0):
        ev = simulate(name, "e-", e, events, 2, size_mm=5.0)
        r90 = containment_radius(ev, 0.9, layers=slice(0, 30))
        lines.append(
            f"- Si-W ECAL, {e:g} GeV e-, 5 mm beam spot: R90 = {r90:.1f} mm = {r90 / rm:.2f} R_M"
        )


def electron_resolution(lines: list[str], events: int) -> None:
    for name, energies, section, ref in (
        ("cepc_ahcal", [10, 20, 30, 50, 80, 100, 120], 0, "CALICE AHCAL ~21.9 %/sqrt(E) (+) ~1 %"),
        (
            "calice_siw_ecal_ahcal",
            [6, 10, 15, 20, 30, 45],
            0,
            "CALICE Si-W ECAL 16.6 %/sqrt(E) (+) 1.1 %",
        ),
    ):
        samples = (
            section_sum(simulate(name, "e-", float(e), events, 3), name, section) for e in energies
        )
        scan = fitting.energy_scan(energies, samples)
        r, lin = scan.resolution, scan.linearity
        lines.append(
            f"- {name} electrons {energies[0]}-{energies[-1]} GeV, sum of active energy: "
            f"a = {r.values['a']:.3f} +- {r.errors['a']:.3f}, c = {r.values['c']:.4f} +- "
            f"{r.errors['c']:.4f} (chi2/ndf {r.chi2:.1f}/{r.ndf}); max deviation from linear "
            f"{100 * lin.max_deviation:.2f} % (reference: {ref})"
        )


def muons(lines: list[str], events: int) -> None:
    ev = simulate("cepc_ahcal", "mu-", 10.0, events, 4)
    deposits = ak.to_numpy(ak.flatten(ev.hit.energy)).astype(np.float64)
    mpv = fitting.landau_mpv(deposits)
    lines.append(
        f"- muons 10 GeV, cepc_ahcal: per-layer MPV {mpv.value:.4f} +- {mpv.error:.4f} MeV "
        f"({100 * (mpv.value / 0.461 - 1):+.1f} % from CEPC's 0.461 MeV); mean/MPV "
        f"{deposits.mean() / mpv.value:.2f}"
    )


def pions(lines: list[str], events: int) -> None:
    name = "cepc_ahcal"
    lines.append(
        "| E [GeV] | pion sigma/E (Gaussian core) | 58 %/sqrt(E) (CALICE) | e/pi sim "
        "| e/pi model, no leakage |"
    )
    lines.append("|---|---|---|---|---|")
    energies = [10.0, 20.0, 40.0, 80.0]
    pion = fitting.energy_scan(
        energies, (ak.to_numpy(simulate(name, "pi+", e, events, 5).edep_active) for e in energies)
    )
    electron = fitting.energy_scan(
        energies,
        (ak.to_numpy(simulate(name, "e-", e, events // 2, 5).edep_active) for e in energies),
    )
    for e, res, core_pi, core_e in zip(
        energies, pion.sigma_over_e, pion.cores, electron.cores, strict=True
    ):
        ratio = core_e.values["mean"] / core_pi.values["mean"]
        lines.append(
            f"| {e:g} | {res:.3f} | {0.58 / np.sqrt(e):.3f} "
            f"| {ratio:.3f} | {showers.e_over_pi(e, 1.3):.3f} |"
        )
    r = pion.resolution
    lines.append("")
    lines.append(
        f"- pions, plain sum in cepc_ahcal: a = {r.values['a']:.3f} +- {r.errors['a']:.3f}, "
        f"c = {r.values['c']:.3f} +- {r.errors['c']:.3f} (CALICE AHCAL: about 0.58, and "
        "0.45 with software compensation; PHYSICS.md)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000, help="events per energy point")
    parser.add_argument("--no-readme", action="store_true", help="print only")
    args = parser.parse_args()
    lines = [
        f"Command: `python reproduce/foundation_physics.py --events {args.events}`; "
        f"{datetime.date.today().isoformat()}, {machine()}.",
        "",
    ]
    shower_max(lines, args.events)
    lines.append("")
    containment(lines, args.events)
    electron_resolution(lines, args.events)
    muons(lines, args.events)
    lines.append("")
    pions(lines, args.events)
    text = "\n".join(lines)
    print(text)
    if not args.no_readme:
        write_block("foundation", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
