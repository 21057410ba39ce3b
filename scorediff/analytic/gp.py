"""Gaussian processes on a grid: a single Gaussian, hence a one-component ``GaussianMixture``.

A stationary GP observed at L equally spaced times (and C independent channels) is N(mean, K) with
K_ij = k(|i - j| * spacing). As a mixture of one component it inherits everything the oracle gives in
closed form: the diffused marginal, the exact denoiser E[x0 | x_t], log p_t and, through
``GaussianMixture.condition``, the exact conditional of any unobserved entries given the observed ones
(forecasting, imputation, interpolation). Kernels (Rasmussen & Williams 2006, ch. 4):

* ``rbf``        k(r) = v exp(-r^2 / (2 l^2))                      (infinitely smooth paths)
* ``matern12``   k(r) = v exp(-r / l)                               (Ornstein-Uhlenbeck, rough paths)
* ``matern32``   k(r) = v (1 + sqrt(3) r / l) exp(-sqrt(3) r / l)
* ``matern52``   k(r) = v (1 + sqrt(5) r / l + 5 r^2 / (3 l^2)) exp(-sqrt(5) r / l)
* ``periodic``   k(r) = v exp(-2 sin^2(pi r / p) / l^2)             (period p = ``period``)

v = ``variance``, l = ``lengthscale``; ``jitter`` is added to the diagonal (the rbf kernel's matrix is
numerically singular on a fine grid).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..utils import unknown
from .gaussian import GaussianMixture

KERNELS = ("rbf", "matern12", "matern32", "matern52", "periodic")


def kernel_matrix(length: int, kernel: str = "rbf", lengthscale: float = 0.2, variance: float = 1.0,
                  period: float = 0.5, spacing: float | None = None) -> Tensor:
    """The (L, L) float64 covariance of a stationary kernel on the grid t_i = i * spacing (default 1 / (L - 1))."""
    if kernel not in KERNELS:
        raise unknown("kernel", kernel, KERNELS)
    if int(length) < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if not lengthscale > 0 or not variance > 0:
        raise ValueError(f"lengthscale and variance must be > 0, got {lengthscale} and {variance}")
    dt = spacing if spacing is not None else 1.0 / max(int(length) - 1, 1)
    t = torch.arange(int(length), dtype=torch.float64) * dt
    r = (t[:, None] - t[None, :]).abs()
    l, v = float(lengthscale), float(variance)
    if kernel == "rbf":
        return v * torch.exp(-(r**2) / (2 * l**2))
    if kernel == "matern12":
        return v * torch.exp(-r / l)
    if kernel == "matern32":
        a = math.sqrt(3) * r / l
        return v * (1 + a) * torch.exp(-a)
    if kernel == "matern52":
        a = math.sqrt(5) * r / l
        return v * (1 + a + a**2 / 3) * torch.exp(-a)
    return v * torch.exp(-2 * torch.sin(math.pi * r / float(period)) ** 2 / l**2)


def gaussian_process(length: int = 32, channels: int = 1, kernel: str = "rbf", lengthscale: float = 0.2,
                     variance: float = 1.0, mean: float = 0.0, period: float = 0.5, jitter: float = 1e-6,
                     spacing: float | None = None) -> GaussianMixture:
    """A GP on L grid points with C independent channels, as a one-component mixture over events (C, L).

    Flattened in (C, L) order, the covariance is block-diagonal with one (L, L) kernel block per channel.
    """
    k = kernel_matrix(length, kernel, lengthscale, variance, period, spacing)
    k = k + float(jitter) * torch.eye(int(length), dtype=torch.float64)
    c = int(channels)
    if c < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    cov = torch.block_diag(*([k] * c))
    mu = torch.full((1, c * int(length)), float(mean), dtype=torch.float64)
    return GaussianMixture(torch.ones(1, dtype=torch.float64), mu, cov[None], (c, int(length)))
