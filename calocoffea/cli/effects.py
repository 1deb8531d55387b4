"""`calocoffea effects`: simulated files (stage sim) to pseudo-data (stage sim) with detector
effects: seed 003 biases, miscalibration, noise and bias (seed 002), zero suppression and dead
cells; the true deposits stay in hit_edep."""

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


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "effects",
        help="apply detector effects (bias, miscalibration, noise, dead cells) to simulated files",
        description=__doc__,
    )
    p.add_argument("files", nargs="+", metavar="IN", help="ROOT files at stage sim")
    p.add_argument("--output", "-o", required=True, help="output ROOT file (stage sim)")
    add_force_option(p)
    p.add_argument(
        "--bias",
        choices=("none", "seed003"),
        default="none",
        help="cell-response bias F_l F_r F_S of seed 003 eq. 7-9 (default: none)",
    )
    p.add_argument(
        "--absorber-correction",
        type=float,
        metavar="A",
        help="S [GeV] = E [MeV] x A / 1000 in eq. 9 (default: 1 / (f_mip e_hat) of each layer; "
        "seed 003 measured 75.9)",
    )
    p.add_argument(
        "--miscalibration",
        type=float,
        default=0.0,
        metavar="S_C",
        help="per-cell factor C in [1 - S_C, 1 + S_C], Beta(2,2) (seed 002 eq. 1.2; default 0)",
    )
    p.add_argument(
        "--noise-mev",
        type=float,
        default=0.0,
        metavar="S_EPS",
        help="per cell and event noise in [-S_EPS, S_EPS] MeV, Beta(2,2) (eq. 1.3; default 0)",
    )
    p.add_argument(
        "--bias-mev", type=float, default=0.0, metavar="B", help="global bias b [MeV] (default 0)"
    )
    p.add_argument(
        "--zero-suppression-mev",
        type=float,
        metavar="THR",
        help="keep cells above THR MeV, empty cells lifted by noise included (seed 002: 0.6); "
        "default: none, and then noise and bias act on the hit cells only",
    )
    p.add_argument(
        "--submodule-cells",
        type=int,
        nargs=3,
        metavar=("LAYERS", "I", "J"),
        help="sub-module size in cells, for --correlation",
    )
    p.add_argument(
        "--correlation",
        type=float,
        default=0.0,
        metavar="RHO",
        help="Gaussian-copula correlation of C and noise within a sub-module (default 0)",
    )
    p.add_argument(
        "--dead-fraction", type=float, default=0.0, metavar="F", help="fraction of dead cells"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same file)")
    add_executor_options(p)
    add_input_options(p)
    p.set_defaults(handler=run)


def effects_of(args: argparse.Namespace) -> Any:
    """The :class:`~calocoffea.effects.Effects` of parsed options (validated there)."""
    from calocoffea.effects import Effects

    return Effects(
        bias=args.bias,
        absorber_correction=args.absorber_correction,
        miscalibration=args.miscalibration,
        noise_mev=args.noise_mev,
        bias_mev=args.bias_mev,
        zero_suppression_mev=args.zero_suppression_mev,
        submodule_cells=tuple(args.submodule_cells) if args.submodule_cells else None,
        correlation=args.correlation,
        dead_fraction=args.dead_fraction,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    from calocoffea.effects import apply_effects_files

    effects = effects_of(args)  # before any work: a bad option fails at once
    options = run_options(args)
    with native_inputs(args) as files:
        result = apply_effects_files(
            files,
            args.output,
            effects,
            run_options=options,
            overwrite=args.force,
            skip_bad_files=args.skip_bad_files,
        )
    print(f"wrote {result.output}")
    print_cutflow(result.cutflow)
    return 0
