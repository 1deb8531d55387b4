"""Run processors on files with coffea's Runner: iterative, futures or Dask, same results.

What to use when:

- :func:`digitize_files`, :func:`calibrate_files`, :func:`histogram_files` -- the three jobs
  of the command line, from input files to an output file, checked before any work starts.
- :func:`run` -- any calocoffea processor on files; returns a :class:`RunResult` with the
  cutflow, the histograms reduced in a fixed order, and the shards in order.
- :class:`RunOptions` -- executor (``iterative``, ``futures``, ``dask``), workers, chunk size,
  a Dask scheduler address (``tcp://host:8786``) for a running cluster, progress bars.

Why the results do not depend on the executor: random numbers are keyed by file, entry and hit
(:mod:`calocoffea.rng`); integer outputs (count histograms, cutflow) add exactly in any order;
weighted histograms come back per chunk and are summed here in (file, entry start) order;
per-event outputs are written per chunk as shards and merged here in that order.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hist
import numpy as np
from coffea import processor

from calocoffea.calibration import CalibrationSteps
from calocoffea.conditions import Conditions, nominal
from calocoffea.constants import Constants
from calocoffea.digitization import DigitizationOptions
from calocoffea.exceptions import (
    CalocoffeaError,
    ExecutorError,
    GeometryMismatchError,
    InputFileError,
    InvalidInputWarning,
    OutputPathError,
)
from calocoffea.geometry import Geometry, get_geometry
from calocoffea.io import (
    FileMetadata,
    atomic_write,
    open_events,
    read_events,
    read_metadata,
    remove_stale,
    write_events,
)
from calocoffea.methods import CalibrationMethod, ReconstructionMethod
from calocoffea.schema import CaloSchema

EXECUTORS = ("iterative", "futures", "dask")


@dataclass(frozen=True)
class RunOptions:
    """How to run: executor, workers, chunk size [events], Dask scheduler, progress bars."""

    executor: str = "iterative"
    workers: int = 1
    chunksize: int = 50_000
    scheduler: str | None = None
    progress: bool = False
    #: retries of a failed chunk (for flaky storage at a facility; a bad input fails again)
    retries: int = 0
    #: how long to wait for a Dask scheduler given by address [s]
    connect_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ExecutorError(
                f"unknown executor {self.executor!r}; choose one of {', '.join(EXECUTORS)}"
            )
        if self.workers < 1:
            raise ExecutorError(f"workers must be at least 1, got {self.workers}")
        if self.chunksize < 1:
            raise ExecutorError(f"chunksize must be at least 1 event, got {self.chunksize}")
        if self.scheduler is not None and self.executor != "dask":
            raise ExecutorError("a scheduler address needs --executor dask")


@dataclass
class RunResult:
    """What a run gives back."""

    cutflow: dict[str, Any] = field(default_factory=dict)
    histograms: dict[str, hist.Hist] = field(default_factory=dict)
    shards: list[str] = field(default_factory=list)
    output: Path | None = None
    #: the sum of a calibration method's ``collect`` over all chunks
    collected: Any = None
    #: per-event columns, concatenated in (file, entry) order
    columns: dict[str, np.ndarray] = field(default_factory=dict)


# ------------------------------------------------------------------------------ executors


def local_cluster(workers: int) -> Any:
    """A Dask ``LocalCluster`` of ``workers`` one-thread worker processes, as calocoffea runs
    them: without distributed's ``MALLOC_TRIM_THRESHOLD_=65536`` in the workers' environment.
    Setting it switches off glibc's dynamic mmap threshold, so every large numpy temporary is
    mapped and faulted in afresh: the digitise+calibrate+histogram task took 35 % more CPU
    in a worker than in the client (benchmarks/agc). Workers keep freed memory a little
    longer instead; their peak is in the benchmark's table."""
    import dask
    from distributed import LocalCluster

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        return LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )


@contextlib.contextmanager
def _executor(options: RunOptions) -> Iterator[Any]:
    status = options.progress
    if options.executor == "iterative":
        yield processor.IterativeExecutor(status=status, retries=options.retries)
    elif options.executor == "futures":
        with warnings.catch_warnings():
            # loky replaces a worker whose memory grew by 300 MB between two chunks (coffea's
            # lazy event objects wait for the garbage collector; README, "Benchmarks"): no
            # chunk is lost, so its warning would only alarm
            warnings.filterwarnings("ignore", "A worker was restarted", UserWarning)
            yield processor.FuturesExecutor(
                workers=options.workers, status=status, retries=options.retries
            )
    else:
        try:
            from distributed import Client
        except ModuleNotFoundError as err:  # pragma: no cover - distributed is a dependency
            raise ModuleNotFoundError(
                "the dask executor needs distributed: pip install distributed"
            ) from err
        if options.scheduler:
            try:
                client = Client(options.scheduler, timeout=options.connect_timeout_s)
            except (OSError, TimeoutError) as err:
                raise ExecutorError(
                    f"cannot reach the Dask scheduler at {options.scheduler} ({err}); start "
                    "it (`dask scheduler`) or check the address and the network"
                ) from err
            cluster = None
        else:
            cluster = local_cluster(options.workers)
            client = Client(cluster)
        try:
            yield processor.DaskExecutor(client=client, status=status, retries=options.retries)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def run(processor_instance: Any, files: Sequence[str | Path], options: RunOptions) -> RunResult:
    """Run ``processor_instance`` over the ``events`` trees of ``files``.

    A calocoffea error raised in a chunk is re-raised as itself (coffea wraps it)."""
    paths = [str(Path(f).absolute()) for f in files]
    # coffea draws its bars even when told not to: send them nowhere unless asked for
    with contextlib.ExitStack() as stack:
        if not options.progress:
            devnull = stack.enter_context(open(os.devnull, "w"))
            stack.enter_context(contextlib.redirect_stdout(devnull))
        executor = stack.enter_context(_executor(options))
        runner = processor.Runner(
            executor=executor,
            # on Dask the workers open the files for their entry counts, in parallel (the
            # client did it file by file: 30 ms each, serial time that limits the scaling)
            pre_executor=(
                executor
                if options.executor == "dask"
                else processor.IterativeExecutor(status=options.progress)
            ),
            schema=CaloSchema,
            chunksize=options.chunksize,
            # coffea caches entry counts by file name: a file rewritten under the same name
            # in this process would be read with its old length
            metadata_cache={},
        )
        try:
            output = runner({"events": paths}, processor_instance, treename="events")
        except Exception as err:
            cause = err.__cause__
            if isinstance(cause, CalocoffeaError):
                raise cause from err
            raise
    return _reduce(output, paths)


def _order(paths: list[str]) -> Any:
    rank = {p: k for k, p in enumerate(paths)}

    def key(item: tuple[tuple[str, int], Any]) -> tuple[int, int]:
        (filename, start), _ = item
        return rank.get(str(Path(filename).absolute()), len(rank)), start

    return key


def _reduce(output: dict[str, Any], paths: list[str]) -> RunResult:
    """Counts as accumulated; weighted histograms and shards in (file, entry start) order."""
    result = RunResult(cutflow=output.get("cutflow", {}))
    histograms: dict[str, hist.Hist] = dict(output.get("counts", {}))
    for _, chunk in sorted(output.get("ordered", {}).items(), key=_order(paths)):
        for name, h in chunk.items():
            if name in histograms:
                histograms[name] += h
            else:
                histograms[name] = h.copy()
    result.histograms = histograms
    result.collected = output.get("collected")
    chunks = [c for _, c in sorted(output.get("columns", {}).items(), key=_order(paths))]
    if chunks:
        result.columns = {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}
    result.shards = [
        path for _, path in sorted(output.get("shards", {}).items(), key=_order(paths))
    ]
    return result


# ------------------------------------------------------------------------------ checks


def _check_inputs(files: Sequence[str | Path], stage: str) -> list[FileMetadata]:
    if not files:
        raise InputFileError("no input files given")
    metadata = []
    for f in files:
        open_events(f, stage=stage).file.close()
        metadata.append(read_metadata(f))
    hashes = {m.geometry_hash for m in metadata}
    if len(hashes) > 1:
        found = ", ".join(f"{f} ({m.geometry})" for f, m in zip(files, metadata, strict=True))
        raise GeometryMismatchError(f"input files are for different geometries: {found}")
    return metadata


def _geometry_of(metadata: list[FileMetadata], files: Sequence[str | Path]) -> Geometry:
    name = metadata[0].geometry
    if not name:
        raise InputFileError(
            f"{files[0]} does not say which geometry it is for; write it with calocoffea"
        )
    geometry = get_geometry(name)
    if metadata[0].geometry_hash and metadata[0].geometry_hash != geometry.hash:
        raise GeometryMismatchError(
            f"{files[0]} was written for geometry {name!r} with hash "
            f"{metadata[0].geometry_hash}, but the installed {name!r} has hash {geometry.hash}; "
            "the geometry definition changed: regenerate the file"
        )
    return geometry


def _beam_energies(metadata: list[FileMetadata]) -> tuple[float, ...]:
    energies: set[float] = set()
    for m in metadata:
        beam = m.extra.get("beam", {})
        energies.update(float(e) for e in beam.get("energies_gev", ()))
        energies.update(float(e) for e in beam.get("energy_range_gev", ()))
    return tuple(sorted(energies))


def _check_output(output: str | os.PathLike[str], files: Sequence[str | os.PathLike[str]]) -> Path:
    target = Path(output).absolute()
    if any(Path(f).absolute() == target for f in files):
        raise OutputPathError(f"output {target} is also an input; choose another output path")
    if not target.parent.is_dir():
        raise OutputPathError(
            f"cannot write {target}: directory {target.parent} does not exist; create it first"
        )
    return target


@contextlib.contextmanager
def _shard_directory(target: Path) -> Iterator[str]:
    remove_stale(target)  # shards of a killed run
    directory = tempfile.mkdtemp(prefix=f".{target.name}-shards-{os.getpid()}-", dir=target.parent)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _merge(shards: list[str], target: Path, metadata: FileMetadata) -> Path:
    return write_events(target, (read_events(s) for s in shards), metadata)


def _warn_invalid(cutflow: dict[str, Any]) -> None:
    for step, counts in cutflow.items():
        for reason in ("invalid_deposit", "non_finite_energy"):
            n = counts.get("removed", {}).get(reason, 0)
            if n:
                warnings.warn(
                    f"{step}: {n} hits with NaN, infinite or negative energy were counted and "
                    "excluded; check the producer of the input file",
                    InvalidInputWarning,
                    stacklevel=3,
                )


# ------------------------------------------------------------------------------ jobs


def digitize_files(
    files: Sequence[str | Path],
    output: str | Path,
    *,
    conditions: Conditions | None = None,
    seed: int = 0,
    options: DigitizationOptions | None = None,
    run_options: RunOptions | None = None,
) -> RunResult:
    """Digitise simulated files (stage ``sim``) into one raw file (stage ``raw``)."""
    from calocoffea.processors.digitize import DigitizeProcessor

    metadata = _check_inputs(files, "sim")
    geometry = _geometry_of(metadata, files)
    conditions = conditions or nominal(geometry)
    conditions.check_geometry(geometry, f"input {files[0]}")
    target = _check_output(output, files)
    with _shard_directory(target) as shards:
        proc = DigitizeProcessor(conditions, seed, shards, options or DigitizationOptions())
        result = run(proc, files, run_options or RunOptions())
        extra = {"inputs": [str(f) for f in files], **_beam_and_particle(metadata[0])}
        result.output = _merge(result.shards, target, proc.metadata(extra))
    _warn_invalid(result.cutflow)
    return result


def calibrate_files(
    files: Sequence[str | Path],
    output: str | Path,
    constants: Constants,
    *,
    steps: CalibrationSteps | None = None,
    run_options: RunOptions | None = None,
) -> RunResult:
    """Apply ``constants`` to raw files into one calibrated file (stage ``mip`` or ``gev``)."""
    from calocoffea.processors.calibrate import CalibrateProcessor

    metadata = _check_inputs(files, "raw")
    geometry = _geometry_of(metadata, files)
    constants.check_geometry(geometry, f"input {files[0]}")
    target = _check_output(output, files)
    with _shard_directory(target) as shards:
        proc = CalibrateProcessor(constants, shards, steps or CalibrationSteps(), geometry.name)
        result = run(proc, files, run_options or RunOptions())
        out_metadata = proc.metadata()
        out_metadata.extra.update(_beam_and_particle(metadata[0]))
        result.output = _merge(result.shards, target, out_metadata)
    return result


def histogram_files(
    files: Sequence[str | Path],
    output: str | Path | None = None,
    *,
    stage: str | None = None,
    constants: Constants | None = None,
    steps: CalibrationSteps | None = None,
    beam_energies_gev: Sequence[float] = (),
    run_options: RunOptions | None = None,
    histograms: Sequence[str] = (),
    conditions: Conditions | None = None,
    seed: int = 0,
    digitization: DigitizationOptions | None = None,
) -> RunResult:
    """Fill the histograms of :mod:`calocoffea.processors.histogram` (``histograms``: only
    those); write them to ``output`` (ROOT) and beside it ``<output>.json`` (lossless, UHI)
    if given. Raw input is calibrated with ``constants``; simulated input with ``conditions``
    and ``constants`` is digitised (``seed``, ``digitization``) and calibrated on the fly."""
    from calocoffea.processors.histogram import HistogramProcessor

    if stage is None:
        stage = _stage_of(files[0]) if files else "sim"
    metadata = _check_inputs(files, stage)
    geometry = _geometry_of(metadata, files)
    if constants is not None:
        constants.check_geometry(geometry, f"input {files[0]}")
    target = _check_output(output, files) if output is not None else None
    energies = tuple(beam_energies_gev) or _beam_energies(metadata)
    proc = HistogramProcessor(
        geometry.name,
        stage,
        energies,
        constants,
        steps or CalibrationSteps(),
        histograms=tuple(histograms),
        conditions=conditions,
        seed=seed,
        digitization=digitization or DigitizationOptions(),
    )
    result = run(proc, files, run_options or RunOptions())
    _warn_invalid(result.cutflow)
    if target is not None:
        result.output = write_histograms(result.histograms, target)
    return result


def fit_files(
    method: CalibrationMethod,
    files: Sequence[str | Path],
    *,
    run_options: RunOptions | None = None,
) -> tuple[Constants, RunResult]:
    """Run ``method.collect`` over ``files`` and ``method.fit`` once on the sum.

    The files must be at the method's input stage and of its run type (when they say);
    whole-event methods get the shard paths, which live until ``fit`` returns."""
    from calocoffea.processors.collect import CollectProcessor

    metadata, geometry = _check_method_inputs(method, files)
    for path, m in zip(files, metadata, strict=True):
        found = run_type_of(m)
        if method.run_type != "physics" and found not in (method.run_type, "unknown"):
            raise InputFileError(
                f"{path} is a {found!r} run, but {type(method).__name__} learns from "
                f"{method.run_type!r} runs; give it {method.run_type} runs"
            )
    with _shard_directory(Path(tempfile.gettempdir()) / "calocoffea-collect") as shards:
        proc = CollectProcessor(method, shards, geometry.hash)
        result = run(proc, files, run_options or RunOptions())
        constants = method.fit(result.shards if method.needs_events else result.collected)
    return constants, result


def reconstruct_files(
    files: Sequence[str | Path],
    method: ReconstructionMethod,
    *,
    output: str | Path | None = None,
    label: str = "",
    run_options: RunOptions | None = None,
) -> RunResult:
    """One energy per event with ``method``; ``result.columns`` holds ``file`` (index
    into ``files``), ``entry``,
    ``beam_energy``, ``energy`` and ``clipped_hits`` in (file, entry) order, and
    ``result.histograms`` the ``energy`` and ``response`` histograms (category ``label``,
    default: the method's class name). With ``output``, both are written to that ROOT file
    (:func:`write_reconstruction`)."""
    from calocoffea.processors.reconstruct import ReconstructProcessor

    _check_method_inputs(method, files)
    target = _check_output(output, files) if output is not None else None
    ranks = {str(Path(f).absolute()): k for k, f in enumerate(files)}
    proc = ReconstructProcessor(method, label or type(method).__name__, ranks)
    result = run(proc, files, run_options or RunOptions())
    if target is not None:
        result.output = write_reconstruction(result, target, files, method)
    return result


def write_reconstruction(
    result: RunResult, target: Path, files: Sequence[str | Path], method: ReconstructionMethod
) -> Path:
    """ROOT file: tree ``reconstruction`` (one row per event: ``file`` (index into the
    inputs), ``entry``, ``beam_energy``, ``energy``, ``clipped_hits``), the histograms, and
    ``provenance`` (JSON string: inputs, method, options)."""
    import json

    import uproot

    columns = {k: np.asarray(v) for k, v in result.columns.items()}
    provenance = {
        "inputs": [str(Path(f).absolute()) for f in files],
        "method": type(method).__name__,
        "options": repr(method.options),
        "producer": "calocoffea reconstruct",
    }
    with atomic_write(target) as temporary:
        with uproot.recreate(temporary, compression=uproot.ZSTD(5)) as file:
            if columns:
                file["reconstruction"] = columns
            for name, h in result.histograms.items():
                file[name] = h
            file["provenance"] = json.dumps(provenance)
    return target


def _check_method_inputs(
    method: CalibrationMethod | ReconstructionMethod, files: Sequence[str | Path]
) -> tuple[list[FileMetadata], Geometry]:
    """The inputs' metadata and geometry, checked against the method's stage and geometry."""
    metadata = _check_inputs(files, method.input_stage)
    geometry = _geometry_of(metadata, files)
    if geometry.name != method.geometry:
        raise GeometryMismatchError(
            f"method {type(method).__name__} is set up for {method.geometry!r} but {files[0]} "
            f"is for {geometry.name!r}; build the method for {geometry.name!r}"
        )
    return metadata, geometry


def run_type_of(metadata: FileMetadata) -> str:
    """The kind of run a file holds: its ``run_type`` if it says, ``muon`` for muon beams,
    ``physics`` for other beams, ``unknown`` for files that do not say."""
    if "run_type" in metadata.extra:
        return str(metadata.extra["run_type"])
    particle = str(metadata.extra.get("particle", ""))
    if not particle:
        return "unknown"
    return "muon" if particle.startswith("mu") else "physics"


def _beam_and_particle(metadata: FileMetadata) -> dict[str, Any]:
    """What downstream files keep of their input's beam description."""
    kept = {"beam": metadata.extra.get("beam", {})}
    for key in ("particle", "run_type"):
        if key in metadata.extra:
            kept[key] = metadata.extra[key]
    return kept


def _stage_of(path: str | Path) -> str:
    return read_metadata(path).stage


def write_histograms(histograms: dict[str, hist.Hist], target: Path) -> Path:
    """ROOT file (TH1/TH2/TH3, contents as double) and ``<target>.json`` (UHI, lossless)."""
    import json

    import uproot
    from hist import serialization

    payload = json.dumps(
        {name: serialization.to_uhi(h) for name, h in histograms.items()}, default=_json_default
    )
    side = target.with_name(target.name + ".json")
    with atomic_write(target) as temporary, atomic_write(side) as side_temporary:
        with uproot.recreate(temporary) as file:
            for name, h in histograms.items():
                if np.issubdtype(h.values().dtype, np.integer):
                    h = hist.Hist(
                        *h.axes,
                        storage=hist.storage.Double(),
                        data=h.view(flow=True).astype(np.float64),
                    )
                file[name] = h
        side_temporary.write_text(payload)
    return target


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


__all__ = [
    "EXECUTORS",
    "RunOptions",
    "RunResult",
    "calibrate_files",
    "digitize_files",
    "histogram_files",
    "local_cluster",
    "reconstruct_files",
    "run",
    "write_histograms",
    "write_reconstruction",
]
