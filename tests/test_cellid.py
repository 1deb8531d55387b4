"""The DD4hep/LCIO cell-ID bitfield codec: parsing, round trips (property-based), errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from calocoffea.cellid import BitField, BitFieldCoder
from calocoffea.exceptions import CellIDEncodingError

CEPC = "system:0:5,side:5:-2,module:7:8,stave:15:4,layer:19:9,submodule:28:4,x:32:-16,y:48:-16"


def reference_decode(cellid: int, field: BitField) -> int:
    """One field of one id with Python ints: the oracle for the vectorised decode."""
    value = (cellid >> field.offset) & field.mask
    if field.signed and value >> (field.width - 1):
        value -= 1 << field.width
    return value


def as_array(values: list[int], field: BitField) -> np.ndarray:
    """Field values as an integer array (uint64 where int64 cannot hold them)."""
    return np.array(values, dtype=np.uint64 if field.maximum >= 2**63 else np.int64)


def covered_bits(coder: BitFieldCoder) -> int:
    return sum(f.mask << f.offset for f in coder.fields)


# --- random layouts -----------------------------------------------------------------------


@st.composite
def layouts(draw: st.DrawFn) -> tuple[str, list[BitField]]:
    """An encoding string and the fields it should parse to: random widths (1..64) and
    signedness at increasing offsets with random gaps, written with explicit or implicit
    offsets and random spaces."""
    fields: list[BitField] = []
    tokens: list[str] = []
    end = 0  # where the previous field ends: the offset an implicit token gets
    for k in range(draw(st.integers(1, 8))):
        if end == 64:
            break
        gap = draw(st.integers(0, min(4, 63 - end)))
        room = 64 - end - gap
        # "or all the room left" makes 64- and 63-bit fields (after a 1-bit gap) common
        width = draw(st.integers(1, room) | st.just(room))
        field = BitField(f"f{k}", end + gap, width, draw(st.booleans()))
        signed_width = -width if field.signed else width
        space = draw(st.sampled_from(["", " ", "  "]))
        if gap == 0 and draw(st.booleans()):
            tokens.append(f"{space}{field.name}{space}:{space}{signed_width}{space}")
        else:
            tokens.append(f"{space}{field.name}:{space}{field.offset}{space}:{signed_width}")
        fields.append(field)
        end = field.offset + width
    return ",".join(tokens), fields


@st.composite
def layouts_and_values(draw: st.DrawFn) -> tuple[str, list[BitField], dict[str, list[int]]]:
    encoding, fields = draw(layouts())
    size = draw(st.integers(0, 4))
    values = {
        f.name: draw(st.lists(st.integers(f.minimum, f.maximum), min_size=size, max_size=size))
        for f in fields
    }
    return encoding, fields, values


EDGES = [
    ("w:64", [BitField("w", 0, 64, False)], {"w": [0, 1, 2**63, 2**64 - 1]}),
    ("w:-64", [BitField("w", 0, 64, True)], {"w": [-(2**63), -1, 0, 2**63 - 1]}),
    (
        "a:1,b:-63",
        [BitField("a", 0, 1, False), BitField("b", 1, 63, True)],
        {"a": [0, 1, 1], "b": [-(2**62), 2**62 - 1, -1]},
    ),
    (
        "a:-1,b:1:63",
        [BitField("a", 0, 1, True), BitField("b", 1, 63, False)],
        {"a": [0, -1, -1], "b": [0, 2**63 - 1, 1]},
    ),
    ("t:63:-1", [BitField("t", 63, 1, True)], {"t": [-1, 0]}),
]


@settings(derandomize=True, max_examples=500, deadline=None)
@given(layouts_and_values())
@example(EDGES[0])
@example(EDGES[1])
@example(EDGES[2])
@example(EDGES[3])
@example(EDGES[4])
def test_encode_then_decode_gives_the_values(
    case: tuple[str, list[BitField], dict[str, list[int]]],
) -> None:
    encoding, fields, values = case
    coder = BitFieldCoder.parse(encoding)
    assert coder.fields == tuple(fields)
    assert BitFieldCoder.parse(str(coder)) == coder
    ids = coder.encode({f.name: as_array(values[f.name], f) for f in fields})
    assert ids.dtype == np.uint64
    for field in fields:
        decoded = coder.decode(ids, field.name)
        assert decoded.dtype == np.int64
        assert decoded.shape == ids.shape
        if field.maximum >= 2**63:  # a 64-bit unsigned field decodes to its int64 bits
            decoded = decoded.view(np.uint64)
        assert decoded.tolist() == values[field.name]
    # the fields land where the reference says
    for i, cellid in enumerate(ids.tolist()):
        for field in fields:
            assert reference_decode(cellid, field) == values[field.name][i]


@settings(derandomize=True, max_examples=500, deadline=None)
@given(layouts(), st.lists(st.integers(0, 2**64 - 1), max_size=6))
@example(("w:64", []), [0, 2**64 - 1, 2**63])
@example(("w:-64", []), [0, 2**64 - 1, 2**63])
@example(("a:1,b:-63", []), [2**64 - 1, 2**63, 1])
@example(("g:0:-1,h:1:63", []), [2**64 - 1, 2**63 + 8, 1])
@example(("g:3:-1,h:10:54", []), [2**64 - 1, 2**63 + 8, 1])
def test_decode_then_encode_keeps_the_covered_bits(
    layout: tuple[str, list[BitField]], raw: list[int]
) -> None:
    coder = BitFieldCoder.parse(layout[0])
    ids = np.array(raw, dtype=np.uint64)
    decoded = coder.decode_all(ids)
    assert list(decoded) == list(coder.names)
    for field in coder.fields:
        assert decoded[field.name].tolist() == [
            reference_decode(c, field) - (2**64 if reference_decode(c, field) >= 2**63 else 0)
            for c in raw
        ]
    np.testing.assert_array_equal(coder.encode(decoded), ids & np.uint64(covered_bits(coder)))
    # int64 ids (the same bits) decode the same
    for name, value in coder.decode_all(ids.view(np.int64)).items():
        np.testing.assert_array_equal(value, decoded[name])


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("width", range(1, 65))
def test_every_width_at_both_edges_and_inside(width: int, signed: bool) -> None:
    """Extremes, 0 and -1 survive a round trip at every width, at offset 0, at the top and in
    the middle of the id, with the other bits set."""
    for offset in sorted({0, 64 - width, (64 - width) // 2}):
        field = BitField("v", offset, width, signed)
        coder = BitFieldCoder([field])
        values = sorted({field.minimum, field.maximum, 0, -1 if signed else 1})
        ids = coder.encode(v=as_array(values, field))
        noise = np.uint64(((1 << 64) - 1) ^ (field.mask << offset))
        decoded = coder.decode(ids | noise, "v")
        expected = as_array(values, field).astype(np.uint64).view(np.int64)
        np.testing.assert_array_equal(decoded, expected)
        np.testing.assert_array_equal(coder.encode(v=decoded), ids)


# --- the CEPC AHCAL example ---------------------------------------------------------------


def test_cepc_fields() -> None:
    coder = BitFieldCoder.parse(CEPC)
    assert coder.names == ("system", "side", "module", "stave", "layer", "submodule", "x", "y")
    assert coder["layer"] == BitField("layer", 19, 9, False)
    assert coder["x"] == BitField("x", 32, 16, True)
    assert (coder["x"].minimum, coder["x"].maximum, coder["x"].mask) == (-32768, 32767, 0xFFFF)
    assert (coder["layer"].minimum, coder["layer"].maximum) == (0, 511)
    assert "layer" in coder and "energy" not in coder
    assert str(coder) == CEPC
    assert BitFieldCoder.parse(str(coder)) == coder
    assert hash(BitFieldCoder.parse(CEPC)) == hash(coder)
    assert eval(repr(coder), {"BitFieldCoder": BitFieldCoder}) == coder


def test_cepc_known_values() -> None:
    coder = BitFieldCoder.parse(CEPC)
    ids = coder.encode(system=20, layer=37, x=-9, y=8)
    expected = 20 | 37 << 19 | (2**16 - 9) << 32 | 8 << 48
    assert int(ids) == expected
    decoded = coder.decode_all(ids)
    assert {k: int(v) for k, v in decoded.items()} == {
        "system": 20, "side": 0, "module": 0, "stave": 0,
        "layer": 37, "submodule": 0, "x": -9, "y": 8,
    }  # fmt: skip
    assert int(coder.decode(expected, "x")) == -9
    assert int(coder.decode(np.int64(expected), "y")) == 8


def test_cepc_arrays_broadcast() -> None:
    coder = BitFieldCoder.parse(CEPC)
    ids = coder.encode({"layer": np.arange(3)}, x=[[-1], [1]], side=-2)
    assert ids.shape == (2, 3)
    np.testing.assert_array_equal(coder.decode(ids, "layer"), [[0, 1, 2], [0, 1, 2]])
    np.testing.assert_array_equal(coder.decode(ids, "x"), [[-1, -1, -1], [1, 1, 1]])
    np.testing.assert_array_equal(coder.decode(ids, "side"), np.full((2, 3), -2))
    np.testing.assert_array_equal(coder.decode(ids, "y"), np.zeros((2, 3)))


def test_implicit_offsets_and_whitespace() -> None:
    coder = BitFieldCoder.parse("a:3,b:-4,c:8")
    assert [(f.offset, f.width, f.signed) for f in coder.fields] == [
        (0, 3, False),
        (3, 4, True),
        (7, 8, False),
    ]
    assert str(coder) == "a:0:3,b:3:-4,c:7:8"
    spaced = BitFieldCoder.parse("  a : 3 ,b:-4 , c:7: 8 , d:20:+2,e:2")
    assert [f.offset for f in spaced.fields] == [0, 3, 7, 20, 22]
    assert str(spaced) == "a:0:3,b:3:-4,c:7:8,d:20:2,e:22:2"


def test_gaps_are_zero_and_ignored() -> None:
    coder = BitFieldCoder.parse("a:2:3,b:40:-4")
    assert int(coder.encode(a=7, b=-1)) == 7 << 2 | 0xF << 40
    assert int(coder.decode(2**64 - 1, "a")) == 7
    assert int(coder.decode(2**64 - 1, "b")) == -1


# --- inputs -------------------------------------------------------------------------------


def test_python_int_and_zero_d_inputs() -> None:
    coder = BitFieldCoder.parse("a:8,b:-8")
    for cellid in (0xFF80, np.uint64(0xFF80), np.int64(0xFF80), np.array(0xFF80, np.uint64)):
        a, b = coder.decode(cellid, "a"), coder.decode(cellid, "b")
        assert a.shape == b.shape == ()
        assert (int(a), int(b)) == (0x80, -1)
    ids = coder.encode(a=np.array(5), b=-3)
    assert ids.shape == () and ids.dtype == np.uint64
    assert int(ids) == 5 | 0xFD << 8
    assert coder.encode().shape == () and int(coder.encode()) == 0


def test_negative_python_int_and_int64_ids_are_bits() -> None:
    coder = BitFieldCoder.parse("lo:0:8,hi:56:-8")
    assert int(coder.decode(-1, "lo")) == 255
    assert int(coder.decode(-1, "hi")) == -1
    ids = np.array([-1, -(2**63), 2**63 - 1], dtype=np.int64)
    np.testing.assert_array_equal(coder.decode(ids, "hi"), [-1, -128, 127])
    np.testing.assert_array_equal(coder.decode(ids, "lo"), [255, 0, 255])


def test_narrow_signed_ids_are_zero_extended() -> None:
    """An int32 id (LCIO's cellID0) is 32 bits: -1 sets the low 32 bits, not all 64."""
    coder = BitFieldCoder.parse("lo:0:32,hi:32:32")
    ids = np.array([-1, 5], dtype=np.int32)
    np.testing.assert_array_equal(coder.decode(ids, "lo"), [2**32 - 1, 5])
    np.testing.assert_array_equal(coder.decode(ids, "hi"), [0, 0])
    np.testing.assert_array_equal(coder.decode(np.array([7], np.uint8), "lo"), [7])
    np.testing.assert_array_equal(coder.decode(np.array([2], ">i8"), "lo"), [2])


def test_empty_and_multidimensional_arrays() -> None:
    coder = BitFieldCoder.parse(CEPC)
    for shape in [(0,), (0, 3), (2, 0)]:
        empty = np.zeros(shape, np.uint64)
        decoded = coder.decode_all(empty)
        assert all(v.shape == shape and v.dtype == np.int64 for v in decoded.values())
        assert coder.encode(decoded).shape == shape
    assert coder.encode(layer=[]).shape == (0,)  # an empty list is float64 to numpy
    assert coder.decode([], "x").shape == (0,)
    ids = coder.encode(x=np.arange(-6, 6).reshape(3, 4))
    assert coder.decode(ids, "x").shape == (3, 4)
    assert coder.decode(ids.T, "x").tolist() == np.arange(-6, 6).reshape(3, 4).T.tolist()


def test_decode_leaves_the_ids_alone() -> None:
    coder = BitFieldCoder.parse("a:0:8,b:8:-48,c:56:8")
    ids = np.array([2**64 - 1, 12345, 2**63], dtype=np.uint64)
    before = ids.copy()
    for name in coder.names:
        result = coder.decode(ids, name)
        assert not np.shares_memory(result, ids)
    whole = BitFieldCoder.parse("w:64")
    assert not np.shares_memory(whole.decode(ids, "w"), ids)
    np.testing.assert_array_equal(ids, before)


def test_values_mapping_and_keywords() -> None:
    coder = BitFieldCoder.parse("values:8,self:8,n:8")
    ids = coder.encode({"values": 1, "self": 2}, n=3)
    assert int(ids) == 1 | 2 << 8 | 3 << 16
    with pytest.raises(CellIDEncodingError, match=r"'n' is given both"):
        coder.encode({"n": 1}, n=1)


def test_unsigned_64_bit_field_takes_int64_bits() -> None:
    coder = BitFieldCoder.parse("w:64")
    assert int(coder.encode(w=-1)) == 2**64 - 1
    assert int(coder.encode(w=2**64 - 1)) == 2**64 - 1
    assert int(coder.decode(2**64 - 1, "w")) == -1


def test_bool_values_encode_as_bits() -> None:
    coder = BitFieldCoder.parse("flag:1,rest:7")
    np.testing.assert_array_equal(coder.encode(flag=[True, False]), [1, 0])


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "match"),
    [
        ("layer", r"'layer'.*missing width.*name:offset:width or name:width"),
        ("a:3,layer", r"token 'layer': missing width"),
        ("a:3:4:5", r"too many ':'"),
        ("a:x", r"'x' is not an integer.*e\.g\. layer:19:9"),
        ("a:1.5", r"'1\.5' is not an integer"),
        ("a:3:", r"'' is not an integer"),
        ("a:1_0", r"'1_0' is not an integer"),
        (":3", r"token ':3': empty name"),
        (" :0:3", r"empty name"),
        ("1a:3", r"name '1a' is not an identifier"),
        ("a-b:3", r"not an identifier"),
        ("a:3,a:4", r"duplicate name 'a'"),
        ("a:0", r"width 0 is not 1\.\.64"),
        ("a:65", r"width 65 is not 1\.\.64"),
        ("a:-65", r"width -65 is not 1\.\.64"),
        ("a:-1:3", r"negative offset -1"),
        ("a:60:5", r"'a:60:5'.*beyond bit 63.*bits 60\.\.64"),
        ("a:60,b:5", r"field 'b:60:5'.*beyond bit 63"),
        ("a:0:8,b:4:8", r"'a' \(a:0:8\) and 'b' \(b:4:8\) overlap in bits 4\.\.7.*disjoint"),
        ("a:10:-8,b:0:64", r"'a'.*'b'.*overlap in bits 10\.\.17"),
        ("a:0:4,b:20:4,c:2:30", r"'a'.*'c'.*overlap in bits 2\.\.3"),
        ("a:3,", r"empty token.*remove the extra comma"),
        ("a:3,,b:2", r"empty token"),
        ("", r"has no fields"),
        ("  ", r"has no fields"),
    ],
)
def test_bad_encodings(encoding: str, match: str) -> None:
    with pytest.raises(CellIDEncodingError, match=match) as info:
        BitFieldCoder.parse(encoding)
    assert repr(encoding) in str(info.value)  # the message quotes the string
    assert isinstance(info.value, ValueError)


def test_encoding_must_be_a_string() -> None:
    with pytest.raises(CellIDEncodingError, match=r"must be a string, got int"):
        BitFieldCoder.parse(5)  # type: ignore[arg-type]


def test_fields_built_directly_are_checked() -> None:
    with pytest.raises(CellIDEncodingError, match=r"overlap in bits 3\.\.3"):
        BitFieldCoder([BitField("a", 0, 4, False), BitField("b", 3, 2, True)])
    with pytest.raises(CellIDEncodingError, match=r"width must be 1\.\.64"):
        BitFieldCoder([BitField("a", 0, 0, False)])
    with pytest.raises(CellIDEncodingError, match=r"has no fields"):
        BitFieldCoder([])


def test_unknown_field() -> None:
    coder = BitFieldCoder.parse(CEPC)
    known = r"known fields: system, side, module, stave, layer, submodule, x, y"
    with pytest.raises(CellIDEncodingError, match=rf"no field 'energy'; {known}"):
        coder["energy"]
    with pytest.raises(CellIDEncodingError, match=rf"no field 'energy'; {known}"):
        coder.decode(0, "energy")
    with pytest.raises(CellIDEncodingError, match=rf"no field 'Layer'; {known}"):
        coder.encode(Layer=1)
    with pytest.raises(CellIDEncodingError, match=r"no field 'e'"):
        coder.encode({"e": 1})


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"layer": 512}, r"value 512 of field 'layer' is outside its range \[0, 511\] \(9-bit"),
        ({"layer": -1}, r"value -1 of field 'layer'.*\[0, 511\]"),
        ({"x": [0, 32768, -32769]}, r"value 32768 of field 'x' \(and 1 more\).*\[-32768, 32767\]"),
        ({"x": np.array([2**64 - 1], np.uint64)}, r"value 18446744073709551615 of field 'x'"),
        ({"side": -3}, r"value -3 of field 'side'.*\[-2, 1\] \(2-bit signed\)"),
        ({"y": 2**70}, r"value 1180591620717411303424 of field 'y'"),
        ({"y": -(2**70)}, r"value -1180591620717411303424 of field 'y'"),
    ],
)
def test_values_out_of_range(values: dict[str, object], match: str) -> None:
    coder = BitFieldCoder.parse(CEPC)
    with pytest.raises(CellIDEncodingError, match=match) as info:
        coder.encode(values)  # type: ignore[arg-type]
    assert "widen the field" in str(info.value)
    assert CEPC in str(info.value)


def test_wide_fields_check_their_range() -> None:
    unsigned63 = BitFieldCoder.parse("u:63")
    with pytest.raises(CellIDEncodingError, match=r"value -1 of field 'u'"):
        unsigned63.encode(u=-1)
    with pytest.raises(CellIDEncodingError, match=r"value 9223372036854775808 of field 'u'"):
        unsigned63.encode(u=2**63)
    signed64 = BitFieldCoder.parse("s:-64")
    with pytest.raises(CellIDEncodingError, match=r"value 9223372036854775808 of field 's'"):
        signed64.encode(s=2**63)
    assert int(signed64.encode(s=-(2**63))) == 2**63


def test_non_integer_inputs() -> None:
    coder = BitFieldCoder.parse(CEPC)
    with pytest.raises(CellIDEncodingError, match=r"cell IDs must be integers.*float64"):
        coder.decode(np.array([1.0, 2.0]), "x")
    with pytest.raises(CellIDEncodingError, match=r"cell IDs must be integers"):
        coder.decode_all([1.5])
    with pytest.raises(CellIDEncodingError, match=r"cell IDs must be integers.*object"):
        coder.decode(2**64, "x")
    with pytest.raises(CellIDEncodingError, match=r"cell IDs must be integers.*bool"):
        coder.decode(np.array([True]), "x")
    with pytest.raises(CellIDEncodingError, match=r"field 'x' must be integers.*float64"):
        coder.encode(x=[1.0])
    with pytest.raises(CellIDEncodingError, match=r"field 'x' must be integers"):
        coder.encode(x=np.array(["a"], dtype=object))
