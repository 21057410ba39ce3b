"""Ancestral sampling of DDPM (Ho, Jain & Abbeel 2020, Algorithm 2), between any two grid times.

Step from t = ts[i] to s = ts[i + 1]: draw x_s ~ q(x_s | x_t, x0 = x0_hat), the Gaussian posterior
of the forward process (Ho et al. eqs. 6-7; in general form Kingma et al. 2021, eqs. 4-5):
    mean = alpha_s s_ts^2 / sigma_t^2 x0_hat + a_ts sigma_s^2 / sigma_t^2 x_t,
    a_ts = alpha_t / alpha_s,  s_ts^2 = sigma_t^2 - a_ts^2 sigma_s^2   (the forward transition),
    variance "beta_tilde" = s_ts^2 sigma_s^2 / sigma_t^2 (the true posterior's) or "beta" = s_ts^2
    (Ho et al.'s other choice, sigma_t^2 = beta_t).
On vp-discrete with the full grid t = T/T, ..., 1/T, 0 these are exactly beta_tilde_t and beta_t and
the mean is Algorithm 2's 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps_hat). On any other grid or
process the same formulas give the ancestral step between the two grid times. As in Algorithm 2, the
last step adds no noise (z = 0 at t = 1); onto sigma = 0 it returns x0_hat.
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
    ancestral_step,
    denoise_to_zero,
    end_step,
    sampler_info,
)

VARIANCES = ("beta_tilde", "beta")


@sampler_info(order=1, stochastic=True, nfe_per_step=1, default_schedule="logsnr_cosine",
              description="DDPM ancestral sampling (Ho et al. 2020, Algorithm 2); variance beta_tilde | beta")
def sample_ddpm(
    denoiser: Denoiser,
    process: Process,
    x: Tensor,
    ts: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    hook: Hook | None = None,
    variance: str = "beta_tilde",
) -> Tensor:
    """Ancestral sampling; ``variance`` "beta_tilde" (posterior) or "beta" (forward step)."""
    if variance not in VARIANCES:
        raise ValueError(f"ddpm: variance {variance!r} unknown; one of: {', '.join(VARIANCES)}")
    grid = Grid(process, ts, x)
    for i in range(grid.steps):
        if grid.to_zero(i):
            return denoise_to_zero(denoiser, grid, x, hook, callback)
        x0_hat = grid.denoise(denoiser, x, i)
        # "beta": the forward transition's variance s_ts^2, beta_t on the full DDPM grid; Algorithm 2: z = 0 on the
        # last step
        var = grid.posterior[i][4] if variance == "beta" else None
        x_next = ancestral_step(grid, i, x, x0_hat, generator, noise=i < grid.steps - 1, variance=var)
        x = end_step(grid, i, x_next, x0_hat, hook, callback)
    return x
