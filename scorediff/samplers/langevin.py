"""Annealed Langevin dynamics (Song & Ermon 2019, "Generative Modeling by Estimating Gradients of the
Data Distribution", Algorithm 1), over the grid's noise levels, for every process.

Step i moves to the level sigma_{i+1} = sigma(ts[i + 1]) and runs T = ``n_steps_each`` Langevin steps there:
    alpha_i = eps sigma_i^2 / sigma_L^2                       # Algorithm 1, line 3
    x <- x + alpha_i / 2 score(x, t_i) + sqrt(alpha_i) z      # line 6, score = (alpha x0_hat - x) / sigma^2
sigma_L is the grid's last (smallest positive) level. The default eps = 0.2 sigma_L^2 is Song & Ermon's
CIFAR-10 ratio (eps = 2e-5 at sigma_L = 0.01); since the step is relative to sigma_i^2, the local scale of
p_t, the same sampler serves VP, sub-VP, flow and EDM as well as VE: no process is refused.
Levels: ts[0] is the start (the prior N(0, sigma_1^2) stands in for Langevin at sigma_1); with NCSN's
levels (``make("ve", levels=L)``, grid ``process.level_times`` = schedules "uniform" with L - 1 steps)
Langevin runs at sigma_2 .. sigma_L. Final denoising step (Jolicoeur-Martineau et al. 2021; Song & Ermon
2020): a grid ending at sigma = 0 makes the last step return x0_hat at the previous level (one evaluation);
for VE, which has no such time, ``denoise=True`` appends that step (one extra evaluation).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..parameterizations import score_from_x0
from ..processes.base import Process
from ._common import Callback, Denoiser, Grid, Hook, denoise_to_zero, end_step, langevin_step, sampler_info


@sampler_info(order=1, stochastic=True, nfe_per_step=100, default_schedule="uniform",
              description="Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1), T steps per level")
def sample_annealed_langevin(
    denoiser: Denoiser,
    process: Process,
    x: Tensor,
    ts: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    hook: Hook | None = None,
    n_steps_each: int = 100,
    eps: float | None = None,
    denoise: bool = False,
) -> Tensor:
    """Annealed Langevin over the levels ts[1:], ``n_steps_each`` steps per level, step size ``eps`` at sigma_L."""
    if n_steps_each < 1:
        raise ValueError(f"annealed_langevin: n_steps_each must be >= 1, got {n_steps_each}")
    grid = Grid(process, ts, x)
    sigma_L = grid.sigma[-2] if grid.sigma[-1] == 0.0 else grid.sigma[-1]
    if eps is None:
        eps = 0.2 * sigma_L**2
    if eps <= 0:
        raise ValueError(f"annealed_langevin: eps must be > 0, got {eps}")
    x0_hat = x
    for i in range(grid.steps):
        if grid.to_zero(i):
            return denoise_to_zero(denoiser, grid, x, hook, callback)
        j = i + 1
        step = eps * grid.sigma[j] ** 2 / sigma_L**2  # Algorithm 1, line 3
        for _ in range(n_steps_each):
            x0_hat = grid.denoise(denoiser, x, j)
            x = langevin_step(x, score_from_x0(x, x0_hat, grid.alpha[j], grid.sigma[j]), step, generator)
        x = end_step(grid, i, x, x0_hat, hook, callback)
    if denoise:  # x0_hat = x + sigma_L^2 score for VE: Tweedie's denoising step
        x = grid.denoise(denoiser, x, grid.steps)
    return x
