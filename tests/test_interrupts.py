"""An interrupted run (SIGINT or SIGKILL) leaves no partial output, and the next run succeeds.

The job runs as a user runs it, `calocoffea digitize` in a child process; the signal arrives
once the run is writing its per-chunk shards (its hidden shard directory holds a file)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calocoffea.io import read_metadata
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("interrupt")
    return simulate("cepc_ahcal", "e-", Beam(energies_gev=(50.0,)), 1500, 4, directory / "s.root")


def _digitize(sim: Path, output: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "calocoffea.cli.main", "digitize", str(sim), "-o",
               str(output), "--chunksize", "20", "--no-progress"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_shards(
    output: Path, process: subprocess.Popen[bytes], timeout_s: float = 120
) -> None:
    """Until the run has written a shard (or ended, which fails the test)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        shards = [p for d in output.parent.glob(f".{output.name}-shards-*") for p in d.iterdir()]
        if shards:
            return
        assert process.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.02)
    raise AssertionError("no shard appeared")


def _leftovers(output: Path) -> list[str]:
    return sorted(p.name for p in output.parent.iterdir() if p.name.startswith(f".{output.name}"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_digitize_leaves_no_output(sim: Path, tmp_path: Path, sig: int) -> None:
    output = tmp_path / "raw.root"
    process = _digitize(sim, output)
    _wait_for_shards(output, process)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    assert not output.exists()
    if sig == signal.SIGINT:  # the run cleans up after itself and says so
        assert process.returncode == 130
        assert "interrupted; no output was left" in stderr.decode()
        assert _leftovers(output) == [], stderr.decode()
    else:  # nothing could: the hidden shard directory stays until the next run
        assert _leftovers(output)
    again = _digitize(sim, output)
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr.decode()
    assert read_metadata(output).stage == "raw"
    assert _leftovers(output) == []  # the killed run's shards were removed as stale
