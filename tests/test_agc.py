"""The side-by-side benchmark task (benchmarks/agc): both implementations give the stored
reference histograms bin by bin, and the validator catches a difference."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ROOT")

AGC = Path(__file__).resolve().parents[1] / "benchmarks" / "agc" / "agc.py"


@pytest.fixture(scope="module")
def agc():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("agc", AGC)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_implementation_matches_the_reference(tmp_path: Path) -> None:
    """calocoffea (calibrate; digitise + calibrate) and RDataFrame (the same, and on 2
    threads) against the stored ``tiny`` reference, in a fresh process as a user runs it."""
    done = subprocess.run(
        [sys.executable, str(AGC), "--size", "tiny", "--check", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    verdicts = [line for line in done.stdout.splitlines() if line.startswith(("calo", "RData"))]
    assert len(verdicts) == 5
    assert all(line.rstrip().endswith("pass") for line in verdicts), done.stdout


def test_validator_finds_one_changed_bin(agc) -> None:  # type: ignore[no-untyped-def]
    stored = json.loads(agc.reference_path("tiny").read_text())["histograms"]
    reference = {name: agc._decode(h) for name, h in stored.items()}
    assert agc.validate("tiny", reference) == []
    nhit = reference["nhit"].copy()
    nhit[1, np.argmax(nhit[1])] += 1
    assert agc.validate("tiny", dict(reference, nhit=nhit)) == ["nhit: 1 bins differ"]
    weighted = dict(reference, longitudinal=reference["longitudinal"] * (1 + 1e-9))
    assert agc.validate("tiny", weighted)[0].startswith("longitudinal:")
    assert agc.validate("tiny", {})[0] == "energy_sum: missing"
