"""EDM4hep files (Key4hep, CEPCSW; written by podio) read as calocoffea events.

What to use when:

- :class:`EDM4hepFile` -- one EDM4hep file: its calorimeter collections (``describe``), and
  its events in calocoffea's native layout chunk by chunk (``chunks``), with the
  :class:`~calocoffea.io.FileMetadata` they carry (``metadata``). The runner and
  ``calocoffea convert`` use it; nothing downstream knows the file was EDM4hep.
- :class:`CellMapping` -- which decoded cell-ID fields are the layer and the cell indices,
  and their offsets onto a calocoffea geometry (inferred from the hit positions when not
  given).
- :func:`is_edm4hep` -- whether a ROOT file looks like a podio/EDM4hep file.

What is read. Calorimeter hit collections of one kind -- ``SimCalorimeterHit`` (stage
``sim``; energies GeV -> MeV; time of the earliest contribution, from the
``CaloHitContribution`` collection the hits point to), ``CalorimeterHit`` (stage ``gev``) or
``RawCalorimeterHit`` (stage ``raw``; amplitude as ADC; no positions, so they come from the
geometry) -- one or several at once (ECAL and HCAL, barrel and endcap) whose layers are
mapped onto the geometry's sections. Without a choice, every collection of the first kind
present in the order sim, gev, raw is read. The beam: the first ``MCParticle`` with generator
status 1 and no parents gives ``pdg``, ``beam_energy`` (sqrt(p^2 + m^2), GeV) and
``beam_x``/``beam_y`` (its vertex, mm); ``EventHeader`` gives ``event`` and ``run``.

Cell IDs. The DD4hep encoding string (``layer:19:9,x:32:-16,...``,
:mod:`calocoffea.cellid`) comes from the file's metadata when it is there -- Key4hep keeps it
as the string parameter ``<collection>__CellIDEncoding`` of the metadata frame (tree
``metadata``) -- else from the caller. With a geometry, the decoded (layer, i, j) become
calocoffea cell ids of that geometry and hits outside it are refused with a count; without
one, the DD4hep cell ID is kept as it is and layer, i, j are the decoded fields (or -1 when
no encoding is known).

Why not coffea's ``EDM4HEPSchema``: it resolves podio relations nicely, but it reads its
EDM4hep definition from a bundled copy, and the current EDM4hep schema (2, with
``GeneratorPdfInfo`` and links) makes it fail with a KeyError on the real sample; and the
native layout needs unit conversion and cell-ID decoding, which are computations, not a
remapping of branches. Reading the few branches needed with uproot and converting them is
simpler and as fast.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import numpy.typing as npt
import uproot

from calocoffea import __version__
from calocoffea.cellid import BitFieldCoder
from calocoffea.exceptions import (
    CellIDEncodingError,
    GeometryError,
    InputFileError,
    MissingCollectionError,
    did_you_mean,
)
from calocoffea.geometry import Geometry, encode_cellid, get_geometry
from calocoffea.io import FileMetadata

#: EDM4hep data type of a calorimeter hit collection -> calocoffea stage.
HIT_TYPES: dict[str, str] = {
    "edm4hep::SimCalorimeterHitData": "sim",
    "edm4hep::CalorimeterHitData": "gev",
    "edm4hep::RawCalorimeterHitData": "raw",
}
_GEV_TO_MEV = 1000.0
#: PDG code -> calocoffea particle name (the ones the simulation knows).
PARTICLE_NAMES = {
    11: "e-",
    -11: "e+",
    22: "gamma",
    211: "pi+",
    -211: "pi-",
    13: "mu-",
    -13: "mu+",
    2212: "proton",
    2112: "neutron",
    130: "K0L",
}


def is_edm4hep(path: str | Path) -> bool:
    """True when the file has podio's ``podio_metadata`` tree beside an ``events`` tree."""
    try:
        with uproot.open(path) as file:
            names = {key.split(";")[0] for key in file.keys(recursive=False)}
    except Exception:
        return False
    return "podio_metadata" in names and "events" in names


@dataclass(frozen=True)
class CellMapping:
    """Decoded cell-ID fields -> calocoffea (layer, i, j): ``layer = field + offset`` etc.

    An offset of ``None`` is inferred per collection from the hit positions and the
    geometry (the most common difference between the geometry's cell at the hit position and
    the decoded field; at least 99 % of the hits must agree)."""

    layer: str = "layer"
    i: str = "x"
    j: str = "y"
    layer_offset: int | None = None
    i_offset: int | None = None
    j_offset: int | None = None

    def fields(self) -> tuple[str, str, str]:
        return self.layer, self.i, self.j

    def offset(self, name: str) -> int | None:
        return {"layer": self.layer_offset, "i": self.i_offset, "j": self.j_offset}[name]


@dataclass(frozen=True)
class _Collection:
    name: str
    stage: str
    encoding: str  # "" when unknown


class EDM4hepFile:
    """One EDM4hep file read as calocoffea events (module docstring)."""

    def __init__(
        self,
        path: str | Path,
        *,
        collections: Sequence[str] | None = None,
        encoding: str | None = None,
        geometry: str | Geometry | None = None,
        mapping: CellMapping | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputFileError(f"input file {self.path} does not exist; check the path")
        self._file = uproot.open(self.path)
        if "events" not in self._file or "podio_metadata" not in self._file:
            raise InputFileError(
                f"{self.path} is not an EDM4hep file: it has no podio 'events' and "
                "'podio_metadata' trees; give a file written by podio (Key4hep, CEPCSW)"
            )
        self._events = self._file["events"]
        self.geometry = get_geometry(geometry) if geometry else None
        self.mapping = mapping or CellMapping()
        self.available = self._hit_collections()
        self.collections = self._choose(collections)
        self._encoding_override = encoding
        self.coders = {c.name: self._coder(c, encoding) for c in self.collections}
        self._offsets: dict[str, tuple[int, int, int]] = {}

    # ---- what the file holds ------------------------------------------------------------
    @property
    def num_entries(self) -> int:
        return int(self._events.num_entries)

    @property
    def identity(self) -> uuid.UUID:
        """The ROOT file's UUID: the identity that keys the digitisation's random numbers."""
        return uuid.UUID(str(self._file.file.uuid))

    @property
    def stage(self) -> str:
        return self.collections[0].stage

    def _hit_collections(self) -> dict[str, str]:
        """Calorimeter hit collections of the file: name -> stage."""
        found = {}
        for name in self._events.keys(recursive=False):
            typename = self._events[name].typename
            for data_type, stage in HIT_TYPES.items():
                if typename == f"vector<{data_type}>" or typename == f"std::vector<{data_type}>":
                    found[name] = stage
        return found

    def _choose(self, names: Sequence[str] | None) -> list[_Collection]:
        available = self.available
        if not available:
            raise MissingCollectionError(
                f"{self.path} has no calorimeter hit collection (SimCalorimeterHit, "
                "CalorimeterHit or RawCalorimeterHit); its collections are: "
                f"{', '.join(self._all_collections())}"
            )
        if not names:
            # every collection of the first kind present, in the order sim, gev, raw
            kind = next(k for k in ("sim", "gev", "raw") if k in available.values())
            names = [name for name, stage in available.items() if stage == kind]
        chosen = []
        for name in names:
            if name not in available:
                raise MissingCollectionError(
                    f"{self.path} has no calorimeter hit collection {name!r}"
                    f"{did_you_mean(name, available)}; it has: "
                    f"{_listing(available)}"
                )
            chosen.append(_Collection(name, available[name], ""))
        stages = {c.stage for c in chosen}
        if len(stages) > 1:
            raise MissingCollectionError(
                f"collections {', '.join(names)} of {self.path} hold different kinds of hits "
                f"({_listing({c.name: c.stage for c in chosen})}); read one kind at a time"
            )
        return chosen

    def _all_collections(self) -> list[str]:
        return [n for n in self._events.keys(recursive=False) if not n.startswith(("_", "GP"))]

    # ---- cell-ID encodings --------------------------------------------------------------
    def _metadata_parameters(self) -> dict[str, str]:
        """String parameters of the file's metadata frames (Key4hep: tree ``metadata``)."""
        found: dict[str, str] = {}
        for tree_name in ("metadata", "podio_metadata"):
            if tree_name not in self._file:
                continue
            tree = self._file[tree_name]
            if "GPStringKeys" not in tree or "GPStringValues" not in tree:
                continue
            keys = tree["GPStringKeys"].array(library="ak", entry_stop=1).tolist()
            values = tree["GPStringValues"].array(library="ak", entry_stop=1).tolist()
            for key, value in zip(
                keys[0] if keys else [], values[0] if values else [], strict=False
            ):
                if value:
                    found.setdefault(str(key), str(value[0]))
        return found

    def encoding_of(self, collection: str) -> str:
        """The DD4hep encoding string stored for ``collection``; "" if the file has none."""
        parameters = self._metadata_parameters()
        for key in (f"{collection}__CellIDEncoding", f"{collection}__cellIDEncoding"):
            if key in parameters:
                return parameters[key]
        return ""

    def _coder(self, collection: _Collection, given: str | None) -> BitFieldCoder | None:
        text = given or self.encoding_of(collection.name)
        if not text:
            if self.geometry is not None:
                raise CellIDEncodingError(
                    f"{self.path}: collection {collection.name!r} has no CellIDEncoding in the "
                    "file's metadata, and mapping its hits onto geometry "
                    f"{self.geometry.name!r} needs one; give it, e.g. --encoding "
                    "'system:0:5,layer:5:9,x:14:-16,y:30:-16'"
                )
            return None
        coder = BitFieldCoder.parse(text)
        missing = [f for f in self.mapping.fields() if f not in coder]
        if missing:
            raise CellIDEncodingError(
                f"{self.path}: the cell-ID encoding of {collection.name!r} ({text!r}) has no "
                f"field {', '.join(repr(m) for m in missing)} that the mapping needs (layer "
                f"{self.mapping.layer!r}, i {self.mapping.i!r}, j {self.mapping.j!r}); its "
                f"fields are {', '.join(coder.names)}; map other fields, e.g. --map-i "
                f"{coder.names[-2] if len(coder.names) > 1 else coder.names[0]}"
            )
        return coder

    # ---- metadata -----------------------------------------------------------------------
    def metadata(self) -> FileMetadata:
        geometry = self.geometry
        first = self._beam_arrays(0, min(self.num_entries, 1000))
        pdgs = sorted({int(p) for p in np.asarray(first["pdg"])})
        particle = PARTICLE_NAMES.get(pdgs[0], str(pdgs[0])) if len(pdgs) == 1 else ""
        energies = np.unique(np.round(np.asarray(first["beam_energy"], np.float64), 6))
        extra: dict[str, Any] = {
            "source": str(self.path.absolute()),
            "format": "edm4hep",
            "collections": [c.name for c in self.collections],
            "cellid_encodings": {name: (str(c) if c else "") for name, c in self.coders.items()},
            "events": self.num_entries,
            "beam": {"energies_gev": [float(e) for e in energies[:20]]},
        }
        if particle:
            extra["particle"] = particle
        return FileMetadata(
            stage=self.stage,
            geometry=geometry.name if geometry else "",
            geometry_hash=geometry.hash if geometry else "",
            producer=f"calocoffea {__version__} from EDM4hep (podio)",
            extra=extra,
        )

    def describe(self) -> list[str]:
        """Lines for ``calocoffea info``: collections, hits, encodings, the beam."""
        lines = [f"EDM4hep file {self.path} (written by podio), {self.num_entries} events"]
        counts = self._events.arrays(
            [
                f"{name}.energy" if stage != "raw" else f"{name}.amplitude"
                for name, stage in self.available.items()
            ],
            library="ak",
        )
        for name, stage in self.available.items():
            key = f"{name}.energy" if stage != "raw" else f"{name}.amplitude"
            n = ak.num(counts[key], axis=1)
            chosen = "*" if name in {c.name for c in self.collections} else " "
            encoding = self.encoding_of(name) or "(no CellIDEncoding in the metadata)"
            lines.append(
                f" {chosen} {name}: {stage} hits, {int(ak.sum(n))} in all "
                f"({float(ak.mean(n)):.1f} per event); cell IDs {encoding}"
            )
        beam = self._beam_arrays(0, min(self.num_entries, 1000))
        pdg = np.unique(np.asarray(beam["pdg"]))
        energy = np.asarray(beam["beam_energy"])
        lines.append(
            f"   primary particle: PDG {', '.join(str(p) for p in pdg)}, "
            f"{energy.min():.4g}-{energy.max():.4g} GeV"
            if energy.size
            else "   no MCParticle collection"
        )
        others = [n for n in self._all_collections() if n not in self.available]
        lines.append(f"   other collections: {', '.join(others)}")
        return lines

    # ---- events -------------------------------------------------------------------------
    def _mc_collection(self) -> str | None:
        for name in self._events.keys(recursive=False):
            if self._events[name].typename.endswith("edm4hep::MCParticleData>"):
                return str(name)
        return None

    def _beam_arrays(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """event, run, pdg, beam_energy [GeV], beam_x, beam_y [mm] of entries start..stop."""
        n = stop - start
        out: dict[str, np.ndarray] = {
            "event": np.arange(start, stop, dtype=np.int64),
            "run": np.zeros(n, np.int32),
            "pdg": np.zeros(n, np.int32),
            "beam_energy": np.full(n, np.nan),
            "beam_x": np.full(n, np.nan),
            "beam_y": np.full(n, np.nan),
        }
        if "EventHeader" in self._events:
            header = self._events.arrays(
                ["EventHeader.eventNumber", "EventHeader.runNumber"],
                entry_start=start,
                entry_stop=stop,
                library="ak",
            )
            has = ak.num(header["EventHeader.eventNumber"], axis=1) > 0
            number = ak.fill_none(ak.firsts(header["EventHeader.eventNumber"]), -1)
            run = ak.fill_none(ak.firsts(header["EventHeader.runNumber"]), 0)
            out["event"] = np.where(np.asarray(has), ak.to_numpy(number), out["event"])
            out["run"] = ak.to_numpy(run).astype(np.int32)
        mc = self._mc_collection()
        if mc is None:
            return out
        names = [
            "PDG",
            "generatorStatus",
            "mass",
            "momentum.x",
            "momentum.y",
            "momentum.z",
            "vertex.x",
            "vertex.y",
            "parents_begin",
            "parents_end",
        ]
        p = self._events.arrays(
            [f"{mc}.{k}" for k in names], entry_start=start, entry_stop=stop, library="ak"
        )
        p = ak.zip({k: p[f"{mc}.{k}"] for k in names})
        primary = (p.generatorStatus == 1) & (p.parents_begin == p.parents_end)
        # events without such a particle: the first particle of the event
        index = ak.fill_none(ak.firsts(ak.local_index(p.PDG)[primary]), 0)
        has = ak.num(p.PDG, axis=1) > 0
        first = ak.firsts(p[ak.singletons(ak.mask(index, has))])
        momentum2 = first["momentum.x"] ** 2 + first["momentum.y"] ** 2 + first["momentum.z"] ** 2
        energy = np.sqrt(momentum2 + first.mass**2)
        out["pdg"] = ak.to_numpy(ak.fill_none(first.PDG, 0)).astype(np.int32)
        out["beam_energy"] = ak.to_numpy(ak.fill_none(energy, np.nan)).astype(np.float64)
        out["beam_x"] = ak.to_numpy(ak.fill_none(first["vertex.x"], np.nan)).astype(np.float64)
        out["beam_y"] = ak.to_numpy(ak.fill_none(first["vertex.y"], np.nan)).astype(np.float64)
        return out

    def _read_hits(self, collection: _Collection, start: int, stop: int) -> ak.Array:
        """The hits of one collection, in calocoffea units, fields as the native layout."""
        name, stage = collection.name, collection.stage
        if stage == "raw":
            keys = {"cellID": "cellID", "energy": "amplitude", "time": "timeStamp"}
        else:
            keys = {
                "cellID": "cellID",
                "energy": "energy",
                "x": "position.x",
                "y": "position.y",
                "z": "position.z",
            }
            if stage == "gev":
                keys["time"] = "time"
        arrays = self._events.arrays(
            [f"{name}.{k}" for k in keys.values()], entry_start=start, entry_stop=stop, library="ak"
        )
        hits = {field: arrays[f"{name}.{key}"] for field, key in keys.items()}
        if stage == "sim":
            hits["energy"] = hits["energy"] * _GEV_TO_MEV
            hits["time"] = self._contribution_times(name, start, stop, hits["energy"])
        return ak.zip(hits)

    def _contribution_times(self, name: str, start: int, stop: int, like: ak.Array) -> ak.Array:
        """Per hit, the earliest time of its Geant4 contributions [ns] (0 without any)."""
        relation = f"_{name}_contributions"
        if relation not in self._events:
            return ak.zeros_like(like)
        rel = self._events.arrays(
            [
                f"{relation}.index",
                f"{relation}.collectionID",
                f"{name}.contributions_begin",
                f"{name}.contributions_end",
            ],
            entry_start=start,
            entry_stop=stop,
            library="ak",
        )
        target = self._collection_named(rel[f"{relation}.collectionID"])
        if target is None:
            return ak.zeros_like(like)
        times = self._events[f"{target}.time"].array(entry_start=start, entry_stop=stop)
        index = rel[f"{relation}.index"]
        begin, end = rel[f"{name}.contributions_begin"], rel[f"{name}.contributions_end"]
        # contribution times in relation order, then the minimum over [begin, end) per hit
        ordered = times[index]
        flat_times = ak.to_numpy(ak.flatten(ordered)).astype(np.float64)
        base = np.concatenate([[0], np.cumsum(ak.to_numpy(ak.num(ordered, axis=1)))])[:-1]
        b = ak.to_numpy(ak.flatten(begin + base)).astype(np.int64)
        e = ak.to_numpy(ak.flatten(end + base)).astype(np.int64)
        result = np.zeros(b.size)
        has = e > b
        bh, eh = b[has], e[has]
        if bh.size and np.array_equal(bh[1:], eh[:-1]) and eh[-1] == flat_times.size:
            # podio's usual layout: each hit's range starts where the previous one ends
            result[has] = np.minimum.reduceat(flat_times, bh)
        else:
            result[has] = [flat_times[x:y].min() for x, y in zip(bh, eh, strict=True)]
        return ak.unflatten(result.astype(np.float32), ak.num(begin, axis=1))

    def _collection_named(self, collection_ids: ak.Array) -> str | None:
        ids = ak.to_numpy(ak.flatten(collection_ids))
        if ids.size == 0:
            return None
        table = self._file["podio_metadata"]["events___idTable"].array(library="ak", entry_stop=1)[
            0
        ]
        lookup = dict(
            zip(table["m_collectionIDs"].tolist(), table["m_names"].tolist(), strict=True)
        )
        name = lookup.get(int(ids[0]))
        return str(name) if name else None

    def _map_cells(self, collection: _Collection, hits: ak.Array) -> ak.Array:
        """Decode the cell IDs; with a geometry, replace them by the geometry's cell ids."""
        coder = self.coders[collection.name]
        flat_ids = ak.to_numpy(ak.flatten(hits.cellID)).astype(np.uint64)
        counts = ak.num(hits.cellID, axis=1)
        if coder is None:
            minus = np.full(flat_ids.size, -1, np.int16)
            fields = {"cellid": flat_ids, "layer": minus, "i": minus, "j": minus}
        else:
            m = self.mapping
            decoded = {
                k: coder.decode(flat_ids, f)
                for k, f in zip(("layer", "i", "j"), m.fields(), strict=True)
            }
            if self.geometry is None:
                fields = {"cellid": flat_ids, **decoded}
            else:
                layer, i, j = self._apply_offsets(collection, decoded, hits)
                fields = {
                    "cellid": self._geometry_cellids(collection, layer, i, j),
                    "layer": layer,
                    "i": i,
                    "j": j,
                }
        out = {k: ak.unflatten(np.asarray(v), counts) for k, v in fields.items()}
        for name in hits.fields:
            if name != "cellID":
                out[name] = hits[name]
        if "x" not in out and self.geometry is not None:
            x, y, z = self.geometry.centre(ak.to_numpy(ak.flatten(out["cellid"])))
            for key, value in (("x", x), ("y", y), ("z", z)):
                out[key] = ak.unflatten(value.astype(np.float32), counts)
        return ak.zip(out)

    def _apply_offsets(
        self, collection: _Collection, decoded: dict[str, np.ndarray], hits: ak.Array
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if collection.name not in self._offsets:
            self._offsets[collection.name] = self._infer_offsets(collection, decoded, hits)
        dl, di, dj = self._offsets[collection.name]
        return decoded["layer"] + dl, decoded["i"] + di, decoded["j"] + dj

    def _infer_offsets(
        self, collection: _Collection, decoded: dict[str, np.ndarray], hits: ak.Array
    ) -> tuple[int, int, int]:
        """Offsets given in the mapping, else the most common difference between the
        geometry's cell at each hit position and the decoded fields."""
        m, geometry = self.mapping, self.geometry
        assert geometry is not None
        given = (m.layer_offset, m.i_offset, m.j_offset)
        if all(g is not None for g in given) or "x" not in hits.fields:
            if any(g is None for g in given):
                raise CellIDEncodingError(
                    f"{self.path}: {collection.name!r} hits have no positions to infer the "
                    "offsets of layer, i and j onto the geometry from; give them "
                    "(CellMapping layer_offset, i_offset, j_offset)"
                )
            return tuple(int(g) for g in given)  # type: ignore[return-value,arg-type]
        x = ak.to_numpy(ak.flatten(hits.x)).astype(np.float64)
        y = ak.to_numpy(ak.flatten(hits.y)).astype(np.float64)
        z = ak.to_numpy(ak.flatten(hits.z)).astype(np.float64)
        if x.size == 0:
            return (int(m.layer_offset or 0), int(m.i_offset or 0), int(m.j_offset or 0))
        layer_z = np.asarray(geometry.layer_z)
        layer_geo = np.abs(z[:, None] - layer_z[None, :]).argmin(axis=1)
        cellid, inside = geometry.cell_of(layer_geo, x, y)
        from calocoffea.geometry import decode_cellid

        _, _, i_geo, j_geo = decode_cellid(cellid)
        offsets = []
        for key, truth, fixed in (
            ("layer", layer_geo, m.layer_offset),
            ("i", i_geo, m.i_offset),
            ("j", j_geo, m.j_offset),
        ):
            if fixed is not None:
                offsets.append(int(fixed))
                continue
            diff = (truth - decoded[key])[inside]
            values, counts = np.unique(diff, return_counts=True)
            best = int(values[counts.argmax()]) if values.size else 0
            agree = counts.max() / max(diff.size, 1) if values.size else 0.0
            if agree < 0.99:
                field_name = m.fields()[("layer", "i", "j").index(key)]
                raise CellIDEncodingError(
                    f"{self.path}: the decoded field {field_name!r} "
                    f"of {collection.name!r} does not follow the hit positions in geometry "
                    f"{geometry.name!r} (the best offset {best:+d} fits {100 * agree:.1f} % "
                    "of the hits); check the encoding and the field mapping, or give the "
                    "offsets"
                )
            offsets.append(best)
        return offsets[0], offsets[1], offsets[2]

    def _geometry_cellids(
        self, collection: _Collection, layer: np.ndarray, i: np.ndarray, j: np.ndarray
    ) -> npt.NDArray[np.uint64]:
        geometry = self.geometry
        assert geometry is not None
        outside = (layer < 0) | (layer >= geometry.n_layers)
        section = geometry.layer_section[np.clip(layer, 0, geometry.n_layers - 1)]
        try:
            ids = encode_cellid(section, np.clip(layer, 0, None), i, j)
        except GeometryError as err:
            raise CellIDEncodingError(
                f"{self.path}: cells of {collection.name!r} do not fit geometry "
                f"{geometry.name!r} ({err}); check the encoding and the offsets"
            ) from err
        bad = outside | ~geometry.validate_cellids(ids)
        if bad.any():
            raise CellIDEncodingError(
                f"{self.path}: {int(bad.sum())} of {bad.size} hits of {collection.name!r} "
                f"name no cell of geometry {geometry.name!r} (first: layer {int(layer[bad][0])}, "
                f"i {int(i[bad][0])}, j {int(j[bad][0])}); check the encoding, the field "
                "mapping and the geometry"
            )
        return ids

    def chunks(self, step_events: int = 50_000) -> Iterator[ak.Array]:
        """Events in calocoffea's native layout (scalars and a jagged ``hit`` field)."""
        for start in range(0, self.num_entries, step_events):
            stop = min(start + step_events, self.num_entries)
            parts = [self._map_cells(c, self._read_hits(c, start, stop)) for c in self.collections]
            hits = parts[0] if len(parts) == 1 else ak.concatenate(parts, axis=1)
            event = self._beam_arrays(start, stop)
            if self.stage == "sim":
                event["edep_active"] = ak.to_numpy(ak.sum(hits.energy, axis=1)).astype(np.float64)
            n = ak.num(hits.energy, axis=1)
            flags = ak.unflatten(np.zeros(int(ak.sum(n)), np.uint32), n)
            hits = ak.with_field(hits, flags, "flags")
            yield ak.zip({**event, "hit": hits}, depth_limit=1)


def _listing(collections: Mapping[str, str]) -> str:
    return ", ".join(f"{name} ({stage})" for name, stage in collections.items())


__all__ = ["HIT_TYPES", "CellMapping", "EDM4hepFile", "is_edm4hep"]
