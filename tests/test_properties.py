"""Property tests (hypothesis, derandomised): what must hold for every valid input.

- cell ids: ``encode_cellid``/``decode_cellid`` round trip over the fields' ranges;
  ``Geometry.cell_index`` is the position in ``cellids()`` and -1 for any other id, on every
  built-in geometry; DD4hep ``BitFieldCoder`` round trips for encodings in any token order;
- the file format: random jagged events (empty events and chunks included, extra fields of
  any numeric type) read back unchanged by ``read_events`` and by coffea with ``CaloSchema``;
- the read-out formulas: ``desaturation`` inverts ``saturation`` below the occupancy and is
  continuous and monotonic across it; ``inverse_nonlinearity`` inverts ``nonlinearity``;
- constants: ``Constants.save`` then ``load_constants`` gives the same tables.

Every test is derandomised (the same examples on every run, no example database), so a
failure in CI fails again on a laptop.
"""

from __future__ import annotations

import functools
import itertools
import math
from pathlib import Path

import awkward as ak
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from calocoffea.cellid import BitFieldCoder
from calocoffea.constants import Constants, Provenance, Table, load_constants
from calocoffea.digitization import (
    desaturation,
    inverse_nonlinearity,
    nonlinearity,
    saturation,
)
from calocoffea.exceptions import GeometryError
from calocoffea.geometry import (
    CELLID_FIELDS,
    Geometry,
    decode_cellid,
    encode_cellid,
    geometry_names,
    get_geometry,
)
from calocoffea.io import HIT_DTYPES, SCALAR_DTYPES, FileMetadata, read_events, write_events

#: Deterministic and modest: the same examples in CI and on a laptop, seconds per test.
PROPERTY = settings(
    derandomize=True,
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
GEOMETRIES = geometry_names()
IJ = (-(1 << 15), (1 << 15) - 1)  # i and j are stored with an offset of 2**15


# --------------------------------------------------------------------------- cell ids


@PROPERTY
@given(
    st.lists(
        st.tuples(
            st.integers(0, (1 << CELLID_FIELDS["section"][1]) - 1),
            st.integers(0, (1 << CELLID_FIELDS["layer"][1]) - 1),
            st.integers(*IJ),
            st.integers(*IJ),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_encode_decode_cellid_round_trip(fields: list[tuple[int, int, int, int]]) -> None:
    section, layer, i, j = (np.array(c, dtype=np.int64) for c in zip(*fields, strict=True))
    ids = encode_cellid(section, layer, i, j)
    assert ids.dtype == np.uint64
    assert np.unique(ids).size == len(set(fields))  # distinct fields, distinct ids
    for decoded, given_ in zip(decode_cellid(ids), (section, layer, i, j), strict=True):
        np.testing.assert_array_equal(decoded, given_)
    assert np.all(ids < np.uint64(1 << 48))  # the four fields fill bits 0..47


@PROPERTY
@given(
    st.sampled_from(["section", "layer", "i", "j"]),
    st.sampled_from([-1, 0]),  # just below the field, or just above it
)
def test_encode_cellid_rejects_values_outside_the_fields(name: str, side: int) -> None:
    width = CELLID_FIELDS[name][1]
    low, high = (0, (1 << width) - 1) if name in ("section", "layer") else IJ
    values = {"section": 0, "layer": 0, "i": 0, "j": 0, name: low - 1 if side else high + 1}
    with pytest.raises(GeometryError, match=name):
        encode_cellid(**values)


@functools.cache
def _positions(name: str) -> dict[int, int]:
    """cell id -> position in cellids() of a built-in geometry."""
    return {int(c): k for k, c in enumerate(get_geometry(name).cellids().tolist())}


@pytest.mark.parametrize("name", GEOMETRIES)
def test_cell_index_of_every_cell_is_its_position(name: str) -> None:
    geometry = get_geometry(name)
    ids = geometry.cellids()
    assert ids.size == geometry.n_cells == len(_positions(name))  # no id twice
    np.testing.assert_array_equal(geometry.cell_index(ids), np.arange(ids.size))
    assert geometry.validate_cellids(ids).all()


@st.composite
def ids_near(draw: st.DrawFn, geometry: Geometry) -> int:
    """A packed id whose fields are inside or just outside the geometry's boxes (the
    corners of hexagonal grids, one past each edge) or anywhere in their bit ranges."""
    section = draw(st.integers(0, len(geometry.sections)) | st.integers(0, 15))
    rows = geometry._index_table[0]
    k = min(section, len(rows) - 1)
    _, first, n_layers, i0, ni, j0, nj = (int(v) for v in rows[k])
    layer = draw(st.integers(max(first - 1, 0), first + n_layers) | st.integers(0, 4095))
    i = draw(st.integers(i0 - 1, i0 + ni) | st.integers(*IJ))
    j = draw(st.integers(j0 - 1, j0 + nj) | st.integers(*IJ))
    return int(encode_cellid(section, layer, i, j))


@PROPERTY
@given(st.data())
def test_cell_index_is_the_position_or_minus_one(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(GEOMETRIES), label="geometry")
    geometry = get_geometry(name)
    positions = _positions(name)
    n = geometry.n_cells
    inside = data.draw(st.lists(st.integers(0, n - 1), max_size=10), label="cells")
    near = data.draw(st.lists(ids_near(geometry), max_size=10), label="ids")
    ids = np.array([*geometry.cellids()[inside].tolist(), *near], dtype=np.uint64)
    expected = [positions.get(c, -1) for c in ids.tolist()]
    np.testing.assert_array_equal(geometry.cell_index(ids), expected)
    np.testing.assert_array_equal(geometry.validate_cellids(ids), np.array(expected) >= 0)
    # any shape: the index has the shape of the ids
    assert geometry.cell_index(ids.reshape(1, -1)).shape == (1, ids.size)


@PROPERTY
@given(st.sampled_from(GEOMETRIES), st.integers(0, 10_000), st.integers(48, 63))
def test_cell_index_of_ids_with_unused_high_bits_is_minus_one(name: str, k: int, bit: int) -> None:
    geometry = get_geometry(name)
    cell = geometry.cellids()[k % geometry.n_cells] | np.uint64(1 << bit)
    assert int(geometry.cell_index(cell)) == -1
    assert not bool(geometry.validate_cellids(cell))


@st.composite
def partitions(draw: st.DrawFn) -> tuple[str, BitFieldCoder]:
    """A DD4hep encoding whose fields tile all 64 bits, tokens in a random order with
    explicit offsets, each field signed or unsigned."""
    cuts = sorted(draw(st.sets(st.integers(1, 63), max_size=10)))
    bounds = list(zip([0, *cuts], [*cuts, 64], strict=True))
    order = draw(st.permutations(range(len(bounds))))
    tokens = []
    for k in order:
        start, end = bounds[k]
        width = end - start
        tokens.append(f"f{k}:{start}:{-width if draw(st.booleans()) else width}")
    encoding = ",".join(tokens)
    return encoding, BitFieldCoder.parse(encoding)


@PROPERTY
@given(partitions(), st.data())
def test_bitfieldcoder_round_trips_in_any_token_order(
    layout: tuple[str, BitFieldCoder], data: st.DataObject
) -> None:
    encoding, coder = layout
    assert BitFieldCoder.parse(str(coder)) == coder
    assert str(coder) == encoding  # canonical form keeps the given order
    # values -> ids -> values
    n = data.draw(st.integers(0, 5), label="n")
    values = {}
    for f in coder.fields:
        drawn = data.draw(st.lists(st.integers(f.minimum, f.maximum), min_size=n, max_size=n))
        values[f.name] = np.array(drawn, dtype=np.uint64 if f.maximum >= 2**63 else np.int64)
    ids = coder.encode(values)
    for f in coder.fields:
        decoded = coder.decode(ids, f.name)
        if f.maximum >= 2**63:
            decoded = decoded.view(np.uint64)
        np.testing.assert_array_equal(decoded, values[f.name])
    # ids -> values -> ids: the fields cover every bit, so nothing is lost
    raw = data.draw(st.lists(st.integers(0, 2**64 - 1), max_size=6), label="ids")
    ids = np.array(raw, dtype=np.uint64)
    np.testing.assert_array_equal(coder.encode(coder.decode_all(ids)), ids)


# --------------------------------------------------------------------------- the format

#: Extra (undocumented) field types that a file keeps as given.
EXTRA_DTYPES = [np.dtype(t) for t in ("i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f4", "f8")]
EXTRA_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(
    lambda name: (
        name not in SCALAR_DTYPES
        and name not in HIT_DTYPES
        and not name.startswith(("hit", "fem_", "n"))
    )
)
OPTIONAL_SCALARS = [name for name in SCALAR_DTYPES if name not in ("event", "run", "pdg")]
OPTIONAL_HITS = [n for n in HIT_DTYPES if n not in ("cellid", "layer", "x", "y", "z", "energy")]


def _values(dtype: np.dtype, size: int) -> st.SearchStrategy[np.ndarray]:
    """Any values of ``dtype``: every integer, floats with NaN, infinities and -0."""
    return hnp.arrays(dtype, size)


@st.composite
def event_chunks(draw: st.DrawFn) -> tuple[list[ak.Array], dict[str, str]]:
    """Chunks of random events in the write_events input format (some chunks and events
    empty), with the required fields, random optional ones and random extra ones; and the
    kind (scalar or hit) of each extra field."""
    empty_file = draw(st.integers(0, 9)) == 0
    hit_counts = st.lists(st.integers(0, 6), min_size=1, max_size=25)
    counts = np.array([] if empty_file else draw(hit_counts), np.int64)
    n_events, n_hits = counts.size, int(counts.sum())
    scalar_types = {name: SCALAR_DTYPES[name] for name in ("event", "run", "pdg", "beam_energy")}
    for name in draw(st.lists(st.sampled_from(OPTIONAL_SCALARS), unique=True)):
        scalar_types[name] = SCALAR_DTYPES[name]
    hit_types = {name: HIT_DTYPES[name] for name in ("cellid", "layer", "x", "y", "z", "energy")}
    for name in draw(st.lists(st.sampled_from(OPTIONAL_HITS), unique=True)):
        hit_types[name] = HIT_DTYPES[name]
    extra = draw(st.dictionaries(EXTRA_NAMES, st.sampled_from(EXTRA_DTYPES), max_size=3))
    kinds = {}
    for name, dtype in extra.items():
        kinds[name] = draw(st.sampled_from(["scalar", "hit"]))
        (scalar_types if kinds[name] == "scalar" else hit_types)[name] = dtype
    scalars = {n: draw(_values(t, n_events), label=n) for n, t in scalar_types.items()}
    hits = {n: draw(_values(t, n_hits), label=f"hit_{n}") for n, t in hit_types.items()}
    events = ak.zip({**scalars, "hit": ak.unflatten(ak.zip(hits), counts)}, depth_limit=1)
    cuts = sorted(draw(st.lists(st.integers(0, n_events), max_size=3)))
    bounds = [0, *cuts, n_events]
    chunks = [events[a:b] for a, b in itertools.pairwise(bounds)]
    return chunks, kinds


def _bits(values: np.ndarray) -> np.ndarray:
    """The values as unsigned integers of their size: NaN payloads and -0 compared too."""
    return values.view(f"u{values.itemsize}")


def _assert_same(events: ak.Array, hits: ak.Array, chunks: list[ak.Array]) -> None:
    """Scalars and hits read back (``events`` with collection ``hits``) are those written,
    bit for bit (NaN included), with their types."""
    written = ak.concatenate(chunks)
    assert len(events) == len(written)
    np.testing.assert_array_equal(ak.to_numpy(ak.num(hits, axis=1)), ak.num(written.hit))
    for name in written.fields:
        if name == "hit":
            continue
        expected = ak.to_numpy(written[name])
        got = ak.to_numpy(events[name])
        assert got.dtype == expected.dtype, name
        np.testing.assert_array_equal(_bits(got), _bits(expected), err_msg=name)
    for name in written.hit.fields:
        expected = ak.to_numpy(ak.flatten(written.hit[name]))
        got = ak.to_numpy(ak.flatten(hits[name]))
        assert got.dtype == expected.dtype, name
        np.testing.assert_array_equal(_bits(got), _bits(expected), err_msg=name)


@settings(PROPERTY, max_examples=40)
@given(event_chunks())
def test_random_events_read_back_unchanged(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[list[ak.Array], dict[str, str]]
) -> None:
    from coffea.nanoevents import NanoEventsFactory

    from calocoffea.schema import CaloSchema

    chunks, kinds = case
    path = tmp_path_factory.mktemp("prop") / "events.root"
    write_events(path, chunks, FileMetadata(stage="sim"), compression="lz4")
    events = read_events(path)
    assert set(events.fields) == {*chunks[0].fields} - {"hit"} | {"hits"}
    _assert_same(events, events.hits, chunks)
    event(f"events: {min(len(events), 2)}, chunks: {len(chunks)}, extra fields: {len(kinds)}")
    if not len(events):
        return  # coffea builds no events from an empty tree
    nano = NanoEventsFactory.from_root(
        {str(path): "events"}, schemaclass=CaloSchema, mode="eager"
    ).events()
    assert "nhit" not in nano.fields
    assert sorted(nano.hits.fields) == sorted(chunks[0].hit.fields)
    _assert_same(nano, nano.hits, chunks)
    extra_hits = [name for name, kind in kinds.items() if kind == "hit"]
    for name in extra_hits:  # undocumented hit fields join the collection too
        assert name in nano.hits.fields


# --------------------------------------------------------------------------- read-out

N_PIXELS = st.floats(100.0, 20_000.0)  # SiPM pixels (conditions clip at 100)
OCCUPANCY = st.floats(0.5, 0.99)  # Electronics.desaturation_occupancy is in (0, 1)


@PROPERTY
@given(N_PIXELS, OCCUPANCY, st.lists(st.floats(0.0, 1.0), min_size=1, max_size=20))
def test_desaturation_inverts_saturation_below_the_occupancy(
    n_pixels: float, occupancy: float, fractions: list[float]
) -> None:
    """For every mean p.e. whose mean fired fraction is at most the occupancy."""
    limit = -n_pixels * math.log1p(-occupancy)  # n_pe where the fired fraction is occupancy
    n_pe = np.array(fractions) * limit
    fired = saturation(n_pe, np.full(n_pe.size, n_pixels))
    keep = fired / n_pixels <= occupancy  # the last ulp of the limit may round above
    back = desaturation(fired[keep], np.full(keep.sum(), n_pixels), occupancy)
    np.testing.assert_allclose(back, n_pe[keep], rtol=1e-9, atol=1e-300)


@PROPERTY
@given(N_PIXELS, OCCUPANCY)
def test_desaturation_is_continuous_and_monotonic_at_the_switch(
    n_pixels: float, occupancy: float
) -> None:
    switch = occupancy * n_pixels
    # 64 representable values on either side of the switch, and a wide sweep over it
    around = switch + np.arange(-64, 65) * np.spacing(switch)
    sweep = np.linspace(0.0, 2.0 * n_pixels, 2001)
    for fired in (around, np.sort(np.concatenate([sweep, around]))):
        value = desaturation(fired, np.full(fired.size, n_pixels), occupancy)
        assert np.all(np.isfinite(value))
        assert np.all(np.diff(value) >= 0), "desaturation decreases somewhere"
    # continuity: neighbouring values differ by no more than the largest slope 1/(1-r)
    # times their distance, plus rounding (an ulp of N_fired / N_pix costs the same slope)
    value = desaturation(around, np.full(around.size, n_pixels), occupancy)
    slope = 1.0 / (1.0 - occupancy)
    rounding = 4 * slope * np.spacing(switch) + 8 * np.spacing(value[1:])
    jumps = np.abs(np.diff(value)) - slope * np.diff(around)
    assert np.all(jumps <= rounding), "desaturation jumps at the switch"
    below = -n_pixels * math.log1p(-occupancy)
    assert value[64] == pytest.approx(below, rel=1e-12)


@PROPERTY
@given(
    st.lists(st.floats(0.0, 4e5), min_size=1, max_size=20),  # amplitude [ADC]
    st.floats(0.0, 0.2),  # a
    st.floats(0.5, 1.5),  # b
    st.floats(1e4, 2e5),  # scale [ADC]
)
def test_inverse_nonlinearity_inverts_nonlinearity(
    amplitude: list[float], a: float, b: float, scale: float
) -> None:
    x = np.array(amplitude)
    av, bv = np.full(x.size, a), np.full(x.size, b)
    y = nonlinearity(x, av, bv, scale)
    np.testing.assert_allclose(inverse_nonlinearity(y, av, bv, scale), x, rtol=1e-9, atol=1e-300)
    # and the other way round, below the asymptote b scale / a
    assert np.all(y < b * scale / a) if a > 0 else True
    np.testing.assert_allclose(
        nonlinearity(inverse_nonlinearity(y, av, bv, scale), av, bv, scale),
        y,
        rtol=1e-9,
        atol=1e-300,
    )


# --------------------------------------------------------------------------- constants

#: Any finite float (tables refuse NaN and infinities), subnormals and -0 included.
FINITE = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def constants(draw: st.DrawFn) -> Constants:
    """Constants for a random built-in geometry: a few per-cell tables over random cells
    in random order, a per-layer table over random layers, random values and provenance."""
    name = draw(st.sampled_from(GEOMETRIES))
    geometry = get_geometry(name)
    tables = {}
    for k in range(draw(st.integers(1, 3))):
        cells = draw(
            st.lists(st.integers(0, geometry.n_cells - 1), min_size=1, max_size=30, unique=True)
        )
        keys = geometry.cellids()[cells].astype(np.int64)
        values = np.array(draw(st.lists(FINITE, min_size=keys.size, max_size=keys.size)))
        errors = np.array(draw(st.lists(FINITE, min_size=keys.size, max_size=keys.size)))
        tables[f"cell_{k}"] = Table(
            "cell", keys, values, errors, draw(st.sampled_from(["1", "ADC"]))
        )
    layers = draw(st.lists(st.integers(0, geometry.n_layers - 1), min_size=1, unique=True))
    tables["per_layer"] = Table(
        "layer",
        np.array(layers, np.int64),
        np.array(draw(st.lists(FINITE, min_size=len(layers), max_size=len(layers)))),
        np.array(draw(st.lists(FINITE, min_size=len(layers), max_size=len(layers)))),
        "MeV",
    )
    provenance = Provenance(
        method=draw(st.sampled_from(["nominal", "mip", "design+mip"])),
        geometry=name,
        geometry_hash=geometry.hash,
        sample=draw(st.text(max_size=10)),
        fit_quality={"chi2": draw(FINITE), "converged": draw(st.booleans())},
        settings={"adc_max": draw(FINITE)},
    )
    return Constants(tables, provenance)


def _by_key(table: Table) -> dict[int, tuple[int, int]]:
    """key -> (value bits, uncertainty bits): -0.0 and 0.0 differ, order does not matter."""
    bits = table.values.view(np.uint64).tolist(), table.uncertainties.view(np.uint64).tolist()
    return dict(zip(table.keys.tolist(), zip(*bits, strict=True), strict=True))


@settings(PROPERTY, max_examples=50)
@given(constants())
def test_constants_save_load_round_trip(
    tmp_path_factory: pytest.TempPathFactory, original: Constants
) -> None:
    path = tmp_path_factory.mktemp("constants") / "c.json"
    original.save(path)
    loaded = load_constants(path)
    assert loaded.provenance == original.provenance
    assert list(loaded.tables) == list(original.tables)
    for name, table in original.tables.items():
        back = loaded.tables[name]
        assert (back.binning, back.unit) == (table.binning, table.unit), name
        assert back.keys.dtype == np.int64 and back.values.dtype == np.float64
        assert _by_key(back) == _by_key(table), name


def test_nominal_constants_round_trip_in_order(tmp_path: Path) -> None:
    """Full per-cell tables of a geometry with random values come back in the same order."""
    from calocoffea.conditions import nominal
    from calocoffea.constants import nominal_constants

    base = nominal_constants(nominal("cepc_ahcal"))
    rng = np.random.default_rng(7)
    tables = {
        name: Table(
            t.binning,
            t.keys,
            rng.normal(0.0, 1e3, t.keys.size),
            rng.exponential(1.0, t.keys.size),
            t.unit,
        )
        for name, t in base.tables.items()
    }
    original = Constants(tables, base.provenance)
    loaded = load_constants(original.save(tmp_path / "nominal.json"))
    for name, table in original.tables.items():
        back = loaded.tables[name]
        np.testing.assert_array_equal(back.keys, table.keys)
        np.testing.assert_array_equal(back.values, table.values)
        np.testing.assert_array_equal(back.uncertainties, table.uncertainties)
