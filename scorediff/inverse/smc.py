"""Sequential Monte Carlo for linear inverse problems and inpainting (in the spirit of MCGdiff)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import schedules
from ..processes.base import Process
from ..samplers._common import Denoiser, Grid


def _smc(
    denoiser: Denoiser,
    process: Process,
    a: Tensor,
    y: Tensor,
    noise_std: float,
    shape: tuple[int, ...],
    *,
    steps: int,
    seed: int,
    particles: int | None,
    schedule: str | None,
) -> Tensor:
    """Sequential Monte Carlo for y = A x + s n: the twisted diffusion sampler, asymptotically exact for the model.

    Frame (MCGdiff, Cardoso et al. 2024): with the SVD A = U S V^T, z = V^T x diffuses like x (the noise is
    isotropic) and the observation says z_j = y^_j + k_j n_j on the r observed directions, y^ = (U^T y)_j / S_j,
    k_j = s / S_j (k_j = 0: observed exactly).
    Targets (twisted diffusion sampler, TDS, Wu et al. 2023, Algorithm 1): phi_i(x_i) proportional to
    p_model(x_i) g_i(x_i), with the twist g_i(x) = prod_j N(y^_j; (V^T x0_hat(x))_j, r_i^2 + k_j^2),
    r_i^2 = sigma_i^2 / (alpha_i^2 + sigma_i^2) (Pi-GDM's p(y | x_t), Song et al. 2023), which tends to the
    likelihood as sigma -> 0.
    Moves (TDS's proposal): q(x_{i+1} | x_i) = N(m + v grad log g_i(x_i), v I), where N(m, v I) is the DDPM
    posterior transition p(x_{i+1} | x_i) (``Grid.posterior``); the gradient is one vector-Jacobian product
    through the model call x0_hat(x_i) that the step makes anyway (a model autograd cannot see through gets
    none, and the twist alone steers by the weights).
    Weights: w_{i+1} = w_i p(x' | x_i) g_{i+1}(x') / (q(x' | x_i) g_i(x_i)); each particle system resamples
    (systematically) when its effective sample size falls below half.
    Why not MCGdiff's proposal (the observed directions drawn from N(m, v) N(alpha_{i+1} y^, c), c =
    sigma_{i+1}^2): its pinning variance c is not the twist's (alpha^2 r^2 in z, or nothing like it when
    x0_hat trusts the prior over the observed pixels), so p / q carried O(1) log-weight variance per step
    that did not shrink with the step: the more steps, the more resampling and the fewer distinct ancestors.
    On a 32-D GP forecast (``benchmarks/smc_steps.py``) that proposal resampled 100 times at 100 steps and
    401 at 1000 and its forecast got worse with steps; this one resamples about 20 times at any step count.
    The grid ends at its last node with sigma > 0 (a sigma = 0 node is dropped); the result is that node's
    x0_hat with the exactly observed directions set to y^, each system resampled to equal weights.
    Error: O(1 / particles) Monte Carlo, plus the model's and the grid's own, plus O(sigma(t_min)^2).
    """
    b = shape[0]
    p = b if particles is None else int(particles)
    if p < 1 or b % p:
        raise ValueError(f"particles must divide the batch size {b}, got {particles}")
    groups = b // p
    if not bool((y.reshape(groups, p, -1) == y.reshape(groups, p, -1)[:, :1]).all()):
        raise ValueError("smc: y (or the known pixels) must be the same within each particle system")
    yg = y.reshape(groups, p, -1)[:, 0]  # (G, M)
    u, sv, vh = torch.linalg.svd(a, full_matrices=True)  # vh: (D, D), rows = right singular vectors
    rank = int((sv > sv.max() * 1e-10).sum()) if sv.numel() else 0
    yhat = ((yg @ u)[:, :rank] / sv[:rank]).repeat_interleave(p, dim=0)  # (B, r)
    k2 = (noise_std / sv[:rank]) ** 2  # (r,)
    ts = schedules.make(schedule or "logsnr", steps, process)  # log-SNR steps: the twist changes evenly
    if float(process._sigma(ts[-1:])) == 0.0:
        ts = ts[:-1]
    generator = torch.Generator().manual_seed(int(seed))
    x = process.prior_sample(shape, generator)
    grid = Grid(process, ts, x)

    def rot(x: Tensor) -> Tensor:
        return x.reshape(b, -1).to(torch.float64) @ vh.T

    def log_twist(x0_hat: Tensor, i: int) -> Tensor:
        r2 = grid.sigma[i] ** 2 / (grid.alpha[i] ** 2 + grid.sigma[i] ** 2)
        return -0.5 * ((rot(x0_hat)[:, :rank] - yhat) ** 2 / (r2 + k2)).sum(1)

    def denoise(x: Tensor, i: int) -> tuple[Tensor, Tensor, Tensor]:
        """x0_hat(x_i), log g_i(x_i) and grad_x log g_i(x_i) (rotated): one model call and one vector-Jacobian
        product; a model that autograd cannot see through gets a zero gradient (the twist still weights)."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            x0 = grid.denoise(denoiser, xg, i)
            lg = log_twist(x0, i)
            grad = torch.autograd.grad(lg.sum(), xg)[0] if lg.requires_grad else torch.zeros_like(xg)
        return x0.detach(), lg.detach(), rot(grad)

    x0_hat, logg, grad = denoise(x, 0)
    logw = logg.clone()
    for i in range(grid.steps):
        idx = _resample(logw.reshape(groups, p), generator, adaptive=True)
        if idx is not None:
            x, x0_hat, logg, grad, logw = x[idx], x0_hat[idx], logg[idx], grad[idx], torch.zeros_like(logw)
        c0, ct, v, _, _ = grid.posterior[i]
        m = rot(c0 * x0_hat + ct * x)  # p(x_{i+1} | x_i) = N(m, v)
        m_q = m + v * grad  # TDS's proposal: the twist's gradient as a drift, the same variance
        z = m_q + math.sqrt(v) * torch.randn(m.shape, generator=generator, dtype=torch.float64)
        log_p_over_q = (z - m_q).pow(2).sum(1).sub((z - m).pow(2).sum(1)).mul(0.5 / v) if v > 0 else 0.0
        x = (z @ vh).reshape(shape).to(x.dtype)
        x0_hat, logg_next, grad = denoise(x, i + 1)
        logw = logw + log_p_over_q + logg_next - logg
        logg = logg_next
    x0 = rot(x0_hat)
    exact = torch.nonzero(k2 == 0).flatten()
    x0[:, exact] = yhat[:, exact]
    idx = _resample(logw.reshape(groups, p), generator, adaptive=False)
    return (x0[idx] @ vh).reshape(shape).to(x.dtype)


def _resample(logw: Tensor, generator: torch.Generator, adaptive: bool) -> Tensor | None:
    """Systematic resampling within each row of logw (G, P); flat indices, or None if every ESS >= P / 2."""
    g, p = logw.shape
    w = torch.softmax(logw, dim=1)
    if adaptive and bool((1.0 / (w**2).sum(1) >= 0.5 * p).all()):
        return None
    u = (torch.rand(g, 1, generator=generator, dtype=torch.float64) + torch.arange(p, dtype=torch.float64)) / p
    cdf = torch.cumsum(w, dim=1)
    cdf[:, -1] = 1.0
    idx = torch.searchsorted(cdf, u).clamp_max(p - 1)
    return (idx + p * torch.arange(g)[:, None]).flatten()


