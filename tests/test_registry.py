"""Tests of calocoffea.registry: entry-point discovery, caching, errors and warnings.

The third-party cases build fake entry points (as xarray's backend tests do): the
registry's ``entry_points`` is replaced by a function returning
:class:`importlib.metadata.EntryPoint` objects, and a plugin module is written to a
temporary directory on ``sys.path``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from calocoffea import registry
from calocoffea.exceptions import (
    GeometryError,
    PluginLoadError,
    PluginLoadWarning,
    UnknownPluginError,
)
from calocoffea.geometry import Geometry, geometry_names, get_geometry

BUILT_INS = ["calice_siw_ecal_ahcal", "cepc_ahcal", "cusi_module", "hgcal_ee", "tile_24x24"]
GROUP = "calocoffea.geometries"

PLUGIN_MODULE = """
from calocoffea.geometry import Geometry, Layer, Section
from calocoffea.grids import SquareGrid


def my_detector():
    return Geometry(
        name="my_detector",
        description="a third-party test detector",
        sections=(
            Section("hcal", (Layer("Fe", 10.0, "scintillator", 3.0),) * 4,
                    SquareGrid(4, 4, 30.0), stochastic_term=0.5),
        ),
    )


def not_a_geometry():
    return "I am a string"
"""


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    registry.clear_cache()
    yield
    registry.clear_cache()


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module ``calocoffea_test_plugin`` importable from a temporary directory."""
    name = "calocoffea_test_plugin"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


@pytest.fixture
def fake_entry_points(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[EntryPoint]], None]:
    """Install fake entry points for the geometry group (other groups stay empty)."""

    def install(eps: list[EntryPoint]) -> None:
        def entry_points(*, group: str) -> list[EntryPoint]:
            return [ep for ep in eps if ep.group == group]

        monkeypatch.setattr(registry, "entry_points", entry_points)
        registry.clear_cache()

    return install


def _ep(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=GROUP)


def _built_in_eps() -> list[EntryPoint]:
    return [_ep(name, f"calocoffea.geometries:{name}") for name in BUILT_INS]


# ---- the installed package -------------------------------------------------------------


def test_names_lists_the_built_ins() -> None:
    assert set(BUILT_INS) <= set(registry.names("geometries"))
    assert registry.names("geometries") == sorted(registry.names("geometries"))
    assert geometry_names() == registry.names("geometries")


def test_load_returns_the_factory() -> None:
    from calocoffea import geometries

    assert registry.load("geometries", "cepc_ahcal") is geometries.cepc_ahcal


def test_load_all_loads_every_built_in() -> None:
    loaded = registry.load_all("geometries")
    assert set(BUILT_INS) <= set(loaded)
    assert all(isinstance(factory(), Geometry) for factory in loaded.values())


def test_unknown_name_lists_installed() -> None:
    with pytest.raises(UnknownPluginError) as info:
        registry.load("geometries", "cepc_ahcall")
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "'cepc_ahcall'" in message
    for name in BUILT_INS:
        assert name in message
    assert "Did you mean 'cepc_ahcal'" in message


def test_unknown_geometry_through_get_geometry() -> None:
    with pytest.raises(ValueError, match=r"installed: .*hgcal_ee"):
        get_geometry("no_such_detector")


def test_unknown_family_raises() -> None:
    with pytest.raises(UnknownPluginError, match=r"unknown plugin family 'detectors'.*geometries"):
        registry.names("detectors")
    with pytest.raises(UnknownPluginError):
        registry.load("detectors", "cepc_ahcal")
    with pytest.raises(ValueError):
        registry.load_all("detectors")


# ---- fake entry points -----------------------------------------------------------------


def test_third_party_plugin_is_discovered_like_a_built_in(
    fake_entry_points: Callable[[list[EntryPoint]], None], plugin_module: str
) -> None:
    fake_entry_points([*_built_in_eps(), _ep("my_detector", f"{plugin_module}:my_detector")])
    assert registry.names("geometries") == sorted([*BUILT_INS, "my_detector"])
    assert "my_detector" in geometry_names()
    g = get_geometry("my_detector")
    assert isinstance(g, Geometry)
    assert g.name == "my_detector"
    assert g.n_cells == 4 * 16
    assert set(registry.load_all("geometries")) == {*BUILT_INS, "my_detector"}
    # and the built-ins still work beside it
    assert get_geometry("cepc_ahcal").n_cells == 12960


def test_discovery_is_cached_until_cleared(
    monkeypatch: pytest.MonkeyPatch, plugin_module: str
) -> None:
    calls: list[str] = []
    eps = [_ep("my_detector", f"{plugin_module}:my_detector")]

    def entry_points(*, group: str) -> list[EntryPoint]:
        calls.append(group)
        return [ep for ep in eps if ep.group == group]

    monkeypatch.setattr(registry, "entry_points", entry_points)
    registry.clear_cache()
    registry.names("geometries")
    registry.names("geometries")
    registry.load("geometries", "my_detector")
    assert calls == [GROUP]
    eps.append(_ep("my_other_detector", f"{plugin_module}:my_detector"))
    assert "my_other_detector" not in registry.names("geometries")
    registry.clear_cache()
    assert "my_other_detector" in registry.names("geometries")
    assert calls == [GROUP, GROUP]


def test_broken_plugin_warns_and_the_others_load(
    fake_entry_points: Callable[[list[EntryPoint]], None], plugin_module: str
) -> None:
    fake_entry_points(
        [
            *_built_in_eps(),
            _ep("broken", "calocoffea_no_such_module_xyz:factory"),
            _ep("missing_attr", f"{plugin_module}:no_such_factory"),
            _ep("my_detector", f"{plugin_module}:my_detector"),
        ]
    )
    with pytest.warns(PluginLoadWarning) as record:
        loaded = registry.load_all("geometries")
    assert set(loaded) == {*BUILT_INS, "my_detector"}
    messages = [str(w.message) for w in record if issubclass(w.category, PluginLoadWarning)]
    assert len(messages) == 2
    assert any("'broken'" in m and "calocoffea_no_such_module_xyz" in m for m in messages)
    assert any("'missing_attr'" in m for m in messages)
    # the broken one is still listed (it is installed) and loading it alone is an error
    assert "broken" in registry.names("geometries")
    with pytest.raises(PluginLoadError, match="could not be imported") as info:
        registry.load("geometries", "broken")
    assert isinstance(info.value.__cause__, ImportError)
    assert isinstance(info.value, ImportError)


def test_duplicate_name_warns_and_the_first_wins(
    fake_entry_points: Callable[[list[EntryPoint]], None], plugin_module: str
) -> None:
    fake_entry_points([*_built_in_eps(), _ep("cepc_ahcal", f"{plugin_module}:my_detector")])
    with pytest.warns(PluginLoadWarning, match="'cepc_ahcal'.*declared twice"):
        names = registry.names("geometries")
    assert names.count("cepc_ahcal") == 1
    assert get_geometry("cepc_ahcal").name == "cepc_ahcal"


def test_plugin_returning_something_else_is_a_geometry_error(
    fake_entry_points: Callable[[list[EntryPoint]], None], plugin_module: str
) -> None:
    fake_entry_points([_ep("bad", f"{plugin_module}:not_a_geometry")])
    with pytest.raises(GeometryError, match="returned str, not a Geometry"):
        get_geometry("bad")


def test_no_plugins_installed(fake_entry_points: Callable[[list[EntryPoint]], None]) -> None:
    fake_entry_points([])
    assert registry.names("geometries") == []
    assert registry.load_all("geometries") == {}
    with pytest.raises(UnknownPluginError, match=r"installed: \(none\)"):
        registry.load("geometries", "cepc_ahcal")
