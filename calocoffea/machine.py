"""The machine a benchmark or reproduction ran on, and pinning to one core (stdlib only,
so benchmarks can import it before numpy after setting their thread variables)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def describe() -> str:
    """CPU model, cores, system and Python version, for README lines."""
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}"
    )


def pin_to_one_core() -> str:
    """Pin this process (and its children) to the first core it may run on; say what was
    done."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity on this platform)"
    try:
        allowed = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {allowed[0]})
    except OSError as err:
        return f"not pinned ({err})"
    return f"pinned to core {allowed[0]} (of {len(allowed)} allowed)"
