"""`calocoffea histogram`: physics histograms of events files to ROOT and UHI JSON."""

from __future__ import annotations

import argparse
import math
from typing import Any

from calocoffea.cli.executor import (
    add_executor_options,
    add_force_option,
    print_cutflow,
    run_options,
)
from calocoffea.cli.inputs import add_input_options, native_inputs
from calocoffea.constants import load_constants
from calocoffea.exceptions import ConstantsError


def _energies(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"--beam-energies {text!r}: give comma-separated positive numbers in GeV, e.g. 10,30,50"
        )
    return values


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "histogram",
        help="fill physics histograms (energy sums, hits, shower shapes)",
        description=__doc__,
    )
    p.add_argument("files", nargs="+", metavar="IN", help="ROOT files of one stage")
    p.add_argument(
        "--output",
        "-o",
        required=True,
        metavar="OUT.root",
        help="output ROOT file; OUT.root.json beside it holds the lossless UHI form",
    )
    add_force_option(p)
    p.add_argument(
        "--constants",
        metavar="C.json",
        help="calibrate raw input on the fly with these constants",
    )
    p.add_argument(
        "--to",
        choices=("mip", "gev"),
        help="unit of on-the-fly calibration (needs --constants; default: mip)",
    )
    p.add_argument(
        "--beam-energies",
        type=_energies,
        default=(),
        metavar="E1,E2,...",
        help="beam energy points [GeV] of the histograms (default: from the files)",
    )
    add_executor_options(p)
    add_input_options(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.to and not args.constants:
        raise ConstantsError(f"--to {args.to} calibrates raw input: give --constants C.json")
    from calocoffea.calibration import CalibrationSteps
    from calocoffea.runner import histogram_files

    options = run_options(args)
    constants = load_constants(args.constants) if args.constants else None
    with native_inputs(args) as files:
        result = histogram_files(
            files,
            args.output,
            stage="raw" if constants is not None else None,
            constants=constants,
            steps=CalibrationSteps(to_gev=args.to == "gev"),
            beam_energies_gev=args.beam_energies,
            run_options=options,
            overwrite=args.force,
            skip_bad_files=args.skip_bad_files,
        )
    print(f"wrote {result.output} ({len(result.histograms)} histograms)")
    print(f"      {result.output}.json holds them in lossless UHI form")
    print_cutflow(result.cutflow)
    return 0
