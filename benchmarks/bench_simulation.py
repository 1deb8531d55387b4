"""Single-core throughput of the fast simulation, with the ROOT write as a baseline.

Usage::

    python benchmarks/bench_simulation.py [--events 2000] [--energy 50]
        [--geometry cepc_ahcal] [--particle e-] [--seed 1]

Measures, on one pinned core with one BLAS/OpenMP thread:

- simulation: events/s and GFlash spots/s at the full spot count. Spots are counted two
  ways: the actual Poisson counts drawn by the engine (a subclass of ``Simulation``
  overrides ``_spot_counts`` to add up what the engine draws, the sum over every
  component of ``Component.spots``) and the expected mean
  ``showers.spot_count(E)`` of an EM shower of the beam energy;
- the write of the same events to a ROOT file with uproot through
  ``calocoffea.io.write_events`` (skipped when that function is not available);
- peak resident memory of the process (``resource.getrusage``).

The target is >= 300 events/s per core for 50 GeV electrons in ``cepc_ahcal``.
This is a script, not a test: it prints a table and exits 0 whether or not the target is met.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _single_thread  # noqa: F401  (one thread per process, before numpy loads)

from calocoffea.machine import cpu_model, pin_to_one_core

#: Throughput target [events/s per core] for 50 GeV e- in cepc_ahcal.
TARGET_EVENTS_PER_S = 300.0


def peak_rss_mib() -> float:
    """Peak resident set size of this process [MiB] (ru_maxrss is KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / 2**20


def counting_simulation_class() -> type:
    """A Simulation whose ``_spot_counts`` adds up the spots it draws."""
    from calocoffea.simulation import Simulation

    class CountingSimulation(Simulation):
        spots_drawn = 0

        def _spot_counts(self, rng: Any, mean: Any, visible: Any) -> Any:  # type: ignore[override]
            counts = Simulation._spot_counts(rng, mean, visible)
            self.spots_drawn += int(counts.sum())
            return counts

    return CountingSimulation


def run_simulation(args: argparse.Namespace) -> dict[str, Any]:
    import awkward as ak
    import numpy as np

    from calocoffea.geometry import get_geometry
    from calocoffea.simulation import Beam, get_particle
    from calocoffea.simulation.showers import spot_count

    geometry = get_geometry(args.geometry)
    particle = get_particle(args.particle)
    beam = Beam.points([args.energy])
    simulation_class = counting_simulation_class()
    # warm-up: imports, cached layer tables and index layouts, first-call allocations
    warm = simulation_class(geometry, particle, beam, 50, args.seed + 1)
    list(warm)

    sim = simulation_class(geometry, particle, beam, args.events, args.seed)
    start_cpu, start = time.process_time(), time.perf_counter()
    blocks = list(sim)
    wall = time.perf_counter() - start
    cpu = time.process_time() - start_cpu

    n_events = sum(len(b) for b in blocks)
    n_hits = sum(int(ak.sum(ak.num(b.hit, axis=1))) for b in blocks)
    expected = float(np.sum(spot_count(np.concatenate([b.beam_energy for b in blocks]))))
    if particle.shower != "em":
        expected = float("nan")  # spot_count(E) is the EM-shower law only
    return {
        "geometry": geometry,
        "blocks": blocks,
        "events": n_events,
        "wall_s": wall,
        "cpu_s": cpu,
        "spots": sim.spots_drawn,
        "expected_spots": expected,
        "hits": n_hits,
    }


def run_write(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any] | str:
    """Time write_events of the simulated blocks; a string says why it was skipped."""
    try:
        from calocoffea.io import FileMetadata, write_events
    except ImportError as err:  # the module or the function is not there yet
        return f"skipped (calocoffea.io.write_events not available: {err})"
    geometry = result["geometry"]
    metadata = FileMetadata(
        stage="sim",
        geometry=geometry.name,
        geometry_hash=geometry.hash,
        producer="benchmarks/bench_simulation.py",
        extra={"seed": args.seed, "particle": args.particle, "energy_gev": args.energy},
    )
    with tempfile.TemporaryDirectory(prefix="calocoffea-bench-") as tmp:
        path = Path(tmp) / "bench.root"
        start = time.perf_counter()
        try:
            write_events(path, iter(result["blocks"]), metadata)
        except Exception as err:  # the writer is under development: report, do not crash
            return f"failed ({type(err).__name__}: {err})"
        wall = time.perf_counter() - start
        size = path.stat().st_size
    return {"wall_s": wall, "bytes": size}


def report(args: argparse.Namespace, pinned: str, sim: dict[str, Any], write: Any) -> None:
    events, wall = sim["events"], sim["wall_s"]
    rate = events / wall
    rows: list[tuple[str, str]] = [
        ("date", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")),
        ("machine", f"{platform.platform()}, Python {platform.python_version()}"),
        ("cpu", f"{cpu_model()}, {os.cpu_count()} cores; {pinned}"),
        (
            "workload",
            f"{events} x {args.energy:g} GeV {args.particle} in {args.geometry}, seed {args.seed}",
        ),
        ("simulation wall / cpu", f"{wall:.3f} s / {sim['cpu_s']:.3f} s"),
        ("events/s", f"{rate:,.0f}"),
        ("spots/event (drawn, _spot_counts)", f"{sim['spots'] / events:,.0f}"),
        ("spots/event (expected, spot_count(E))", f"{sim['expected_spots'] / events:,.0f}"),
        ("spots/s (drawn, _spot_counts)", f"{sim['spots'] / wall / 1e6:.2f} M"),
        ("hits/event", f"{sim['hits'] / events:,.1f}"),
    ]
    if isinstance(write, dict):
        write_rate = events / write["wall_s"]
        rows += [
            (
                "ROOT write (uproot, zstd)",
                f"{write['wall_s']:.3f} s, {write_rate:,.0f} events/s, "
                f"{write['bytes'] / 2**20:.2f} MiB",
            ),
            ("simulation + write", f"{events / (wall + write['wall_s']):,.0f} events/s"),
        ]
    else:
        rows.append(("ROOT write (uproot)", str(write)))
    rows += [
        ("peak RSS", f"{peak_rss_mib():,.0f} MiB"),
        (
            f"target >= {TARGET_EVENTS_PER_S:.0f} events/s/core",
            "met" if rate >= TARGET_EVENTS_PER_S else "NOT met",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    print("calocoffea fast-simulation benchmark (single thread)")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="events to simulate")
    parser.add_argument("--energy", type=float, default=50.0, help="beam energy [GeV]")
    parser.add_argument("--geometry", default="cepc_ahcal", help="registered geometry name")
    parser.add_argument("--particle", default="e-", help="particle name (e-, gamma, pi+, mu-)")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pinned = pin_to_one_core()
    sim = run_simulation(args)
    write = run_write(sim, args)
    report(args, pinned, sim, write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
