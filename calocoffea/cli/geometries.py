"""`calocoffea geometries`: the installed geometries and their derived properties."""

from __future__ import annotations

import argparse
from typing import Any

from calocoffea.geometry import geometry_names, get_geometry


def add_parser(sub: Any) -> None:
    p = sub.add_parser("geometries", help="list installed geometries", description=__doc__)
    p.add_argument("name", nargs="?", help="show one geometry in detail, with its notes")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    names = [args.name] if args.name else geometry_names()
    for name in names:
        g = get_geometry(name)
        print(f"{g.name}  [{g.hash}]  {g.n_cells} cells")
        print(f"    {g.description}")
        for row in g.summary():
            print(
                f"    {row['section']:>5}: {row['layers']} layers x {row['cells_per_layer']} "
                f"cells, {row['depth_x0']:.1f} X0, {row['depth_lambda_i']:.2f} lambda_I, "
                f"R_M {row['moliere_radius_mm']:.1f} mm, f_mip {row['mip_sampling_fraction']:.4f}, "
                f"a {row['stochastic_term']:.3f}/sqrt(E)"
            )
        if args.name:
            print(f"    source: {g.source}")
            for s in g.sections:
                for note in s.notes:
                    print(f"    - {s.name}: {note}")
    return 0
