"""Euler-Maruyama on the reverse-time SDE (Song et al. 2021, "Score-Based Generative Modeling
through SDEs", eq. 6 and Appendix G), derived from the process's SDE and the denoiser, never per process.

Forward SDE dx = f(t) x dt + g(t) dw with f = alpha'/alpha, g^2 = 2 sigma sigma' - 2 f sigma^2 (``Process.sde``);
reverse SDE dx = [f x - g^2 score] dt + g dw_bar, with score = (alpha x0_hat - x) / sigma^2 (Tweedie).
Step from t = ts[i] down to s = ts[i + 1], h = t - s > 0:
    x_s = x_t - (f x_t - g^2 score) h + g sqrt(h) z
As in score_sde's ``denoise=True`` the last step adds no noise (it returns the step's mean); onto
sigma = 0 it returns x0_hat. At a node of infinite noise (alpha = 0 at t_max for flow and cosine VP)
f and g^2 are infinite; that first step is the exact ancestral step given x0_hat (``ddpm``'s,
variance beta_tilde), the limit of the SDE's transition there.
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
    ancestral_step,
    denoise_to_zero,
    end_step,
    lincomb,
    noise_like,
    sampler_info,
)


def em_step(grid: Grid, i: int, x: Tensor, x0_hat: Tensor, generator, noise: bool = True) -> Tensor:
    """One Euler-Maruyama step of the reverse SDE from node i to i + 1."""
    f, g2 = grid.sde[0][i], grid.sde[1][i]  # Process.sde at node i
    h = grid.t[i] - grid.t[i + 1]
    # x - (f x - g^2 score) h with score = (alpha x0_hat - x) / sigma^2, as one combination of x and x0_hat
    k = g2 * h / grid.sigma[i] ** 2
    cx, c0 = 1 - f * h - k, k * grid.alpha[i]
    if not noise:
        return lincomb((cx, x), (c0, x0_hat))
    return noise_like(x, generator, math.sqrt(max(g2, 0.0) * h)).add_(x, alpha=cx).add_(x0_hat, alpha=c0)


@sampler_info(order=1, stochastic=True, nfe_per_step=1, default_schedule="karras",
              description="Euler-Maruyama on the reverse SDE (Song et al. 2021, eq. 6)")
def sample_euler_maruyama(
    denoiser: Denoiser,
    process: Process,
    x: Tensor,
    ts: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    hook: Hook | None = None,
) -> Tensor:
    """Euler-Maruyama sampling of the reverse-time SDE over ``ts``."""
    grid = Grid(process, ts, x)
    for i in range(grid.steps):
        if grid.to_zero(i):
            return denoise_to_zero(denoiser, grid, x, hook, callback)
        x0_hat = grid.denoise(denoiser, x, i)
        noise = i < grid.steps - 1
        if grid.infinite(i):
            x = ancestral_step(grid, i, x, x0_hat, generator, noise)
        else:
            x = em_step(grid, i, x, x0_hat, generator, noise)
        x = end_step(grid, i, x, x0_hat, hook, callback)
    return x
