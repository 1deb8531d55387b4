"""The effects processor: simulated deposits [MeV] -> pseudo-data [MeV] with detector effects
(seed 002 eq. 1.1-1.3, seed 003 eq. 7-9; :mod:`calocoffea.effects`), the truth kept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from coffea import processor

from calocoffea import __version__
from calocoffea.effects import Applied, Effects, apply_effects, event_keys
from calocoffea.geometry import Geometry, decode_cellid, get_geometry
from calocoffea.io import FileMetadata
from calocoffea.processors.common import (
    cell_indices,
    chunk_key,
    cutflow_step,
    file_identity,
    flat_hits,
    global_entries,
    scalars,
    write_shard,
)


@dataclass
class EffectsProcessor(processor.ProcessorABC):
    """Apply :class:`~calocoffea.effects.Effects` to every hit of a chunk and write the
    chunk's events as a shard.

    Holds only configuration (pickles; no state between chunks; the per-cell tables are
    cached per process). Random numbers are keyed by (``effects.seed``, file UUID, global
    entry, cell, stream): the output does not depend on the executor or the chunking.
    """

    effects: Effects
    geometry: str
    shard_dir: str

    def metadata(self, extra: dict[str, Any] | None = None) -> FileMetadata:
        """Metadata of the pseudo-data files this processor writes (stage sim)."""
        geometry = get_geometry(self.geometry)
        return FileMetadata(
            stage="sim",
            geometry=geometry.name,
            geometry_hash=geometry.hash,
            producer=f"calocoffea {__version__} effects",
            extra={"effects": self.effects.to_dict(), **(extra or {})},
        )

    def process(self, events: Any) -> dict[str, Any]:
        """Steps: flatten hits; look up cells; key the events; apply the effects
        (:func:`calocoffea.effects.apply_effects`: bias, miscalibration, bias and noise,
        dead cells, zero suppression, noise on empty cells); fill the hit fields of
        noise-only hits from the geometry; keep the truth in ``edep``; write the shard;
        return cutflow and shard path."""
        key = chunk_key(events)
        counts, flat = flat_hits(events, tuple(events.hits.fields))
        geometry = get_geometry(self.geometry)
        cell = cell_indices(events, flat["cellid"], self.geometry)
        keys = event_keys(self.effects.seed, file_identity(events), global_entries(events))
        applied = apply_effects(flat["energy"], cell, counts, keys, self.effects, geometry)
        hit_fields = _hit_fields(flat, applied, geometry)
        shard = write_shard(
            self.shard_dir, key, scalars(events), applied.counts, hit_fields, self.metadata()
        )
        step = cutflow_step(
            len(events), len(events), int(counts.sum()), applied.source.size, applied.removed
        )
        step["added"] = dict(applied.added)
        return {"cutflow": {"effects": step}, "shards": {key: shard}}

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


def _hit_fields(
    flat: dict[str, np.ndarray], applied: Applied, geometry: Geometry
) -> dict[str, np.ndarray]:
    """Every input hit field for the output hits: input hits keep theirs, noise-only hits get
    their cell's id, layer, indices and centre, and zero for the rest; ``energy`` is Ẽ and
    ``edep`` the truth (the input's ``edep`` where it has one, else its deposit)."""
    source = applied.source
    is_input = source >= 0
    noise_cell = applied.cell[~is_input]
    cellid = geometry.cellids()[noise_cell]
    _, layer, i, j = decode_cellid(cellid)
    x, y, z = geometry.centre(cellid)
    from_geometry = {"cellid": cellid, "layer": layer, "i": i, "j": j, "x": x, "y": y, "z": z}
    fields: dict[str, np.ndarray] = {}
    for name, values in flat.items():
        if name in ("energy", "edep"):
            continue
        out = np.zeros(source.size, dtype=values.dtype)
        out[is_input] = values[source[is_input]]
        if name in from_geometry:
            out[~is_input] = from_geometry[name]
        fields[name] = out
    fields["energy"] = applied.energy_mev
    edep = applied.edep_mev.copy()
    if "edep" in flat:
        edep[is_input] = flat["edep"][source[is_input]]
    fields["edep"] = edep
    return fields
