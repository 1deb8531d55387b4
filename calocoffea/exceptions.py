"""Every error and warning calocoffea raises, one class per failure.

Messages say what went wrong, why, and how to fix it. Errors that are about a bad
value also derive from :class:`ValueError` (or :class:`OSError` for files), so code
that already catches those keeps working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CalocoffeaError(Exception):
    """Base class of every calocoffea error."""


class UnknownPluginError(CalocoffeaError, ValueError):
    """A plugin name (geometry, calibration, reconstruction) that is not installed."""


class PluginLoadError(CalocoffeaError, ImportError):
    """An installed plugin whose entry point could not be imported."""


class PluginRuntimeError(CalocoffeaError, RuntimeError):
    """A plugin (calibration method, reconstruction) that raised while processing a chunk."""


class GeometryError(CalocoffeaError, ValueError):
    """An inconsistent geometry definition or a cell outside the geometry."""


class SimulationConfigError(CalocoffeaError, ValueError):
    """An invalid simulation request: particle, energy, event count, beam."""


class InputFileError(CalocoffeaError, OSError):
    """An input file that cannot be opened or is not a calocoffea events file."""


class MissingBranchError(InputFileError):
    """An input tree that lacks branches calocoffea needs."""


class StageMismatchError(InputFileError):
    """An input file at another processing stage (or in other units) than expected."""


class MissingCollectionError(InputFileError):
    """An EDM4hep collection (or ntuple tree) that the file does not have."""


class MissingTreeError(InputFileError):
    """An input file without the events tree."""


class CorruptFileError(InputFileError):
    """An input file whose bytes cannot be read back: cut short, or damaged baskets."""


class BranchTypeError(InputFileError):
    """A branch whose type cannot be read safely as its documented type."""


class HitCounterError(InputFileError):
    """Hit branches that do not share the one hit counter ``nhit``."""


class DuplicateHitError(InputFileError):
    """Raw or calibrated hits that read one cell more than once in one event."""


class EmptyInputError(InputFileError):
    """An input file whose events tree has no entries: nothing to process."""


class CellIDEncodingError(CalocoffeaError, ValueError):
    """A DD4hep/LCIO cell-ID encoding string that is malformed, overlaps fields, exceeds 64
    bits, or lacks a field the mapping needs; or values that do not fit their field."""


class BranchMapError(CalocoffeaError, ValueError):
    """A branch map (TOML) that is malformed or names branches the file does not have."""


class OutputPathError(CalocoffeaError, OSError):
    """An output path that cannot be written."""


class ConditionsError(CalocoffeaError, ValueError):
    """Detector conditions that are inconsistent, unknown or unreadable."""


class ConstantsError(CalocoffeaError, ValueError):
    """Calibration constants that are malformed, unreadable or miss cells."""


class GeometryMismatchError(CalocoffeaError, ValueError):
    """Inputs, conditions or constants made for different geometries."""


class ExecutorError(CalocoffeaError, ValueError):
    """An executor request that cannot be served (unknown name, bad worker count)."""


class MethodOptionsError(CalocoffeaError, ValueError):
    """A calibration or reconstruction method got an unknown or malformed option."""


class FitError(CalocoffeaError, RuntimeError):
    """A fit that cannot be attempted (too few points, empty input)."""


class ModelError(CalocoffeaError, ValueError):
    """An ONNX model or its model card that is missing, malformed, or does not match its
    inputs (graph signature, features)."""


class CalocoffeaWarning(UserWarning):
    """Base class of every calocoffea warning."""


class PluginLoadWarning(CalocoffeaWarning):
    """An installed plugin failed to load; the others are still available."""


class FitWarning(CalocoffeaWarning):
    """A fit converged poorly; its result carries ``valid=False``."""


class ClippingWarning(CalocoffeaWarning):
    """Values were clipped to the range a detector or a format can represent."""


class InvalidInputWarning(CalocoffeaWarning):
    """Input values (NaN or negative deposits) were counted and excluded."""


def did_you_mean(name: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to ``name`` (a case-insensitive
    match first), or "" when none is close: the hint every "unknown ..." message ends with."""
    options = list(choices)
    text = str(name)
    close = [c for c in options if c.lower() == text.lower()]
    close = close or difflib.get_close_matches(text, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
