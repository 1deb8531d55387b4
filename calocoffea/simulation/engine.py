"""The fast simulation engine: showers -> spots -> cells -> events, in blocks of events.

Each block of :data:`BLOCK_EVENTS` events draws from its own Philox stream keyed by
``(seed, block)``, so a file does not depend on how it is chunked for writing and the
same seed always gives the same events. Everything is vectorised over the events of a
block and over the spots; there are no per-spot Python loops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property

import awkward as ak
import numpy as np

from calocoffea.exceptions import SimulationConfigError
from calocoffea.geometry import Geometry, encode_cellid
from calocoffea.grids import FloatArray, HexGrid, IntArray
from calocoffea.materials import material
from calocoffea.simulation import showers
from calocoffea.simulation.beam import Beam
from calocoffea.simulation.particles import Particle

#: Events per random-number block (fixed: changing it changes the events of a seed).
BLOCK_EVENTS = 200
#: Speed of light [mm/ns].
C_MM_PER_NS = 299.792458

RadiusSampler = Callable[[IntArray, IntArray], FloatArray]


@dataclass(frozen=True)
class Component:
    """One part of a shower in a block: visible deposits, spot counts, radial law."""

    visible_mev: FloatArray  # (events, layers)
    spots: IntArray  # (events, layers)
    radius_mm: RadiusSampler | None  # None: spots on the beam axis (MIP tracks)


class LayerTable:
    """Per-layer constants of a geometry as arrays, computed once."""

    def __init__(self, geometry: Geometry) -> None:
        g = geometry
        self.n = g.n_layers
        self.x0_start, self.x0_end = g.layer_depth_x0
        self.l_start, self.l_end = g.layer_depth_lambda
        self.x0_mid = 0.5 * (self.x0_start + self.x0_end)
        self.z_mm = g.layer_z
        self.rm_mm = g.layer_property("moliere_radius_mm")
        self.lambda_mm = g.layer_property("lambda_i_mm")
        self.f_mip = g.layer_property("mip_sampling_fraction")
        self.e_hat = g.layer_property("e_hat")
        self.z = g.layer_property("z")
        self.fs = g.layer_property("x0_mm") / np.array([la.thickness_mm for la in g.layers])
        section = g.layer_section
        self.section = section
        self.stochastic = np.array([g.sections[s].stochastic_term for s in section])
        self.e_over_h = np.array([g.sections[s].e_over_h for s in section])
        self.mip_loss_gev = 1e-4 * np.array(
            [
                sum(
                    material(m).density * t * material(m).dedx_min
                    for m, t in ((la.absorber, la.absorber_mm), (la.active, la.active_mm))
                )
                for la in g.layers
            ]
        )
        self.xi_mev = g.landau_width_mev()
        self.first = g.layers[0].medium


class Simulation:
    """Simulate ``events`` showers of ``particle`` in ``geometry`` (per beam energy point
    for a list of energies, in all for a range)."""

    def __init__(
        self,
        geometry: Geometry,
        particle: Particle,
        beam: Beam,
        events: int,
        seed: int,
        run: int = 0,
    ) -> None:
        if not isinstance(events, int | np.integer) or events <= 0:
            raise SimulationConfigError(
                f"number of events must be a positive integer, got {events!r}"
            )
        if not 0 <= seed < 2**63:
            raise SimulationConfigError(f"seed must be an integer in [0, 2^63), got {seed!r}")
        self.geometry, self.particle, self.beam = geometry, particle, beam
        self.events, self.seed, self.run = int(events), int(seed), run
        self.layers = LayerTable(geometry)

    @property
    def n_events(self) -> int:
        return self.beam.n_events(self.events)

    @property
    def n_blocks(self) -> int:
        return -(-self.n_events // BLOCK_EVENTS)

    def __iter__(self) -> Iterator[ak.Array]:
        for block in range(self.n_blocks):
            yield self.block(block)

    # ---- one block ------------------------------------------------------------------
    def block(self, index: int) -> ak.Array:
        """Events ``index * BLOCK_EVENTS ...`` as an awkward record array."""
        first = index * BLOCK_EVENTS
        n = min(BLOCK_EVENTS, self.n_events - first)
        rng = np.random.Generator(np.random.Philox(np.random.SeedSequence([self.seed, index])))
        energy = self.beam.energies(rng, first, n, self.events)
        bx, by = self.beam.positions(rng, n, self.geometry.sections[0].grid.half_width_mm)
        shower = self.particle.shower
        if shower == "em":
            components, truth_em, truth_all = self._electromagnetic(rng, energy)
        elif shower == "hadron":
            components, truth_em, truth_all = self._hadronic(rng, energy)
        else:
            components, truth_em, truth_all = self._muon(rng, energy)
        hits = self._hits(rng, components, bx, by, n)
        fem = {}
        with np.errstate(invalid="ignore", divide="ignore"):
            fem["fem"] = truth_em.sum(axis=1) / truth_all.sum(axis=1)
            for k, s in enumerate(self.geometry.sections):
                sel = self.layers.section == k
                fem[f"fem_{s.name}"] = truth_em[:, sel].sum(axis=1) / truth_all[:, sel].sum(axis=1)
        record = {
            "event": np.arange(first, first + n, dtype=np.int64),
            "run": np.full(n, self.run, np.int32),
            "pdg": np.full(n, self.particle.pdg, np.int32),
            "beam_energy": energy.astype(np.float64),
            "beam_x": bx,
            "beam_y": by,
            "edep_active": ak.to_numpy(ak.sum(hits.energy, axis=1)).astype(np.float64),
            **{k: v.astype(np.float32) for k, v in fem.items()},
            "hit": hits,
        }
        return ak.Array(record)

    # ---- showers --------------------------------------------------------------------
    def _electromagnetic(
        self, rng: np.random.Generator, energy: FloatArray
    ) -> tuple[list[Component], FloatArray, FloatArray]:
        lt, m = self.layers, self.layers.first
        n = energy.size
        start = np.zeros(n)
        if self.particle.pdg == 22:
            start = rng.exponential(showers.PHOTON_CONVERSION_X0, n)
        t, alpha = showers.sample_gflash_profile(
            rng, energy, m.critical_energy, m.z, lt.fs[0], lt.e_hat[0]
        )
        frac = showers.gamma_fractions(lt.x0_start, lt.x0_end, start, alpha, (alpha - 1) / t)
        truth = energy[:, None] * frac
        deposit = showers.sampling_fluctuation(rng, truth, lt.stochastic[None, :])
        visible = 1000.0 * deposit * (lt.f_mip * lt.e_hat)[None, :]
        a_s, b_s = showers.spot_shape(t, alpha, m.z)
        spot_frac = showers.gamma_fractions(lt.x0_start, lt.x0_end, start, a_s, b_s)
        spots = self._spot_counts(rng, showers.spot_count(energy)[:, None] * spot_frac, visible)

        def radius(ev: IntArray, layer: IntArray) -> FloatArray:
            tau = np.maximum(lt.x0_mid[layer] - start[ev], 0.0) / t[ev]
            rc, rt, p = showers.gflash_radial(
                tau, energy[ev], lt.z[layer], lt.fs[layer], lt.e_hat[layer]
            )
            return showers.sample_two_component_radius(rng, rc, rt, p) * lt.rm_mm[layer]

        return [Component(visible, spots, radius)], truth, truth

    def _hadronic(
        self, rng: np.random.Generator, energy: FloatArray
    ) -> tuple[list[Component], FloatArray, FloatArray]:
        lt = self.layers
        n, n_layers = energy.size, lt.n
        # first inelastic interaction: depth in lambda_I, its layer and depth in X0
        depth_l = rng.exponential(1.0, n)
        k = np.searchsorted(lt.l_end, depth_l, side="right")
        kk = np.minimum(k, n_layers - 1)
        within = np.clip((depth_l - lt.l_start[kk]) / (lt.l_end[kk] - lt.l_start[kk]), 0, 1)
        depth_x0 = lt.x0_start[kk] + within * (lt.x0_end[kk] - lt.x0_start[kk])
        track = np.arange(n_layers)[None, :] < k[:, None]  # layers crossed as a MIP
        mip = self._mip(rng, energy, track)
        loss = (track * lt.mip_loss_gev[None, :]).sum(axis=1)
        shower_e = np.where(k < n_layers, np.maximum(energy - loss, 0.0), 0.0)
        fem = showers.sample_fem(rng, np.maximum(shower_e, 1e-3))
        e_em, e_had = fem * shower_e, (1.0 - fem) * shower_e
        a, d = showers.bock_shape(np.maximum(shower_e, 1e-3))
        frac_em = showers.gamma_fractions(
            lt.x0_start, lt.x0_end, depth_x0, a, np.full(n, showers.BOCK_B)
        )
        frac_had = showers.gamma_fractions(lt.l_start, lt.l_end, depth_l, a, d)
        truth_em, truth_had = e_em[:, None] * frac_em, e_had[:, None] * frac_had
        c = lt.stochastic[None, :]
        dep_em = showers.sampling_fluctuation(rng, truth_em, c)
        dep_had = showers.sampling_fluctuation(rng, truth_had, showers.HADRONIC_SAMPLING_RATIO * c)
        with np.errstate(divide="ignore"):
            width = showers.INTRINSIC_HADRONIC / np.sqrt(np.maximum(e_had, 1e-6))
        intrinsic = np.maximum(1.0 + width * rng.standard_normal(n), 0.0)
        e_scale = 1000.0 * lt.f_mip * lt.e_hat
        vis_em = dep_em * e_scale[None, :]
        vis_had = dep_had * (e_scale / lt.e_over_h)[None, :] * intrinsic[:, None]
        n_em = self._spot_counts(rng, showers.spot_count(e_em)[:, None] * frac_em, vis_em)
        n_had = self._spot_counts(rng, showers.spot_count(e_had)[:, None] * frac_had, vis_had)

        def core(ev: IntArray, layer: IntArray) -> FloatArray:
            slope = showers.CORE_SLOPE_RM * lt.rm_mm[layer]
            return showers.sample_exponential_radius(rng, slope)

        def halo(ev: IntArray, layer: IntArray) -> FloatArray:
            wide = rng.random(layer.size) < showers.HALO_FRACTION
            slope = np.where(wide, showers.HALO_SLOPE_LAMBDA, showers.CORE_SLOPE_LAMBDA)
            slope = slope * lt.lambda_mm[layer]
            return showers.sample_exponential_radius(rng, slope)

        components = [mip, Component(vis_em, n_em, core), Component(vis_had, n_had, halo)]
        truth_track = track * lt.mip_loss_gev[None, :]
        return components, truth_em, truth_em + truth_had + truth_track

    def _muon(
        self, rng: np.random.Generator, energy: FloatArray
    ) -> tuple[list[Component], FloatArray, FloatArray]:
        track = np.ones((energy.size, self.layers.n), bool)
        truth = track * self.layers.mip_loss_gev[None, :]
        return [self._mip(rng, energy, track)], np.zeros_like(truth), truth

    def _mip(self, rng: np.random.Generator, energy: FloatArray, track: np.ndarray) -> Component:
        """Landau deposits of a unit-charge track in the layers marked in ``track``."""
        lt = self.layers
        bg = self.particle.beta_gamma(float(np.median(energy)))
        mpv = self.geometry.mip_mpv_mev(bg) if np.isfinite(bg) else lt.xi_mev * 0
        rows, cols = np.nonzero(track)
        visible = np.zeros(track.shape)
        visible[rows, cols] = showers.sample_landau(rng, mpv[cols], lt.xi_mev[cols])
        return Component(visible, (visible > 0).astype(np.int64), None)

    @staticmethod
    def _spot_counts(rng: np.random.Generator, mean: FloatArray, visible: FloatArray) -> IntArray:
        """Poisson spot counts, at least one wherever there is visible energy."""
        counts = rng.poisson(np.clip(mean, 0.0, None))
        return np.where(visible > 0, np.maximum(counts, 1), 0)

    # ---- spots -> hits --------------------------------------------------------------
    @cached_property
    def _index_layout(self) -> tuple[IntArray, int]:
        """Offset of i, j per section and the common width of the dense cell index."""
        offsets, widths = [], []
        for s in self.geometry.sections:
            if isinstance(s.grid, HexGrid):
                offsets.append(s.grid.rings - 1)
                widths.append(2 * s.grid.rings - 1)
            else:
                offsets.append(0)
                widths.append(max(s.grid.nx, s.grid.ny))
        return np.array(offsets), max(widths)

    def _hits(
        self,
        rng: np.random.Generator,
        components: list[Component],
        bx: FloatArray,
        by: FloatArray,
        n: int,
    ) -> ak.Array:
        lt, g = self.layers, self.geometry
        offsets, width = self._index_layout
        keys, energies = [], []
        for comp in components:
            flat = comp.spots.ravel()
            nz = np.flatnonzero(flat)
            counts = flat[nz]
            ev = np.repeat(nz // lt.n, counts)
            layer = np.repeat(nz % lt.n, counts)
            e = np.repeat(comp.visible_mev.ravel()[nz] / counts, counts)
            x, y = bx[ev], by[ev]
            if comp.radius_mm is not None:
                r = comp.radius_mm(ev, layer)
                phi = rng.uniform(0.0, 2.0 * np.pi, r.size)
                x = x + r * np.cos(phi)
                y = y + r * np.sin(phi)
            section = lt.section[layer]
            i = np.empty(layer.size, np.int64)
            j = np.empty(layer.size, np.int64)
            inside = np.empty(layer.size, bool)
            for s_index, s in enumerate(g.sections):
                sel = section == s_index
                i[sel], j[sel], inside[sel] = s.grid.cell_of(x[sel], y[sel])
            off = offsets[section]
            key = ((ev * lt.n + layer) * width + (i + off)) * width + (j + off)
            keys.append(key[inside])
            energies.append(e[inside])
        key = np.concatenate(keys)
        unique, inverse = np.unique(key, return_inverse=True)
        energy = np.bincount(inverse, weights=np.concatenate(energies), minlength=unique.size)
        j = unique % width
        rest = unique // width
        i = rest % width
        rest //= width
        layer = rest % lt.n
        ev = rest // lt.n
        section = lt.section[layer]
        i, j = i - offsets[section], j - offsets[section]
        cellid = encode_cellid(section, layer, i, j)
        x = np.empty(unique.size)
        y = np.empty(unique.size)
        for s_index, s in enumerate(g.sections):
            sel = section == s_index
            x[sel], y[sel] = s.grid.centre(i[sel], j[sel])
        z = lt.z_mm[layer]
        flat = ak.zip(
            {
                "cellid": cellid,
                "layer": layer.astype(np.int16),
                "i": i.astype(np.int16),
                "j": j.astype(np.int16),
                "x": x.astype(np.float32),
                "y": y.astype(np.float32),
                "z": z.astype(np.float32),
                "energy": energy.astype(np.float32),
                "time": (z / C_MM_PER_NS).astype(np.float32),
                "flags": np.zeros(unique.size, np.uint32),
            }
        )
        return ak.unflatten(flat, np.bincount(ev, minlength=n))
