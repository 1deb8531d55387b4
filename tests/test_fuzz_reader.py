"""A short, seeded fuzzing run of the file reader: a damaged file is a CalocoffeaError.

A small valid events file is mutated 200 ways (bytes flipped, zeroed or overwritten with
random bytes, the file cut short), each aimed at one part of the file: the header, the
``events`` TTree's metadata, the ``calocoffea_metadata`` string, the streamers, or anywhere
(mostly baskets). Each copy goes through :func:`~calocoffea.io.read_metadata`,
:func:`~calocoffea.io.read_events` and :func:`~calocoffea.runner.histogram_files`. The only
allowed outcomes are success and a :class:`~calocoffea.exceptions.CalocoffeaError`; any
other exception (uproot's, awkward's, zlib's, struct's...), a crash of the interpreter or a
case that runs longer than :data:`CASE_TIMEOUT_S` is a finding.

The cases run in a child process (this file run as a script), so a segfault or a hang is
recorded instead of taking pytest down; the child is restarted after the case that killed
it. Memory is limited there (:data:`MEMORY_LIMIT_BYTES`), so a length field that asks for
gigabytes is a ``MemoryError`` finding, not a machine that swaps.

To reproduce one case with its full traceback::

    .venv/bin/python tests/test_fuzz_reader.py reproduce 17
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

#: Everything below is fixed, so every run fuzzes the same 200 files.
SEED = 20_240_611
N_CASES = 200
N_EVENTS = 20
CASE_TIMEOUT_S = 30.0
MEMORY_LIMIT_BYTES = 6 << 30
KINDS = ("flip", "zero", "garbage", "truncate")
CALLS = ("read_metadata", "read_events", "histogram_files")


@dataclass(frozen=True)
class Mutation:
    """One damage: ``kind`` at ``offset`` over ``length`` bytes (``truncate``: the file is
    cut at ``offset``); ``value`` is the XOR mask (``flip``) or the seed of the bytes
    (``garbage``); ``region`` says which part of the file was aimed at."""

    kind: str
    region: str
    offset: int
    length: int
    value: int

    def apply(self, data: bytes) -> bytes:
        out = bytearray(data)
        end = min(self.offset + self.length, len(out))
        if self.kind == "truncate":
            return bytes(out[: self.offset])
        if self.kind == "flip":
            for k in range(self.offset, end):
                out[k] ^= self.value
        elif self.kind == "zero":
            out[self.offset : end] = bytes(end - self.offset)
        elif self.kind == "garbage":
            noise = np.random.default_rng(self.value).integers(0, 256, end - self.offset)
            out[self.offset : end] = noise.astype(np.uint8).tobytes()
        else:  # pragma: no cover - KINDS is closed
            raise ValueError(f"unknown mutation kind {self.kind!r}")
        return bytes(out)

    def __str__(self) -> str:
        where = f"in the {self.region}"
        if self.kind == "truncate":
            return f"truncate at byte {self.offset} ({where})"
        what = {
            "flip": f"xor 0x{self.value:02x}",
            "zero": "zeroed",
            "garbage": f"random bytes (seed {self.value})",
        }[self.kind]
        return f"{self.kind} bytes {self.offset}..{self.offset + self.length - 1} {what} ({where})"


def regions(path: Path) -> dict[str, tuple[int, int]]:
    """(start, stop) byte ranges of the parts of a valid events file."""
    import uproot

    with uproot.open(path) as file:
        size = file.file.fEND
        tree = file.key("events")
        meta = file.key("calocoffea_metadata")
        info = file.file.fSeekInfo, file.file.fNbytesInfo
        return {
            "header": (0, file.file.fBEGIN + 100),
            "tree metadata": (tree.fSeekKey, tree.fSeekKey + tree.fNbytes),
            "calocoffea metadata": (meta.fSeekKey, meta.fSeekKey + meta.fNbytes),
            "streamers": (info[0], info[0] + info[1]),
            "file": (0, size),
        }


def mutations(layout: dict[str, tuple[int, int]], n: int, seed: int) -> list[Mutation]:
    """``n`` mutations, kinds and regions drawn uniformly, from one numpy Generator."""
    rng = np.random.default_rng(seed)
    names = sorted(layout)
    out = []
    for _ in range(n):
        kind = KINDS[rng.integers(len(KINDS))]
        region = names[rng.integers(len(names))]
        start, stop = layout[region]
        offset = int(rng.integers(start, stop))
        length = {
            "flip": int(rng.integers(1, 5)),
            "zero": int(rng.integers(1, 257)),
            "garbage": int(rng.integers(1, 65)),
            "truncate": 0,
        }[kind]
        value = int(rng.integers(1, 256)) if kind == "flip" else int(rng.integers(2**31))
        out.append(Mutation(kind, region, offset, length, value))
    return out


def make_sample(directory: Path) -> Path:
    from calocoffea.simulation.beam import Beam
    from calocoffea.simulation.run import simulate

    return simulate(
        "cepc_ahcal", "e-", Beam(energies_gev=(10.0,)), N_EVENTS, 1, directory / "valid.root"
    )


# --------------------------------------------------------------------------- one case


def _frames(err: BaseException) -> list[str]:
    """The innermost frames of ``err``'s traceback, ``file:line function``."""
    frames = traceback.extract_tb(err.__traceback__)[-4:]
    return [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in frames]


def _type_name(err: BaseException) -> str:
    return f"{type(err).__module__}.{type(err).__qualname__}"


def run_case(path: str) -> dict[str, Any]:
    """Each call of :data:`CALLS` on ``path``: ``ok``, ``calocoffea`` (the error's class) or
    ``finding`` (exception type, message, innermost frames)."""
    from calocoffea.exceptions import CalocoffeaError, CalocoffeaWarning
    from calocoffea.io import read_events, read_metadata
    from calocoffea.runner import histogram_files

    calls = {
        "read_metadata": lambda: read_metadata(path),
        "read_events": lambda: read_events(path),
        "histogram_files": lambda: histogram_files([path]),
    }
    results: dict[str, Any] = {}
    for name in CALLS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                calls[name]()
                result: dict[str, Any] = {"outcome": "ok"}
            except CalocoffeaError as err:
                result = {"outcome": "calocoffea", "type": type(err).__name__}
            except Exception as err:  # anything else is what we look for
                kind = _type_name(err)
                if err.__cause__ is not None:  # coffea wraps what a chunk raised
                    kind += f" from {_type_name(err.__cause__)}"
                origin = err.__cause__ or err
                message = " ".join(str(origin).split())[:200]
                result = _finding(kind, message, _frames(origin))
        others = sorted(
            {w.category.__name__ for w in caught if not issubclass(w.category, CalocoffeaWarning)}
        )
        if others:
            result["warnings"] = others
        results[name] = result
    return results


# --------------------------------------------------------------------------- child process


def _child(first: int, directory: Path) -> None:
    """Run cases ``first``, ``first + 1``... of ``directory``; one JSON line per event on
    the original stdout, everything the libraries print goes to stderr."""
    import faulthandler
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    faulthandler.enable()
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    import calocoffea.runner  # noqa: F401 - import once, before the first case's clock

    protocol.write(json.dumps({"ready": True}) + "\n")
    cases = sorted(directory.glob("case-*.root"))
    for k in range(first, len(cases)):
        protocol.write(json.dumps({"start": k}) + "\n")
        results = run_case(str(cases[k]))
        protocol.write(json.dumps({"done": k, "results": results}) + "\n")


def _start(first: int, directory: Path, log: Any) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, "child", str(first), str(directory)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)


def run_cases(directory: Path, n: int) -> dict[int, dict[str, Any]]:
    """Results of cases 0..n-1, a hang or a crash recorded as a finding of its case."""
    results: dict[int, dict[str, Any]] = {}
    log_path = directory / "child.log"
    first = 0
    with open(log_path, "w") as log:
        while first < n:
            child = _start(first, directory, log)
            assert child.stdout is not None
            selector = selectors.DefaultSelector()
            selector.register(child.stdout, selectors.EVENT_READ)
            current, deadline = None, time.monotonic() + 120  # imports
            while True:
                if not selector.select(timeout=max(deadline - time.monotonic(), 0)):
                    child.kill()  # the case (or the imports) ran out of time
                    child.wait()
                    if current is None:
                        raise RuntimeError(f"the fuzzing child did not start; see {log_path}")
                    message = f"still running after {CASE_TIMEOUT_S} s"
                    results[current] = {"child": _finding("hang", message, [])}
                    first = current + 1
                    break
                line = child.stdout.readline()
                if not line:  # the child died
                    code = child.wait()
                    if current is None:
                        raise RuntimeError(f"the fuzzing child failed ({code}); see {log_path}")
                    message = f"interpreter died, exit status {code}"
                    results[current] = {"child": _finding("crash", message, _tail(log_path))}
                    first = current + 1
                    break
                event = json.loads(line)
                if "start" in event:
                    current, deadline = event["start"], time.monotonic() + CASE_TIMEOUT_S
                elif "done" in event:
                    results[event["done"]] = event["results"]
                    current, deadline = None, time.monotonic() + CASE_TIMEOUT_S
                    if event["done"] == n - 1:
                        child.wait(timeout=30)
                        first = n
                        break
            selector.close()
            child.stdout.close()
    return results


def _finding(kind: str, message: str, frames: list[str]) -> dict[str, Any]:
    return {"outcome": "finding", "type": kind, "message": message, "frames": frames}


def _tail(path: Path, lines: int = 6) -> list[str]:
    return Path(path).read_text(errors="replace").splitlines()[-lines:]


def _findings(
    results: dict[int, dict[str, Any]], cases: list[Mutation]
) -> dict[tuple[str, str, str], list[int]]:
    """Cases by (call, exception type, innermost frame)."""
    found: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for k, per_call in sorted(results.items()):
        for call, result in per_call.items():
            if result["outcome"] == "finding":
                frame = result["frames"][-1] if result["frames"] else ""
                found[call, result["type"], frame].append(k)
    return found


def report(results: dict[int, dict[str, Any]], cases: list[Mutation]) -> str:
    """The findings, one paragraph per kind, with a reproduction of its first case."""
    lines = []
    for (call, kind, _), ks in sorted(_findings(results, cases).items(), key=lambda i: -len(i[1])):
        first = results[ks[0]][call]
        kinds = sorted({cases[k].kind for k in ks})
        lines += [
            f"{call}: {kind} in {len(ks)} case(s) ({', '.join(kinds)}): {first['message']}",
            f"    at {' <- '.join(reversed(first['frames']))}",
            f"    e.g. case {ks[0]}: {cases[ks[0]]}; cases {ks[:12]}",
            f"    reproduce: .venv/bin/python tests/test_fuzz_reader.py reproduce {ks[0]}",
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Mutation]]:
    directory = tmp_path_factory.mktemp("fuzz")
    valid = make_sample(directory)
    data = valid.read_bytes()
    cases = mutations(regions(valid), N_CASES, SEED)
    for k, mutation in enumerate(cases):
        (directory / f"case-{k:03d}.root").write_bytes(mutation.apply(data))
    return directory, cases


def test_mutations_are_seeded_and_cover_every_kind_and_region(
    fuzzed: tuple[Path, list[Mutation]],
) -> None:
    directory, cases = fuzzed
    assert cases == mutations(regions(directory / "valid.root"), N_CASES, SEED)
    assert {c.kind for c in cases} == set(KINDS)
    assert {c.region for c in cases} == set(regions(directory / "valid.root"))
    valid = (directory / "valid.root").read_bytes()
    changed = [(directory / f"case-{k:03d}.root").read_bytes() != valid for k in range(N_CASES)]
    assert sum(changed) >= 0.95 * N_CASES  # zeroing bytes that are zero changes nothing


def test_damaged_files_give_success_or_a_calocoffea_error(
    fuzzed: tuple[Path, list[Mutation]],
) -> None:
    directory, cases = fuzzed
    results = run_cases(directory, len(cases))
    assert sorted(results) == list(range(len(cases)))
    (directory / "results.json").write_text(
        json.dumps(
            {k: {"mutation": asdict(cases[k]), "results": r} for k, r in results.items()}, indent=1
        )
    )
    # the run is worth something: many copies are damaged beyond reading (bytes flipped in
    # a float basket are not: ROOT files have no checksums, such copies read fine)
    refused = sum(r.get("read_events", r.get("child"))["outcome"] != "ok" for r in results.values())
    assert refused >= N_CASES // 5
    findings = report(results, cases)
    assert not findings, f"damaged files raised other errors than CalocoffeaError:\n{findings}"


# --------------------------------------------------------------------------- script


def _reproduce(k: int) -> None:
    """Rebuild case ``k`` in a temporary directory and run each call with its traceback."""
    from calocoffea.exceptions import CalocoffeaError
    from calocoffea.io import read_events, read_metadata
    from calocoffea.runner import histogram_files

    with tempfile.TemporaryDirectory() as tmp:
        valid = make_sample(Path(tmp))
        mutation = mutations(regions(valid), N_CASES, SEED)[k]
        path = Path(tmp) / f"case-{k:03d}.root"
        path.write_bytes(mutation.apply(valid.read_bytes()))
        print(f"case {k}: {mutation}")
        calls = {
            "read_metadata": read_metadata,
            "read_events": read_events,
            "histogram_files": lambda p: histogram_files([p]),
        }
        for name, call in calls.items():
            try:
                call(path)
                print(f"{name}: ok")
            except CalocoffeaError as err:
                print(f"{name}: {type(err).__name__}: {err}")
            except Exception:
                print(f"{name}: FINDING")
                traceback.print_exc()


if __name__ == "__main__":
    if sys.argv[1] == "child":
        _child(int(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1] == "reproduce":
        _reproduce(int(sys.argv[2]))
    else:
        sys.exit("usage: test_fuzz_reader.py reproduce CASE")
