"""Model inputs built columnar from flat hits: layer sums, shower shapes, cell images.

What to use when:

- :func:`layer_sums` -- energy per (event, layer): the input of ``gbr`` and software
  compensation's longitudinal terms.
- :func:`shower_shapes` -- a fixed set of per-event shape observables (:data:`SHAPE_NAMES`):
  the other input of ``gbr``.
- :func:`cell_images` -- energy per (event, layer, i, j) for one square-grid section: the
  input of the CNN+LSTM of seed 000 (a super-layer is a group of consecutive layers).
- :func:`density_sums` -- energy per (event, hit-density bin): the input of software
  compensation, whose weights depend on the local energy density (:data:`DENSITY_EDGES_MIP`).

Every function takes flat hit arrays (one entry per hit, events in order, ``counts`` hits
per event) so that a processor builds the inputs of a whole chunk with bincounts and no
Python loop over events; an event without hits gives zeros (and NaN-free shapes). Energies
are whatever stage the hits are at (GeV after calibration).

Shower shapes, with E_k the hit energies of one event, E = Σ E_k, ℓ_k the layer, (x_k, y_k)
the cell centre [mm] and centroids weighted by energy:

- ``energy`` = E; ``hits`` = number of hits;
- ``depth_mean`` = Σ E_k ℓ_k / E, ``depth_rms`` = sqrt(Σ E_k (ℓ_k - depth_mean)² / E) [layers];
- ``radius_mean`` = Σ E_k r_k / E, ``radius_rms`` = sqrt(Σ E_k r_k² / E) [mm], with r_k the
  distance of the hit from the event's energy centroid (x̄, ȳ);
- ``density`` = E / hits (mean hit energy), ``first_layer`` = the first layer with a hit
  (-1 without hits).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from calocoffea.exceptions import ModelError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: The observables of :func:`shower_shapes`, in column order.
SHAPE_NAMES: tuple[str, ...] = (
    "energy",
    "hits",
    "depth_mean",
    "depth_rms",
    "radius_mean",
    "radius_rms",
    "density",
    "first_layer",
)


#: Hit-density bin edges [MIP per cell] of software compensation: the ILD/Pandora bins
#: (PHYSICS.md); the last bin is open, [100, inf).
DENSITY_EDGES_MIP: tuple[float, ...] = (
    0.0, 2.0, 5.0, 7.5, 9.5, 13.0, 16.0, 20.0, 23.5, 28.0, 33.0, 40.0, 50.0, 75.0, 100.0,
)  # fmt: skip


def _event_index(counts: npt.ArrayLike, n_hits: int) -> tuple[IntArray, int]:
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or np.any(counts < 0) or int(counts.sum()) != n_hits:
        raise ModelError(
            f"hit counts per event (sum {int(counts.sum())}) do not match the {n_hits} hits "
            "given; pass ak.num(events.hits) of the same events"
        )
    return np.repeat(np.arange(counts.size), counts), int(counts.size)


def _check_energy(energy: npt.ArrayLike) -> FloatArray:
    e = np.asarray(energy, dtype=np.float64)
    if not np.all(np.isfinite(e)):
        bad = np.flatnonzero(~np.isfinite(e))[:5].tolist()
        raise ModelError(f"non-finite hit energies at flat hits {bad}; calibrate them first")
    return e


def layer_sums(
    layer: npt.ArrayLike, energy: npt.ArrayLike, counts: npt.ArrayLike, n_layers: int
) -> FloatArray:
    """Energy per (event, layer), shape (events, n_layers)."""
    e = _check_energy(energy)
    lay = np.asarray(layer, dtype=np.int64)
    if lay.size and (lay.min() < 0 or lay.max() >= n_layers):
        raise ModelError(f"hit layers must lie in 0..{n_layers - 1}, got {lay.min()}..{lay.max()}")
    event, n = _event_index(counts, e.size)
    flat = np.bincount(event * n_layers + lay, weights=e, minlength=n * n_layers)
    return flat.reshape(n, n_layers).astype(np.float64, copy=False)


def shower_shapes(
    layer: npt.ArrayLike,
    x_mm: npt.ArrayLike,
    y_mm: npt.ArrayLike,
    energy: npt.ArrayLike,
    counts: npt.ArrayLike,
) -> FloatArray:
    """The observables of :data:`SHAPE_NAMES` per event, shape (events, len(SHAPE_NAMES))."""
    e = _check_energy(energy)
    lay = np.asarray(layer, dtype=np.float64)
    x, y = np.asarray(x_mm, dtype=np.float64), np.asarray(y_mm, dtype=np.float64)
    event, n = _event_index(counts, e.size)

    def per_event(values: FloatArray) -> FloatArray:
        return np.bincount(event, weights=values, minlength=n).astype(np.float64, copy=False)

    total = per_event(e)
    hits = np.bincount(event, minlength=n).astype(np.float64)
    safe = np.where(total > 0, total, 1.0)
    depth = per_event(e * lay) / safe
    depth_rms = np.sqrt(np.maximum(per_event(e * (lay - depth[event]) ** 2) / safe, 0.0))
    cx, cy = per_event(e * x) / safe, per_event(e * y) / safe
    r = np.hypot(x - cx[event], y - cy[event])
    radius = per_event(e * r) / safe
    radius_rms = np.sqrt(per_event(e * r * r) / safe)
    density = total / np.where(hits > 0, hits, 1.0)
    first = np.full(n, np.inf)
    np.minimum.at(first, event, lay)
    first = np.where(np.isfinite(first), first, -1.0)
    return np.column_stack([total, hits, depth, depth_rms, radius, radius_rms, density, first])


def cell_images(
    layer: npt.ArrayLike,
    i: npt.ArrayLike,
    j: npt.ArrayLike,
    energy: npt.ArrayLike,
    counts: npt.ArrayLike,
    shape: tuple[int, int, int],
) -> npt.NDArray[np.float32]:
    """Energy per (event, layer, i, j) as float32, shape (events, *shape) with ``shape`` =
    (layers, nx, ny) of a square-grid section; cells outside it are refused."""
    e = _check_energy(energy)
    n_layers, nx, ny = shape
    coords = [np.asarray(v, dtype=np.int64) for v in (layer, i, j)]
    for name, values, size in zip(("layer", "i", "j"), coords, shape, strict=True):
        if values.size and (values.min() < 0 or values.max() >= size):
            raise ModelError(
                f"hit {name} must lie in 0..{size - 1} for images of shape {shape}, got "
                f"{values.min()}..{values.max()}; select the section's hits first"
            )
    event, n = _event_index(counts, e.size)
    index = ((event * n_layers + coords[0]) * nx + coords[1]) * ny + coords[2]
    flat = np.bincount(index, weights=e, minlength=n * n_layers * nx * ny)
    return flat.reshape(n, n_layers, nx, ny).astype(np.float32)


def density_sums(
    density: npt.ArrayLike,
    energy: npt.ArrayLike,
    counts: npt.ArrayLike,
    n_bins: int = len(DENSITY_EDGES_MIP),
) -> FloatArray:
    """Energy per (event, density bin), shape (events, ``n_bins``): each hit's energy goes to
    the bin of its density (:data:`DENSITY_EDGES_MIP`, MIP per cell; below 0 -> first bin,
    the last bin open). ``n_bins`` must be the number of those bins (a model card's check)."""
    if n_bins != len(DENSITY_EDGES_MIP):
        raise ModelError(
            f"density_sums has {len(DENSITY_EDGES_MIP)} bins (DENSITY_EDGES_MIP), the model "
            f"asks for {n_bins}; retrain the model with this calocoffea"
        )
    e = _check_energy(energy)
    rho = np.asarray(density, dtype=np.float64)
    event, n = _event_index(counts, e.size)
    b = np.clip(np.searchsorted(DENSITY_EDGES_MIP, rho, side="right") - 1, 0, n_bins - 1)
    flat = np.bincount(event * n_bins + b, weights=e, minlength=n * n_bins)
    return flat.reshape(n, n_bins).astype(np.float64, copy=False)


__all__ = [
    "DENSITY_EDGES_MIP",
    "SHAPE_NAMES",
    "cell_images",
    "density_sums",
    "layer_sums",
    "shower_shapes",
]
