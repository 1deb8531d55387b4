"""`calocoffea calibrate`: calibration constants fitted from runs (`fit`) and applied (`apply`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from calocoffea.cli.executor import (
    add_executor_options,
    add_force_option,
    output_path,
    print_cutflow,
    run_options,
)
from calocoffea.cli.inputs import add_input_options, native_inputs
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
    add_force_option(apply)
    add_steps_options(apply)
    add_executor_options(apply)
    add_input_options(apply)
    apply.set_defaults(handler=run_apply)

    fit = group.add_parser(
        "fit",
        help="learn constants with a calibration method from runs",
        description="Run a calibration method (`calocoffea plugins list`) over its runs and "
        "write the constants it learns, laid over --base (default: the design values), so "
        "that the output is ready for `calibrate apply`.",
    )
    fit.add_argument("files", nargs="+", metavar="IN", help="ROOT files of the method's run type")
    fit.add_argument("--method", "-m", required=True, help="calibration method, e.g. mip")
    fit.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="a method option (repeatable; see `calocoffea plugins show METHOD`)",
    )
    fit.add_argument("--base", metavar="C.json", help="constants the learned tables replace")
    fit.add_argument("--output", "-o", required=True, help="output constants (JSON)")
    add_force_option(fit)
    add_executor_options(fit)
    fit.set_defaults(handler=run_fit)


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
    with native_inputs(args) as files:
        result = calibrate_files(
            files,
            args.output,
            constants,
            steps=steps(args),
            run_options=options,
            overwrite=args.force,
            skip_bad_files=args.skip_bad_files,
        )
    print(f"wrote {result.output}")
    print_cutflow(result.cutflow)
    return 0


def run_fit(args: argparse.Namespace) -> int:
    import json

    from calocoffea import registry
    from calocoffea.constants import design_constants
    from calocoffea.io import read_metadata
    from calocoffea.methods import calibration_method, parse_options
    from calocoffea.runner import fit_files

    registry.load("calibrations", args.method)  # an unknown name lists the installed ones
    target = output_path(args.output, args.force)  # before the fit
    geometry = read_metadata(args.files[0]).geometry
    method = calibration_method(args.method, geometry, **parse_options(args.option))
    learned, _ = fit_files(
        method, args.files, run_options=run_options(args), skip_bad_files=args.skip_bad_files
    )
    from calocoffea.binned import BinnedConstants
    from calocoffea.exceptions import MethodOptionsError

    if isinstance(learned, BinnedConstants):
        # binned constants (calibraton) are a correction of their own, not tables to lay
        # over a base set: saved as they are (read back with calocoffea.binned.load_binned)
        if args.base:
            raise MethodOptionsError(
                f"--base does not apply to {args.method!r}: its binned constants are saved "
                "on their own; leave --base out"
            )
        path = learned.save(target)
    else:
        base = load_constants(args.base) if args.base else design_constants(geometry)
        path = base.update(learned).save(target)
    print(f"wrote {path} ({args.method}: {', '.join(learned.tables)})")
    print(json.dumps(learned.provenance.fit_quality, indent=2, default=str))
    return 0
