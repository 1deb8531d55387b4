"""Columnar voxel grids (calocoffea.models.voxels) against the seed's per-event function."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from calocoffea.exceptions import ModelError
from calocoffea.geometry import get_geometry
from calocoffea.models import voxels
from calocoffea.models.voxels import (
    DEFAULT,
    SEED001,
    VoxelPreset,
    VoxelSpec,
    section_spec,
    section_voxel_grids,
    seed_voxel_grid,
    voxel_grids,
)

GEOMETRY = "calice_siw_ecal_ahcal"


def seed_loop(h: dict[str, np.ndarray], spec: VoxelSpec, normalise: bool = True) -> np.ndarray:
    """The seed's function event by event; its (x, y = depth, z) are our (x, layer, y)."""
    edges = np.concatenate(([0], np.cumsum(h["counts"])))
    out = np.zeros((h["counts"].size, *spec.shape), dtype=np.float32)
    for k in range(h["counts"].size):
        s = slice(int(edges[k]), int(edges[k + 1]))
        out[k] = seed_voxel_grid(
            h["x"][s], h["layer"][s].astype(np.float64), h["y"][s], h["energy"][s],
            (spec.cell_mm[0], spec.layers_per_cell, spec.cell_mm[1]), spec.layers,
            spec.window_mm, normalise,
        )  # fmt: skip
    return out


def ours(h: dict[str, np.ndarray], spec: VoxelSpec, normalise: bool = True) -> np.ndarray:
    return voxel_grids(h["x"], h["y"], h["layer"], h["energy"], h["counts"], spec,
                       normalise=normalise)  # fmt: skip


def edge_events(spec: VoxelSpec) -> dict[str, np.ndarray]:
    """Two events whose centroids are exact (dyadic energies, symmetric hits), with hits on
    the window's edges, on inner cell edges and just outside."""
    wx, wy = spec.window_mm
    cx, cy = 12.5, -7.25
    xs = [-wx / 2, wx / 2, -wx / 2 + spec.cell_mm[0], 0.0, 0.0, 0.0, 0.0]
    ys = [0.0, 0.0, 0.0, -wy / 2, wy / 2, -wy / 2 + spec.cell_mm[1], 0.0]
    x = np.array(xs + [-v for v in xs]) + cx
    y = np.array(ys + [-v for v in ys]) + cy
    first = spec.layers[0]
    layer = np.array([first + 1] * 6 + [spec.layers[1]] + [first] * 6 + [first - 1])
    energy = np.array([0.5, 0.25, 0.125, 1.0, 2.0, 0.75, 4.0] * 2)
    return {
        "x": np.concatenate([x, x]),
        "y": np.concatenate([y, y + 0.5]),
        "layer": np.concatenate([layer, layer]),
        "energy": np.concatenate([energy, energy]),
        "counts": np.array([x.size, x.size]),
    }


def random_showers(spec: VoxelSpec, n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` events of 0..80 hits around random centres, some without hits, some of zero
    energy, some with negative energies, layers and positions also outside the grid."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 80, n)
    counts[::11] = 0
    counts[5] = 1
    counts[14] = 79
    event = np.repeat(np.arange(n), counts)
    wx, wy = spec.window_mm
    centre = rng.uniform(-200, 200, (n, 2))
    x = centre[event, 0] + rng.normal(0, wx / 3, event.size)
    y = centre[event, 1] + rng.normal(0, wy / 3, event.size)
    layer = rng.integers(max(spec.layers[0] - 3, 0), spec.layers[1] + 3, event.size)
    # multiples of 2^-20 GeV (like ADC counts), so that the seed's float32 cast and float32
    # energy sums are exact: its centroids then agree with ours to float64 rounding, and no
    # hit moves across a cell edge between the two
    energy = np.round(rng.exponential(0.01, event.size) * 2.0**20) / 2.0**20
    energy[np.isin(event, [7, 8, 9])] = 0.0
    energy[(event == 13) & (np.arange(event.size) % 2 == 0)] *= -1.0
    energy[event == 14] *= -1.0
    h = {"x": x, "y": y, "layer": layer, "energy": energy, "counts": counts}
    edges = edge_events(spec)
    return {k: np.concatenate([h[k], edges[k]]) for k in h}


SPECS = [
    VoxelSpec(cell_mm=(5.0, 7.5), window_mm=(40.0, 45.0), layers=(2, 12), layers_per_cell=2),
    VoxelSpec(cell_mm=(30.0, 30.0), window_mm=(360.0, 360.0), layers=(30, 78)),
    # 4 voxels: most events fill them all, and event 14's negative energies leave no zero
    VoxelSpec(cell_mm=(10.0, 10.0), window_mm=(20.0, 20.0), layers=(2, 4), layers_per_cell=2),
]
SPEC_IDS = ["fine-2-layers-per-bin", "hcal-default", "tiny"]


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("normalise", [True, False])
def test_matches_the_seed_loop(spec: VoxelSpec, normalise: bool) -> None:
    h = random_showers(spec, 300, seed=1)
    grids = ours(h, spec, normalise)
    assert grids.dtype == np.float32
    assert grids.shape == (h["counts"].size, *spec.shape)
    np.testing.assert_allclose(grids, seed_loop(h, spec, normalise), rtol=1e-5, atol=1e-7)
    assert grids.any(axis=(1, 2, 3)).sum() > 200  # the showers are not all outside
    if spec.n_voxels == 4:
        assert grids[14].max() < 0  # not normalised, as the seed


def test_blocks_do_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = SPECS[0]
    h = random_showers(spec, 120, seed=2)
    whole = ours(h, spec)
    for block_voxels in (1, spec.n_voxels * 7 + 3):
        monkeypatch.setattr(voxels, "BLOCK_VOXELS", block_voxels)
        np.testing.assert_array_equal(ours(h, spec), whole)


def test_window_edges() -> None:
    spec = SPECS[0]
    h = edge_events(spec)
    grids = ours(h, spec, normalise=False)
    np.testing.assert_allclose(grids, seed_loop(h, spec, normalise=False), rtol=1e-6)
    nx, _, ny = spec.shape
    g = grids[0, :, 0, :]  # every kept hit is in depth bin 0 (layers 2 and 3)
    # x̄ - w/2 is in (0.5, and 0.25 of the mirrored hit), x̄ + w/2 is out; a hit on an inner
    # cell edge opens the next cell
    assert g[0, ny // 2] == 0.75 and g[1, ny // 2] == 0.125 and g[nx - 1, ny // 2] == 0.125
    assert g[nx // 2, 0] == 3.0 and g[nx // 2, 1] == 0.75 and g[nx // 2, ny - 1] == 0.75
    # the hits at x̄ + w/2, ȳ + w/2 and in layers outside (2, 12) are dropped
    assert grids[0].sum() == g.sum() == 5.5
    np.testing.assert_array_equal(grids[1].sum(), grids[0].sum())


def test_single_column_showers_stay_in_one_voxel() -> None:
    """MIP-like tracks: every hit in one cell, whose centre is the centroid and so a voxel
    edge of an even-sized window; float64 rounding of the centroid must not move them."""
    spec = section_spec(GEOMETRY, "ecal")
    rng = np.random.default_rng(5)
    n, per_event = 200, 30
    energy = rng.exponential(0.001, n * per_event)
    x, y = np.full(n * per_event, 7.5), np.full(n * per_event, -2.5)
    event = np.repeat(np.arange(n), per_event)
    cx = np.bincount(event, weights=energy * x) / np.bincount(event, weights=energy)
    assert np.any(cx != 7.5)  # the case at stake: the centroid is off by rounding
    layer = np.tile(np.arange(per_event), n)
    grids = voxel_grids(x, y, layer, energy, np.full(n, per_event), spec, normalise=False)
    nx, _, ny = spec.shape
    column = grids[:, nx // 2, :, ny // 2].sum(axis=1)
    np.testing.assert_allclose(column, energy.reshape(n, -1).sum(axis=1), rtol=1e-6)


def test_events_without_hits_or_energy_give_zeros() -> None:
    spec = SPECS[0]
    # event 2's energies sum to zero in different voxels: zeros all the same (the seed's)
    h = {"x": np.array([1.0, 2.0, 3.0]), "y": np.array([0.0, 1.0, 20.0]),
         "layer": np.array([3, 4, 5]), "energy": np.array([0.0, 1.0, -1.0]),
         "counts": np.array([0, 1, 2, 0])}  # fmt: skip
    grids = ours(h, spec)
    assert grids.shape == (4, *spec.shape)
    assert not grids.any()


def test_no_events() -> None:
    for spec in SPECS:
        empty = np.zeros(0)
        grids = voxel_grids(empty, empty, np.zeros(0, np.int64), empty, np.zeros(0, np.int64),
                            spec)  # fmt: skip
        assert grids.shape == (0, *spec.shape) and grids.dtype == np.float32


def test_input_is_not_modified() -> None:
    spec = SPECS[0]
    h = random_showers(spec, 20, seed=3)
    before = {k: v.copy() for k, v in h.items()}
    ours(h, spec)
    for k, v in h.items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cell_mm": (0.0, 5.0)}, "cell_mm must be two finite sizes > 0"),
        ({"cell_mm": (5.0,)}, "cell_mm must be two finite sizes > 0"),
        ({"cell_mm": ("5", 5.0)}, "cell_mm must be two finite sizes > 0"),
        ({"window_mm": (40.0, float("inf"))}, "window_mm must be two finite sizes > 0"),
        ({"window_mm": (42.0, 45.0)}, r"window_mm\[x\] = 42 mm is not a whole number of cells"),
        ({"window_mm": (2.0, 45.0)}, "not a whole number of cells"),
        ({"layers": (5, 5)}, "0 <= first < stop"),
        ({"layers": (-1, 5)}, "0 <= first < stop"),
        ({"layers": (1.0, 5)}, "0 <= first < stop"),
        ({"layers_per_cell": 3}, "must be an integer >= 1 that divides the 10 layers"),
        ({"layers_per_cell": 0}, "must be an integer >= 1"),
    ],
)
def test_bad_specs(change: dict[str, object], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        dataclasses.replace(SPECS[0], **change)


def test_bad_presets_and_sections() -> None:
    with pytest.raises(ModelError, match="two integers >= 1"):
        VoxelPreset(cells=(0, 16), cell_mm=(5.0, 5.0))
    with pytest.raises(ModelError, match=r"no section 'ECAL' \(did you mean 'ecal'\?\)"):
        section_spec(GEOMETRY, "ECAL")
    with pytest.raises(ModelError, match="out of range"):
        section_spec(GEOMETRY, 2)
    with pytest.raises(ModelError, match="no grid for section 'hcal'"):
        section_spec(GEOMETRY, "hcal", {"ecal": DEFAULT["ecal"]})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"x": np.zeros(4)}, "hit arrays differ in length"),
        ({"layer": np.zeros(6, np.int64)}, "hit arrays differ in length"),
        ({"counts": np.array([2, 2])}, r"counts per event \(sum 4, min 2\) do not match the 5"),
        ({"counts": np.array([6, -1])}, "do not match the 5 hits"),
        ({"counts": np.array([2.5, 2.5])}, "counts must hold integers"),
        ({"layer": np.array([3.0, 3.5, 4.0, 4.0, 4.0])}, "layer must hold integers"),
        ({"x": np.zeros((5, 1))}, "must be a flat array"),
        ({"energy": np.array([0.1, np.nan, 0.1, np.inf, 0.1])}, r"non-finite hit energies at "
         r"flat hits \[1, 3\]; calibrate"),
        ({"y": np.array([0.0, 0.0, 0.0, 0.0, np.nan])}, r"non-finite hit y at flat hits \[4\]"),
    ],
)  # fmt: skip
def test_bad_input(change: dict[str, np.ndarray], message: str) -> None:
    h = {"x": np.zeros(5), "y": np.zeros(5), "layer": np.array([2, 3, 4, 5, 6]),
         "energy": np.full(5, 0.1), "counts": np.array([2, 3])} | change  # fmt: skip
    with pytest.raises(ModelError, match=message):
        ours(h, SPECS[0])


def test_spec_must_be_a_voxel_spec() -> None:
    with pytest.raises(ModelError, match="spec must be a VoxelSpec, got tuple"):
        voxel_grids([], [], [], [], [], (16, 30, 16))


@pytest.mark.parametrize(
    ("preset", "section", "shape", "cell_mm"),
    [
        (DEFAULT, "ecal", (16, 30, 16), 5.0),
        (DEFAULT, "hcal", (12, 48, 12), 30.0),
        (SEED001, "ecal", (40, 30, 40), 5.0),
        (SEED001, "hcal", (40, 48, 40), 30.0),
    ],
)
def test_presets(
    preset: dict[str, VoxelPreset], section: str, shape: tuple[int, int, int], cell_mm: float
) -> None:
    geometry = get_geometry(GEOMETRY)
    spec = section_spec(geometry, section, preset)
    assert spec.shape == shape and spec.cell_mm == (cell_mm, cell_mm)
    k = [s.name for s in geometry.sections].index(section)
    assert spec == section_spec(GEOMETRY, k, preset)
    grid = geometry.grid(k)
    assert grid.pitch_mm == cell_mm
    # one event per layer of the section, one hit at the centroid: each its own depth bin
    layers = np.flatnonzero(geometry.layer_section == k)
    n = layers.size
    grids = voxel_grids(np.full(n, 2.5), np.full(n, -2.5), layers, np.ones(n), np.ones(n, int),
                        spec)  # fmt: skip
    depth_bin = grids.sum(axis=(1, 3)).argmax(axis=1)
    np.testing.assert_array_equal(depth_bin, np.arange(n))
    assert np.all(grids.sum(axis=(1, 2, 3)) == 1.0)


def test_section_voxel_grids_select_the_section() -> None:
    geometry = get_geometry(GEOMETRY)
    rng = np.random.default_rng(4)
    counts = rng.integers(0, 60, 40)
    n_hits = int(counts.sum())
    h = {"x": rng.normal(0, 40, n_hits), "y": rng.normal(0, 40, n_hits),
         "layer": rng.integers(0, geometry.n_layers, n_hits),
         "energy": rng.exponential(0.01, n_hits), "counts": counts}  # fmt: skip
    event = np.repeat(np.arange(counts.size), counts)
    for k, section in enumerate(geometry.sections):
        grids = section_voxel_grids(geometry, section.name, h["x"], h["y"], h["layer"],
                                    h["energy"], h["counts"])  # fmt: skip
        inside = geometry.layer_section[h["layer"]] == k
        selected = {name: h[name][inside] for name in ("x", "y", "layer", "energy")}
        selected["counts"] = np.bincount(event[inside], minlength=counts.size)
        spec = section_spec(geometry, k)
        np.testing.assert_array_equal(grids, ours(selected, spec))
        np.testing.assert_allclose(grids, seed_loop(selected, spec), rtol=1e-5, atol=1e-7)
