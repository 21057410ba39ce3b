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
* ``seasonal``   k(r) = (2 v exp(-2 sin^2(pi r / p)) + matern52(r)) / 3   (a smooth season of period p that
                 repeats exactly, two thirds of the variance, plus local variation of lengthscale l: the case for
                 seasonal naive forecasts)

v = ``variance``, l = ``lengthscale``; ``jitter`` is added to the diagonal (the rbf kernel's matrix is
numerically singular on a fine grid).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..utils import unknown
from .gaussian import GaussianMixture

KERNELS = ("rbf", "matern12", "matern32", "matern52", "periodic", "seasonal")


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
    a = math.sqrt(5) * r / l
    matern52 = v * (1 + a + a**2 / 3) * torch.exp(-a)
    if kernel == "matern52":
        return matern52
    if kernel == "seasonal":
        return (2 * v * torch.exp(-2 * torch.sin(math.pi * r / float(period)) ** 2) + matern52) / 3
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


class MaskedDenoiser:
    """The exact conditional denoiser of a CSDI-style model of ``mixture``: D(x_t, t, observed, observed_mask).

    A model conditioned on observed entries x_o (Tashiro et al. 2021) diffuses only the unobserved ones; its
    exact denoiser is, on the unobserved entries, E[x0_u | x_t,u, x_o], the Tweedie denoiser of the conditional
    ``mixture.condition(x_o, m)`` at x_t,u, and on the observed entries x_o itself. Without ``observed`` it is the
    unconditional E[x0 | x_t]. It is what a perfectly trained ``nets.MaskedConditional`` network computes, so the
    conditional-sampling path of ``scorediff.forecast`` can be checked exactly. Each distinct (observed, mask)
    row costs one conditioning (cached); ``nfe`` counts calls.
    """

    def __init__(self, mixture: GaussianMixture, process):
        self.mixture, self.process, self.nfe = mixture, process, 0
        self._cache: dict = {}

    def _conditional(self, obs: Tensor, m: Tensor) -> GaussianMixture:
        key = (obs[m].double().cpu().numpy().tobytes(), m.cpu().numpy().tobytes())
        if key not in self._cache:
            self._cache[key] = self.mixture.condition(obs.double().cpu(), m.cpu())
        return self._cache[key]

    def __call__(self, x: Tensor, t, observed: Tensor | None = None, observed_mask: Tensor | None = None,
                 **cond) -> Tensor:
        self.nfe += 1
        if observed is None:
            return self.mixture.x0_mean(x, t, self.process)
        b = x.shape[0]
        m = torch.as_tensor(observed_mask, device=x.device).bool().expand(x.shape).reshape(b, -1)
        obs = observed.expand(x.shape).reshape(b, -1)
        xf = x.reshape(b, -1)
        tb = torch.as_tensor(t, dtype=torch.float64, device=x.device).reshape(-1).expand(b)
        out = torch.where(m, obs.to(x.dtype), xf)
        # rows sharing (observed, mask) share one conditional: one torch.unique over the rows (the observed values
        # where known, and the mask) groups them (one group in the common case)
        rowkey = torch.cat([torch.where(m, obs, torch.zeros_like(obs)).double(), m.double()], 1)
        _, group = torch.unique(rowkey, dim=0, return_inverse=True)
        for g in range(int(group.max()) + 1):
            rows = (group == g).nonzero().flatten()
            mi = m[int(rows[0])]
            if bool(mi.all()):
                continue
            if not bool(mi.any()):  # nothing observed: the unconditional denoiser
                xr = xf[rows].reshape(len(rows), *x.shape[1:])
                out[rows] = self.mixture.x0_mean(xr, tb[rows], self.process).reshape(len(rows), -1).to(x.dtype)
                continue
            gm = self._conditional(obs[int(rows[0])], mi)
            block = out[rows]
            block[:, ~mi] = gm.x0_mean(xf[rows][:, ~mi], tb[rows], self.process).to(x.dtype)
            out[rows] = block
        return out.reshape(x.shape)
