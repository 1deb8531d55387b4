"""Tests of calocoffea.geometry, calocoffea.grids and the built-in geometries (DESIGN.md)."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest

from calocoffea.exceptions import GeometryError
from calocoffea.geometry import (
    CELLID_FIELDS,
    Geometry,
    Layer,
    decode_cellid,
    encode_cellid,
    geometry_names,
    get_geometry,
)
from calocoffea.grids import HexGrid, SquareGrid

BUILT_INS = ["calice_siw_ecal_ahcal", "cepc_ahcal", "cusi_module", "hgcal_ee", "tile_24x24"]
NAMES = geometry_names()


@pytest.fixture(scope="module", params=NAMES)
def geometry(request: pytest.FixtureRequest) -> Geometry:
    return get_geometry(request.param)


def test_built_ins_are_registered() -> None:
    assert set(BUILT_INS) <= set(NAMES)


def test_get_geometry_passes_a_geometry_through() -> None:
    g = get_geometry("cepc_ahcal")
    assert get_geometry(g) is g


# ---- cell ids ------------------------------------------------------------------------


def test_every_cell_round_trips(geometry: Geometry) -> None:
    """cell id -> centre -> cell id is the identity for all cells of the detector."""
    ids = geometry.cellids()
    assert ids.dtype == np.uint64
    assert ids.size == geometry.n_cells
    assert np.unique(ids).size == ids.size
    _, layer, _, _ = decode_cellid(ids)
    x, y, z = geometry.centre(ids)
    back, inside = geometry.cell_of(layer, x, y)
    assert inside.all()
    np.testing.assert_array_equal(back, ids)
    np.testing.assert_allclose(z, geometry.layer_z[layer])


def test_cell_count_is_layers_times_grid(geometry: Geometry) -> None:
    assert geometry.n_cells == sum(len(s.layers) * s.grid.n_cells for s in geometry.sections)
    assert geometry.n_layers == len(geometry.layers)
    section, layer, _, _ = decode_cellid(geometry.cellids())
    np.testing.assert_array_equal(section, geometry.layer_section[layer])


def _made_up_ids(geometry: Geometry) -> np.ndarray:
    """Ids that decode fine but name no cell of ``geometry``."""
    grid = geometry.sections[0].grid
    last = geometry.n_layers - 1
    if isinstance(grid, SquareGrid):
        outside_i, outside_j, negative = (grid.nx, 0), (0, grid.ny), (-1, 0)
    else:
        outside_i, outside_j, negative = (grid.rings, 0), (0, grid.rings), (-grid.rings, 0)
    ids = [
        encode_cellid(0, geometry.n_layers, 0, 0),  # layer past the end
        encode_cellid(0, 0, *outside_i),
        encode_cellid(0, 0, *outside_j),
        encode_cellid(0, 0, *negative),
        encode_cellid(len(geometry.sections), 0, 0, 0),  # no such section
        encode_cellid((geometry.layer_section[last] + 1) % 16, last, 0, 0),  # wrong section
    ]
    return np.concatenate([np.atleast_1d(i) for i in ids])


def test_validate_cellids(geometry: Geometry) -> None:
    ids = geometry.cellids()
    assert geometry.validate_cellids(ids).all()
    made_up = _made_up_ids(geometry)
    assert not geometry.validate_cellids(made_up).any()
    mixed = np.concatenate([ids[:3], made_up, ids[-3:]])
    expected = [True] * 3 + [False] * made_up.size + [True] * 3
    np.testing.assert_array_equal(geometry.validate_cellids(mixed), expected)


def test_encode_decode_round_trip_with_negative_indices() -> None:
    rng = np.random.default_rng(7)
    n = 1000
    section = rng.integers(0, 1 << CELLID_FIELDS["section"][1], n)
    layer = rng.integers(0, 1 << CELLID_FIELDS["layer"][1], n)
    i = rng.integers(-(1 << 15), 1 << 15, n)
    j = rng.integers(-(1 << 15), 1 << 15, n)
    i[:4], j[:4] = [-1, 0, -(1 << 15), (1 << 15) - 1], [-34, 34, (1 << 15) - 1, -(1 << 15)]
    ids = encode_cellid(section, layer, i, j)
    assert ids.dtype == np.uint64
    for got, want in zip(decode_cellid(ids), (section, layer, i, j), strict=True):
        np.testing.assert_array_equal(got, want)
    # distinct tuples give distinct ids
    assert np.unique(ids).size == np.unique(np.stack([section, layer, i, j]), axis=1).shape[1]


def test_encode_scalars_broadcast() -> None:
    ids = encode_cellid(1, 5, np.array([-2, 0, 3]), -1)
    assert ids.shape == (3,)
    section, layer, i, j = decode_cellid(ids)
    np.testing.assert_array_equal(section, 1)
    np.testing.assert_array_equal(layer, 5)
    np.testing.assert_array_equal(i, [-2, 0, 3])
    np.testing.assert_array_equal(j, -1)


@pytest.mark.parametrize(
    ("field", "args"),
    [
        ("section", (16, 0, 0, 0)),
        ("section", (-1, 0, 0, 0)),
        ("layer", (0, 4096, 0, 0)),
        ("i", (0, 0, 1 << 15, 0)),
        ("j", (0, 0, 0, -(1 << 15) - 1)),
    ],
)
def test_encode_out_of_range_raises(field: str, args: tuple[int, int, int, int]) -> None:
    with pytest.raises(GeometryError, match=f"'{field}'"):
        encode_cellid(*args)


# ---- hash ------------------------------------------------------------------------------


def test_hash_is_stable(geometry: Geometry) -> None:
    again = get_geometry(geometry.name)
    assert again is not geometry
    assert again.hash == geometry.hash
    assert re.fullmatch(r"[0-9a-f]{16}", geometry.hash)


def test_hashes_of_built_ins_differ() -> None:
    hashes = {get_geometry(name).hash for name in NAMES}
    assert len(hashes) == len(NAMES)


def test_hash_follows_the_definition_not_the_notes(geometry: Geometry) -> None:
    first = geometry.sections[0]
    thicker = dataclasses.replace(first.layers[0], absorber_mm=first.layers[0].absorber_mm + 0.1)
    changed = dataclasses.replace(
        geometry,
        sections=(
            dataclasses.replace(first, layers=(thicker, *first.layers[1:])),
            *geometry.sections[1:],
        ),
    )
    assert changed.hash != geometry.hash
    renoted = dataclasses.replace(
        geometry,
        description="another description",
        notes=("a note",),
        sections=(dataclasses.replace(first, notes=("other notes",)), *geometry.sections[1:]),
    )
    assert renoted.hash == geometry.hash


# ---- DESIGN.md facts -------------------------------------------------------------------


def _section(geometry: Geometry, name: str) -> dict[str, object]:
    (row,) = [r for r in geometry.summary() if r["section"] == name]
    return row


def test_cepc_ahcal() -> None:
    g = get_geometry("cepc_ahcal")
    assert g.n_layers == 40
    assert g.n_cells == 12960
    grid = g.sections[0].grid
    assert isinstance(grid, SquareGrid)
    assert (grid.nx, grid.ny, grid.pitch_mm) == (18, 18, 40.0)
    assert {(la.absorber, la.absorber_mm, la.active_mm) for la in g.layers} == {("Fe", 20.0, 3.0)}
    # PHYSICS.md: 40 layers of 23 mm Fe/scintillator are about 4.9 lambda_I
    assert g.layer_depth_lambda[1][-1] == pytest.approx(4.9, abs=0.1)


def test_calice_siw_ecal_ahcal() -> None:
    g = get_geometry("calice_siw_ecal_ahcal")
    assert [s.name for s in g.sections] == ["ecal", "hcal"]
    ecal, hcal = g.sections
    assert len(ecal.layers) == 30
    assert [la.absorber_mm for la in ecal.layers] == [2.1] * 20 + [4.2] * 10
    assert {(la.absorber, la.active, la.active_mm) for la in ecal.layers} == {("W", "Si", 0.5)}
    assert isinstance(ecal.grid, SquareGrid) and ecal.grid.pitch_mm == 5.0
    row = _section(g, "ecal")
    assert row["depth_x0"] == pytest.approx(24.0, abs=1.0)
    assert 0.8 <= float(row["depth_lambda_i"]) <= 1.1  # type: ignore[arg-type]
    assert len(hcal.layers) == 48
    assert {la.thickness_mm for la in hcal.layers} == {23.0}
    assert isinstance(hcal.grid, SquareGrid) and hcal.grid.pitch_mm == 30.0
    # the HCAL starts where the ECAL ends
    assert g.layer_section.tolist() == [0] * 30 + [1] * 48


def test_hgcal_ee() -> None:
    g = get_geometry("hgcal_ee")
    assert g.n_layers == 26
    grid = g.sections[0].grid
    assert isinstance(grid, HexGrid)
    assert grid.n_cells == 3571
    assert (grid.rings, grid.radius_mm) == (35, 10.0)
    assert {
        (la.absorber, la.absorber_mm, la.active, la.active_mm, la.gap_mm) for la in g.layers
    } == {("Pb", 6.05, "Si", 0.32, 3.0)}
    assert _section(g, "ee")["depth_x0"] == pytest.approx(26.0, rel=0.1)
    q, r = grid.cells()
    assert q.size == 3571
    ring = grid.ring(q, r)
    assert ring.min() == 1 and ring.max() == 35
    counts = np.bincount(ring)
    assert counts[1] == 1
    assert counts[35] == 204
    np.testing.assert_array_equal(counts[2:], 6 * np.arange(1, 35))
    assert int(grid.ring(0, 0)) == 1
    theta = grid.theta_label(q, r)
    assert np.unique(theta).size == 204
    assert theta.min() == 0 and theta.max() == 203
    # seed 003: (ring, theta_k) identifies a cell of a layer uniquely
    assert np.unique(ring * 1000 + theta).size == q.size


def test_hgcal_theta_label_of_central_cell_is_zero() -> None:
    grid = get_geometry("hgcal_ee").sections[0].grid
    assert isinstance(grid, HexGrid)
    assert int(grid.theta_label(np.array([0]), np.array([0]))[0]) == 0


def test_tile_24x24() -> None:
    g = get_geometry("tile_24x24")
    grid = g.sections[0].grid
    assert isinstance(grid, SquareGrid)
    assert (grid.nx, grid.ny) == (24, 24)
    assert {(la.absorber, la.absorber_mm, la.active, la.active_mm) for la in g.layers} == {
        ("Cu", 20.0, "scintillator", 5.0)
    }
    assert g.n_cells == 24 * 24 * g.n_layers


def test_cusi_module() -> None:
    g = get_geometry("cusi_module")
    grid = g.sections[0].grid
    assert isinstance(grid, SquareGrid)
    assert (grid.nx, grid.ny, grid.pitch_mm) == (50, 50, 20.0)
    assert g.n_layers == 75
    np.testing.assert_allclose([la.thickness_mm for la in g.layers], 40.0)
    assert g.n_cells == 50 * 50 * 75


def test_layer_z_increases_inside_the_layers(geometry: Geometry) -> None:
    z = geometry.layer_z
    assert np.all(np.diff(z) > 0)
    start, end = geometry.layer_depth_x0
    np.testing.assert_allclose(start[1:], end[:-1])
    assert start[0] == 0.0 and np.all(end > start)


def test_mip_mpv_per_layer(geometry: Geometry) -> None:
    mpv = geometry.mip_mpv_mev(100.0)
    assert mpv.shape == (geometry.n_layers,)
    assert np.all((mpv > 0.05) & (mpv < 1.5))


# ---- grids -----------------------------------------------------------------------------


def test_square_grid_outside_is_flagged() -> None:
    grid = SquareGrid(18, 18, 40.0)
    hx, hy = grid.half_width_mm
    assert (hx, hy) == (360.0, 360.0)
    x = np.array([0.0, hx - 1e-6, -hx, hx, -hx - 1e-6, 0.0, 0.0, 1e4, -1e4])
    y = np.array([0.0, hy - 1e-6, -hy, 0.0, 0.0, hy, -hy - 1e-6, 0.0, 1e4])
    i, j, inside = grid.cell_of(x, y)
    np.testing.assert_array_equal(inside, [True, True, True] + [False] * 6)
    assert (i[1], j[1]) == (17, 17) and (i[2], j[2]) == (0, 0)
    assert not grid.contains(i[~inside], j[~inside]).any()


def test_hex_grid_outside_is_flagged() -> None:
    grid = HexGrid(rings=35, radius_mm=10.0)
    # centres of the next ring out, one pitch beyond the last ring in six directions
    q = np.array([35, -35, 0, 0, 35, -35])
    r = np.array([0, 0, 35, -35, -35, 35])
    x, y = grid.centre(q, r)
    _, _, inside = grid.cell_of(x, y)
    assert not inside.any()
    _, _, inside = grid.cell_of(np.array([1e4, 0.0]), np.array([0.0, -1e4]))
    assert not inside.any()
    # and the last ring is inside
    x, y = grid.centre(np.array([34, -34, 0]), np.array([0, 0, -34]))
    _, _, inside = grid.cell_of(x, y)
    assert inside.all()


@pytest.mark.parametrize("radius_mm", [10.0, 6.5])
def test_hex_cell_of_points_near_a_centre(radius_mm: float) -> None:
    grid = HexGrid(rings=12, radius_mm=radius_mm)
    q, r = grid.cells()
    x, y = grid.centre(q, r)
    qq, rr, inside = grid.cell_of(x, y)
    assert inside.all()
    np.testing.assert_array_equal(qq, q)
    np.testing.assert_array_equal(rr, r)
    rng = np.random.default_rng(3)
    n = 50
    inradius = 0.5 * math.sqrt(3.0) * radius_mm
    rho = 0.8 * inradius * np.sqrt(rng.random((q.size, n)))
    phi = rng.uniform(0.0, 2.0 * np.pi, (q.size, n))
    px = x[:, None] + rho * np.cos(phi)
    py = y[:, None] + rho * np.sin(phi)
    qq, rr, _ = grid.cell_of(px, py)
    np.testing.assert_array_equal(qq, np.broadcast_to(q[:, None], qq.shape))
    np.testing.assert_array_equal(rr, np.broadcast_to(r[:, None], rr.shape))


def test_hex_cell_of_tiles_the_plane() -> None:
    """Every point lies in the hexagon whose centre is nearest to it."""
    grid = HexGrid(rings=10, radius_mm=10.0)
    rng = np.random.default_rng(11)
    hx, hy = grid.half_width_mm
    x, y = rng.uniform(-0.8 * hx, 0.8 * hx, 20000), rng.uniform(-0.8 * hy, 0.8 * hy, 20000)
    cq, cr = grid.cells()
    cx, cy = grid.centre(cq, cr)
    nearest = np.argmin((x[:, None] - cx) ** 2 + (y[:, None] - cy) ** 2, axis=1)
    # beyond the outermost ring the nearest centre of a finite grid is not the hexagon
    # containing the point; below it, the six neighbours decide and both agree
    keep = grid.ring(cq[nearest], cr[nearest]) < grid.rings
    assert keep.mean() > 0.5
    q, r, inside = grid.cell_of(x[keep], y[keep])
    assert inside.all()
    np.testing.assert_array_equal(q, cq[nearest[keep]])
    np.testing.assert_array_equal(r, cr[nearest[keep]])


def test_grids_reject_bad_parameters() -> None:
    with pytest.raises(GeometryError):
        SquareGrid(0, 10, 5.0)
    with pytest.raises(GeometryError):
        SquareGrid(10, 10, -1.0)
    with pytest.raises(GeometryError):
        HexGrid(rings=0, radius_mm=10.0)


def test_layer_rejects_unknown_material_and_bad_thickness() -> None:
    with pytest.raises(GeometryError, match="known materials"):
        Layer("steel", 20.0, "scintillator", 3.0)
    with pytest.raises(GeometryError, match="active_mm > 0"):
        Layer("Fe", 20.0, "scintillator", 0.0)


@pytest.mark.parametrize("where", [1.0e4, 1.0e9, np.nan, np.inf, -np.inf])
def test_positions_far_outside_are_flagged(geometry: Geometry, where: float) -> None:
    """Geometry.cell_of flags positions metres away (or not finite) and does not raise."""
    layer = np.array([0, geometry.n_layers - 1, 0])
    x = np.array([where, 0.0, 0.0])
    y = np.array([0.0, where, 0.0])
    ids, inside = geometry.cell_of(layer, x, y)
    np.testing.assert_array_equal(inside, [False, False, True])
    np.testing.assert_array_equal(geometry.validate_cellids(ids), inside)


def test_validate_scalar_cellid(geometry: Geometry) -> None:
    """A single cell id works like a one-element array."""
    ids = geometry.cellids()
    assert bool(geometry.validate_cellids(ids[-1]))
    assert not bool(geometry.validate_cellids(_made_up_ids(geometry)[0]))


def test_scalar_position(geometry: Geometry) -> None:
    """A single position works like a one-element array, in cell_of and centre."""
    cellid = geometry.cellids()[-1]
    x, y, _ = geometry.centre(cellid)
    _, layer, _, _ = decode_cellid(cellid)
    back, inside = geometry.cell_of(int(layer), float(x), float(y))
    assert bool(inside)
    assert int(back) == int(cellid)
