"""`calocoffea info FILE`: what an events file holds."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from calocoffea.cli.inputs import add_input_options, source_options
from calocoffea.io import open_events, read_metadata
from calocoffea.simulation.particles import PARTICLES

_NAMES = {p.pdg: p.name for p in PARTICLES.values()}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("info", help="describe an events file", description=__doc__)
    p.add_argument("file", help="ROOT file: calocoffea's, EDM4hep, or an ntuple with --map")
    add_input_options(p)
    p.set_defaults(handler=run)


def _energies(values: np.ndarray) -> str:
    unique = np.unique(values)
    if unique.size <= 12:
        return ", ".join(f"{e:g}" for e in unique) + " GeV"
    return f"{values.min():.3g} - {values.max():.3g} GeV (continuous, {unique.size} values)"


def run(args: argparse.Namespace) -> int:
    from calocoffea.sources import open_source

    source = open_source(args.file, source_options(args))
    if source is not None:
        print("\n".join(source.describe()))
        meta = source.metadata()
        print(f"read as: stage {meta.stage} (hit_energy in {meta.energy_unit}), geometry "
              f"{meta.geometry or '(none: cell ids as in the file)'}")  # fmt: skip
        return 0
    tree = open_events(args.file)  # checks tree, branches and stage first
    meta = read_metadata(args.file)
    scalars = tree.arrays(["pdg", "beam_energy", "nhit"], library="np")
    pdg, counts = np.unique(scalars["pdg"], return_counts=True)
    particles = ", ".join(
        f"{_NAMES.get(int(p), int(p))} ({c})" for p, c in zip(pdg, counts, strict=True)
    )
    rows = [
        ("file", args.file),
        ("producer", meta.producer or "(unknown)"),
        ("stage", f"{meta.stage} (hit_energy in {meta.energy_unit})"),
        ("geometry", f"{meta.geometry or '(unknown)'} [{meta.geometry_hash or '-'}]"),
        ("events", f"{tree.num_entries}"),
        ("particles", particles),
        ("energies", _energies(scalars["beam_energy"])),
        ("hits/event", f"{scalars['nhit'].mean():.1f} (max {scalars['nhit'].max()})"),
        ("branches", ", ".join(tree.keys())),
    ]
    if "seed" in meta.extra:
        rows.insert(4, ("seed", str(meta.extra["seed"])))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:>{width}}  {value}")
    tree.file.close()
    return 0
