"""Linear inverse problems y = A x + s n: DPS and Pi-GDM as denoiser wrappers and step hooks, or SMC."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..processes.base import Process
from ..samplers import sample
from ..samplers._common import Denoiser, bind_cond
from ..utils import append_dims, unknown
from ._common import LINEAR_METHODS, _coeffs, _grid, default_steps
from .operators import Operator, _apply, as_matrix
from .smc import _smc

# -- linear inverse problems -------------------------------------------------------------------------------------


def solve_linear(
    denoiser: Denoiser,
    process: Process,
    A: Operator,
    y: Tensor,
    noise_std: float,
    *,
    shape: tuple[int, ...],
    method: str = "pigdm",
    sampler: str = "ddpm",
    steps: int | None = None,
    scale: float = 1.0,
    schedule: str | None = None,
    seed: int = 0,
    particles: int | None = None,
    cond: dict[str, Any] | None = None,
    **options,
) -> Tensor:
    """Sample p(x | y) for y = A x + noise_std * n with an unconditional model (see the module docstring).

    Args:
        A: (M, D) matrix on flattened examples, or a callable (B, *event) -> (B, M) linear in x.
        y: (M,) one observation for the whole batch, or (B, M) one per row.
        shape: (B, *event), the output shape.
        method: "dps", "pigdm" or "smc".
        scale: dps's step size zeta (Chung et al. use 0.3-1), pigdm's guidance weight (1 = the formula).
        sampler, steps, schedule, **options: the sampler driving dps / pigdm (any registered one); steps
            defaults per method (``inverse._common.DEFAULT_STEPS``: smc 400 by protocol 5b; dps and pigdm 400 by
            protocol 5f, docs/results/defaults.md; dps's total pull grows with the step count at a fixed ``scale``).
        particles: smc only, as in :func:`inpaint` (y must then be the same within each particle system).
    """
    if method not in LINEAR_METHODS:
        raise unknown("inverse-problem method", method, LINEAR_METHODS)
    steps = default_steps(method, steps)
    shape = tuple(shape)
    a = as_matrix(A, shape[1:])
    yv = torch.as_tensor(y, dtype=torch.float64)
    yv = yv.reshape(1, -1).expand(shape[0], -1) if yv.ndim <= 1 else yv.reshape(yv.shape[0], -1)
    if yv.shape != (shape[0], a.shape[0]):
        raise ValueError(f"y must have shape ({a.shape[0]},) or ({shape[0]}, {a.shape[0]}), got {tuple(yv.shape)}")
    if not float(noise_std) >= 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    den = bind_cond(denoiser, cond)
    if method == "smc":
        return _smc(den, process, a, yv, float(noise_std), shape, steps=steps, seed=seed, particles=particles,
                    schedule=schedule)
    ts = _grid(process, sampler, steps, schedule)
    if method == "dps":
        dps = _DPS(den, a, yv, scale)
        return sample(dps, process, shape, sampler=sampler, schedule=ts, seed=seed, hook=dps.hook, **options)
    guided = _PiGDM(den, process, a, yv, float(noise_std), scale)
    return sample(guided, process, shape, sampler=sampler, schedule=ts, seed=seed, **options)




class _DPS:
    """DPS's two halves: the wrapper computes grad_{x_t} ||y - A x0_hat(x_t)|| per example at each model call,
    the hook subtracts zeta times the latest one from the new state (Chung et al. 2023, Algorithm 1, line 7)."""

    def __init__(self, denoiser: Denoiser, a: Tensor, y: Tensor, zeta: float):
        self.denoiser, self.a, self.y, self.zeta = denoiser, a, y, float(zeta)
        self.grad: Tensor | None = None

    @property
    def nfe(self) -> int:
        return getattr(self.denoiser, "nfe", 0)

    def __call__(self, x: Tensor, t: Tensor, **cond) -> Tensor:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            x0_hat = self.denoiser(xg, t, **cond)
            norm = (self.y - _apply(self.a, x0_hat)).norm(dim=1)
            (self.grad,) = torch.autograd.grad(norm.sum(), xg)
        return x0_hat.detach()

    def hook(self, x: Tensor, t: Tensor, x0_hat: Tensor) -> Tensor:
        return x - self.zeta * self.grad.to(x.dtype)


class _PiGDM:
    """Pi-GDM as a Denoiser: x0_hat + (sigma^2 / alpha) w J^T A^T (r^2 A A^T + s^2 I)^{-1} (y - A x0_hat)."""

    def __init__(self, denoiser: Denoiser, process: Process, a: Tensor, y: Tensor, noise_std: float, w: float):
        self.denoiser, self.process, self.a, self.y, self.s2, self.w = denoiser, process, a, y, noise_std**2, w
        self.evals, self.evecs = torch.linalg.eigh(a @ a.T)  # A A^T = Q diag(e) Q^T, once

    @property
    def nfe(self) -> int:
        return getattr(self.denoiser, "nfe", 0)

    def __call__(self, x: Tensor, t: Tensor, **cond) -> Tensor:
        a_t, s_t = _coeffs(self.process, t, x.new_zeros(x.shape[0], 1).double())
        a_t, s_t = a_t[:, 0], s_t[:, 0]
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            x0_hat = self.denoiser(xg, t, **cond)
            resid = self.y - _apply(self.a, x0_hat)  # (B, M)
            r2 = s_t**2 / (a_t**2 + s_t**2)
            # (r^2 A A^T + s^2 I)^{-1} resid through the eigendecomposition of A A^T
            inv = 1.0 / (r2[:, None] * self.evals[None] + self.s2).clamp_min(1e-30)
            v = ((resid @ self.evecs) * inv) @ self.evecs.T
            (g,) = torch.autograd.grad(_apply(self.a, x0_hat), xg, grad_outputs=v.detach())
        # sigma^2 / alpha turns a score into an x0 shift; no guidance where alpha ~ 0 (pure noise)
        c = torch.where(a_t > 1e-6, s_t**2 / a_t.clamp_min(1e-6), torch.zeros_like(a_t)) * self.w
        return (x0_hat.detach() + append_dims(c, x.ndim).to(x.dtype) * g.to(x.dtype)).to(x.dtype)


