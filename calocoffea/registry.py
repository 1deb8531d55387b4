"""Plugin discovery through entry points: one mechanism for every plugin family.

Built-in plugins are declared in calocoffea's own ``pyproject.toml`` exactly as a
third-party package would declare its own, so both are found the same way::

    [project.entry-points."calocoffea.geometries"]
    my_detector = "mypackage.geometry:my_detector"

Discovery is cached per group. A plugin that fails to import gives a
:class:`~calocoffea.exceptions.PluginLoadWarning` and leaves the others usable;
an unknown name raises :class:`~calocoffea.exceptions.UnknownPluginError` listing
what is installed.

What to use when:

- :func:`names`, :func:`load`, :func:`load_all` -- the plugins of one family, for code.
- :func:`inventory` -- every installed plugin with its package, version, description and
  whether it loads (:class:`PluginInfo`); never raises for a broken plugin. What
  ``calocoffea plugins list`` shows.
- :func:`find` -- the plugins of any family called ``name`` (``calocoffea plugins show``).
- :func:`name_of` -- the installed name of a plugin object (for messages).
- :func:`clear_cache` -- after installing a plugin at run time, and in tests.
"""

from __future__ import annotations

import difflib
import functools
import warnings
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

from calocoffea.exceptions import PluginLoadError, PluginLoadWarning, UnknownPluginError

#: Entry-point groups, by family name. Later issues add families here.
GROUPS: dict[str, str] = {
    "geometries": "calocoffea.geometries",
    "calibrations": "calocoffea.calibrations",
    "reconstructions": "calocoffea.reconstructions",
}
#: How one plugin of a family is called in messages.
SINGULAR: dict[str, str] = {
    "geometries": "geometry",
    "calibrations": "calibration method",
    "reconstructions": "reconstruction method",
}


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
        dist = getattr(getattr(ep, "dist", None), "name", None)
        package = f"the package {dist!r}" if dist else "the package that provides it"
        reinstall = f"pip install --force-reinstall {dist}" if dist else "pip install ..."
        raise PluginLoadError(
            f"plugin {name!r} of group {group!r} could not be imported: entry point "
            f"{ep.value!r} (module {ep.module!r}) raised {type(err).__name__}: {err}. "
            f"Check that {package} is installed in this environment and imports "
            f"(python -c 'import {ep.module}'); reinstall it ({reinstall}) or uninstall it."
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


def name_of(obj: Any, family: str) -> str | None:
    """The name the class ``obj`` (or the class of the instance ``obj``) is installed under
    in ``family``, or None: for messages about a plugin object."""
    cls = obj if isinstance(obj, type) else type(obj)
    value = f"{cls.__module__}:{cls.__qualname__}"
    for name, ep in _entry_points(_group(family)).items():
        if ep.value.replace(" ", "") == value:
            return name
    return None


def load_all(family: str) -> dict[str, Any]:
    """Every plugin of a family that loads; the broken ones give a warning each."""
    loaded: dict[str, Any] = {}
    for name in names(family):
        try:
            loaded[name] = load(family, name)
        except PluginLoadError as err:
            warnings.warn(str(err), PluginLoadWarning, stacklevel=2)
    return loaded


@dataclass(frozen=True)
class PluginInfo:
    """One installed plugin: where it comes from, what it is, and whether it loads."""

    family: str
    name: str
    #: the object the entry point names, ``module:attribute``
    value: str
    #: the distribution that declares it, and its version (None if unknown)
    package: str | None
    version: str | None
    status: Literal["ok", "broken"]
    #: the plugin's ``description`` class variable, or the first line of its docstring
    description: str = ""
    url: str = ""
    #: why a broken plugin does not load (``ModuleNotFoundError: No module named 'x'``)
    error: str = ""
    #: the loaded object (None when broken)
    obj: Any = field(default=None, repr=False, compare=False)

    @property
    def source(self) -> str:
        """``package==version``, or ``?`` when the entry point has no distribution."""
        if self.package is None:
            return "?"
        return f"{self.package}=={self.version}" if self.version else self.package


def inventory(family: str | None = None) -> list[PluginInfo]:
    """Every plugin of ``family`` (default: of every family), sorted by family and name.

    Each plugin is imported; one that fails is listed as ``broken`` with its error and
    the others are unaffected. No warning is given for broken plugins (the result says)."""
    families = [family] if family is not None else sorted(GROUPS)
    infos = []
    for fam in families:
        group = _group(fam)
        for name, ep in sorted(_entry_points(group).items()):
            infos.append(_info(fam, group, name, ep))
    return infos


def find(name: str, family: str | None = None) -> list[PluginInfo]:
    """The plugins called ``name`` in ``family`` (default: in any family).

    Raises UnknownPluginError listing the installed plugins when there is none."""
    found = [info for info in inventory(family) if info.name == name]
    if found:
        return found
    if family is not None:
        load(family, name)  # raises the family's UnknownPluginError
    installed = {fam: names(fam) for fam in sorted(GROUPS)}
    every = [n for ns in installed.values() for n in ns]
    close = difflib.get_close_matches(name, every, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    listing = "; ".join(f"{fam}: {', '.join(ns) or '(none)'}" for fam, ns in installed.items())
    raise UnknownPluginError(f"unknown plugin {name!r}; installed: {listing}.{hint}")


def _info(family: str, group: str, name: str, ep: EntryPoint) -> PluginInfo:
    dist = getattr(ep, "dist", None)
    package = getattr(dist, "name", None) if dist is not None else None
    version = getattr(dist, "version", None) if dist is not None else None
    common = {"family": family, "name": name, "value": ep.value}
    try:
        obj = _load(group, name)
    except PluginLoadError as err:
        cause = err.__cause__ or err
        return PluginInfo(
            **common,
            package=package,
            version=version,
            status="broken",
            error=f"{type(cause).__name__}: {cause}",
        )
    return PluginInfo(
        **common,
        package=package,
        version=version,
        status="ok",
        description=_description(obj),
        url=str(getattr(obj, "url", "") or ""),
        obj=obj,
    )


def _description(obj: Any) -> str:
    """The ``description`` class variable, else the first line of the docstring."""
    description = getattr(obj, "description", "")
    if isinstance(description, str) and description:
        return description
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().split("\n", 1)[0].strip()


def clear_cache() -> None:
    """Forget discovered entry points (after installing a plugin at run time, in tests)."""
    _entry_points.cache_clear()
    _load.cache_clear()
