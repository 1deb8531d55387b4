"""Calibration constants: a frozen value with provenance, stored as correctionlib JSON.

What to use when:

- :func:`nominal_constants` -- the constants that invert the nominal conditions exactly
  (the drawn truth tables); what ``calocoffea constants nominal`` writes.
- :meth:`Constants.save` / :func:`load_constants` -- correctionlib JSON (schema v2), the exchange
  format; C++ and RDataFrame read it with correctionlib's evaluator.
- :meth:`Constants.dense` -- per-cell numpy arrays in :meth:`Geometry.cellids` order for the
  hot path (one gather per constant instead of a correctionlib call per hit).

Each parameter is one correction with inputs ``kind`` ("value" or "uncertainty") and
``layer``, ``i``, ``j`` (per-cell tables; the ``hit_layer``, ``hit_i``, ``hit_j`` branches) or
``layer`` alone (per-layer tables). The correction set's description
holds the provenance as JSON: method, version, geometry and its hash, sample, fit quality,
plus the read-out settings the calibration needs (:data:`SETTINGS`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from calocoffea import __version__
from calocoffea.conditions import Conditions
from calocoffea.exceptions import ConstantsError, GeometryMismatchError
from calocoffea.geometry import Geometry, decode_cellid, encode_cellid, get_geometry
from calocoffea.io import atomic_write

Binning = Literal["cell", "layer"]
_FORMAT = "calocoffea-constants"
_KINDS = ("value", "uncertainty")

#: Per-cell parameters the calibrate processor needs, with their unit.
CELL_PARAMETERS: dict[str, str] = {
    "pedestal_hg_adc": "ADC",
    "pedestal_lg_adc": "ADC",
    "gain_ratio": "1",
    "spe_adc": "ADC per pixel",
    "n_pixels": "pixels",
    "light_yield_pe": "p.e. per MIP",
    "nonlinearity_a": "1",
    "nonlinearity_b": "1",
    "scale": "1",
}
#: Per-layer parameters: MIP reference [MeV] and MIP sampling fraction (MIP -> GeV).
LAYER_PARAMETERS: dict[str, str] = {"mip_mev": "MeV", "sampling_fraction": "1"}
#: Read-out settings stored with the constants (defaults of :class:`Electronics`).
SETTINGS = ("nonlinearity_scale_adc", "desaturation_occupancy", "lg_saturation_adc", "adc_max")


@dataclass(frozen=True)
class Table:
    """One parameter: values and uncertainties keyed by cell id (or layer)."""

    binning: Binning
    keys: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    uncertainties: npt.NDArray[np.float64]
    unit: str = "1"

    def __post_init__(self) -> None:
        shapes = {np.shape(self.keys), np.shape(self.values), np.shape(self.uncertainties)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ConstantsError(f"table keys, values and uncertainties differ in shape {shapes}")
        if np.unique(self.keys).size != self.keys.size:
            raise ConstantsError("a constants table has repeated keys")
        if not np.all(np.isfinite(self.values)):
            raise ConstantsError("a constants table has non-finite values")


@dataclass(frozen=True)
class Provenance:
    """Where constants come from."""

    method: str
    geometry: str
    geometry_hash: str
    version: str = __version__
    sample: str = ""
    fit_quality: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Constants:
    """A frozen set of calibration constants."""

    tables: Mapping[str, Table]
    provenance: Provenance
    #: the file they were read from ("" when made in memory), for messages
    source: str = field(default="", compare=False, kw_only=True)

    @property
    def geometry_hash(self) -> str:
        return self.provenance.geometry_hash

    @property
    def label(self) -> str:
        """How messages name these constants: their file, else their method."""
        if self.source:
            return f"constants {self.source} ({self.provenance.method})"
        return f"constants ({self.provenance.method})"

    def check_geometry(self, geometry: Geometry, what: str = "the input") -> None:
        if geometry.hash != self.geometry_hash:
            raise GeometryMismatchError(
                f"{self.label} were made for geometry "
                f"{self.provenance.geometry!r} (hash {self.geometry_hash}) but {what} is "
                f"{geometry.name!r} (hash {geometry.hash}); use constants made for "
                f"{geometry.name!r}, e.g. `calocoffea constants nominal --geometry "
                f"{geometry.name}`"
            )

    def replace(self, **tables: Table) -> Constants:
        """A copy with some tables replaced or added."""
        return dataclasses.replace(self, tables={**self.tables, **tables})

    def update(self, *learned: Constants) -> Constants:
        """These constants with the tables of each of ``learned`` laid over them, in order.

        The provenance records the chain of methods (``design+pedestal+mip``), their samples
        and fit qualities (keyed by method); every set must be for the same geometry."""
        tables = dict(self.tables)
        p = self.provenance
        methods, samples, quality = [p.method], [p.sample], {p.method: p.fit_quality}
        for other in learned:
            q = other.provenance
            if q.geometry_hash != self.geometry_hash:
                raise GeometryMismatchError(
                    f"cannot combine constants of {q.method!r} for geometry {q.geometry!r} with "
                    f"constants for {p.geometry!r}; fit every method on the same geometry"
                )
            tables.update(other.tables)
            methods.append(q.method)
            samples.append(q.sample)
            quality[q.method] = q.fit_quality
        provenance = dataclasses.replace(
            p,
            method="+".join(methods),
            sample="; ".join(s for s in samples if s),
            fit_quality=quality,
        )
        return Constants(tables, provenance)

    # ---- dense arrays for the hot path -------------------------------------------------
    def dense(
        self, geometry: Geometry, defaults: Mapping[str, float] | None = None
    ) -> DenseConstants:
        """Per-cell arrays (cellids order) and per-layer arrays.

        Cells missing from a per-cell table are an error unless ``defaults`` gives a value
        for that parameter; then they take it and are counted in ``DenseConstants.missing``.
        """
        self.check_geometry(geometry)
        defaults = dict(defaults or {})
        cells, missing = {}, {}
        for name in CELL_PARAMETERS:
            table = self._table(name, "cell")
            index = geometry.cell_index(table.keys)
            if np.any(index < 0):
                bad = table.keys[index < 0][:3].tolist()
                raise ConstantsError(
                    f"{self.label}: table {name!r} has {np.count_nonzero(index < 0)} cell ids "
                    f"that are not cells of {geometry.name!r} (e.g. {bad}); use constants made "
                    f"for {geometry.name!r}"
                )
            array = np.full(geometry.n_cells, np.nan)
            array[index] = table.values
            absent = np.isnan(array)
            if np.any(absent):
                if name not in defaults:
                    example = geometry.cellids()[absent][:3].tolist()
                    raise ConstantsError(
                        f"{self.label}: table {name!r} misses {np.count_nonzero(absent)} of "
                        f"{geometry.n_cells} cells (e.g. cell ids {example}); give values for "
                        f"every cell or an explicit default (defaults={{{name!r}: value}})"
                    )
                array[absent] = defaults[name]
                missing[name] = int(np.count_nonzero(absent))
            cells[name] = array
        layers = {}
        for name in LAYER_PARAMETERS:
            table = self._table(name, "layer")
            array = np.full(geometry.n_layers, np.nan)
            ok = (table.keys >= 0) & (table.keys < geometry.n_layers)
            array[table.keys[ok]] = table.values[ok]
            if np.any(np.isnan(array)) or not np.all(ok):
                raise ConstantsError(
                    f"{self.label}: table {name!r} must have one value for each of the "
                    f"{geometry.n_layers} layers of {geometry.name!r}; refit or complete it"
                )
            layers[name] = array
        settings = self.provenance.settings
        lacking = [s for s in SETTINGS if s not in settings]
        if lacking:
            raise ConstantsError(
                f"{self.label} lack the read-out settings {lacking}; write them with "
                "Constants.save from constants that have them (e.g. `calocoffea constants nominal`)"
            )
        return DenseConstants(cells, layers, {k: float(settings[k]) for k in SETTINGS}, missing)

    def _table(self, name: str, binning: Binning) -> Table:
        try:
            table = self.tables[name]
        except KeyError:
            raise ConstantsError(
                f"{self.label} have no table {name!r}; they have {', '.join(self.tables)}: "
                f"lay them over a full set (Constants.update, `calibrate fit --base`)"
            ) from None
        if table.binning != binning:
            raise ConstantsError(f"table {name!r} must be per {binning}, not {table.binning}")
        return table

    # ---- correctionlib -----------------------------------------------------------------
    def to_correctionlib(self) -> dict[str, Any]:
        """The correction set as a correctionlib schema-v2 JSON object."""
        corrections = []
        for name, table in self.tables.items():
            inputs = ["layer", "i", "j"] if table.binning == "cell" else ["layer"]
            content = [
                {"key": kind, "value": _category_tree(table.keys, array, table.binning)}
                for kind, array in zip(_KINDS, (table.values, table.uncertainties), strict=True)
            ]
            corrections.append(
                {
                    "name": name,
                    "description": f"{name} [{table.unit}] per {table.binning}",
                    "version": 1,
                    "inputs": [
                        {"name": "kind", "type": "string", "description": "value or uncertainty"},
                        *(
                            {"name": key, "type": "int", "description": f"hit_{key}"}
                            for key in inputs
                        ),
                    ],
                    "output": {"name": name, "type": "real", "description": table.unit},
                    "data": {"nodetype": "category", "input": "kind", "content": content},
                }
            )
        description = json.dumps(
            {"format": _FORMAT, **dataclasses.asdict(self.provenance)}, sort_keys=True
        )
        return {"schema_version": 2, "description": description, "corrections": corrections}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write correctionlib JSON; atomic."""
        text = json.dumps(self.to_correctionlib(), separators=(",", ":"))
        with atomic_write(path) as temporary:
            temporary.write_text(text)
        return Path(path).absolute()


@dataclass(frozen=True)
class DenseConstants:
    """Constants as arrays: ``cells[name][cell_index]``, ``layers[name][layer]``."""

    cells: dict[str, npt.NDArray[np.float64]]
    layers: dict[str, npt.NDArray[np.float64]]
    settings: dict[str, float]
    missing: dict[str, int]


def read_payload(
    path: str | os.PathLike[str],
) -> tuple[dict[str, dict[str, Any]], dict[str, Any], Geometry]:
    """The corrections (by name), the provenance fields and the geometry of a correctionlib
    JSON file written by calocoffea (:meth:`Constants.save` or a method's own ``save``);
    raises OSError, ValueError or KeyError for anything else (callers say what to do)."""
    return _parse_payload(json.loads(Path(path).read_text()))


def _parse_payload(
    payload: dict[str, Any],
) -> tuple[dict[str, dict[str, Any]], dict[str, Any], Geometry]:
    provenance = json.loads(payload["description"])
    if provenance.pop("format", None) != _FORMAT:
        raise ValueError("its description is not calocoffea provenance")
    geometry = get_geometry(provenance["geometry"])
    return {c["name"]: c for c in payload["corrections"]}, provenance, geometry


_REWRITE = "write them again with `calocoffea constants nominal` or `calocoffea calibrate fit`"


def load_constants(path: str | os.PathLike[str]) -> Constants:
    """Read correctionlib JSON written by :meth:`Constants.save`; the file is checked against
    correctionlib's schema v2 first (:func:`check_schema`)."""
    try:
        text = Path(path).read_text()
        payload = json.loads(text)
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError included
        raise ConstantsError(
            f"cannot read constants from {path}: {err}; give a correctionlib JSON file, or "
            f"{_REWRITE}"
        ) from err
    check_schema(payload, path, text)
    try:
        corrections, provenance, geometry = _parse_payload(payload)
        tables = {name: _read_correction(c, geometry) for name, c in corrections.items()}
        return Constants(tables, Provenance(**provenance), source=str(path))
    except ConstantsError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConstantsError(
            f"cannot read constants from {path}: {type(err).__name__}: {err}; it is valid "
            f"correctionlib JSON but not calocoffea constants: {_REWRITE}"
        ) from err


def check_schema(payload: Any, path: str | os.PathLike[str], text: str | None = None) -> None:
    """A :class:`ConstantsError` naming ``path`` and the first schema error unless
    ``payload`` (the parsed JSON; ``text``: as read) is a correctionlib schema-v2 correction
    set. correctionlib's pydantic model (:mod:`correctionlib.schemav2`) checks the set and
    each correction's header; its C++ evaluator checks the contents (a full pydantic pass
    over a per-cell table of 100 000 cells takes 10 s, the evaluator 0.5 s); the pydantic
    pass runs only to locate an error the evaluator found."""
    import correctionlib
    import pydantic
    from correctionlib import schemav2

    try:
        schemav2.CorrectionSet.model_validate(_headers(payload))
    except pydantic.ValidationError as err:
        raise ConstantsError(_schema_message(path, payload, err)) from err
    try:
        correctionlib.CorrectionSet.from_string(json.dumps(payload) if text is None else text)
    except RuntimeError as err:
        try:
            schemav2.CorrectionSet.model_validate(payload)
        except pydantic.ValidationError as detail:
            raise ConstantsError(_schema_message(path, payload, detail)) from err
        raise ConstantsError(
            f"constants file {path} does not follow correctionlib's schema v2: {err}; {_REWRITE}"
        ) from err


def _headers(payload: Any) -> Any:
    """``payload`` with the contents of each correction replaced by a number."""
    if not isinstance(payload, dict) or not isinstance(payload.get("corrections"), list):
        return payload
    corrections = [
        {**c, "data": 0.0} if isinstance(c, dict) and "data" in c else c
        for c in payload["corrections"]
    ]
    return {**payload, "corrections": corrections}


def _schema_message(path: str | os.PathLike[str], payload: Any, err: Any) -> str:
    """The first error of a pydantic ValidationError, located in the file."""
    first = err.errors()[0]
    loc = list(first["loc"])
    where = ""
    for part in loc:
        if isinstance(part, str) and ("[" in part or part.startswith("function-")):
            continue  # pydantic's union and validator labels
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    if loc[:1] == ["corrections"] and len(loc) > 1 and isinstance(loc[1], int):
        try:
            where += f" (correction {payload['corrections'][loc[1]]['name']!r})"
        except (KeyError, IndexError, TypeError):
            pass
    more = err.error_count() - 1
    others = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return (
        f"constants file {path} does not follow correctionlib's schema v2: "
        f"{where or 'top level'}: {first['msg']}{others}; fix that field or {_REWRITE}"
    )


def _category_tree(keys: npt.NDArray[np.int64], values: npt.NDArray[np.float64], binning: str):
    """Nested correctionlib categories: layer -> i -> j for cells (correctionlib's integer
    inputs are 32 bit, so packed cell ids cannot be keys), layer alone for layers."""
    if binning == "layer":
        items = zip(keys.tolist(), values.tolist(), strict=True)
        return {"nodetype": "category", "input": "layer",
                "content": [{"key": k, "value": v} for k, v in items]}  # fmt: skip
    _, layer, i, j = decode_cellid(keys.astype(np.uint64))
    tree: dict[int, dict[int, list[dict[str, Any]]]] = {}
    for lay, ii, jj, v in zip(layer.tolist(), i.tolist(), j.tolist(), values.tolist(), strict=True):
        tree.setdefault(lay, {}).setdefault(ii, []).append({"key": jj, "value": v})
    return {
        "nodetype": "category",
        "input": "layer",
        "content": [
            {"key": lay, "value": {"nodetype": "category", "input": "i", "content": [
                {"key": ii, "value": {"nodetype": "category", "input": "j", "content": js}}
                for ii, js in columns.items()
            ]}}
            for lay, columns in tree.items()
        ],
    }  # fmt: skip


def _read_tree(node: dict[str, Any], path: tuple[int, ...] = ()) -> Iterator[tuple]:
    for item in node["content"]:
        value = item["value"]
        if isinstance(value, dict):
            yield from _read_tree(value, (*path, item["key"]))
        else:
            yield (*path, item["key"], value)


def _read_correction(correction: dict[str, Any], geometry: Geometry) -> Table:
    names = [item["name"] for item in correction["inputs"]]
    binning: Binning = "cell" if names[1:] == ["layer", "i", "j"] else "layer"
    by_kind = {item["key"]: item["value"] for item in correction["data"]["content"]}
    rows = {kind: np.array(list(_read_tree(by_kind[kind])), dtype=np.float64) for kind in _KINDS}
    keys = []
    for kind in _KINDS:
        r = rows[kind]
        if binning == "cell":
            layer = r[:, 0].astype(np.int64)
            section = geometry.layer_section[np.clip(layer, 0, geometry.n_layers - 1)]
            keys.append(encode_cellid(section, layer, r[:, 1], r[:, 2]).astype(np.int64))
        else:
            keys.append(r[:, 0].astype(np.int64))
    order = np.argsort(keys[1])
    position = order[np.searchsorted(keys[1], keys[0], sorter=order)]
    if not np.array_equal(keys[1][position], keys[0]):
        raise ValueError(f"correction {correction['name']!r}: values and uncertainties differ")
    return Table(
        binning=binning,
        keys=keys[0],
        values=rows["value"][:, -1],
        uncertainties=rows["uncertainty"][position, -1],
        unit=correction["output"].get("description", "1"),
    )


def design_constants(geometry: str | Geometry, sample: str = "") -> Constants:
    """Constants at the design values of every parameter (the means of
    :data:`calocoffea.conditions.PARAMETERS`): what a detector is calibrated with before any
    calibration run has been analysed."""
    from calocoffea.conditions import PARAMETERS, nominal

    c = nominal(geometry)
    design = c.with_values(
        label="design", **{name: np.full(c.n_cells, p.mean) for name, p in PARAMETERS.items()}
    )
    constants = nominal_constants(design, sample=sample or "design values")
    return dataclasses.replace(
        constants, provenance=dataclasses.replace(constants.provenance, method="design")
    )


def nominal_constants(conditions: Conditions, sample: str = "") -> Constants:
    """Constants equal to the truth tables of ``conditions`` (zero uncertainty)."""
    geometry = get_geometry(conditions.geometry)
    conditions.check_geometry(geometry, "the geometry of these conditions")
    cellids = geometry.cellids().astype(np.int64)
    zeros = np.zeros(cellids.size)
    tables: dict[str, Table] = {}
    for name, unit in CELL_PARAMETERS.items():
        values = conditions.values["aging"] if name == "scale" else conditions.values[name]
        tables[name] = Table("cell", cellids, np.array(values, np.float64), zeros, unit)
    layers = np.arange(geometry.n_layers, dtype=np.int64)
    mip = np.zeros(geometry.n_layers)
    mip[geometry.cell_layer] = conditions.mip_mev
    layer_values = {
        "mip_mev": mip,
        "sampling_fraction": np.asarray(
            geometry.layer_property("mip_sampling_fraction"), dtype=np.float64
        ),
    }
    for name, unit in LAYER_PARAMETERS.items():
        tables[name] = Table("layer", layers, layer_values[name], np.zeros(layers.size), unit)
    e = conditions.electronics
    return Constants(
        tables,
        Provenance(
            method="nominal",
            geometry=geometry.name,
            geometry_hash=geometry.hash,
            sample=sample or f"conditions {conditions.label} (seed {conditions.seed})",
            settings={name: float(getattr(e, name)) for name in SETTINGS},
        ),
    )


__all__ = [
    "CELL_PARAMETERS",
    "LAYER_PARAMETERS",
    "Constants",
    "DenseConstants",
    "Provenance",
    "Table",
    "check_schema",
    "design_constants",
    "load_constants",
    "nominal_constants",
]
