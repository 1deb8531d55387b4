"""Counter-based random numbers keyed by (seed, file, entry, hit, stream).

What to use when:

- :func:`file_key` turns a seed and a file identity (its UUID) into one 64-bit key.
- :func:`event_keys` gives one key per event from that key and the *global* entry numbers.
- :func:`hit_keys` gives one key per hit and per named stream (:data:`STREAMS`); for several
  streams of the same hits, :func:`hit_base` once and :func:`stream_keys` per stream.
- :func:`uniform`, :func:`normal`, :func:`poisson`, :func:`binomial` draw one variate per key.

Why counter-based: every random number is a pure function of (seed, file identity, global
entry, hit index, stream), so a hit is digitised the same way whatever the executor, the
number of workers or the chunk boundaries; nothing has to be regenerated when a chunk cuts a
block of events, and changing a condition of one cell (its gain, say) changes no random
number of any other hit (common random numbers).

The generator is SplitMix64 (Steele, Lea & Flood, OOPSLA 2014): keys are mixed with its
finaliser, and each key starts its own SplitMix64 sequence inside the samplers. The samplers
are exact: inversion for small means, and Hörmann's transformed rejection (PTRS for Poisson,
Hörmann 1993, Insurance Math. Econom. 12; BTRS for binomial, J. Stat. Comput. Simul. 46) above;
they are numba ufuncs, so they take and return numpy arrays of any shape.
"""

from __future__ import annotations

import hashlib
import math

import numba
import numpy as np
import numpy.typing as npt

__all__ = [
    "STREAMS",
    "binomial",
    "event_keys",
    "file_key",
    "hit_base",
    "hit_keys",
    "mix64",
    "normal",
    "poisson",
    "stream_keys",
    "uniform",
]

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_GOLDEN_U = np.uint64(_GOLDEN)

#: Named random streams of the digitiser; each hit draws every stream from its own key.
STREAMS: dict[str, int] = {
    "nonuniformity": 1,
    "photons": 2,
    "pixels": 3,
    "gain_smear": 4,
    "noise": 5,
    "time": 6,
}


def _mix_int(z: int) -> int:
    """SplitMix64 finaliser on a Python int (no numpy overflow warnings)."""
    z &= _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def mix64(z: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """SplitMix64 finaliser, elementwise on a uint64 array (wraps modulo 2**64)."""
    z = np.asarray(z, dtype=np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def file_key(seed: int, identity: str) -> int:
    """One 64-bit key from a seed and a file identity (e.g. the ROOT file's UUID)."""
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    digest = int.from_bytes(hashlib.sha256(identity.encode()).digest()[:8], "little")
    return _mix_int(_mix_int(int(seed) * _GOLDEN + 1) ^ digest)


def event_keys(key: int, entries: npt.ArrayLike) -> npt.NDArray[np.uint64]:
    """One key per event from a :func:`file_key` and the events' global entry numbers."""
    entries = np.asarray(entries, dtype=np.uint64)
    return mix64(mix64(entries * _GOLDEN_U + np.uint64(key & _MASK)))


HitBase = tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]


def hit_base(keys: npt.NDArray[np.uint64], counts: npt.ArrayLike) -> HitBase:
    """What every stream of :func:`stream_keys` starts from: events' ``keys`` repeated
    ``counts`` times, and each hit's index within its event (shifted to leave room for the
    stream code). Compute it once per chunk."""
    counts = np.asarray(counts, dtype=np.int64)
    per_hit = np.repeat(np.asarray(keys, dtype=np.uint64), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    index = (np.arange(per_hit.size, dtype=np.int64) - starts).astype(np.uint64)
    return per_hit, index << np.uint64(5)


def stream_keys(base: HitBase, stream: str | int) -> npt.NDArray[np.uint64]:
    """One key per hit for ``stream`` from a :func:`hit_base`."""
    code = STREAMS[stream] if isinstance(stream, str) else int(stream)
    per_hit, counter = base
    return _stream_key(per_hit, counter, np.uint64(code))


@numba.vectorize(["uint64(uint64, uint64, uint64)"], cache=True)
def _stream_key(per_hit, counter, code):
    """mix64(per_hit ^ mix64((counter + code) * GOLDEN + GOLDEN)) in one compiled pass (the
    digitiser draws five streams per hit; numpy took eight passes for each)."""
    golden = np.uint64(0x9E3779B97F4A7C15)
    z = (counter + code) * golden + golden
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = per_hit ^ (z ^ (z >> np.uint64(31)))
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hit_keys(
    keys: npt.NDArray[np.uint64], counts: npt.ArrayLike, stream: str | int
) -> npt.NDArray[np.uint64]:
    """One key per hit for ``stream``: events' ``keys`` repeated ``counts`` times, each
    hit told apart by its index within its event (:func:`hit_base` + :func:`stream_keys`)."""
    return stream_keys(hit_base(keys, counts), stream)


# ---------------------------------------------------------------------------- samplers
# Inside the ufuncs a key starts a SplitMix64 sequence: state += GOLDEN; out = mix(state).


@numba.njit(cache=True, inline="always")
def _next(state: np.uint64) -> tuple[np.uint64, float]:
    state = state + np.uint64(0x9E3779B97F4A7C15)
    z = state
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    # 53 random bits, centred in their bin: strictly inside (0, 1)
    return state, ((z >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


@numba.vectorize(["float64(uint64)"], cache=True)
def uniform(key):
    """Uniform variate in (0, 1), one per key."""
    _, u = _next(key)
    return u


@numba.vectorize(["float64(uint64)"], cache=True)
def normal(key):
    """Standard normal variate (Box-Muller), one per key."""
    state, u1 = _next(key)
    state, u2 = _next(state)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


@numba.vectorize(["int64(uint64, float64)"], cache=True)
def poisson(key, lam):
    """Poisson variate of mean ``lam`` (0 for lam <= 0 or NaN), one per key."""
    if not lam > 0.0:
        return 0
    state = key
    if lam < 10.0:
        state, u = _next(state)
        p = math.exp(-lam)
        k = 0
        while u > p and k < 1000:
            u -= p
            k += 1
            p *= lam / k
        return k
    slam = math.sqrt(lam)
    loglam = math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    log_invalpha = math.log(1.1239 + 1.1328 / (b - 3.4))
    vr = 0.9277 - 3.6224 / (b - 2.0)
    while True:
        state, u = _next(state)
        state, v = _next(state)
        u -= 0.5
        us = 0.5 - abs(u)
        k = math.floor((2.0 * a / us + b) * u + lam + 0.43)
        if us >= 0.07 and v <= vr:
            return np.int64(k)
        if k < 0 or (us < 0.013 and v > us):
            continue
        if math.log(v) + log_invalpha - math.log(a / (us * us) + b) <= (
            -lam + k * loglam - math.lgamma(k + 1.0)
        ):
            return np.int64(k)


@numba.njit(cache=True)
def _binomial_small(state: np.uint64, n: int, p: float) -> int:
    """Inversion, for n p below about 10 (p <= 0.5)."""
    q = 1.0 - p
    s = p / q
    a = (n + 1) * s
    r = q**n
    state, u = _next(state)
    k = 0
    while u > r and k < n:
        u -= r
        k += 1
        r *= a / k - s
    return k


@numba.njit(cache=True)
def _binomial_btrs(state: np.uint64, n: int, p: float) -> int:
    """Hörmann's BTRS, for n p of 10 and more (p <= 0.5)."""
    q = 1.0 - p
    spq = math.sqrt(n * p * q)
    b = 1.15 + 2.53 * spq
    a = -0.0873 + 0.0248 * b + 0.01 * p
    c = n * p + 0.5
    alpha = (2.83 + 5.1 / b) * spq
    vr = 0.92 - 4.2 / b
    m = math.floor((n + 1) * p)
    lpq = math.log(p / q)
    h = math.lgamma(m + 1.0) + math.lgamma(n - m + 1.0)
    while True:
        state, u = _next(state)
        state, v = _next(state)
        u -= 0.5
        us = 0.5 - abs(u)
        k = math.floor((2.0 * a / us + b) * u + c)
        if k < 0 or k > n:
            continue
        if us >= 0.07 and v <= vr:
            return int(k)
        lv = math.log(v * alpha / (a / (us * us) + b))
        if lv <= h - math.lgamma(k + 1.0) - math.lgamma(n - k + 1.0) + (k - m) * lpq:
            return int(k)


@numba.vectorize(["int64(uint64, int64, float64)"], cache=True)
def binomial(key, n, p):
    """Binomial variate of ``n`` trials with probability ``p``, one per key."""
    if n <= 0 or not p > 0.0:
        return 0
    if p >= 1.0:
        return n
    flip = p > 0.5
    pp = 1.0 - p if flip else p
    k = _binomial_small(key, n, pp) if n * pp < 10.0 else _binomial_btrs(key, n, pp)
    return n - k if flip else k
