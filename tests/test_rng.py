"""Counter-based random numbers: pure functions of their keys, with the right distributions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from calocoffea import rng

N = 200_000


def keys(seed: int, stream: str = "photons", n: int = N) -> np.ndarray:
    events = rng.event_keys(rng.file_key(seed, "test-file"), np.arange(n // 4))
    return rng.hit_keys(events, np.full(n // 4, 4), stream)


def test_keys_are_pure_functions_of_their_inputs() -> None:
    assert np.array_equal(keys(1), keys(1))
    assert np.unique(keys(1)).size == N
    assert not np.intersect1d(keys(1), keys(2)).size
    assert not np.intersect1d(keys(1, "photons"), keys(1, "noise")).size
    assert rng.file_key(1, "a") != rng.file_key(1, "b")
    # an event's keys depend on its global entry, not on its neighbours
    events = rng.event_keys(rng.file_key(3, "f"), np.arange(100))
    assert np.array_equal(events[40:60], rng.event_keys(rng.file_key(3, "f"), np.arange(40, 60)))
    with pytest.raises(ValueError, match="seed"):
        rng.file_key(-1, "a")


def test_hit_keys_do_not_depend_on_other_events() -> None:
    events = rng.event_keys(rng.file_key(3, "f"), np.arange(3))
    full = rng.hit_keys(events, np.array([2, 5, 3]), "noise")
    alone = rng.hit_keys(events[1:2], np.array([5]), "noise")
    assert np.array_equal(full[2:7], alone)


def _p_value(sample: np.ndarray, pmf) -> float:  # type: ignore[no-untyped-def]
    values, counts = np.unique(sample, return_counts=True)
    expected = pmf(values) * sample.size
    keep = expected > 20
    chi2 = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    return float(stats.chi2.sf(chi2, keep.sum() - 1))


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("mean", [0.4, 5.0, 11.5, 40.0, 900.0])
def test_poisson(mean: float, seed: int) -> None:
    x = rng.poisson(keys(seed), np.full(N, mean))
    assert abs(x.mean() - mean) < 5 * np.sqrt(mean / N)
    assert _p_value(x, lambda k: stats.poisson.pmf(k, mean)) > 1e-4


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize(("n", "p"), [(7284, 5e-4), (7284, 0.05), (7284, 0.6), (30, 0.2)])
def test_binomial(n: int, p: float, seed: int) -> None:
    x = rng.binomial(keys(seed, "pixels"), np.full(N, n), np.full(N, p))
    assert abs(x.mean() - n * p) < 5 * np.sqrt(n * p * (1 - p) / N)
    assert _p_value(x, lambda k: stats.binom.pmf(k, n, p)) > 1e-4


def test_normal_and_uniform() -> None:
    z = rng.normal(keys(4, "noise"))
    assert stats.kstest(z, "norm").pvalue > 1e-4
    u = rng.uniform(keys(4, "time"))
    assert 0 < u.min() and u.max() < 1
    assert stats.kstest(u, "uniform").pvalue > 1e-4


def test_edge_cases() -> None:
    k = keys(5, n=8)[:4]
    assert rng.poisson(k, np.array([0.0, -1.0, np.nan, 1e-300])).tolist() == [0, 0, 0, 0]
    assert rng.binomial(k, np.array([0, 10, 10, 10]), np.array([0.5, 0.0, 1.0, 1.5])).tolist() == [
        0, 0, 10, 10,
    ]  # fmt: skip
