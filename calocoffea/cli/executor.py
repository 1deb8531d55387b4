"""Options and output shared by the processing subcommands (digitize, calibrate, histogram)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calocoffea.exceptions import OutputPathError

if TYPE_CHECKING:
    from calocoffea.runner import RunOptions

#: :data:`calocoffea.runner.EXECUTORS`, repeated here: the runner imports coffea (about a
#: second), which ``--help`` and the other subcommands should not wait for.
EXECUTORS = ("iterative", "futures", "dask")


def add_executor_options(parser: argparse.ArgumentParser) -> None:
    """Add --executor, --workers, --chunksize, --scheduler and --no-progress to ``parser``."""
    group = parser.add_argument_group("executor")
    group.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="iterative",
        help="how chunks are processed (default: iterative); results are the same on each",
    )
    group.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes for futures or dask (default: 1)",
    )
    group.add_argument(
        "--chunksize",
        type=int,
        default=50_000,
        metavar="N",
        help="events per chunk (default: 50000)",
    )
    group.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="address of a running Dask scheduler (implies --executor dask)",
    )
    group.add_argument("--no-progress", action="store_true", help="no progress bars")


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
    """Print events and hits in/out of each step, hits removed and flagged by reason."""
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
