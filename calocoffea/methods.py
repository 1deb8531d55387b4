"""Base classes of calibration methods and reconstruction models (the plugin families).

What to use when:

- subclass :class:`CalibrationMethod` to add a way of learning constants: ``collect`` runs
  per chunk and returns something addable (histograms, counters; or, with
  ``needs_events = True``, the events themselves, which the runner writes as per-chunk
  shards so that only shard paths cross Dask); ``fit`` runs once on the sum and returns
  :class:`~calocoffea.constants.Constants` carrying only the tables the method learns;
  :func:`~calocoffea.constants.Constants.update` layers them over a starting set.
- subclass :class:`ReconstructionMethod` to add an energy estimator: ``predict(events)``
  returns one energy [GeV] per event.
- :func:`calibration_method` / :func:`reconstruction_method` build a plugin by name with
  its typed options; an unknown name lists the installed ones.

Both families are entry-point groups (``calocoffea.calibrations``,
``calocoffea.reconstructions``); built-in methods are declared in calocoffea's own
``pyproject.toml`` exactly as a third-party package declares its own (``examples/`` has a
template). Options are a frozen dataclass ``Options`` on the class, so every option has a
type, a default and a docstring next to it, and a typo is an error that lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from abc import ABC, abstractmethod
from typing import Any, ClassVar, cast

import numpy as np
import numpy.typing as npt

from calocoffea import registry
from calocoffea.constants import Constants, DenseConstants, design_constants, load_constants
from calocoffea.exceptions import MethodOptionsError, did_you_mean
from calocoffea.geometry import Geometry, get_geometry


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """A method without options."""


#: Attributes rebuilt where the method runs rather than pickled.
_NOT_PICKLED = frozenset({"detector", "_dense"})


class _Method:
    """What both families share: a name, a description, a URL and typed options."""

    #: One line: what the method does and where it comes from.
    description: ClassVar[str] = ""
    #: Where to read about it (paper, documentation).
    url: ClassVar[str] = ""
    #: The frozen dataclass of the method's options.
    Options: ClassVar[type] = NoOptions

    def __init__(self, geometry: str, options: Any = None, **kwargs: Any) -> None:
        if options is not None and kwargs:
            raise MethodOptionsError(
                f"{type(self).__name__}: give options either as an Options object or as "
                "keywords, not both"
            )
        self.geometry = geometry
        self.options = options if options is not None else make_options(self.Options, kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(geometry={self.geometry!r}, options={self.options!r})"

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without cached objects (rebuilt on the worker)."""
        return {k: v for k, v in self.__dict__.items() if k not in _NOT_PICKLED}

    @functools.cached_property
    def detector(self) -> Geometry:
        """The :class:`~calocoffea.geometry.Geometry` named by ``geometry``."""
        return get_geometry(self.geometry)


def make_options(cls: type, values: dict[str, Any]) -> Any:
    """``cls(**values)`` with a clear error for unknown names and values of the wrong type."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        hints = ", ".join(f"{name!r}{did_you_mean(name, known)}" for name in unknown)
        raise MethodOptionsError(
            f"unknown option(s) {hints} for {cls.__qualname__}; "
            f"valid: {', '.join(known) or '(none)'} (see `calocoffea plugins show NAME`)"
        )
    converted = {name: _convert(cls, name, value, known[name].default, list(known))
                 for name, value in values.items()}  # fmt: skip
    return cls(**converted)


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True,
             "0": False, "false": False, "no": False, "off": False}  # fmt: skip


def _convert(cls: type, name: str, value: Any, default: Any, valid: list[str]) -> Any:
    """``value`` as the type of the option's default (strings from the command line are
    parsed); a clear error if it cannot be."""
    if default is dataclasses.MISSING or default is None:
        return value
    kind = type(default)
    problem = f"option {name!r} of {cls.__qualname__} must be of type {kind.__name__}"
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOLEANS:
            return _BOOLEANS[value.lower()]
        raise MethodOptionsError(f"{problem} (true/false), got {value!r}")
    if isinstance(default, int | float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return kind(value) if kind is float or float(value).is_integer() else value
        if isinstance(value, str):
            try:
                return kind(value)
            except ValueError:
                pass
        raise MethodOptionsError(f"{problem}, got {value!r}; options: {', '.join(valid)}")
    if isinstance(default, str) and not isinstance(value, str | os.PathLike):
        raise MethodOptionsError(f"{problem}, got {value!r}")
    return str(value) if isinstance(default, str) else value


class CalibrationMethod(_Method, ABC):
    """Learns constants: ``collect`` per chunk, ``fit`` once, ``apply`` to hits.

    Class variables say what input the method needs: ``run_type`` (the kind of run, e.g.
    ``"muon"``, ``"pedestal"``; checked against the file metadata when the file says) and
    ``input_stage`` (``raw``, ``mip``, ...).
    """

    run_type: ClassVar[str] = "physics"
    input_stage: ClassVar[str] = "raw"
    #: True if ``fit`` needs whole events: ``collect`` then returns the chunk's events
    #: (event fields, hit counts, hit fields) and the runner writes them as a shard.
    needs_events: ClassVar[bool] = False

    @abstractmethod
    def collect(self, events: Any) -> Any:
        """Per-chunk summary of ``events`` (coffea NanoEvents); must be addable."""

    @abstractmethod
    def fit(self, accumulated: Any) -> Constants:
        """Constants from the sum of ``collect`` over all chunks (or the shard paths)."""

    def apply(
        self,
        adc: npt.NDArray[np.float64],
        gain: npt.NDArray[np.integer],
        flags: npt.NDArray[np.integer],
        cell: npt.NDArray[np.int64],
        layer: npt.NDArray[np.integer],
        constants: Constants,
    ) -> npt.NDArray[np.float64]:
        """Calibrated energies [MIP] of flat raw hits; the inputs are not modified.

        The default runs the standard chain (:func:`calocoffea.calibration.calibrate`) with
        the constants; methods whose constants enter differently override it."""
        from calocoffea.calibration import calibrate

        dense = constants.dense(self.detector)
        return calibrate(adc, gain, flags, cell, layer, dense).energy


def require_torch(who: str) -> Any:
    """torch, or a ModuleNotFoundError that names ``who`` needs it and how to install the
    optional extra ``train``."""
    try:
        import torch
    except ImportError as err:
        raise ModuleNotFoundError(
            f"{who} train(s) with torch, the optional extra 'train': install torch first and "
            "alone, `pip install torch==2.13.0` (a CPU build; an unpinned requirement pulls a "
            "multi-GB CUDA build), then `pip install 'calocoffea[train]'`",
            name="torch",
        ) from err
    return torch


def fit_quality_json(value: Any) -> Any:
    """A method's fit_quality as plain JSON types (numpy scalars and arrays converted)."""
    if isinstance(value, dict):
        return {str(k): fit_quality_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [fit_quality_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return fit_quality_json(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        return float(value)
    return value


class PriorConstants:
    """For methods that calibrate hits with a starting set before fitting: the option
    ``constants`` names it (a constants file; empty: the design constants)."""

    geometry: str
    options: Any
    detector: Geometry

    def prior(self) -> Constants:
        """The constants the hits are calibrated with before the fit."""
        if self.options.constants:
            return load_constants(self.options.constants)
        return design_constants(self.geometry)

    @functools.cached_property
    def _dense(self) -> DenseConstants:
        """The prior as dense arrays (built once per process, not pickled)."""
        return self.prior().dense(self.detector)


class ReconstructionMethod(_Method, ABC):
    """Estimates the energy of each event [GeV] from its hits at ``input_stage``."""

    input_stage: ClassVar[str] = "gev"

    @abstractmethod
    def predict(self, events: Any) -> npt.NDArray[np.float64]:
        """One energy [GeV] per event of ``events`` (coffea NanoEvents)."""


def calibration_method(name: str, geometry: str, **options: Any) -> CalibrationMethod:
    """The calibration plugin ``name`` for ``geometry`` with its options."""
    cls = registry.load("calibrations", name)
    return _instantiate(cls, CalibrationMethod, name, geometry, options)


def reconstruction_method(name: str, geometry: str, **options: Any) -> ReconstructionMethod:
    """The reconstruction plugin ``name`` for ``geometry`` with its options."""
    cls = registry.load("reconstructions", name)
    return _instantiate(cls, ReconstructionMethod, name, geometry, options)


def _instantiate(cls: Any, base: type, name: str, geometry: str, options: dict[str, Any]) -> Any:
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise MethodOptionsError(
            f"plugin {name!r} is {cls!r}, not a subclass of calocoffea.methods.{base.__name__}; "
            "its package declares a wrong entry point"
        )
    return cast(Any, cls)(geometry, **options)


def parse_options(items: list[str] | None) -> dict[str, str]:
    """``["key=value", ...]`` from the command line as a dict (values converted later)."""
    parsed = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MethodOptionsError(f"option {item!r} must be written KEY=VALUE")
        parsed[key.strip()] = value.strip()
    return parsed


__all__ = [
    "CalibrationMethod",
    "NoOptions",
    "ReconstructionMethod",
    "calibration_method",
    "make_options",
    "parse_options",
    "reconstruction_method",
]
