"""`calocoffea calibrun`: simulate a calibration run (pedestal or LED) into a raw ROOT file."""

from __future__ import annotations

import argparse
from typing import Any

from calocoffea.calibruns import MU_LED, MU_SPREAD, RUN_TYPES
from calocoffea.cli.executor import add_force_option, output_path
from calocoffea.exceptions import GeometryMismatchError, SimulationConfigError

_WHAT = {
    "pedestal": "every cell read in both gains without signal (for the `pedestal` method)",
    "led": "every cell lit by an LED at low light, high gain (for the `spe` method)",
}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "calibrun",
        help="simulate a pedestal or LED calibration run with detector conditions",
        description=__doc__,
    )
    p.add_argument(
        "run_type", choices=RUN_TYPES, help="; ".join(f"{k}: {v}" for k, v in _WHAT.items())
    )
    p.add_argument("--geometry", "-g", required=True, help="geometry name (see `geometries`)")
    p.add_argument(
        "--conditions",
        metavar="C.npz",
        help="detector conditions (`conditions draw`); default: the geometry's nominal ones",
    )
    p.add_argument("--events", "-n", type=int, required=True, help="events (triggers) to read")
    p.add_argument("--seed", type=int, required=True, help="random seed (same seed, same file)")
    p.add_argument("--run", type=int, default=0, help="run number written with every event")
    p.add_argument(
        "--mu-led",
        type=float,
        default=MU_LED,
        metavar="MU",
        help=f"led: mean photo-electrons per pulse (default: {MU_LED})",
    )
    p.add_argument(
        "--mu-spread",
        type=float,
        default=MU_SPREAD,
        metavar="S",
        help=f"led: relative spread of the light from cell to cell (default: {MU_SPREAD})",
    )
    p.add_argument("--output", "-o", required=True, help="output ROOT file (stage raw)")
    add_force_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from calocoffea.calibruns import calibration_run
    from calocoffea.conditions import Conditions, nominal

    if args.events <= 0:
        raise SimulationConfigError(f"--events {args.events}: give a positive number of events")
    if args.seed < 0:
        raise SimulationConfigError(f"--seed {args.seed}: give a non-negative seed")
    target = output_path(args.output, args.force)
    if args.conditions:
        conditions = Conditions.load(args.conditions)
        if conditions.geometry != args.geometry:
            raise GeometryMismatchError(
                f"--conditions {args.conditions} are for geometry {conditions.geometry!r}, not "
                f"--geometry {args.geometry!r}; draw conditions for {args.geometry!r}"
            )
    else:
        conditions = nominal(args.geometry)
    options: dict[str, Any] = {"run": args.run}
    if args.run_type == "led":
        options |= {"mu_led": args.mu_led, "mu_spread": args.mu_spread}
    path = calibration_run(args.run_type, conditions, args.events, args.seed, target, **options)
    print(
        f"wrote {path}: {args.run_type} run {args.run}, {args.events} events, "
        f"{conditions.geometry} ({conditions.n_cells - int(conditions.dead.sum())} live cells), "
        f"conditions {conditions.label!r}, seed {args.seed}"
    )
    return 0
