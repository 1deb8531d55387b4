"""Bad input: a clear error and no output, or counted, excluded and warned about."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from calocoffea.conditions import nominal
from calocoffea.constants import nominal_constants
from calocoffea.digitization import DigitizationOptions
from calocoffea.exceptions import (
    ExecutorError,
    GeometryMismatchError,
    InvalidInputWarning,
    StageMismatchError,
)
from calocoffea.io import read_events, read_metadata, write_events
from calocoffea.runner import RunOptions, calibrate_files, digitize_files, histogram_files
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("bad")
    return simulate("cepc_ahcal", "e-", Beam(energies_gev=(20.0,)), 40, 2, directory / "s.root")


def _with_hit_field(path: Path, out: Path, name: str, change) -> Path:  # type: ignore[no-untyped-def]
    events = read_events(path)
    values = ak.to_numpy(ak.flatten(events.hits[name])).copy()
    change(values)
    hits = ak.with_field(events.hits, ak.unflatten(values, ak.num(events.hits)), name)
    return write_events(out, [ak.with_field(events, hits, "hits")], read_metadata(path))


def test_nan_and_negative_deposits_are_counted_excluded_and_warned(sim: Path) -> None:
    def spoil(energy: np.ndarray) -> None:
        energy[:3] = [np.nan, -1.0, np.inf]

    bad = _with_hit_field(sim, sim.with_name("nan.root"), "energy", spoil)
    options = RunOptions()

    with pytest.warns(InvalidInputWarning, match="3 hits with NaN"):
        result = digitize_files([bad], sim.with_name("nan-raw.root"), run_options=options,
                                options=DigitizationOptions(zero_suppression=False))  # fmt: skip
    step = result.cutflow["digitize"]
    assert step["removed"]["invalid_deposit"] == 3
    assert step["hits_out"] == step["hits_in"] - 3
    raw = read_events(result.output)
    assert np.all(np.isfinite(ak.to_numpy(ak.flatten(raw.hits.edep))))
    assert np.all(ak.to_numpy(ak.flatten(raw.hits.edep)) >= 0)


def test_unknown_cells_are_an_error_and_nothing_is_written(sim: Path) -> None:
    def spoil(cellid: np.ndarray) -> None:
        cellid[5] = 12345

    bad = _with_hit_field(sim, sim.with_name("cells.root"), "cellid", spoil)
    out = sim.with_name("cells-raw.root")
    with pytest.raises(GeometryMismatchError, match=r"not cells of 'cepc_ahcal'.*12345"):
        digitize_files([bad], out)
    assert not out.exists()
    assert not list(out.parent.glob(".cells-raw*"))


def test_wrong_stage_for_each_step(sim: Path) -> None:
    raw = digitize_files([sim], sim.with_name("stage-raw.root")).output
    assert raw is not None
    with pytest.raises(StageMismatchError, match=r"stage-raw\.root.*'raw'.*'sim'"):
        digitize_files([raw], sim.with_name("twice.root"))
    assert not sim.with_name("twice.root").exists()
    constants = nominal_constants(nominal("cepc_ahcal"))
    with pytest.raises(StageMismatchError, match=r"s\.root.*'sim'.*'raw'"):
        calibrate_files([sim], sim.with_name("mip.root"), constants)
    with pytest.raises(StageMismatchError):
        histogram_files([sim], None, stage="sim", constants=constants)
    assert not sim.with_name("mip.root").exists()


def test_constants_and_conditions_of_another_geometry(sim: Path) -> None:
    other = nominal("hgcal_ee")
    with pytest.raises(GeometryMismatchError, match="hgcal_ee"):
        digitize_files([sim], sim.with_name("geo-raw.root"), conditions=other)
    assert not sim.with_name("geo-raw.root").exists()


def test_bad_executor_options() -> None:
    with pytest.raises(ExecutorError, match="unknown executor 'spark'"):
        RunOptions("spark")
    with pytest.raises(ExecutorError, match="workers"):
        RunOptions("futures", workers=0)
    with pytest.raises(ExecutorError, match="scheduler"):
        RunOptions("iterative", scheduler="tcp://127.0.0.1:1")


def test_unreachable_scheduler(sim: Path) -> None:
    options = RunOptions("dask", scheduler="tcp://127.0.0.1:9", connect_timeout_s=2)
    with pytest.raises(ExecutorError, match="cannot reach the Dask scheduler"):
        digitize_files([sim], sim.with_name("dask-raw.root"), run_options=options)
    assert not sim.with_name("dask-raw.root").exists()
