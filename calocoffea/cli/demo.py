"""`calocoffea demo`: the main job on the embedded default detector.

Simulate calibration runs and electrons for ``cepc_ahcal`` with hidden per-cell conditions,
fit the electronics and MIP constants, calibrate, reconstruct, fit the resolution and
linearity before and after the calibration and with the true constants, and write
report.html, results.json, histograms.root and the figures (see :mod:`calocoffea.demo`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from calocoffea.cli.executor import add_executor_options, available_cores, run_options


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole chain on the embedded detector, with a report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", "-o", default="demo", help="output directory (default: demo)")
    p.add_argument(
        "--quick", action="store_true", help="small samples: the chain in well under a minute"
    )
    p.add_argument(
        "--keep-data", action="store_true", help="keep the simulated and digitised ROOT files"
    )
    p.add_argument("--seed", type=int, help="seed of the hidden conditions and every sample")
    workers = min(available_cores(), 4)
    add_executor_options(
        p, executor="futures", workers=workers, chunksize=100_000, skip_bad_files=False
    )
    # --quick runs each step on a few seconds of data: starting worker processes for every
    # step would cost more than it saves, so it defaults to the iterative executor
    p.set_defaults(executor=None)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from calocoffea.demo import DemoConfig, check_lines, run_demo, summary_lines

    config = DemoConfig.quick() if args.quick else DemoConfig()
    if args.seed is not None:
        config = dataclasses.replace(config, seed=args.seed)
    if args.executor is None:
        args.executor = "iterative" if args.quick else "futures"
    options = run_options(args)
    print(
        f"calocoffea demo{' (quick)' if args.quick else ''}: {config.geometry}, "
        f"{options.executor} executor, {options.workers} workers, output in "
        f"{Path(args.out).absolute()}"
    )
    command = "calocoffea " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["demo"] else ""
    results = run_demo(Path(args.out), config, options, keep_data=args.keep_data, command=command)
    print()
    print("\n".join(summary_lines(results)))
    print()
    print("\n".join(check_lines(results)))
    total = results["steps"][-1]["seconds"]
    print(f"\nfinished in {total:.0f} s; report: {results['report']}")
    return 0
