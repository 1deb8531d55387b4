"""Fit time and peak memory of `inverse_nonlinearity` at the reproduction sizes, 2 CPU cores.

Usage::

    python benchmarks/bench_nonlinearity.py [--events 4000] [--workers 2]

Simulates ``--events`` cepc_ahcal electrons per energy (80, 100, 120 GeV) twice (MC_digi and
data, as ``reproduce/nonlinearity.py``: spot 10 mm centred, and 15 mm shifted by (5, -5) mm),
digitises them (design (a, b) for MC_digi, per-cell (a, b) for data), then fits in a fresh
process so that its memory is its own, with the futures executor and ``--workers`` workers for
the collect step. Prints the wall time of the fit (collect, reading the reference, quantiles,
closed form and joint refinement) and the peak resident memory of the fitting process and of
its largest worker. This is a script, not a test: it prints and exits 0.
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

GEOMETRY = "cepc_ahcal"
ENERGIES_GEV = (80.0, 100.0, 120.0)


def _simulate(args: tuple[int, int, float, float, float, str]) -> str:
    from calocoffea.simulation.beam import Beam
    from calocoffea.simulation.run import simulate

    events, seed, x, y, size, path = args
    beam = Beam(energies_gev=ENERGIES_GEV, x_mm=x, y_mm=y, size_mm=size)
    return str(simulate(GEOMETRY, "e-", beam, events, seed, path))


def _fit(data: str, reference: str, start: str, workers: int) -> dict[str, Any]:
    from calocoffea.methods import calibration_method
    from calocoffea.runner import RunOptions, fit_files

    t0 = time.perf_counter()
    method = calibration_method(
        "inverse_nonlinearity", GEOMETRY, reference=reference, constants=start, min_hits=1000
    )
    constants, _ = fit_files(method, [data], run_options=RunOptions("futures", workers, 20_000))
    seconds = time.perf_counter() - t0
    quality = constants.provenance.fit_quality
    return {
        "seconds": seconds,
        "cells": quality["ok"],
        "hits": quality["hits_data"] + quality["hits_reference"],
        "iterations": quality["refine_iterations"],
    }


def main() -> int:
    from calocoffea import nonlinearity_fit as nl
    from calocoffea.constants import nominal_constants
    from calocoffea.machine import describe
    from calocoffea.runner import digitize_files

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=4000, help="electrons per energy")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    mc = nl.mc_digi_conditions(GEOMETRY)
    data = nl.data_conditions(mc, 7, 0.01, 0.05)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        jobs = [(args.events, 201, 0.0, 0.0, 10.0, str(work / "mc.root")),
                (args.events, 202, 5.0, -5.0, 15.0, str(work / "data.root"))]  # fmt: skip
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            mc_sim, data_sim = pool.map(_simulate, jobs)
        mc_raw = digitize_files([mc_sim], work / "mc-raw.root", conditions=mc, seed=1).output
        data_raw = digitize_files([data_sim], work / "d-raw.root", conditions=data, seed=2).output
        start = nominal_constants(mc).save(work / "start.json")
        result = in_fresh_process(_fit, str(data_raw), str(mc_raw), str(start), args.workers)
    print(f"{datetime.date.today().isoformat()}, {describe()}")
    print(
        f"inverse_nonlinearity, {len(ENERGIES_GEV)} x {args.events} events per sample, "
        f"{result['hits']} hits (data + MC_digi), {result['cells']} cells fitted, "
        f"{result['iterations']} L-BFGS iterations"
    )
    print(
        f"fit {result['seconds']:.1f} s; peak RSS {result['peak_gib']:.2f} GiB (fit process), "
        f"{result['worker_peak_gib']:.2f} GiB (largest collect worker)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
