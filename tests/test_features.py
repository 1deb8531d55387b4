"""Columnar model inputs (calocoffea.models.features) against per-event loops."""

from __future__ import annotations

import itertools

import awkward as ak
import numpy as np
import pytest

from calocoffea.exceptions import ModelError
from calocoffea.geometry import decode_cellid, get_geometry
from calocoffea.io import read_events
from calocoffea.models.features import SHAPE_NAMES, cell_images, layer_sums, shower_shapes
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.run import simulate


@pytest.fixture(scope="module")
def hits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    path = simulate("cepc_ahcal", "e-", Beam((10.0, 40.0), size_mm=30.0), 40,
                    5, tmp_path_factory.mktemp("features") / "e.root")  # fmt: skip
    events = read_events(path)
    counts = ak.to_numpy(ak.num(events.hits)).astype(np.int64)
    counts[3] = 0  # an event without hits
    keep = np.ones(int(ak.sum(ak.num(events.hits))), dtype=bool)
    first = int(ak.sum(ak.num(events.hits)[:3]))
    keep[first : first + int(ak.num(events.hits)[3])] = False
    flat = {name: ak.to_numpy(ak.flatten(events.hits[name]))[keep]
            for name in ("layer", "x", "y", "energy", "cellid")}  # fmt: skip
    flat["counts"] = counts
    _, _, flat["i"], flat["j"] = decode_cellid(flat["cellid"])
    return flat


def _events(h: dict[str, np.ndarray]) -> list[slice]:
    edges = np.concatenate(([0], np.cumsum(h["counts"])))
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def test_layer_sums_match_a_loop(hits: dict[str, np.ndarray]) -> None:
    sums = layer_sums(hits["layer"], hits["energy"], hits["counts"], 40)
    for k, s in enumerate(_events(hits)):
        expected = np.bincount(hits["layer"][s], weights=hits["energy"][s], minlength=40)
        np.testing.assert_allclose(sums[k], expected, rtol=1e-12)
    assert np.all(sums[3] == 0)


def test_shower_shapes_match_a_loop(hits: dict[str, np.ndarray]) -> None:
    shapes = shower_shapes(hits["layer"], hits["x"], hits["y"], hits["energy"], hits["counts"])
    assert shapes.shape == (hits["counts"].size, len(SHAPE_NAMES))
    assert np.all(np.isfinite(shapes))
    for k, s in enumerate(_events(hits)):
        e = hits["energy"][s].astype(np.float64)
        if e.size == 0:
            np.testing.assert_array_equal(shapes[k], [0, 0, 0, 0, 0, 0, 0, -1])
            continue
        lay = hits["layer"][s].astype(np.float64)
        x, y = hits["x"][s], hits["y"][s]
        depth = np.average(lay, weights=e)
        r = np.hypot(x - np.average(x, weights=e), y - np.average(y, weights=e))
        expected = [e.sum(), e.size, depth, np.sqrt(np.average((lay - depth) ** 2, weights=e)),
                    np.average(r, weights=e), np.sqrt(np.average(r**2, weights=e)),
                    e.sum() / e.size, lay.min()]  # fmt: skip
        np.testing.assert_allclose(shapes[k], expected, rtol=1e-9, atol=1e-9)


def test_cell_images_hold_every_hit(hits: dict[str, np.ndarray]) -> None:
    grid = get_geometry("cepc_ahcal").sections[0].grid
    shape = (40, grid.nx, grid.ny)
    images = cell_images(hits["layer"], hits["i"], hits["j"], hits["energy"], hits["counts"], shape)
    assert images.shape == (hits["counts"].size, *shape) and images.dtype == np.float32
    for k, s in enumerate(_events(hits)):
        image = np.zeros(shape)
        np.add.at(image, (hits["layer"][s], hits["i"][s], hits["j"][s]), hits["energy"][s])
        np.testing.assert_allclose(images[k], image, rtol=1e-6)


def test_bad_input() -> None:
    with pytest.raises(ModelError, match="do not match"):
        layer_sums([0, 1], [1.0, 2.0], [1], 40)
    with pytest.raises(ModelError, match=r"0\.\.39"):
        layer_sums([0, 40], [1.0, 2.0], [2], 40)
    with pytest.raises(ModelError, match="non-finite"):
        shower_shapes([0], [0.0], [0.0], [np.nan], [1])
    with pytest.raises(ModelError, match="select the section"):
        cell_images([0], [18], [0], [1.0], [1], (40, 18, 18))
    assert layer_sums([], [], [0, 0], 40).shape == (2, 40)
