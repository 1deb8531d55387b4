"""`calocoffea simulate`: fast-simulated showers to a ROOT file."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from calocoffea.cli.executor import add_force_option, output_path
from calocoffea.exceptions import SimulationConfigError
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate


def _energies(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--energy {text!r}: give comma-separated numbers in GeV, e.g. 10,50,100"
        ) from None


def _range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--energy-range {text!r}: give LOW:HIGH in GeV, e.g. 1:120"
        ) from None
    return low, high


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate showers with the fast parametrised simulation",
        description=__doc__,
    )
    p.add_argument("--geometry", "-g", required=True, help="geometry name (see `geometries`)")
    p.add_argument("--particle", "-p", required=True, help="e-, e+, gamma, pi+, pi-, mu-, mu+")
    energy = p.add_mutually_exclusive_group(required=True)
    energy.add_argument("--energy", type=_energies, help="beam energies [GeV], e.g. 10,50,100")
    energy.add_argument("--energy-range", type=_range, help="continuous range LOW:HIGH [GeV]")
    p.add_argument(
        "--spectrum",
        choices=("flat", "trapezoid"),
        default="flat",
        help="spectrum over --energy-range (trapezoid: seed 000's falling density)",
    )
    p.add_argument(
        "--events",
        "-n",
        type=int,
        required=True,
        help="events per energy point (--energy) or in all (--energy-range)",
    )
    p.add_argument("--seed", type=int, default=1, help="random seed (same seed, same file)")
    p.add_argument("--run", type=int, default=0, help="run number written with every event")
    p.add_argument("--beam-x", type=float, default=0.0, help="beam spot centre x [mm]")
    p.add_argument("--beam-y", type=float, default=0.0, help="beam spot centre y [mm]")
    p.add_argument("--beam-size", type=float, default=0.0, help="beam spot sigma [mm]")
    p.add_argument(
        "--uniform",
        action="store_true",
        help="impact points uniform over the front face instead of a beam spot",
    )
    p.add_argument("--output", "-o", required=True, help="output ROOT file")
    add_force_option(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.events <= 0:
        raise SimulationConfigError(f"--events {args.events}: give a positive number of events")
    target = output_path(args.output, args.force)
    beam = Beam(
        energies_gev=tuple(args.energy or ()),
        energy_range_gev=args.energy_range,
        spectrum=args.spectrum,
        x_mm=args.beam_x,
        y_mm=args.beam_y,
        size_mm=args.beam_size,
        uniform=args.uniform,
    )
    path = simulate(
        args.geometry,
        args.particle,
        beam,
        args.events,
        args.seed,
        target,
        run=args.run,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    print(f"wrote {path}")
    return 0
