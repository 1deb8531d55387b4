"""`calocoffea calibrate`: calibration constants applied to raw files (and, later, fitted)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from calocoffea.cli.executor import add_executor_options, print_cutflow, run_options
from calocoffea.constants import load_constants

if TYPE_CHECKING:
    from calocoffea.calibration import CalibrationSteps


def add_parser(sub: Any) -> None:
    p = sub.add_parser("calibrate", help="apply calibration constants", description=__doc__)
    group = p.add_subparsers(dest="calibrate_command", required=True, metavar="ACTION")
    apply = group.add_parser(
        "apply",
        help="raw files [ADC] to one calibrated file [MIP or GeV]",
        description="Apply calibration constants to raw files (stage raw) into one file "
        "at stage mip or gev.",
    )
    apply.add_argument("files", nargs="+", metavar="IN", help="ROOT files at stage raw")
    apply.add_argument(
        "--constants",
        required=True,
        metavar="C.json",
        help="constants (correctionlib JSON, e.g. from `constants nominal`)",
    )
    apply.add_argument("--output", "-o", required=True, help="output ROOT file")
    add_steps_options(apply)
    add_executor_options(apply)
    apply.set_defaults(handler=run_apply)


def add_steps_options(parser: argparse.ArgumentParser) -> None:
    """--to and the --no-STEP switches of the calibration chain."""
    parser.add_argument(
        "--to", choices=("mip", "gev"), default="mip", help="output unit (default: mip)"
    )
    for step, what in (
        ("pedestal", "pedestal subtraction"),
        ("gain-selection", "low-gain to high-gain equivalent"),
        ("nonlinearity", "inverse electronics non-linearity"),
        ("desaturation", "SiPM de-saturation"),
        ("scale", "per-cell multiplicative constants"),
    ):
        parser.add_argument(f"--no-{step}", action="store_true", help=f"skip {what}")


def steps(args: argparse.Namespace) -> CalibrationSteps:
    """The :class:`CalibrationSteps` of the parsed --to and --no-STEP options."""
    from calocoffea.calibration import CalibrationSteps

    return CalibrationSteps(
        pedestal=not args.no_pedestal,
        gain_selection=not args.no_gain_selection,
        nonlinearity=not args.no_nonlinearity,
        desaturation=not args.no_desaturation,
        scale=not args.no_scale,
        to_gev=args.to == "gev",
    )


def run_apply(args: argparse.Namespace) -> int:
    from calocoffea.runner import calibrate_files

    options = run_options(args)
    constants = load_constants(args.constants)
    result = calibrate_files(
        args.files, args.output, constants, steps=steps(args), run_options=options
    )
    print(f"wrote {result.output}")
    print_cutflow(result.cutflow)
    return 0
