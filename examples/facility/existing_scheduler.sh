#!/usr/bin/env bash
# calocoffea on a Dask cluster that is already running: the facility (Coffea-casa, an analysis
# facility's JupyterHub, a colleague's `dask scheduler`) hands you its scheduler address.
#
#   SCHEDULER=tcp://scheduler.example:8786 ./existing_scheduler.sh /shared/raw_*.root
#   SCHEDULER=tls://localhost:8786 OUT=/shared/hists.root ./existing_scheduler.sh /shared/raw_*.root
#
# The same command, from the laptop to the facility (results are identical on every executor):
#
#   calocoffea histogram raw.root -o hists.root                                   # iterative
#   calocoffea histogram raw.root -o hists.root --executor futures --workers 4    # process pool
#   calocoffea histogram raw.root -o hists.root --executor dask --workers 4       # local Dask
#   calocoffea histogram raw.root -o hists.root --scheduler tcp://host:8786       # facility Dask
#
# A tls:// scheduler needs this client's certificate in the Dask configuration, which the
# facility's notebook usually sets already; otherwise export (paths to PEM files):
#
#   export DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True
#   export DASK_DISTRIBUTED__COMM__TLS__CA_FILE=/path/to/ca.pem
#   export DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT=/path/to/cert.pem
#   export DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY=/path/to/key.pem
#
# The input files and the output directory must be visible under the same paths here and on
# every worker (a shared filesystem); see README.md beside this file.
set -euo pipefail

: "${SCHEDULER:?set SCHEDULER to the scheduler address, e.g. tcp://host:8786}"
OUT=${OUT:-hists.root}
CHUNKSIZE=${CHUNKSIZE:-50000}
PYTHON=${PYTHON:-python3}
if [ "$#" -eq 0 ]; then
    echo "usage: SCHEDULER=tcp://host:8786 [OUT=hists.root] $0 IN.root [IN.root ...]" >&2
    exit 2
fi

# 1. The workers must run the calocoffea of this shell, installed (its plugins are entry
#    points): compare versions and plugin names before sending any work.
"$PYTHON" - "$SCHEDULER" <<'PY'
import sys
import warnings
from importlib.metadata import PackageNotFoundError, entry_points, version

from distributed import Client

PACKAGES = ["calocoffea", "coffea", "awkward", "uproot", "numpy", "numba", "onnxruntime"]
GROUPS = ["calocoffea.geometries", "calocoffea.calibrations", "calocoffea.reconstructions"]


def environment():
    def v(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    plugins = sorted(f"{g}:{ep.name}" for g in GROUPS for ep in entry_points(group=g))
    return {"versions": {p: v(p) for p in PACKAGES}, "plugins": plugins}


with Client(sys.argv[1], timeout=30) as client:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client.get_versions(check=True, packages=PACKAGES)  # dask's own check: warns
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    mine = environment()
    workers = client.run(environment)
    if not workers:
        sys.exit("the scheduler has no workers yet; start or scale them first")
    bad = [
        f"{w}: {p} {env['versions'][p]} (here: {mine['versions'][p]})"
        for w, env in sorted(workers.items())
        for p in PACKAGES
        if env["versions"][p] != mine["versions"][p]
    ] + [
        f"{w}: plugins missing: {', '.join(sorted(set(mine['plugins']) - set(env['plugins'])))}"
        for w, env in sorted(workers.items())
        if set(mine["plugins"]) - set(env["plugins"])
    ]
    if bad:
        sys.exit("the workers' software differs from this shell's:\n  " + "\n  ".join(bad))
    print(f"{len(workers)} workers run calocoffea {mine['versions']['calocoffea']} like this shell")
PY

# 2. The histograms: --scheduler implies --executor dask; --workers is not used (the cluster
#    has the workers it has).
calocoffea histogram --scheduler "$SCHEDULER" --chunksize "$CHUNKSIZE" -o "$OUT" "$@"
