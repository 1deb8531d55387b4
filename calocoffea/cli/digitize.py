"""`calocoffea digitize`: simulated files (stage sim) to one raw file [ADC]."""

from __future__ import annotations

import argparse
from typing import Any

from calocoffea.cli.executor import (
    add_executor_options,
    add_force_option,
    print_cutflow,
    run_options,
)
from calocoffea.cli.inputs import add_input_options, native_inputs
from calocoffea.conditions import Conditions


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "digitize",
        help="digitise simulated showers with the SiPM-on-tile read-out",
        description=__doc__,
    )
    p.add_argument("files", nargs="+", metavar="IN", help="ROOT files at stage sim")
    p.add_argument("--output", "-o", required=True, help="output ROOT file (stage raw)")
    add_force_option(p)
    p.add_argument(
        "--conditions",
        metavar="C.npz",
        help="detector conditions (`conditions draw`); default: the geometry's nominal ones",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same file)")
    p.add_argument(
        "--no-zero-suppression", action="store_true", help="keep hits below the threshold"
    )
    p.add_argument(
        "--no-clipping", action="store_true", help="do not clip amplitudes at the ADC range top"
    )
    p.add_argument(
        "--threshold-mip",
        type=float,
        metavar="X",
        help="zero-suppression threshold [MIP] (default: the conditions' threshold)",
    )
    add_executor_options(p)
    add_input_options(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from calocoffea.digitization import DigitizationOptions
    from calocoffea.runner import digitize_files

    options = run_options(args)
    conditions = Conditions.load(args.conditions) if args.conditions else None
    with native_inputs(args) as files:
        result = digitize_files(
            files,
            args.output,
            conditions=conditions,
            seed=args.seed,
            options=DigitizationOptions(
                zero_suppression=not args.no_zero_suppression,
                clipping=not args.no_clipping,
                threshold_mip=args.threshold_mip,
            ),
            run_options=options,
            overwrite=args.force,
            skip_bad_files=args.skip_bad_files,
        )
    print(f"wrote {result.output}")
    print_cutflow(result.cutflow)
    return 0
