"""calocoffea against RDataFrame on one task, side by side (in the manner of the IRIS-HEP
Analysis Grand Challenge): one versioned task, reference histograms, a bin-by-bin validator,
one metrics format.

Usage::

    python benchmarks/agc/agc.py [--size tiny|small|full] [--repeat 3] [--check]
        [--write-reference] [--metrics metrics.json] [--workdir DIR] [--readme]

The task (``spec.json`` beside this file, versioned): N ZSTD files of electrons in the
default detector; digitise -> calibrate (nominal constants, to MIP) -> fill four
histograms (``energy_sum``, ``nhit``, ``longitudinal``, ``occupancy`` of the histogram
processor, same axes). Two implementations:

- calocoffea: its processors through coffea's Runner (``HistogramProcessor`` with constants
  for raw input; with conditions too for simulated input: digitised on the fly);
- RDataFrame: C++ over RVec declared once (``calocoffea/cpp/calocoffea_rdf.hxx``: the same
  formulas, the same dense per-cell lookup, the same counter-based random numbers), driven
  through :mod:`calocoffea.rdf`.

Because the random numbers are the same, digitisation too is deterministic: both
implementations must give the stored reference histograms bin by bin (counts exactly,
weighted sums within ``weighted_rtol``, the rounding of a different summation order).

Modes, each timed as the best of ``--repeat`` runs after a warm-up (numba and ROOT's JIT):

- ``calibrate``: raw files -> histograms, one core;
- ``full``: simulated files -> histograms, one core;
- ``io``: read the branches the task needs and nothing else, one core;
- ``full x2``: two cores: RDataFrame with implicit multi-threading (2 threads) against
  calocoffea on a local Dask cluster of 2 single-threaded workers (cluster started before
  the clock); and calocoffea's Dask scaling, 1 -> 2 workers, with peak memory per worker.

Figures are events/s per core; ratios are calocoffea over RDataFrame. ``--check`` runs every
implementation once on the size and exits non-zero if any histogram differs from the
reference (what the test suite runs on ``tiny``). ``--readme`` writes the table into README.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
from coffea import processor

HERE = Path(__file__).resolve().parent
SPEC = json.loads((HERE / "spec.json").read_text())
ROOT_DIR = HERE.parents[1]


# ------------------------------------------------------------------ inputs


def inputs(size: str, workdir: Path) -> tuple[list[Path], list[Path]]:
    """The task's simulated and raw files for ``size``, made once (deterministic: seeded
    simulation, UUIDs from the metadata, digitisation keyed by them) and kept in
    ``workdir``."""
    from calocoffea.conditions import nominal
    from calocoffea.runner import digitize_files
    from calocoffea.simulation.beam import Beam
    from calocoffea.simulation.run import simulate

    layout = SPEC["sizes"][size]
    energies = tuple(SPEC["energies_gev"])
    per_point = layout["events_per_file"] // len(energies)
    directory = workdir / f"v{SPEC['version']}-{per_point}"
    directory.mkdir(parents=True, exist_ok=True)
    sims, raws = [], []
    conditions = nominal(SPEC["geometry"])
    for k in range(layout["files"]):
        sim, raw = directory / f"sim_{k:03d}.root", directory / f"raw_{k:03d}.root"
        if not sim.exists():
            simulate(SPEC["geometry"], SPEC["particle"], _beam(Beam, energies), per_point,
                     SPEC["simulation_seed"] + k, sim, run=k)  # fmt: skip
        if not raw.exists():
            digitize_files([sim], raw, conditions=conditions, seed=SPEC["digitization_seed"])
        sims.append(sim)
        raws.append(raw)
    return sims, raws


def _beam(beam_class: Any, energies: tuple[float, ...]) -> Any:
    return beam_class(energies_gev=energies)


def _processor(stage: str) -> Any:
    from calocoffea.conditions import nominal
    from calocoffea.constants import nominal_constants
    from calocoffea.processors.histogram import HistogramProcessor

    conditions = nominal(SPEC["geometry"])
    return HistogramProcessor(
        SPEC["geometry"],
        stage,
        tuple(SPEC["energies_gev"]),
        nominal_constants(conditions),
        histograms=tuple(SPEC["histograms"]),
        conditions=conditions if stage == "sim" else None,
        seed=SPEC["digitization_seed"],
    )


# ------------------------------------------------------------------ calocoffea


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def calocoffea_run(
    files: list[Path], stage: str, scheduler: str | None = None
) -> dict[str, np.ndarray]:
    """The task through calocoffea's histogram processor (iterative, or a Dask scheduler)."""
    from calocoffea.runner import RunOptions, run

    options = RunOptions(
        executor="dask" if scheduler else "iterative",
        scheduler=scheduler,
        chunksize=SPEC["chunksize"],
    )
    with _quiet():
        result = run(_processor(stage), [str(f) for f in files], options)
    return {name: h.values(flow=True) for name, h in result.histograms.items()}


def calocoffea_io(files: list[Path]) -> dict[str, np.ndarray]:
    """Read the task's branches through the same Runner and schema, no compute."""
    from calocoffea.runner import RunOptions, run

    with _quiet():
        result = run(IoOnly(), [str(f) for f in files], RunOptions(chunksize=SPEC["chunksize"]))
    return {"hits": np.array([result.cutflow["io"]["hits_in"]])}


class IoOnly(processor.ProcessorABC):
    """A processor that materialises the calibrate+histogram branches and does nothing else."""

    fields = ("cellid", "layer", "i", "j", "energy", "gain", "flags")

    def process(self, events: Any) -> dict[str, Any]:
        from calocoffea.processors.common import cutflow_step, flat_hits

        counts, _ = flat_hits(events, self.fields)
        ak.to_numpy(events.beam_energy)
        n = int(counts.sum())
        return {"cutflow": {"io": cutflow_step(len(events), len(events), n, n)}}

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


# ------------------------------------------------------------------ RDataFrame


def rdf_run(files: list[Path], stage: str, threads: int = 0) -> dict[str, np.ndarray]:
    """The task in RDataFrame: C++ Defines over RVec (calocoffea.rdf), filled in one loop."""
    import ROOT

    from calocoffea import rdf
    from calocoffea.conditions import nominal
    from calocoffea.constants import nominal_constants

    _threads(ROOT, threads)
    conditions = nominal(SPEC["geometry"])
    df = ROOT.RDataFrame("events", [str(f) for f in files])
    columns: tuple[str, ...] = rdf.RAW_COLUMNS
    if stage == "sim":
        df = rdf.define_digitized(df, files, conditions, SPEC["digitization_seed"])
        columns = ("raw_energy", "raw_gain", "raw_flags", "raw_layer", "raw_i", "raw_j")
    df = rdf.define_calibrated(df, nominal_constants(conditions), "cc_mip", inputs=columns)
    booked = rdf.book_histograms(df, _processor(stage), "cc_mip", columns[3:])  # type: ignore[arg-type]
    ROOT.RDF.RunGraphs(list(booked.values()))
    return {name: rdf.to_numpy(h.GetValue()) for name, h in booked.items()}


def rdf_io(files: list[Path], threads: int = 0) -> dict[str, np.ndarray]:
    """Read the task's branches in RDataFrame, no compute (sizes only)."""
    import ROOT

    _threads(ROOT, threads)
    df = ROOT.RDataFrame("events", [str(f) for f in files])
    branches = ("hit_cellid", "hit_layer", "hit_i", "hit_j", "hit_energy", "hit_gain", "hit_flags")
    expression = " + ".join(f"{c}.size()" for c in branches)
    total = df.Define("cc_n", f"double(beam_energy) * 0 + {expression}").Sum("cc_n").GetValue()
    return {"hits": np.array([total / 7])}


def _threads(ROOT: Any, threads: int) -> None:
    if threads:
        if ROOT.GetThreadPoolSize() != threads:
            ROOT.DisableImplicitMT()
            ROOT.EnableImplicitMT(threads)
    elif ROOT.IsImplicitMTEnabled():
        ROOT.DisableImplicitMT()


# ------------------------------------------------------------------ validation


def _encode(values: np.ndarray) -> dict[str, Any]:
    flat = values.ravel()
    nonzero = np.flatnonzero(flat)
    return {
        "shape": list(values.shape),
        "index": nonzero.tolist(),
        "values": flat[nonzero].tolist(),
    }


def _decode(stored: dict[str, Any]) -> np.ndarray:
    values = np.zeros(int(np.prod(stored["shape"])))
    values[np.asarray(stored["index"], dtype=np.int64)] = stored["values"]
    return values.reshape(stored["shape"])


def reference_path(size: str) -> Path:
    return HERE / "reference" / f"{size}.json"


def write_reference(size: str, histograms: dict[str, np.ndarray]) -> Path:
    path = reference_path(size)
    payload = {
        "task": SPEC["task"],
        "version": SPEC["version"],
        "size": size,
        "histograms": {name: _encode(v) for name, v in sorted(histograms.items())},
    }
    path.write_text(json.dumps(payload, separators=(",", ":")) + "\n")
    return path


def validate(size: str, histograms: dict[str, np.ndarray]) -> list[str]:
    """Differences from the stored reference, one line each (empty: green)."""
    path = reference_path(size)
    if not path.exists():
        return [f"no reference for size {size!r}: make one with --write-reference"]
    stored = json.loads(path.read_text())
    if stored["version"] != SPEC["version"]:
        return [f"{path} is for task version {stored['version']}, not {SPEC['version']}"]
    problems = []
    weighted = {"longitudinal"}
    for name, reference in stored["histograms"].items():
        want = _decode(reference)
        have = histograms.get(name)
        if have is None:
            problems.append(f"{name}: missing")
        elif have.shape != want.shape:
            problems.append(f"{name}: shape {have.shape}, reference {want.shape}")
        elif name in weighted:
            bad = ~np.isclose(have, want, rtol=SPEC["weighted_rtol"], atol=0.0)
            if bad.any():
                problems.append(f"{name}: {bad.sum()} bins differ beyond rtol")
        elif not np.array_equal(have, want):
            problems.append(f"{name}: {np.count_nonzero(have != want)} bins differ")
    return problems


# ------------------------------------------------------------------ timing


def best_of(repeat: int, function: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def count_events(files: list[Path]) -> int:
    import uproot

    total = 0
    for path in files:
        with uproot.open(path) as file:
            total += file["events"].num_entries
    return total


@contextlib.contextmanager
def dask_cluster(workers: int) -> Iterator[Any]:
    """calocoffea's local Dask cluster, started before the clock."""
    from distributed import Client

    from calocoffea.runner import local_cluster

    with local_cluster(workers) as cluster, Client(cluster) as client:
        yield cluster, client


def process_cpu_s() -> float:
    """CPU time of this process so far [s] (user + system)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_split(client: Any, function: Callable[[], Any]) -> dict[str, float]:
    """Wall time of one run of ``function`` and the CPU it took in the client process (with
    the local scheduler) and in each worker [s]."""
    client0, workers0 = process_cpu_s(), client.run(process_cpu_s)
    start = time.perf_counter()
    function()
    wall = time.perf_counter() - start
    client1, workers1 = process_cpu_s(), client.run(process_cpu_s)
    per_worker = [workers1[w] - workers0[w] for w in workers0]
    return {"wall": wall, "client": client1 - client0, "worker": float(np.mean(per_worker))}


def worker_peaks(client: Any) -> list[float]:
    """Peak resident memory of each Dask worker [GiB] (VmHWM)."""

    def peak() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
        return float("nan")

    return sorted(client.run(peak).values())


def metric(implementation: str, mode: str, size: str, events: int, seconds: float,
           workers: int, problems: list[str]) -> dict[str, Any]:  # fmt: skip
    return {
        "task": SPEC["task"],
        "version": SPEC["version"],
        "implementation": implementation,
        "mode": mode,
        "size": size,
        "events": events,
        "wall_s": round(seconds, 4),
        "workers": workers,
        "events_per_s_per_core": round(events / seconds / workers, 1),
        "chunksize": SPEC["chunksize"],
        "validator": "pass" if not problems else "; ".join(problems),
    }


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="full", choices=sorted(SPEC["sizes"]))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/calocoffea-agc"))
    parser.add_argument("--check", action="store_true", help="validate every implementation once")
    parser.add_argument("--write-reference", action="store_true")
    parser.add_argument("--metrics", type=Path, help="write the metrics JSON here")
    parser.add_argument("--readme", action="store_true", help="write the table into README")
    return parser.parse_args(argv)


def check(size: str, sims: list[Path], raws: list[Path]) -> int:
    """Every implementation once against the reference; 0 when all are green."""
    runs = {
        "calocoffea calibrate": lambda: calocoffea_run(raws, "raw"),
        "calocoffea full": lambda: calocoffea_run(sims, "sim"),
        "RDataFrame calibrate": lambda: rdf_run(raws, "raw"),
        "RDataFrame full": lambda: rdf_run(sims, "sim"),
        "RDataFrame full, 2 threads": lambda: rdf_run(sims, "sim", threads=2),
    }
    failed = 0
    for name, function in runs.items():
        problems = validate(size, function())
        print(f"{name:28s} {'pass' if not problems else 'FAIL: ' + '; '.join(problems)}")
        failed += bool(problems)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sims, raws = inputs(args.size, args.workdir)
    if args.write_reference:
        print(write_reference(args.size, calocoffea_run(raws, "raw")))
    if args.check:
        return check(args.size, sims, raws)
    return benchmark(args, sims, raws)


def benchmark(args: argparse.Namespace, sims: list[Path], raws: list[Path]) -> int:
    from calocoffea.machine import describe

    events = count_events(raws)
    rows: list[dict[str, Any]] = []

    def measure(implementation: str, mode: str, workers: int, function: Callable[[], Any],
                validated: bool = True) -> dict[str, Any]:  # fmt: skip
        function()  # warm-up: numba, ROOT's JIT, page cache
        seconds, result = best_of(args.repeat, function)
        problems = validate(args.size, result) if validated else []
        row = metric(implementation, mode, args.size, events, seconds, workers, problems)
        rows.append(row)
        rate = row["events_per_s_per_core"]
        print(f"{implementation:11s} {mode:10s} {workers} core(s) {seconds:7.2f} s "
              f"{rate:9.0f} ev/s/core  {row['validator']}", flush=True)  # fmt: skip
        return row

    pairs = {}
    for mode, stage, files in (("calibrate", "raw", raws), ("full", "sim", sims)):
        pairs[mode] = (
            measure("calocoffea", mode, 1, lambda s=stage, f=files: calocoffea_run(f, s)),
            measure("RDataFrame", mode, 1, lambda s=stage, f=files: rdf_run(f, s)),
        )
    pairs["io"] = (
        measure("calocoffea", "io", 1, lambda: calocoffea_io(raws), validated=False),
        measure("RDataFrame", "io", 1, lambda: rdf_io(raws), validated=False),
    )
    rdf_mt = measure("RDataFrame", "full", 2, lambda: rdf_run(sims, "sim", threads=2))
    _threads(__import__("ROOT"), 0)
    peaks = {}
    dask_rows = {}
    for workers in (1, 2):
        with dask_cluster(workers) as (cluster, client):
            address = cluster.scheduler_address
            dask_rows[workers] = measure(
                "calocoffea", "full dask", workers,
                lambda a=address: calocoffea_run(sims, "sim", scheduler=a),
            )  # fmt: skip
            peaks[workers] = worker_peaks(client)
            if workers == 2:
                split = cpu_split(
                    client, lambda a=address: calocoffea_run(sims, "sim", scheduler=a)
                )
    pairs["full x2"] = (dask_rows[2], rdf_mt)
    scaling = dask_rows[1]["wall_s"] / dask_rows[2]["wall_s"]
    table = _table(args, events, pairs, scaling, peaks, describe())
    table += (
        f" In one 2-worker run ({split['wall']:.2f} s) each worker used {split['worker']:.2f} s "
        f"of CPU, and the client with the local scheduler, on the same two cores, "
        f"{split['client']:.2f} s."
    )
    print()
    print(table)
    if args.metrics:
        args.metrics.write_text(json.dumps({"machine": describe(), "rows": rows}, indent=1))
    if args.readme:
        sys.path.insert(0, str(ROOT_DIR / "reproduce"))
        from _readme import write_block

        write_block("agc", table)
    return 0


def _table(args: argparse.Namespace, events: int, pairs: dict[str, tuple[dict, dict]],
           scaling: float, peaks: dict[int, list[float]], machine: str) -> str:  # fmt: skip
    targets = {"calibrate": ">= 1.5", "full": ">= 1.0", "io": "", "full x2": ""}
    labels = {
        "calibrate": "calibrate + histogram, 1 core",
        "full": "digitise + calibrate + histogram, 1 core",
        "io": "I/O only (read the task's branches), 1 core",
        "full x2": "digitise + calibrate + histogram, 2 cores (Dask 2 workers / RDF 2 threads)",
    }
    lines = [
        f"Task {SPEC['task']} v{SPEC['version']}, size {args.size!r}: {events:,} events "
        f"({SPEC['sizes'][args.size]['files']} ZSTD files), best of {args.repeat}; "
        f"`python benchmarks/agc/agc.py --size {args.size} --readme`, "
        f"{datetime.date.today().isoformat()}, {machine}.",
        "",
        "| step | calocoffea [ev/s/core] | RDataFrame [ev/s/core] | ratio | target | validator |",
        "|---|---|---|---|---|---|",
    ]
    for mode, (ours, theirs) in pairs.items():
        ratio = ours["events_per_s_per_core"] / theirs["events_per_s_per_core"]
        green = "pass" if ours["validator"] == theirs["validator"] == "pass" else "FAIL"
        lines.append(
            f"| {labels[mode]} | {ours['events_per_s_per_core']:,.0f} | "
            f"{theirs['events_per_s_per_core']:,.0f} | {ratio:.2f} | {targets[mode]} | {green} |"
        )
    lines += [
        "",
        f"Dask strong scaling on the full task, 1 -> 2 workers: {scaling:.2f}x (target >= 1.8); "
        f"peak memory per worker {', '.join(f'{p:.2f}' for p in peaks[1])} GiB (1 worker), "
        f"{', '.join(f'{p:.2f}' for p in peaks[2])} GiB (2 workers).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
