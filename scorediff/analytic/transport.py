"""Closed-form optimal transport between Gaussians, and the flow it induces (the truth for flow-matching couplings).

For N(m0, S0) -> N(m1, S1) the W2-optimal map is affine (Dowson & Landau 1982; Peyre & Cuturi 2019, Remark 2.31):
    T(x) = m1 + A (x - m0),  A = S0^{-1/2} (S0^{1/2} S1 S0^{1/2})^{1/2} S0^{-1/2},
    W2^2 = |m0 - m1|^2 + tr(S0 + S1 - 2 (S0^{1/2} S1 S0^{1/2})^{1/2}).
Flow matching with the OT coupling of noise x1 ~ N(0, I) and data x0 ~ N(m, S) (the limit of minibatch OT as the
batch grows, ``scorediff.couplings``) pairs x0 = T(x1) = m + S^{1/2} x1, so x_t = (1 - t) x0 + t x1 moves on straight
lines at constant speed and its velocity is, with x1 = ((1 - t) S^{1/2} + t I)^{-1} (x_t - (1 - t) m),
    v_t(x_t) = x1 - T(x1),    and the flow's denoiser E[x0 | x_t] = x_t - t v_t(x_t)    (``OTFlowDenoiser``).
A stochastic interpolant between Gaussians with independent ends (``losses.bridge``), x_t = (1 - t) x0 + t x1 +
gamma(t) z, x0 ~ N(m0, S0), x1 ~ N(m1, S1), is jointly Gaussian, so its velocity E[x1 - x0 + gamma' z | x_t] is affine:
    b_t(x) = m1 - m0 + C_vx C_x^{-1} (x - (1 - t) m0 - t m1),
    C_x = (1 - t)^2 S0 + t^2 S1 + gamma^2 I,  C_vx = t S1 - (1 - t) S0 + gamma gamma' I     (``GaussianBridgeDenoiser``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _sqrtm(s: Tensor) -> Tensor:
    evals, evecs = torch.linalg.eigh(s)
    return evecs @ torch.diag(evals.clamp(min=0).sqrt()) @ evecs.T


def gaussian_ot_map(m0, s0, m1, s1) -> tuple[Tensor, Tensor]:
    """(A, b) of the optimal map T(x) = A x + b from N(m0, S0) to N(m1, S1) (float64)."""
    m0, m1 = (torch.as_tensor(v, dtype=torch.float64) for v in (m0, m1))
    s0, s1 = (torch.as_tensor(v, dtype=torch.float64) for v in (s0, s1))
    r0 = _sqrtm(s0)
    r0_inv = torch.linalg.inv(r0)
    a = r0_inv @ _sqrtm(r0 @ s1 @ r0) @ r0_inv
    return a, m1 - a @ m0


def gaussian_w2_squared(m0, s0, m1, s1) -> float:
    """W2^2 between N(m0, S0) and N(m1, S1)."""
    m0, m1 = (torch.as_tensor(v, dtype=torch.float64) for v in (m0, m1))
    s0, s1 = (torch.as_tensor(v, dtype=torch.float64) for v in (s0, s1))
    r0 = _sqrtm(s0)
    return float(((m0 - m1) ** 2).sum() + torch.trace(s0 + s1 - 2 * _sqrtm(r0 @ s1 @ r0)))


class OTFlowDenoiser:
    """The denoiser E[x0 | x_t] of the ``flow`` process under the OT coupling of N(0, I) noise and N(mean, cov) data
    (module docstring); x of shape (B, D). ``nfe`` counts calls."""

    def __init__(self, mean, cov):
        d = len(mean)
        self.a, self.b = gaussian_ot_map(torch.zeros(d), torch.eye(d), mean, cov)  # T(x1) = a x1 + b
        self.nfe = 0

    def velocity(self, x: Tensor, t: Tensor) -> Tensor:
        """v_t(x) = x1 - T(x1) with x1 the noise whose straight path passes through x at t."""
        t64 = t.to(torch.float64).reshape(-1, 1, 1)
        eye = torch.eye(self.a.shape[0], dtype=torch.float64)
        m = (1 - t64) * self.a + t64 * eye  # (B, D, D)
        rhs = x.to(torch.float64) - (1 - t64[:, :, 0]) * self.b
        x1 = torch.linalg.solve(m, rhs)
        return (x1 - x1 @ self.a.T - self.b).to(x.dtype)

    def __call__(self, x: Tensor, t: Tensor, **cond) -> Tensor:
        self.nfe += 1
        return x - t.reshape(-1, 1).to(x.dtype) * self.velocity(x, t)


class GaussianBridgeDenoiser:
    """The ``flow``-process denoiser x - t b_t(x) of the Gaussian stochastic interpolant (module docstring) with
    gamma(t) = gamma sqrt(t (1 - t)); x of shape (B, D). ``nfe`` counts calls."""

    def __init__(self, m0, s0, m1, s1, gamma: float = 0.0):
        self.m0, self.m1 = (torch.as_tensor(v, dtype=torch.float64) for v in (m0, m1))
        self.s0, self.s1 = (torch.as_tensor(v, dtype=torch.float64) for v in (s0, s1))
        self.gamma, self.nfe = float(gamma), 0

    def velocity(self, x: Tensor, t: Tensor) -> Tensor:
        t64 = t.to(torch.float64).reshape(-1, 1, 1)
        eye = torch.eye(self.m0.shape[0], dtype=torch.float64)
        g2, g_dg = self.gamma**2 * t64 * (1 - t64), self.gamma**2 * (1 - 2 * t64) / 2  # gamma^2, gamma gamma': finite
        c_x = (1 - t64) ** 2 * self.s0 + t64**2 * self.s1 + g2 * eye
        c_vx = t64 * self.s1 - (1 - t64) * self.s0 + g_dg * eye
        mu = (1 - t64[:, :, 0]) * self.m0 + t64[:, :, 0] * self.m1
        sol = torch.linalg.solve(c_x, (x.to(torch.float64) - mu)[..., None])
        return (self.m1 - self.m0 + (c_vx @ sol)[..., 0]).to(x.dtype)

    def __call__(self, x: Tensor, t: Tensor, **cond) -> Tensor:
        self.nfe += 1
        return x - t.reshape(-1, 1).to(x.dtype) * self.velocity(x, t)
