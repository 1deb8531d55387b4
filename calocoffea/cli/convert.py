"""`calocoffea convert IN -o OUT.root`: an EDM4hep file or a mapped ntuple in calocoffea's
native layout (the same events every command reads from it directly)."""

from __future__ import annotations

import argparse
from typing import Any

from calocoffea.cli.executor import add_force_option
from calocoffea.cli.inputs import add_input_options, source_options


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "convert",
        help="convert an EDM4hep file or a mapped ntuple to the native layout",
        description=__doc__,
    )
    p.add_argument("file", metavar="IN", help="EDM4hep file, or an ntuple with --map")
    p.add_argument("--output", "-o", required=True, help="output ROOT file")
    add_force_option(p)
    add_input_options(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from calocoffea.cli.executor import output_path
    from calocoffea.sources import convert

    target = output_path(args.output, args.force)
    path = convert(args.file, target, source_options(args))
    print(f"wrote {path}")
    return 0
