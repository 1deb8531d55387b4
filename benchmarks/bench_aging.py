"""Fit time and peak memory of the aging calibrations (`moment_ratio`, `wgan_aging`) at the
sizes of `reproduce/aging_table.py`: 5000 + 5000 events of 10 GeV pions in `tile_24x24`.

Usage::

    python benchmarks/bench_aging.py [--events 5000] [--threads 2]

Simulates the undamaged reference and the source of the damaged sample (independent seeds),
ages the source with the seed 004 aging (k for MAE 0.018 on the central cells), then fits
each method in a fresh process so that its memory is its own: the runner's collect step
(iterative executor), reading both samples and the fit (``--threads`` torch threads for
`wgan_aging`). Prints the wall time of each fit, its epochs (wgan_aging) and the peak
resident memory of the fitting process. This is a script, not a test: it prints a table and
exits 0.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _fresh_process import in_fresh_process

GEOMETRY = "tile_24x24"


def _simulate(args: tuple[int, int, str]) -> str:
    from calocoffea.simulation.beam import Beam
    from calocoffea.simulation.run import simulate

    events, seed, path = args
    return str(simulate(GEOMETRY, "pi+", Beam(energies_gev=(10.0,)), events, seed, path))


def _fit(name: str, damaged: str, reference: str, threads: int) -> dict[str, Any]:
    from calocoffea.methods import calibration_method
    from calocoffea.runner import fit_files

    options: dict[str, Any] = {"reference": reference}
    if name == "wgan_aging":
        options["threads"] = threads
    start = time.perf_counter()
    constants, _ = fit_files(calibration_method(name, GEOMETRY, **options), [damaged])
    seconds = time.perf_counter() - start
    quality = constants.provenance.fit_quality
    return {
        "seconds": seconds,
        "epochs": quality.get("epochs_run", "-"),
        "cells": quality["cells"]["trained"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000, help="events per sample")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of wgan_aging")
    args = parser.parse_args()
    from calocoffea.aging import Aging, apply_aging_files, cell_deposits_mev
    from calocoffea.machine import describe

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        jobs = [(args.events, 5001, str(work / "reference.root")),
                (args.events, 5002, str(work / "source.root"))]  # fmt: skip
        with ProcessPoolExecutor(max_workers=2) as pool:
            reference, source = pool.map(_simulate, jobs)
        deposits, _ = cell_deposits_mev([reference])
        aging = Aging.from_deposits(GEOMETRY, deposits)
        damaged = str(apply_aging_files([source], work / "damaged.root", aging))
        prepared = time.perf_counter() - start
        results = {
            name: in_fresh_process(_fit, name, damaged, reference, args.threads)
            for name in ("moment_ratio", "wgan_aging")
        }
    print(f"calocoffea aging benchmark, {datetime.date.today().isoformat()}, {describe()}")
    print(
        f"  {args.events} + {args.events} events of 10 GeV pi+ in {GEOMETRY}; input made in "
        f"{prepared:.0f} s; wgan_aging with {args.threads} torch threads"
    )
    for name, r in results.items():
        print(
            f"  {name:<13} {r['seconds']:7.1f} s  peak {r['peak_gib']:5.2f} GiB  "
            f"cells fitted {r['cells']}  epochs {r['epochs']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
