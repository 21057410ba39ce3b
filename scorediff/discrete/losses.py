"""Objectives of discrete diffusion: upper bounds on -log p(x0) in nats, and the training losses built on them.

* **Denoising score entropy** (SEDD, Lou, Meng & Ermon 2024, Thm. 3.6): with R(x -> y | x0) the true reverse rates
  given x0 and R_theta(x -> y) the model's (``models.reverse_rates``; R_theta = sigma Q[y, x] s_theta(x)_y),

      -log p(x0) <= int_0^1 E_{x_t ~ p_t(.|x0)} sum_i sum_{y != x_t^i} [R_theta - R + R log(R / R_theta)] dt
                    + KL(p_1(. | x0) || pi),

  the path-space KL of the two reverse chains (Campbell et al. 2022). Written with rates, which stay finite where
  sigma(1) = infinity, it is SEDD's sigma Q (s - r log s + K(r)) with r = p_t(y | x0) / p_t(x | x0).
* **Masked-diffusion ELBO** (MDLM, Sahoo et al. 2024, eq. (10); the continuous-time D3PM bound): for the absorbing
  process, int_0^1 alpha'(t) / (1 - alpha(t)) E sum_{i masked} log p_theta(x0^i | x_t) dt + 0 (alpha(1) = 0). It is
  the score entropy of a normalised mean-parameterised model, evaluated without the rates.

Both are tight (equal to -log p(x0) in expectation over t and x_t) when the model is the exact posterior and the
prior matches; never below it otherwise. ``elbo`` estimates them by Monte Carlo with stratified t; bits per token =
elbo / (L log 2), perplexity = exp(elbo / L).

Block diffusion (``process.block``, BD3-LM): -log p(x0) = sum_b -log p(x0^b | x0^{<b}) and each term has its own
bound; with one t for all blocks the integrands add up, each block's rows of the model output taken given the
clean blocks before it (``models.blockwise_log_p0``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..utils import unknown
from .models import blockwise_log_p0, rates_from_ratios, reverse_rates
from .processes import DiscreteProcess


def score_entropy(model: Callable, process: DiscreteProcess, x0: Tensor, t: Tensor, x_t: Tensor, **cond) -> Tensor:
    """The integrand of the score-entropy bound at (t, x_t) (B,) in nats: sum over positions and y != x_t^i."""
    if getattr(model, "parameterization", "mean") == "ratio":  # SEDD's network: its rates come from its ratios
        log_s = model.log_ratios(x_t, t, **cond)
        t = t.to(log_s.dtype)
        R_hat = rates_from_ratios(log_s, x_t, t, process)
    else:
        log_p0 = blockwise_log_p0(model, process, x_t, x0, t, **cond)
        t = t.to(log_p0.dtype)
        R_hat = reverse_rates(log_p0, x_t, t, process)
    exact = torch.nn.functional.one_hot(x0, process.vocab).to(R_hat.dtype).log()  # p(x0 | x_t, x0) = delta
    R = reverse_rates(exact, x_t, t, process)
    tiny = torch.finfo(R.dtype).tiny
    kl = torch.where(R > 0, R * (torch.log(R.clamp_min(tiny)) - torch.log(R_hat.clamp_min(tiny))), torch.zeros_like(R))
    return (R_hat - R + kl).sum(dim=(1, 2))


def masked_elbo(model: Callable, process: DiscreteProcess, x0: Tensor, t: Tensor, x_t: Tensor, **cond) -> Tensor:
    """The integrand of MDLM's bound at (t, x_t) (B,): -alpha'/(1 - alpha) sum_{masked i} -log p(x0^i | x_t)."""
    if process.mask_index is None:
        raise ValueError(f"the masked-diffusion ELBO (mdlm) needs the absorbing process, got {process.name!r}")
    log_p0 = blockwise_log_p0(model, process, x_t, x0, t, **cond)
    t = t.to(log_p0.dtype)
    weight = -process.dalpha(t) / (1 - process.alpha(t))
    nll = -log_p0.gather(-1, x0[..., None])[..., 0]
    masked = x_t == process.mask_index
    return weight * torch.where(masked, nll, torch.zeros_like(nll)).sum(-1)


OBJECTIVES: dict[str, Callable[..., Tensor]] = {"score_entropy": score_entropy, "mdlm": masked_elbo}


def stratified_times(n: int, generator: torch.Generator | None, device=None) -> Tensor:
    """n times in (0, 1], one uniform draw in each of n equal strata (MDLM's low-discrepancy sampler)."""
    u = torch.rand((), generator=generator, device=device, dtype=torch.float64)
    return 1 - (torch.arange(n, device=device, dtype=torch.float64) + u) / n


def elbo(model: Callable, process: DiscreteProcess, x0: Tensor, *, objective: str = "score_entropy",
         samples: int = 64, seed: int = 0, generator: torch.Generator | None = None, batch: int | None = None,
         **cond) -> Tensor:
    """A Monte Carlo upper bound on -log p(x0) (B,) in nats: ``samples`` stratified times per sequence.

    ``objective``: "score_entropy" (any process) or "mdlm" (absorbing). Its standard error is the std over the
    ``samples`` draws / sqrt(samples) (``elbo_terms`` returns them). Bits per token: elbo / (L log 2).
    """
    return elbo_terms(model, process, x0, objective=objective, samples=samples, seed=seed, generator=generator,
                      batch=batch, **cond).mean(0)


@torch.no_grad()
def elbo_terms(model: Callable, process: DiscreteProcess, x0: Tensor, *, objective: str = "score_entropy",
               samples: int = 64, seed: int = 0, generator: torch.Generator | None = None, batch: int | None = None,
               **cond) -> Tensor:
    """The ``samples`` single-draw estimates of the bound (samples, B), each integrand + prior KL."""
    if objective not in OBJECTIVES:
        raise unknown("discrete objective", objective, OBJECTIVES)
    process.check_tokens(x0, "x0")
    if x0.ndim != 2 or x0.shape[1] < 1:
        raise ValueError(f"x0 must be (batch, length) with length >= 1, got shape {tuple(x0.shape)}")
    fn = OBJECTIVES[objective]
    g = generator or torch.Generator(x0.device).manual_seed(seed)
    B = x0.shape[0]
    ts = stratified_times(samples, g, x0.device)
    ts = ts[torch.randperm(samples, generator=g, device=x0.device)]
    prior = process.prior_kl(x0)
    out = []
    for t in ts:
        tb = t.expand(B)
        x_t = process.sample_marginal(x0, tb, g)
        out.append(fn(model, process, x0, tb, x_t, **cond).double() + prior)
    return torch.stack(out)


def bits_per_token(nats: Tensor | float, length: int) -> float:
    """nats per sequence -> bits per token."""
    return float(nats) / (length * math.log(2))


class DiscreteLoss:
    """The training loss of a discrete run: ``loss(model, x0, generator=g, **cond) -> (B,)`` nats per token.

    One stratified time per example (t_b = 1 - (b + u) / B), x_t ~ p_t(. | x0), the objective's integrand; its
    mean over t is the bound per token (minus the constant prior term), so the logged loss reads as nats/token.

    ``weighting`` (mdlm only): "elbo" (default: the bound's weight -alpha'/(1 - alpha), 1/t on loglinear) or "flat"
    (every masked token's cross-entropy weighted alike, as in MaskGIT's loss): the same minimiser (the exact
    posterior) without the bound's large weights at small t, so lower-variance gradients. Each sequence's sum over
    its masked tokens is divided by the expected number of masked tokens per sequence, L E_t[1 - alpha(t)] (a
    constant of the schedule and ``t_range``), not by the batch's own count, so that every example's loss is its
    own and data-parallel training equals one process; the logged loss then reads as nats per masked token, not
    the bound (``scorediff likelihood`` still reports the bound).

    ``t_range`` (lo, hi), default (0, 1): training times drawn stratified in (lo, hi] only (BD3-LM's clipped
    schedule, Arriola et al. 2025: mask rates that are neither almost none nor almost all, lower-variance
    gradients); the minimiser stays the exact posterior at the mask rates trained on. Not the bound unless (0, 1).
    """

    WEIGHTINGS = ("elbo", "flat")

    def __init__(self, name: str, process: DiscreteProcess, weighting: str = "elbo",
                 t_range: tuple[float, float] | list[float] = (0.0, 1.0)):
        if name not in OBJECTIVES:
            raise unknown("discrete loss", name, OBJECTIVES)
        if name == "mdlm" and process.mask_index is None:
            raise ValueError(f"loss 'mdlm' needs the absorbing process, got {process.name!r}")
        if weighting not in self.WEIGHTINGS:
            raise unknown("discrete loss weighting", weighting, self.WEIGHTINGS)
        if weighting != "elbo" and name != "mdlm":
            raise ValueError(f"weighting {weighting!r} is for loss 'mdlm', not {name!r}")
        ok = (isinstance(t_range, (list, tuple)) and len(t_range) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in t_range))
        if not ok or not 0 <= t_range[0] < t_range[1] <= 1:
            raise ValueError(f"t_range must be [lo, hi] with 0 <= lo < hi <= 1, got {t_range!r}")
        self.name, self.process, self.fn, self.weighting = name, process, OBJECTIVES[name], weighting
        self.t_range = (float(t_range[0]), float(t_range[1]))
        self.masked_fraction = self._masked_fraction()

    def _masked_fraction(self) -> float:
        """E_t[1 - alpha(t)] for t uniform in ``t_range`` (midpoint rule on 4096 cells, float64)."""
        lo, hi = self.t_range
        t = lo + (hi - lo) * (torch.arange(4096, dtype=torch.float64) + 0.5) / 4096
        return float((1 - self.process.alpha(t)).mean())

    def __call__(self, model: Callable, x0: Tensor, generator: torch.Generator | None = None, **cond) -> Tensor:
        B, L = x0.shape
        t = stratified_times(B, generator, x0.device).float()
        t = t[torch.randperm(B, generator=generator, device=x0.device)]
        if self.t_range != (0.0, 1.0):
            t = self.t_range[0] + (self.t_range[1] - self.t_range[0]) * t
        x_t = self.process.sample_marginal(x0, t, generator)
        if self.weighting == "flat":
            log_p0 = blockwise_log_p0(model, self.process, x_t, x0, t, **cond)
            nll = -log_p0.gather(-1, x0[..., None])[..., 0]
            masked = x_t == self.process.mask_index
            per = torch.where(masked, nll, torch.zeros_like(nll)).sum(-1)
            return per / (L * self.masked_fraction)
        return self.fn(model, self.process, x0, t, x_t, **cond) / L
