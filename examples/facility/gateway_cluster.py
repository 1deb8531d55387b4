#!/usr/bin/env python3
"""Fill calocoffea's histograms on a Dask cluster started by a dask-gateway server.

Facilities that run dask-gateway (often behind JupyterHub) usually preset its address and
authentication in the Dask configuration of their notebooks; elsewhere pass --address and
--auth. The gateway starts a scheduler and workers for you, in the facility's image, and
every connection to them is TLS with a certificate made for this cluster.

    # the options this gateway offers (worker cores, memory, image, ...)
    python gateway_cluster.py --list-options

    # between 1 and 20 one-core workers, 4 GiB each, in the image that holds calocoffea
    python gateway_cluster.py /shared/raw_*.root -o /shared/hists.root \\
        --maximum 20 --option worker_memory=4 --option image=REGISTRY/calocoffea:0.1.0

    # the facility's image has no calocoffea: pip install a pinned wheel on every worker
    python gateway_cluster.py /shared/raw_*.root -o /shared/hists.root \\
        --pip "calocoffea @ file:///shared/wheels/calocoffea-0.1.0-py3-none-any.whl"

Needs ``pip install dask-gateway`` next to calocoffea. See README.md beside this file.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import dask

#: one thread per worker process (numpy's BLAS, OpenMP, numba); numba's cache in a writable
#: place, as the image's site-packages may be read-only
WORKER_ENVIRONMENT = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "NUMBA_CACHE_DIR": "/tmp/numba-cache",
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
    p.add_argument("files", nargs="*", metavar="IN", help="calocoffea ROOT files of one stage")
    p.add_argument("-o", "--output", metavar="OUT.root", help="output ROOT file")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument(
        "--address", help="gateway address (default: gateway.address of the Dask config)"
    )
    p.add_argument("--proxy-address", help="gateway scheduler proxy (default: from the config)")
    p.add_argument(
        "--auth",
        choices=("basic", "kerberos", "jupyterhub"),
        help="authentication (default: gateway.auth.type of the Dask config)",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a cluster option of this gateway (see --list-options); VALUE is read as JSON "
        'where it can be, e.g. worker_memory=4, image="..."; repeat for several',
    )
    p.add_argument("--list-options", action="store_true", help="print the options and exit")
    p.add_argument("--minimum", type=int, default=1, help="fewest workers (adaptive)")
    p.add_argument("--maximum", type=int, default=10, help="most workers (adaptive)")
    p.add_argument(
        "--pip",
        action="append",
        default=[],
        metavar="REQUIREMENT",
        help="pip install this on every worker (PipInstall plugin; pin it to this client's "
        "version); the image is the better place for it",
    )
    p.add_argument("--chunksize", type=int, default=50_000, help="events per chunk")
    p.add_argument("--retries", type=int, default=2, help="retries of a failed chunk")
    args = p.parse_args(argv)
    if not args.list_options and not (args.files and args.output):
        p.error("give input files and --output (or --list-options)")
    return args


def gateway_from(args: argparse.Namespace) -> Any:
    try:
        from dask_gateway import Gateway
    except ModuleNotFoundError as err:
        raise SystemExit("this script needs dask-gateway: pip install dask-gateway") from err
    return Gateway(address=args.address, proxy_address=args.proxy_address, auth=args.auth)


def cluster_options(gateway: Any, settings: Sequence[str]) -> Any:
    """The gateway's options with one core per worker, the thread limits and ``settings``."""
    options = gateway.cluster_options()
    if "worker_cores" in options:
        options["worker_cores"] = 1
    if "environment" in options:
        options["environment"] = {**options["environment"], **WORKER_ENVIRONMENT}
    for setting in settings:
        key, sep, text = setting.partition("=")
        if not sep:
            raise SystemExit(f"--option {setting!r}: write KEY=VALUE")
        if key not in options:
            raise SystemExit(f"--option {key}: this gateway offers {', '.join(options)}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        options[key] = value
    return options


def client_tls_config(security: Any) -> dict[str, Any]:
    """Dask configuration that makes a plain ``Client(address)`` use the cluster's TLS
    credentials (PEM text; dask-gateway makes one self-signed certificate per cluster).

    calocoffea's runner opens its own ``Client(RunOptions.scheduler)``; it reads TLS settings
    from the Dask configuration, so they go there for the duration of the run."""
    return {
        "distributed.comm.require-encryption": True,
        "distributed.comm.tls.ca-file": security.tls_cert,
        "distributed.comm.tls.client.cert": security.tls_cert,
        "distributed.comm.tls.client.key": security.tls_key,
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
            + "\ninstall the same calocoffea on both (same image, or --pip with a pinned "
            "version); see README.md"
        )


def check_inputs(files: Sequence[str]) -> None:
    remote = [f for f in files if "://" in f]
    if remote:
        raise SystemExit(
            f"{remote[0]}: calocoffea's runner takes paths on a filesystem that the client and "
            "the workers share (see README.md, 'Input files')"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.list_options:
        check_inputs(args.files)
    # not `with gateway:` -- dask-gateway closes it again when it is collected, and that
    # second close raises; the cluster below closes its connection to the gateway
    gateway = gateway_from(args)
    options = cluster_options(gateway, args.option)
    if args.list_options:
        for key, value in options.items():
            print(f"{key} = {value!r}")
        return 0
    result = run(gateway, options, args)
    print(f"wrote {result.output} ({len(result.histograms)} histograms)")
    return 0


def run(gateway: Any, options: Any, args: argparse.Namespace) -> Any:
    """Start a cluster with ``options``, check its workers, fill the histograms, shut it down."""
    from distributed import PipInstall

    from calocoffea.runner import RunOptions, histogram_files

    with gateway.new_cluster(cluster_options=options) as cluster:
        print(f"cluster {cluster.name}, dashboard {cluster.dashboard_link}")
        cluster.adapt(minimum=max(args.minimum, 1), maximum=args.maximum)
        with cluster.get_client(set_as_default=False) as client:
            if args.pip:
                # installed on every worker that joins, then the worker restarts to load it
                client.register_plugin(
                    PipInstall(packages=args.pip, restart_workers=True), name="calocoffea-pip"
                )
            print("waiting for the first worker ...")
            client.wait_for_workers(1, timeout=1800)
            check_workers(client)
            run_options = RunOptions(
                executor="dask",
                scheduler=cluster.scheduler_address,
                chunksize=args.chunksize,
                retries=args.retries,
                progress=sys.stderr.isatty(),
            )
            with dask.config.set(client_tls_config(cluster.security)):
                return histogram_files(
                    args.files, args.output, run_options=run_options, overwrite=args.force
                )


if __name__ == "__main__":
    sys.exit(main())
