"""Predictor-corrector sampling (Song et al. 2021, "Score-Based Generative Modeling through SDEs",
Algorithms 2-5), with the predictor and corrector derived from the process, never per process.

At each node t_i (i = 0 .. N-1), as in score_sde's ``pc_sampler``: first ``corrector_steps`` Langevin
corrector steps at t_i, then one predictor step from t_i to t_{i+1}. Predictors (h = t_i - t_{i+1}):
    "reverse_diffusion"  Algorithm 2/3's reverse diffusion: with the exact forward transition
                         x_t = a_ts x_s + s_ts z (a_ts = alpha_t / alpha_s, s_ts^2 = sigma_t^2 - a_ts^2 sigma_s^2),
                         x_s = (2 - a_ts) x_t + s_ts^2 score + s_ts z  (VP: (2 - sqrt(1 - beta)) x + beta s + sqrt(beta) z;
                         VE: x + (sigma_t^2 - sigma_s^2) s + sqrt(sigma_t^2 - sigma_s^2) z, as the paper's).
    "euler_maruyama"     Euler-Maruyama on the reverse SDE (``sde.em_step``).
    "ode"                Euler on the probability-flow ODE in t: x_s = x_t - h v, v = alpha' x0_hat + sigma' eps_hat.
Corrector "langevin" (Algorithms 4/5): z ~ N(0, I), g = score(x, t_i), eps = 2 (r ||z|| / ||g||)^2 (norms per
example; r = ``snr``), x <- x + eps g + sqrt(2 eps) z. Algorithm 5's factor alpha_i = 1 - beta_i (VP) is taken
as 1 (it is >= 0.98 for DDPM's betas); "none" skips the corrector.
The last predictor step adds no noise (score_sde's ``denoise=True``); onto sigma = 0 it returns x0_hat. From a
node of infinite noise (alpha = 0) the stochastic predictors take the exact ancestral step (see ``sde``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..parameterizations import score_from_x0, velocity_from_x0
from ..processes.base import Process
from ..utils import append_dims
from ._common import (
    Callback,
    Denoiser,
    Grid,
    Hook,
    ancestral_step,
    denoise_to_zero,
    end_step,
    noise_like,
    sampler_info,
)
from .sde import em_step

PREDICTORS = ("reverse_diffusion", "euler_maruyama", "ode")
CORRECTORS = ("langevin", "none")


def langevin_corrector(denoiser: Denoiser, grid: Grid, i: int, x: Tensor, snr: float, steps: int, generator) -> Tensor:
    """``steps`` Langevin corrector steps at node i with target signal-to-noise ratio ``snr`` (Algorithm 4)."""
    for _ in range(steps):
        x0_hat = grid.denoise(denoiser, x, i)
        g = score_from_x0(x, x0_hat, grid.alpha[i], grid.sigma[i])
        z = noise_like(x, generator)
        g_norm = g.reshape(g.shape[0], -1).norm(dim=1)
        z_norm = z.reshape(z.shape[0], -1).norm(dim=1)
        # For data near N(mu, sigma^2) |g| ~ |z| / sigma, so eps ~ 2 snr^2 sigma^2. Where the score vanishes
        # (in float32 at tiny sigma, x - alpha x0_hat can round to exactly 0) the raw rule gives eps = inf and
        # NaN; cap eps at 10^4 times that natural scale, i.e. bound |g| below by |z| / (100 sigma_i).
        g_norm = torch.maximum(g_norm, z_norm / (100 * grid.sigma[i]))
        eps = append_dims(2 * (snr * z_norm / g_norm) ** 2, x.ndim)
        x = x + eps * g + torch.sqrt(2 * eps) * z
    return x


def predictor_step(predictor: str, grid: Grid, i: int, x: Tensor, x0_hat: Tensor, generator, noise: bool) -> Tensor:
    if predictor == "ode":
        v = velocity_from_x0(x, x0_hat, grid.alpha[i], grid.sigma[i], grid.d_alpha[i], grid.d_sigma[i])
        return x + (grid.t[i + 1] - grid.t[i]) * v
    if grid.infinite(i):
        return ancestral_step(grid, i, x, x0_hat, generator, noise)
    if predictor == "euler_maruyama":
        return em_step(grid, i, x, x0_hat, generator, noise)
    a_ts, s2_ts = grid.posterior[i][3:]  # the forward transition x_t = a_ts x_s + s_ts z
    score = score_from_x0(x, x0_hat, grid.alpha[i], grid.sigma[i])
    x = (2 - a_ts) * x + s2_ts * score
    return x + math.sqrt(s2_ts) * noise_like(x, generator) if noise else x


@sampler_info(order=1, stochastic=True, nfe_per_step=2, default_schedule="uniform",
              description="Predictor-corrector (Song et al. 2021, Alg. 2-5): reverse diffusion + Langevin")
def sample_pc(
    denoiser: Denoiser,
    process: Process,
    x: Tensor,
    ts: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    hook: Hook | None = None,
    predictor: str = "reverse_diffusion",
    corrector: str = "langevin",
    corrector_steps: int = 1,
    snr: float = 0.16,
) -> Tensor:
    """PC sampling; ``predictor`` in reverse_diffusion | euler_maruyama | ode, ``corrector`` langevin | none."""
    if predictor not in PREDICTORS:
        raise ValueError(f"pc: predictor {predictor!r} unknown; one of: {', '.join(PREDICTORS)}")
    if corrector not in CORRECTORS:
        raise ValueError(f"pc: corrector {corrector!r} unknown; one of: {', '.join(CORRECTORS)}")
    if corrector_steps < 0 or snr < 0:
        raise ValueError(f"pc: need corrector_steps >= 0 and snr >= 0, got {corrector_steps}, {snr}")
    m = corrector_steps if corrector == "langevin" else 0
    grid = Grid(process, ts, x)
    for i in range(grid.steps):
        if m:
            x = langevin_corrector(denoiser, grid, i, x, snr, m, generator)
        if grid.to_zero(i):
            return denoise_to_zero(denoiser, grid, x, hook, callback)
        x0_hat = grid.denoise(denoiser, x, i)
        x = predictor_step(predictor, grid, i, x, x0_hat, generator, noise=i < grid.steps - 1)
        x = end_step(grid, i, x, x0_hat, hook, callback)
    return x
