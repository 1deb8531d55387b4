"""Shower-shape observables from hits: longitudinal profile, shower maximum, containment.

What to use when:

- :func:`longitudinal_profile` -- mean visible energy per layer against depth in X0.
- :func:`fit_shower_max` -- depth of the maximum of a binned longitudinal profile, from a
  fit of a Gamma profile integrated over each layer's depth range (no binning bias).
- :func:`gflash_expected_profile` -- what the GFlash parametrisation predicts for the same
  binned profile (mean over the per-event fluctuated profiles), to compare like with like.
- :func:`containment_radius` -- radius around the beam axis containing a fraction of the
  visible energy, pooled over events.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
from scipy import optimize, special

from calocoffea.exceptions import FitError
from calocoffea.geometry import Geometry
from calocoffea.grids import FloatArray


def longitudinal_profile(events: ak.Array, geometry: Geometry, hits: str = "hit") -> FloatArray:
    """Mean visible energy per layer, divided by the active sampling weight of the layer
    (f_mip * e_hat), so that layers of different structure compare."""
    h = events[hits]
    layer = ak.to_numpy(ak.flatten(h.layer)).astype(np.int64)
    energy = ak.to_numpy(ak.flatten(h.energy)).astype(np.float64)
    total = np.bincount(layer, weights=energy, minlength=geometry.n_layers)
    weight = geometry.layer_property("mip_sampling_fraction") * geometry.layer_property("e_hat")
    return total / len(events) / weight


def _gamma_binned(start: FloatArray, end: FloatArray, norm: float, shape: float, rate: float):
    return norm * (special.gammainc(shape, rate * end) - special.gammainc(shape, rate * start))


def fit_shower_max(
    start: FloatArray,
    end: FloatArray,
    energy: FloatArray,
    *,
    first: int = 0,
    last: int | None = None,
) -> float:
    """Depth of maximum (alpha - 1)/beta of a Gamma profile fitted to layer energies.

    ``start``/``end`` are the depth ranges of the layers in X0; ``first``/``last`` select
    the layers (e.g. one section). The fit is a least-squares fit with relative weights.
    """
    s, e, y = start[first:last], end[first:last], np.asarray(energy)[first:last]
    if np.count_nonzero(y > 0) < 4:
        raise FitError("a shower-maximum fit needs energy in at least 4 layers")
    norm0 = y.sum()
    centre = 0.5 * (s + e)
    mean = np.average(centre, weights=np.maximum(y, 0))
    var = np.average((centre - mean) ** 2, weights=np.maximum(y, 0))
    shape0, rate0 = max(mean**2 / var, 1.2), mean / var
    sigma = np.sqrt(np.maximum(y, 1e-6 * y.max()) * y.max())

    def resid(p: FloatArray) -> FloatArray:
        return (_gamma_binned(s, e, p[0], p[1], p[2]) - y) / sigma

    fit = optimize.least_squares(
        resid, [norm0, shape0, rate0], bounds=([0, 1.0001, 1e-3], [np.inf, 100, 10])
    )
    _, shape, rate = fit.x
    return float((shape - 1.0) / rate)


def gflash_expected_profile(
    geometry: Geometry, energy_gev: float, n: int = 200_000, seed: int = 0
) -> tuple[FloatArray, float]:
    """Mean per-layer energy fractions predicted by the GFlash parametrisation for
    electrons of ``energy_gev`` (in the first section's medium) and the mean of the
    per-event depth of maximum T [X0]."""
    from calocoffea.simulation import showers

    rng = np.random.default_rng(seed)
    m = geometry.layers[0].medium
    fs = m.x0_mm / geometry.layers[0].thickness_mm
    e = np.full(n, float(energy_gev))
    t, alpha = showers.sample_gflash_profile(
        rng, e, m.critical_energy, m.z, fs, geometry.layers[0].e_hat
    )
    start, end = geometry.layer_depth_x0
    frac = showers.gamma_fractions(start, end, np.zeros(n), alpha, (alpha - 1) / t)
    return energy_gev * frac.mean(axis=0), float(t.mean())


def containment_radius(
    events: ak.Array, fraction: float = 0.9, *, layers: slice | None = None, hits: str = "hit"
) -> float:
    """Radius [mm] around (beam_x, beam_y) that holds ``fraction`` of the visible energy
    of the hits (optionally only those in a range of layers), pooled over events."""
    h = events[hits]
    if layers is not None:
        keep = (h.layer >= (layers.start or 0)) & (h.layer < (layers.stop or 1 << 15))
        h = h[keep]
    dx = h.x - events.beam_x
    dy = h.y - events.beam_y
    r = ak.to_numpy(ak.flatten(np.hypot(dx, dy)))
    w = ak.to_numpy(ak.flatten(h.energy)).astype(np.float64)
    order = np.argsort(r)
    cum = np.cumsum(w[order])
    return float(r[order][np.searchsorted(cum, fraction * cum[-1])])


def sampling_corrected_sum(
    events: ak.Array, geometry: Geometry, *, section: int | None = None, hits: str = "hit"
) -> FloatArray:
    """Energy [GeV] per event: visible hit energies [MeV] divided by the EM sampling
    weight f_mip * e_hat of their layer, optionally in one section only. Layers of
    different structure (the Si-W ECAL's 2.1 and 4.2 mm W) are weighted correctly."""
    h = events[hits]
    weight = geometry.layer_property("mip_sampling_fraction") * geometry.layer_property("e_hat")
    layer = ak.to_numpy(ak.flatten(h.layer)).astype(np.int64)
    energy = ak.to_numpy(ak.flatten(h.energy)).astype(np.float64) / (1000.0 * weight[layer])
    if section is not None:
        energy = energy * (geometry.layer_section[layer] == section)
    event = np.repeat(np.arange(len(events)), ak.to_numpy(ak.num(h)))
    return np.bincount(event, weights=energy, minlength=len(events)).astype(np.float64)
