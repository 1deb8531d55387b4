"""``wgan_aging``: per-cell aging coefficients by Wasserstein distribution matching, without
truth (seed 004, arXiv:2411.03891).

What to use when:

- :class:`WganAging` (``wgan_aging``) -- an undamaged reference sample and a damaged sample
  of the same kind of events (not the same events): learns A_i = E_undamaged / E_damaged per
  cell so that the corrected damaged energies are distributed like the reference ones. It uses
  whole distributions, not only means, and moves each cell only as far as the data push it
  from A = 1 before the distance stops falling. ``moment_ratio`` is the one-pass baseline on
  the same cells; the reproduction (``reproduce/aging_table.py``) compares both with the truth.

The method (seed 004 §3.2, Fig. 3, with eq. 2):

- generator: the coefficients themselves, a diagonal layer on the cells' energies,
  x_gen = A ⊙ x_damaged, learnt as ln A (positive A) from A = 1;
- critic: C(x) = Σ_i c_i(φ(x_i)) over the fitted cells, φ(x) = ln(1 + x / e0)
  (e0 = ``log_scale_mev``: linear below one MIP-like deposit, logarithmic above, so that a
  scale is nearly a shift), each c_i a one-hidden-layer network of ``hidden`` leaky-ReLU
  units with c_i(0) = 0 (an empty cell contributes nothing);
- objective (eq. 2): min_A max_C E_ref[C(x)] - E_damaged[C(A ⊙ x)], the critic held
  1-Lipschitz per cell by a one-sided gradient penalty (WGAN-GP, Gulrajani et al. 2017)
  λ Σ_i E[max(0, |c_i'(x̂_i)| - 1)²] at x̂ = ε x_ref + (1 - ε) x_gen of randomly paired events
  (one ε ~ U(0, 1) per pair). The critic's maximum is then Σ_i W_1(P_i, Q_i), the sum of the
  cells' 1-D Wasserstein distances in φ;
- training: Adam for both; ``n_critic`` critic steps per generator step, batches of
  ``batch_events`` events of each sample; first ``warmup_critic_steps`` critic steps alone;
  one epoch = one pass over the damaged events in generator batches; what is evaluated and
  kept is the moving average of ln A over generator steps (decay ``averaging``, the usual
  averaging of GAN generator weights), which removes most of the step-to-step jitter;
- stopping: after each epoch the distance estimate W = E_ref[C] - E_gen[C] over the whole
  samples, smoothed S_t = s S_{t-1} + (1 - s) W_t (s = ``smoothing``); training stops when S
  has not fallen below (1 - ``tolerance``) of its best for ``patience`` epochs, and the
  coefficients of the best epoch are kept.

Why a critic that is a sum over cells and not one MLP on the whole vector of the central
cells (the seed's figure): measured on 5000 + 5000 pion events in ``tile_24x24`` (the 2560
central cells, Adam or SGD on ln A, 30-40 epochs, this 2-core machine), an MLP of 64 or 128
hidden units tells the two finite samples apart: its distance estimate grew from ~0.02 to
0.65 while the MAE of A grew from 0.018 (A = 1) to 0.06-0.13, at 8-12 s an epoch. Aging acts
cell by cell; the separable critic sees exactly the per-cell distributions, costs O(hits)
instead of O(events x cells) and needs no gradient penalty across unrelated cells. Which
cells are fitted (``central_only``, ``max_error``) is shared with ``moment_ratio``
(:class:`calocoffea.aging.AgingOptions`).

What to expect (10 GeV pions in ``tile_24x24``, 5000 + 5000 events, the 2560 central cells;
settings chosen on simulation seeds that neither the tests nor the reproduction use): the
exact per-cell 1-D W_1 optimum in φ (a quantile grid, no network) is as precise as the ratio
of means (MAE 0.0115 against 0.0116; 0.0025 for both on two undamaged samples), both near
the statistical floor of these samples; the adversarial training reaches 0.012-0.014
(0.003-0.004 on two undamaged samples): the critic, trained on batches, adds noise of its
own. Seed 004's MAE 0.0074 lies below that floor here (``reproduce/aging_table.py``).

Fit quality: the cells (candidates, trained, empty, imprecise), the loss curves per epoch
(``wasserstein_epoch``, ``wasserstein_smoothed``, ``critic_loss_epoch``,
``gradient_penalty_epoch``, ``generator_loss_epoch``), ``best_epoch``, ``epochs_run``,
``stopped_early`` and the time; with ``truth`` (a file written by
:func:`calocoffea.aging.apply_aging_files`) also ``mae_epoch`` and ``r2_epoch`` over the
candidate cells, for monitoring only: the truth never enters training or stopping.
The uncertainties of the table are the expected statistical errors of the cells
(:func:`calocoffea.aging.ratio_errors`), not errors of the training.
torch is the optional extra ``train``; only ``fit`` imports it. Seeded: the same ``seed``
and ``threads`` give the same coefficients on CPU (checked with 1 and 2 threads).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from calocoffea.aging import (
    AgingCalibration,
    AgingOptions,
    CellSample,
    CellSelection,
    aging_truth,
)
from calocoffea.exceptions import InputFileError, MethodOptionsError
from calocoffea.methods import require_torch
from calocoffea.scoring import score_constants

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
URL = "https://arxiv.org/abs/2411.03891"
#: Hits per chunk when evaluating the critic on a whole sample (bounds memory).
_EVAL_HITS = 1 << 20
#: Slope of the leaky ReLU for negative inputs.
_LEAK = 0.2


@dataclass(frozen=True)
class WganAgingOptions(AgingOptions):
    """Options of :class:`WganAging` (the samples and cells: :class:`AgingOptions`)."""

    #: most epochs (passes over the damaged events); early stopping usually ends sooner
    epochs: int = 150
    #: events of each sample per batch
    batch_events: int = 500
    #: critic steps per generator step
    n_critic: int = 5
    #: critic steps before the first generator step
    warmup_critic_steps: int = 50
    #: hidden units of each cell's critic network
    hidden: int = 4
    #: Adam learning rate of the generator (on ln A)
    learning_rate: float = 1e-3
    #: decay per generator step of the moving average of ln A that is evaluated and kept
    #: (0: the last step's values)
    averaging: float = 0.98
    #: Adam learning rate of the critic
    critic_learning_rate: float = 1e-2
    #: weight λ of the gradient penalty
    gradient_penalty: float = 10.0
    #: e0 [MeV] of the critic's input φ(x) = ln(1 + x / e0)
    log_scale_mev: float = 1.0
    #: weight s of the previous value in the smoothed distance S_t = s S_{t-1} + (1 - s) W_t
    smoothing: float = 0.7
    #: relative fall of the smoothed distance that counts as progress
    tolerance: float = 0.01
    #: epochs without progress before stopping (0: run every epoch)
    patience: int = 10
    #: seed of the critic's initial weights and of the batches
    seed: int = 0
    #: torch threads while training (0: leave torch's setting)
    threads: int = 0
    #: file written by calocoffea.aging.apply_aging_files whose truth is scored per epoch
    #: (monitoring only; empty: none)
    truth: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_ints = ("epochs", "batch_events", "n_critic", "hidden")
        for name in positive_ints:
            if getattr(self, name) < 1:
                raise MethodOptionsError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_critic_steps", "patience", "threads", "seed"):
            if getattr(self, name) < 0:
                raise MethodOptionsError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("learning_rate", "critic_learning_rate", "log_scale_mev"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise MethodOptionsError(f"{name} must be a positive number, got {value}")
        if not (math.isfinite(self.gradient_penalty) and self.gradient_penalty >= 0):
            raise MethodOptionsError(
                f"gradient_penalty must be a number >= 0, got {self.gradient_penalty}"
            )
        if not 0.0 <= self.averaging < 1.0:
            raise MethodOptionsError(f"averaging must lie in [0, 1), got {self.averaging}")
        if not 0.0 <= self.smoothing < 1.0:
            raise MethodOptionsError(f"smoothing must lie in [0, 1), got {self.smoothing}")
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise MethodOptionsError(f"tolerance must be a number >= 0, got {self.tolerance}")


# ------------------------------------------------------------------------------ tensors


@dataclass(frozen=True)
class _Hits:
    """A sample as torch tensors: events' hit counts and offsets, hits' fitted-cell index
    (0 .. n - 1) and energy [MeV]."""

    counts: Any
    offsets: Any
    cell: Any
    energy: Any

    @property
    def n_events(self) -> int:
        return int(self.counts.numel())


def _hits(torch: Any, sample: CellSample, local: IntArray) -> _Hits:
    """The hits of ``sample`` in the fitted cells (``local[cell] >= 0``) as tensors."""
    restricted = sample.restricted(local >= 0)
    counts = torch.from_numpy(restricted.counts.astype(np.int64))
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(counts, 0)])
    return _Hits(
        counts,
        offsets,
        torch.from_numpy(local[restricted.cell].astype(np.int64)),
        torch.from_numpy(restricted.energy_mev.astype(np.float32)),
    )


def _take(torch: Any, hits: _Hits, events: Any) -> tuple[Any, Any, Any]:
    """(position of the event in ``events``, cell, energy) of every hit of ``events``."""
    counts = hits.counts.index_select(0, events)
    starts = hits.offsets.index_select(0, events)
    total = int(counts.sum())
    pair = torch.repeat_interleave(torch.arange(events.numel()), counts)
    shift = torch.repeat_interleave(starts - (torch.cumsum(counts, 0) - counts), counts)
    index = shift + torch.arange(total)
    return pair, hits.cell.index_select(0, index), hits.energy.index_select(0, index)


# ------------------------------------------------------------------------------ networks


class _Critic:
    """C(x) = Σ_i c_i(z_i), c_i(z) = Σ_k v_ik [σ(a_ik z + b_ik) - σ(b_ik)], σ leaky ReLU."""

    def __init__(self, torch: Any, n_cells: int, hidden: int, generator: Any) -> None:
        self.torch = torch
        self.a = torch.randn(n_cells, hidden, generator=generator).requires_grad_(True)
        self.b = (0.5 * torch.randn(n_cells, hidden, generator=generator)).requires_grad_(True)
        self.v = (torch.randn(n_cells, hidden, generator=generator) / hidden).requires_grad_(True)

    @property
    def parameters(self) -> list[Any]:
        return [self.a, self.b, self.v]

    def __call__(self, cell: Any, z: Any) -> Any:
        """c_cell(z) of every hit."""
        f = self.torch.nn.functional.leaky_relu
        a, b, v = (p.index_select(0, cell) for p in self.parameters)
        return ((f(z[:, None] * a + b, _LEAK) - f(b, _LEAK)) * v).sum(1)


class _Trainer:
    """One fit: tensors, networks, optimisers and the steps of the module docstring."""

    def __init__(
        self,
        torch: Any,
        reference: _Hits,
        damaged: _Hits,
        n_cells: int,
        o: WganAgingOptions,
    ) -> None:
        self.torch, self.reference, self.damaged, self.n_cells, self.o = (
            torch, reference, damaged, n_cells, o,
        )  # fmt: skip
        self.generator = torch.Generator().manual_seed(o.seed)
        self.critic = _Critic(torch, n_cells, o.hidden, self.generator)
        self.log_a = torch.zeros(n_cells, requires_grad=True)
        #: exponential moving average of ln A over generator steps (what is evaluated and kept)
        self.log_a_average = torch.zeros(n_cells)
        betas = (0.5, 0.9)
        self.critic_optimizer = torch.optim.Adam(
            self.critic.parameters, lr=o.critic_learning_rate, betas=betas
        )
        self.generator_optimizer = torch.optim.Adam([self.log_a], lr=o.learning_rate, betas=betas)

    def phi(self, energy: Any) -> Any:
        return self.torch.log1p(energy / self.o.log_scale_mev)

    def _random_events(self, hits: _Hits) -> Any:
        n = min(self.o.batch_events, hits.n_events)
        return self.torch.randint(0, hits.n_events, (n,), generator=self.generator)

    def critic_step(self) -> tuple[float, float]:
        """One Adam step of the critic on -W + λ GP; returns (W, GP) of the batch."""
        torch = self.torch
        ref_events, dam_events = (self._random_events(h) for h in (self.reference, self.damaged))
        b_ref, b_dam = ref_events.numel(), dam_events.numel()
        pair_r, cell_r, e_r = _take(torch, self.reference, ref_events)
        pair_g, cell_g, e_g = _take(torch, self.damaged, dam_events)
        z_r = self.phi(e_r)
        with torch.no_grad():
            z_g = self.phi(e_g * torch.exp(self.log_a.index_select(0, cell_g)))
        w = self.critic(cell_r, z_r).sum() / b_ref - self.critic(cell_g, z_g).sum() / b_dam
        penalty = self._penalty(pair_r, cell_r, z_r, pair_g, cell_g, z_g, min(b_ref, b_dam))
        loss = -w + self.o.gradient_penalty * penalty
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        return float(w.detach()), float(penalty.detach())

    def _penalty(
        self, pair_r: Any, cell_r: Any, z_r: Any, pair_g: Any, cell_g: Any, z_g: Any, pairs: int
    ) -> Any:
        """Σ_i E[max(0, |c_i'(x̂_i)| - 1)²] at interpolates of the first ``pairs`` events of
        each batch, over the cells either event of a pair has a hit in."""
        torch = self.torch
        n = self.n_cells
        dense_r = torch.zeros(pairs * n)
        dense_g = torch.zeros(pairs * n)
        keep_r, keep_g = pair_r < pairs, pair_g < pairs
        dense_r[pair_r[keep_r] * n + cell_r[keep_r]] = z_r[keep_r].detach()
        dense_g[pair_g[keep_g] * n + cell_g[keep_g]] = z_g[keep_g]
        key = torch.nonzero((dense_r > 0) | (dense_g > 0)).squeeze(1)
        eps = torch.rand(pairs, generator=self.generator).index_select(0, key // n)
        z_hat = (eps * dense_r[key] + (1.0 - eps) * dense_g[key]).requires_grad_(True)
        values = self.critic(key % n, z_hat)
        (slope,) = torch.autograd.grad(values.sum(), z_hat, create_graph=True)
        return (torch.relu(slope.abs() - 1.0) ** 2).sum() / pairs

    def generator_step(self, events: Any) -> float:
        """One Adam step of ln A on -E_gen[C] over the damaged ``events``."""
        torch = self.torch
        _, cell, energy = _take(torch, self.damaged, events)
        z = self.phi(energy * torch.exp(self.log_a.index_select(0, cell)))
        loss = -self.critic(cell, z).sum() / events.numel()
        self.generator_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.generator_optimizer.step()
        with torch.no_grad():
            decay = self.o.averaging
            self.log_a_average.mul_(decay).add_(self.log_a.detach(), alpha=1.0 - decay)
        return float(loss.detach())

    def distance(self) -> float:
        """W = E_ref[C] - E_gen[C] over the whole samples with the current critic."""
        with self.torch.no_grad():
            ref = self._mean_critic(self.reference, scale=False)
            gen = self._mean_critic(self.damaged, scale=True)
        return ref - gen

    def _mean_critic(self, hits: _Hits, *, scale: bool) -> float:
        total = 0.0
        for start in range(0, int(hits.cell.numel()), _EVAL_HITS):
            cell = hits.cell[start : start + _EVAL_HITS]
            energy = hits.energy[start : start + _EVAL_HITS]
            if scale:
                energy = energy * self.torch.exp(self.log_a_average.index_select(0, cell))
            total += float(self.critic(cell, self.phi(energy)).sum())
        return total / max(hits.n_events, 1)

    def coefficients(self) -> FloatArray:
        """A of the fitted cells from the averaged ln A."""
        return np.exp(self.log_a_average.numpy().astype(np.float64))


# ------------------------------------------------------------------------------ method


class WganAging(AgingCalibration):
    """Aging coefficients as the weights of a WGAN generator (module docstring)."""

    description: ClassVar[str] = (
        "aging coefficients per cell as the weights of a WGAN-GP generator that matches a "
        "damaged sample to an undamaged one, unsupervised, early stopping (seed 004)"
    )
    url: ClassVar[str] = URL
    Options: ClassVar[type] = WganAgingOptions
    method_name: ClassVar[str] = "wgan_aging"
    options: WganAgingOptions

    def estimate(
        self, reference: CellSample, damaged: CellSample, selection: CellSelection
    ) -> tuple[FloatArray, dict[str, Any]]:
        torch = require_torch("wgan_aging (moment_ratio needs no torch)")
        monitor = self._monitor(selection)
        threads = torch.get_num_threads()
        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        try:
            start = time.perf_counter()
            fitted = np.flatnonzero(selection.trained)
            local = np.full(self.detector.n_cells, -1, dtype=np.int64)
            local[fitted] = np.arange(fitted.size)
            trainer = _Trainer(
                torch, _hits(torch, reference, local), _hits(torch, damaged, local),
                fitted.size, self.options,
            )  # fmt: skip
            values, history = self._train(trainer, monitor)
            history["seconds"] = time.perf_counter() - start
        finally:
            torch.set_num_threads(threads)
        return values, history

    def _monitor(self, selection: CellSelection) -> Any:
        """A function of the fitted values giving (MAE, R²) against the ``truth`` file over
        the candidate cells, or None."""
        path = self.options.truth
        if not path:
            return None
        truth = aging_truth(path)
        if truth.size != self.detector.n_cells:
            raise InputFileError(
                f"the truth file {path} (option truth) holds {truth.size} coefficients, not one "
                f"per cell of {self.detector.name!r} ({self.detector.n_cells}); give the damaged "
                "file of this geometry"
            )
        candidates = selection.candidates
        trained = selection.trained

        def score(values: FloatArray) -> tuple[float, float | None]:
            a = np.ones(truth.size)
            a[trained] = values
            result = score_constants(a, truth, candidates)
            return result.mae, (result.r2 if math.isfinite(result.r2) else None)

        return score

    def _train(self, trainer: _Trainer, monitor: Any) -> tuple[FloatArray, dict[str, Any]]:
        o = self.options
        torch = trainer.torch
        for _ in range(o.warmup_critic_steps):
            trainer.critic_step()
        history: dict[str, Any] = {
            "critic": (
                f"sum over cells of {o.hidden}-unit networks of ln(1 + E / {o.log_scale_mev:g} MeV)"
            ),
            "wasserstein_initial": trainer.distance(),
            "wasserstein_epoch": [],
            "wasserstein_smoothed": [],
            "critic_loss_epoch": [],
            "gradient_penalty_epoch": [],
            "generator_loss_epoch": [],
        }
        if monitor is not None:
            mae, r2 = monitor(trainer.coefficients())
            history.update({"mae_initial": mae, "mae_epoch": [], "r2_epoch": []})
        best_values, best_epoch = trainer.coefficients(), 0
        best = smoothed = math.inf
        stale, stopped = 0, False
        n_damaged = trainer.damaged.n_events
        batch = min(o.batch_events, n_damaged)
        for epoch in range(o.epochs):
            order = torch.randperm(n_damaged, generator=trainer.generator)
            critic_w, penalties, generator_losses = [], [], []
            for first in range(0, n_damaged - batch + 1, batch):
                for _ in range(o.n_critic):
                    w, penalty = trainer.critic_step()
                    critic_w.append(w)
                    penalties.append(penalty)
                generator_losses.append(trainer.generator_step(order[first : first + batch]))
            w_epoch = trainer.distance()
            smoothed = (
                w_epoch if epoch == 0 else o.smoothing * smoothed + (1 - o.smoothing) * w_epoch
            )
            history["wasserstein_epoch"].append(w_epoch)
            history["wasserstein_smoothed"].append(smoothed)
            history["critic_loss_epoch"].append(
                float(
                    np.mean(
                        [
                            -w + o.gradient_penalty * p
                            for w, p in zip(critic_w, penalties, strict=True)
                        ]
                    )
                )
            )
            history["gradient_penalty_epoch"].append(float(np.mean(penalties)))
            history["generator_loss_epoch"].append(float(np.mean(generator_losses)))
            if monitor is not None:
                mae, r2 = monitor(trainer.coefficients())
                history["mae_epoch"].append(mae)
                history["r2_epoch"].append(r2)
            if smoothed < best - o.tolerance * abs(best) or epoch == 0:
                best, best_epoch, best_values, stale = (
                    smoothed,
                    epoch + 1,
                    trainer.coefficients(),
                    0,
                )
            else:
                stale += 1
                if o.patience and stale >= o.patience:
                    stopped = True
                    break
        history.update(
            {
                "epochs_run": len(history["wasserstein_epoch"]),
                "best_epoch": best_epoch,
                "wasserstein_best_smoothed": best,
                "stopped_early": stopped,
                "generator_steps_per_epoch": n_damaged // batch,
            }
        )
        return best_values, history


__all__ = ["WganAging", "WganAgingOptions"]
