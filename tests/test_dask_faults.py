"""A Dask worker killed (SIGKILL) while it holds a chunk: the run still gives the undisturbed
result, bin for bin, and the cutflow counts every event once.

A scheduler and a worker command with two worker processes (each under a nanny, which
restarts a worker that dies) run as separate processes on localhost, as on a facility. The
chunks wait at a gate (:mod:`_gated`) until both worker processes hold one; the test then
kills one of them and opens the gate. No sleep decides anything: every wait is for a
condition, with a deadline.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _gated import GatedHistogramProcessor, started

from calocoffea.conditions import nominal
from calocoffea.constants import nominal_constants
from calocoffea.runner import RunOptions, RunResult, digitize_files, histogram_files
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate

ENERGIES_GEV = (10.0, 30.0)
N_FILES, N_PER_ENERGY, CHUNKSIZE = 3, 30, 20
N_EVENTS = N_PER_ENERGY * len(ENERGIES_GEV)  # per file: 3 chunks each
TESTS = Path(__file__).resolve().parent


def _wait(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s} s for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dask-faults")


@pytest.fixture(scope="module")
def raw_files(workdir: Path) -> list[Path]:
    """Three digitised files of electrons at two energies."""
    files = []
    for k in range(N_FILES):
        sim = simulate(
            "cepc_ahcal",
            "e-",
            Beam(energies_gev=ENERGIES_GEV),
            N_PER_ENERGY,
            20 + k,
            workdir / f"sim-{k}.root",
        )
        files.append(digitize_files([sim], workdir / f"raw-{k}.root", seed=3).output)
    return files


@pytest.fixture(scope="module")
def cluster(workdir: Path) -> Iterator[str]:
    """The address of a localhost scheduler with two worker processes (under nannies) that
    can import the tests' helper modules."""
    from distributed import Client

    dask = Path(sys.executable).parent / "dask"
    if not dask.exists():
        pytest.skip(f"the dask command line is not installed ({dask})")
    scheduler_file = workdir / "scheduler.json"
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False", "PYTHONPATH": path}
    log = open(workdir / "cluster.log", "w")  # closed at teardown

    def spawn(*args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(dask), *args, "--no-dashboard"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group, for the last resort below
        )

    processes = [spawn("scheduler", "--host", "127.0.0.1", "--port", "0",
                       "--scheduler-file", str(scheduler_file))]  # fmt: skip
    try:
        _wait(scheduler_file.exists, 60, "the scheduler file")
        _wait(lambda: "address" in scheduler_file.read_text(), 10, "the scheduler address")
        address = json.loads(scheduler_file.read_text())["address"]
        processes.append(spawn("worker", address, "--nworkers", "2", "--nthreads", "1",
                               "--local-directory", str(workdir / "workers")))  # fmt: skip
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for process in reversed(processes):  # the workers while the scheduler still runs
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its own group: only what it started
                process.wait()
        log.close()


class Killer(threading.Thread):
    """Waits until two worker processes each hold a chunk, SIGKILLs one of them, then opens
    the gate (also when something went wrong, so that the run ends)."""

    def __init__(self, gate: Path) -> None:
        super().__init__(daemon=True)
        self.gate = gate
        self.killed: int | None = None
        self.chunk: str | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            _wait(
                lambda: len({pid for pid, _ in started(self.gate)}) >= 2,
                60,
                "two worker processes holding a chunk",
            )
            pid, chunk = sorted(started(self.gate))[0]
            os.kill(pid, signal.SIGKILL)
            self.killed, self.chunk = pid, chunk
        except BaseException as err:  # reported by the test
            self.error = err
        finally:
            (self.gate / "release").touch()


def _assert_same_histograms(result: RunResult, reference: RunResult) -> None:
    assert result.histograms.keys() == reference.histograms.keys()
    for name, h in reference.histograms.items():
        np.testing.assert_array_equal(
            result.histograms[name].values(flow=True), h.values(flow=True), err_msg=name
        )


def test_killed_worker_changes_nothing(
    raw_files: list[Path], cluster: str, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    constants = nominal_constants(nominal("cepc_ahcal"))
    reference = histogram_files(
        raw_files, constants=constants, run_options=RunOptions(chunksize=CHUNKSIZE)
    )
    gate = workdir / "gate"
    shutil.rmtree(gate, ignore_errors=True)
    gate.mkdir()
    monkeypatch.setattr(
        "calocoffea.processors.histogram.HistogramProcessor",
        functools.partial(GatedHistogramProcessor, gate=str(gate)),
    )
    killer = Killer(gate)
    killer.start()
    options = RunOptions("dask", scheduler=cluster, chunksize=CHUNKSIZE, retries=2)
    try:
        result = histogram_files(raw_files, constants=constants, run_options=options)
    finally:
        (gate / "release").touch()
        killer.join(timeout=10)
    if killer.error is not None:
        raise killer.error
    # the kill happened while the worker held a chunk, and that chunk ran again elsewhere
    assert killer.killed is not None
    runs = Counter(chunk for _, chunk in started(gate))
    assert len(runs) == N_FILES * N_EVENTS // CHUNKSIZE
    assert runs[killer.chunk] >= 2, f"the killed chunk {killer.chunk} did not run again"
    # and the result is that of an undisturbed run
    _assert_same_histograms(result, reference)
    assert result.cutflow == reference.cutflow
    for step, counts in result.cutflow.items():
        assert counts["events_in"] == N_FILES * N_EVENTS, step
