"""Reproduce seed 002's perturbation study on the `sum` reconstruction and record it in README.

Electrons and charged pions at 10, 25, 50, 100, 200 and 400 GeV in `cusi_module` (the
seed's Cu/Si module), the 5 x 8 x 3 grid of Table 1. The seed studies a CNN on pions; the
`sum` of a non-compensating calorimeter is not linear for pions (its EM fraction grows with
energy), so electrons show the linearity of the sum and pions how far it is from it.
The seed's zero suppression, 0.6 MeV, is "roughly the energy
of a single MIP" in its cells; in ours (0.3 mm Si, the sensor thickness we assumed) a MIP
leaves 0.08 MeV, so every MeV value of the seed (threshold, noise scales, biases) is scaled
by MIP_ours / 0.6 MeV: the study keeps the seed's ratios of noise and bias to the threshold.
Prints the per-point fits, the regression of a and b on the scales, and the post-model
correction; writes them with the command, date and machine into README.
Run: ``make reproduce`` (or ``python reproduce/perturbations.py [--events N]``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

from calocoffea.geometry import get_geometry
from calocoffea.methods import reconstruction_method
from calocoffea.report import jsonable
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate
from calocoffea.study import TABLE1, Grid, perturbation_study, regression_lines

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _readme import machine, write_block

GEOMETRY = "cusi_module"
ENERGIES = (10.0, 25.0, 50.0, 100.0, 200.0, 400.0)
SEED_MIP_MEV = 0.6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100, help="showers per energy")
    parser.add_argument("--particles", default="e-,pi+", help="comma-separated particles")
    parser.add_argument("--no-readme", action="store_true", help="print only")
    parser.add_argument("--json", help="also write the full result here")
    args = parser.parse_args()
    geometry = get_geometry(GEOMETRY)
    mip = float(geometry.mip_mpv_mev(3.0)[0])
    scale = mip / SEED_MIP_MEV
    grid = Grid(
        calibration=TABLE1.calibration,
        noise_mev=tuple(round(v * scale, 5) for v in TABLE1.noise_mev),
        bias_mev=tuple(round(v * scale, 5) for v in TABLE1.bias_mev),
    )
    lines = [
        f"Command: `python reproduce/perturbations.py --events {args.events}`; "
        f"{datetime.date.today().isoformat()}, {machine()}.",
        "",
        f"{GEOMETRY}, {', '.join(f'{e:g}' for e in ENERGIES)} GeV ({args.events} each), `sum`; "
        f"MeV values of Table 1 times {scale:.4f} (our MIP {mip:.3f} MeV over the seed's 0.6 "
        f"MeV): zero suppression {SEED_MIP_MEV * scale:.4f} MeV. I = [s_eps + b > threshold]; "
        "s_eps and b in scaled MeV.",
    ]
    results = {}
    for particle in args.particles.split(","):
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as work:
            path = simulate(
                GEOMETRY,
                particle,
                Beam(energies_gev=ENERGIES),
                args.events,
                2002,
                Path(work) / "showers.root",
            )
            result = perturbation_study(
                [path],
                reconstruction_method("sum", GEOMETRY),
                grid=grid,
                zero_suppression_mev=round(SEED_MIP_MEV * scale, 5),
                seed=2002,
            )
        results[particle] = result
        s = result["summary"]
        lines += [
            "",
            f"**{particle}** ({time.perf_counter() - start:.0f} s):",
            "",
            f"- linear fits E_hat = a E + b over {s['points']} grid points: chi2/ndf median "
            f"{s['median_chi2_ndf']:.2f}, max {s['max_chi2_ndf']:.2f}",
            f"- mean response after the post-model correction (each point's a, b): within "
            f"{100 * s['max_corrected_response_deviation']:.2f} % of 1; with the regressed a, b:"
            f" within {100 * s['max_regressed_response_deviation']:.2f} %",
            f"- within 1 % of 1 at {s['points_within_1_percent']} of {s['points']} points; the "
            f"largest deviation in units of its statistical error: "
            f"{s['max_corrected_response_pull']:.2f} (largest error "
            f"{100 * s['max_corrected_response_error']:.2f} %, where noise hits carry most "
            "of the energy)",
            "",
            "```",
            *regression_lines(result["regression"]["a"], "a"),
            *regression_lines(result["regression"]["b_gev"], "b [GeV]"),
            "```",
        ]
        for r in result["rows"]:
            print(
                f"{particle} {r['calibration']:5.2f} {r['noise_mev']:7.4f} {r['bias_mev']:7.4f} "
                f"a={r['a']:.4f} b={r['b_gev']:9.3f} chi2/ndf={r['chi2_ndf']:6.2f} "
                f"corr={r['corrected_response']:.4f}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(jsonable(results), indent=2))
    print("\n".join(lines))
    if not args.no_readme:
        write_block("perturbations", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
