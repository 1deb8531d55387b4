"""Single-core throughput of the cell-ID decoder, with one numpy pass as a baseline.

Usage::

    python benchmarks/bench_cellid.py [--ids 10000000] [--repeat 7] [--seed 1]

Measures, on one pinned core with one BLAS/OpenMP thread, ``BitFieldCoder.decode`` of one
field of ``--ids`` random uint64 cell IDs (seeded) in the CEPC AHCAL encoding:

- an unsigned field, ``layer:19:9``;
- a signed field, ``x:32:-16`` (sign extension included);
- as a baseline in the same run, ``np.bitwise_and(ids, np.uint64(0xFF))``: one numpy pass
  over the same ids, about the fastest anything that returns a new array can be.

Each is the best of ``--repeat`` runs. The target is >= 100 M ids/s per core for one field.
This is a script, not a test: it prints a table and exits 0 whether or not the target is met.
"""

from __future__ import annotations

import argparse
import datetime
import time
from collections.abc import Callable
from typing import Any

import _single_thread  # noqa: F401  (one thread per process, before numpy loads)

from calocoffea.machine import describe, pin_to_one_core

#: Throughput target [M ids/s per core] for decoding one field.
TARGET_MIDS_PER_S = 100.0

#: The CEPC AHCAL cell-ID encoding (DD4hep).
CEPC_ENCODING = (
    "system:0:5,side:5:-2,module:7:8,stave:15:4,layer:19:9,submodule:28:4,x:32:-16,y:48:-16"
)


def best_seconds(function: Callable[[], Any], repeat: int) -> float:
    """The shortest wall time of ``repeat`` calls (after one warm-up call)."""
    function()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def run(args: argparse.Namespace) -> list[tuple[str, float]]:
    """(what, M ids/s) for the baseline and each decoded field."""
    import numpy as np

    from calocoffea.cellid import BitFieldCoder

    coder = BitFieldCoder.parse(CEPC_ENCODING)
    rng = np.random.default_rng(args.seed)
    ids = rng.integers(0, 2**64 - 1, size=args.ids, dtype=np.uint64, endpoint=True)
    # sanity check against plain Python ints on a few ids
    for cellid, x in zip(ids[:5].tolist(), coder.decode(ids[:5], "x").tolist(), strict=True):
        raw = (cellid >> 32) & 0xFFFF
        assert x == (raw - (1 << 16) if raw >= 1 << 15 else raw)

    cases: list[tuple[str, Callable[[], Any]]] = [
        ("baseline: np.bitwise_and(ids, 0xFF)", lambda: np.bitwise_and(ids, np.uint64(0xFF))),
        ("decode layer:19:9 (unsigned)", lambda: coder.decode(ids, "layer")),
        ("decode x:32:-16 (signed)", lambda: coder.decode(ids, "x")),
    ]
    return [(what, args.ids / best_seconds(f, args.repeat) / 1e6) for what, f in cases]


def report(args: argparse.Namespace, pinned: str, rates: list[tuple[str, float]]) -> None:
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    baseline = rates[0][1]
    print("calocoffea cell-ID decode benchmark (single thread)")
    print(f"  date      {date}")
    print(f"  machine   {describe()}; {pinned}")
    print(f"  workload  {args.ids:,} random uint64 ids (seed {args.seed}), best of {args.repeat}")
    print(f"  target    >= {TARGET_MIDS_PER_S:.0f} M ids/s per core for one field")
    width = max(len(what) for what, _ in rates)
    for what, rate in rates:
        verdict = ""
        if not what.startswith("baseline"):
            verdict = "PASS" if rate >= TARGET_MIDS_PER_S else "FAIL"
        line = f"  {what:<{width}}  {rate:8,.0f} M ids/s  {rate / baseline:5.2f} x baseline"
        print(f"{line}  {verdict}".rstrip())

    print()
    print("Markdown for README (Benchmarks):")
    print()
    print(f"Cell-ID decode, one field of {args.ids / 1e6:g} M uint64 ids, one pinned core,")
    print(f"best of {args.repeat} ({describe()}, {date[:10]}):")
    print()
    print("| operation | M ids/s | vs one numpy pass | target |")
    print("|---|---:|---:|---|")
    for what, rate in rates:
        verdict = (
            ""
            if what.startswith("baseline")
            else ("met" if rate >= TARGET_MIDS_PER_S else "NOT met")
        )
        print(f"| {what.replace('|', '/')} | {rate:,.0f} | {rate / baseline:.2f} | {verdict} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=10_000_000, help="number of cell ids")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per case (best)")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pinned = pin_to_one_core()
    report(args, pinned, run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
