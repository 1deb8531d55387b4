"""Plugin discovery through entry points: one mechanism for every plugin family.

Built-in plugins are declared in calocoffea's own ``pyproject.toml`` exactly as a
third-party package would declare its own, so both are found the same way::

    [project.entry-points."calocoffea.geometries"]
    my_detector = "mypackage.geometry:my_detector"

Discovery is cached per group. A plugin that fails to import gives a
:class:`~calocoffea.exceptions.PluginLoadWarning` and leaves the others usable;
an unknown name raises :class:`~calocoffea.exceptions.UnknownPluginError` listing
what is installed.
"""

from __future__ import annotations

import difflib
import functools
import warnings
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from calocoffea.exceptions import PluginLoadError, PluginLoadWarning, UnknownPluginError

#: Entry-point groups, by family name. Later issues add families here.
GROUPS: dict[str, str] = {
    "geometries": "calocoffea.geometries",
}
#: How one plugin of a family is called in messages.
SINGULAR: dict[str, str] = {"geometries": "geometry"}


def _group(family: str) -> str:
    try:
        return GROUPS[family]
    except KeyError:
        raise UnknownPluginError(
            f"unknown plugin family {family!r}; families are {', '.join(sorted(GROUPS))}"
        ) from None


@functools.cache
def _entry_points(group: str) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        # the first distribution to claim a name wins; a duplicate is reported
        if ep.name in found:
            warnings.warn(
                f"plugin {ep.name!r} in group {group!r} is declared twice "
                f"({found[ep.name].value} and {ep.value}); using the first",
                PluginLoadWarning,
                stacklevel=3,
            )
            continue
        found[ep.name] = ep
    return found


def names(family: str) -> list[str]:
    """Names of the installed plugins of a family, sorted."""
    return sorted(_entry_points(_group(family)))


@functools.cache
def _load(group: str, name: str) -> Any:
    ep = _entry_points(group)[name]
    try:
        return ep.load()
    except Exception as err:
        raise PluginLoadError(
            f"plugin {name!r} of group {group!r} could not be imported from {ep.value!r}: "
            f"{err}. Reinstall the package that provides it, or uninstall it."
        ) from err


def load(family: str, name: str) -> Any:
    """The object an entry point names; raises UnknownPluginError listing valid names."""
    group = _group(family)
    available = _entry_points(group)
    if name not in available:
        close = difflib.get_close_matches(name, list(available), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownPluginError(
            f"unknown {SINGULAR.get(family, family)} {name!r}; installed: "
            f"{', '.join(sorted(available)) or '(none)'}.{hint}"
        )
    return _load(group, name)


def load_all(family: str) -> dict[str, Any]:
    """Every plugin of a family that loads; the broken ones give a warning each."""
    loaded: dict[str, Any] = {}
    for name in names(family):
        try:
            loaded[name] = load(family, name)
        except PluginLoadError as err:
            warnings.warn(str(err), PluginLoadWarning, stacklevel=2)
    return loaded


def clear_cache() -> None:
    """Forget discovered entry points (after installing a plugin at run time, in tests)."""
    _entry_points.cache_clear()
    _load.cache_clear()
