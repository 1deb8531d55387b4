"""Options and output shared by the processing subcommands (digitize, calibrate, histogram)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calocoffea.exceptions import InputFileError, OutputPathError
from calocoffea.io import check_output_path

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
    skip_bad_files: bool = True,
) -> None:
    """Add --executor, --workers, --chunksize, --scheduler, the TLS options,
    --no-progress and (unless ``skip_bad_files`` is False: commands that make their own
    inputs) --skip-bad-files to ``parser`` (with these defaults)."""
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
    # the names of `dask scheduler` and `dask worker`; without them Dask's configuration
    # applies (distributed.comm.tls.*, e.g. DASK_DISTRIBUTED__COMM__TLS__CA_FILE)
    group.add_argument("--tls-ca-file", metavar="PEM", help="CA certificate(s) for Dask TLS")
    group.add_argument("--tls-cert", metavar="PEM", help="certificate (and key) for Dask TLS")
    group.add_argument("--tls-key", metavar="PEM", help="private key, if not in --tls-cert")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")
    if skip_bad_files:
        group.add_argument(
            "--skip-bad-files",
            action="store_true",
            help="leave out input files that cannot be read (damaged, truncated, not events "
            "files) and process the others; they are named in a warning and the summary "
            "(default: the first bad file is an error)",
        )


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
        security=tls_security(args),
    )


def tls_security(args: argparse.Namespace) -> Any:
    """A ``distributed.security.Security`` that requires TLS with the given files, for the
    client, a local scheduler and its workers alike; None when no TLS option is given."""
    files = {
        "--tls-ca-file": args.tls_ca_file,
        "--tls-cert": args.tls_cert,
        "--tls-key": args.tls_key,
    }
    if not any(files.values()):
        return None
    for option, path in files.items():
        if path is not None and not Path(path).is_file():
            raise InputFileError(f"{option} {path}: no such file; give a PEM file")
    if not (args.tls_ca_file and args.tls_cert):
        raise InputFileError(
            "Dask TLS needs --tls-ca-file and --tls-cert (and --tls-key unless the key is in "
            "the certificate file)"
        )
    from distributed.security import Security

    roles = ("client", "scheduler", "worker")  # one certificate serves every role
    return Security(
        tls_ca_file=args.tls_ca_file,
        require_encryption=True,
        **{f"tls_{role}_cert": args.tls_cert for role in roles},
        **{f"tls_{role}_key": args.tls_key for role in roles},
    )


def add_force_option(parser: argparse.ArgumentParser) -> None:
    """Add --force: replace an existing output (without it, an existing output is an error)."""
    parser.add_argument(
        "--force", action="store_true", help="replace the output if it exists (default: refuse)"
    )


def output_path(path: str, force: bool = False) -> Path:
    """``path`` if its directory exists and is writable and, unless ``force``, nothing is
    there yet; else :class:`OutputPathError` (before any work)."""
    target = Path(path).absolute()
    check_output_path(target)
    if not force and os.path.lexists(target):
        raise OutputPathError(
            f"output {target} already exists; choose another output path, or use --force to "
            "replace it"
        )
    return target


def _reasons(counts: dict[str, Any]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in counts.items()) or "none"


def print_cutflow(cutflow: dict[str, Any]) -> None:
    """Print events and hits in/out of each step, hits removed, flagged (and added, e.g.
    noise hits of the effects step) by reason; then the input files skipped as bad, each
    with why."""
    skipped = cutflow.get("skipped_files", {})
    steps = {step: c for step, c in cutflow.items() if step != "skipped_files"}
    if steps:
        _print_steps(steps)
    if skipped:
        print("skipped files:")
        for path, why in skipped.items():
            print(f"  {path}: {why}")


def _print_steps(cutflow: dict[str, Any]) -> None:
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
