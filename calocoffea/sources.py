"""Where events come from: calocoffea's own files, EDM4hep files and users' ntuples.

What to use when:

- :func:`open_source` -- a foreign file as a reader with ``metadata()``, ``chunks()``,
  ``describe()`` and ``identity`` (:class:`calocoffea.edm4hep.EDM4hepFile` for podio files,
  :class:`calocoffea.branchmap.MappedNtuple` with a branch map); ``None`` for native files.
- :func:`convert` -- any readable file to the native layout (``calocoffea convert``).
- :func:`native_files` -- a context manager that hands the runner native files: native ones
  as they are, the others converted once into a temporary directory (removed afterwards).
  Every processor then runs on them unchanged.

A converted file keeps the UUID of its source, and the digitisation's random numbers are
keyed by it, so digitising an EDM4hep file, its conversion, or the same hits written natively
with that identity gives the same result. On a cluster whose workers do not share this
machine's temporary directory, convert first and give the converted files.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from calocoffea.edm4hep import CellMapping, EDM4hepFile, is_edm4hep
from calocoffea.exceptions import InputFileError
from calocoffea.io import METADATA_KEY, FileMetadata, write_events


class Source(Protocol):
    """A foreign file read as calocoffea events."""

    path: Path

    @property
    def identity(self) -> Any: ...

    def metadata(self) -> FileMetadata: ...

    def chunks(self, step_events: int = ...) -> Iterator[Any]: ...

    def describe(self) -> list[str]: ...


@dataclass(frozen=True)
class SourceOptions:
    """How to read foreign files: a branch map (TOML) for ntuples; for EDM4hep, the
    collections, the cell-ID encoding (if the file does not carry it), the geometry to map
    cells onto and the field mapping."""

    branch_map: str | None = None
    collections: tuple[str, ...] = ()
    encoding: str | None = None
    geometry: str | None = None
    mapping: CellMapping = field(default_factory=CellMapping)


def is_native(path: str | Path) -> bool:
    """True for files written by calocoffea (they carry ``calocoffea_metadata``)."""
    import uproot

    try:
        with uproot.open(path) as file:
            return METADATA_KEY in {key.split(";")[0] for key in file.keys(recursive=False)}
    except Exception:
        return False


def open_source(path: str | Path, options: SourceOptions | None = None) -> Source | None:
    """The reader of a foreign file; ``None`` when ``path`` is a calocoffea file."""
    options = options or SourceOptions()
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"input file {path} does not exist; check the path")
    if options.branch_map:
        from calocoffea.branchmap import BranchMap, MappedNtuple

        return MappedNtuple(path, BranchMap.load(options.branch_map))
    if is_native(path):
        return None
    if is_edm4hep(path):
        return EDM4hepFile(
            path,
            collections=options.collections or None,
            encoding=options.encoding,
            geometry=options.geometry,
            mapping=options.mapping,
        )
    raise InputFileError(
        f"{path} is neither a calocoffea events file nor an EDM4hep (podio) file: "
        f"{_contents(path)}; for a flat ntuple give a branch map (--map map.toml, see "
        "examples/branchmap.toml)"
    )


def _contents(path: Path) -> str:
    """What a ROOT file holds, for messages: its top-level keys and their classes."""
    import uproot

    try:
        with uproot.open(path) as file:
            classes = file.classnames(recursive=False)
    except Exception as err:
        return f"it cannot be read as ROOT ({type(err).__name__}: {err})"
    trees = [k.split(";")[0] for k, c in classes.items() if c == "TTree"]
    listing = ", ".join(f"{k.split(';')[0]} ({c})" for k, c in classes.items()) or "nothing"
    where = "no TTree 'events'" if "events" not in trees else "a TTree 'events'"
    return f"it has {where} and holds {listing}"


def convert(
    path: str | Path,
    output: str | Path,
    options: SourceOptions | None = None,
    *,
    step_events: int = 50_000,
) -> Path:
    """Write ``path`` in the native layout to ``output`` (atomically), keeping its UUID."""
    source = open_source(path, options)
    if source is None:
        raise InputFileError(
            f"{path} is already a calocoffea events file; there is nothing to convert"
        )
    return write_events(
        output, source.chunks(step_events), source.metadata(), identity=source.identity
    )


@contextlib.contextmanager
def native_files(
    files: Sequence[str | Path],
    options: SourceOptions | None = None,
    *,
    directory: str | Path | None = None,
) -> Iterator[list[str]]:
    """``files`` as native files: foreign ones converted into a temporary directory (in
    ``directory`` if given), which is removed when the block ends."""
    sources = [open_source(f, options) for f in files]
    if all(s is None for s in sources):
        yield [str(f) for f in files]
        return
    with tempfile.TemporaryDirectory(prefix=".calocoffea-convert-", dir=directory) as tmp:
        out = []
        for k, (path, source) in enumerate(zip(files, sources, strict=True)):
            if source is None:
                out.append(str(path))
                continue
            target = Path(tmp) / f"{k:04d}-{Path(path).stem}.root"
            write_events(target, source.chunks(), source.metadata(), identity=source.identity)
            out.append(str(target))
        yield out


__all__ = ["Source", "SourceOptions", "convert", "is_native", "native_files", "open_source"]
