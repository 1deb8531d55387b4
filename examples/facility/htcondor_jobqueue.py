#!/usr/bin/env python3
"""Fill calocoffea's histograms on Dask workers that run as HTCondor jobs (dask-jobqueue).

Run it on a submit node (where ``condor_submit`` works) that shares a filesystem with the
worker nodes: the input files, the output directory and the Python environment (or the
container image) must be visible from both. The scheduler runs inside this process; the
workers connect back to it, so the worker nodes must reach this node's scheduler port.

    # print the HTCondor submit description of one worker job and exit (no condor needed)
    python htcondor_jobqueue.py /shared/raw_*.root -o /shared/hists.root --dry-run

    # 20 one-core workers in the same container image as the client
    python htcondor_jobqueue.py /shared/raw_*.root -o /shared/hists.root \\
        --jobs 20 --memory 3GB --container /cvmfs/.../calocoffea:0.1.0

Needs ``pip install dask-jobqueue`` next to calocoffea (``--dry-run`` needs only
dask-jobqueue). See README.md beside this file for the whole plan.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import dask

#: one thread per worker process: numpy's BLAS, OpenMP and numba would otherwise start one
#: thread per core of the node, which the batch slot (one core) does not have
THREAD_LIMITS = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}

#: packages whose versions must agree between this client and every worker
PACKAGES = ("calocoffea", "coffea", "awkward", "uproot", "numpy", "numba", "onnxruntime")

#: entry-point groups through which calocoffea finds geometries and methods
PLUGIN_GROUPS = ("calocoffea.geometries", "calocoffea.calibrations", "calocoffea.reconstructions")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="IN", help="calocoffea ROOT files of one stage")
    p.add_argument("-o", "--output", required=True, metavar="OUT.root", help="output ROOT file")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("--jobs", type=int, default=10, help="HTCondor jobs (one worker each)")
    p.add_argument(
        "--memory",
        default="3GB",
        help="memory of one job; about 1-2 GB per chunk of 50,000 events, plus headroom",
    )
    p.add_argument("--disk", default="2GB", help="scratch disk of one job")
    p.add_argument("--chunksize", type=int, default=50_000, help="events per chunk")
    p.add_argument("--retries", type=int, default=2, help="retries of a failed chunk")
    env = p.add_mutually_exclusive_group()
    env.add_argument(
        "--container",
        metavar="IMAGE",
        help="run each worker in this container image (HTCondor container universe); the "
        "image must hold the same calocoffea as this client",
    )
    env.add_argument(
        "--no-getenv",
        action="store_true",
        help="do not copy this shell's environment into the jobs (default: getenv = True, "
        "for a virtual environment on the shared filesystem)",
    )
    p.add_argument(
        "--python",
        help="Python of the workers (default: this interpreter; 'python3' with --container)",
    )
    p.add_argument("--log-directory", help="directory (shared) for the workers' logs")
    p.add_argument(
        "--lifetime",
        help="retire each worker after this time, e.g. 3h, before the batch system's wall-time "
        "limit kills it; its chunks move to other workers and a new job replaces it",
    )
    p.add_argument(
        "--scheduler-interface",
        metavar="IFACE",
        help="network interface the scheduler listens on (one the worker nodes can reach)",
    )
    p.add_argument(
        "--tls",
        action="store_true",
        help="encrypt and authenticate all connections with a temporary certificate (written "
        "to --shared-temp-directory for the workers)",
    )
    p.add_argument(
        "--shared-temp-directory",
        help="shared directory for the temporary certificate of --tls",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the submit description of one worker job and exit; submits nothing",
    )
    return p.parse_args(argv)


def cluster_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :class:`dask_jobqueue.HTCondorCluster`."""
    job_extra_directives: dict[str, Any] = {}
    if args.container:
        # HTCondor's container universe (Apptainer/Singularity or Docker, as the pool has);
        # some pools use their own attribute instead, e.g. "MY.SingularityImage": '"/cvmfs/..."'
        job_extra_directives["universe"] = "container"
        job_extra_directives["container_image"] = args.container
    elif not args.no_getenv:
        # the jobs inherit PATH, VIRTUAL_ENV, ... of this shell: a venv on a shared filesystem
        job_extra_directives["getenv"] = "True"
    python = args.python or ("python3" if args.container else sys.executable)

    worker_extra_args = ["--no-dashboard"]
    if args.lifetime:
        worker_extra_args += ["--lifetime", args.lifetime, "--lifetime-stagger", "5m"]

    # run by the job's shell before the worker; numba caches compiled code in the job's
    # scratch directory when the installation itself is read-only (container, CVMFS)
    prologue = [f"export {name}={value}" for name, value in THREAD_LIMITS.items()]
    prologue.append("export NUMBA_CACHE_DIR=$_CONDOR_SCRATCH_DIR/numba-cache")

    scheduler_options: dict[str, Any] = {"dashboard_address": ":8787"}
    if args.scheduler_interface:
        scheduler_options["interface"] = args.scheduler_interface
    if args.dry_run:
        # a dry run starts the scheduler on the loopback only and without a dashboard
        scheduler_options = {"host": "127.0.0.1", "dashboard_address": None}

    kwargs: dict[str, Any] = {
        "cores": 1,  # one thread ...
        "processes": 1,  # ... in one worker process per job
        "memory": args.memory,
        "disk": args.disk,
        "python": python,
        "job_extra_directives": job_extra_directives,
        "job_script_prologue": prologue,
        "worker_extra_args": worker_extra_args,
        "scheduler_options": scheduler_options,
        "log_directory": args.log_directory,
        "local_directory": "$_CONDOR_SCRATCH_DIR",  # worker scratch space, expanded by sh
        "death_timeout": 120,  # a worker whose scheduler is gone ends its job
    }
    if args.tls:
        from distributed import Security

        kwargs["security"] = Security.temporary()
        kwargs["protocol"] = "tls://"
        if args.shared_temp_directory:
            # the certificate and key are written there (mode 600); workers read them
            os.makedirs(args.shared_temp_directory, mode=0o700, exist_ok=True)
            kwargs["shared_temp_directory"] = args.shared_temp_directory
    return kwargs


def client_tls_config(security: Any) -> dict[str, Any]:
    """Dask configuration that makes a plain ``Client(address)`` present ``security``'s client
    credentials (file paths or PEM text, both accepted by distributed).

    calocoffea's runner opens its own ``Client(RunOptions.scheduler)``; it reads TLS settings
    from the Dask configuration, so they go there for the duration of the run."""
    if security is None or not security.require_encryption:
        return {}
    return {
        "distributed.comm.require-encryption": True,
        "distributed.comm.tls.ca-file": security.tls_ca_file,
        "distributed.comm.tls.client.cert": security.tls_client_cert,
        "distributed.comm.tls.client.key": security.tls_client_key,
    }


def _worker_environment() -> dict[str, Any]:
    """Runs on a worker: package versions and calocoffea's plugin names there."""
    from importlib.metadata import PackageNotFoundError, entry_points, version

    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    plugins = sorted(
        f"{group}:{ep.name}" for group in PLUGIN_GROUPS for ep in entry_points(group=group)
    )
    return {"versions": versions, "plugins": plugins}


def check_workers(client: Any) -> None:
    """Stop unless every worker runs the client's calocoffea with the same plugins.

    ``get_versions(check=True)`` compares dask's own packages (and the ones named here) and
    reports a mismatch as a warning; calocoffea's versions and plugins are checked here."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client.get_versions(check=True, packages=list(PACKAGES))
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)

    mine = _worker_environment()
    problems = []
    for worker, theirs in sorted(client.run(_worker_environment).items()):
        for name in PACKAGES:
            if theirs["versions"][name] != mine["versions"][name]:
                problems.append(
                    f"{worker}: {name} {theirs['versions'][name] or 'not installed'} "
                    f"(client: {mine['versions'][name] or 'not installed'})"
                )
        missing = sorted(set(mine["plugins"]) - set(theirs["plugins"]))
        if missing:
            problems.append(f"{worker}: plugins not installed there: {', '.join(missing)}")
    if problems:
        raise SystemExit(
            "the workers' software differs from this client's:\n  "
            + "\n  ".join(problems)
            + "\ninstall the same calocoffea on both (same container image or shared "
            "environment); see README.md"
        )


def check_inputs(files: Sequence[str]) -> None:
    remote = [f for f in files if "://" in f]
    if remote:
        raise SystemExit(
            f"{remote[0]}: calocoffea's runner takes paths on a filesystem that the client and "
            "the workers share (see README.md, 'Input files')"
        )


@contextlib.contextmanager
def htcondor_cluster(args: argparse.Namespace) -> Iterator[Any]:
    try:
        from dask_jobqueue import HTCondorCluster
    except ModuleNotFoundError as err:
        raise SystemExit("this script needs dask-jobqueue: pip install dask-jobqueue") from err
    with HTCondorCluster(**cluster_kwargs(args)) as cluster:
        yield cluster


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        with htcondor_cluster(args) as cluster:
            print(cluster.job_script())
        return 0

    check_inputs(args.files)
    from distributed import Client

    from calocoffea.runner import RunOptions, histogram_files

    with htcondor_cluster(args) as cluster:
        print(f"scheduler {cluster.scheduler_address}, dashboard {cluster.dashboard_link}")
        if args.lifetime:
            # workers retire after --lifetime: adaptive scaling submits their replacements
            cluster.adapt(minimum_jobs=args.jobs, maximum_jobs=args.jobs)
        else:
            cluster.scale(jobs=args.jobs)
        with Client(cluster) as client:
            print(f"waiting for the first of {args.jobs} HTCondor jobs to start ...")
            client.wait_for_workers(1, timeout=1800)
            check_workers(client)
            options = RunOptions(
                executor="dask",
                scheduler=cluster.scheduler_address,
                chunksize=args.chunksize,
                retries=args.retries,
                progress=sys.stderr.isatty(),
            )
            with dask.config.set(client_tls_config(cluster.security)):
                result = histogram_files(
                    args.files, args.output, run_options=options, overwrite=args.force
                )
    print(f"wrote {result.output} ({len(result.histograms)} histograms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
