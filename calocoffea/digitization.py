"""SiPM-on-tile digitisation of flat hit arrays: MeV -> p.e. -> fired pixels -> ADC (seed 000).

What to use when:

- :func:`digitize` -- the whole chain on flattened hits (the digitize processor calls it on
  each chunk); returns :class:`Digitized` with ADC, gain, flags, the kept-hit mask and the
  cutflow counts.
- :func:`nonlinearity` / :func:`inverse_nonlinearity` -- the electronics response and its
  analytic inverse (see :mod:`calocoffea.conditions`).
- :func:`saturation` / :func:`desaturation` -- mean SiPM response and its inverse.
- :func:`threshold_response` -- expected calibrated energy [MIP] of a hit after zero
  suppression and range clipping, given its true deposit: what the defaults are predicted to
  lose, hit by hit, from the truth.

The chain, per hit (every parameter per cell from :class:`~calocoffea.conditions.Conditions`):

1. mean p.e. = E / E_MIP x light yield / aging, times the tile non-uniformity Gauss(1, 4.8 %);
2. photo-electrons: Poisson. Photons (Poisson) seen with the detection efficiency (binomial)
   are exactly a Poisson of the product, so one draw does both;
3. fired pixels: Binomial(N_pix, 1 - exp(-N_pe / N_pix)) (saturation and its fluctuation);
4. gain smear: N_fired (1 + 5 % / sqrt(N_fired) Gauss);
5. high-gain-equivalent amplitude x = pixels x SPE gain, electronics y = b x / (1 + a x / X);
6. ADC: high gain = pedestal + y + noise; above the switch point the low gain is read,
   pedestal + y / ratio + noise; rounded; clipped at the low-gain range top and 12 bits
   (flagged SATURATED);
7. zero suppression: hits below the threshold (0.5 MIP of that cell) are removed; dead cells
   read nothing. Both are counted by reason.

With ``DigitizationOptions(dual_gain=True)`` every hit also gets its low-gain reading
(``Digitized.adc_lg``, the ``hit_adc_lg`` branch), as a front end that digitises both gains
does: what the high/low gain-ratio calibration needs. Low-gain hits read ``adc_lg == adc``;
high-gain hits read the low gain with a noise variate of its own (separate amplifiers), so the
two readings of one hit have independent noise. Off by default, and then nothing changes: the
option adds a random stream and touches none of the others.

Random numbers come from :mod:`calocoffea.rng`, keyed by hit and stream: the output of a hit
does not depend on the chunk it is in, nor on the conditions of other cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import special, stats

from calocoffea import libm, rng
from calocoffea.conditions import Conditions, Electronics
from calocoffea.flags import HitFlag

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class DigitizationOptions:
    """Switches of the digitiser; ``threshold_mip=None`` takes the conditions' threshold."""

    zero_suppression: bool = True
    clipping: bool = True
    threshold_mip: float | None = None
    #: also read every hit on the low gain (``Digitized.adc_lg``), for gain-ratio calibration
    dual_gain: bool = False

    def threshold(self, electronics: Electronics) -> float:
        return electronics.threshold_mip if self.threshold_mip is None else self.threshold_mip


@dataclass
class Digitized:
    """Digitised hits, one entry per *input* hit; ``keep`` says which survive."""

    adc: FloatArray
    gain: npt.NDArray[np.uint8]
    flags: npt.NDArray[np.uint32]
    time: FloatArray
    keep: npt.NDArray[np.bool_]
    removed: dict[str, int] = field(default_factory=dict)
    flagged: dict[str, int] = field(default_factory=dict)
    #: low-gain ADC of every hit (only with ``DigitizationOptions.dual_gain``)
    adc_lg: FloatArray | None = None


#: Random stream of the low-gain noise of a dual-gain reading (codes of
#: :data:`calocoffea.rng.STREAMS` are small; this one is the last the key layout allows).
DUAL_GAIN_NOISE_STREAM = 31


# ------------------------------------------------------------------------------ formulas


def nonlinearity(x: FloatArray, a: FloatArray, b: FloatArray, scale: float) -> FloatArray:
    """Electronics response y = b x / (1 + a x / scale) to the amplitude x [ADC]."""
    return b * x / (1.0 + a * x / scale)


def inverse_nonlinearity(y: FloatArray, a: FloatArray, b: FloatArray, scale: float) -> FloatArray:
    """Inverse of :func:`nonlinearity`, x = y / (b - a y / scale); inf where y is beyond
    the asymptote b scale / a."""
    denominator = b - a * y / scale
    with np.errstate(divide="ignore"):
        return np.where(denominator > 0, y / np.where(denominator > 0, denominator, 1), np.inf)


def saturation(n_pe: FloatArray, n_pixels: FloatArray) -> FloatArray:
    """Mean number of fired pixels, N_pix (1 - exp(-N_pe / N_pix))."""
    return -n_pixels * libm.expm1(-n_pe / n_pixels)


def desaturation(n_fired: FloatArray, n_pixels: FloatArray, occupancy: float = 0.95) -> FloatArray:
    """Photo-electrons from fired pixels, -N_pix ln(1 - N_fired / N_pix), continued linearly
    (same value and slope) above ``occupancy`` (DDScintillatorPpdDigi)."""
    r = occupancy
    fraction = n_fired / n_pixels
    below = -n_pixels * libm.log1p(-np.minimum(fraction, r))
    above = (n_fired - r * n_pixels) / (1.0 - r) - n_pixels * libm.log1p(-r)
    return np.where(fraction <= r, below, above)


# ------------------------------------------------------------------------------ the chain


def mean_photoelectrons(energy_mev: FloatArray, cell: npt.NDArray[np.int64], c: Conditions):
    """Mean p.e. of deposits before the tile non-uniformity."""
    v = c.values
    return energy_mev / c.mip_mev[cell] * v["light_yield_pe"][cell] / v["aging"][cell]


def digitize(
    energy_mev: FloatArray,
    cell: npt.NDArray[np.int64],
    event_keys: npt.NDArray[np.uint64],
    counts: npt.NDArray[np.int64],
    conditions: Conditions,
    options: DigitizationOptions | None = None,
) -> Digitized:
    """Digitise flat hits: deposits [MeV], dense cell indices, one key per event and the
    number of hits of each event (hits are keyed by their index in their event).

    Deposits must be finite and non-negative (the processor removes others first)."""
    options = options or DigitizationOptions()
    e = conditions.electronics
    v = conditions.values
    n = energy_mev.size

    base = rng.hit_base(event_keys, counts)

    def keys(stream: str) -> npt.NDArray[np.uint64]:
        return rng.stream_keys(base, stream)

    # 1-2. light: non-uniformity, then photo-electrons
    smear = 1.0 + e.nonuniformity * rng.normal(keys("nonuniformity"))
    mean_pe = mean_photoelectrons(energy_mev, cell, conditions) * np.maximum(smear, 0.0)
    n_pe = rng.poisson(keys("photons"), mean_pe)
    # 3. SiPM saturation with binomial fluctuation
    n_pix = v["n_pixels"][cell]
    p_fire = -libm.expm1(-n_pe / n_pix)
    fired = rng.binomial(keys("pixels"), n_pix.astype(np.int64), p_fire).astype(np.float64)
    # 4. gain smear of the fired pixels
    pixels = fired + e.pixel_spread * np.sqrt(fired) * rng.normal(keys("gain_smear"))
    # 5. electronics
    x = pixels * v["spe_adc"][cell]
    y = nonlinearity(
        x, v["nonlinearity_a"][cell], v["nonlinearity_b"][cell], e.nonlinearity_scale_adc
    )
    # 6. ADC, gain switch, rounding and clipping
    noisy = conditions.noisy[cell]
    noise = rng.normal(keys("noise")) * np.where(noisy, e.noisy_factor, 1.0)
    hg = v["pedestal_hg_adc"][cell] + y + v["noise_hg_adc"][cell] * noise
    low = hg > e.switch_adc
    lg = v["pedestal_lg_adc"][cell] + y / v["gain_ratio"][cell] + v["noise_lg_adc"][cell] * noise
    adc = np.rint(np.where(low, lg, hg))
    flags = np.where(low, np.uint32(HitFlag.LOW_GAIN), np.uint32(0))
    flags |= np.where(noisy, np.uint32(HitFlag.NOISY), np.uint32(0))
    saturated = np.zeros(n, bool)
    if options.clipping:
        top = np.where(low, e.lg_saturation_adc, e.adc_max)
        saturated = adc > top
        adc = np.where(saturated, top, np.maximum(adc, 0.0))
        flags |= np.where(saturated, np.uint32(HitFlag.SATURATED), np.uint32(0))
    # 7. zero suppression on the amplitude, threshold in MIP of the cell; dead cells
    dead = conditions.dead[cell]
    keep = ~dead
    removed = {"dead_cell": int(np.count_nonzero(dead))}
    if options.zero_suppression:
        amplitude = np.where(
            low,
            (adc - v["pedestal_lg_adc"][cell]) * v["gain_ratio"][cell],
            adc - v["pedestal_hg_adc"][cell],
        )
        below = amplitude < options.threshold(e) * conditions.mip_adc[cell]
        removed["below_threshold"] = int(np.count_nonzero(below & keep))
        keep &= ~below
    adc_lg = None
    if options.dual_gain:  # low-gain hits: their reading; high-gain hits: the LG with own noise
        noise_lg = rng.normal(rng.stream_keys(base, DUAL_GAIN_NOISE_STREAM))
        noise_lg *= np.where(noisy, e.noisy_factor, 1.0)
        signal_lg = v["pedestal_lg_adc"][cell] + y / v["gain_ratio"][cell]
        lg_of_hg = np.rint(signal_lg + v["noise_lg_adc"][cell] * noise_lg)
        if options.clipping:
            lg_of_hg = np.clip(lg_of_hg, 0.0, e.lg_saturation_adc)
        adc_lg = np.where(low, adc, lg_of_hg)
    time = np.zeros(n)
    if e.time_resolution_ns > 0:
        time = e.time_resolution_ns * rng.normal(keys("time"))
    flagged = {
        "low_gain": int(np.count_nonzero(low & keep)),
        "saturated": int(np.count_nonzero(saturated & keep)),
        "noisy": int(np.count_nonzero(noisy & keep)),
    }
    return Digitized(
        adc=adc,
        gain=low.astype(np.uint8),
        flags=flags.astype(np.uint32),
        time=time,
        keep=keep,
        removed=removed,
        flagged=flagged,
        adc_lg=adc_lg,
    )


# ------------------------------------------------------------------------------ prediction


def _kept_mean_pe(
    mean_pe: FloatArray,
    threshold_pe: FloatArray,
    noise_pe: FloatArray,
    pixel_spread: float,
    nonuniformity: float,
    n_pixels: float,
) -> FloatArray:
    """E[(f + eps) 1(f + eps >= t)] [pixels]: k ~ Poisson(mean_pe x Gauss(1, nonuniformity))
    photo-electrons, f ~ Binomial(n_pixels, 1 - exp(-k / n_pixels)) fired pixels (at low
    occupancy its variance is about k: it doubles the photon statistics), and
    eps ~ Gauss(0, pixel_spread^2 f + noise^2)."""
    kmax = int(np.ceil((threshold_pe + 12.0 * np.sqrt(threshold_pe) + 30.0).max()))
    k = np.arange(kmax + 1, dtype=np.float64)
    f = np.arange(kmax + 31, dtype=np.float64)
    fired = stats.binom.pmf(f[None, :], round(n_pixels), -np.expm1(-k[:, None] / n_pixels))
    sigma = np.sqrt(pixel_spread**2 * f[None, :] + noise_pe[:, None] ** 2)
    z = (f[None, :] - threshold_pe[:, None]) / sigma
    kept_f = f[None, :] * special.ndtr(z) + sigma * stats.norm.pdf(z)
    nodes, weights = np.polynomial.hermite_e.hermegauss(16)
    weights = weights / weights.sum()
    expected = np.zeros(mean_pe.size)
    for node, weight in zip(nodes, weights, strict=True):
        mu = mean_pe * max(1.0 + nonuniformity * node, 0.0)
        pmf_k = stats.poisson.pmf(k[None, :], mu[:, None])
        pmf_f = pmf_k @ fired
        tail = np.maximum(mu - (pmf_k * k).sum(axis=1), 0.0)  # mean carried by k > kmax
        expected += weight * ((pmf_f * kept_f).sum(axis=1) + tail)
    return expected


def threshold_response(
    energy_mev: FloatArray,
    cell: npt.NDArray[np.int64],
    conditions: Conditions,
    threshold_mip: float | None = None,
    top_mip: FloatArray | None = None,
) -> FloatArray:
    """Expected calibrated energy [MIP] of hits with true deposits ``energy_mev``, after
    zero suppression at ``threshold_mip`` and clipping at ``top_mip`` (per hit, or none).

    Zero suppression: the photo-electron count is Poisson with a mean smeared by the tile
    non-uniformity (Gauss-Hermite over the smear, exact Poisson sum), the fired pixels are
    binomial around it (exact sum), and the threshold acts on the pixel count plus a Gaussian of
    the gain smear and the pedestal noise. Clipping: the
    calibrated energy is taken Gaussian around the truth with the photo-statistics, the
    non-uniformity and the binomial pixel variance after de-saturation, and E[min(E, top)].
    """
    e = conditions.electronics
    v = conditions.values
    threshold = e.threshold_mip if threshold_mip is None else threshold_mip
    ly = v["light_yield_pe"][cell] / v["aging"][cell]
    mean_pe = mean_photoelectrons(energy_mev, cell, conditions)
    out = mean_pe / ly
    # --- threshold, for hits that can be near it (in batches: a table of p.e. counts each)
    t_pe = threshold * ly
    near = np.flatnonzero(mean_pe < t_pe + 12.0 * np.sqrt(t_pe) + 12.0)
    gain = v["spe_adc"][cell] * v["nonlinearity_b"][cell]
    noise_pe = np.sqrt(v["noise_hg_adc"][cell] ** 2 + 1.0 / 12.0) / gain  # + ADC rounding
    for batch in np.array_split(near, max(1, near.size // 50_000)):
        out[batch] = (
            _kept_mean_pe(
                mean_pe[batch],
                t_pe[batch],
                noise_pe[batch],
                e.pixel_spread,
                e.nonuniformity,
                float(np.mean(v["n_pixels"][cell[batch]])),
            )
            / ly[batch]
        )
    if top_mip is None:
        return out
    # --- clipping at the range top
    n_pix = v["n_pixels"][cell]
    occupancy = -np.expm1(-mean_pe / n_pix)
    var_pe = mean_pe + (e.nonuniformity * mean_pe) ** 2 + n_pix * occupancy / (1.0 - occupancy)
    sigma = np.sqrt(var_pe) / ly
    top = np.broadcast_to(top_mip, out.shape)
    d = (out - top) / np.maximum(sigma, 1e-12)
    clipped = out - (out - top) * special.ndtr(d) - sigma * stats.norm.pdf(d)
    return np.where(d > -12, clipped, out)


__all__ = [
    "DigitizationOptions",
    "Digitized",
    "desaturation",
    "digitize",
    "inverse_nonlinearity",
    "mean_photoelectrons",
    "nonlinearity",
    "saturation",
    "threshold_response",
]
