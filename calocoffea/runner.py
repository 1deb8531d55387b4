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
import pickle
import shutil
import tempfile
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hist
import loky
import numpy as np
from coffea import processor

from calocoffea.calibration import CalibrationSteps
from calocoffea.conditions import Conditions, nominal
from calocoffea.constants import Constants
from calocoffea.digitization import DigitizationOptions
from calocoffea.exceptions import (
    CalocoffeaError,
    CorruptFileError,
    EmptyInputError,
    ExecutorError,
    GeometryMismatchError,
    InputFileError,
    InvalidInputWarning,
    OutputPathError,
    PluginRuntimeError,
)
from calocoffea.geometry import Geometry, get_geometry
from calocoffea.io import (
    FileMetadata,
    atomic_write,
    check_output_path,
    open_events,
    read_events,
    read_metadata,
    remove_stale,
    unreadable_branches,
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
    #: TLS for Dask: a ``distributed.security.Security`` (certificates, ``require_encryption``)
    #: passed to the client and to a local cluster; None takes Dask's configuration
    #: (``distributed.comm.tls.*``, e.g. ``DASK_DISTRIBUTED__COMM__TLS__CA_FILE``)
    security: Any = None

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
        if self.security is not None and self.executor != "dask":
            raise ExecutorError("security (TLS) options need --executor dask")


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


def local_cluster(workers: int, security: Any = None) -> Any:
    """A Dask ``LocalCluster`` of ``workers`` one-thread worker processes, as calocoffea runs
    them (over TLS with ``security``, a ``distributed.security.Security`` that requires
    encryption): without distributed's ``MALLOC_TRIM_THRESHOLD_=65536`` in the workers' environment.
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
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            security=security,
            # the scheduler's HTTP routes (health, metrics) on a free local port, not on
            # 8787: two runs on one machine, or a notebook's cluster, do not clash
            scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
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
                workers=options.workers, status=status, retries=options.retries, pool=_Pool
            )
    else:
        try:
            from distributed import Client
        except ModuleNotFoundError as err:  # pragma: no cover - distributed is a dependency
            raise ModuleNotFoundError(
                "the dask executor needs distributed: pip install distributed"
            ) from err
        if options.scheduler:
            client = _connect(options)
            cluster = None
        else:
            cluster = local_cluster(options.workers, options.security)
            client = Client(cluster, security=options.security)
        try:
            yield processor.DaskExecutor(client=client, status=status, retries=options.retries)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def _connect(options: RunOptions) -> Any:
    """A client of the scheduler at ``options.scheduler``, with ``options.security``."""
    from distributed import Client

    try:
        return Client(
            options.scheduler, timeout=options.connect_timeout_s, security=options.security
        )
    except (OSError, TimeoutError) as err:
        raise ExecutorError(
            f"cannot reach the Dask scheduler at {options.scheduler} ({err}); start "
            "it (`dask scheduler`) or check the address and the network"
        ) from err
    except (TypeError, ValueError) as err:  # e.g. a tls:// address without certificates
        raise ExecutorError(
            f"cannot connect to the Dask scheduler at {options.scheduler} ({err}); a tls:// "
            "scheduler needs security options: certificates (RunOptions(security=...), "
            "--tls-ca-file, --tls-cert, --tls-key) or Dask's distributed.comm.tls configuration"
        ) from err


def run(
    processor_instance: Any,
    files: Sequence[str | Path],
    options: RunOptions,
    *,
    skip_bad_files: bool = False,
    skipped: dict[str, str] | None = None,
) -> RunResult:
    """Run ``processor_instance`` over the ``events`` trees of ``files``.

    A calocoffea error raised in a chunk is re-raised as itself, with its own cause (coffea
    wraps it; on the futures executor :class:`_Pool` brings it back from the worker whole);
    an error of uproot, awkward or a decompressor while reading a chunk becomes a
    :class:`~calocoffea.exceptions.CorruptFileError` naming the file, the branches that cannot
    be read and the entries (:class:`_Guarded`).

    With ``skip_bad_files``, a file with a chunk that fails for a reason of the file (an
    :class:`~calocoffea.exceptions.InputFileError`, or cell ids outside the geometry) is left
    out whole: the chunks of it that did read are dropped too, so the result is that of the
    other files alone. ``skipped`` are files already left out by an up-front check (absolute
    path: why). Both are named in ``result.cutflow["skipped_files"]`` and in an
    :class:`~calocoffea.exceptions.InvalidInputWarning`; if no file is left, an
    :class:`~calocoffea.exceptions.InputFileError`."""
    paths = [str(Path(f).absolute()) for f in files]
    skipped = dict(skipped or {})
    guarded = _Guarded(processor_instance, by_file=skip_bad_files)
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
            output = runner({"events": paths}, guarded, treename="events")
        except Exception as err:
            error = _calocoffea_error(err)
            if error is not None:  # with its own cause, not coffea's wrapper
                raise error from getattr(error, _CAUSE, error.__cause__)
            raise
    if skip_bad_files:
        output = _without_bad_files(output, paths, skipped, processor_instance)
    result = _reduce(output, paths)
    if skipped:
        result.cutflow["skipped_files"] = skipped
        warnings.warn(
            f"skipped {len(skipped)} of {len(paths) + len(set(skipped) - set(paths))} input "
            "files, their events are not counted: "
            + "; ".join(f"{path}: {why}" for path, why in skipped.items()),
            InvalidInputWarning,
            stacklevel=2,
        )
    return result


@dataclass
class _Guarded(processor.ProcessorABC):
    """``inner`` on each chunk, its errors made precise (:func:`_chunk_error`). With
    ``by_file`` (skip bad files) the output of each file is kept apart, ``{"files": {path:
    output}}``, and a chunk failing for a reason of its file gives ``{"skipped": {path:
    {entry start: why}}}`` instead of an error, so that :func:`_without_bad_files` can drop
    the whole file."""

    inner: Any
    by_file: bool = False

    def process(self, events: Any) -> Any:
        path = str(events.metadata["filename"])
        try:
            output = self.inner.process(events)
        except Exception as err:
            error = _chunk_error(events, err)
            if error is None:
                raise
            if self.by_file and isinstance(error, (InputFileError, GeometryMismatchError)):
                return {"skipped": {path: {int(events.metadata["entrystart"]): str(error)}}}
            if error is err:
                raise
            raise error from err
        return {"files": {path: output}} if self.by_file else output

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator if self.by_file else self.inner.postprocess(accumulator)


def _chunk_error(events: Any, err: Exception) -> CalocoffeaError | None:
    """The calocoffea error that says what ``err``, raised on the chunk ``events``, means for
    the input: a calocoffea error as it is, unless a plugin's; a chunk with a branch that
    cannot be read (read again branch by branch), or an error raised while reading, a
    :class:`~calocoffea.exceptions.CorruptFileError`; None for anything else (a bug, to be
    raised as it is)."""
    if isinstance(err, CalocoffeaError) and not isinstance(err, PluginRuntimeError):
        return err
    meta = events.metadata
    start, stop = int(meta["entrystart"]), int(meta["entrystop"])
    try:
        bad = unreadable_branches(meta["filename"], start, stop, meta.get("treename", "events"))
    except Exception as again:  # the file does not even open again
        bad = {}
        err = again
    if not bad and not _raised_while_reading(err):
        return err if isinstance(err, CalocoffeaError) else None
    names = ", ".join(repr(name) for name in bad)
    what = f", branch {names}" if len(bad) == 1 else f", branches {names}" if bad else ""
    why = next(iter(bad.values())) if bad else f"{type(err).__name__}: {' '.join(str(err).split())}"
    return CorruptFileError(
        f"{meta['filename']}: tree {meta.get('treename', 'events')!r}{what}, entries "
        f"{start}-{stop}: cannot be read ({why}); the file is damaged (bytes changed or lost in "
        "storage or transfer): copy it again from its source, or produce it again; or pass "
        "--skip-bad-files (skip_bad_files=True) to process the other files without it"
    )


#: Parts of the path of the modules that read files: an error raised in them is the file's.
_READERS = (f"{os.sep}uproot{os.sep}", f"{os.sep}coffea{os.sep}nanoevents{os.sep}")


def _raised_while_reading(err: BaseException) -> bool:
    """Whether ``err`` (or an error in its chain) was raised inside uproot or coffea's
    NanoEvents, that is while reading or decompressing."""
    current: BaseException | None = err
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for frame, _ in traceback.walk_tb(current.__traceback__):
            if any(part in frame.f_code.co_filename for part in _READERS):
                return True
        current = current.__cause__ or current.__context__
    return False


def _without_bad_files(
    output: dict[str, Any], paths: list[str], skipped: dict[str, str], inner: Any
) -> dict[str, Any]:
    """The sum, in file order, of the outputs of the files none of whose chunks failed; the
    failed files are added to ``skipped`` with the reason of their first failed chunk."""
    for path in paths:
        failures = output.get("skipped", {}).get(path)
        if failures:
            skipped[path] = failures[min(failures)]
    kept = [output["files"][p] for p in paths if p in output.get("files", {}) and p not in skipped]
    if not kept:
        raise _every_file_is_bad(skipped)
    total = processor.accumulate(kept)
    done = inner.postprocess(total) if hasattr(inner, "postprocess") else None
    return total if done is None else done


def _every_file_is_bad(skipped: dict[str, str]) -> InputFileError:
    return InputFileError(
        "every input file is bad, nothing to process: "
        + "; ".join(f"{path}: {why}" for path, why in skipped.items())
    )


#: where a calocoffea error keeps its ``__cause__`` on the way back from a worker process
_CAUSE = "_calocoffea_cause"


def _calocoffea_error(err: BaseException) -> CalocoffeaError | None:
    """The first calocoffea error in the chain of ``err`` (itself, or what coffea wrapped)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, CalocoffeaError):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None


def _raise_calocoffea_errors(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a worker process; a calocoffea error that coffea wrapped is
    raised as itself, its cause kept as state (pickling drops ``__cause__``, and coffea
    would send back only the message of its wrapper)."""
    try:
        return fn(*args, **kwargs)
    except Exception as err:
        error = _calocoffea_error(err)
        if error is None:
            raise
        cause = error.__cause__
        if cause is not None:
            # its traceback does not travel: keep it as a note (notes do)
            where = "".join(traceback.format_tb(cause.__traceback__))
            cause.add_note(f"traceback in the worker process {os.getpid()}:\n{where}")
            try:
                pickle.dumps(cause)
            except Exception:  # an exception that does not pickle travels as its text
                cause = RuntimeError(f"{type(cause).__name__}: {cause}\n{where}")
            setattr(error, _CAUSE, cause)
        raise error from cause


class _Pool(loky.ProcessPoolExecutor):
    """loky's process pool (coffea's default) whose tasks raise calocoffea errors as
    themselves, with their causes (:func:`_raise_calocoffea_errors`)."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        return super().submit(_raise_calocoffea_errors, fn, *args, **kwargs)


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


@dataclass
class _Inputs:
    """The input files a job processes, their metadata, and those it leaves out (absolute
    path: why)."""

    files: list[str | Path] = field(default_factory=list)
    metadata: list[FileMetadata] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _check_inputs(files: Sequence[str | Path], stage: str) -> list[FileMetadata]:
    """The metadata of ``files``, each checked before any work (:func:`_check_file`), all for
    one geometry."""
    return _select_inputs(files, stage).metadata


def _select_inputs(
    files: Sequence[str | Path], stage: str, skip_bad_files: bool = False
) -> _Inputs:
    """Like :func:`_check_inputs`; with ``skip_bad_files`` a file that fails its check (an
    :class:`~calocoffea.exceptions.InputFileError`) is left out with why, and only inputs
    that all fail are an error."""
    if not files:
        raise InputFileError("no input files given")
    inputs = _Inputs()
    for f in files:
        try:
            metadata = _check_file(f, stage)
        except InputFileError as err:
            if not skip_bad_files:
                raise
            inputs.skipped[str(Path(f).absolute())] = str(err)
            continue
        inputs.files.append(f)
        inputs.metadata.append(metadata)
    if not inputs.files:
        raise _every_file_is_bad(inputs.skipped)
    hashes = {m.geometry_hash for m in inputs.metadata}
    if len(hashes) > 1:
        found = ", ".join(
            f"{f} ({m.geometry})" for f, m in zip(inputs.files, inputs.metadata, strict=True)
        )
        raise GeometryMismatchError(f"input files are for different geometries: {found}")
    return inputs


def _check_file(path: str | Path, stage: str) -> FileMetadata:
    """The metadata of one input file after the checks of
    :func:`~calocoffea.io.open_events` (length, tree, branches and their types, hit
    counter, stage); an :class:`~calocoffea.exceptions.EmptyInputError` if it has no events."""
    tree = open_events(path, stage=stage)
    try:
        if tree.num_entries == 0:
            raise EmptyInputError(
                f"{path}: tree {tree.name!r} has no entries: nothing to process; remove it "
                "from the inputs (or pass --skip-bad-files, skip_bad_files=True, to skip it)"
            )
    finally:
        tree.file.close()
    return read_metadata(path)


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


def _check_output(
    output: str | os.PathLike[str],
    files: Sequence[str | os.PathLike[str]],
    *,
    overwrite: bool = False,
    companions: Sequence[str] = (),
) -> Path:
    """The absolute output path, checked before any work: not an input; its directory
    exists and is writable; unless ``overwrite``, neither it nor its companion files
    (``<output><suffix>`` for each suffix in ``companions``) exist yet."""
    target = Path(output).absolute()
    if any(Path(f).absolute() == target for f in files):
        raise OutputPathError(f"output {target} is also an input; choose another output path")
    check_output_path(target)
    if not overwrite:
        paths = [target, *(target.with_name(target.name + suffix) for suffix in companions)]
        existing = [str(path) for path in paths if os.path.lexists(path)]
        if existing:
            raise OutputPathError(
                f"output {' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}"
                "; choose another output path, or use --force (overwrite=True) to replace it"
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
    overwrite: bool = False,
    skip_bad_files: bool = False,
) -> RunResult:
    """Digitise simulated files (stage ``sim``) into one raw file (stage ``raw``); an
    existing ``output`` is an error unless ``overwrite``. With ``skip_bad_files``, bad input
    files are left out and named (:func:`run`; metadata extra ``skipped_inputs``)."""
    from calocoffea.processors.digitize import DigitizeProcessor

    inputs = _select_inputs(files, "sim", skip_bad_files)
    metadata = inputs.metadata
    geometry = _geometry_of(metadata, inputs.files)
    conditions = conditions or nominal(geometry)
    conditions.check_geometry(geometry, f"input {inputs.files[0]}")
    target = _check_output(output, files, overwrite=overwrite)
    with _shard_directory(target) as shards:
        proc = DigitizeProcessor(conditions, seed, shards, options or DigitizationOptions())
        result = run(
            proc,
            inputs.files,
            run_options or RunOptions(),
            skip_bad_files=skip_bad_files,
            skipped=inputs.skipped,
        )
        extra = {**_inputs_extra(files, result), **_beam_and_particle(metadata[0])}
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
    overwrite: bool = False,
    skip_bad_files: bool = False,
) -> RunResult:
    """Apply ``constants`` to raw files into one calibrated file (stage ``mip`` or ``gev``);
    an existing ``output`` is an error unless ``overwrite``. With ``skip_bad_files``, bad
    input files are left out and named (:func:`run`; metadata extra ``skipped_inputs``)."""
    from calocoffea.processors.calibrate import CalibrateProcessor

    inputs = _select_inputs(files, "raw", skip_bad_files)
    metadata = inputs.metadata
    geometry = _geometry_of(metadata, inputs.files)
    constants.check_geometry(geometry, f"input {inputs.files[0]}")
    target = _check_output(output, files, overwrite=overwrite)
    with _shard_directory(target) as shards:
        proc = CalibrateProcessor(constants, shards, steps or CalibrationSteps(), geometry.name)
        result = run(
            proc,
            inputs.files,
            run_options or RunOptions(),
            skip_bad_files=skip_bad_files,
            skipped=inputs.skipped,
        )
        out_metadata = proc.metadata()
        out_metadata.extra.update(_beam_and_particle(metadata[0]))
        if "skipped_files" in result.cutflow:
            out_metadata.extra.update(_inputs_extra(files, result))
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
    overwrite: bool = False,
    skip_bad_files: bool = False,
) -> RunResult:
    """Fill the histograms of :mod:`calocoffea.processors.histogram` (``histograms``: only
    those); write them to ``output`` (ROOT) and beside it ``<output>.json`` (lossless, UHI)
    if given (existing ones are an error unless ``overwrite``). Raw input is calibrated
    with ``constants``; simulated input with ``conditions`` and ``constants`` is digitised
    (``seed``, ``digitization``) and calibrated on the fly. With ``skip_bad_files``, bad
    input files are left out and named (:func:`run`)."""
    from calocoffea.processors.histogram import HistogramProcessor

    if stage is None:
        stage = _stage_of(files, skip_bad_files)
    inputs = _select_inputs(files, stage, skip_bad_files)
    metadata = inputs.metadata
    geometry = _geometry_of(metadata, inputs.files)
    if constants is not None:
        constants.check_geometry(geometry, f"input {inputs.files[0]}")
    target = None
    if output is not None:
        target = _check_output(output, files, overwrite=overwrite, companions=(".json",))
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
    result = run(
        proc,
        inputs.files,
        run_options or RunOptions(),
        skip_bad_files=skip_bad_files,
        skipped=inputs.skipped,
    )
    _warn_invalid(result.cutflow)
    if target is not None:
        result.output = write_histograms(result.histograms, target, overwrite=overwrite)
    return result


def fit_files(
    method: CalibrationMethod,
    files: Sequence[str | Path],
    *,
    run_options: RunOptions | None = None,
    skip_bad_files: bool = False,
) -> tuple[Constants, RunResult]:
    """Run ``method.collect`` over ``files`` and ``method.fit`` once on the sum.

    The files must be at the method's input stage and of its run type (when they say);
    whole-event methods get the shard paths, which live until ``fit`` returns. With
    ``skip_bad_files``, bad input files are left out and named (:func:`run`)."""
    from calocoffea.processors.collect import CollectProcessor

    inputs, geometry = _check_method_inputs(method, files, skip_bad_files)
    for path, m in zip(inputs.files, inputs.metadata, strict=True):
        found = run_type_of(m)
        if method.run_type != "physics" and found not in (method.run_type, "unknown"):
            raise InputFileError(
                f"{path} is a {found!r} run, but {type(method).__name__} learns from "
                f"{method.run_type!r} runs; give it {method.run_type} runs"
            )
    with _shard_directory(Path(tempfile.gettempdir()) / "calocoffea-collect") as shards:
        proc = CollectProcessor(method, shards, geometry.hash)
        result = run(
            proc,
            inputs.files,
            run_options or RunOptions(),
            skip_bad_files=skip_bad_files,
            skipped=inputs.skipped,
        )
        constants = method.fit(result.shards if method.needs_events else result.collected)
    return constants, result


def reconstruct_files(
    files: Sequence[str | Path],
    method: ReconstructionMethod,
    *,
    output: str | Path | None = None,
    label: str = "",
    run_options: RunOptions | None = None,
    overwrite: bool = False,
    skip_bad_files: bool = False,
) -> RunResult:
    """One energy per event with ``method``; ``result.columns`` holds ``file`` (index
    into ``files``), ``entry``,
    ``beam_energy``, ``energy`` and ``clipped_hits`` in (file, entry) order, and
    ``result.histograms`` the ``energy`` and ``response`` histograms (category ``label``,
    default: the method's class name). With ``output``, both are written to that ROOT file
    (:func:`write_reconstruction`; an existing one is an error unless ``overwrite``). With
    ``skip_bad_files``, bad input files are left out and named (:func:`run`); ``file`` still
    indexes ``files``."""
    from calocoffea.processors.reconstruct import ReconstructProcessor

    inputs, _ = _check_method_inputs(method, files, skip_bad_files)
    target = _check_output(output, files, overwrite=overwrite) if output is not None else None
    ranks = {str(Path(f).absolute()): k for k, f in enumerate(files)}
    proc = ReconstructProcessor(method, label or type(method).__name__, ranks)
    result = run(
        proc,
        inputs.files,
        run_options or RunOptions(),
        skip_bad_files=skip_bad_files,
        skipped=inputs.skipped,
    )
    if target is not None:
        result.output = write_reconstruction(result, target, files, method, overwrite=overwrite)
    return result


def write_reconstruction(
    result: RunResult,
    target: Path,
    files: Sequence[str | Path],
    method: ReconstructionMethod,
    *,
    overwrite: bool = False,
) -> Path:
    """ROOT file: tree ``reconstruction`` (one row per event: ``file`` (index into the
    inputs), ``entry``, ``beam_energy``, ``energy``, ``clipped_hits``), the histograms, and
    ``provenance`` (JSON string: inputs, method, options). An existing ``target`` is an
    error unless ``overwrite``."""
    import json

    import uproot

    target = _check_output(target, files, overwrite=overwrite)

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
    method: CalibrationMethod | ReconstructionMethod,
    files: Sequence[str | Path],
    skip_bad_files: bool = False,
) -> tuple[_Inputs, Geometry]:
    """The inputs and their geometry, checked against the method's stage and geometry."""
    inputs = _select_inputs(files, method.input_stage, skip_bad_files)
    geometry = _geometry_of(inputs.metadata, inputs.files)
    if geometry.name != method.geometry:
        raise GeometryMismatchError(
            f"method {type(method).__name__} is set up for {method.geometry!r} but "
            f"{inputs.files[0]} is for {geometry.name!r}; build the method for {geometry.name!r}"
        )
    return inputs, geometry


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


def _stage_of(files: Sequence[str | Path], skip_bad_files: bool = False) -> str:
    """The stage of the first input file (``sim`` if none); with ``skip_bad_files`` of the
    first whose metadata can be read (the others fail their checks later, and are named)."""
    for path in files:
        try:
            return read_metadata(path).stage
        except InputFileError:
            if not skip_bad_files:
                raise
    return "sim"


def _inputs_extra(files: Sequence[str | Path], result: RunResult) -> dict[str, Any]:
    """Output metadata on the inputs: ``inputs`` as given, those left out (bad files) under
    ``skipped_inputs`` (absolute path: why)."""
    skipped = result.cutflow.get("skipped_files", {})
    kept = [str(f) for f in files if str(Path(f).absolute()) not in skipped]
    return {"inputs": kept, **({"skipped_inputs": dict(skipped)} if skipped else {})}


def write_histograms(
    histograms: dict[str, hist.Hist], target: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """ROOT file (TH1/TH2/TH3, contents as double) and ``<target>.json`` (UHI, lossless);
    existing ones are an error unless ``overwrite``."""
    import json

    import uproot
    from hist import serialization

    target = _check_output(target, (), overwrite=overwrite, companions=(".json",))

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
