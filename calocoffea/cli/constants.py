"""`calocoffea constants`: calibration constants files (correctionlib JSON)."""

from __future__ import annotations

import argparse
from typing import Any

from calocoffea.cli.executor import add_force_option, output_path
from calocoffea.conditions import nominal
from calocoffea.constants import nominal_constants
from calocoffea.geometry import get_geometry


def add_parser(sub: Any) -> None:
    p = sub.add_parser("constants", help="write calibration constants", description=__doc__)
    group = p.add_subparsers(dest="constants_command", required=True, metavar="ACTION")
    nom = group.add_parser(
        "nominal",
        help="the constants that invert a geometry's nominal conditions exactly",
        description="Write the constants equal to the nominal conditions of a geometry.",
    )
    nom.add_argument("--geometry", "-g", required=True, help="geometry name (see `geometries`)")
    nom.add_argument("--output", "-o", required=True, help="output JSON file (correctionlib)")
    add_force_option(nom)
    nom.set_defaults(handler=run_nominal)


def run_nominal(args: argparse.Namespace) -> int:
    geometry = get_geometry(args.geometry)
    target = output_path(args.output, args.force)
    path = nominal_constants(nominal(geometry)).save(target)
    print(f"wrote {path}: nominal constants for {geometry.name} ({geometry.n_cells} cells)")
    return 0
