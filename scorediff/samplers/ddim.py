"""DDIM (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", eq. 12), for any process.

Step from t = ts[i] to s = ts[i + 1] with x0_hat = D(x_t, t) and eps_hat = (x_t - alpha_t x0_hat) / sigma_t:
    x_s = alpha_s x0_hat + sqrt(sigma_s^2 - sigma_eta^2) eps_hat + sigma_eta z,                    # eq. (12)
    sigma_eta = eta * sqrt(sigma_s^2 / sigma_t^2 * (sigma_t^2 - (alpha_t / alpha_s)^2 sigma_s^2)),  # eq. (16)
which is eq. (16)'s sqrt((1 - abar_s)/(1 - abar_t)) sqrt(1 - abar_t / abar_s) for VP, written for any
alpha, sigma. eta = 0 is the deterministic DDIM, the Euler step of the probability-flow ODE in
x~ = x / alpha, sigma~ = sigma / alpha (so ``ddim`` == ``euler`` without churn); eta = 1 is ancestral
sampling: the same draws as ``ddpm`` with variance "beta_tilde" (tests check both identities).
The step is finite at alpha_t = 0 (flow, cosine VP at t_max). Parity with diffusers' DDIMScheduler
(set_alpha_to_one=True, "leading" spacing) is tested in tests/test_parity_core.py; its final step onto
alpha_bar = 1 is our denoise-to-zero step.
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
    noise_like,
    sampler_info,
)


@sampler_info(order=1, stochastic=False, nfe_per_step=1, default_schedule="logsnr_cosine",
              description="DDIM (Song et al. 2021a, eq. 12); eta=0 deterministic, eta=1 ancestral")
def sample_ddim(
    denoiser: Denoiser,
    process: Process,
    x: Tensor,
    ts: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    hook: Hook | None = None,
    eta: float = 0.0,
) -> Tensor:
    """DDIM sampling over the grid ``ts``; ``eta`` in [0, 1] scales the injected noise (0: deterministic)."""
    if not 0.0 <= eta:
        raise ValueError(f"ddim: eta must be >= 0, got {eta}")
    grid = Grid(process, ts, x)
    for i in range(grid.steps):
        if grid.to_zero(i):
            return denoise_to_zero(denoiser, grid, x, hook, callback)
        x0_hat = grid.denoise(denoiser, x, i)
        if eta > 0:
            # eq. (12) with eps_hat = (x - alpha_t x0_hat) / sigma_t expanded: noise + two passes
            sigma_eta = eta * math.sqrt(grid.posterior[i][2])  # eq. (16)
            c = math.sqrt(max(grid.sigma[i + 1] ** 2 - sigma_eta**2, 0.0)) / grid.sigma[i]
            x_next = noise_like(x, generator, sigma_eta)
            x_next.add_(x0_hat, alpha=grid.alpha[i + 1] - c * grid.alpha[i]).add_(x, alpha=c)
        else:
            x_next = grid.ddim(x, x0_hat, i)
        x = end_step(grid, i, x_next, x0_hat, hook, callback)
    return x
