"""`calocoffea study perturbations`: seed 002's response study of a reconstruction under
miscalibration, noise and bias, with its post-model correction (calocoffea.study)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from calocoffea.cli.executor import add_force_option


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "study", help="response studies of reconstruction methods", description=__doc__
    )
    group = p.add_subparsers(dest="study_command", required=True, metavar="WHAT")
    per = group.add_parser(
        "perturbations",
        help="response E_hat = a E + b under seed 002's grid of miscalibration, noise, bias",
        description="Apply every point of the grid (seed 002 Table 1 by default) to simulated "
        "showers at 3 or more beam energies, fit E_hat = a E + b per point, regress a and b on "
        "the scales (eq. 2.1-2.2 form) and write the table, the regression and the post-model "
        "correction (a, b per point) as JSON, and the plot of a and b beside it (PNG, PDF).",
    )
    per.add_argument("files", nargs="+", metavar="IN", help="simulated files (stage sim)")
    per.add_argument("--method", "-m", default="sum", help="reconstruction (default: sum)")
    per.add_argument("--grid", choices=("table1", "small"), default="table1", help="scan grid")
    per.add_argument(
        "--zero-suppression-mev", type=float, default=0.6, help="threshold [MeV] (seed 002: 0.6)"
    )
    per.add_argument("--seed", type=int, default=1, help="seed of the perturbations")
    per.add_argument("--output", "-o", required=True, help="output JSON")
    add_force_option(per)
    per.set_defaults(handler=run_perturbations)


def run_perturbations(args: argparse.Namespace) -> int:
    from calocoffea import registry
    from calocoffea.cli.executor import output_path
    from calocoffea.io import atomic_write, read_metadata
    from calocoffea.methods import reconstruction_method
    from calocoffea.report import jsonable
    from calocoffea.study import GRIDS, perturbation_study, regression_lines

    registry.load("reconstructions", args.method)  # an unknown name lists the installed ones
    target = output_path(args.output, args.force)
    geometry = read_metadata(args.files[0]).geometry
    method = reconstruction_method(args.method, geometry)

    def progress(done: int, total: int, row: dict[str, Any]) -> None:
        if sys.stderr.isatty():
            print(f"\r  grid point {done}/{total}", end="", file=sys.stderr, flush=True)

    result = perturbation_study(
        args.files,
        method,
        grid=GRIDS[args.grid],
        zero_suppression_mev=args.zero_suppression_mev,
        seed=args.seed,
        progress=progress,
    )
    with atomic_write(target) as temporary:
        temporary.write_text(json.dumps(jsonable(result), indent=2))
    from calocoffea import plotting

    figure = plotting.save(plotting.perturbation_figure(result["rows"]), target.parent, target.stem)
    print(
        f"\n{'s_c':>5} {'s_eps':>6} {'b':>6} {'a':>8} {'b0 [GeV]':>10} {'chi2/ndf':>9} "
        f"{'corrected':>10}"
    )
    for r in result["rows"]:
        print(
            f"{r['calibration']:5.2f} {r['noise_mev']:6.2f} {r['bias_mev']:6.2f} {r['a']:8.4f} "
            f"{r['b_gev']:10.3f} {r['chi2_ndf']:9.2f} {r['corrected_response']:10.4f}"
        )
    print("\n".join(regression_lines(result["regression"]["a"], "a")))
    print("\n".join(regression_lines(result["regression"]["b_gev"], "b0 [GeV]")))
    s = result["summary"]
    print(
        f"{s['points']} grid points, chi2/ndf of the linear fits: median "
        f"{s['median_chi2_ndf']:.2f}, max {s['max_chi2_ndf']:.2f}; mean response after the "
        "post-model correction within "
        f"{100 * s['max_corrected_response_deviation']:.2f} % of 1 (with the regressed a, b: "
        f"{100 * s['max_regressed_response_deviation']:.2f} %); within 1 % at "
        f"{s['points_within_1_percent']} points, largest |corrected - 1| / error "
        f"{s['max_corrected_response_pull']:.2f}"
    )
    print(f"wrote {target} and {figure['png']} (+ PDF)")
    return 0
