"""Entry point of the `calocoffea` command: dispatches to the subcommand modules."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from calocoffea import __version__
from calocoffea.cli import (
    calibrate,
    calibrun,
    conditions,
    constants,
    convert,
    demo,
    digitize,
    effects,
    fit,
    geometries,
    histogram,
    info,
    plugins,
    reconstruct,
    simulate,
    study,
)
from calocoffea.exceptions import CalocoffeaError

SUBCOMMANDS = (
    demo,
    simulate,
    effects,
    calibrun,
    digitize,
    calibrate,
    convert,
    histogram,
    reconstruct,
    fit,
    study,
    constants,
    conditions,
    plugins,
    info,
    geometries,
)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="calocoffea",
        description="Calibration and energy reconstruction for highly granular calorimeters.",
    )
    top.add_argument("--version", action="version", version=f"calocoffea {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(arguments)
    args.argv = arguments  # what was asked for, e.g. for the model card of `train`
    try:
        return int(args.handler(args) or 0)
    except CalocoffeaError as err:
        print(f"calocoffea {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"calocoffea {args.command}: interrupted; no output was left", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
