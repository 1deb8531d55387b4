"""DD4hep/LCIO cell-ID bit fields: parse an encoding string, decode and encode 64-bit ids.

DD4hep and LCIO pack the fields of a calorimeter cell ID (system, layer, x, y, ...) into one
64-bit integer and describe the packing with an *encoding string*: comma-separated tokens

- ``name:offset:width`` -- the field starts at bit ``offset`` (bit 0 is the least significant),
- ``name:width`` -- the field starts where the previous token's field ends (previous offset +
  |previous width|; the first field starts at bit 0).

Whitespace around tokens and colons is allowed. Fields must not overlap and must fit in 64
bits (offset + |width| <= 64, 1 <= |width| <= 64); names are unique identifiers. Bits that no
field covers are zero when encoding and ignored when decoding.

Sign convention: a negative width declares a *signed* field, stored in two's complement in
|width| bits, so ``x:32:-16`` holds -32768..32767; a positive width an unsigned one
(0..2**width - 1). Decoded values are int64. The one value range int64 cannot hold is that
of an unsigned 64-bit field (a field that is the whole id): its values >= 2**63 decode to
their two's-complement int64 bits (``.view(np.uint64)`` reads them back), and ``encode``
takes signed integers for it as such bits, so that encode(decode_all(ids)) == ids always.

Example, the CEPC AHCAL encoding::

    >>> coder = BitFieldCoder.parse(
    ...     "system:0:5,side:5:-2,module:7:8,stave:15:4,layer:19:9,submodule:28:4,"
    ...     "x:32:-16,y:48:-16"
    ... )
    >>> ids = coder.encode(system=20, layer=37, x=[-9, 3], y=8)
    >>> coder.decode(ids, "x")
    array([-9,  3])
    >>> int(coder.decode(ids, "layer")[0])
    37

Decoding one field of a uint64 array takes two numpy passes (shift the field to the top bits,
then shift it back down, logically or arithmetically); int64 ids are viewed as uint64 without
a copy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from calocoffea.exceptions import CellIDEncodingError

__all__ = ["BitField", "BitFieldCoder"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_SYNTAX_HINT = "write fields as name:offset:width or name:width, e.g. layer:19:9 or x:32:-16"


@dataclass(frozen=True)
class BitField:
    """One field of a cell ID: ``width`` bits from bit ``offset``, two's complement if signed."""

    name: str
    offset: int
    width: int  # absolute width in bits
    signed: bool

    @property
    def mask(self) -> int:
        """The unshifted mask, ``(1 << width) - 1``."""
        return (1 << self.width) - 1

    @property
    def minimum(self) -> int:
        """The smallest value the field holds."""
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def maximum(self) -> int:
        """The largest value the field holds."""
        return (1 << (self.width - 1)) - 1 if self.signed else self.mask

    def __str__(self) -> str:
        return f"{self.name}:{self.offset}:{-self.width if self.signed else self.width}"

    def _range_text(self) -> str:
        kind = "signed" if self.signed else "unsigned"
        return f"[{self.minimum}, {self.maximum}] ({self.width}-bit {kind})"


class BitFieldCoder:
    """Decode and encode 64-bit cell IDs with the fields of a DD4hep/LCIO encoding string.

    Build one with :meth:`parse`. ``fields`` and ``names`` are in string order.
    """

    fields: tuple[BitField, ...]
    names: tuple[str, ...]

    def __init__(self, fields: Iterable[BitField], *, encoding: str | None = None) -> None:
        """Fields as given; ``encoding`` (the string they came from) is quoted in errors."""
        self.fields = tuple(fields)
        self.names = tuple(f.name for f in self.fields)
        self._by_name = {f.name: f for f in self.fields}
        _check_layout(self.fields, str(self) if encoding is None else encoding)

    @classmethod
    def parse(cls, encoding: str) -> BitFieldCoder:
        """The coder of an encoding string such as ``"system:0:5,layer:5:9,x:14:-16"``."""
        if not isinstance(encoding, str):
            raise CellIDEncodingError(
                f"a cell-ID encoding must be a string, got {type(encoding).__name__}; "
                f"{_SYNTAX_HINT}"
            )
        if not encoding.strip():
            raise CellIDEncodingError(
                f"cell-ID encoding {encoding!r} has no fields; {_SYNTAX_HINT}"
            )
        fields: list[BitField] = []
        next_offset = 0
        for token in encoding.split(","):
            field = _parse_token(token, next_offset, encoding)
            fields.append(field)
            next_offset = field.offset + field.width
        return cls(fields, encoding=encoding)

    def __getitem__(self, name: str) -> BitField:
        try:
            return self._by_name[name]
        except KeyError:
            raise CellIDEncodingError(self._unknown(name)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self.fields)

    def __str__(self) -> str:
        """The canonical encoding string, every field as ``name:offset:width``."""
        return ",".join(str(f) for f in self.fields)

    def __repr__(self) -> str:
        return f"BitFieldCoder.parse({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BitFieldCoder):
            return NotImplemented
        return self.fields == other.fields

    def __hash__(self) -> int:
        return hash(self.fields)

    def decode(self, ids: npt.ArrayLike, name: str) -> npt.NDArray[np.int64]:
        """The values of field ``name`` in ``ids`` (int64, the shape of ``ids``).

        ``ids``: an integer array or Python int; signed integers are read as their bits
        (an int64 array is viewed as uint64, without a copy).
        """
        return _decode_field(self._ids(ids), self[name])

    def decode_all(self, ids: npt.ArrayLike) -> dict[str, npt.NDArray[np.int64]]:
        """Every field of ``ids``, by name in string order."""
        bits = self._ids(ids)
        return {f.name: _decode_field(bits, f) for f in self.fields}

    def encode(
        self, values: Mapping[str, npt.ArrayLike] | None = None, **fields: npt.ArrayLike
    ) -> npt.NDArray[np.uint64]:
        """uint64 cell IDs with the given field values (a mapping and/or keywords).

        Fields not given are 0; values broadcast against each other. A field whose name is
        not a valid keyword here (``values``, ``self``) can be given in the mapping.
        """
        given = dict(values or {})
        twice = sorted(fields.keys() & given.keys())
        if twice:
            raise CellIDEncodingError(
                f"cell-ID encoding {str(self)!r}: field {twice[0]!r} is given both in the "
                "mapping and as a keyword; give it once"
            )
        given.update(fields)
        for name in given:
            if name not in self._by_name:
                raise CellIDEncodingError(self._unknown(name))
        arrays = {name: self._values(self._by_name[name], v) for name, v in given.items()}
        out = np.zeros(np.broadcast_shapes(*(a.shape for a in arrays.values())), np.uint64)
        for name, value in arrays.items():
            field = self._by_name[name]
            # Two's-complement bits of the value, cut to the field width, moved into place.
            bits = value.view(np.uint64) & np.uint64(field.mask)
            bits <<= np.uint64(field.offset)
            out |= bits
        return out

    def _unknown(self, name: str) -> str:
        return (
            f"cell-ID encoding {str(self)!r} has no field {name!r}; "
            f"known fields: {', '.join(self.names)}"
        )

    def _ids(self, ids: npt.ArrayLike) -> npt.NDArray[np.uint64]:
        """``ids`` as a uint64 array of the same bits (a view where the dtype allows)."""
        try:
            array = np.asarray(ids)
        except OverflowError as err:  # pragma: no cover - numpy versions differ here
            raise CellIDEncodingError(f"cell IDs must fit in 64 bits: {err}") from None
        if array.size == 0 and array.dtype.kind == "f":  # np.asarray([]) is float64
            array = array.astype(np.uint64)
        if array.dtype.kind not in "iu":
            raise CellIDEncodingError(
                f"cell IDs must be integers (uint64 or int64), got dtype {array.dtype} "
                f"for encoding {str(self)!r}; convert them with .astype(np.uint64) if they "
                "hold whole numbers (Python ints beyond 64 bits become dtype object)"
            )
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        if array.dtype.kind == "i":  # read signed ids as their bits (int32 -1 is 0xFFFFFFFF)
            array = array.view(f"u{array.dtype.itemsize}")
        return array.astype(np.uint64, copy=False)  # no copy for uint64 (or viewed int64)

    def _values(self, field: BitField, value: npt.ArrayLike) -> npt.NDArray[Any]:
        """``value`` as an int64 or uint64 array, checked against the field's range."""
        array = np.asarray(value)
        if array.size == 0 and array.dtype.kind == "f":  # np.asarray([]) is float64
            array = array.astype(np.int64)
        if array.dtype.kind == "O":
            array = _small_ints(field, array, self)
        if array.dtype.kind == "b":
            array = array.astype(np.uint64)
        if array.dtype.kind not in "iu":
            raise CellIDEncodingError(
                f"cell-ID encoding {str(self)!r}: values of field {field.name!r} must be "
                f"integers, got dtype {array.dtype}; pass an integer array"
            )
        if array.dtype.kind == "u":
            array = array.astype(np.uint64, copy=False)
            bad = array > np.uint64(field.maximum) if field.maximum < 2**64 - 1 else None
        else:
            array = array.astype(np.int64, copy=False)
            if not field.signed and field.width == 64:
                bad = None  # int64 values are taken as the bits (see the module docstring)
            elif field.maximum >= 2**63 - 1:
                bad = array < field.minimum
            else:
                bad = (array < field.minimum) | (array > field.maximum)
        if bad is not None and bad.any():
            _raise_out_of_range(field, array[bad], self)
        return array


def _parse_token(token: str, next_offset: int, encoding: str) -> BitField:
    """One ``name:offset:width`` or ``name:width`` token; ``next_offset`` for the latter."""
    where = f"cell-ID encoding {encoding!r}, token {token.strip()!r}"
    parts = [p.strip() for p in token.split(":")]
    if parts == [""]:
        raise CellIDEncodingError(
            f"cell-ID encoding {encoding!r} has an empty token (two commas in a row or a "
            f"comma at an end); remove the extra comma. {_SYNTAX_HINT}"
        )
    if len(parts) == 1:
        raise CellIDEncodingError(f"{where}: missing width; {_SYNTAX_HINT}")
    if len(parts) > 3:
        raise CellIDEncodingError(f"{where}: too many ':' ({len(parts) - 1}); {_SYNTAX_HINT}")
    name = parts[0]
    if not name:
        raise CellIDEncodingError(f"{where}: empty name; {_SYNTAX_HINT}")
    if not _NAME.fullmatch(name):
        raise CellIDEncodingError(
            f"{where}: name {name!r} is not an identifier; use letters, digits and _, "
            "not starting with a digit"
        )
    for part in parts[1:]:
        if not _INTEGER.fullmatch(part):
            raise CellIDEncodingError(
                f"{where}: {part!r} is not an integer; offsets and widths are whole numbers "
                f"(a negative width for a signed field); {_SYNTAX_HINT}"
            )
    offset = int(parts[1]) if len(parts) == 3 else next_offset
    width = int(parts[-1])
    if offset < 0:
        raise CellIDEncodingError(f"{where}: negative offset {offset}; bits count from 0")
    if width == 0 or abs(width) > 64:
        raise CellIDEncodingError(
            f"{where}: width {width} is not 1..64 bits in absolute value; give 1 to 64 "
            "(negative, -1 to -64, for a signed field)"
        )
    return BitField(name, offset, abs(width), width < 0)


def _check_layout(fields: tuple[BitField, ...], encoding: str) -> None:
    """Every field within bits 0..63, names unique, no two fields sharing a bit."""
    if not fields:
        raise CellIDEncodingError(f"cell-ID encoding {encoding!r} has no fields; {_SYNTAX_HINT}")
    seen: set[str] = set()
    for field in fields:
        where = f"cell-ID encoding {encoding!r}, field {str(field)!r}"
        if not _NAME.fullmatch(field.name):
            raise CellIDEncodingError(f"{where}: name {field.name!r} is not an identifier")
        if not 1 <= field.width <= 64 or field.offset < 0:
            raise CellIDEncodingError(f"{where}: width must be 1..64 and offset >= 0")
        end = field.offset + field.width
        if end > 64:
            raise CellIDEncodingError(
                f"{where}: field beyond bit 63 (it spans bits {field.offset}..{end - 1}); "
                "a cell ID has 64 bits, shrink the field or move it to a lower offset"
            )
        if field.name in seen:
            raise CellIDEncodingError(
                f"{where}: duplicate name {field.name!r}; every field needs its own name"
            )
        seen.add(field.name)
    for i, a in enumerate(fields):
        for b in fields[i + 1 :]:
            first = max(a.offset, b.offset)
            last = min(a.offset + a.width, b.offset + b.width) - 1
            if first <= last:
                raise CellIDEncodingError(
                    f"cell-ID encoding {encoding!r}: fields {a.name!r} ({a}) and {b.name!r} "
                    f"({b}) overlap in bits {first}..{last}; give them disjoint bit ranges "
                    "(with name:width the offset follows the previous field)"
                )


def _decode_field(ids: npt.NDArray[np.uint64], field: BitField) -> npt.NDArray[np.int64]:
    """Field values of uint64 ``ids`` in two numpy passes (one if the field is at an edge).

    The field is shifted to the top bits (dropping the bits above it), then back down by
    64 - width: a logical shift (uint64) fills with zeros, an arithmetic shift (int64) with
    copies of the sign bit, which sign-extends a two's-complement field. Shift amounts stay
    in 0..63 (shifting a 64-bit integer by 64 is undefined in C), and zero shifts are skipped.
    """
    if ids.ndim == 0:  # numpy ops on 0-d arrays return scalars, which in-place ops rebind
        return _decode_field(ids.reshape(1), field).reshape(())
    above = 64 - field.offset - field.width
    down = 64 - field.width
    if above:
        top = ids << np.uint64(above)  # the one new array; the shift down is in place
        if field.signed:
            signed = top.view(np.int64)
            signed >>= np.int64(down)
        else:
            top >>= np.uint64(down)
        return top.view(np.int64)
    if down:  # the field already reaches bit 63
        if field.signed:
            return ids.view(np.int64) >> np.int64(down)
        return (ids >> np.uint64(down)).view(np.int64)
    return ids.view(np.int64).copy()  # a 64-bit field is the whole id


def _small_ints(field: BitField, array: npt.NDArray[Any], coder: BitFieldCoder) -> npt.NDArray[Any]:
    """An object array of Python ints (numpy's type for ints beyond 64 bits) as int64/uint64."""
    flat = array.ravel().tolist()
    if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in flat):
        raise CellIDEncodingError(
            f"cell-ID encoding {str(coder)!r}: values of field {field.name!r} must be "
            "integers; pass an integer array"
        )
    bad = [v for v in flat if not field.minimum <= v <= field.maximum]
    if bad:
        _raise_out_of_range(field, np.array(bad, dtype=object), coder)
    return array.astype(np.int64 if field.maximum < 2**63 else np.uint64)


def _raise_out_of_range(field: BitField, bad: npt.NDArray[Any], coder: BitFieldCoder) -> None:
    count = f" (and {bad.size - 1} more)" if bad.size > 1 else ""
    raise CellIDEncodingError(
        f"cell-ID encoding {str(coder)!r}: value {bad.flat[0]} of field {field.name!r}{count} "
        f"is outside its range {field._range_text()}; clip or check the values, or widen the "
        f"field ({field} now)"
    )
