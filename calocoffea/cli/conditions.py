"""`calocoffea conditions`: detector conditions (per-cell truth tables) drawn from a seed."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from calocoffea.cli.executor import add_force_option, output_path
from calocoffea.conditions import PARAMETERS, Conditions, ConditionsConfig


def add_parser(sub: Any) -> None:
    p = sub.add_parser("conditions", help="draw or show detector conditions", description=__doc__)
    group = p.add_subparsers(dest="conditions_command", required=True, metavar="ACTION")
    draw = group.add_parser(
        "draw",
        help="draw conditions of a geometry from a seed into an .npz file",
        description="Draw every per-cell table of a geometry from a seed.",
    )
    draw.add_argument("--geometry", "-g", required=True, help="geometry name (see `geometries`)")
    draw.add_argument("--seed", type=int, required=True, help="random seed (0: nominal)")
    draw.add_argument("--output", "-o", required=True, help="output .npz file")
    draw.add_argument(
        "--dead-fraction", type=float, default=0.0, help="fraction of dead cells (default: 0)"
    )
    draw.add_argument(
        "--noisy-fraction", type=float, default=0.0, help="fraction of noisy cells (default: 0)"
    )
    draw.add_argument("--label", default="", help="name of this draw (default: from the seed)")
    add_force_option(draw)
    draw.set_defaults(handler=run_draw)
    show = group.add_parser(
        "show",
        help="summarise a conditions file",
        description="Geometry, seed, label and per-parameter statistics of a conditions file.",
    )
    show.add_argument("file", help=".npz file written by `conditions draw`")
    show.set_defaults(handler=run_show)


def run_draw(args: argparse.Namespace) -> int:
    config = ConditionsConfig(dead_fraction=args.dead_fraction, noisy_fraction=args.noisy_fraction)
    target = output_path(args.output, args.force)
    conditions = Conditions.draw(args.geometry, args.seed, config, label=args.label)
    path = conditions.save(target)
    print(
        f"wrote {path}: {conditions.geometry}, seed {conditions.seed}, label "
        f"{conditions.label!r}, {conditions.n_cells} cells, {int(conditions.dead.sum())} dead, "
        f"{int(conditions.noisy.sum())} noisy"
    )
    return 0


def run_show(args: argparse.Namespace) -> int:
    c = Conditions.load(args.file)
    rows = [
        ("file", args.file),
        ("geometry", f"{c.geometry} [{c.geometry_hash}]"),
        ("seed", str(c.seed)),
        ("label", c.label),
        ("cells", f"{c.n_cells} ({int(c.dead.sum())} dead, {int(c.noisy.sum())} noisy)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:>{width}}  {value}")
    print()
    tables = [(name, PARAMETERS[name].unit, c.values[name]) for name in PARAMETERS]
    tables.append(("mip_mev", "MeV", c.mip_mev))
    name_w = max(len(name) for name, _, _ in tables)
    unit_w = max(len(unit) for _, unit, _ in tables)
    print(
        f"{'parameter':<{name_w}}  {'unit':<{unit_w}}  "
        f"{'mean':>10}  {'std':>10}  {'min':>10}  {'max':>10}"
    )
    for name, unit, values in tables:
        v = np.asarray(values, dtype=np.float64)
        print(
            f"{name:<{name_w}}  {unit:<{unit_w}}  {v.mean():>10.4g}  {v.std():>10.4g}  "
            f"{v.min():>10.4g}  {v.max():>10.4g}"
        )
    return 0
