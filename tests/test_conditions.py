"""Detector conditions and calibration constants: drawn, saved, reloaded, exchanged, checked."""

from __future__ import annotations

from pathlib import Path

import correctionlib
import numpy as np
import pytest

from calocoffea.conditions import PARAMETERS, Conditions, ConditionsConfig, nominal
from calocoffea.constants import CELL_PARAMETERS, Table, load_constants, nominal_constants
from calocoffea.exceptions import ConditionsError, ConstantsError, GeometryMismatchError
from calocoffea.geometry import decode_cellid, get_geometry

GEOMETRY = "cepc_ahcal"


@pytest.fixture(scope="module")
def conditions() -> Conditions:
    return nominal(GEOMETRY)


def test_drawn_tables_follow_their_parameters(conditions: Conditions) -> None:
    n = conditions.n_cells
    assert n == 12960
    for name, p in PARAMETERS.items():
        values = conditions.values[name]
        assert values.shape == (n,)
        rounding = 0.5 if name == "n_pixels" else 0.0  # drawn, then rounded to whole pixels
        assert abs(values.mean() - p.mean) <= 5 * p.spread / np.sqrt(n) + rounding, name
        if p.spread:
            assert values.std() == pytest.approx(p.spread, rel=5 / np.sqrt(2 * n)), name
    assert np.all(conditions.values["n_pixels"] == np.rint(conditions.values["n_pixels"]))
    assert not conditions.dead.any() and not conditions.noisy.any()
    assert conditions.mip_adc.mean() == pytest.approx(345.0, rel=0.01)


def test_draws_are_reproducible_and_independent(conditions: Conditions) -> None:
    again = nominal(GEOMETRY)
    for name in PARAMETERS:
        assert np.array_equal(again.values[name], conditions.values[name])
    other = Conditions.draw(GEOMETRY, seed=7, config=ConditionsConfig(dead_fraction=0.01))
    assert not np.array_equal(other.values["spe_adc"], conditions.values["spe_adc"])
    assert 0.005 < other.dead.mean() < 0.015
    # overriding one parameter leaves the other draws untouched
    wide = Conditions.draw(GEOMETRY, config=ConditionsConfig(overrides={"spe_adc": (30.0, 7.0)}))
    assert np.array_equal(wide.values["pedestal_hg_adc"], conditions.values["pedestal_hg_adc"])
    assert wide.values["spe_adc"].std() > 6


def test_save_and_load_round_trip(conditions: Conditions, tmp_path: Path) -> None:
    path = conditions.save(tmp_path / "c.npz")
    loaded = Conditions.load(path)
    assert loaded.header() == conditions.header()
    for name in PARAMETERS:
        assert np.array_equal(loaded.values[name], conditions.values[name])
    (tmp_path / "bad.npz").write_text("not numpy")
    with pytest.raises(ConditionsError, match=r"bad\.npz"):
        Conditions.load(tmp_path / "bad.npz")


def test_bad_conditions_are_refused(conditions: Conditions) -> None:
    with pytest.raises(ConditionsError, match="unknown conditions parameter"):
        ConditionsConfig(overrides={"spe": (1.0, 0.1)})
    with pytest.raises(ConditionsError, match="unknown conditions table"):
        conditions.with_values(gain=np.ones(conditions.n_cells))
    with pytest.raises(ConditionsError, match="shape"):
        conditions.with_values(spe_adc=np.ones(3))
    with pytest.raises(GeometryMismatchError, match="hgcal_ee"):
        conditions.check_geometry(get_geometry("hgcal_ee"), "the input")


# ------------------------------------------------------------------------------ constants


def test_correctionlib_and_dense_give_the_same_values(
    conditions: Conditions, tmp_path: Path
) -> None:
    constants = nominal_constants(conditions)
    path = constants.save(tmp_path / "c.json")
    evaluator = correctionlib.CorrectionSet.from_file(str(path))
    geometry = get_geometry(GEOMETRY)
    dense = load_constants(path).dense(geometry)
    sample = np.random.default_rng(1).choice(geometry.n_cells, 500, replace=False)
    _, layer, i, j = decode_cellid(geometry.cellids()[sample])
    for name in CELL_PARAMETERS:
        from_json = evaluator[name].evaluate("value", layer, i, j)
        # correctionlib's JSON parser may round the last bit of a double differently
        assert np.allclose(from_json, dense.cells[name][sample], rtol=4e-16, atol=0), name
        assert np.all(evaluator[name].evaluate("uncertainty", layer, i, j) == 0)
    assert np.array_equal(dense.cells["spe_adc"], conditions.values["spe_adc"])
    layers = np.arange(geometry.n_layers)
    from_json = evaluator["sampling_fraction"].evaluate("value", layers)
    assert np.allclose(from_json, dense.layers["sampling_fraction"], rtol=4e-16, atol=0)
    provenance = load_constants(path).provenance
    assert provenance.geometry_hash == geometry.hash and provenance.method == "nominal"


def test_constants_for_another_geometry_are_an_error(conditions: Conditions) -> None:
    constants = nominal_constants(conditions)
    with pytest.raises(GeometryMismatchError, match=r"cepc_ahcal.*hgcal_ee"):
        constants.dense(get_geometry("hgcal_ee"))


def test_missing_cells_error_or_counted_default(conditions: Conditions) -> None:
    geometry = get_geometry(GEOMETRY)
    constants = nominal_constants(conditions)
    table = constants.tables["spe_adc"]
    partial = Table("cell", table.keys[100:], table.values[100:], table.uncertainties[100:])
    incomplete = constants.replace(spe_adc=partial)
    with pytest.raises(ConstantsError, match="misses 100 of 12960 cells"):
        incomplete.dense(geometry)
    dense = incomplete.dense(geometry, defaults={"spe_adc": 30.0})
    assert dense.missing == {"spe_adc": 100}
    assert np.all(dense.cells["spe_adc"][:100] == 30.0)
    foreign = Table("cell", np.array([7], np.int64), np.ones(1), np.zeros(1))
    with pytest.raises(ConstantsError, match="not cells of"):
        constants.replace(scale=foreign).dense(geometry)


def test_unreadable_constants_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"schema_version": 2, "corrections": []}')
    with pytest.raises(ConstantsError, match=r"c\.json"):
        load_constants(path)
