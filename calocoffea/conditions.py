"""Detector conditions: the per-cell truth of the SiPM-on-tile read-out, drawn once from a seed.

What to use when:

- :func:`nominal` -- the nominal conditions of a geometry (seed :data:`NOMINAL_SEED`); the
  digitiser uses them by default and the nominal calibration constants are these tables.
- :meth:`Conditions.draw` -- another draw (pseudo-data with hidden conditions): other seed,
  other :class:`ConditionsConfig` (wider spreads, dead or noisy cells, aging...).
- :meth:`Conditions.save` / :meth:`Conditions.load` -- one ``.npz`` file with the tables and
  a JSON header (geometry, hash, seed, config).
- :meth:`Conditions.with_values` -- the same tables with some cells changed (one cell's gain
  10 % high, say).

Every per-cell parameter is listed once in :data:`PARAMETERS` with its unit, default mean,
per-cell spread and source (PHYSICS.md, "SiPM-on-tile digitisation"); the read-out settings
that are the same for every cell are the fields of :class:`Electronics`.

The electronics non-linearity acts on the high-gain-equivalent amplitude x [ADC] as

    y = b x / (1 + a x / X),   x = y / (b - a y / X)   (X = Electronics.nonlinearity_scale_adc)

monotonic for a >= 0 and b > 0, with the analytic inverse on the right: b is the small-signal
gain of the front end, a the relative compression at X, the high-gain-equivalent amplitude of
the low-gain range top. The form is a choice of calocoffea (seed 000 names parameters a, b but
not the function).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from calocoffea.exceptions import ConditionsError, GeometryMismatchError
from calocoffea.geometry import Geometry, get_geometry
from calocoffea.io import atomic_write

#: Seed of the nominal conditions of every geometry.
NOMINAL_SEED = 0
#: Most probable MIP deposit is taken for a muon of this momentum [GeV] (beta gamma ~ 95).
MIP_REFERENCE_MOMENTUM_GEV = 10.0
_MUON_MASS_GEV = 0.1056583755
_FORMAT = "calocoffea-conditions"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Parameter:
    """A per-cell parameter: Gaussian per-cell spread around a mean, clipped at ``minimum``."""

    mean: float
    spread: float
    unit: str
    meaning: str
    source: str
    minimum: float = 0.0


#: Per-cell parameters drawn by :meth:`Conditions.draw` (spread = per-cell standard deviation).
PARAMETERS: dict[str, Parameter] = {
    "pedestal_hg_adc": Parameter(377.4, 3.3, "ADC", "high-gain pedestal", "CEPC digitiser"),
    "pedestal_lg_adc": Parameter(373.9, 2.2, "ADC", "low-gain pedestal", "CEPC digitiser"),
    "noise_hg_adc": Parameter(
        3.0, 0.3, "ADC", "high-gain pedestal noise (0.1 p.e.)", "guess: AHCAL-like ~0.1 p.e."
    ),
    "noise_lg_adc": Parameter(
        1.5, 0.15, "ADC", "low-gain pedestal noise", "guess: ~1.5 fired pixels"
    ),
    "spe_adc": Parameter(30.0, 3.5, "ADC", "high-gain ADC per fired pixel", "CEPC digitiser"),
    "gain_ratio": Parameter(
        29.9, 0.6, "1", "high/low gain ratio", "CEPC digitiser (mean); spread 2 % guess"
    ),
    "light_yield_pe": Parameter(
        11.5, 0.575, "p.e./MIP", "photo-electrons per MIP", "CEPC digitiser; spread 5 % guess"
    ),
    "n_pixels": Parameter(7284.0, 364.2, "pixels", "SiPM pixels", "CEPC; 5 % as MarlinReco", 100),
    "nonlinearity_a": Parameter(
        0.05, 0.01, "1", "electronics compression at the LG range top", "guess (seed 000: a)"
    ),
    "nonlinearity_b": Parameter(
        1.0, 0.02, "1", "electronics small-signal gain", "guess (seed 000: b)", 0.1
    ),
    "aging": Parameter(
        1.0, 0.0, "1", "A = E_undamaged / E_damaged (light loss)", "seed 004; none by default", 1.0
    ),
}


@dataclass(frozen=True)
class Electronics:
    """Read-out settings shared by every cell (CEPC digitiser defaults, PHYSICS.md)."""

    switch_adc: float = 2930.0  # high-gain ADC above which the low gain is read
    lg_saturation_adc: float = 3000.0  # low-gain range top
    adc_max: float = 4095.0  # 12-bit ADC
    threshold_mip: float = 0.5  # zero suppression
    nonuniformity: float = 0.048  # tile response, Gaussian relative spread (seed 000)
    pixel_spread: float = 0.05  # relative gain spread of a fired pixel (MarlinReco)
    #: high-gain-equivalent amplitude where ``nonlinearity_a`` is the compression [ADC]:
    #: the low-gain range top, (3000 - 373.9) x 29.9
    nonlinearity_scale_adc: float = 78520.0
    desaturation_occupancy: float = 0.95  # linear continuation above (DDScintillatorPpdDigi)
    time_resolution_ns: float = 1.0  # guess
    noisy_factor: float = 5.0  # noise of a noisy cell / nominal noise

    def __post_init__(self) -> None:
        if not 0 < self.switch_adc <= self.adc_max or not 0 < self.lg_saturation_adc:
            raise ConditionsError(f"inconsistent ADC ranges in {self}")
        if not 0 < self.desaturation_occupancy < 1:
            raise ConditionsError("desaturation_occupancy must be in (0, 1)")


@dataclass(frozen=True)
class ConditionsConfig:
    """What :meth:`Conditions.draw` draws: per-parameter (mean, spread) overrides of
    :data:`PARAMETERS`, fractions of dead and noisy cells, and the electronics."""

    overrides: dict[str, tuple[float, float]] = field(default_factory=dict)
    dead_fraction: float = 0.0
    noisy_fraction: float = 0.0
    electronics: Electronics = field(default_factory=Electronics)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.overrides) - set(PARAMETERS))
        if unknown:
            raise ConditionsError(
                f"unknown conditions parameter(s) {unknown}; known: {', '.join(PARAMETERS)}"
            )
        for name in ("dead_fraction", "noisy_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ConditionsError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def mean_spread(self, name: str) -> tuple[float, float]:
        p = PARAMETERS[name]
        return self.overrides.get(name, (p.mean, p.spread))

    def to_dict(self) -> dict[str, Any]:
        return {
            "overrides": {k: list(v) for k, v in self.overrides.items()},
            "dead_fraction": self.dead_fraction,
            "noisy_fraction": self.noisy_fraction,
            "electronics": dataclasses.asdict(self.electronics),
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> ConditionsConfig:
        return cls(
            overrides={k: (float(v[0]), float(v[1])) for k, v in payload["overrides"].items()},
            dead_fraction=payload["dead_fraction"],
            noisy_fraction=payload["noisy_fraction"],
            electronics=Electronics(**payload["electronics"]),
        )


def mip_reference_mev(geometry: Geometry) -> npt.NDArray[np.float64]:
    """Most probable MIP deposit in each layer's active slab [MeV] (10 GeV muon)."""
    p = MIP_REFERENCE_MOMENTUM_GEV
    return np.asarray(geometry.mip_mpv_mev(p / _MUON_MASS_GEV), dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Conditions:
    """Per-cell truth tables of one geometry, in :meth:`Geometry.cellids` order.

    ``values`` holds one float64 array per name of :data:`PARAMETERS`, ``dead`` and
    ``noisy`` are boolean arrays. ``mip_mev`` is the MIP reference of each cell's layer.
    """

    geometry: str
    geometry_hash: str
    seed: int
    config: ConditionsConfig
    values: dict[str, npt.NDArray[np.float64]]
    dead: npt.NDArray[np.bool_]
    noisy: npt.NDArray[np.bool_]
    mip_mev: npt.NDArray[np.float64]
    label: str = "nominal"

    def __post_init__(self) -> None:
        n = self.dead.size
        missing = sorted(set(PARAMETERS) - set(self.values))
        if missing:
            raise ConditionsError(f"conditions lack the table(s) {missing}")
        for name, array in [*self.values.items(), ("noisy", self.noisy), ("mip", self.mip_mev)]:
            if np.shape(array) != (n,):
                raise ConditionsError(f"table {name!r} has shape {np.shape(array)}, not ({n},)")
            if not np.all(np.isfinite(array)):
                raise ConditionsError(f"table {name!r} has non-finite values")

    # ---- construction -----------------------------------------------------------------
    @classmethod
    def draw(
        cls,
        geometry: str | Geometry,
        seed: int = NOMINAL_SEED,
        config: ConditionsConfig | None = None,
        label: str = "",
    ) -> Conditions:
        """Draw every table from ``seed``; each parameter has its own random stream, so
        overriding one leaves the others' draws unchanged."""
        geo = get_geometry(geometry)
        config = config or ConditionsConfig()
        n = geo.n_cells
        values = {}
        for k, (name, parameter) in enumerate(PARAMETERS.items()):
            mean, spread = config.mean_spread(name)
            rng = np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, k])))
            drawn = mean + spread * rng.standard_normal(n)
            values[name] = np.maximum(drawn, parameter.minimum)
        values["n_pixels"] = np.rint(values["n_pixels"])
        flags = np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, 1000])))
        u = flags.random((2, n))
        return cls(
            geometry=geo.name,
            geometry_hash=geo.hash,
            seed=seed,
            config=config,
            values=values,
            dead=u[0] < config.dead_fraction,
            noisy=u[1] < config.noisy_fraction,
            mip_mev=mip_reference_mev(geo)[geo.cell_layer],
            label=label or ("nominal" if seed == NOMINAL_SEED else f"seed {seed}"),
        )

    @property
    def n_cells(self) -> int:
        return self.dead.size

    @property
    def electronics(self) -> Electronics:
        return self.config.electronics

    @property
    def mip_adc(self) -> npt.NDArray[np.float64]:
        """High-gain ADC amplitude of a MIP at the most probable deposit (small signal)."""
        v = self.values
        return v["light_yield_pe"] * v["spe_adc"] * v["nonlinearity_b"] / v["aging"]

    def with_values(self, label: str = "", **changes: npt.ArrayLike) -> Conditions:
        """A copy with whole tables replaced: ``with_values(spe_adc=new_array)``;
        ``dead`` and ``noisy`` take boolean arrays."""
        values = dict(self.values)
        dead, noisy = self.dead, self.noisy
        for name, array in changes.items():
            new = np.asarray(array, dtype=bool if name in ("dead", "noisy") else np.float64)
            if name == "dead":
                dead = new
            elif name == "noisy":
                noisy = new
            elif name in values:
                values[name] = new
            else:
                raise ConditionsError(
                    f"unknown conditions table {name!r}; known: {', '.join(values)}, dead, noisy"
                )
        return dataclasses.replace(
            self, values=values, dead=dead, noisy=noisy, label=label or self.label + " (modified)"
        )

    def check_geometry(self, geometry: Geometry, what: str) -> None:
        """Raise :class:`GeometryMismatchError` unless these conditions are for ``geometry``."""
        if geometry.hash != self.geometry_hash:
            raise GeometryMismatchError(
                f"{what} is for geometry {geometry.name!r} (hash {geometry.hash}) but the "
                f"conditions are for {self.geometry!r} (hash {self.geometry_hash}); draw "
                f"conditions for {geometry.name!r} (calocoffea.conditions.nominal)"
            )

    # ---- persistence ------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "geometry": self.geometry,
            "geometry_hash": self.geometry_hash,
            "seed": self.seed,
            "label": self.label,
            "config": self.config.to_dict(),
            "units": {name: p.unit for name, p in PARAMETERS.items()} | {"mip_mev": "MeV"},
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write an ``.npz`` with every table and the JSON header; atomic."""
        arrays: dict[str, Any] = {f"value_{k}": v for k, v in self.values.items()}
        with atomic_write(path) as temporary, open(temporary, "wb") as stream:
            np.savez_compressed(
                stream,
                header=np.array(json.dumps(self.header())),
                dead=self.dead,
                noisy=self.noisy,
                mip_mev=self.mip_mev,
                **arrays,
            )
        return Path(path).absolute()

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Conditions:
        """Read a file written by :meth:`save`."""
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                values = {k[6:]: data[k] for k in data.files if k.startswith("value_")}
                dead, noisy, mip = data["dead"], data["noisy"], data["mip_mev"]
        except (OSError, KeyError, ValueError) as err:
            raise ConditionsError(
                f"{path} is not a calocoffea conditions file ({err}); write one with "
                "Conditions.save or `calocoffea conditions draw`"
            ) from err
        if header.get("format") != _FORMAT:
            raise ConditionsError(f"{path} is not a calocoffea conditions file")
        return cls(
            geometry=header["geometry"],
            geometry_hash=header["geometry_hash"],
            seed=header["seed"],
            config=ConditionsConfig.from_dict(header["config"]),
            values=values,
            dead=dead,
            noisy=noisy,
            mip_mev=mip,
            label=header["label"],
        )


def nominal(geometry: str | Geometry) -> Conditions:
    """The nominal conditions of ``geometry`` (:data:`NOMINAL_SEED`, default config)."""
    return Conditions.draw(geometry, NOMINAL_SEED, label="nominal")


__all__ = [
    "NOMINAL_SEED",
    "PARAMETERS",
    "Conditions",
    "ConditionsConfig",
    "Electronics",
    "Parameter",
    "mip_reference_mev",
    "nominal",
]
