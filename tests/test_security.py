"""Security: Dask TLS options reach distributed, no load path unpickles, output names stay
inside their directory.

- TLS: :class:`RunOptions` ``security`` goes to ``Client`` (and to a local cluster); a run
  against a TLS scheduler gives the same histograms as an iterative one; the CLI's
  ``--tls-ca-file``/``--tls-cert``/``--tls-key`` build it. Tests that need certificates make
  temporary ones with ``Security.temporary()``, which needs ``cryptography``.
- Unpickling: the package's sources (calocoffea/, processors/, plugins/, models/) are read
  with ``ast``; a call of ``pickle.load(s)``, ``cloudpickle``/``dill``/``joblib.load``,
  ``pandas.read_pickle``, ``numpy.load(..., allow_pickle=<not False>)`` or ``torch.load``
  without ``weights_only=True`` fails the test, naming file:line.
- Output names: :func:`calocoffea.io.safe_child` refuses names with a directory part.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calocoffea.exceptions import ExecutorError, InputFileError, OutputPathError
from calocoffea.io import FileMetadata, safe_child
from calocoffea.runner import RunOptions, histogram_files, local_cluster

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("calocoffea", "processors", "plugins", "models")


# --------------------------------------------------------------------------- Dask TLS


def test_security_needs_the_dask_executor() -> None:
    with pytest.raises(ExecutorError, match="security"):
        RunOptions("futures", security=object())
    assert RunOptions("dask", security=None).security is None


def test_security_is_passed_to_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Client of a scheduler address gets the security object as it is."""
    import distributed

    from calocoffea import runner

    seen: dict[str, Any] = {}

    class FakeClient:
        def __init__(self, address: str, **kwargs: Any) -> None:
            seen.update(address=address, **kwargs)

        def close(self) -> None:
            seen["closed"] = True

    token = object()
    monkeypatch.setattr(distributed, "Client", FakeClient)
    options = RunOptions("dask", scheduler="tls://scheduler:8786", security=token)
    with runner._executor(options) as executor:
        assert executor.client is not None
    assert seen["address"] == "tls://scheduler:8786"
    assert seen["security"] is token
    assert seen["closed"]


def _cli_options(*argv: str) -> RunOptions:
    from calocoffea.cli import executor
    from calocoffea.cli.main import parser

    args = parser().parse_args(["histogram", "in.root", "-o", "out.root", *argv])
    return executor.run_options(args)


def test_cli_tls_options(tmp_path: Path) -> None:
    from distributed.security import Security

    ca, cert, key = (tmp_path / name for name in ("ca.pem", "cert.pem", "key.pem"))
    for path in (ca, cert, key):
        path.write_text("not read before a connection\n")
    assert _cli_options().security is None
    remote = ("--scheduler", "tls://host:8786")
    security = _cli_options(*remote, *_tls(ca, cert), "--tls-key", str(key)).security
    assert isinstance(security, Security) and security.require_encryption
    assert security.tls_ca_file == str(ca)
    assert (security.tls_client_cert, security.tls_client_key) == (str(cert), str(key))
    assert (security.tls_worker_cert, security.tls_scheduler_cert) == (str(cert), str(cert))
    with pytest.raises(InputFileError, match=r"--tls-cert .*missing\.pem: no such file"):
        _cli_options(*remote, *_tls(ca, tmp_path / "missing.pem"))
    with pytest.raises(InputFileError, match="needs --tls-ca-file and --tls-cert"):
        _cli_options(*remote, "--tls-ca-file", str(ca))
    with pytest.raises(ExecutorError, match="security"):  # TLS without Dask
        _cli_options(*_tls(ca, cert))


def _tls(ca: Path, cert: Path) -> tuple[str, ...]:
    return ("--tls-ca-file", str(ca), "--tls-cert", str(cert))


@pytest.fixture(scope="module")
def security() -> Any:
    pytest.importorskip(
        "cryptography",
        reason="Security.temporary() makes its certificates with cryptography "
        "(pip install cryptography)",
    )
    from distributed.security import Security

    return Security.temporary()


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from calocoffea.simulation.beam import Beam
    from calocoffea.simulation.run import simulate

    path = tmp_path_factory.mktemp("tls") / "s.root"
    return simulate("cepc_ahcal", "e-", Beam(energies_gev=(10.0,)), 40, 5, path)


@pytest.fixture(scope="module")
def tls_cluster(security: Any) -> Iterator[str]:
    cluster = local_cluster(1, security)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def _assert_same(result: Any, reference: Any) -> None:
    assert result.cutflow == reference.cutflow
    for name, h in reference.histograms.items():
        np.testing.assert_array_equal(
            result.histograms[name].values(flow=True), h.values(flow=True), err_msg=name
        )


def test_run_against_a_tls_scheduler(sample: Path, tls_cluster: str, security: Any) -> None:
    assert tls_cluster.startswith("tls://")
    reference = histogram_files([sample], run_options=RunOptions(chunksize=15))
    options = RunOptions("dask", scheduler=tls_cluster, chunksize=15, security=security)
    _assert_same(histogram_files([sample], run_options=options), reference)


def test_tls_scheduler_without_certificates_is_an_executor_error(
    sample: Path, tls_cluster: str
) -> None:
    options = RunOptions("dask", scheduler=tls_cluster, connect_timeout_s=5)
    with pytest.raises(ExecutorError, match="tls:// scheduler needs security options"):
        histogram_files([sample], run_options=options)


def test_local_cluster_over_tls(
    sample: Path, security: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from calocoffea import runner

    addresses = []

    def spy(workers: int, security: Any = None) -> Any:
        cluster = local_cluster(workers, security)
        addresses.append(cluster.scheduler_address)
        return cluster

    monkeypatch.setattr(runner, "local_cluster", spy)
    reference = histogram_files([sample], run_options=RunOptions(chunksize=15))
    options = RunOptions("dask", workers=1, chunksize=15, security=security)
    _assert_same(histogram_files([sample], run_options=options), reference)
    assert len(addresses) == 1 and addresses[0].startswith("tls://")


# --------------------------------------------------------------------------- no unpickling

#: Calls that unpickle whatever they are given (resolved through the module's imports).
UNPICKLING = {
    f"{module}.{name}"
    for module in ("pickle", "_pickle", "cloudpickle", "dill", "joblib")
    for name in ("load", "loads", "Unpickler")
} | {"pandas.read_pickle", "shelve.open", "numpy.lib.format.read_array"}


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """``a.b.c`` of a call's function, its first name resolved through the imports."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> what it is: ``np`` -> ``numpy``, ``load`` -> ``pickle.load``."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_constant(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_loads(source: str, filename: str = "<source>") -> list[str]:
    """``file:line: call`` of every call in ``source`` that may unpickle untrusted data."""
    tree = ast.parse(source, filename)
    aliases = _aliases(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases)
        if name is None:
            continue
        where = f"{filename}:{node.lineno}: {ast.unparse(node.func)}(...)"
        if name in UNPICKLING:
            found.append(f"{where} unpickles")
        elif name in ("numpy.load", "numpy.lib.npyio.load") and not (
            _keyword(node, "allow_pickle") is None
            or _is_constant(_keyword(node, "allow_pickle"), False)
        ):
            found.append(f"{where} with allow_pickle not False")
        elif (
            name == "torch.load"
            or name.endswith(".torch.load")
            or name == "torch.serialization.load"
        ) and not _is_constant(_keyword(node, "weights_only"), True):
            found.append(f"{where} without weights_only=True")
    return found


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("import pickle\npickle.load(f)", True),
        ("import pickle as p\np.loads(b)", True),
        ("from pickle import load\nload(f)", True),
        ("from cloudpickle import loads as cl\ncl(b)", True),
        ("import joblib\njoblib.load('m.pkl')", True),
        ("import dill\ndill.load(f)", True),
        ("import pandas as pd\npd.read_pickle('x')", True),
        ("import numpy as np\nnp.load('x.npy', allow_pickle=True)", True),
        ("import numpy as np\nnp.load('x.npy', allow_pickle=flag)", True),
        ("import numpy\nnumpy.load('x.npz')", False),
        ("import numpy as np\nnp.load('x.npz', allow_pickle=False)", False),
        ("import torch\ntorch.load('c.pt')", True),
        ("import torch\ntorch.load('c.pt', weights_only=False)", True),
        ("import torch\ntorch.load('c.pt', map_location='cpu', weights_only=True)", False),
        ("self.torch.load(path, map_location='cpu')", True),
        ("self.torch.load(path, weights_only=True)", False),
        ("import json\njson.load(f)", False),
        ("import pickle\npickle.dumps(x)", False),
    ],
)
def test_the_scan_finds_unpickling_calls(source: str, flagged: bool) -> None:
    assert bool(unsafe_loads(source)) is flagged


def _sources() -> list[Path]:
    return sorted(p for d in PACKAGE_DIRS for p in (ROOT / d).rglob("*.py"))


def test_no_load_path_unpickles() -> None:
    """Model checkpoints, constants, conditions, shards: nothing the package reads can
    execute code. Use JSON, npz (allow_pickle=False), ONNX, or torch with weights_only."""
    sources = _sources()
    assert len(sources) > 50  # the scan sees the package
    found = [
        hit
        for path in sources
        for hit in unsafe_loads(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert not found, "calls that can unpickle untrusted files:\n" + "\n".join(found)


# --------------------------------------------------------------------------- output names


@pytest.mark.parametrize("name", ["a.root", "...png", "a..b", "shard-000000000020-7.root"])
def test_safe_child_keeps_plain_names(tmp_path: Path, name: str) -> None:
    assert safe_child(tmp_path, name) == tmp_path / name


@pytest.mark.parametrize(
    "name", ["../x", "../../x.root", "/etc/passwd", "/tmp/x", "a/b", "..", ".", "", "a\\b", "x\0"]
)
def test_safe_child_refuses_names_that_leave_the_directory(tmp_path: Path, name: str) -> None:
    with pytest.raises(OutputPathError, match="not a plain file name"):
        safe_child(tmp_path, name)


def test_shards_land_in_their_directory_whatever_the_input_name(tmp_path: Path) -> None:
    """The shard name comes from the chunk's file name (hashed) and entry start."""
    from calocoffea.processors.common import write_shard

    directory = tmp_path / "shards"
    directory.mkdir()
    scalars = {
        "event": np.arange(2),
        "run": np.zeros(2, np.int32),
        "pdg": np.full(2, 11),
        "beam_energy": np.full(2, 10.0),
    }
    hits = {name: np.zeros(3) for name in ("cellid", "layer", "x", "y", "z", "energy")}
    hits["cellid"] = np.zeros(3, np.uint64)
    for filename in ("../../escape.root", "/etc/passwd", "a/../../b.root"):
        path = Path(
            write_shard(
                str(directory),
                (filename, 20),
                scalars,
                np.array([1, 2]),
                hits,
                FileMetadata(stage="raw"),
            )
        )
        assert path.parent == directory
    assert len(list(directory.iterdir())) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]


@functools.cache
def _figure() -> Any:
    from matplotlib.figure import Figure

    return Figure()


@pytest.mark.parametrize("name", ["../x", "/tmp/x", "sub/name", "."])
def test_figure_names_cannot_leave_the_figure_directory(tmp_path: Path, name: str) -> None:
    from calocoffea import plotting

    with pytest.raises(ValueError, match="plain file name"):
        plotting.save(_figure(), tmp_path / "figures", name)
    assert not (tmp_path / "x.png").exists()
