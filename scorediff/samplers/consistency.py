"""The consistency-model sampler (Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models", Algorithm 1).

The denoiser must be a consistency function f(x, t): the map of the probability-flow ODE from time t to
t_min, in x0 units (a network with the ``consistency`` parameterization, trained by
``scorediff.few_step``), not the posterior mean E[x0 | x_t] of an ordinary denoiser. Over the grid
ts = (tau_0 = t_max, tau_1, ..., tau_{N-1}, t_end):
    x0_hat = f(x_{tau_0}, tau_0)                                                    # one step
    for n = 1 .. N-1:  z ~ N(0, I),  x_{tau_n} = alpha_n (x0_hat + sqrt(sigma~_n^2 - sigma~_min^2) z),
                       x0_hat = f(x_{tau_n}, tau_n)                                 # multistep
with sigma~ = sigma / alpha and sigma~_min = sigma~(t_min) (Algorithm 1's x + sqrt(tau^2 - eps^2) z, for any
process). The last node t_end (t_min or 0) is only the end of the grid: N steps are N evaluations and the
result is the last x0_hat. One step is ``steps=1``; the intermediate times tau_n are any grid, e.g.
``scorediff.sample(f, process, shape, sampler="consistency", schedule=[80.0, 0.8, 0.002])``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..processes.base import Process
from ._common import Callback, Denoiser, Grid, Hook, end_step, noise_like, sampler_info


@sampler_info(order=1, stochastic=True, nfe_per_step=1, default_schedule="karras", denoiser="consistency",
              description="consistency-model sampling (Song et al. 2023, Algorithm 1): one step, or multistep on the grid")
def sample_consistency(
    denoiser: Denoiser,
    process: Process,
    x: Tensor,
    ts: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    hook: Hook | None = None,
) -> Tensor:
    """Consistency sampling over ``ts``: f at ts[0], then re-noise to each intermediate node and apply f again."""
    grid = Grid(process, ts, x)
    with torch.no_grad():
        t_min = torch.tensor(process.t_min, dtype=torch.float64)
        st_min = float(process._sigma(t_min) / process._alpha(t_min))
    x0_hat = grid.denoise(denoiser, x, 0)
    for i in range(grid.steps - 1):
        x = end_step(grid, i, _renoise(grid, i + 1, x0_hat, st_min, generator), x0_hat, hook, callback)
        x0_hat = grid.denoise(denoiser, x, i + 1)
    return end_step(grid, grid.steps - 1, x0_hat, x0_hat, hook, callback)


def _renoise(grid: Grid, i: int, x0_hat: Tensor, st_min: float, generator: torch.Generator | None) -> Tensor:
    """x_{tau_i} = alpha_i x0_hat + alpha_i sqrt(sigma~_i^2 - sigma~_min^2) z (Algorithm 1, line 5)."""
    a = grid.alpha[i]
    std = a * math.sqrt(max(grid.sigma_tilde[i] ** 2 - st_min**2, 0.0)) if a > 0 else grid.sigma[i]
    return noise_like(x0_hat, generator, std).add_(x0_hat, alpha=a)
