"""RDataFrame bridge: calocoffea events, constants and digitisation inside ROOT's RDataFrame.

What to use when:

- :func:`to_rdataframe` / :func:`from_rdataframe` -- calocoffea event records (``events.hits``)
  to and from an RDataFrame (through ``ak.to_rdataframe`` / ``ak.from_rdataframe``): hand an
  awkward selection to a ROOT analysis, or bring RDataFrame columns back.
- :func:`events_rdataframe` -- an RDataFrame over calocoffea ROOT files (tree ``events``,
  branches ``hit_*`` counted by ``nhit``), checked like every calocoffea input.
- :func:`define_calibrated` -- the Define of calibrated hit energies [MIP or GeV] from raw
  ADC columns. ``lookup="dense"`` gathers per-cell arrays, as calocoffea's hot path;
  ``lookup="correctionlib"`` evaluates the constants' correctionlib JSON with correctionlib's
  C++ evaluator, hit by hit (what a ROOT analysis that only has the JSON file would do).
- :func:`define_digitized` -- the digitiser in C++: deposits [MeV] -> ADC, gain, flags, with
  calocoffea's counter-based random numbers, so the raw hits equal the digitize processor's.
- :func:`book_histograms` / :func:`to_numpy` -- the histogram processor's histograms (same
  axes, same quantities) booked on an RDataFrame, and a filled ROOT histogram as the numpy
  array of ``hist.Hist.values(flow=True)``, to compare bin by bin.

The C++ is in ``calocoffea/cpp/`` (declared once per process; the objects are filled from
calocoffea's dense arrays, and Defines call them on ``ROOT::RVec`` columns). It mirrors
:mod:`calocoffea.calibration`, :mod:`calocoffea.digitization` and :mod:`calocoffea.rng`
operation by operation with floating-point contraction off, so the results are bit-identical
(the tests check it). ROOT is an optional dependency: ``pip install 'calocoffea[root]'``.

TMVA SOFIE (C++ inference code generated from ONNX) is not in the ``root`` wheel from PyPI
(``ROOT.TMVA`` is absent in 6.40), so shipped ONNX models run in Python with onnxruntime only;
:func:`sofie_available` says whether this ROOT has it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import awkward as ak
import numpy as np

from calocoffea import rng
from calocoffea.calibration import CalibrationSteps
from calocoffea.conditions import Conditions
from calocoffea.constants import Constants
from calocoffea.digitization import DigitizationOptions
from calocoffea.exceptions import CalocoffeaError, InputFileError
from calocoffea.geometry import Geometry, get_geometry

CPP_DIR = Path(__file__).parent / "cpp"
_declared: set[str] = set()
_names = itertools.count()

#: the raw hit columns a calibration Define reads, in the order of its C++ call
RAW_COLUMNS = ("hit_energy", "hit_gain", "hit_flags", "hit_layer", "hit_i", "hit_j")


def require_root(who: str = "calocoffea.rdf") -> Any:
    """Import PyROOT, or say how to install it."""
    try:
        import ROOT
    except ImportError as err:
        raise ModuleNotFoundError(
            f"{who} needs ROOT (PyROOT); install it with `pip install 'calocoffea[root]'` "
            "(the `root` package, about 250 MB) or use a ROOT installation's Python"
        ) from err
    return ROOT


def sofie_available() -> bool:
    """Whether this ROOT has TMVA SOFIE (ONNX -> C++ inference)."""
    ROOT = require_root()
    try:
        return hasattr(ROOT.TMVA.Experimental, "SOFIE")
    except AttributeError:
        return False


def declare(header: str = "calocoffea_rdf.hxx") -> None:
    """Declare one of calocoffea's C++ headers into ROOT's interpreter (once per process)."""
    if header in _declared:
        return
    ROOT = require_root()
    if header == "calocoffea_correctionlib.hxx":
        import correctionlib

        correctionlib.register_pyroot_binding()
    ROOT.gInterpreter.AddIncludePath(str(CPP_DIR))
    if not ROOT.gInterpreter.Declare(f'#include "{CPP_DIR / header}"'):
        raise CalocoffeaError(f"ROOT could not compile {CPP_DIR / header}; see the output above")
    _declared.add(header)


# ------------------------------------------------------------------ awkward <-> RDataFrame


def to_rdataframe(events: ak.Array) -> Any:
    """An RDataFrame over calocoffea event records: scalar fields keep their names, hit fields
    become ``hit_<field>`` RVec columns (the file layout). Keep ``events`` alive while the
    RDataFrame is used: it reads their buffers without copying."""
    require_root()
    hits = events["hits"] if "hits" in events.fields else events["hit"]
    columns = {name: events[name] for name in events.fields if name not in ("hits", "hit")}
    columns.update({f"hit_{name}": hits[name] for name in hits.fields})
    return ak.to_rdataframe(columns)


def from_rdataframe(df: Any, columns: Sequence[str]) -> ak.Array:
    """Columns of an RDataFrame as calocoffea event records: ``hit_<field>`` columns are zipped
    into ``hits`` (they must have the same number of entries per event), others stay scalars."""
    array = ak.from_rdataframe(df, columns=tuple(columns))
    hit_names = [c for c in columns if c.startswith("hit_")]
    fields = {c: array[c] for c in columns if not c.startswith("hit_")}
    if hit_names:
        fields["hits"] = ak.zip({c[4:]: array[c] for c in hit_names})
    return ak.zip(fields, depth_limit=1)


# ------------------------------------------------------------------ files


def events_rdataframe(files: Sequence[str | os.PathLike[str]], *, stage: str | None = None) -> Any:
    """An RDataFrame over calocoffea event files (checked: they exist, carry calocoffea
    metadata, share a geometry and are at ``stage`` if given)."""
    from calocoffea.runner import _check_inputs

    ROOT = require_root()
    paths = [str(Path(f).absolute()) for f in files]
    if not paths:
        raise InputFileError("no input files given")
    _check_inputs(paths, stage or _stage(paths[0]))
    return ROOT.RDataFrame("events", paths)


def _stage(path: str) -> str:
    from calocoffea.io import read_metadata

    return read_metadata(path).stage


def _fill(target: Any, values: np.ndarray) -> None:
    """Copy a numpy array into a C++ std::vector member."""
    target.clear()
    target.reserve(values.size)
    for v in values.tolist():
        target.push_back(v)


def _new_object(kind: str) -> tuple[str, Any]:
    """A new global C++ object of type ``calocoffea::<kind>`` and its Python proxy."""
    ROOT = require_root()
    name = f"calocoffea_{kind.lower()}_{next(_names)}"
    ROOT.gInterpreter.Declare(f"calocoffea::{kind} {name};")
    return name, getattr(ROOT, name)


def _fill_cells(lookup: Any, geometry: Geometry) -> None:
    """The per-layer bounding boxes of :meth:`Geometry.cell_index` into a CellLookup."""
    rows, table = geometry._index_table
    per_layer = np.zeros((geometry.n_layers, 5), np.int64)
    for offset, first, n_layers, i0, ni, j0, nj in rows:
        layers = np.arange(first, first + n_layers)
        per_layer[layers] = np.column_stack(
            [offset + (layers - first) * ni * nj, np.full((n_layers, 4), (i0, ni, j0, nj))]
        )
    for column, name in enumerate(("offset", "i0", "ni", "j0", "nj")):
        _fill(getattr(lookup, name), per_layer[:, column])
    _fill(lookup.table, table)


# ------------------------------------------------------------------ calibration


@dataclass(frozen=True)
class Calibrator:
    """A calibration chain declared in ROOT: ``name`` is its C++ object."""

    name: str
    steps: CalibrationSteps

    def call(self, columns: Sequence[str] = RAW_COLUMNS) -> str:
        return f"{self.name}({', '.join(columns)})"


def calibrator(
    constants: Constants | str | os.PathLike[str],
    geometry: Geometry | str | None = None,
    steps: CalibrationSteps | None = None,
    lookup: Literal["dense", "correctionlib"] = "dense",
) -> Calibrator:
    """Declare a calibration chain for ``constants`` (or the path of their JSON)."""
    from calocoffea.constants import load_constants

    steps = steps or CalibrationSteps()
    path = None
    if not isinstance(constants, Constants):
        path = Path(constants).absolute()
        constants = load_constants(path)
    geometry = get_geometry(geometry or constants.provenance.geometry)
    dense = constants.dense(geometry)
    if lookup == "dense":
        declare()
        name, chain = _new_object("Calibration")
        _fill_cells(chain.cells, geometry)
        for parameter, values in dense.cells.items():
            _fill(getattr(chain, parameter), values)
    elif lookup == "correctionlib":
        declare("calocoffea_correctionlib.hxx")
        name, chain = _new_object("CorrectionlibCalibration")
        if path is None:  # correctionlib reads files: write the constants beside nothing else
            raise CalocoffeaError(
                "lookup='correctionlib' reads the constants' JSON file: pass its path"
            )
        chain.load(str(path))
    else:
        raise CalocoffeaError(f"unknown lookup {lookup!r}; use 'dense' or 'correctionlib'")
    for setting in ("nonlinearity_scale_adc", "desaturation_occupancy", "lg_saturation_adc"):
        setattr(chain, setting, dense.settings[setting])
    layers = dense.layers
    _fill(chain.gev_per_mip, layers["mip_mev"] / layers["sampling_fraction"] / 1000.0)
    chain.pedestal, chain.gain_selection = steps.pedestal, steps.gain_selection
    chain.nonlinearity, chain.desaturate = steps.nonlinearity, steps.desaturation
    chain.apply_scale, chain.to_gev = steps.scale, steps.to_gev
    return Calibrator(name, steps)


def define_calibrated(
    df: Any,
    constants: Constants | str | os.PathLike[str],
    column: str = "hit_energy_calibrated",
    *,
    steps: CalibrationSteps | None = None,
    lookup: Literal["dense", "correctionlib"] = "dense",
    inputs: Sequence[str] = RAW_COLUMNS,
) -> Any:
    """``df`` with ``column``: calibrated energy of every hit [MIP, or GeV with
    ``steps.to_gev``], from raw columns ``inputs`` (ADC, gain, flags, layer, i, j)."""
    chain = calibrator(constants, steps=steps, lookup=lookup)
    return df.Define(column, chain.call(inputs))


# ------------------------------------------------------------------ digitisation


def file_keys(files: Sequence[str | os.PathLike[str]], seed: int) -> str:
    """Declare the random keys of ``files`` (:func:`calocoffea.rng.file_key` of each file's
    UUID); returns the C++ object's name."""
    import uproot

    declare()
    name, keys = _new_object("FileKeys")
    for path in files:
        path = str(Path(path).absolute())
        with uproot.open(path) as file:
            identity = str(file.file.uuid)
        keys.names.push_back(path)
        keys.keys.push_back(rng.file_key(seed, identity))
    return name


def digitizer(conditions: Conditions, options: DigitizationOptions | None = None) -> str:
    """Declare a C++ digitiser for ``conditions``; returns its object's name."""
    options = options or DigitizationOptions()
    declare()
    name, digi = _new_object("Digitizer")
    _fill_cells(digi.cells, get_geometry(conditions.geometry))
    v = conditions.values
    tables = {
        "mip_mev": conditions.mip_mev,
        "mip_adc": conditions.mip_adc,
        "dead": conditions.dead.astype(np.uint8),
        "noisy": conditions.noisy.astype(np.uint8),
    }
    for table in (
        "light_yield_pe", "aging", "n_pixels", "spe_adc", "nonlinearity_a", "nonlinearity_b",
        "pedestal_hg_adc", "pedestal_lg_adc", "noise_hg_adc", "noise_lg_adc", "gain_ratio",
    ):  # fmt: skip
        tables[table] = v[table]
    for table, values in tables.items():
        _fill(getattr(digi, table), np.asarray(values))
    e = conditions.electronics
    for setting in (
        "nonuniformity", "pixel_spread", "nonlinearity_scale_adc", "noisy_factor",
        "switch_adc", "lg_saturation_adc", "adc_max",
    ):  # fmt: skip
        setattr(digi, setting, float(getattr(e, setting)))
    digi.threshold_mip = float(options.threshold(e))
    digi.zero_suppression, digi.clipping = options.zero_suppression, options.clipping
    return name


def define_digitized(
    df: Any,
    files: Sequence[str | os.PathLike[str]],
    conditions: Conditions,
    seed: int,
    options: DigitizationOptions | None = None,
) -> Any:
    """``df`` (an RDataFrame over ``files``, in that order) with the raw hit columns of the
    digitize processor: ``raw_energy`` [ADC], ``raw_gain``, ``raw_flags``, ``raw_layer``,
    ``raw_i``, ``raw_j`` (kept hits only). The random numbers are calocoffea's: keyed by
    (seed, file UUID, entry in file, hit, stream), so they equal the processor's output."""
    keys = file_keys(files, seed)
    digi = digitizer(conditions, options)
    entries, counter = _new_object("EntryInFile")
    counter.slots(df.GetNSlots())
    df = df.DefinePerSample("cc_file_key", f"{keys}.of(rdfsampleinfo_)")
    df = df.DefinePerSample("cc_task", f"{entries}.new_task()")
    df = df.DefinePerSample("cc_task_first", "ULong64_t(rdfsampleinfo_.EntryRange().first)")
    df = df.Define(
        "cc_entry", f"{entries}.entry(rdfslot_, cc_task, ULong64_t(rdfentry_), cc_task_first)"
    )
    df = df.Define("cc_event_key", "calocoffea::rng::event_key(cc_file_key, cc_entry)")
    df = df.Define("cc_digi", f"{digi}(hit_energy, hit_layer, hit_i, hit_j, cc_event_key)")
    df = df.Define("raw_energy", "cc_digi.adc[cc_digi.keep]")
    df = df.Define("raw_gain", "cc_digi.gain[cc_digi.keep]")
    df = df.Define("raw_flags", "cc_digi.flags[cc_digi.keep]")
    for name in ("layer", "i", "j"):
        df = df.Define(f"raw_{name}", f"hit_{name}[cc_digi.keep]")
    return df


# ------------------------------------------------------------------ histograms


def _model(kind: str, name: str, axes: Sequence[Any]) -> Any:
    """A TH2D/TH3D model with the edges of ``hist`` axes (variable bins: the same bin for
    every value, whatever the axis type)."""
    ROOT = require_root()
    args: list[Any] = [name, name]
    for axis in axes:
        edges = np.asarray(axis.edges, dtype=np.float64)
        args += [edges.size - 1, edges]
    return getattr(ROOT.RDF, f"{kind}Model")(*args)


def book_histograms(
    df: Any,
    processor: Any,
    energy: str,
    hit_columns: tuple[str, str, str] = ("hit_layer", "hit_i", "hit_j"),
) -> dict[str, Any]:
    """Book ``processor``'s histograms (a :class:`~calocoffea.processors.histogram.
    HistogramProcessor`; ``energy_sum``, ``nhit``, ``occupancy``, ``longitudinal``) on ``df``
    from the per-hit energy column ``energy`` and the hits' (layer, i, j) columns, with the
    processor's axes and its rule: non-finite energies are left out. Returns RResultPtrs."""
    supported = ("energy_sum", "nhit", "occupancy", "longitudinal")
    other = [name for name in processor.histograms if name not in supported]
    if other:
        raise CalocoffeaError(f"book_histograms fills {', '.join(supported)}; not {other}")
    declare()
    a = processor._axes()
    layer, i, j = hit_columns
    df = df.Define("cc_ok", f"calocoffea::finite_mask({energy})")
    df = df.Define("cc_energy_sum", f"calocoffea::finite_sum({energy})")
    df = df.Define("cc_nhit", "int(Sum(cc_ok))")
    df = df.Define("cc_energy", f"{energy}[cc_ok]")
    df = df.Define("cc_layer", f"ROOT::RVecD({layer}[cc_ok])")
    df = df.Define("cc_i", f"ROOT::RVecD({i}[cc_ok])").Define("cc_j", f"ROOT::RVecD({j}[cc_ok])")
    df = df.Define("cc_beam", "ROOT::RVecD(cc_energy.size(), beam_energy)")
    booked = {
        "energy_sum": lambda: df.Histo2D(
            _model("TH2D", "energy_sum", (a["beam_energy"], a["energy_sum"])),
            "beam_energy", "cc_energy_sum",
        ),
        "nhit": lambda: df.Histo2D(
            _model("TH2D", "nhit", (a["beam_energy"], a["nhit"])), "beam_energy", "cc_nhit"
        ),
        "occupancy": lambda: df.Histo3D(
            _model("TH3D", "occupancy", (a["layer"], a["i"], a["j"])), "cc_layer", "cc_i", "cc_j"
        ),
        "longitudinal": lambda: df.Histo2D(
            _model("TH2D", "longitudinal", (a["beam_energy"], a["layer"])),
            "cc_beam", "cc_layer", "cc_energy",
        ),
    }  # fmt: skip
    return {name: booked[name]() for name in processor.histograms}


def to_numpy(histogram: Any) -> np.ndarray:
    """A filled TH1/TH2/TH3 as the array ``hist.Hist.values(flow=True)`` gives (axes in order,
    under- and overflow at both ends of each)."""
    shape = [histogram.GetNbinsX() + 2]
    if histogram.GetDimension() > 1:
        shape.append(histogram.GetNbinsY() + 2)
    if histogram.GetDimension() > 2:
        shape.append(histogram.GetNbinsZ() + 2)
    buffer = histogram.GetArray()
    buffer.reshape((histogram.GetNcells(),))
    return np.array(buffer, dtype=np.float64).reshape(shape[::-1]).T


__all__ = [
    "RAW_COLUMNS",
    "Calibrator",
    "book_histograms",
    "calibrator",
    "declare",
    "define_calibrated",
    "define_digitized",
    "digitizer",
    "events_rdataframe",
    "file_keys",
    "from_rdataframe",
    "require_root",
    "sofie_available",
    "to_numpy",
    "to_rdataframe",
]
