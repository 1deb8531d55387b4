"""Scoring constants against pseudo-data truth (calocoffea.scoring)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calocoffea.exceptions import ConstantsError
from calocoffea.scoring import expected_precision, score_constants, shower_coverage


def test_score_by_hand() -> None:
    true = np.array([1.0, 2.0, 4.0, 8.0])
    fitted = np.array([1.1, 1.8, 4.0, 8.0])
    score = score_constants(fitted, true)
    assert score.cells == score.of == 4 and score.fraction == 1.0
    assert math.isclose(score.rms, math.sqrt((0.1**2 + 0.1**2) / 4))
    assert math.isclose(score.bias, 0.0, abs_tol=1e-15)
    assert math.isclose(score.mae, 0.3 / 4) and math.isclose(score.mae_relative, 0.2 / 4)
    assert math.isclose(score.r2, 1.0 - 0.05 / np.sum((true - true.mean()) ** 2))
    masked = score_constants(fitted, true, [False, True, True, True])
    assert masked.cells == 3 and masked.of == 4 and math.isclose(masked.fraction, 0.75)
    assert "3 of 4 cells (75.0 %)" in masked.line()


def test_common_scale_is_separated() -> None:
    rng = np.random.default_rng(1)
    true = rng.uniform(0.8, 1.2, 1000)
    score = score_constants(1.05 * true, true)
    assert math.isclose(score.rms, 0.05) and math.isclose(score.bias, 0.05)
    assert score.rms_scaled < 1e-12
    assert score.r2 < 1.0  # R² counts the scale


def test_no_information_scores_r2_near_zero() -> None:
    rng = np.random.default_rng(2)
    true = rng.normal(1.0, 0.1, 100_000)
    score = score_constants(np.full(true.size, true.mean()), true)
    assert abs(score.r2) < 1e-9
    assert abs(score.true_spread - 0.1) < 0.003  # 1/sqrt(2n) relative error: 0.2 %
    assert score.rms > 0.09  # no better than the spread


def test_bad_input_is_refused() -> None:
    with pytest.raises(ConstantsError, match="shapes"):
        score_constants(np.ones(3), np.ones(4))
    with pytest.raises(ConstantsError, match=r"non-positive truth \(cells \[1\]\).*mask"):
        score_constants(np.ones(3), np.array([1.0, 0.0, 1.0]))
    assert score_constants(np.ones(3), np.array([1.0, 0.0, 1.0]), [1, 0, 1]).cells == 2
    with pytest.raises(ConstantsError, match="selects none"):
        score_constants(np.ones(3), np.ones(3), np.zeros(3, bool))
    with pytest.raises(ConstantsError, match="do not match"):
        shower_coverage([0, 1], [1.0, 1.0], [3], 4)
    with pytest.raises(ConstantsError, match=r"0\.\.3"):
        shower_coverage([0, 4], [1.0, 1.0], [2], 4)


def test_coverage_and_precision() -> None:
    # shower 0: cells 0, 1 with 99 % and 1 %; shower 1: cell 1 alone; shower 2: cell 2
    cell = np.array([0, 1, 1, 2])
    energy = np.array([99.0, 1.0, 5.0, 3.0])
    counts = np.array([2, 1, 1])
    np.testing.assert_array_equal(shower_coverage(cell, energy, counts, 4, 0.01), [1, 2, 1, 0])
    np.testing.assert_array_equal(shower_coverage(cell, energy, counts, 4, 0.5), [1, 1, 1, 0])
    precision = expected_precision(cell, energy, counts, 4, sigma=0.02)
    np.testing.assert_allclose(precision[:3], [0.02 / 0.99, 0.02 / math.sqrt(1 + 1e-4), 0.02])
    assert precision[3] == np.inf
