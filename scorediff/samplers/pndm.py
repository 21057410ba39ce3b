"""PNDM and PLMS (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds", ICLR).

A pseudo numerical method splits a step into a *gradient part*, a combination eps' of noise predictions, and
a *transfer part*, DDIM's step phi(x_s, eps', s -> t) (paper, eq. 9). With sigma~ = sigma / alpha (rho in the
code) and y = x / alpha, DDIM's transfer is exactly y_t = y_s + (sigma~_t - sigma~_s) eps', i.e. the Euler step
of the probability-flow ODE dy / d sigma~ = eps_hat. Written for any process (and finite at t = 0):

    phi(x_s, eps', s -> t) = alpha_t x0_hat_s + sigma_t eps_hat_s + alpha_t (sigma~_t - sigma~_s) (eps' - eps_hat_s),

where x0_hat_s, eps_hat_s are the model's own outputs at x_s (PNDM always has them).

Gradient parts:
- pseudo Runge-Kutta (F-PNDM's warm-up, eq. 13): e1 = eps(x_s, s); e2 = eps(phi(x_s, e1, s -> m), m);
  e3 = eps(phi(x_s, e2, s -> m), m); e4 = eps(phi(x_s, e3, s -> t), t); eps' = (e1 + 2 e2 + 2 e3 + e4) / 6,
  m the midpoint: 4 model evaluations.
- pseudo linear multistep (eq. 12): eps' = (55 e_0 - 59 e_1 + 37 e_2 - 9 e_3) / 24 over the noise predictions
  at the current and three previous nodes: 1 evaluation.
``pndm`` runs three pseudo-RK steps and then the linear multistep (F-PNDM); ``plms`` (the PLMS of latent
diffusion and diffusers' ``skip_prk_steps``) starts with one pseudo improved-Euler step (eps' = (e_s + e_t) / 2,
2 evaluations), then Adams-Bashforth of order 2, 3 and 4.

Step sizes. The paper's constant coefficients and its midpoint m = (s + t) / 2 assume steps of equal length in
the variable being integrated, sigma~; on the usual grids (uniform in DDPM's t) they are not, which leaves a local
error O(h^3) (second-order convergence). By default (``variable_step=True``) the multistep weights are the exact
Adams-Bashforth weights for the actual sigma~ nodes and the RK midpoint is the sigma~ midpoint; on a grid uniform
in sigma~ they are the paper's. ``variable_step=False`` is the paper's (and diffusers' PNDMScheduler) method.

A first node at infinite noise (alpha = 0, sigma~ = inf) is a DDIM step (1 NFE) whose noise prediction is not
used as history; a last step onto sigma = 0 returns x0_hat (``_common``, denoise to zero).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..processes.base import Process
from ._common import (
    Callback,
    Denoiser,
    Grid,
    Hook,
    call_model,
    denoise_to_zero,
    end_step,
    lincomb,
    sampler_info,
)

# Adams-Bashforth weights on equal steps, newest first (the paper's eq. 12 and its lower-order starts)
_AB = {1: [1.0], 2: [1.5, -0.5], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}


def adams_bashforth_weights(nodes: list[float], target: float) -> list[float]:
    """Weights w_j with sum_j w_j f(nodes[j]) = mean of p over [nodes[0], target], p the interpolant of f.

    ``nodes`` newest first (nodes[0] the current point). Exact for polynomials of degree < len(nodes); on
    equally spaced nodes these are the classical Adams-Bashforth coefficients.
    """
    span = target - nodes[0]
    u = torch.tensor([(v - nodes[0]) / span for v in nodes], dtype=torch.float64)
    k = len(nodes)
    vander = torch.stack([u**m for m in range(k)])  # row m: u_j^m
    moments = torch.tensor([1.0 / (m + 1) for m in range(k)], dtype=torch.float64)  # int_0^1 u^m du
    return torch.linalg.solve(vander, moments).tolist()


def _ab_weights_many(node_lists: list[list[float]], targets: list[float]) -> list[list[float]]:
    """``adams_bashforth_weights`` for many steps at once: one batched solve per number of nodes."""
    out: list[list[float]] = [[] for _ in node_lists]
    for k in sorted({len(n) for n in node_lists}):
        idx = [j for j, n in enumerate(node_lists) if len(n) == k]
        nodes = torch.tensor([node_lists[j] for j in idx], dtype=torch.float64)  # (m, k), newest first
        target = torch.tensor([targets[j] for j in idx], dtype=torch.float64)
        u = (nodes - nodes[:, :1]) / (target - nodes[:, 0]).unsqueeze(1)
        vander = u.unsqueeze(1) ** torch.arange(k, dtype=torch.float64).view(1, k, 1)  # [m, row p, col j] = u_j^p
        moments = 1.0 / torch.arange(1, k + 1, dtype=torch.float64)  # int_0^1 u^p du
        w = torch.linalg.solve(vander, moments.expand(len(idx), k)).tolist()
        for j, wj in zip(idx, w):
            out[j] = wj
    return out


def _eps_at(denoiser: Denoiser, x: Tensor, t: Tensor | float, alpha: float, sigma: float) -> Tensor:
    """eps_hat = (x - alpha D(x, t)) / sigma, two passes."""
    return lincomb((1.0 / sigma, x), (-alpha / sigma, call_model(denoiser, x, t)))


def _midpoint(process: Process, grid: Grid, i: int, variable_step: bool) -> tuple[float, float, float]:
    """(t, alpha, sigma) of the pseudo-RK midpoint between nodes i and i + 1 (in sigma~, or in t as the paper)."""
    if variable_step:
        rho = 0.5 * (grid.sigma_tilde[i] + grid.sigma_tilde[i + 1])
        t = process.t_of_log_snr(torch.tensor(-math.log(rho), dtype=torch.float64))
    else:
        t = torch.tensor(0.5 * (grid.t[i] + grid.t[i + 1]), dtype=torch.float64)
    return float(t), float(process._alpha(t)), float(process._sigma(t))


def _pseudo(denoiser, process, x, ts, callback, hook, variable_step, start):
    """The pseudo numerical loop. DDIM's transfer phi(x_s, eps', s -> t) is computed as
    (alpha_t / alpha_s) x_s + alpha_t (sigma~_t - sigma~_s) eps' (the same value: y_t = y_s + (sigma~_t - sigma~_s) eps'
    in y = x / alpha), so a step is one linear combination of x_s and the stored noise predictions."""
    grid = Grid(process, ts, like=x)
    # the plan of the run, fixed by the grid: per step its kind and its history length (finite sigma~ nodes only)
    kinds, n_hist = [], 0
    for i in range(grid.steps):
        if grid.to_zero(i) or grid.infinite(i):
            kinds.append("ddim")
            continue
        n_hist = min(n_hist + 1, 4)
        if start == "rk" and n_hist < 4:
            kinds.append("rk")
        elif start == "heun" and n_hist == 1:
            kinds.append("heun")
        else:
            kinds.append(n_hist)
    ab = [i for i, kd in enumerate(kinds) if isinstance(kd, int)]
    if variable_step:
        st = grid.sigma_tilde
        w_ab = _ab_weights_many([[st[i - j] for j in range(kinds[i])] for i in ab], [st[i + 1] for i in ab])
    else:
        w_ab = [_AB[kinds[i]] for i in ab]
    weights = dict(zip(ab, w_ab))
    eps_hist: list[Tensor] = []  # noise predictions at earlier grid nodes, newest first (finite sigma~ only)
    for i in range(grid.steps):
        if grid.to_zero(i):
            return denoise_to_zero(denoiser, grid, x, hook, callback)
        x0_s = grid.denoise(denoiser, x, i)
        if kinds[i] == "ddim":  # DDIM from pure noise; its eps is no history for a step in sigma~
            x = end_step(grid, i, grid.ddim(x, x0_s, i), x0_s, hook, callback)
            continue
        eps_s = grid.eps(x, x0_s, i)
        eps_hist = [eps_s, *eps_hist][:4]
        a_s, rho_s = grid.alpha[i], grid.sigma_tilde[i]
        a_t, s_t = grid.alpha[i + 1], grid.sigma[i + 1]
        g_t = a_t * (grid.sigma_tilde[i + 1] - rho_s)  # phi(x, eps', s -> t) = (a_t / a_s) x + g_t eps'
        if kinds[i] == "rk":
            # pseudo Runge-Kutta (eq. 13): midpoint m, four evaluations
            t_m, a_m, s_m = _midpoint(process, grid, i, variable_step)
            g_m = a_m * (s_m / a_m - rho_s)
            e2 = _eps_at(denoiser, lincomb((a_m / a_s, x), (g_m, eps_s)), t_m, a_m, s_m)
            e3 = _eps_at(denoiser, lincomb((a_m / a_s, x), (g_m, e2)), t_m, a_m, s_m)
            e4 = _eps_at(denoiser, lincomb((a_t / a_s, x), (g_t, e3)), grid.tb[i + 1], a_t, s_t)
            terms = [(g_t / 6, eps_s), (g_t / 3, e2), (g_t / 3, e3), (g_t / 6, e4)]
        elif kinds[i] == "heun":
            # pseudo improved Euler: average the noise predictions at both ends of the DDIM step
            e1 = _eps_at(denoiser, lincomb((a_t / a_s, x), (g_t, eps_s)), grid.tb[i + 1], a_t, s_t)
            terms = [(0.5 * g_t, eps_s), (0.5 * g_t, e1)]
        else:  # pseudo linear multistep: eps' = sum_j w_j eps_j
            terms = [(g_t * wj, ej) for wj, ej in zip(weights[i], eps_hist)]
        x = end_step(grid, i, lincomb((a_t / a_s, x), *terms), x0_s, hook, callback)
    return x


@sampler_info(
    order=4,
    stochastic=False,
    nfe_per_step=1,
    default_schedule="uniform",
    description="PNDM / F-PNDM (Liu et al. 2022): 3 pseudo Runge-Kutta steps, then pseudo linear multistep (order 4)",
    nfe_extra=9,
)
def sample_pndm(
    denoiser: Denoiser,
    process: Process,
    x: Tensor,
    ts: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    hook: Hook | None = None,
    variable_step: bool = True,
) -> Tensor:
    """F-PNDM (Liu et al. 2022, Algorithm 2): three pseudo-RK4 steps (4 NFE each), then pseudo-AB4 (1 NFE per step).

    NFE = steps + 9 (+ corrections at an infinite-noise first node or a denoise-to-zero last step). Option
    ``variable_step`` (default True): Adams weights and RK midpoints for the actual sigma~ spacing, so the
    method is fourth order on any grid; False is the paper's constant coefficients and midpoint in t
    (what diffusers' PNDMScheduler computes; see the module docstring).
    """
    return _pseudo(denoiser, process, x, ts, callback, hook, variable_step, "rk")


@sampler_info(
    order=3,
    stochastic=False,
    nfe_per_step=1,
    default_schedule="uniform",
    description="PLMS (Liu et al. 2022; latent diffusion): pseudo improved-Euler start, then pseudo AB2, AB3, AB4",
    nfe_extra=1,
)
def sample_plms(
    denoiser: Denoiser,
    process: Process,
    x: Tensor,
    ts: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    hook: Hook | None = None,
    variable_step: bool = True,
) -> Tensor:
    """PLMS: pseudo linear multistep with a lower-order start (latent diffusion; diffusers' skip_prk_steps).

    Step 1 is a pseudo improved-Euler step (2 NFE), steps 2 and 3 pseudo-AB2 and AB3, then pseudo-AB4 (1 NFE):
    NFE = steps + 1. Declared order 3, not 4: the second-order first steps leave one local error O(h^3),
    which dominates the AB4 part's O(h^4) as the steps shrink. ``variable_step`` as for ``pndm``.
    """
    return _pseudo(denoiser, process, x, ts, callback, hook, variable_step, "heun")
