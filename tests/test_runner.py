"""The runner: the same per-event arrays, histograms and cutflow on every executor and chunking."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from calocoffea.conditions import nominal
from calocoffea.constants import nominal_constants
from calocoffea.io import read_events, read_metadata
from calocoffea.runner import (
    RunOptions,
    RunResult,
    calibrate_files,
    digitize_files,
    histogram_files,
)
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate

N_E, N_MU = 1000, 1600  # per electron energy point, muons
N_EVENTS = 2 * N_E + N_MU  # coffea cuts round(entries / chunksize) chunks per file


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runner")


@pytest.fixture(scope="module")
def sim_files(workdir: Path) -> list[Path]:
    """Two files (two UUIDs): electrons and muons."""
    electrons = simulate(
        "cepc_ahcal", "e-", Beam(energies_gev=(10.0, 40.0)), N_E, 3, workdir / "e.root"
    )
    muons = simulate(
        "cepc_ahcal", "mu-", Beam(energies_gev=(10.0,), uniform=True), N_MU, 4,
        workdir / "mu.root",
    )  # fmt: skip
    return [electrons, muons]


@pytest.fixture(scope="module")
def dask_scheduler(workdir: Path) -> Iterator[str]:
    """A Dask scheduler and a 2-process worker started as separate processes on localhost."""
    if shutil.which("dask", path=os.path.dirname(sys.executable)) is None:
        pytest.skip("the dask command line is not installed")
    dask = os.path.join(os.path.dirname(sys.executable), "dask")
    scheduler_file = workdir / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    scheduler = subprocess.Popen(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(scheduler_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    workers = None
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        workers = subprocess.Popen(
            [dask, "worker", address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        _wait_for_workers(address, 2)
        yield address
    finally:
        for process in (workers, scheduler):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)


def _wait_for_workers(address: str, n: int) -> None:
    from distributed import Client

    with Client(address, timeout=30) as client:
        client.wait_for_workers(n, timeout=60)


EXECUTORS = {
    "iterative": RunOptions("iterative", chunksize=1000),
    "futures": RunOptions("futures", workers=2, chunksize=1000),
    "dask-local": RunOptions("dask", workers=2, chunksize=1000),
}


def _options(name: str, request: pytest.FixtureRequest) -> RunOptions:
    if name == "dask-scheduler":
        return RunOptions(
            "dask", chunksize=1000, scheduler=request.getfixturevalue("dask_scheduler")
        )
    if name == "iterative-50000":
        return RunOptions("iterative", chunksize=50_000)
    return EXECUTORS[name]


RUNS = ["iterative", "futures", "dask-local", "dask-scheduler", "iterative-50000"]


@pytest.fixture(scope="module")
def results(
    sim_files: list[Path], workdir: Path, request: pytest.FixtureRequest
) -> dict[str, tuple[RunResult, RunResult, Path]]:
    """Digitise and calibrate+histogram on every executor (and a second chunk size)."""
    constants = nominal_constants(nominal("cepc_ahcal"))
    out = {}
    for name in RUNS:
        options = _options(name, request)
        raw = workdir / f"raw-{name}.root"
        digitized = digitize_files(sim_files, raw, seed=11, run_options=options)
        histograms = histogram_files([raw], None, constants=constants, run_options=options)
        out[name] = (digitized, histograms, raw)
    return out


def _arrays(path: Path) -> dict[str, np.ndarray]:
    events = read_events(path)
    out = {f: ak.to_numpy(events[f]) for f in events.fields if f != "hits"}
    out |= {f"hit_{f}": ak.to_numpy(ak.flatten(events.hits[f])) for f in events.hits.fields}
    out["nhit"] = ak.to_numpy(ak.num(events.hits))
    return out


@pytest.mark.parametrize("name", RUNS[1:])
def test_per_event_arrays_bit_identical(results: dict, name: str) -> None:
    reference, other = _arrays(results["iterative"][2]), _arrays(results[name][2])
    assert reference.keys() == other.keys()
    for key in reference:
        assert np.array_equal(reference[key], other[key]), key


@pytest.mark.parametrize("name", RUNS[1:])
def test_histograms_across_executors(results: dict, name: str) -> None:
    reference, other = results["iterative"][1].histograms, results[name][1].histograms
    assert reference.keys() == other.keys()
    same_chunking = name != "iterative-50000"
    for key, h in reference.items():
        a, b = h.view(flow=True), other[key].view(flow=True)
        if np.issubdtype(a.dtype, np.integer) or same_chunking:
            assert np.array_equal(a, b), key  # counts always, weights at fixed chunking
        else:
            assert np.allclose(a, b, rtol=1e-12, atol=0), key
            assert not np.issubdtype(a.dtype, np.integer)


@pytest.mark.parametrize("name", RUNS)
def test_cutflow_events_conserved_and_hits_add_up(
    results: dict, name: str, sim_files: list[Path]
) -> None:
    digitized, histograms, raw = results[name]
    step = digitized.cutflow["digitize"]
    assert step["events_in"] == step["events_out"] == N_EVENTS
    assert step["hits_in"] - sum(step["removed"].values()) == step["hits_out"]
    n_sim = sum(int(ak.sum(ak.num(read_events(f).hits))) for f in sim_files)
    assert step["hits_in"] == n_sim
    assert int(ak.sum(ak.num(read_events(raw).hits))) == step["hits_out"]
    assert step["removed"]["below_threshold"] > 0
    for counts in histograms.cutflow.values():
        assert counts["events_in"] == counts["events_out"] == N_EVENTS
        assert counts["hits_in"] - sum(counts["removed"].values()) == counts["hits_out"]
        assert counts["hits_in"] == step["hits_out"]
    assert digitized.cutflow == results["iterative"][0].cutflow


def test_chunks_cut_events_differently(results: dict) -> None:
    """The comparison is not vacuous: chunk size 1000 made several chunks per file."""
    assert len(results["iterative"][0].shards) == 2 + 2
    assert len(results["iterative-50000"][0].shards) == 2


def test_outputs_say_stage_and_provenance(results: dict, workdir: Path) -> None:
    raw = results["iterative"][2]
    metadata = read_metadata(raw)
    assert metadata.stage == "raw" and metadata.geometry == "cepc_ahcal"
    assert metadata.extra["seed"] == 11 and metadata.extra["conditions"] == "nominal"
    calibrated = calibrate_files(
        [raw], workdir / "mip.root", nominal_constants(nominal("cepc_ahcal"))
    )
    assert read_metadata(calibrated.output).stage == "mip"
    events = read_events(calibrated.output)
    assert ak.all(events.hits.energy > 0.2)  # above the 0.5 MIP threshold, up to noise
    assert not list(workdir.glob(".*shards*"))  # shard directories are cleaned up


def test_root_reads_histograms_and_raw_tree(results: dict, workdir: Path) -> None:
    from calocoffea.runner import write_histograms

    root = pytest.importorskip("ROOT")
    histograms = results["iterative"][1].histograms
    path = write_histograms(histograms, workdir / "h.root")
    f = root.TFile.Open(str(path))
    try:
        energy_sum = f.Get("energy_sum")
        assert energy_sum.InheritsFrom("TH2")
        assert energy_sum.GetEntries() == pytest.approx(N_EVENTS)
        longitudinal = f.Get("longitudinal")
        reference = histograms["longitudinal"].values().sum()
        assert longitudinal.Integral() == pytest.approx(reference, rel=1e-12)
        assert f.Get("occupancy").InheritsFrom("TH3")
    finally:
        f.Close()
    frame = root.RDataFrame("events", str(results["iterative"][2]))
    assert frame.Count().GetValue() == N_EVENTS
    assert frame.Sum("nhit").GetValue() == results["iterative"][0].cutflow["digitize"]["hits_out"]
    from hist import serialization

    side = json.loads(path.with_name("h.root.json").read_text())
    restored = serialization.from_uhi(side["cell_energy"])
    assert np.array_equal(restored.values(flow=True), histograms["cell_energy"].values(flow=True))
