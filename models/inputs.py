"""Model inputs by name: the bridge between a chunk's hits and a model card's inputs.

What to use when:

- :class:`FlatHits` -- the hits of a chunk as flat numpy arrays (one value per hit, events one
  after the other, ``counts`` hits per event), with the cell indices decoded; built once per
  chunk from ``events.hits`` (:meth:`FlatHits.from_events`) and sliced by event range
  (:meth:`FlatHits.events`) so inputs are built one batch at a time.
- :data:`BUILDERS` / :func:`build_inputs` -- the feature builder of every input name a model
  card may use. A model's inputs are named after what they hold, so any ONNX model whose
  inputs carry these names runs in the reconstruct processor without code:

  ======================== ================================= ===============================
  input name               shape after the batch axis        what
  ======================== ================================= ===============================
  ``layer_sums``           (layers,)                         energy per layer [GeV]
  ``shower_shapes``        (8,)                              :data:`~.features.SHAPE_NAMES`
  ``layer_sums_and_shapes`` (layers + 8,)                    both, in that order (``gbr``)
  ``cell_images``          (layers, nx, ny)                  energy per cell of a square-grid
                                                             section [GeV] (``cnn_lstm``)
  ``density_sums``         (bins,)                           energy per hit-density bin [GeV]
                                                             (``software_compensation``)
  ``section_sums``         (sections,)                       energy per section [GeV]
  ``voxels_<section>``     (nx, depth, ny)                   the section's voxel grid around
                                                             the shower, normalised to its
                                                             maximum (:mod:`.voxels`;
                                                             ``dual_branch_cnn``)
  ======================== ================================= ===============================

A voxel input's grid is one of the presets of :data:`VOXEL_PRESETS`, recognised by its shape
(``voxels_ecal`` of shape (16, 30, 16) is the ``default`` grid of ``calice_siw_ecal_ahcal``).

The training code builds its features through the same functions, so what a model sees in
training and in inference is the same by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np
import numpy.typing as npt

from calocoffea.exceptions import ModelError, did_you_mean
from calocoffea.geometry import Geometry, decode_cellid
from calocoffea.grids import SquareGrid
from calocoffea.models.features import (
    SHAPE_NAMES,
    cell_images,
    density_sums,
    layer_sums,
    shower_shapes,
)
from calocoffea.models.voxels import DEFAULT, SEED001, VoxelPreset, section_spec, voxel_grids

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class FlatHits:
    """Hits of consecutive events as flat arrays; ``counts[k]`` hits belong to event k."""

    counts: IntArray
    layer: IntArray
    i: IntArray
    j: IntArray
    x_mm: FloatArray
    y_mm: FloatArray
    energy: FloatArray

    @classmethod
    def from_events(cls, events: Any) -> FlatHits:
        """The hits of coffea NanoEvents (or any record array with a ``hits`` list)."""
        hits = events.hits
        counts = ak.to_numpy(ak.num(hits, axis=1)).astype(np.int64)

        def flat(name: str, dtype: type) -> Any:
            return ak.to_numpy(ak.flatten(hits[name], axis=None)).astype(dtype, copy=False)

        _, _, i, j = decode_cellid(flat("cellid", np.uint64))
        return cls(
            counts=counts,
            layer=flat("layer", np.int64),
            i=np.asarray(i, dtype=np.int64),
            j=np.asarray(j, dtype=np.int64),
            x_mm=flat("x", np.float64),
            y_mm=flat("y", np.float64),
            energy=flat("energy", np.float64),
        )

    def __len__(self) -> int:
        return int(self.counts.size)

    @property
    def offsets(self) -> IntArray:
        return np.concatenate(([0], np.cumsum(self.counts))).astype(np.int64)

    def events(self, start: int, stop: int) -> FlatHits:
        """The hits of events ``start`` .. ``stop - 1`` (views, no copy)."""
        offsets = self.offsets
        a, b = int(offsets[start]), int(offsets[stop])
        return FlatHits(
            counts=self.counts[start:stop],
            **{
                name: getattr(self, name)[a:b]
                for name in ("layer", "i", "j", "x_mm", "y_mm", "energy")
            },
        )

    def select(self, keep: npt.NDArray[np.bool_]) -> FlatHits:
        """Only the hits where ``keep`` is true (events are kept, perhaps empty)."""
        event = np.repeat(np.arange(self.counts.size), self.counts)
        counts = np.bincount(event[keep], minlength=self.counts.size).astype(np.int64)
        return FlatHits(
            counts=counts,
            **{
                name: getattr(self, name)[keep]
                for name in ("layer", "i", "j", "x_mm", "y_mm", "energy")
            },
        )


Builder = Callable[[FlatHits, Geometry, tuple[int, ...]], npt.NDArray[Any]]


def _layer_sums(hits: FlatHits, geometry: Geometry, shape: tuple[int, ...]) -> FloatArray:
    return layer_sums(hits.layer, hits.energy, hits.counts, geometry.n_layers)


def _shower_shapes(hits: FlatHits, geometry: Geometry, shape: tuple[int, ...]) -> FloatArray:
    return shower_shapes(hits.layer, hits.x_mm, hits.y_mm, hits.energy, hits.counts)


def _sums_and_shapes(hits: FlatHits, geometry: Geometry, shape: tuple[int, ...]) -> FloatArray:
    return np.hstack([_layer_sums(hits, geometry, shape), _shower_shapes(hits, geometry, shape)])


def image_shape(geometry: Geometry) -> tuple[int, int, int]:
    """(layers, nx, ny) of the cell images of ``geometry``: one square-grid section only."""
    if len(geometry.sections) != 1 or not isinstance(geometry.grid(0), SquareGrid):
        raise ModelError(
            f"cell images need a geometry with one square-grid section; {geometry.name!r} has "
            f"{len(geometry.sections)} sections ({', '.join(s.name for s in geometry.sections)})"
            "; use a model on layer sums and shower shapes for it"
        )
    grid = geometry.grid(0)
    assert isinstance(grid, SquareGrid)
    return geometry.n_layers, grid.nx, grid.ny


def _cell_images(
    hits: FlatHits, geometry: Geometry, shape: tuple[int, ...]
) -> npt.NDArray[np.float32]:
    return cell_images(hits.layer, hits.i, hits.j, hits.energy, hits.counts, image_shape(geometry))


def mip_scale_gev(geometry: Geometry) -> FloatArray:
    """Per layer, the calibrated (``gev`` stage) energy of one MIP, E_MIP / f_MIP: a hit's
    energy divided by this is its energy in MIPs (the calibration's step 6 undone)."""
    from calocoffea.conditions import mip_reference_mev

    reference = np.asarray(mip_reference_mev(geometry), dtype=np.float64)
    return reference * 1e-3 / geometry.layer_property("mip_sampling_fraction")


def _density_sums(hits: FlatHits, geometry: Geometry, shape: tuple[int, ...]) -> FloatArray:
    mips = hits.energy / mip_scale_gev(geometry)[hits.layer]
    return density_sums(mips, hits.energy, hits.counts, n_bins=shape[0])


def _section_sums(hits: FlatHits, geometry: Geometry, shape: tuple[int, ...]) -> FloatArray:
    event = np.repeat(np.arange(len(hits), dtype=np.int64), hits.counts)
    n_sections = len(geometry.sections)
    section = geometry.layer_section[hits.layer]
    flat = np.bincount(event * n_sections + section, weights=hits.energy,
                       minlength=len(hits) * n_sections)  # fmt: skip
    return flat.reshape(len(hits), n_sections).astype(np.float64, copy=False)


#: The voxel grids a ``voxels_<section>`` input may have (:mod:`.voxels`), by preset name.
VOXEL_PRESETS: dict[str, Mapping[str, VoxelPreset]] = {"default": DEFAULT, "seed001": SEED001}


def voxel_preset(geometry: Geometry, section: str, shape: tuple[int, ...]) -> str:
    """The name of the preset whose grid of ``section`` has ``shape`` (nx, depth, ny)."""
    found = {}
    for name, preset in VOXEL_PRESETS.items():
        if section in preset:
            found[name] = section_spec(geometry, section, preset).shape
            if found[name] == tuple(shape):
                return name
    listed = ", ".join(f"{k} {v}" for k, v in found.items()) or "none"
    raise ModelError(
        f"input voxels_{section} has shape {tuple(shape)}, which is no voxel grid of "
        f"{geometry.name!r} (presets: {listed}); export the model with one of these grids"
    )


def _voxels(section: str) -> Builder:
    def build(
        hits: FlatHits, geometry: Geometry, shape: tuple[int, ...]
    ) -> npt.NDArray[np.float32]:
        preset = VOXEL_PRESETS[voxel_preset(geometry, section, shape)]
        spec = section_spec(geometry, section, preset)
        first, stop = spec.layers
        inside = (hits.layer >= first) & (hits.layer < stop)
        part = hits.select(inside)
        return voxel_grids(part.x_mm, part.y_mm, part.layer, part.energy, part.counts, spec)

    return build


#: Feature builder of every input name (see the module docstring).
BUILDERS: dict[str, Builder] = {
    "layer_sums": _layer_sums,
    "shower_shapes": _shower_shapes,
    "layer_sums_and_shapes": _sums_and_shapes,
    "cell_images": _cell_images,
    "density_sums": _density_sums,
    "section_sums": _section_sums,
    "voxels_ecal": _voxels("ecal"),
    "voxels_hcal": _voxels("hcal"),
}


def input_shape(name: str, geometry: Geometry, **options: Any) -> tuple[int | None, ...]:
    """The card shape (batch axis ``None`` first) of input ``name`` for ``geometry``;
    options: ``bins`` of ``density_sums``, ``preset`` (a :data:`VOXEL_PRESETS` name, default
    ``default``) of the voxel inputs."""
    if name == "layer_sums":
        return (None, geometry.n_layers)
    if name == "shower_shapes":
        return (None, len(SHAPE_NAMES))
    if name == "layer_sums_and_shapes":
        return (None, geometry.n_layers + len(SHAPE_NAMES))
    if name == "cell_images":
        return (None, *image_shape(geometry))
    if name == "density_sums":
        return (None, int(options["bins"]))
    if name == "section_sums":
        return (None, len(geometry.sections))
    if name.startswith("voxels_") and name in BUILDERS:
        preset = str(options.get("preset", "default"))
        if preset not in VOXEL_PRESETS:
            raise ModelError(
                f"unknown voxel preset {preset!r}{did_you_mean(preset, VOXEL_PRESETS)}; "
                f"valid: {', '.join(VOXEL_PRESETS)}"
            )
        return (None, *section_spec(geometry, name.removeprefix("voxels_"),
                                    VOXEL_PRESETS[preset]).shape)  # fmt: skip
    raise ModelError(f"no feature builder for input {name!r}{did_you_mean(name, BUILDERS)}")


def build_inputs(
    names_and_shapes: Mapping[str, tuple[int | None, ...]], hits: FlatHits, geometry: Geometry
) -> dict[str, npt.NDArray[Any]]:
    """The arrays of the named inputs for ``hits``; an unknown name is a :class:`ModelError`
    that lists the builders."""
    arrays = {}
    for name, shape in names_and_shapes.items():
        builder = BUILDERS.get(name)
        if builder is None:
            raise ModelError(
                f"model input {name!r} has no feature builder{did_you_mean(name, BUILDERS)}; "
                f"calocoffea builds {', '.join(BUILDERS)}: name the model's inputs after them"
            )
        arrays[name] = builder(hits, geometry, tuple(int(d) for d in shape[1:] if d))
    return arrays


__all__ = [
    "BUILDERS",
    "VOXEL_PRESETS",
    "FlatHits",
    "build_inputs",
    "image_shape",
    "input_shape",
    "mip_scale_gev",
    "voxel_preset",
]
