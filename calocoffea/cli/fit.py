"""`calocoffea fit`: resolution and linearity of a beam-energy scan."""

from __future__ import annotations

import argparse
from typing import Any

from calocoffea.cli.executor import add_executor_options, add_force_option, run_options


def add_parser(sub: Any) -> None:
    p = sub.add_parser("fit", help="fit resolution and linearity", description=__doc__)
    group = p.add_subparsers(dest="fit_command", required=True, metavar="WHAT")
    res = group.add_parser(
        "resolution",
        help="sigma/E = a/sqrt(E) (+) c and linearity of calibrated files",
        description="Reconstruct one energy per event (--method, default: the calibrated "
        "sum), fit the Gaussian core at every beam energy, then sigma/E = a/sqrt(E) (+) c and "
        "a straight line over the energies where fewer than 1 %% of the events have a "
        "clipped hit; write them as JSON.",
    )
    res.add_argument("files", nargs="+", metavar="IN", help="calibrated ROOT files (stage gev)")
    res.add_argument("--method", "-m", default="sum", help="reconstruction (default: sum)")
    res.add_argument(
        "--option", action="append", metavar="KEY=VALUE", help="a reconstruction option"
    )
    res.add_argument(
        "--max-clipped-fraction",
        type=float,
        default=0.01,
        help="leave out energies with at least this fraction of events with a clipped hit",
    )
    res.add_argument("--output", "-o", required=True, help="output JSON")
    add_force_option(res)
    add_executor_options(res)
    res.set_defaults(handler=run_resolution)


def run_resolution(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from calocoffea import registry
    from calocoffea.io import atomic_write, read_metadata
    from calocoffea.methods import parse_options, reconstruction_method
    from calocoffea.report import jsonable
    from calocoffea.runner import _check_output, reconstruct_files
    from calocoffea.scan import scan_summary

    registry.load("reconstructions", args.method)  # an unknown name lists the installed ones
    target = _check_output(args.output, args.files, overwrite=args.force)
    geometry = read_metadata(args.files[0]).geometry
    method = reconstruction_method(args.method, geometry, **parse_options(args.option))
    result = reconstruct_files(
        args.files, method, run_options=run_options(args), skip_bad_files=args.skip_bad_files
    )
    c = result.columns
    scan = scan_summary(
        c["beam_energy"], c["energy"], c["clipped_hits"], label=args.method,
        max_clipped_fraction=args.max_clipped_fraction,
    )  # fmt: skip
    scan["inputs"] = [str(Path(f).absolute()) for f in args.files]
    with atomic_write(target) as temporary:
        temporary.write_text(json.dumps(jsonable(scan), indent=2))
    print(f"{'E [GeV]':>8} {'mean [GeV]':>11} {'sigma/E':>9} {'clipped':>8}  fit")
    for k, e in enumerate(scan["energy_gev"]):
        print(
            f"{e:8.1f} {scan['mean_gev'][k]:11.3f} {scan['sigma_over_e'][k]:9.4f} "
            f"{100 * scan['clipped_fraction'][k]:7.2f}%  "
            f"{'yes' if scan['used_in_fit'][k] else 'no'}"
        )
    r, lin = scan["resolution"], scan["linearity"]
    print(
        f"a = {r['a']:.4f} +- {r['a_error']:.4f} sqrt(GeV), c = {r['c']:.4f} +- {r['c_error']:.4f}"
    )
    print(f"linearity: max deviation {100 * lin['max_deviation']:.2f} %")
    print(f"wrote {target}")
    return 0
