"""Calibration runs simulated with the detector conditions: pedestal runs and LED runs.

What to use when:

- :func:`pedestal_run` -- every live cell read in both gains with no signal (random
  trigger): the input of the ``pedestal`` calibration method. Hits carry the high-gain ADC
  as ``energy`` and the low-gain ADC as ``adc_lg``.
- :func:`led_run` -- every live cell lit by an LED at low light (``mu_led`` photo-electrons
  on average), high gain: the photo-electron peaks that the ``spe`` method fits.
- :func:`calibration_run` -- either of them by run type (what ``calocoffea calibrun`` calls).
- :func:`pedestal_readings`, :func:`led_readings` -- the same readings as arrays, no file.
- :func:`expected_constants` -- per cell, what a perfect analysis of these runs (and of the
  overlap of the two gains in physics runs) recovers from given conditions: the truth to
  score the electronics calibration methods against.

Both runs are raw files (stage ``raw``) written with :func:`calocoffea.io.write_events`;
their metadata ``extra`` says ``run_type`` (``pedestal`` or ``led``), the seed, the run
number, the conditions and the event count, so :func:`calocoffea.runner.fit_files` refuses a
run of the wrong type. Dead cells read nothing; noisy cells have their noise times
``Electronics.noisy_factor`` and the NOISY flag.

The readings, per event and cell (parameters per cell from the conditions):

- pedestal: HG = rint(P_HG + sigma_HG n1), LG = rint(P_LG + sigma_LG n2), n1, n2 independent
  standard normals;
- LED: n_pe ~ Poisson(mu), mu = mu_led (1 + mu_spread g) per cell (g a standard normal drawn
  once per run and cell: LED light differs from channel to channel); fired pixels
  ~ Binomial(N_pix, 1 - exp(-n_pe / N_pix)); gain smear fired (1 + pixel_spread / sqrt(fired)
  n); electronics y = b x / (1 + a x / X) of x = pixels x SPE; HG = rint(P_HG + y + sigma_HG n).

What the LED peak spacing measures: at small signal y ~ b x, so the peak of f fired pixels
sits at P_HG + f b SPE and the spacing is ``b x spe_adc``, the high-gain ADC per fired pixel
of the front end as a whole. That is the ``spe_adc`` constant the calibration chain needs
(:mod:`calocoffea.calibration` inverts the non-linearity with the design a, b = 1 before it
divides by SPE), so its truth is ``spe_adc x nonlinearity_b``. The a-term compresses peak f
by a f x SPE / X, 0.05 x 30 / 78520 = 2e-5 relative per pixel: the fitted spacing comes out
about 5e-5 low at mu_led = 1.5, 2 % of the statistical error of a 500-event run (a pull shift
of -0.01 to -0.03 at 500 to 1000 events); negligible, not corrected.

What the LED peak weights are: the digitiser's fired pixels are Binomial(N_pix, 1 -
exp(-n_pe / N_pix)), which at low light is about Poisson(n_pe), not n_pe: the pixel count has
twice the variance of the photo-electrons, and the weights of the peaks follow a compound
(Neyman type A) distribution instead of Poisson(mu). The ``spe`` method models this
(``photostatistics="binomial"``); a pure Poisson model would leave the pulls of ``spe_adc``
20 % too narrow. Pixel sharing (saturation) is negligible at a few p.e. (~k^2 / 2 N_pix).

Random numbers come from :mod:`calocoffea.rng`, keyed by (seed, run type and number, event,
cell, stream): a cell's readings do not depend on which other cells are read, nor on the
chunking of the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import numpy.typing as npt

from calocoffea import __version__, rng
from calocoffea.conditions import Conditions
from calocoffea.digitization import nonlinearity
from calocoffea.exceptions import SimulationConfigError
from calocoffea.flags import HitFlag
from calocoffea.geometry import decode_cellid, get_geometry
from calocoffea.io import FileMetadata, write_events

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Kinds of calibration runs this module simulates.
RUN_TYPES = ("pedestal", "led")
#: Default mean photo-electrons of an LED run: the pedestal and 1, 2, 3... p.e. peaks visible.
MU_LED = 1.5
#: Default relative spread of the LED light from cell to cell [guess].
MU_SPREAD = 0.1
#: Random streams of the calibration runs (codes 16-31 of the key layout; the digitiser's
#: :data:`calocoffea.rng.STREAMS` use the small ones).
STREAMS: dict[str, int] = {
    "noise_hg": 16,
    "noise_lg": 17,
    "photons": 18,
    "pixels": 19,
    "gain_smear": 20,
    "led_light": 21,
}
#: Readings per chunk written to the file (bounds the memory of a run to ~100 MB).
_READINGS_PER_CHUNK = 2_000_000


# ------------------------------------------------------------------------------ readings


def run_key(seed: int, run_type: str, run: int = 0) -> int:
    """The 64-bit key of one calibration run: seed and run identity (type and number)."""
    return rng.file_key(seed, f"calocoffea {run_type} run {run}")


def _base(key: int, entries: IntArray, cells: IntArray) -> rng.HitBase:
    """Per-reading keys of (event, cell), events major: the cell's dense index is the
    counter, so a cell's numbers do not depend on which other cells are read."""
    event = rng.event_keys(key, entries)
    per_hit = np.repeat(event, cells.size)
    counter = np.tile(cells.astype(np.uint64) << np.uint64(5), entries.size)
    return per_hit, counter


def _noise_factor(conditions: Conditions, cell: IntArray) -> FloatArray:
    return np.where(conditions.noisy[cell], conditions.electronics.noisy_factor, 1.0)


def pedestal_readings(
    conditions: Conditions, key: int, entries: npt.ArrayLike, cells: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """High- and low-gain ADC of ``cells`` (dense indices) in events ``entries`` without
    signal, shape (events, cells) each."""
    entries = np.asarray(entries, np.int64)
    cells = np.asarray(cells, np.int64)
    base = _base(key, entries, cells)
    cell = np.tile(cells, entries.size)
    v, e = conditions.values, conditions.electronics
    factor = _noise_factor(conditions, cell)
    n1 = rng.normal(rng.stream_keys(base, STREAMS["noise_hg"]))
    n2 = rng.normal(rng.stream_keys(base, STREAMS["noise_lg"]))
    hg = np.rint(v["pedestal_hg_adc"][cell] + v["noise_hg_adc"][cell] * factor * n1)
    lg = np.rint(v["pedestal_lg_adc"][cell] + v["noise_lg_adc"][cell] * factor * n2)
    shape = (entries.size, cells.size)
    hg = np.clip(hg, 0.0, e.adc_max).reshape(shape)
    return hg, np.clip(lg, 0.0, e.lg_saturation_adc).reshape(shape)


def led_intensity(
    key: int, cells: npt.ArrayLike, mu_led: float = MU_LED, mu_spread: float = MU_SPREAD
) -> FloatArray:
    """Mean photo-electrons of each of ``cells`` in the LED run of ``key``."""
    cells = np.asarray(cells, np.int64)
    base = (np.full(cells.size, key, np.uint64), cells.astype(np.uint64) << np.uint64(5))
    g = rng.normal(rng.stream_keys(base, STREAMS["led_light"]))
    return mu_led * np.maximum(1.0 + mu_spread * g, 0.0)


def led_readings(
    conditions: Conditions,
    key: int,
    entries: npt.ArrayLike,
    cells: npt.ArrayLike,
    mu_led: float = MU_LED,
    mu_spread: float = MU_SPREAD,
) -> FloatArray:
    """High-gain ADC of ``cells`` in LED events ``entries``, shape (events, cells)."""
    entries = np.asarray(entries, np.int64)
    cells = np.asarray(cells, np.int64)
    base = _base(key, entries, cells)
    cell = np.tile(cells, entries.size)
    v, e = conditions.values, conditions.electronics
    mu = np.tile(led_intensity(key, cells, mu_led, mu_spread), entries.size)
    n_pe = rng.poisson(rng.stream_keys(base, STREAMS["photons"]), mu)
    n_pix = v["n_pixels"][cell]
    p_fire = -np.expm1(-n_pe / n_pix)
    fired = rng.binomial(rng.stream_keys(base, STREAMS["pixels"]), n_pix.astype(np.int64), p_fire)
    fired = fired.astype(np.float64)
    smear = rng.normal(rng.stream_keys(base, STREAMS["gain_smear"]))
    pixels = fired + e.pixel_spread * np.sqrt(fired) * smear
    x = pixels * v["spe_adc"][cell]
    y = nonlinearity(
        x, v["nonlinearity_a"][cell], v["nonlinearity_b"][cell], e.nonlinearity_scale_adc
    )
    noise = rng.normal(rng.stream_keys(base, STREAMS["noise_hg"])) * _noise_factor(conditions, cell)
    hg = np.rint(v["pedestal_hg_adc"][cell] + y + v["noise_hg_adc"][cell] * noise)
    return np.clip(hg, 0.0, e.adc_max).reshape(entries.size, cells.size)


def expected_constants(conditions: Conditions) -> dict[str, FloatArray]:
    """Per cell (cellids order), what the electronics calibrations measure: pedestals and
    noise of both gains (noisy cells: times the noisy factor), the high/low gain ratio and
    ``spe_adc`` = b x SPE, the small-signal LED peak spacing (see the module docstring)."""
    v = conditions.values
    factor = np.where(conditions.noisy, conditions.electronics.noisy_factor, 1.0)
    return {
        "pedestal_hg_adc": v["pedestal_hg_adc"].copy(),
        "pedestal_lg_adc": v["pedestal_lg_adc"].copy(),
        "noise_hg_adc": v["noise_hg_adc"] * factor,
        "noise_lg_adc": v["noise_lg_adc"] * factor,
        "gain_ratio": v["gain_ratio"].copy(),
        "spe_adc": v["spe_adc"] * v["nonlinearity_b"],
    }


# ------------------------------------------------------------------------------ files


Readings = Callable[[IntArray, IntArray], dict[str, FloatArray]]


def _chunks(
    conditions: Conditions, events: int, run: int, cells: IntArray, readings: Readings
) -> Iterator[ak.Array]:
    """Chunks of events for :func:`write_events`: every cell of ``cells`` once per event."""
    geometry = get_geometry(conditions.geometry)
    cellid = geometry.cellids()[cells]
    _, layer, i, j = decode_cellid(cellid)
    x, y, z = geometry.centre(cellid)
    flags = np.where(conditions.noisy[cells], np.uint32(HitFlag.NOISY), np.uint32(0))
    static: dict[str, npt.NDArray[Any]] = {
        "cellid": cellid,
        "layer": layer.astype(np.int16),
        "i": i.astype(np.int16),
        "j": j.astype(np.int16),
        "x": x.astype(np.float32),
        "y": y.astype(np.float32),
        "z": z.astype(np.float32),
    }
    per_chunk = max(1, _READINGS_PER_CHUNK // max(cells.size, 1))
    for start in range(0, events, per_chunk):
        entries = np.arange(start, min(start + per_chunk, events), dtype=np.int64)
        n = entries.size
        fields = {name: np.tile(array, n) for name, array in static.items()}
        for name, array in readings(entries, cells).items():
            fields[name] = array.astype(np.float32).ravel()
        fields["gain"] = np.zeros(n * cells.size, np.uint8)
        fields["flags"] = np.tile(flags, n)
        hits = ak.unflatten(ak.zip(fields), np.full(n, cells.size, np.int64))
        yield ak.zip(
            {
                "event": entries,
                "run": np.full(n, run, np.int32),
                "pdg": np.zeros(n, np.int32),
                "beam_energy": np.zeros(n),
                "hit": hits,
            },
            depth_limit=1,
        )


def _live_cells(conditions: Conditions, cells: npt.ArrayLike | None) -> tuple[IntArray, int]:
    """Dense indices of the cells read: ``cells`` (or all), dead ones left out; and how
    many dead ones were left out."""
    if cells is None:
        selected = np.arange(conditions.n_cells, dtype=np.int64)
    else:
        selected = np.unique(np.asarray(cells, np.int64))
        if selected.size and (selected[0] < 0 or selected[-1] >= conditions.n_cells):
            raise SimulationConfigError(
                f"cells must be dense cell indices in [0, {conditions.n_cells}) of "
                f"{conditions.geometry!r}, got {selected[0]}..{selected[-1]}"
            )
    live = selected[~conditions.dead[selected]]
    if live.size == 0:
        raise SimulationConfigError("no live cell to read: every selected cell is dead")
    return live, selected.size - live.size


def _write_run(
    run_type: str,
    conditions: Conditions,
    events: int,
    seed: int,
    output: str | os.PathLike[str],
    run: int,
    cells: npt.ArrayLike | None,
    readings: Readings,
    extra: dict[str, Any],
    compression: str,
) -> Path:
    if not isinstance(events, int | np.integer) or events < 1:
        raise SimulationConfigError(f"events must be a positive integer, got {events!r}")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise SimulationConfigError(f"seed must be a non-negative integer, got {seed!r}")
    geometry = get_geometry(conditions.geometry)
    conditions.check_geometry(geometry, f"the {run_type} run")
    live, dead = _live_cells(conditions, cells)
    metadata = FileMetadata(
        stage="raw",
        geometry=geometry.name,
        geometry_hash=geometry.hash,
        producer=f"calocoffea {__version__} calibrun {run_type}",
        extra={
            "run_type": run_type,
            "seed": int(seed),
            "run": int(run),
            "events": int(events),
            "conditions": conditions.label,
            "conditions_seed": conditions.seed,
            "cells_read": int(live.size),
            "dead_cells_skipped": int(dead),
            **extra,
        },
    )
    chunks = _chunks(conditions, int(events), run, live, readings)
    return write_events(output, chunks, metadata, compression=compression)


def pedestal_run(
    conditions: Conditions,
    events: int,
    seed: int,
    output: str | os.PathLike[str],
    *,
    run: int = 0,
    cells: npt.ArrayLike | None = None,
    compression: str = "zstd",
) -> Path:
    """Write a pedestal run: ``events`` random triggers reading every live cell (or the
    dense indices ``cells``) in both gains. Hit ``energy`` is the high-gain ADC, ``adc_lg``
    the low-gain ADC. Atomic; returns the path."""
    key = run_key(seed, "pedestal", run)

    def readings(entries: IntArray, live: IntArray) -> dict[str, FloatArray]:
        hg, lg = pedestal_readings(conditions, key, entries, live)
        return {"energy": hg, "adc_lg": lg}

    return _write_run(
        "pedestal", conditions, events, seed, output, run, cells, readings, {}, compression
    )


def led_run(
    conditions: Conditions,
    events: int,
    seed: int,
    output: str | os.PathLike[str],
    *,
    mu_led: float = MU_LED,
    mu_spread: float = MU_SPREAD,
    run: int = 0,
    cells: npt.ArrayLike | None = None,
    compression: str = "zstd",
) -> Path:
    """Write an LED run: ``events`` low-light pulses, ``mu_led`` photo-electrons on average
    (times 1 + ``mu_spread`` x Gauss per cell), high-gain ADC of every live cell (or of the
    dense indices ``cells``) as hit ``energy``. Atomic; returns the path."""
    if not 0 < mu_led <= 20 or not 0 <= mu_spread < 1:
        raise SimulationConfigError(
            f"mu_led must be in (0, 20] p.e. and mu_spread in [0, 1), got {mu_led}, "
            f"{mu_spread}; low light (about 1-3 p.e.) shows the single photo-electron peaks"
        )
    key = run_key(seed, "led", run)

    def readings(entries: IntArray, live: IntArray) -> dict[str, FloatArray]:
        return {"energy": led_readings(conditions, key, entries, live, mu_led, mu_spread)}

    extra = {"mu_led": float(mu_led), "mu_spread": float(mu_spread)}
    return _write_run("led", conditions, events, seed, output, run, cells, readings, extra,
                      compression)  # fmt: skip


def calibration_run(
    run_type: str,
    conditions: Conditions,
    events: int,
    seed: int,
    output: str | os.PathLike[str],
    **options: Any,
) -> Path:
    """:func:`pedestal_run` or :func:`led_run` by ``run_type``, with their keyword options."""
    if run_type == "pedestal":
        return pedestal_run(conditions, events, seed, output, **options)
    if run_type == "led":
        return led_run(conditions, events, seed, output, **options)
    raise SimulationConfigError(
        f"unknown calibration run type {run_type!r}; choose one of {', '.join(RUN_TYPES)}"
    )


__all__ = [
    "MU_LED",
    "MU_SPREAD",
    "RUN_TYPES",
    "STREAMS",
    "calibration_run",
    "expected_constants",
    "led_intensity",
    "led_readings",
    "led_run",
    "pedestal_readings",
    "pedestal_run",
    "run_key",
]
