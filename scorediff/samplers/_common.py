"""Shared machinery of every sampler: declared properties, the precomputed time grid, model calls,
noise, and the end-of-step protocol (hook, then callback). Nothing here is copied into a sampler.

Conventions every sampler follows
---------------------------------
* Signature: ``sample_<name>(denoiser, process, x, ts, *, generator=None, callback=None, hook=None,
  **options) -> x0``; ``x`` is the state at ``ts[0]``, ``ts`` a strictly decreasing float grid
  (``scorediff.schedules.make``). Options are explicit keyword-only parameters of the function, so
  ``scorediff.sample`` can reject an unknown one with a clear ValueError.
* Step i goes from ``ts[i]`` to ``ts[i + 1]``, i = 0 .. len(ts) - 2.
* Conditioning: a sampler never sees it. ``scorediff.sample(..., cond={"y": labels})`` binds it once
  with :func:`bind_cond`, which returns a Denoiser ``D(x, t) = denoiser(x, t, **cond)``; call
  ``bind_cond`` yourself when you call a sampler function directly. (Guidance wraps the denoiser the
  same way, so samplers stay free of ``extra_args`` boilerplate.)
* Randomness: noise is drawn only by :func:`noise_like` from the ``generator`` passed in (torch's
  global generator when it is None). ``scorediff.sample`` always passes a seeded generator.
* After every step a sampler calls :func:`end_step`, which applies ``hook(x, t, x0_hat) -> x`` (step
  hooks: inpainting, projections) with t = ts[i + 1], then ``callback({"i", "t", "x", "x0_hat"})``;
  x0_hat is the sampler's latest denoised estimate (None for the adaptive ``ode`` sampler, which
  evaluates none at the nodes).

Denoise to zero
---------------
If the grid's last node has sigma = 0 (t = 0 for VP, sub-VP, EDM and flow; VE has no such time,
sigma(0) = sigma_min), the last step returns the denoised estimate x0_hat = D(x, ts[-2]) itself: one
model evaluation, no noise. This is what DDPM's last step (Ho et al. 2020, Algorithm 2, z = 0 at
t = 1), DDIM onto alpha_bar = 1, EDM's Euler step onto sigma = 0 and diffusers' final sigma = 0 all
compute, and it keeps solvers that work in lambda (= +inf there) finite. :meth:`Grid.to_zero`
says whether step i is that step; :func:`denoise_to_zero` takes it.

Infinite noise
--------------
For flow and cosine VP, alpha(t_max) is 0 (or ~1e-17), so sigma~ = sigma / alpha and lambda are
infinite there. A node with sigma~ > ``SIGMA_TILDE_INF`` is treated as infinite noise: samplers that
work in sigma~ (Euler, Heun) or with the SDE drift f = alpha'/alpha (Euler-Maruyama) take their first
step from it as the DDIM / ancestral step, which is finite in alpha/sigma form (``Grid.infinite``).

Per-step cost
-------------
With a cheap network the sampler's own arithmetic is the cost, and on large batches that is the number of
passes over full-size tensors. So every per-node and per-step coefficient is a float64 Python float computed
before or outside the tensor work (``Grid``'s lists; intermediate nodes and multistep weights precomputed for
the whole grid where the grid fixes them), there is no host synchronisation (``.item()``) in a loop, and each
update is written as one linear combination of the tensors it needs (:func:`lincomb`: one pass per term, e.g.
DDIM from x and x0_hat is two passes, ``Grid.ddim``), with noise scaled as it is drawn (:func:`noise_like`).
Buffers: none is reused across steps. Each step's result is a new tensor that the sampler builds in place
(``add_`` on the tensor it has just allocated) before anyone else sees it; a sampler never writes into the
caller's start tensor, a tensor handed to the denoiser, hook or callback, or the denoiser's output, so a
callback may keep every ``x`` and ``x0_hat`` it is given. The result stays differentiable (no in-place op
touches a tensor autograd needs).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..processes.base import Process, posterior_coefficients

Denoiser = Callable[..., Tensor]
Callback = Callable[[dict[str, Any]], None]
Hook = Callable[[Tensor, Tensor, Tensor], Tensor]

# sigma~ = sigma / alpha above which a node counts as infinite noise (alpha numerically 0)
SIGMA_TILDE_INF = 1e8


@dataclass(frozen=True)
class SamplerInfo:
    """What a sampler declares about itself (read by the registry table, the tests and the benchmark).

    order: the error falls as O(h^order) with the step size h: for a deterministic sampler the global error
        against the exact probability-flow ODE solution, for a stochastic one the weak error, the error of
        the samples' moments (E f(x) for smooth f) against the law the sampler targets (both fitted
        registry-wide in tests/test_samplers.py).
    stochastic: whether it draws noise.
    nfe_per_step: model evaluations per step with default options, away from the special first
        (infinite noise) and last (denoise to zero) steps; NaN for adaptive solvers.
    default_schedule: the ``scorediff.schedules`` name ``scorediff.sample`` uses by default.
    description: one line: the paper and algorithm.
    nfe_extra: evaluations beyond ``nfe_per_step * steps`` on such a grid (e.g. a multistep method's
        warm-up), so that a run of N >= 4 steps costs exactly ``nfe_per_step * N + nfe_extra``.
    processes: the process names it can run on (None: every data-space process, i.e. all but the phase-space
        ``cld``, whose samplers declare it); on any other it raises a ValueError naming the process.
    denoiser: what the sampler needs: "any" Denoiser (E[x0 | x_t]), or "consistency", a consistency
        function f(x, t) (the probability-flow map to t_min; ``scorediff.few_step``).
    """

    order: int
    stochastic: bool
    nfe_per_step: float
    default_schedule: str
    description: str
    nfe_extra: int = 0
    processes: tuple[str, ...] | None = None
    denoiser: str = "any"

    def runs_on(self, process: Process) -> bool:
        """Whether the sampler runs on ``process`` (see ``processes``)."""
        if self.processes is None:
            return not getattr(process, "phase_space", False)
        return process.name in self.processes


def sampler_info(
    *, order: int, stochastic: bool, nfe_per_step: float, default_schedule: str, description: str, nfe_extra: int = 0,
    processes: tuple[str, ...] | None = None, denoiser: str = "any",
) -> Callable[[Callable], Callable]:
    """Decorator setting ``fn.info = SamplerInfo(...)`` on a sampler function (no registration)."""

    def deco(fn: Callable) -> Callable:
        fn.info = SamplerInfo(order, stochastic, float(nfe_per_step), default_schedule, description, int(nfe_extra),
                              processes, denoiser)
        return fn

    return deco


class Grid:
    """A time grid with every per-node coefficient computed once, in float64, as Python floats.

    ``Grid(process, ts, like=x)`` checks ts once (1-D, >= 2 nodes, strictly decreasing, inside
    [0, t_max]) and then uses the process's unchecked ``_alpha`` etc. Attributes (lists over nodes):
    ``t``, ``alpha``, ``sigma``, ``lam`` (lambda = log(alpha / sigma), -inf / +inf at the ends),
    ``d_alpha``, ``d_sigma``, ``sigma_tilde`` (sigma / alpha, inf where alpha = 0). ``tb[i]`` is t_i
    as a (B,) tensor in x's dtype and device, ready for the model call. ``steps`` = len(ts) - 1.
    """

    def __init__(self, process: Process, ts: Tensor | list[float], like: Tensor):
        ts = torch.as_tensor(ts, dtype=torch.float64).detach().cpu()
        if ts.ndim != 1 or ts.numel() < 2:
            raise ValueError(f"ts must be a 1-D grid of at least 2 times, got shape {tuple(ts.shape)}")
        if not bool((ts[1:] < ts[:-1]).all()):
            raise ValueError(f"ts must be strictly decreasing (from noise to data), got {ts.tolist()[:6]}...")
        process.check_t(ts)
        if getattr(process, "phase_space", False):
            raise ValueError(f"process '{process.name}' carries a velocity; this sampler works in data space (use a "
                             f"sampler declared for '{process.name}', e.g. sscs)")
        self.process = process
        self.steps = ts.numel() - 1
        self.ts = ts
        with torch.no_grad():
            a, s = process._alpha(ts), process._sigma(ts)
            lam = torch.log(a) - torch.log(s)
        self.t: list[float] = ts.tolist()
        self.alpha: list[float] = a.tolist()
        self.sigma: list[float] = s.tolist()
        self.lam: list[float] = lam.tolist()
        self.sigma_tilde: list[float] = [si / ai if ai > 0 else math.inf for ai, si in zip(self.alpha, self.sigma)]
        # all (B,) model times in one tensor, one row per node (one allocation instead of one per node)
        dtype = like.dtype if like.is_floating_point() else torch.float32
        rows = ts.to(dtype).unsqueeze(1).expand(ts.numel(), like.shape[0]).contiguous().to(like.device)
        self.tb: list[Tensor] = list(rows.unbind(0))

    # derivatives: only the SDE samplers use them, so they are computed on first use (they may be infinite at a
    # boundary, e.g. d sigma at sigma = 0; no sampler uses them there)
    @functools.cached_property
    def d_alpha(self) -> list[float]:
        with torch.no_grad():
            return self.process._d_alpha(self.ts).tolist()

    @functools.cached_property
    def d_sigma(self) -> list[float]:
        with torch.no_grad():
            return self.process._d_sigma(self.ts).tolist()

    @functools.cached_property
    def posterior(self) -> list[tuple[float, float, float, float, float]]:
        """Per step i: (c0, ct, var, a_ts, s_ts^2) of q(x_{i+1} | x_i, x0) (``processes.base.posterior_coefficients``)."""
        a, s = self.alpha, self.sigma
        return [posterior_coefficients(a[i], s[i], a[i + 1], s[i + 1]) for i in range(self.steps)]

    @functools.cached_property
    def sde(self) -> tuple[list[float], list[float]]:
        """(f, g^2) of the forward SDE at every node, from ``Process.sde`` (may be infinite where alpha = 0)."""
        with torch.no_grad():
            f, g2 = self.process.sde(self.ts)
        return f.tolist(), g2.tolist()

    def to_zero(self, i: int) -> bool:
        """Whether step i lands on sigma = 0 (the denoise-to-zero step; see the module docstring)."""
        return i == self.steps - 1 and self.sigma[-1] == 0.0

    def infinite(self, i: int) -> bool:
        """Whether node i is at (numerically) infinite noise, alpha ~ 0 (flow, cosine VP at t_max)."""
        return self.sigma_tilde[i] > SIGMA_TILDE_INF

    def denoise(self, denoiser: Denoiser, x: Tensor, i: int) -> Tensor:
        """x0_hat = D(x, t_i) with the precomputed (B,) time."""
        return denoiser(x, self.tb[i])

    def eps(self, x: Tensor, x0_hat: Tensor, i: int) -> Tensor:
        """eps_hat = (x - alpha_i x0_hat) / sigma_i at node i (a fresh tensor; two passes over x's size)."""
        return lincomb((1.0 / self.sigma[i], x), (-self.alpha[i] / self.sigma[i], x0_hat))

    def ddim(self, x: Tensor, x0_hat: Tensor, i: int) -> Tensor:
        """The deterministic DDIM step from node i to i + 1, alpha_{i+1} x0_hat + sigma_{i+1} eps_hat, fused.

        With eps_hat = (x - alpha_i x0_hat) / sigma_i it is c x + (alpha_{i+1} - c alpha_i) x0_hat,
        c = sigma_{i+1} / sigma_i: two passes instead of five (finite where alpha_i = 0).
        """
        c = self.sigma[i + 1] / self.sigma[i]
        return lincomb((c, x), (self.alpha[i + 1] - c * self.alpha[i], x0_hat))


def call_model(denoiser: Denoiser, x: Tensor, t: Tensor | float) -> Tensor:
    """D(x, t) with a scalar t expanded to shape (B,) in x's dtype (for times off the grid)."""
    if not torch.is_tensor(t) or t.ndim == 0:
        t = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
    return denoiser(x, t)


def bind_cond(denoiser: Denoiser, cond: dict[str, Any] | None) -> Denoiser:
    """A Denoiser ``D(x, t) = denoiser(x, t, **cond)``; the denoiser itself when cond is empty.

    The wrapper exposes the wrapped denoiser's ``nfe`` counter (if any) as ``nfe``.
    """
    if not cond:
        return denoiser
    return _Bound(denoiser, dict(cond))


class _Bound:
    def __init__(self, denoiser: Denoiser, cond: dict[str, Any]):
        self.denoiser, self.cond = denoiser, cond

    def __call__(self, x: Tensor, t: Tensor, **more) -> Tensor:
        return self.denoiser(x, t, **self.cond, **more)

    @property
    def nfe(self) -> int:
        return getattr(self.denoiser, "nfe", 0)


def noise_like(x: Tensor, generator: torch.Generator | None, std: float = 1.0) -> Tensor:
    """Normal noise N(0, std^2) shaped like x, drawn only from ``generator`` (a fresh tensor).

    ``std`` scales the draw as it is made (torch's ``normal_``: the same standard normal draws as
    ``torch.randn``, times std), which saves a pass over the tensor.
    """
    if std == 1.0:
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device).normal_(0.0, std, generator=generator)


def lincomb(*terms: tuple[float, Tensor], out: Tensor | None = None) -> Tensor:
    """sum_k c_k T_k for ``terms`` = (c_k, T_k), as one pass per term; a fresh tensor unless ``out`` is given.

    The per-step arithmetic of every sampler is a linear combination of a few full-size tensors with
    float coefficients computed in float64 beforehand; writing it as ``torch.mul(T_0, c_0)`` followed by
    in-place ``add_(T_k, alpha=c_k)`` on that (new, sampler-owned) tensor costs k passes and one allocation,
    where the textbook expression costs about two passes and a temporary per operator. Never pass an
    ``out`` that a caller, the callback, the hook or the denoiser may hold, nor one that aliases a term.
    """
    c0, t0 = terms[0]
    acc = torch.mul(t0, c0) if out is None else torch.mul(t0, c0, out=out)
    for c, t in terms[1:]:
        acc.add_(t, alpha=c)
    return acc


def end_step(
    grid: Grid, i: int, x: Tensor, x0_hat: Tensor, hook: Hook | None, callback: Callback | None
) -> Tensor:
    """Finish step i (x now at ts[i + 1]): apply the hook, then report to the callback; return x."""
    if hook is not None:
        x = hook(x, grid.tb[i + 1], x0_hat)
    if callback is not None:
        callback({"i": i, "t": grid.t[i + 1], "x": x, "x0_hat": x0_hat})
    return x


def ode_to_zero(denoiser: Denoiser, process: Process, x: Tensor, t: float) -> tuple[Tensor, Tensor]:
    """The probability-flow ODE's last stretch, from a small noise level t onto sigma = 0, to leading order:
    x(0) = (x / alpha_t + x0_hat) / 2 with x0_hat = D(x, t) (the ``midpoint`` ending); returns (x(0), x0_hat).

    Why: in x~ = x / alpha and s = sigma / alpha the ODE is dx~/ds = -s grad log p_s(x~); with the score frozen
    at its value at s (the stretch is short) x~(0) = x~ + s^2 / 2 grad log p_s, and Tweedie's formula
    x0_hat = x~ + s^2 grad log p_s turns this into (x~ + x0_hat) / 2, one model call. For data N(mu, v) the exact
    map scales x~ - mu by sqrt(v / (v + s^2)) = 1 - s^2 / (2v) + O(s^4); this ending by 1 - s^2 / (2 (v + s^2)),
    equal to first order in s^2 / v, where the two usual endings are off by +-s^2 / (2v): keeping x~ (ending at
    t_min) leaves noise of size s in every fine detail, returning x0_hat (denoise-to-zero) removes the fine
    variance along with it. Only for the deterministic (probability-flow) samplers.
    """
    tb = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
    x0_hat = denoiser(x, tb)
    alpha = float(process._alpha(torch.tensor(float(t), dtype=torch.float64)))
    return lincomb((0.5 / alpha, x), (0.5, x0_hat)), x0_hat


def ancestral_step(grid: Grid, i: int, x: Tensor, x0_hat: Tensor, generator: torch.Generator | None,
                   noise: bool = True, variance: float | None = None) -> Tensor:
    """x_s ~ q(x_s | x_t, x0_hat) from node i to i + 1: the DDPM posterior (Ho et al. 2020, eqs. 6-7), mean
    c0 x0_hat + ct x_t and variance beta_tilde (``variance`` overrides it, e.g. DDPM's forward beta); its mean alone
    without ``noise``. The ancestral step of ``ddpm``, ``euler_maruyama``'s infinite-noise first step and ``pc``."""
    c0, ct, var = grid.posterior[i][:3]
    var = var if variance is None else variance
    if not noise:
        return lincomb((c0, x0_hat), (ct, x))
    return noise_like(x, generator, math.sqrt(var)).add_(x0_hat, alpha=c0).add_(x, alpha=ct)


def langevin_step(x: Tensor, score: Tensor, step: float, generator: torch.Generator | None) -> Tensor:
    """One unadjusted Langevin step x + step/2 score + sqrt(step) z, z ~ N(0, I) (Song & Ermon 2019, eq. 1; Roberts
    & Tweedie 1996): ``annealed_langevin``'s inner step and ``score_matching.langevin_dynamics``."""
    return x + 0.5 * step * score + math.sqrt(step) * noise_like(x, generator)


def denoise_to_zero(
    denoiser: Denoiser, grid: Grid, x: Tensor, hook: Hook | None, callback: Callback | None
) -> Tensor:
    """The last step onto sigma = 0: return x0_hat = D(x, ts[-2]) (after hook and callback)."""
    i = grid.steps - 1
    x0_hat = grid.denoise(denoiser, x, i)
    return end_step(grid, i, x0_hat, x0_hat, hook, callback)
