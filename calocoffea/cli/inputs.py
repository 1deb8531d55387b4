"""Options for reading foreign inputs (EDM4hep files, mapped ntuples), shared by the
subcommands that read events."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from calocoffea.sources import SourceOptions


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """Add --map, --collection, --encoding, --map-geometry and the field mapping."""
    group = parser.add_argument_group(
        "foreign inputs",
        "EDM4hep (podio) files are recognised by themselves; flat ntuples need a branch map",
    )
    group.add_argument("--map", metavar="MAP.toml", help="branch map of a flat ntuple")
    group.add_argument(
        "--collection",
        action="append",
        metavar="NAME",
        help="EDM4hep calorimeter hit collection to read (repeat for several; default: all "
        "of one kind)",
    )
    group.add_argument(
        "--encoding",
        metavar="STRING",
        help="DD4hep cell-ID encoding, e.g. 'system:0:5,layer:5:9,x:14:-16,y:30:-16' "
        "(default: the one in the file's metadata)",
    )
    group.add_argument(
        "--map-geometry",
        metavar="NAME",
        help="map the decoded cells onto this geometry (layer, i, j offsets inferred from the "
        "hit positions)",
    )
    group.add_argument(
        "--fields",
        metavar="LAYER,I,J",
        default="layer,x,y",
        help="encoding fields that are the layer and the cell indices (default: layer,x,y)",
    )


def source_options(args: argparse.Namespace) -> SourceOptions:
    from calocoffea.edm4hep import CellMapping
    from calocoffea.exceptions import CellIDEncodingError
    from calocoffea.sources import SourceOptions

    names = [n.strip() for n in args.fields.split(",")]
    if len(names) != 3 or not all(names):
        raise CellIDEncodingError(
            f"--fields {args.fields!r}: give the three encoding fields of layer, i and j, "
            "e.g. --fields layer,x,y"
        )
    return SourceOptions(
        branch_map=args.map,
        collections=tuple(args.collection or ()),
        encoding=args.encoding,
        geometry=args.map_geometry,
        mapping=CellMapping(layer=names[0], i=names[1], j=names[2]),
    )


@contextlib.contextmanager
def native_inputs(args: argparse.Namespace) -> Iterator[list[str]]:
    """``args.files`` as native files (foreign ones converted beside ``args.output``, or in
    the system's temporary directory, for the duration of the command)."""
    from pathlib import Path

    from calocoffea.sources import native_files

    output = getattr(args, "output", None)
    directory = Path(output).absolute().parent if output else None
    if directory is not None and not directory.is_dir():
        directory = None  # the command reports the missing output directory itself
    with native_files(args.files, source_options(args), directory=directory) as files:
        yield files
