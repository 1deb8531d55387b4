"""Reading and writing calocoffea events files: one ROOT TTree of event scalars and hits.

What to use when:

- :func:`write_events` writes chunks of awkward records to a new file, atomically.
- :func:`open_events` checks a file (length, tree, branches and their types, the hit
  counter, stage) and returns its uproot TTree;
  use it before handing the file to coffea (``NanoEventsFactory`` with
  :class:`calocoffea.schema.CaloSchema`).
- :func:`read_events` does the same and reads everything into one awkward Array
  (scalars plus a jagged ``hits`` record), for small files and tests.
- :func:`read_metadata` returns the :class:`FileMetadata` written in a file.
- :func:`zip_hits` turns arrays read with uproot (``tree.arrays()``) into that layout.
- :func:`unreadable_branches` names the branches of an entry range that cannot be read.

Layout of a file::

    events                 TTree, one entry per primary particle
      event, run, pdg, beam_energy, [beam_x, beam_y, edep_active, fem, fem_<section>...]
      nhit                 int32, the one counter of every hit branch
      hit_cellid, hit_layer, hit_i, hit_j, hit_x, hit_y, hit_z, hit_energy, hit_time,
      hit_flags, [hit_gain]  jagged, one value per hit
    calocoffea_metadata    TObjString, FileMetadata.to_json(): stage, units, geometry...

The stage says what ``hit_energy`` holds (:data:`STAGES`); reading a file at another stage
than the one expected is a :class:`~calocoffea.exceptions.StageMismatchError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import glob
import json
import os
import re
import shutil
import struct
import uuid
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot

from calocoffea.exceptions import (
    BranchTypeError,
    CalocoffeaError,
    CorruptFileError,
    HitCounterError,
    InputFileError,
    MissingBranchError,
    MissingTreeError,
    OutputPathError,
    StageMismatchError,
)

#: Processing stages, in processing order, and the unit of ``hit_energy`` at each.
STAGES: dict[str, str] = {"sim": "MeV", "raw": "ADC", "mip": "MIP", "gev": "GeV"}

#: What turns a file of one stage into the next.
_STEPS: dict[str, str] = {"raw": "digitize", "mip": "calibrate", "gev": "calibrate"}

#: Key of the TObjString that holds :meth:`FileMetadata.to_json`.
METADATA_KEY = "calocoffea_metadata"
_FORMAT = "calocoffea-events"
_FORMAT_VERSION = 1

#: Documented scalar branches and their types; other scalars keep the type they are given.
SCALAR_DTYPES: dict[str, np.dtype] = {
    "event": np.dtype(np.int64),
    "run": np.dtype(np.int32),
    "pdg": np.dtype(np.int32),
    "beam_energy": np.dtype(np.float64),  # GeV, true
    "beam_x": np.dtype(np.float64),  # mm
    "beam_y": np.dtype(np.float64),  # mm
    "edep_active": np.dtype(np.float64),  # MeV, MC truth
    "fem": np.dtype(np.float32),  # EM fraction, MC truth; fem_<section> likewise
}
_FEM_SECTION_DTYPE = np.dtype(np.float32)

#: Documented hit fields (branch ``hit_<field>``) and their types.
HIT_DTYPES: dict[str, np.dtype] = {
    "cellid": np.dtype(np.uint64),
    "layer": np.dtype(np.int16),
    "i": np.dtype(np.int16),
    "j": np.dtype(np.int16),
    "x": np.dtype(np.float32),  # mm
    "y": np.dtype(np.float32),  # mm
    "z": np.dtype(np.float32),  # mm
    "energy": np.dtype(np.float32),  # unit of the file's stage
    "time": np.dtype(np.float32),  # ns
    "flags": np.dtype(np.uint32),  # bits: low gain, saturated, dead, noisy
    "gain": np.dtype(np.uint8),  # optional: 0 high gain, 1 low gain
    "edep": np.dtype(np.float32),  # optional: MC truth deposit [MeV] (before effects/digitisation)
    "adc_lg": np.dtype(np.float32),  # optional: low-gain reading of dual-gain runs [ADC]
}

REQUIRED_SCALARS: tuple[str, ...] = ("event", "run", "pdg", "beam_energy")
REQUIRED_HIT_FIELDS: tuple[str, ...] = ("cellid", "layer", "x", "y", "z", "energy")
COUNTER = "nhit"
HIT_PREFIX = "hit_"
#: Branches :func:`open_events` insists on by default.
REQUIRED_BRANCHES: tuple[str, ...] = (
    *REQUIRED_SCALARS,
    COUNTER,
    *(HIT_PREFIX + name for name in REQUIRED_HIT_FIELDS),
)

#: Compression by name: (uproot algorithm, level). zstd 5 is ROOT's own default (505);
#: zlib 1 is uproot's default; lz4 4 is ROOT's recommendation for fast reading (404).
COMPRESSIONS: dict[str, tuple[type, int]] = {
    "zstd": (uproot.ZSTD, 5),
    "zlib": (uproot.ZLIB, 1),
    "lz4": (uproot.LZ4, 4),
}


# --------------------------------------------------------------------------- metadata


def default_units(stage: str) -> dict[str, str]:
    """Units of the branches of a file at ``stage``."""
    mm = "mm"
    return {
        "hit_energy": STAGES[stage],
        "hit_x": mm,
        "hit_y": mm,
        "hit_z": mm,
        "hit_time": "ns",
        "beam_energy": "GeV",
        "beam_x": mm,
        "beam_y": mm,
        "edep_active": "MeV",
    }


def _check_stage_name(stage: str) -> None:
    if stage not in STAGES:
        valid = ", ".join(f"{name!r} (hit_energy in {unit})" for name, unit in STAGES.items())
        raise ValueError(f"unknown stage {stage!r}; valid stages are {valid}")


@dataclass(frozen=True)
class FileMetadata:
    """What a calocoffea events file holds: stage and units, geometry, who wrote it.

    ``geometry`` and ``geometry_hash`` are ``""`` where unknown (foreign files).
    ``units`` defaults to :func:`default_units` of the stage; units given are merged
    over those defaults and must agree with the stage for ``hit_energy``.
    ``extra`` is free JSON (seed, particle, command line...).
    """

    stage: str
    geometry: str = ""
    geometry_hash: str = ""
    producer: str = ""
    units: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_stage_name(self.stage)
        units = {**default_units(self.stage), **self.units}
        if units["hit_energy"] != STAGES[self.stage]:
            raise ValueError(
                f"units say hit_energy is in {units['hit_energy']!r} but stage "
                f"{self.stage!r} means {STAGES[self.stage]!r}; leave units['hit_energy'] "
                "out (it follows the stage) or give the stage that matches the unit"
            )
        object.__setattr__(self, "units", units)
        object.__setattr__(self, "extra", dict(self.extra))

    @property
    def energy_unit(self) -> str:
        """Unit of ``hit_energy``."""
        return STAGES[self.stage]

    def to_json(self) -> str:
        """JSON text of this metadata; ``extra`` must be JSON-serialisable."""
        payload = {"format": _FORMAT, "version": _FORMAT_VERSION, **dataclasses.asdict(self)}
        try:
            return json.dumps(payload, sort_keys=True)
        except TypeError as err:
            raise ValueError(
                f"FileMetadata.extra must hold JSON values only ({err}); convert numpy "
                "scalars and paths to int, float or str first"
            ) from err

    @classmethod
    def from_json(cls, text: str) -> FileMetadata:
        """Metadata from :meth:`to_json` text; ``ValueError`` if it is not such text."""
        payload = json.loads(text)
        if not isinstance(payload, dict) or "stage" not in payload:
            raise ValueError("metadata JSON must be an object with at least a 'stage' key")
        version = payload.get("version", _FORMAT_VERSION)
        if not isinstance(version, int) or version > _FORMAT_VERSION:
            raise ValueError(
                f"metadata format version {version!r} is newer than this calocoffea reads "
                f"({_FORMAT_VERSION}); upgrade calocoffea"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in payload.items() if key in names})


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class _Layout:
    """Branch types of one file, fixed by its first chunk."""

    scalars: dict[str, np.dtype]
    hits: dict[str, np.dtype]


def _resolve_compression(compression: str | uproot.compression.Compression | None) -> Any:
    if compression is None or isinstance(compression, uproot.compression.Compression):
        return compression
    try:
        algorithm, level = COMPRESSIONS[compression.lower()]
    except (KeyError, AttributeError):
        raise ValueError(
            f"unknown compression {compression!r}; use one of {', '.join(COMPRESSIONS)}, "
            "None for no compression, or an uproot compression object such as uproot.ZSTD(9)"
        ) from None
    return algorithm(level)


def check_output_path(path: Path) -> None:
    """OutputPathError unless a file can be written at ``path``: its directory exists and
    is writable, and ``path`` is not a directory. Every output check starts here."""
    parent = path.parent
    if not parent.is_dir():
        why = "is a file, not a directory" if parent.exists() else "does not exist"
        raise OutputPathError(
            f"cannot write {path}: {parent} {why}; create the directory first "
            f"(mkdir -p {parent}) or choose another output path"
        )
    if path.is_dir():
        raise OutputPathError(f"cannot write {path}: it is a directory; give a file name")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"cannot write {path}: directory {parent} is not writable by this user; "
            "choose a directory you can write to"
        )


def safe_child(directory: str | os.PathLike[str], name: str) -> Path:
    """``directory / name`` for a ``name`` that comes from outside (metadata, a configuration,
    a plugin): an :class:`~calocoffea.exceptions.OutputPathError` unless it is one plain file
    name, so that no name (``../x``, ``/etc/x``, ``a/b``, ``..``) writes outside ``directory``."""
    text = str(name)
    if not text or text in (".", "..") or any(c in text for c in "/\\\0"):
        raise OutputPathError(
            f"output name {text!r} is not a plain file name (no '/', '\\', '..' or NUL); it "
            f"would not land inside {directory}: choose a name without a directory part"
        )
    return Path(directory) / text


def remove_stale(path: Path) -> list[Path]:
    """Remove what killed runs left beside ``path``: the hidden temporaries and shard
    directories ``.<name>.tmp-<pid>-*`` and ``.<name>-shards-<pid>-*`` whose process is no
    longer alive (a SIGKILL leaves no chance to clean up). Another live run's are kept."""
    removed = []
    for stale in path.parent.glob(f".{glob.escape(path.name)}[.-][ts]*-*-*"):
        match = re.fullmatch(rf"\.{re.escape(path.name)}(?:\.tmp|-shards)-(\d+)-.*", stale.name)
        if match is None or _alive(int(match.group(1))):
            continue
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        removed.append(stale)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _create_temporary(path: Path) -> Path:
    """An empty file beside ``path``, created exclusively, that will become ``path``."""
    remove_stale(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.close(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except OSError as err:
        raise OutputPathError(
            f"cannot write {path}: creating a file in {path.parent} failed ({err.strerror}); "
            "choose a directory on a writable file system"
        ) from err
    return temporary


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; it becomes ``path`` when the
    block ends, and is removed if the block raises (KeyboardInterrupt included): the output
    appears complete or not at all. The directory is checked first (OutputPathError)."""
    target = Path(path).absolute()
    check_output_path(target)
    temporary = _create_temporary(target)
    try:
        yield temporary
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


def _numbers(array: Any, where: str) -> np.ndarray:
    """A flat numeric numpy array, or a ValueError saying what ``where`` should be."""
    try:
        values = ak.to_numpy(array, allow_missing=False)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{where} must be one number per entry ({err})") from err
    if values.ndim != 1 or values.dtype.kind not in "biuf":
        raise ValueError(
            f"{where} must be one number per entry, got {ak.type(array)}; "
            "store lists and strings elsewhere"
        )
    return values


def _cast(values: np.ndarray, dtype: np.dtype, where: str) -> np.ndarray:
    """``values`` as ``dtype``; integers must survive the cast unchanged."""
    if values.dtype == dtype:
        return values
    cast = values.astype(dtype)
    if dtype.kind in "biu" and not np.array_equal(cast, values):
        raise ValueError(
            f"{where} has values that {dtype} cannot hold exactly "
            f"(range {values.min()}..{values.max()}); fix the producer of these values"
        )
    return cast


def _hit_field(chunk: ak.Array, index: int) -> ak.Array:
    if not isinstance(chunk, ak.Array) or not chunk.fields:
        raise ValueError(
            f"chunk {index} is a {type(chunk).__name__}; chunks must be awkward Arrays of "
            "event records (ak.zip({..., 'hit': hits}, depth_limit=1))"
        )
    names = [name for name in ("hit", "hits") if name in chunk.fields]
    if len(names) != 1:
        found = "both 'hit' and 'hits'" if names else "no field 'hit'"
        raise ValueError(
            f"chunk {index} has {found}; a chunk needs exactly one field 'hit' holding the "
            "jagged hit records (cellid, layer, x, y, z, energy...)"
        )
    hits = chunk[names[0]]
    if hits.ndim != 2 or not hits.fields:
        raise ValueError(
            f"chunk {index}: field {names[0]!r} must be a list of hit records per event, "
            f"got {ak.type(hits)}"
        )
    return hits


def _check_fields(given: Iterable[str], required: Iterable[str], where: str) -> None:
    missing = [name for name in required if name not in set(given)]
    if missing:
        raise ValueError(f"{where} lacks the required fields {', '.join(missing)}")


def _scalar_dtype(name: str, values: np.ndarray) -> np.dtype:
    if name in SCALAR_DTYPES:
        return SCALAR_DTYPES[name]
    if name.startswith("fem_"):
        return _FEM_SECTION_DTYPE
    return values.dtype


def _documented_first(names: list[str], documented: dict[str, np.dtype]) -> list[str]:
    """``names`` in documented order, then the undocumented ones in given order."""
    return [n for n in documented if n in names] + [n for n in names if n not in documented]


def _layout_of(chunk: ak.Array) -> _Layout:
    """Branch types from the first chunk: documented types, else the chunk's own."""
    hits = _hit_field(chunk, 0)
    scalars = [name for name in chunk.fields if name not in ("hit", "hits")]
    _check_fields(scalars, REQUIRED_SCALARS, "chunk 0")
    _check_fields(hits.fields, REQUIRED_HIT_FIELDS, "the hits of chunk 0")
    for name in scalars:
        if name == COUNTER or name.startswith(HIT_PREFIX):
            raise ValueError(
                f"chunk 0 has a scalar field {name!r}, a name kept for hit branches; rename it"
            )
    ordered = _documented_first(scalars, SCALAR_DTYPES)
    hit_names = _documented_first(hits.fields, HIT_DTYPES)
    flat = ak.flatten(hits, axis=1)
    return _Layout(
        scalars={n: _scalar_dtype(n, _numbers(chunk[n], f"field {n!r}")) for n in ordered},
        hits={n: HIT_DTYPES.get(n, _numbers(flat[n], f"hit field {n!r}").dtype) for n in hit_names},
    )


def _columns(chunk: ak.Array, layout: _Layout, index: int) -> dict[str, ak.Array]:
    """The chunk as uproot ``extend`` wants it: scalars and one jagged record ``hit``."""
    hits = _hit_field(chunk, index)
    scalars = sorted(name for name in chunk.fields if name not in ("hit", "hits"))
    if scalars != sorted(layout.scalars) or sorted(hits.fields) != sorted(layout.hits):
        raise ValueError(
            f"chunk {index} has fields {scalars} and hit fields {sorted(hits.fields)} but the "
            f"first chunk had {sorted(layout.scalars)} and {sorted(layout.hits)}; every chunk "
            "of one file must have the same fields"
        )
    columns = {
        name: ak.Array(_cast(_numbers(chunk[name], f"field {name!r}"), dtype, f"field {name!r}"))
        for name, dtype in layout.scalars.items()
    }
    flat = ak.flatten(hits, axis=1)
    counts = _numbers(ak.num(hits, axis=1), "the hit count")
    content = {
        name: _cast(_numbers(flat[name], f"hit field {name!r}"), dtype, f"hit field {name!r}")
        for name, dtype in layout.hits.items()
    }
    columns["hit"] = ak.unflatten(ak.zip(content), counts)
    return columns


def _write_chunks(
    file: Any, treename: str, chunks: Iterator[ak.Array], metadata: FileMetadata
) -> int:
    """Write every chunk into ``file``; return the number of events written."""
    first = next(chunks, None)
    if first is None:
        raise ValueError(
            "no chunks to write: the iterable of chunks was empty; refusing to write a file "
            "without events (check the event count or the input selection)"
        )
    layout = _layout_of(first)
    tree = None
    n_events = 0
    for index, chunk in enumerate(chain([first], chunks)):
        columns = _columns(chunk, layout, index)
        if tree is None:
            tree = file.mktree(
                treename,
                {name: column.type.content for name, column in columns.items()},
                title=f"calocoffea events, stage {metadata.stage} "
                f"(hit_energy in {metadata.energy_unit})",
                counter_name=lambda counted: "n" + counted,
                field_name=lambda outer, inner: inner if outer == "" else f"{outer}_{inner}",
            )
        if len(chunk):
            tree.extend(columns)
            n_events += len(chunk)
    return n_events


#: Namespace of the files' UUIDs (:func:`_content_uuids`).
_UUID_NAMESPACE = uuid.UUID("6f1d3c2e-8a4b-5c7d-9e0f-123456789abc")


def _content_uuids(metadata_json: str, identity: uuid.UUID | str | None = None) -> Any:
    """UUIDs for a file (and its directories) derived from its metadata, not drawn at
    random: the file's UUID is its identity for the random numbers of the steps after it
    (:func:`calocoffea.rng.file_key`), so a file written again from the same description
    (geometry, particle, beam, seed, run, events, version) gives the same digitisation in
    any directory and on any day."""
    counter = iter(range(1 << 30))
    first = None if identity is None else uuid.UUID(str(identity))

    def make() -> uuid.UUID:
        k = next(counter)
        if k == 0 and first is not None:
            return first
        return uuid.uuid5(_UUID_NAMESPACE, f"{k}:{first}:{metadata_json}")

    return make


def write_events(
    path: str | os.PathLike[str],
    chunks: Iterable[ak.Array],
    metadata: FileMetadata,
    *,
    compression: str | uproot.compression.Compression | None = "zstd",
    treename: str = "events",
    identity: uuid.UUID | str | None = None,
) -> Path:
    """Write chunks of events to a new ROOT file at ``path`` and return its path.

    ``identity`` is the file's UUID, which keys the random numbers of the steps after it
    (a file converted from another format keeps its source's UUID, so converting does not
    change the digitisation); by default it is derived from ``metadata``.

    Each chunk is an awkward Array of event records: the scalar fields (at least
    ``event``, ``run``, ``pdg``, ``beam_energy``) and a field ``hit`` of jagged hit
    records (at least ``cellid``, ``layer``, ``x``, ``y``, ``z``, ``energy``); the field
    may be called ``hits`` instead, so that :func:`read_events` output writes back.
    Scalars become branches of their own name, hit fields ``hit_<field>`` counted by
    the one branch ``nhit``.
    Documented fields are cast to their documented types (:data:`SCALAR_DTYPES`,
    :data:`HIT_DTYPES`); other fields keep the type of the first chunk.

    The file appears complete or not at all: it is written beside ``path`` under a
    temporary name and renamed at the end; an existing file at ``path`` is replaced
    only then. Any exception (KeyboardInterrupt included) removes the temporary file.
    """
    target = Path(path).absolute()
    algorithm = _resolve_compression(compression)
    metadata_json = metadata.to_json()  # fail before any work if extra is not JSON
    uuids = _content_uuids(metadata_json, identity)
    with (
        atomic_write(target) as temporary,
        uproot.recreate(temporary, compression=algorithm, uuid_function=uuids) as file,
    ):
        _write_chunks(file, treename, iter(chunks), metadata)
        file[METADATA_KEY] = metadata_json
    return target


# --------------------------------------------------------------------------- reading


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _check_length(path: Path) -> None:
    """A :class:`~calocoffea.exceptions.CorruptFileError` if the ROOT file at ``path`` is
    shorter than its header says (``fEND``); files that are not ROOT are left to uproot."""
    with open(path, "rb") as f:
        header = f.read(20)
    if len(header) < 20 or header[:4] != b"root":
        return
    (version,) = struct.unpack(">i", header[4:8])
    big = version >= 1_000_000  # 64-bit seek pointers
    (end,) = struct.unpack(">q", header[12:20]) if big else struct.unpack(">i", header[12:16])
    size = path.stat().st_size
    if size < end:
        raise CorruptFileError(
            f"{path} is truncated: its header says the file ends at byte {end} but it has "
            f"{size} bytes; the copy was cut short (an interrupted transfer, a full disk, a "
            "job killed while writing it): copy it again from its source, or write it again"
        )


def _open_file(path: str | os.PathLike[str]) -> Any:
    """The uproot file at ``path``; InputFileError if it is missing or not ROOT,
    CorruptFileError if it is shorter than its header says."""
    local = "://" not in str(path)
    source: Any = Path(path) if local else str(path)
    if local and not source.is_file():
        why = "is a directory" if source.is_dir() else "does not exist"
        raise InputFileError(
            f"input file {source} {why}; check the path (relative paths start at {Path.cwd()})"
        )
    if local:
        _check_length(source)
    try:
        return uproot.open(source)
    except Exception as err:
        raise InputFileError(
            f"cannot read {source} as a ROOT file ({type(err).__name__}: {_one_line(err)}); "
            "give a ROOT file written by calocoffea or by ROOT"
        ) from err


def _metadata_in(file: Any, where: str) -> FileMetadata | None:
    """The metadata of an open file, None if it has none."""
    try:
        if METADATA_KEY not in file:
            return None
        text = file[METADATA_KEY]
    except Exception as err:  # uproot and its decompressors, on damaged bytes
        raise _damaged(where, f"the {METADATA_KEY!r} object", err) from err
    try:
        if not isinstance(text, str):
            raise ValueError(f"it is a {file.classname_of(METADATA_KEY)}, not a TObjString")
        return FileMetadata.from_json(str(text))
    except ValueError as err:
        raise InputFileError(
            f"{where}: the {METADATA_KEY!r} object cannot be read ({err}); rewrite the file "
            "with calocoffea.io.write_events"
        ) from err


def _damaged(where: str, what: str, err: BaseException) -> CorruptFileError:
    return CorruptFileError(
        f"{where}: {what} cannot be read ({type(err).__name__}: {_one_line(err)}); the file "
        "is damaged: copy it again from its source, or write it again (or pass "
        "--skip-bad-files to leave it out)"
    )


def _no_metadata(where: str) -> InputFileError:
    return InputFileError(
        f"{where} has no calocoffea metadata (no {METADATA_KEY!r} key): it was not written by "
        "calocoffea, so its stage and units are unknown; declare them by passing the stage "
        f"explicitly, e.g. open_events(path, stage='sim'), valid stages: {', '.join(STAGES)}"
    )


def read_metadata(path: str | os.PathLike[str]) -> FileMetadata:
    """The :class:`FileMetadata` stored in the file at ``path``."""
    with _open_file(path) as file:
        metadata = _metadata_in(file, str(path))
    if metadata is None:
        raise _no_metadata(str(path))
    return metadata


def _tree_in(file: Any, treename: str, where: str) -> Any:
    try:
        tree = file[treename] if treename in file else None
    except Exception as err:
        raise CorruptFileError(
            f"{where}: the TTree {treename!r} cannot be read ({type(err).__name__}: "
            f"{_one_line(err)}); the file is damaged: copy it again from its source, or "
            "write it again"
        ) from err
    if isinstance(tree, uproot.TTree):
        return tree
    contents = ", ".join(
        f"{name} ({classname})" for name, classname in file.classnames(cycle=False).items()
    )
    raise MissingTreeError(
        f"{where} has no TTree {treename!r} (it holds: {contents or 'nothing'}); it is not a "
        "calocoffea events file (convert EDM4hep files and flat ntuples with `calocoffea "
        "convert`), or its events are in another tree: pass treename=..."
    )


def _check_branches(tree: Any, required: Collection[str], where: str) -> None:
    available = list(tree.keys())
    missing = [name for name in required if name not in available]
    if not missing:
        return
    lines = []
    for name in missing:
        close = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
        hint = f" (closest: {', '.join(close)})" if close else ""
        lines.append(f"    {name}{hint}")
    raise MissingBranchError(
        f"tree {tree.name!r} in {where} lacks branches calocoffea needs:\n"
        + "\n".join(lines)
        + f"\nit has: {', '.join(available)}\nwrite the file with calocoffea.io.write_events, "
        "rename the branches, or pass required=... if your analysis does without them"
    )


#: Kinds of numpy dtype read safely as a documented dtype of each kind: integer fields take
#: integers of any width (a float may hold 2.5, and float32 holds integers exactly only up
#: to 2**24, float64 up to 2**53); float fields take floats or integers (ADC counts).
_SAFE_KINDS: dict[str, str] = {"i": "iu", "u": "iu", "f": "iuf"}


def _documented_dtype(name: str) -> np.dtype | None:
    """The documented dtype of branch ``name``, None for undocumented branches."""
    if name.startswith(HIT_PREFIX):
        return HIT_DTYPES.get(name[len(HIT_PREFIX) :])
    if name == COUNTER:
        return np.dtype(np.int32)
    if name.startswith("fem_"):
        return _FEM_SECTION_DTYPE
    return SCALAR_DTYPES.get(name)


def _numeric_dtype(branch: Any, jagged: bool) -> np.dtype | None:
    """The dtype of one value of ``branch`` if it holds one number per event (``jagged``:
    one list of numbers per event), else None."""
    interpretation = branch.interpretation
    if jagged:
        if not isinstance(interpretation, uproot.AsJagged):
            return None
        interpretation = interpretation.content
    if not isinstance(interpretation, uproot.interpretation.numerical.Numerical):
        return None
    dtype = np.dtype(interpretation.to_dtype)
    return dtype if dtype.subdtype is None and dtype.fields is None else None


def _check_types(tree: Any, where: str) -> None:
    """Every documented branch of ``tree`` holds numbers its documented type takes safely
    (:data:`_SAFE_KINDS`), one per event or, for hits, one list of them per event."""
    for name in tree.keys():
        documented = _documented_dtype(name)
        if documented is None:
            continue
        branch = tree[name]
        hits = name.startswith(HIT_PREFIX)
        shape = "a list of numbers per event" if hits else "one number per event"
        what = "integers" if documented.kind in "iu" else "integers or floats"
        fix = (
            f"write it as {shape}, {what} of any width ({documented} is documented), e.g. "
            "with calocoffea.io.write_events, or convert it with `calocoffea convert`"
        )
        found = _numeric_dtype(branch, hits)
        if found is None:
            raise BranchTypeError(
                f"{where}: tree {tree.name!r}, branch {name!r} holds {branch.typename}, not "
                f"{shape}; {fix}"
            )
        if found.kind not in _SAFE_KINDS[documented.kind]:
            why = (
                "an integer: a float may hold 2.5 or lose digits (float32 holds integers "
                "exactly only up to 2**24, float64 up to 2**53)"
                if documented.kind in "iu"
                else "a number"
            )
            raise BranchTypeError(
                f"{where}: tree {tree.name!r}, branch {name!r} holds {found}, but calocoffea "
                f"reads it as {documented}, {why}; {fix}"
            )


def _check_counters(tree: Any, where: str) -> None:
    """Every ``hit_*`` branch of ``tree`` is counted by the one counter ``nhit``."""
    for name in tree.keys():
        if not name.startswith(HIT_PREFIX):
            continue
        counter = tree[name].count_branch
        if counter is not None and counter.name == COUNTER:
            continue
        found = (
            f"is counted by {counter.name!r}"
            if counter is not None
            else "has no counter branch (it keeps its own lengths, like a std::vector)"
        )
        raise HitCounterError(
            f"{where}: tree {tree.name!r}: branch {name!r} {found} but the hit branches "
            f"are counted by {COUNTER!r}; all hit_* branches must share one counter, "
            f"{COUNTER!r}, or the hits of an event could be paired with values of another "
            "hit (a silent wrong answer): write the file with calocoffea.io.write_events, or "
            "convert it with `calocoffea convert`"
        )


def unreadable_branches(
    path: str | os.PathLike[str], entry_start: int, entry_stop: int, treename: str = "events"
) -> dict[str, str]:
    """The branches of ``treename`` whose entries ``entry_start`` to ``entry_stop`` cannot be
    read, each with why: how a chunk that failed while reading is diagnosed."""
    found: dict[str, str] = {}
    with uproot.open(path) as file:
        tree = file[treename]
        for name in tree.keys():
            try:
                tree[name].array(entry_start=entry_start, entry_stop=entry_stop)
            except Exception as err:  # any failure names the branch; none is swallowed
                found[name] = f"{type(err).__name__}: {_one_line(err)}"
    return found


def _stage_hint(found: str, expected: str) -> str:
    order = list(STAGES)
    if order.index(found) < order.index(expected):
        steps = {_STEPS[s] for s in order[order.index(found) + 1 : order.index(expected) + 1]}
        return f"{' and '.join(sorted(steps, reverse=True))} it first"
    return f"read the file of stage {expected!r} it was made from instead"


def _check_stage(metadata: FileMetadata, stage: str, where: str) -> None:
    if metadata.stage != stage:
        raise StageMismatchError(
            f"file {where} is at stage {metadata.stage!r} (hit_energy in "
            f"{metadata.energy_unit}) but {stage!r} ({STAGES[stage]}) was expected; "
            f"{_stage_hint(metadata.stage, stage)}, or pass stage={metadata.stage!r} "
            "if its hits are what you want"
        )


def open_events(
    path: str | os.PathLike[str],
    *,
    stage: str | None = None,
    treename: str = "events",
    required: Collection[str] = REQUIRED_BRANCHES,
) -> Any:
    """The checked events TTree (uproot) of the file at ``path``.

    Checks, each an :class:`~calocoffea.exceptions.InputFileError` naming the file:
    the file is a ROOT file as long as its header says
    (:class:`~calocoffea.exceptions.CorruptFileError`), it has the tree
    (:class:`~calocoffea.exceptions.MissingTreeError`), the tree has the ``required``
    branches (:class:`~calocoffea.exceptions.MissingBranchError`), documented branches hold
    numbers of a kind their type takes safely (integers for integer fields, integers or
    floats for float fields: :class:`~calocoffea.exceptions.BranchTypeError`), every hit
    branch is counted by ``nhit`` (:class:`~calocoffea.exceptions.HitCounterError`), and its
    stage is ``stage`` (:class:`~calocoffea.exceptions.StageMismatchError`). A file without
    calocoffea metadata is accepted only when ``stage`` is given: that declares its stage.
    The file stays open as long as the tree is used; ``tree.file.close()`` closes it.
    """
    if stage is not None:
        _check_stage_name(stage)
    where = str(path)
    file = _open_file(path)
    try:
        tree = _tree_in(file, treename, where)
        _check_branches(tree, required, where)
        _check_types(tree, where)
        _check_counters(tree, where)
        metadata = _metadata_in(file, where)
        if metadata is None and stage is None:
            raise _no_metadata(where)
        if metadata is not None and stage is not None:
            _check_stage(metadata, stage, where)
    except BaseException:
        file.close()
        raise
    return tree


def zip_hits(arrays: ak.Array) -> ak.Array:
    """Branch arrays as records: scalars, and ``hit_*`` zipped into ``hits`` (no ``nhit``)."""
    hit_names = [name for name in arrays.fields if name.startswith(HIT_PREFIX)]
    scalars = {n: arrays[n] for n in arrays.fields if n not in hit_names and n != COUNTER}
    hits = ak.zip({n[len(HIT_PREFIX) :]: arrays[n] for n in hit_names}, with_name="CaloHit")
    return ak.zip({**scalars, "hits": hits}, depth_limit=1)


def read_events(
    path: str | os.PathLike[str],
    *,
    stage: str | None = None,
    entry_start: int | None = None,
    entry_stop: int | None = None,
    treename: str = "events",
) -> ak.Array:
    """Events of the file at ``path`` as records with scalars and a jagged ``hits`` field.

    Checked like :func:`open_events`; reads everything between ``entry_start`` and
    ``entry_stop`` into memory: for large files use coffea with ``CaloSchema``.
    """
    tree = open_events(path, stage=stage, treename=treename)
    try:
        arrays = tree.arrays(entry_start=entry_start, entry_stop=entry_stop)
    except CalocoffeaError:
        raise
    except Exception as err:  # uproot and its decompressors, on damaged baskets
        raise _damaged(str(path), f"the branches of TTree {treename!r}", err) from err
    finally:
        tree.file.close()
    return zip_hits(arrays)
