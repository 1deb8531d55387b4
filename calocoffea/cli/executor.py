"""Options and output shared by the processing subcommands (digitize, calibrate, histogram)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calocoffea.exceptions import OutputPathError

if TYPE_CHECKING:
    from calocoffea.runner import RunOptions

#: :data:`calocoffea.runner.EXECUTORS`, repeated here: the runner imports coffea (about a
#: second), which ``--help`` and the other subcommands should not wait for.
EXECUTORS = ("iterative", "futures", "dask")


def add_executor_options(
    parser: argparse.ArgumentParser,
    *,
    executor: str = "iterative",
    workers: int = 1,
    chunksize: int = 50_000,
) -> None:
    """Add --executor, --workers, --chunksize, --scheduler and --no-progress to ``parser``
    (with these defaults)."""
    group = parser.add_argument_group("executor")
    group.add_argument(
        "--executor",
        choices=EXECUTORS,
        default=executor,
        help=f"how chunks are processed (default: {executor}); results are the same on each",
    )
    group.add_argument(
        "--workers",
        type=int,
        default=workers,
        metavar="N",
        help=f"worker processes for futures or dask (default: {workers})",
    )
    group.add_argument(
        "--chunksize",
        type=int,
        default=chunksize,
        metavar="N",
        help=f"events per chunk (default: {chunksize})",
    )
    group.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="address of a running Dask scheduler (implies --executor dask)",
    )
    group.add_argument("--no-progress", action="store_true", help="no progress bars")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def run_options(args: argparse.Namespace) -> RunOptions:
    """The :class:`RunOptions` of parsed executor options; a scheduler implies dask."""
    from calocoffea.runner import RunOptions

    executor = "dask" if args.scheduler else args.executor
    return RunOptions(
        executor=executor,
        workers=args.workers,
        chunksize=args.chunksize,
        scheduler=args.scheduler or None,
        progress=not args.no_progress and sys.stderr.isatty(),
    )


def output_path(path: str) -> Path:
    """``path`` if its directory exists, else :class:`OutputPathError` (before any work)."""
    target = Path(path).absolute()
    if not target.parent.is_dir():
        raise OutputPathError(
            f"cannot write {target}: directory {target.parent} does not exist; create it first"
        )
    return target


def _reasons(counts: dict[str, Any]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in counts.items()) or "none"


def print_cutflow(cutflow: dict[str, Any]) -> None:
    """Print events and hits in/out of each step, hits removed, flagged (and added, e.g.
    noise hits of the effects step) by reason."""
    if not cutflow:
        return
    width = max(len(step) for step in cutflow)
    print("cutflow:")
    for step, c in cutflow.items():
        print(
            f"  {step:<{width}}  events {c['events_in']} -> {c['events_out']}, "
            f"hits {c['hits_in']} -> {c['hits_out']}"
        )
        print(f"  {'':<{width}}  removed: {_reasons(c.get('removed', {}))}")
        print(f"  {'':<{width}}  flagged: {_reasons(c.get('flagged', {}))}")
        if c.get("added"):
            print(f"  {'':<{width}}  added: {_reasons(c['added'])}")
