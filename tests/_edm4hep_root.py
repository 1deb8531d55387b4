"""EDM4hep-like ROOT files written with ROOT itself (PyROOT), laid out as podio 1.x writes them.

Test helper: :func:`write_edm4hep_file` writes calorimeter events the way a Key4hep simulation
(ddsim -> podio ROOT writer) stores them, without podio or EDM4hep installed. The EDM4hep and
podio data structs are declared to cling with the member names, order and types (and class
versions) of a real podio-written file (``shared/data/edm4hep_podio_sample.root``: podio 1.1.0,
EDM4hep 0.99.1, schema version 2); ``ClassDefInlineNV`` gives each struct an in-process
dictionary, so no compiler, generated source files or shared libraries are involved, and ROOT
builds the collection proxies of the ``std::vector`` of each from the interpreter. The
streamer infos written for the structs carry the same class versions and checksums as those of
the real file.

Layout (podio's ``ROOTWriter``, frame category ``events``):

- tree ``events``, one entry per event: per collection a split (level 99) branch ``<name>``
  of ``vector<edm4hep::XxxData>`` (sub-branches ``<name>.<member>``, ``<name>.position.x``...),
  its relations ``_<name>_<relation>`` as ``vector<podio::ObjectID>``, vector members such as
  ``_EventHeader_weights``; then the frame parameters ``GPIntKeys``/``GPIntValues``,
  ``GPFloat*``, ``GPDouble*``, ``GPString*`` (empty here);
- tree ``podio_metadata``, one entry: ``events___idTable`` (``podio::CollectionIDTable``),
  ``events___CollectionTypeInfo`` (``vector<tuple<unsigned int,string,bool,unsigned int>>``:
  collection ID, collection type, is-subset-collection, schema version), the same two for the
  ``metadata`` category when that frame is written, ``PodioBuildVersion`` and
  ``edm4hep___Version`` (``podio::version::Version``);
- tree ``metadata`` (one entry, only with an encoding): the metadata frame, in which Key4hep
  (k4FWCore) keeps ``<collection>__CellIDEncoding`` as a string parameter.

Collection IDs are podio's: the 32-bit MurmurHash3 (x86, seed 0) of the collection name.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Schema version of the EDM4hep data types (``CollectionTypeInfo``, class versions).
SCHEMA_VERSION = 2
#: podio and EDM4hep versions stored in ``podio_metadata`` (those of the sample the layout is
#: copied from).
PODIO_VERSION = (1, 1, 0)
EDM4HEP_VERSION = (0, 99, 1)

_BUFSIZE = 32000
_SPLIT = 99

# The declarations, member for member as in the real file's streamer infos. The include guard
# keeps a second declaration out of cling even if this module is imported twice (e.g. under two
# names); the Python flag below spares the round trip.
_DECLARATIONS = r"""
#ifndef CALOCOFFEA_TESTS_EDM4HEP_ROOT_DECLARED
#define CALOCOFFEA_TESTS_EDM4HEP_ROOT_DECLARED
#include <cstddef>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>
#include "Rtypes.h"

namespace edm4hep {
struct Vector3f {
  float x{};
  float y{};
  float z{};
  ClassDefInlineNV(Vector3f, 2)
};
struct Vector3d {
  double x{};
  double y{};
  double z{};
  ClassDefInlineNV(Vector3d, 2)
};
struct Vector2i {
  std::int32_t a{};
  std::int32_t b{};
  ClassDefInlineNV(Vector2i, 2)
};
struct SimCalorimeterHitData {
  std::uint64_t cellID{};
  float energy{};
  ::edm4hep::Vector3f position{};
  std::uint32_t contributions_begin{};
  std::uint32_t contributions_end{};
  ClassDefInlineNV(SimCalorimeterHitData, 2)
};
struct CaloHitContributionData {
  std::int32_t PDG{};
  float energy{};
  float time{};
  ::edm4hep::Vector3f stepPosition{};
  ClassDefInlineNV(CaloHitContributionData, 2)
};
struct MCParticleData {
  std::int32_t PDG{};
  std::int32_t generatorStatus{};
  std::int32_t simulatorStatus{};
  float charge{};
  float time{};
  double mass{};
  ::edm4hep::Vector3d vertex{};
  ::edm4hep::Vector3d endpoint{};
  ::edm4hep::Vector3d momentum{};
  ::edm4hep::Vector3d momentumAtEndpoint{};
  ::edm4hep::Vector3f spin{};
  ::edm4hep::Vector2i colorFlow{};
  std::uint32_t parents_begin{};
  std::uint32_t parents_end{};
  std::uint32_t daughters_begin{};
  std::uint32_t daughters_end{};
  ClassDefInlineNV(MCParticleData, 2)
};
struct EventHeaderData {
  std::int32_t eventNumber{};
  std::int32_t runNumber{};
  std::uint64_t timeStamp{};
  double weight{};
  std::uint32_t weights_begin{};
  std::uint32_t weights_end{};
  ClassDefInlineNV(EventHeaderData, 2)
};
}  // namespace edm4hep

namespace podio {
struct ObjectID {
  std::int32_t index{};
  std::uint32_t collectionID{};
  ClassDefInlineNV(ObjectID, 1)
};
class CollectionIDTable {
 public:
  std::vector<std::uint32_t> m_collectionIDs{};
  std::vector<std::string> m_names{};
  ClassDefInlineNV(CollectionIDTable, 1)
};
namespace version {
struct Version {
  std::uint16_t major{};
  std::uint16_t minor{};
  std::uint16_t patch{};
  ClassDefInlineNV(Version, 1)
};
}  // namespace version
}  // namespace podio

namespace calocoffea_tests_edm4hep {
// One event's hits, their contributions (one per hit) and the two relations, from numpy buffers.
inline void fill_calo_hits(std::vector<edm4hep::SimCalorimeterHitData>& hits,
                           std::vector<podio::ObjectID>& hitContributions,
                           std::vector<edm4hep::CaloHitContributionData>& contributions,
                           std::vector<podio::ObjectID>& contributionParticle, std::size_t n,
                           const std::uint64_t* cellID, const float* energy, const float* x,
                           const float* y, const float* z, const float* time,
                           const std::int32_t* pdg, std::uint32_t contributionsID,
                           std::uint32_t particlesID) {
  hits.clear();
  hitContributions.clear();
  contributions.clear();
  contributionParticle.clear();
  hits.reserve(n);
  hitContributions.reserve(n);
  contributions.reserve(n);
  contributionParticle.reserve(n);
  for (std::size_t k = 0; k < n; ++k) {
    edm4hep::SimCalorimeterHitData hit;
    hit.cellID = cellID[k];
    hit.energy = energy[k];
    hit.position = edm4hep::Vector3f{x[k], y[k], z[k]};
    hit.contributions_begin = static_cast<std::uint32_t>(k);
    hit.contributions_end = static_cast<std::uint32_t>(k + 1);
    hits.push_back(hit);
    hitContributions.push_back(podio::ObjectID{static_cast<std::int32_t>(k), contributionsID});
    edm4hep::CaloHitContributionData contribution;
    contribution.PDG = pdg[k];
    contribution.energy = energy[k];
    contribution.time = time[k];
    contribution.stepPosition = hit.position;
    contributions.push_back(contribution);
    contributionParticle.push_back(podio::ObjectID{0, particlesID});
  }
}

using TypeInfo = std::tuple<unsigned int, std::string, bool, unsigned int>;
inline void add_type_info(std::vector<TypeInfo>& infos, unsigned int id, const std::string& type,
                          bool subset, unsigned int schema) {
  infos.emplace_back(id, type, subset, schema);
}
}  // namespace calocoffea_tests_edm4hep
#endif
"""

_declared = False


def _root() -> Any:
    """ROOT, with the EDM4hep/podio structs declared to cling (once per process)."""
    global _declared
    import ROOT

    if not _declared:
        if not ROOT.gInterpreter.Declare(_DECLARATIONS):
            raise RuntimeError("cling refused the EDM4hep/podio declarations")
        _declared = True
    return ROOT


def collection_id(name: str) -> int:
    """podio's collection ID of ``name``: MurmurHash3_x86_32 of its UTF-8 bytes, seed 0."""
    data = name.encode()
    c1, c2, mask = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = 0
    n_blocks = len(data) // 4
    for i in range(n_blocks):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
        h = ((h << 13) | (h >> 19)) & mask
        h = (h * 5 + 0xE6546B64) & mask
    tail = data[4 * n_blocks :]
    if tail:
        k = int.from_bytes(tail, "little")
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    h ^= h >> 16
    return h


def _hit_arrays(hits: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The hit columns as contiguous arrays of the types the C++ filler takes."""
    columns = {
        "cellID": np.ascontiguousarray(hits["cellID"], dtype=np.uint64),
        "energy": np.ascontiguousarray(hits["energy"], dtype=np.float32),
        "x": np.ascontiguousarray(hits["x"], dtype=np.float32),
        "y": np.ascontiguousarray(hits["y"], dtype=np.float32),
        "z": np.ascontiguousarray(hits["z"], dtype=np.float32),
    }
    n = len(columns["cellID"])
    columns["time"] = np.ascontiguousarray(hits.get("time", np.zeros(n)), dtype=np.float32)
    columns["pdg"] = np.ascontiguousarray(hits.get("pdg", np.zeros(n)), dtype=np.int32)
    for key, values in columns.items():
        if values.shape != (n,):
            raise ValueError(f"hits[{key!r}] has shape {values.shape}, expected ({n},)")
    return columns


def _vector3(values: Sequence[float]) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in values)
    return x, y, z


def _fill_particles(root: Any, out: Any, particles: Sequence[Mapping[str, Any]]) -> None:
    out.clear()
    for particle in particles:
        data = root.edm4hep.MCParticleData()
        data.PDG = int(particle["PDG"])
        data.generatorStatus = int(particle.get("generatorStatus", 1))
        data.simulatorStatus = int(particle.get("simulatorStatus", 0))
        data.charge = float(particle.get("charge", 0.0))
        data.time = float(particle.get("time", 0.0))
        data.mass = float(particle.get("mass", 0.0))
        for member in ("vertex", "endpoint", "momentum", "momentumAtEndpoint"):
            x, y, z = _vector3(particle.get(member, (0.0, 0.0, 0.0)))
            vector = getattr(data, member)
            vector.x, vector.y, vector.z = x, y, z
        out.push_back(data)


def write_edm4hep_file(
    path: str | pathlib.Path,
    events: Sequence[Mapping[str, Any]],
    *,
    collection: str = "HcalBarrelCollection",
    encoding: str | None = None,
    mc_collection: str = "MCParticles",
    write_encoding_metadata: bool = True,
) -> pathlib.Path:
    """Write ``events`` as a podio-layout EDM4hep ROOT file at ``path``; return the path.

    ``events``: one mapping per event with ``event_number``, ``run_number``, ``hits`` (columns
    ``cellID`` [uint64], ``energy`` [GeV], ``x``, ``y``, ``z`` [mm], and optionally ``time``
    [ns] and ``pdg``, 0 when absent) and ``particles`` (mappings with ``PDG``,
    ``generatorStatus``, ``mass`` [GeV], ``momentum`` (px, py, pz) [GeV], ``vertex`` (x, y, z)
    [mm], ``charge``; ``simulatorStatus``, ``time``, ``endpoint``, ``momentumAtEndpoint``
    optional). Each hit of ``collection`` gets one CaloHitContribution (same energy, its time
    and pdg, step position = hit position) in ``<collection>Contributions``, related to MC
    particle 0 of ``mc_collection``; MC particles have no parents or daughters. With
    ``encoding`` and ``write_encoding_metadata``, the metadata frame (tree ``metadata``)
    carries ``<collection>__CellIDEncoding`` = ``encoding``.
    """
    contributions = f"{collection}Contributions"
    names = [collection, contributions, mc_collection, "EventHeader"]
    if len(set(names)) != len(names):
        raise ValueError(f"collection names must differ, got {names}")
    path = pathlib.Path(path)
    root = _root()
    std = root.std
    ids = {name: collection_id(name) for name in names}

    # One buffer per branch; per collection its podio collection type and its branches
    # (name, class). The sample has the collections in the order of their names.
    vector = std.vector
    buffers = {
        collection: vector["edm4hep::SimCalorimeterHitData"](),
        f"_{collection}_contributions": vector["podio::ObjectID"](),
        contributions: vector["edm4hep::CaloHitContributionData"](),
        f"_{contributions}_particle": vector["podio::ObjectID"](),
        mc_collection: vector["edm4hep::MCParticleData"](),
        f"_{mc_collection}_parents": vector["podio::ObjectID"](),
        f"_{mc_collection}_daughters": vector["podio::ObjectID"](),
        "EventHeader": vector["edm4hep::EventHeaderData"](),
        "_EventHeader_weights": vector["double"](),
    }
    layout = {
        collection: (
            "edm4hep::SimCalorimeterHitCollection",
            [
                (collection, "vector<edm4hep::SimCalorimeterHitData>"),
                (f"_{collection}_contributions", "vector<podio::ObjectID>"),
            ],
        ),
        contributions: (
            "edm4hep::CaloHitContributionCollection",
            [
                (contributions, "vector<edm4hep::CaloHitContributionData>"),
                (f"_{contributions}_particle", "vector<podio::ObjectID>"),
            ],
        ),
        mc_collection: (
            "edm4hep::MCParticleCollection",
            [
                (mc_collection, "vector<edm4hep::MCParticleData>"),
                (f"_{mc_collection}_parents", "vector<podio::ObjectID>"),
                (f"_{mc_collection}_daughters", "vector<podio::ObjectID>"),
            ],
        ),
        "EventHeader": (
            "edm4hep::EventHeaderCollection",
            [
                ("EventHeader", "vector<edm4hep::EventHeaderData>"),
                ("_EventHeader_weights", "vector<double>"),
            ],
        ),
    }
    order = sorted(layout, key=str.lower)

    file = root.TFile(str(path), "RECREATE")
    if not file or file.IsZombie():
        raise OSError(f"ROOT cannot create {path}")
    try:
        tree = root.TTree("events", "events data tree")
        for name in order:
            for branch, class_name in layout[name][1]:
                tree.Branch(branch, class_name, buffers[branch], _BUFSIZE, _SPLIT)
        parameters = _parameter_buffers(root)
        for branch, buffer in parameters.items():
            tree.Branch(branch, buffer, _BUFSIZE, _SPLIT)

        header = root.edm4hep.EventHeaderData()
        for event in events:
            hits = _hit_arrays(
                event.get("hits", {"cellID": [], "energy": [], "x": [], "y": [], "z": []})
            )
            particles = list(event.get("particles", ()))
            n_hits = len(hits["cellID"])
            if n_hits and not particles:
                raise ValueError("an event with hits needs a particle for their contributions")
            root.calocoffea_tests_edm4hep.fill_calo_hits(
                buffers[collection],
                buffers[f"_{collection}_contributions"],
                buffers[contributions],
                buffers[f"_{contributions}_particle"],
                n_hits,
                hits["cellID"],
                hits["energy"],
                hits["x"],
                hits["y"],
                hits["z"],
                hits["time"],
                hits["pdg"],
                ids[contributions],
                ids[mc_collection],
            )
            _fill_particles(root, buffers[mc_collection], particles)
            header.eventNumber = int(event["event_number"])
            header.runNumber = int(event["run_number"])
            header.timeStamp = 0
            header.weight = 1.0
            buffers["EventHeader"].clear()
            buffers["EventHeader"].push_back(header)
            tree.Fill()

        categories = [("events", [(name, layout[name][0]) for name in order])]
        if encoding is not None and write_encoding_metadata:
            meta = root.TTree("metadata", "metadata data tree")
            meta_parameters = _parameter_buffers(root)
            for branch, buffer in meta_parameters.items():
                meta.Branch(branch, buffer, _BUFSIZE, _SPLIT)
            meta_parameters["GPStringKeys"].push_back(f"{collection}__CellIDEncoding")
            values = std.vector["std::string"]()
            values.push_back(encoding)
            meta_parameters["GPStringValues"].push_back(values)
            meta.Fill()
            categories.append(("metadata", []))

        _write_podio_metadata(root, categories, ids)
        file.Write()
    finally:
        file.Close()
    return path


def _parameter_buffers(root: Any) -> dict[str, Any]:
    """Empty frame-parameter vectors, in podio's branch order."""
    vector = root.std.vector
    buffers: dict[str, Any] = {}
    for kind, cpp in (
        ("Int", "int"),
        ("Float", "float"),
        ("Double", "double"),
        ("String", "std::string"),
    ):
        buffers[f"GP{kind}Keys"] = vector["std::string"]()
        buffers[f"GP{kind}Values"] = vector[f"std::vector<{cpp}>"]()
    return buffers


def _write_podio_metadata(
    root: Any, categories: list[tuple[str, list[tuple[str, str]]]], ids: Mapping[str, int]
) -> None:
    """Tree ``podio_metadata``: ID table and type info per category, podio/EDM4hep versions."""
    tree = root.TTree("podio_metadata", "metadata tree for podio I/O functionality")
    keep = []
    for category, collections in categories:
        table = root.podio.CollectionIDTable()
        infos = root.std.vector["std::tuple<unsigned int,std::string,bool,unsigned int>"]()
        for name, type_name in collections:
            table.m_collectionIDs.push_back(ids[name])
            table.m_names.push_back(name)
            root.calocoffea_tests_edm4hep.add_type_info(
                infos, ids[name], type_name, False, SCHEMA_VERSION
            )
        tree.Branch(f"{category}___idTable", "podio::CollectionIDTable", table, _BUFSIZE, _SPLIT)
        tree.Branch(
            f"{category}___CollectionTypeInfo",
            "vector<tuple<unsigned int,string,bool,unsigned int> >",
            infos,
            _BUFSIZE,
            _SPLIT,
        )
        keep += [table, infos]
    for branch, version in (
        ("PodioBuildVersion", PODIO_VERSION),
        ("edm4hep___Version", EDM4HEP_VERSION),
    ):
        value = root.podio.version.Version()
        value.major, value.minor, value.patch = version
        tree.Branch(branch, "podio::version::Version", value, _BUFSIZE, _SPLIT)
        keep.append(value)
    tree.Fill()
