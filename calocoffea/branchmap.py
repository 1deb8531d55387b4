"""Flat ROOT ntuples read through a TOML branch map into calocoffea's event records.

What to use when:

- :meth:`BranchMap.load` reads a branch map (TOML) and checks it: keys, units, stage,
  required fields; :meth:`BranchMap.from_dict` does the same for a dict.
- :class:`MappedNtuple` opens a user's ntuple with a map and checks the tree and every
  branch; :meth:`MappedNtuple.chunks` yields native event records (scalars and a jagged
  ``hit`` field, the input of :func:`calocoffea.io.write_events`), converted to the native
  units and types; :meth:`MappedNtuple.metadata` and :attr:`MappedNtuple.identity` give the
  rest of what ``write_events`` needs::

      ntuple = MappedNtuple("testbeam.root", BranchMap.load("testbeam.toml"))
      write_events("events.root", ntuple.chunks(), ntuple.metadata(), identity=ntuple.identity)

The branch map (``examples/branchmap.toml`` is a documented example)::

    tree = "hits"          # TTree to read; default: the only TTree in the file
    stage = "sim"          # what the hit energies are: sim, raw, mip or gev (io.STAGES)
    geometry = "cepc_ahcal"  # optional: a registered geometry name

    [event]                # one value per entry
    event = "EventNumber"  # a branch name ...
    run = 7                # ... or a constant
    pdg = 11
    beam_energy = { branch = "BeamEnergy", unit = "MeV" }  # ... with the unit it holds
    # beam_energy = { value = 10, unit = "GeV" }           # a constant with a unit

    [hits]                 # one value per hit
    counter = "nHits"      # optional: the branch counting the hits of C-style arrays
    cellid = "CellID"
    layer = "K"
    x = { branch = "HitX", unit = "cm" }
    energy = { branch = "HitEnergy", unit = "GeV" }

Keys of ``[event]``: ``event``, ``run``, ``pdg``, ``beam_energy`` (required), ``beam_x``,
``beam_y``, ``edep_active``, ``fem`` and ``fem_<section>``. Keys of ``[hits]``:
``counter``, ``cellid``, ``layer``, ``x``, ``y``, ``z``, ``energy`` (required), ``i``, ``j``,
``time``, ``flags``, ``gain``, ``edep``, ``adc_lg``. Hit fields are branches (std::vector,
RVec or C-style arrays), never constants; ``flags`` is 0 where it is not mapped.

Units (a value without ``unit`` is in the native unit of its field): lengths ``um``, ``mm``,
``cm``, ``m`` (native mm); times ``ps``, ``ns``, ``us`` (native ns); energies ``eV``,
``keV``, ``MeV``, ``GeV`` (native GeV for ``beam_energy``, MeV for ``edep_active`` and
``edep``). The hit energy's unit follows the stage: an energy for ``sim`` (native MeV) and
``gev`` (native GeV), ``ADC`` for ``raw``, ``MIP`` for ``mip``. Without ``stage``, ``ADC``
means raw and ``MIP`` means mip; an energy unit needs ``stage`` (GeV may be a simulated
deposit or a calibrated energy). Values are converted, then cast to the types of
:data:`calocoffea.io.SCALAR_DTYPES` and :data:`calocoffea.io.HIT_DTYPES`; integers must fit.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot

from calocoffea.exceptions import BranchMapError, UnknownPluginError, did_you_mean
from calocoffea.io import (
    HIT_DTYPES,
    REQUIRED_HIT_FIELDS,
    REQUIRED_SCALARS,
    SCALAR_DTYPES,
    STAGES,
    FileMetadata,
    _open_file,
)

#: Producer recorded in the metadata of files converted through a branch map.
PRODUCER = "calocoffea branch map"

# ---------------------------------------------------------------------------- units

#: Units by quantity, each as its factor to the unit named in the comment.
_UNITS: dict[str, dict[str, float]] = {
    "length": {"um": 1e-3, "mm": 1.0, "cm": 10.0, "m": 1e3},  # in mm
    "time": {"ps": 1e-3, "ns": 1.0, "us": 1e3},  # in ns
    "energy": {"eV": 1e-6, "keV": 1e-3, "MeV": 1.0, "GeV": 1e3},  # in MeV
    "ADC counts": {"ADC": 1.0},
    "MIP": {"MIP": 1.0},
}
_QUANTITY_OF = {unit: quantity for quantity, units in _UNITS.items() for unit in units}

#: (quantity, native unit) of the fields that have a unit; the others are plain numbers.
_SCALAR_UNITS: dict[str, tuple[str, str]] = {
    "beam_energy": ("energy", "GeV"),
    "beam_x": ("length", "mm"),
    "beam_y": ("length", "mm"),
    "edep_active": ("energy", "MeV"),
}
_HIT_UNITS: dict[str, tuple[str, str]] = {
    "x": ("length", "mm"),
    "y": ("length", "mm"),
    "z": ("length", "mm"),
    "time": ("time", "ns"),
    "edep": ("energy", "MeV"),
    "adc_lg": ("ADC counts", "ADC"),
}
#: (quantity, native unit) of the hit energy at each stage.
_STAGE_ENERGY: dict[str, tuple[str, str]] = {
    "sim": ("energy", "MeV"),
    "raw": ("ADC counts", "ADC"),
    "mip": ("MIP", "MIP"),
    "gev": ("energy", "GeV"),
}

_TOP_KEYS = ("tree", "stage", "geometry", "event", "hits")
_EVENT_KEYS = tuple(SCALAR_DTYPES)  # and fem_<section>
_HIT_KEYS = ("counter", *HIT_DTYPES)
_FEM_SECTION_DTYPE = np.dtype(np.float32)


def _scalar_dtype(name: str) -> np.dtype:
    return SCALAR_DTYPES.get(name, _FEM_SECTION_DTYPE)


def _unit_hint(unit: str, quantity: str) -> str:
    """Why ``unit`` is wrong for ``quantity`` and which units are right."""
    valid = ", ".join(_UNITS[quantity])
    other = _QUANTITY_OF.get(unit)
    if other is not None:
        return f"{unit!r} is a unit of {other}, not of {quantity}; valid units: {valid}"
    exact = [u for u in _QUANTITY_OF if u.lower() == unit.lower()]
    hint = did_you_mean(unit, exact or _UNITS[quantity])
    return f"unknown unit {unit!r}{hint}; valid units of {quantity}: {valid}"


# ---------------------------------------------------------------------------- the map


@dataclass(frozen=True)
class Column:
    """One native field of the map: read from ``branch``, or the constant ``value``.

    ``unit`` is the unit the branch or constant holds (``None``: the native unit, or a
    plain number); values are multiplied by ``factor`` to reach ``native_unit``.
    """

    key: str  # "event.beam_energy", for messages
    name: str  # native field name
    branch: str | None = None
    value: int | float | None = None
    unit: str | None = None
    native_unit: str | None = None
    factor: float = 1.0

    def to_toml(self) -> Any:
        """The map entry as TOML would give it: a name, a number or a table."""
        if self.unit is None:
            return self.branch if self.branch is not None else self.value
        if self.branch is not None:
            return {"branch": self.branch, "unit": self.unit}
        return {"value": self.value, "unit": self.unit}

    def describe(self) -> str:
        """``unit -> native unit`` where values are converted, else ''."""
        if self.unit is None or self.native_unit is None:
            return ""
        if self.factor == 1.0:
            return self.unit
        return f"{self.unit} -> {self.native_unit}, x {self.factor:g}"


def _fail(where: str, key: str, why: str) -> BranchMapError:
    return BranchMapError(f"{where}: {key}: {why}")


def _check_keys(table: Mapping[str, Any], valid: tuple[str, ...], where: str, key: str) -> None:
    unknown = [name for name in table if name not in valid and not _is_fem_section(key, name)]
    if unknown:
        lines = []
        for name in unknown:
            lines.append(f"{name!r}{did_you_mean(name, valid)}")
        extra = ", fem_<section>" if key == "[event]" else ""
        raise _fail(
            where,
            key,
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(lines)}; "
            f"valid keys: {', '.join(valid)}{extra}",
        )


def _is_fem_section(key: str, name: str) -> bool:
    return key == "[event]" and name.startswith("fem_") and len(name) > 4


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(where, key, f"expected a non-empty name in quotes, got {value!r}")
    return value


def _constant(value: Any, dtype: np.dtype, where: str, key: str) -> int | float:
    """A TOML number checked against the field's type."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(
            where,
            key,
            f"expected a branch name in quotes or a number, got {value!r}; "
            'write e.g. pdg = 11 or pdg = "PDG"',
        )
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if not float(value).is_integer() or not info.min <= value <= info.max:
            raise _fail(
                where,
                key,
                f"{value!r} is not a whole number that {dtype} holds "
                f"({info.min}..{info.max}); give an integer",
            )
        return int(value)
    return float(value)


def _parse_column(
    name: str, entry: Any, dtype: np.dtype, hit: bool, where: str
) -> tuple[Column, str | None]:
    """The column of one map entry, without unit conversion yet, and its unit."""
    key = f"{'hits' if hit else 'event'}.{name}"
    branch: str | None = None
    value: int | float | None = None
    unit: str | None = None
    if isinstance(entry, dict):
        _check_keys(entry, ("branch", "unit") if hit else ("branch", "value", "unit"), where, key)
        if ("branch" in entry) == ("value" in entry):
            what = "hit fields are read from a branch" if hit else "give one of them"
            raise _fail(
                where,
                key,
                f"a table needs exactly one of 'branch' and 'value' ({what}); write e.g. "
                f'{name} = {{ branch = "...", unit = "..." }}',
            )
        if "branch" in entry:
            branch = _text(entry["branch"], where, f"{key}.branch")
        else:
            value = _constant(entry["value"], dtype, where, f"{key}.value")
        if "unit" in entry:
            unit = _text(entry["unit"], where, f"{key}.unit")
    elif isinstance(entry, str):
        branch = _text(entry, where, key)
    elif hit:
        raise _fail(
            where,
            key,
            f"expected a branch name in quotes, got {entry!r}; hit fields are read from "
            "branches, one value per hit (constants are for [event]); leave optional "
            "fields out",
        )
    else:
        value = _constant(entry, dtype, where, key)
    return Column(key=key, name=name, branch=branch, value=value), unit


def _with_unit(
    column: Column, unit: str | None, spec: tuple[str, str] | None, where: str, context: str = ""
) -> Column:
    """``column`` with its unit checked against ``spec`` (quantity, native unit)."""
    if spec is None:
        if unit is not None:
            raise _fail(
                where,
                f"{column.key}.unit",
                f"{column.name} is a plain number without a unit; remove unit = {unit!r}",
            )
        return column
    quantity, native = spec
    if unit is None:
        return dataclasses.replace(column, native_unit=native)
    units = _UNITS[quantity]
    if unit not in units:
        raise _fail(where, f"{column.key}.unit", _unit_hint(unit, quantity) + context)
    factor = units[unit] / units[native]
    return dataclasses.replace(column, unit=unit, native_unit=native, factor=factor)


def _resolve_stage(stage: Any, unit: str | None, where: str) -> str:
    """The stage of the hit energies, from ``stage`` or the unit of hits.energy."""
    valid = ", ".join(f"{name!r} ({unit})" for name, unit in STAGES.items())
    if stage is not None:
        if stage not in STAGES:
            hint = did_you_mean(stage, STAGES)
            raise _fail(where, "stage", f"unknown stage {stage!r}{hint}; valid stages: {valid}")
        return str(stage)
    if unit == "ADC":
        return "raw"
    if unit == "MIP":
        return "mip"
    if unit in _UNITS["energy"]:
        raise _fail(
            where,
            "stage",
            f"not given, and hits.energy in {unit} does not say it: a deposit in {unit} may "
            'be simulated (stage = "sim", stored in MeV) or calibrated (stage = "gev", '
            'stored in GeV); add stage = "sim" or stage = "gev" at the top of the map',
        )
    if unit is None:
        raise _fail(
            where,
            "stage",
            'not given, and hits.energy has no unit to tell it; add e.g. stage = "sim" at '
            f"the top of the map (valid stages: {valid}), or give the unit of hits.energy "
            '(hits.energy = { branch = "...", unit = "ADC" } means stage raw)',
        )
    hint = did_you_mean(unit, _QUANTITY_OF)
    raise _fail(
        where,
        "hits.energy.unit",
        f"unknown unit {unit!r}{hint}; hit energies are in {', '.join(_UNITS['energy'])} "
        "(with stage sim or gev), ADC (stage raw) or MIP (stage mip)",
    )


def _stage_context(stage: str, unit: str | None) -> str:
    """What to add to a bad hits.energy.unit message: the stages the unit would fit."""
    fits = {"ADC": "'raw'", "MIP": "'mip'"}.get(unit or "")
    if unit in _UNITS["energy"]:
        fits = "'sim' or 'gev'"
    means = f" ({unit} fits stage {fits})" if fits else ""
    return (
        f"; stage {stage!r} stores hit energies in {STAGES[stage]}{means}: give the unit the "
        "branch holds, or the stage that matches it"
    )


def _missing_required(event: Mapping[str, Any], hits: Mapping[str, Any], where: str) -> None:
    missing = [f"event.{n}" for n in REQUIRED_SCALARS if n not in event]
    missing += [f"hits.{n}" for n in REQUIRED_HIT_FIELDS if n not in hits]
    if missing:
        raise BranchMapError(
            f"{where}: the required field{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} {'are' if len(missing) > 1 else 'is'} not mapped; every "
            f"events file needs [event] {', '.join(REQUIRED_SCALARS)} and [hits] "
            f"{', '.join(REQUIRED_HIT_FIELDS)}: map each to a branch (or give an [event] "
            "field a constant, e.g. pdg = 11, run = 1)"
        )


@dataclass(frozen=True)
class BranchMap:
    """Which branches of a flat ntuple hold which native fields, in which units.

    ``event`` and ``hits`` map native field names to :class:`Column` objects, in native
    order; ``counter`` is the branch counting hits (``None``: the hit branches carry their
    own lengths); ``source`` names where the map came from, for messages.
    """

    tree: str | None
    stage: str
    geometry: str
    event: dict[str, Column] = field(default_factory=dict)
    hits: dict[str, Column] = field(default_factory=dict)
    counter: str | None = None
    source: str = field(default="branch map", compare=False)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BranchMap:
        """The branch map in the TOML file at ``path``."""
        source = Path(path)
        where = f"branch map {source}"
        if not source.is_file():
            why = "is a directory" if source.is_dir() else "does not exist"
            raise BranchMapError(
                f"{where} {why}; check the path (relative paths start at {Path.cwd()}); "
                "examples/branchmap.toml is a documented example"
            )
        try:
            text = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise BranchMapError(
                f"{where} cannot be read ({err}); give a UTF-8 TOML text file"
            ) from err
        return cls.from_dict(_parse_toml(text, where), where=where)

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any], where: str = "branch map") -> BranchMap:
        """The branch map given as a dict (the TOML's tables); ``where`` names it."""
        if not isinstance(mapping, Mapping):
            raise BranchMapError(f"{where}: expected a table (dict), got {type(mapping).__name__}")
        _check_keys(mapping, _TOP_KEYS, where, "top level")
        tree = mapping.get("tree")
        if tree is not None:
            tree = _text(tree, where, "tree")
        geometry = mapping.get("geometry", "")
        if geometry != "":
            geometry = _text(geometry, where, "geometry")
        event_table = _table(mapping, "event", where)
        hits_table = _table(mapping, "hits", where)
        _check_keys(event_table, _EVENT_KEYS, where, "[event]")
        _check_keys(hits_table, _HIT_KEYS, where, "[hits]")
        _missing_required(event_table, hits_table, where)

        counter = hits_table.get("counter")
        if counter is not None:
            counter = _text(counter, where, "hits.counter")
        event_units: dict[str, str | None] = {}
        event: dict[str, Column] = {}
        for name in _native_order(event_table, SCALAR_DTYPES):
            event[name], event_units[name] = _parse_column(
                name, event_table[name], _scalar_dtype(name), False, where
            )
        hit_units: dict[str, str | None] = {}
        hits: dict[str, Column] = {}
        for name in _native_order(hits_table, HIT_DTYPES):
            if name != "counter":
                hits[name], hit_units[name] = _parse_column(
                    name, hits_table[name], HIT_DTYPES[name], True, where
                )

        stage = _resolve_stage(mapping.get("stage"), hit_units["energy"], where)
        for name, column in event.items():
            event[name] = _with_unit(column, event_units[name], _SCALAR_UNITS.get(name), where)
        hit_specs = {**_HIT_UNITS, "energy": _STAGE_ENERGY[stage]}
        for name, column in hits.items():
            context = _stage_context(stage, hit_units[name]) if name == "energy" else ""
            hits[name] = _with_unit(column, hit_units[name], hit_specs.get(name), where, context)
        return cls(
            tree=tree,
            stage=stage,
            geometry=geometry,
            event=event,
            hits=hits,
            counter=counter,
            source=where,
        )

    def branches(self) -> list[str]:
        """Every branch the map reads, each once: the counter, event, then hit branches."""
        names = [self.counter] if self.counter is not None else []
        names += [c.branch for c in (*self.event.values(), *self.hits.values()) if c.branch]
        return list(dict.fromkeys(names))

    def to_dict(self) -> dict[str, Any]:
        """The map as a TOML-like dict (JSON values only); :meth:`from_dict` reads it back."""
        hits: dict[str, Any] = {"counter": self.counter} if self.counter is not None else {}
        hits.update({name: column.to_toml() for name, column in self.hits.items()})
        out: dict[str, Any] = {} if self.tree is None else {"tree": self.tree}
        out["stage"] = self.stage
        if self.geometry:
            out["geometry"] = self.geometry
        out["event"] = {name: column.to_toml() for name, column in self.event.items()}
        out["hits"] = hits
        return out


def _table(mapping: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    table = mapping.get(name)
    if table is None:
        required = REQUIRED_SCALARS if name == "event" else REQUIRED_HIT_FIELDS
        raise BranchMapError(
            f"{where}: no [{name}] table; a branch map needs [event] and [hits] tables "
            f"mapping at least {', '.join(required)} of [{name}] to branches"
        )
    if not isinstance(table, Mapping):
        raise _fail(where, name, f"expected a table [{name}], got {table!r}")
    return table


def _native_order(table: Mapping[str, Any], documented: Mapping[str, Any]) -> list[str]:
    """Keys of ``table`` in native order, then the others (fem_<section>) as given."""
    return [n for n in documented if n in table] + [n for n in table if n not in documented]


_TOML_LINE = re.compile(r"\(at line (\d+), column (\d+)\)")


def _parse_toml(text: str, where: str) -> dict[str, Any]:
    """The TOML ``text``, or a BranchMapError naming ``where`` and the bad line."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError as err:
            raise ModuleNotFoundError(
                "reading branch maps on Python 3.10 needs tomli: pip install tomli"
            ) from err
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        message = str(err)
        found = _TOML_LINE.search(message)
        if found is None:
            raise BranchMapError(f"{where}: not valid TOML ({message})") from err
        line = int(found.group(1))
        lines = text.splitlines()
        shown = lines[line - 1] if 0 < line <= len(lines) else ""
        raise BranchMapError(
            f"{where}, line {line}: not valid TOML ({message}):\n    {line} | {shown}\n"
            'names of branches need quotes (x = "HitX"), tables braces '
            '(x = { branch = "HitX", unit = "cm" }); see examples/branchmap.toml'
        ) from err


# ---------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _BranchInfo:
    """What one branch holds: 'scalar' (a number per entry), 'jagged' (numbers per entry)
    or 'other', with its ROOT type name and numpy dtype (None if not numbers)."""

    kind: str
    typename: str
    dtype: np.dtype | None


def _branch_info(branch: Any) -> _BranchInfo:
    typename = str(getattr(branch, "typename", "?"))
    try:
        form = branch.interpretation.awkward_form(branch.file)
    except Exception:
        return _BranchInfo("other", typename, None)
    kind = "scalar"
    if isinstance(form, ak.forms.ListOffsetForm | ak.forms.ListForm) and not form.parameters:
        form, kind = form.content, "jagged"
    if isinstance(form, ak.forms.NumpyForm) and not form.inner_shape and not form.parameters:
        return _BranchInfo(kind, typename, np.dtype(form.primitive))
    return _BranchInfo("other", typename, None)


def _close_names(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    return f" (closest: {', '.join(close)})" if close else " (nothing close)"


class MappedNtuple:
    """A flat ntuple read through a :class:`BranchMap` as native event records.

    Opening checks, each a :class:`~calocoffea.exceptions.BranchMapError` naming the file
    and the map: the tree exists (or the file has exactly one), every mapped branch
    exists and holds numbers, one per entry for [event] and one per hit for [hits], and
    the map's geometry is installed. Reading checks that every hit branch (and the
    counter) gives each entry the same number of hits.
    """

    def __init__(
        self, path: str | os.PathLike[str], branch_map: BranchMap | str | os.PathLike[str]
    ) -> None:
        self.path = Path(path)
        self.branch_map = (
            branch_map if isinstance(branch_map, BranchMap) else BranchMap.load(branch_map)
        )
        self._geometry_hash = self._find_geometry_hash()
        with _open_file(self.path) as file:
            tree = self._find_tree(file)
            self.tree_name: str = tree.name
            self._branches = self._check_branches(tree)
            self.num_entries: int = int(tree.num_entries)
            self._uuid = uuid.UUID(str(file.file.uuid))

    # -- checks when opening

    def _find_geometry_hash(self) -> str:
        name = self.branch_map.geometry
        if not name:
            return ""
        from calocoffea.geometry import get_geometry

        try:
            return get_geometry(name).hash
        except UnknownPluginError as err:
            raise BranchMapError(
                f"{self.branch_map.source}: geometry: {err} Fix the name, or leave geometry "
                "out if the detector is not one calocoffea knows"
            ) from err

    def _find_tree(self, file: Any) -> Any:
        classes = file.classnames(cycle=False)
        trees = [name for name, cls in classes.items() if cls in ("TTree", "TNtuple", "TNtupleD")]
        name = self.branch_map.tree
        listing = ", ".join(f"{n} ({c})" for n, c in classes.items()) or "nothing"
        if name is None:
            if len(trees) == 1:
                return file[trees[0]]
            raise BranchMapError(
                f"{self.path} holds {len(trees) or 'no'} TTrees ({listing}), so the tree to "
                f'read is not clear; add tree = "NAME" to {self.branch_map.source}'
            )
        found = file[name] if name in classes else None
        if isinstance(found, uproot.TTree):
            return found
        what = f"is a {classes[name]}, not a TTree" if name in classes else "does not exist"
        raise BranchMapError(
            f"{self.path}: the tree {name!r} named by {self.branch_map.source} {what}"
            f"{_close_names(name, trees) if name not in classes else ''}; the file holds "
            f"{listing}; fix tree = ... in the map"
        )

    def _check_branches(self, tree: Any) -> dict[str, _BranchInfo]:
        bmap = self.branch_map
        available = list(dict.fromkeys([*tree.keys(), *tree.keys(full_paths=False)]))
        wanted: list[tuple[str, str, str]] = []  # (map key, branch, wanted kind)
        if bmap.counter is not None:
            wanted.append(("hits.counter", bmap.counter, "counter"))
        wanted += [(c.key, c.branch, "scalar") for c in bmap.event.values() if c.branch]
        wanted += [(c.key, c.branch, "jagged") for c in bmap.hits.values() if c.branch]

        infos: dict[str, _BranchInfo] = {}
        missing, wrong = [], []
        for key, name, kind in wanted:
            if name not in available:
                missing.append(
                    f"    {key} = {name!r}: no such branch{_close_names(name, available)}"
                )
                continue
            info = infos.setdefault(name, _branch_info(tree[name]))
            problem = _kind_problem(info, kind)
            if problem:
                wrong.append(f"    {key} = {name!r} ({info.typename}): {problem}")
        where = f"tree {tree.name!r} in {self.path}"
        if missing:
            raise BranchMapError(
                f"{where} lacks branches that {bmap.source} names:\n"
                + "\n".join(missing)
                + f"\nit has: {_listing(available)}\nfix the branch names in the map"
            )
        if wrong:
            raise BranchMapError(
                f"{where}: branches that {bmap.source} names hold the wrong kind of "
                "values:\n" + "\n".join(wrong) + "\nmap [event] fields to branches of one "
                "number per entry and [hits] fields to arrays of one number per hit"
            )
        return infos

    # -- what the file is

    @property
    def identity(self) -> uuid.UUID:
        """The ROOT file's UUID: keep it when converting (``write_events(identity=...)``)."""
        return self._uuid

    def metadata(self) -> FileMetadata:
        """Metadata of the converted events: stage, geometry, the map as provenance."""
        return FileMetadata(
            stage=self.branch_map.stage,
            geometry=self.branch_map.geometry,
            geometry_hash=self._geometry_hash,
            producer=PRODUCER,
            extra={
                "source": str(self.path),
                "format": "ntuple",
                "tree": self.tree_name,
                "branch_map": self.branch_map.to_dict(),
            },
        )

    def describe(self) -> list[str]:
        """Lines saying what the map reads from the file and how it converts it."""
        bmap = self.branch_map
        lines = [
            f"file      {self.path}",
            f"tree      {self.tree_name} ({self.num_entries} entries)",
            f"stage     {bmap.stage} (hit energy in {STAGES[bmap.stage]})",
            f"geometry  {bmap.geometry or '(unknown)'}",
        ]
        rows: list[tuple[str, str]] = []
        if bmap.counter is not None:
            rows.append(("hits.counter", self._source_text(bmap.counter, "")))
        for column in (*bmap.event.values(), *bmap.hits.values()):
            if column.branch is None:
                unit = f" {column.unit}" if column.unit else ""
                conversion = f" ({column.describe()})" if column.factor != 1.0 else ""
                rows.append((column.key, f"= {column.value}{unit} (constant){conversion}"))
            else:
                rows.append((column.key, self._source_text(column.branch, column.describe())))
        if "flags" not in bmap.hits:
            rows.append(("hits.flags", "= 0 (not mapped)"))
        width = max(len(key) for key, _ in rows)
        lines += [f"  {key:<{width}}  {text}" for key, text in rows]
        counts = self._hit_counts()
        if counts.size:
            lines.append(f"hits/event  {counts.mean():.1f} mean (max {counts.max()})")
        return lines

    def _source_text(self, branch: str, conversion: str) -> str:
        info = self._branches[branch]
        details = info.typename + (f", {conversion}" if conversion else "")
        return f"<- {branch} ({details})"

    def _hit_counts(self) -> np.ndarray:
        bmap = self.branch_map
        with _open_file(self.path) as file:
            tree = file[self.tree_name]
            if bmap.counter is not None:
                return np.asarray(tree[bmap.counter].array(library="np"))
            branch = bmap.hits["energy"].branch
            return np.asarray(ak.to_numpy(ak.num(tree[branch].array(library="ak"), axis=1)))

    # -- reading

    def chunks(self, step_events: int = 50_000) -> Iterator[ak.Array]:
        """Native event records, ``step_events`` entries at a time: the scalars of
        [event] and a jagged field ``hit`` of the [hits] fields, in native units and types.
        """
        if isinstance(step_events, bool) or not isinstance(step_events, int) or step_events < 1:
            raise ValueError(
                f"step_events must be a positive number of events, got {step_events!r}"
            )
        with _open_file(self.path) as file:
            tree = file[self.tree_name]
            for start, arrays in _iterate(tree, self.branch_map.branches(), step_events):
                n = len(next(iter(arrays.values())))
                yield self._records(arrays, start, n)

    def _records(self, arrays: dict[str, ak.Array], start: int, n: int) -> ak.Array:
        bmap = self.branch_map
        scalars: dict[str, np.ndarray] = {}
        for name, column in bmap.event.items():
            dtype = _scalar_dtype(name)
            if column.branch is None:
                assert column.value is not None
                scalars[name] = np.full(n, _scaled(column.value, column.factor), dtype=dtype)
            else:
                values = ak.to_numpy(arrays[column.branch], allow_missing=False)
                scalars[name] = self._convert(values, column, dtype, lambda i: start + i)
        counts = self._counts(arrays, start)
        offsets = np.cumsum(counts)

        def entry_of(index: int) -> int:
            return start + int(np.searchsorted(offsets, index, side="right"))

        content: dict[str, np.ndarray] = {}
        for name, column in bmap.hits.items():
            assert column.branch is not None
            flat = ak.to_numpy(ak.flatten(arrays[column.branch], axis=1), allow_missing=False)
            content[name] = self._convert(flat, column, HIT_DTYPES[name], entry_of)
        if "flags" not in content:
            content["flags"] = np.zeros(int(offsets[-1]) if n else 0, HIT_DTYPES["flags"])
        ordered = {name: content[name] for name in HIT_DTYPES if name in content}
        hits = ak.unflatten(ak.zip(ordered), counts)
        return ak.zip({**scalars, "hit": hits}, depth_limit=1)

    def _counts(self, arrays: dict[str, ak.Array], start: int) -> np.ndarray:
        """Hits per entry, the same for every hit branch and the counter."""
        bmap = self.branch_map
        reference: tuple[str, np.ndarray] | None = None
        if bmap.counter is not None:
            counter = ak.to_numpy(arrays[bmap.counter], allow_missing=False)
            bad = np.flatnonzero(counter < 0)
            if bad.size:
                raise BranchMapError(
                    f"{self.path}: hits.counter = {bmap.counter!r} is negative at entry "
                    f"{start + int(bad[0])} ({counter[bad[0]]}); map the branch that counts hits"
                )
            reference = (f"hits.counter = {bmap.counter!r}", counter.astype(np.int64))
        for column in bmap.hits.values():
            assert column.branch is not None  # hit fields are never constants
            counts = ak.to_numpy(ak.num(arrays[column.branch], axis=1)).astype(np.int64)
            label = f"{column.key} = {column.branch!r}"
            if reference is None:
                reference = (label, counts)
                continue
            if not np.array_equal(counts, reference[1]):
                index = int(np.flatnonzero(counts != reference[1])[0])
                raise BranchMapError(
                    f"{self.path}: {reference[0]} and {label} disagree on the number of hits "
                    f"at entry {start + index} ({reference[1][index]} and {counts[index]}); "
                    "every [hits] branch must hold one value per hit of the same collection "
                    "(and hits.counter count them): map branches of one collection, or fix "
                    "hits.counter"
                )
        assert reference is not None
        return reference[1]

    def _convert(
        self, values: np.ndarray, column: Column, dtype: np.dtype, entry_of: Callable[[int], int]
    ) -> np.ndarray:
        """``values`` in the native unit and type; integers must survive the cast."""
        if column.factor != 1.0:
            values = values.astype(np.float64) * column.factor
        if dtype.kind not in "iu" or values.dtype.kind == "b":
            return values.astype(dtype, copy=False)
        bad = _bad_integers(values, dtype)
        if bad is not None:
            raise BranchMapError(
                f"{self.path}: {column.key} = {column.branch!r} holds "
                f"{values[bad].item()!r} at entry {entry_of(bad)}, which is not a whole number "
                f"that {dtype} holds ({np.iinfo(dtype).min}..{np.iinfo(dtype).max}); map the "
                f"branch that holds {column.name}"
            )
        return values.astype(dtype, copy=False)


def _iterate(tree: Any, names: list[str], step: int) -> Iterator[tuple[int, dict[str, ak.Array]]]:
    """(first entry, {name: array}) of the branches ``names``, ``step`` entries at a time.

    Branches are picked as objects, not as expressions (a name such as "x[0]" would be
    read as one); uproot then keys them by their short names, so where two of them share
    one ("a/x", "b/x") each is read on its own.
    """
    objects = {name: tree[name] for name in names}
    by_short: dict[str, str] = {}
    for name, branch in objects.items():
        by_short.setdefault(branch.name, name)
    if len(by_short) == len(objects):
        ids = {id(branch) for branch in objects.values()}
        for arrays, report in tree.iterate(
            filter_branch=lambda branch: id(branch) in ids,
            step_size=step,
            library="ak",
            how=dict,
            report=True,
        ):
            yield report.tree_entry_start, {by_short[k]: v for k, v in arrays.items()}
        return
    for start in range(0, tree.num_entries, step):
        stop = min(start + step, tree.num_entries)
        yield (
            start,
            {
                name: branch.array(entry_start=start, entry_stop=stop, library="ak")
                for name, branch in objects.items()
            },
        )


def _listing(names: list[str], limit: int = 40) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" ... ({len(names) - limit} more)" if len(names) > limit else "")


def _kind_problem(info: _BranchInfo, wanted: str) -> str:
    """Why a branch of ``info`` cannot serve as ``wanted``, or ''."""
    if info.kind == "other":
        return "not numbers (strings, objects, fixed-size or nested arrays are not read)"
    if wanted == "jagged" and info.kind != "jagged":
        return "one value per entry, but a hit field needs one value per hit (an array)"
    if wanted in ("scalar", "counter") and info.kind != "scalar":
        return "an array per entry, but this field needs one number per entry"
    if wanted == "counter" and info.dtype is not None and info.dtype.kind not in "iu":
        return "not integers, so it cannot count hits"
    return ""


def _scaled(value: int | float, factor: float) -> int | float:
    return value if factor == 1.0 else value * factor


def _bad_integers(values: np.ndarray, dtype: np.dtype) -> int | None:
    """The index of a value that ``dtype`` cannot hold exactly, or None."""
    if values.size == 0:
        return None
    info = np.iinfo(dtype)
    if values.dtype.kind == "f":
        ok = np.isfinite(values) & (values == np.trunc(values))
        ok &= (values >= float(info.min)) & (values < float(info.max) + 1.0)
        bad = np.flatnonzero(~ok)
        return int(bad[0]) if bad.size else None
    low, high = int(values.min()), int(values.max())
    if low < info.min:
        return int(np.argmin(values))
    if high > info.max:
        return int(np.argmax(values))
    return None


__all__ = ["PRODUCER", "BranchMap", "Column", "MappedNtuple"]
