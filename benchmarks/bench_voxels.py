"""Single-core throughput of the columnar voxeliser, against the seed's per-event function.

Usage::

    python benchmarks/bench_voxels.py [--events 2000] [--chunk 500] [--loop-events 200]
                                      [--repeat 3] [--energy 50] [--seed 1]

Inputs: ``--events`` calibrated pi- showers at ``--energy`` GeV (10 mm spot) in
``calice_siw_ecal_ahcal``, simulated and digitised here (nominal conditions) into a
temporary directory; the hits are split per section by layer (``Geometry.layer_section``).
For the :data:`~calocoffea.models.voxels.DEFAULT` and
:data:`~calocoffea.models.voxels.SEED001` grids of each section it times
:func:`~calocoffea.models.voxels.voxel_grids` over all events in chunks of ``--chunk``
events (a processor's chunk; the seed-size HCAL grid is 300 kB per event) and, on the first
``--loop-events`` events, the seed's ``fill_voxel_vectorized`` called event by event (the
reference of ``tests/test_voxels.py``); ``differ`` counts those events whose grids differ
by more than 1e-5 (normalised grids): hits on a voxel edge, mostly of showers in one column of
cells (MIP-like pions in the ECAL), whose centroid is a cell centre and so a voxel edge, which
the seed's float32 energy sum moves by ~1e-7 relative to one side or the other (see
``EDGE_TOLERANCE`` in :mod:`calocoffea.models.voxels`). Figures are
events/s on one pinned core with one BLAS/OpenMP thread, the best of ``--repeat`` runs; the
target is >= 10,000 events/s per section at the default grids. This is a script, not a
test: it prints a table and exits 0 whether or not the target is met.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _single_thread  # noqa: F401  (one thread per library, before numpy)
import numpy as np

GEOMETRY = "calice_siw_ecal_ahcal"
#: Target [events/s per core per section] at the default grids.
TARGET_EVENTS_PER_S = 10_000.0


def best_seconds(run: Callable[[], Any], repeat: int) -> float:
    """The best of ``repeat`` timings of ``run`` after one warm-up call."""
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def read_hits(events: int, energy_gev: float, seed: int) -> dict[str, np.ndarray]:
    """Flat x, y [mm], layer, energy [GeV] and counts of simulated, calibrated pions."""
    import awkward as ak

    from calocoffea.io import read_events
    from calocoffea.samples import calibrated_sample
    from calocoffea.simulation.beam import Beam

    with tempfile.TemporaryDirectory() as tmp:
        path = calibrated_sample(GEOMETRY, "pi-", Beam((energy_gev,), size_mm=10.0), events,
                                 seed, Path(tmp) / "pions.root")  # fmt: skip
        hits = read_events(path).hits
    flat = {
        name: ak.to_numpy(ak.flatten(hits[name], axis=None))
        for name in ("x", "y", "layer", "energy")
    }
    flat["counts"] = ak.to_numpy(ak.num(hits, axis=1))
    return {k: np.asarray(v, dtype=np.int64 if k in ("layer", "counts") else np.float64)
            for k, v in flat.items()}  # fmt: skip


def section_hits(hits: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    event = np.repeat(np.arange(hits["counts"].size), hits["counts"])
    out = {k: hits[k][keep] for k in ("x", "y", "layer", "energy")}
    out["counts"] = np.bincount(event[keep], minlength=hits["counts"].size).astype(np.int64)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000, help="pions simulated and timed")
    parser.add_argument("--chunk", type=int, default=500, help="events per voxel_grids call")
    parser.add_argument("--loop-events", type=int, default=200, help="events of the loop")
    parser.add_argument("--repeat", type=int, default=3, help="timings per figure (best kept)")
    parser.add_argument("--energy", type=float, default=50.0, help="beam energy [GeV]")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    from calocoffea.geometry import get_geometry
    from calocoffea.machine import describe, pin_to_one_core
    from calocoffea.models.voxels import (
        DEFAULT,
        SEED001,
        section_spec,
        seed_voxel_grid,
        voxel_grids,
    )

    pinned = pin_to_one_core()
    geometry = get_geometry(GEOMETRY)
    hits = read_hits(args.events, args.energy, args.seed)
    n = hits["counts"].size
    n_loop = min(args.loop_events, n)
    print(f"{datetime.date.today().isoformat()}, {describe()}; {pinned}; one thread")
    print(f"{n} pi- at {args.energy:g} GeV in {GEOMETRY}, chunks of {args.chunk} events; "
          f"events/s per core (best of {args.repeat}); loop = the seed's function per event "
          f"on {n_loop} events")  # fmt: skip
    print(f"{'grid':<8} {'section':<8} {'shape':<14} {'hits/event':>10} {'kB/event':>9} "
          f"{'events/s':>10} {'loop ev/s':>10} {'ratio':>7} {'differ':>7}")  # fmt: skip
    for preset_name, preset in (("default", DEFAULT), ("seed001", SEED001)):
        for k, section in enumerate(geometry.sections):
            h = section_hits(hits, geometry.layer_section[hits["layer"]] == k)
            spec = section_spec(geometry, k, preset)
            offsets = np.concatenate(([0], np.cumsum(h["counts"])))

            def columnar(h: dict[str, np.ndarray] = h, o: np.ndarray = offsets,
                         spec: Any = spec) -> None:  # fmt: skip
                for a in range(0, n, args.chunk):
                    b = min(n, a + args.chunk)
                    s = slice(int(o[a]), int(o[b]))
                    voxel_grids(h["x"][s], h["y"][s], h["layer"][s], h["energy"][s],
                                h["counts"][a:b], spec)  # fmt: skip

            def loop(h: dict[str, np.ndarray] = h, o: np.ndarray = offsets,
                     spec: Any = spec) -> np.ndarray:  # fmt: skip
                cell = (spec.cell_mm[0], spec.layers_per_cell, spec.cell_mm[1])
                grids = np.empty((n_loop, *spec.shape), dtype=np.float32)
                for e in range(n_loop):
                    s = slice(int(o[e]), int(o[e + 1]))
                    grids[e] = seed_voxel_grid(
                        h["x"][s], h["layer"][s].astype(np.float64), h["y"][s],
                        h["energy"][s], cell, spec.layers, spec.window_mm,
                    )  # fmt: skip
                return grids

            rate = n / best_seconds(columnar, args.repeat)
            loop_rate = n_loop / best_seconds(loop, args.repeat)
            m = int(offsets[n_loop])
            same = voxel_grids(h["x"][:m], h["y"][:m], h["layer"][:m], h["energy"][:m],
                               h["counts"][:n_loop], spec)  # fmt: skip
            differ = int(np.sum(np.abs(same - loop()).max(axis=(1, 2, 3)) > 1e-5))
            flag = "" if preset_name != "default" or rate >= TARGET_EVENTS_PER_S else "  < target"
            shape = "x".join(str(v) for v in spec.shape)
            print(f"{preset_name:<8} {section.name:<8} {shape:<14} "
                  f"{h['counts'].mean():>10.0f} {spec.n_voxels * 4 / 1e3:>9.1f} {rate:>10.0f} "
                  f"{loop_rate:>10.0f} {rate / loop_rate:>7.1f} {differ:>7}{flag}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
