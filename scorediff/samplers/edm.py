"""Euler and Heun samplers of EDM (Karras et al. 2022, Algorithm 2), for every process.

They integrate the probability-flow ODE in x~ = x / alpha and sigma~ = sigma / alpha, where it reads
dx~ / dsigma~ = (x~ - D(x, t)) / sigma~ (Karras et al. eq. 4 with s = 1): the form in which EDM, and
diffusers' Euler/Heun schedulers on DDPM models, treat any process. Symbols: t_i = ts[i],
sigma~_i = sigma(t_i) / alpha(t_i); the state is kept in the process's x = alpha x~.

One step (Algorithm 2, lines 4-11):
    gamma = min(S_churn / N, sqrt(2) - 1) if S_tmin <= sigma~_i <= S_tmax else 0
    sigma~_hat = (1 + gamma) sigma~_i,  x~_hat = x~_i + sqrt(sigma~_hat^2 - sigma~_i^2) S_noise z   # churn
    d = (x~_hat - D(x_hat, t_hat)) / sigma~_hat;  x~_{i+1} = x~_hat + (sigma~_{i+1} - sigma~_hat) d  # Euler
    Heun: d' = (x~_{i+1} - D(x_{i+1}, t_{i+1})) / sigma~_{i+1};  x~_{i+1} = x~_hat + (sigma~_{i+1} - sigma~_hat)(d + d') / 2
t_hat is the process time with sigma~(t_hat) = sigma~_hat (through t_of_log_snr); the churn is capped at the
process's largest noise level, since a Denoiser is only defined up to t_max. N is the number of steps.

Special steps (``_common``): onto sigma = 0 both take the Euler step, which returns x0_hat (as EDM's
last step; churn is skipped there); from a node at infinite noise (alpha = 0 at t_max for flow and
cosine VP, sigma~ = inf) the Euler step is its limit x_{i+1} = alpha_{i+1} x0_hat + sigma_{i+1} eps_hat
with eps_hat = (x - alpha x0_hat) / sigma (the DDIM step; x~ itself would be infinite) and Heun's
correction, which would multiply an infinite sigma~ step, is skipped (one evaluation).
Without churn, Euler equals DDIM(eta = 0) step for step. diffusers' EulerDiscreteScheduler and
HeunDiscreteScheduler give the same samples on integer timesteps (tests/test_parity_core.py).
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
    denoise_to_zero,
    end_step,
    lincomb,
    noise_like,
    sampler_info,
)


def _churn_time(grid: Grid, i: int, gamma: float) -> tuple[Tensor, float, float]:
    """(t_hat as (B,), alpha(t_hat), sigma~_hat) for sigma~_hat = (1 + gamma) sigma~_i, capped at t_max."""
    p = grid.process
    st_hat = (1 + gamma) * grid.sigma_tilde[i]
    lam = torch.tensor(-math.log(st_hat), dtype=torch.float64)
    t_hat = p._t_of_log_snr(lam).clamp(0.0, p.t_max)
    a_hat, s_hat = float(p._alpha(t_hat)), float(p._sigma(t_hat))
    return grid.tb[i].new_full(grid.tb[i].shape, float(t_hat)), a_hat, s_hat / a_hat


def _edm(denoiser, process, x, ts, generator, callback, hook, heun, s_churn, s_tmin, s_tmax, s_noise):
    if s_churn < 0 or s_noise < 0:
        raise ValueError(f"s_churn and s_noise must be >= 0, got s_churn={s_churn}, s_noise={s_noise}")
    grid = Grid(process, ts, x)
    gamma_max = min(s_churn / grid.steps, math.sqrt(2) - 1)
    for i in range(grid.steps):
        if grid.to_zero(i):
            return denoise_to_zero(denoiser, grid, x, hook, callback)
        if grid.infinite(i):
            x0_hat = grid.denoise(denoiser, x, i)
            x = end_step(grid, i, grid.ddim(x, x0_hat, i), x0_hat, hook, callback)
            continue
        a_i, st_i = grid.alpha[i], grid.sigma_tilde[i]
        gamma = gamma_max if s_tmin <= st_i <= s_tmax else 0.0
        # x~ = b * base: without churn x~ = x / alpha_i is never formed (the steps below are linear in it)
        if gamma > 0:
            t_hat, a_hat, st_hat = _churn_time(grid, i, gamma)
            base = noise_like(x, generator, math.sqrt(max(st_hat**2 - st_i**2, 0.0)) * s_noise).add_(x, alpha=1 / a_i)
            b = 1.0
            x0_hat = denoiser(a_hat * base, t_hat)
        else:
            t_hat, a_hat, st_hat = grid.tb[i], a_i, st_i
            base, b = x, 1 / a_i
            x0_hat = denoiser(x, t_hat)
        st_next, a_next = grid.sigma_tilde[i + 1], grid.alpha[i + 1]
        # Euler: x~_{i+1} = x~ + (sigma~_{i+1} - sigma~_hat) (x~ - x0_hat) / sigma~_hat, times alpha_{i+1}
        q = st_next / st_hat
        x_next = lincomb((a_next * b * q, base), (a_next * (1 - q), x0_hat))
        if heun:
            # Heun: alpha_{i+1} (x~ + delta (d + d') / 2) with d' = (x_next / alpha_{i+1} - x0_next) / sigma~_{i+1},
            # delta = sigma~_{i+1} - sigma~_hat, rewritten in x_next, x~ and x0_next (three passes)
            x0_next = denoiser(x_next, grid.tb[i + 1])
            r = (st_next - st_hat) / st_next
            x_next = lincomb((0.5 + 0.5 * r, x_next), (0.5 * a_next * b, base), (-0.5 * a_next * r, x0_next))
            x0_hat = x0_next
        x = end_step(grid, i, x_next, x0_hat, hook, callback)
    return x


@sampler_info(order=1, stochastic=False, nfe_per_step=1, default_schedule="logsnr_cosine",
              description="Euler in sigma~ = sigma/alpha (Karras et al. 2022, Alg. 2 without Heun); churn optional")
def sample_euler(
    denoiser: Denoiser,
    process: Process,
    x: Tensor,
    ts: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    hook: Hook | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
) -> Tensor:
    """EDM's Euler sampler; ``s_churn`` > 0 adds Algorithm 2's stochastic churn (S_tmin, S_tmax in sigma~ units)."""
    return _edm(denoiser, process, x, ts, generator, callback, hook, False, s_churn, s_tmin, s_tmax, s_noise)


@sampler_info(order=2, stochastic=False, nfe_per_step=2, default_schedule="karras",
              description="Heun's 2nd order method in sigma~ (Karras et al. 2022, Algorithm 2); churn optional")
def sample_heun(
    denoiser: Denoiser,
    process: Process,
    x: Tensor,
    ts: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    hook: Hook | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
) -> Tensor:
    """EDM's Heun sampler (Algorithm 2); the step onto sigma = 0 is an Euler step, as in EDM."""
    return _edm(denoiser, process, x, ts, generator, callback, hook, True, s_churn, s_tmin, s_tmax, s_noise)
