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

import torch
from torch import Tensor

from ..processes.base import Process
from ._common import (
    Callback,
    Denoiser,
    Grid,
    Hook,
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
    equally spaced nodes these are the classical Adams-Bashforth coefficients. Computed as the integrals over
    [0, 1] of the Lagrange basis polynomials in u = (v - nodes[0]) / (target - nodes[0]), in Python floats
    (a handful of nodes: cheaper than any library call, once per step).
    """
    span = target - nodes[0]
    u = [(v - nodes[0]) / span for v in nodes]
    w = []
    for j, uj in enumerate(u):
        r = [um for m, um in enumerate(u) if m != j]  # roots of L_j
        den = 1.0
        for um in r:
            den *= uj - um
        # int_0^1 prod_m (u - r_m) du = sum_q (-1)^(n-q) e_{n-q}(r) / (q + 1), e the elementary symmetric polynomials
        if len(r) == 3:  # the usual case, AB4, written out
            a, b, c = r
            w.append((0.25 - (a + b + c) / 3 + (a * b + a * c + b * c) / 2 - a * b * c) / den)
            continue
        e = [1.0]
        for um in r:
            e = [1.0] + [e[q] + um * e[q - 1] for q in range(1, len(e))] + [um * e[-1]]
        n = len(r)
        w.append(sum((-1) ** (n - q) * e[n - q] / (q + 1) for q in range(n + 1)) / den)
    return w


def _midpoints(process: Process, grid: Grid, steps: list[int], variable_step: bool) -> list[tuple[float, float, float]]:
    """(t, alpha, sigma) of the pseudo-RK midpoints of ``steps`` (in sigma~, or in t as the paper), in one call."""
    if not steps:
        return []
    if variable_step:
        rho = torch.tensor([0.5 * (grid.sigma_tilde[i] + grid.sigma_tilde[i + 1]) for i in steps], dtype=torch.float64)
        t = process.t_of_log_snr(-torch.log(rho))
    else:
        t = torch.tensor([0.5 * (grid.t[i] + grid.t[i + 1]) for i in steps], dtype=torch.float64)
    return list(zip(t.tolist(), process._alpha(t).tolist(), process._sigma(t).tolist()))


def _pseudo(denoiser, process, x, ts, callback, hook, variable_step, start):
    """The pseudo numerical loop, as linear combinations (one pass per term).

    DDIM's transfer phi(x_s, eps', s -> t) is computed as (alpha_t / alpha_s) x_s + alpha_t (sigma~_t - sigma~_s) eps',
    the same value (y_t = y_s + (sigma~_t - sigma~_s) eps' in y = x / alpha). A noise prediction is stored
    unscaled, v = x - alpha D(x) = sigma eps_hat (one pass), and its 1 / sigma goes into the step's weights.
    """
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
    st = grid.sigma_tilde
    weights = {
        i: adams_bashforth_weights([st[i - j] for j in range(k)], st[i + 1]) if variable_step else _AB[k]
        for i, k in enumerate(kinds) if isinstance(k, int)
    }
    rk = [i for i, kd in enumerate(kinds) if kd == "rk"]
    mids = dict(zip(rk, _midpoints(process, grid, rk, variable_step)))
    v_hist: list[tuple[Tensor, float]] = []  # (sigma eps_hat, sigma) at earlier grid nodes, newest first
    for i in range(grid.steps):
        if grid.to_zero(i):
            return denoise_to_zero(denoiser, grid, x, hook, callback)
        x0_s = grid.denoise(denoiser, x, i)
        if kinds[i] == "ddim":  # DDIM from pure noise; its eps is no history for a step in sigma~
            x = end_step(grid, i, grid.ddim(x, x0_s, i), x0_s, hook, callback)
            continue
        a_s, s_s, rho_s = grid.alpha[i], grid.sigma[i], st[i]
        a_t, s_t = grid.alpha[i + 1], grid.sigma[i + 1]
        v_s = torch.add(x, x0_s, alpha=-a_s)  # sigma_s eps_hat_s
        v_hist = [(v_s, s_s), *v_hist][:4]
        g_t = a_t * (st[i + 1] - rho_s)  # phi(x, eps', s -> t) = (a_t / a_s) x + g_t eps'
        if kinds[i] == "rk":
            # pseudo Runge-Kutta (eq. 13): midpoint m, four evaluations
            t_m, a_m, s_m = mids[i]
            tb_m = grid.tb[i].new_full(grid.tb[i].shape, t_m)
            g_m = a_m * (s_m / a_m - rho_s)
            u = lincomb((a_m / a_s, x), (g_m / s_s, v_s))
            v2 = torch.add(u, denoiser(u, tb_m), alpha=-a_m)
            u = lincomb((a_m / a_s, x), (g_m / s_m, v2))
            v3 = torch.add(u, denoiser(u, tb_m), alpha=-a_m)
            u = lincomb((a_t / a_s, x), (g_t / s_m, v3))
            v4 = torch.add(u, denoiser(u, grid.tb[i + 1]), alpha=-a_t)
            terms = [(g_t / (6 * s_s), v_s), (g_t / (3 * s_m), v2), (g_t / (3 * s_m), v3), (g_t / (6 * s_t), v4)]
        elif kinds[i] == "heun":
            # pseudo improved Euler: average the noise predictions at both ends of the DDIM step
            u = lincomb((a_t / a_s, x), (g_t / s_s, v_s))
            v1 = torch.add(u, denoiser(u, grid.tb[i + 1]), alpha=-a_t)
            terms = [(0.5 * g_t / s_s, v_s), (0.5 * g_t / s_t, v1)]
        else:  # pseudo linear multistep: eps' = sum_j w_j eps_j
            terms = [(g_t * wj / sj, vj) for wj, (vj, sj) in zip(weights[i], v_hist)]
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
