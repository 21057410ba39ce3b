"""Samplers of critically-damped Langevin diffusion (Dockhorn, Vahdat & Kreis 2022), for the ``cld`` process only.

They take the position x at ts[0] (data shape, as every sampler does), draw the velocity from the prior's
conditional v | x (``CLD.phase_start``), run in phase space u = (x, v) and return the position: so
``scorediff.sample(denoiser, cld, shape)`` looks like any other process to its caller. The denoiser is called on
u and returns x0_hat = E[x0 | u]; the velocity score s_v = grad_v log p_t(u) follows from it
(``CLD.velocity_score``). Symbols: beta(t), mass M, friction Gamma; tau runs backwards, h = t_i - t_{i+1} > 0,
and int_{t_{i+1}}^{t_i} beta is written Delta_i. The reverse-time SDE (eq. 6 of the paper):
    dx = -M^{-1} v beta dtau,   dv = (x + Gamma M^{-1} v) beta dtau + 2 Gamma beta s_v dtau + sqrt(2 Gamma beta) dw.

* ``sscs``: symmetric splitting (Sec. 3.4, Algorithm 1). Split the reverse SDE into
  A: dx = -M^{-1} v beta dtau, dv = (x - Gamma M^{-1} v) beta dtau + sqrt(2 Gamma beta) dw   (a linear OU process,
     solved exactly: ``CLD.reverse_ou``), and
  S: dv = 2 Gamma beta (s_v + M^{-1} v) dtau   (x fixed; the score minus its Gaussian part, an Euler step),
  and take A for half a step, S for a whole step at the midpoint time, A for the other half (one model call).
* ``cld_euler_maruyama``: Euler-Maruyama on the reverse SDE (one model call per step).
* ``cld_heun``: Heun's method on the probability-flow ODE du/dt = f(u) - (0, Gamma beta s_v) (two calls).
* ``cld_ode``: the same ODE, adaptive (torchdiffeq, ``samplers.ode.integrate_pf_ode``).
Onto t = 0 (a grid with ``denoise_to_zero``) the last step returns x0_hat, as for every process; the last step of
the stochastic samplers adds no noise. The hook sees the position; the callback payload also carries "v".
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..processes.base import Process
from ._common import Callback, Denoiser, Hook, noise_like, sampler_info
from .ode import integrate_pf_ode

CLD_ONLY = ("cld",)


class PhaseGrid:
    """The time grid of a CLD sampler: ts checked once, per-node floats and (B,) model times."""

    def __init__(self, process: Process, ts: Tensor, like: Tensor, sampler: str):
        if not getattr(process, "phase_space", False):
            raise ValueError(f"sampler '{sampler}' runs on a phase-space process (cld), not on '{process.name}'")
        ts = torch.as_tensor(ts, dtype=torch.float64).detach().cpu()
        if ts.ndim != 1 or ts.numel() < 2 or not bool((ts[1:] < ts[:-1]).all()):
            raise ValueError(f"ts must be a strictly decreasing 1-D grid of at least 2 times, got {ts.tolist()[:6]}")
        process.check_t(ts)
        self.process, self.steps = process, ts.numel() - 1
        self.t: list[float] = ts.tolist()
        self.B: list[float] = process.beta_int(ts).tolist()  # int_0^t beta at every node
        dtype = like.dtype if like.is_floating_point() else torch.float32
        self.tb: list[Tensor] = list(ts.to(dtype).unsqueeze(1).expand(ts.numel(), like.shape[0]).contiguous()
                                     .to(like.device).unbind(0))

    def time(self, t: float, like: Tensor) -> Tensor:
        return torch.full((like.shape[0],), t, dtype=like.dtype, device=like.device)

    def to_zero(self, i: int) -> bool:
        return i == self.steps - 1 and self.t[-1] == 0.0

    def beta(self, t: float) -> float:
        return float(self.process.beta(torch.tensor(t, dtype=torch.float64)))


def _finish(grid: PhaseGrid, i: int, u: Tensor, x0_hat: Tensor, hook: Hook | None, callback: Callback | None) -> Tensor:
    """End of step i: the hook on the position, then the callback (position, velocity, x0_hat)."""
    x, v = grid.process.split(u)
    if hook is not None:
        x = hook(x, grid.tb[i + 1], x0_hat)
        u = grid.process.join(x, v)
    if callback is not None:
        callback({"i": i, "t": grid.t[i + 1], "x": x, "v": v, "x0_hat": x0_hat})
    return u


def _to_zero(denoiser: Denoiser, grid: PhaseGrid, u: Tensor, hook, callback) -> Tensor:
    i = grid.steps - 1
    x0_hat = denoiser(u, grid.tb[i])
    _, v = grid.process.split(u)
    return grid.process.split(_finish(grid, i, grid.process.join(x0_hat, v), x0_hat, hook, callback))[0]


def _run(step, denoiser, process, x, ts, generator, callback, hook, name) -> Tensor:
    """The shared loop: phase start, ``step(grid, i, u, noise) -> (u, x0_hat)``, the special last steps."""
    grid = PhaseGrid(process, ts, x, name)
    u = process.phase_start(x, grid.t[0], generator)
    for i in range(grid.steps):
        if grid.to_zero(i):
            return _to_zero(denoiser, grid, u, hook, callback)
        u, x0_hat = step(grid, i, u, i < grid.steps - 1)
        u = _finish(grid, i, u, x0_hat, hook, callback)
    return process.split(u)[0]


def _ou_half(grid: PhaseGrid, u: Tensor, ds: float, generator, noise: bool) -> Tensor:
    """The A part over time scale ds = int beta, exactly: u <- Phi u + L n (``CLD.reverse_ou``)."""
    p = grid.process
    (pxx, pxv, pvx, pvv), (lxx, lvx, lvv) = p.reverse_ou(ds)
    x, v = p.split(u)
    x_new, v_new = pxx * x + pxv * v, pvx * x + pvv * v
    if noise:
        nx, nv = noise_like(x, generator), noise_like(v, generator)
        x_new, v_new = x_new + lxx * nx, v_new + lvx * nx + lvv * nv
    return p.join(x_new, v_new)


@sampler_info(order=1, stochastic=True, nfe_per_step=1, default_schedule="logsnr_cosine", processes=CLD_ONLY,
              description="Symmetric splitting CLD sampler SSCS (Dockhorn et al. 2022, Algorithm 1); cld only")
def sample_sscs(
    denoiser: Denoiser,
    process: Process,
    x: Tensor,
    ts: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    hook: Hook | None = None,
) -> Tensor:
    """SSCS over ``ts``: half an exact OU step, an Euler step of the score part at the midpoint, half an OU step."""

    def step(grid: PhaseGrid, i: int, u: Tensor, noise: bool):
        p = grid.process
        t_mid = 0.5 * (grid.t[i] + grid.t[i + 1])
        b_mid = float(p.beta_int(torch.tensor(t_mid, dtype=torch.float64)))
        u = _ou_half(grid, u, grid.B[i] - b_mid, generator, noise)
        x0_hat = denoiser(u, grid.time(t_mid, u))
        xs, v = p.split(u)
        # S: v += 2 Gamma Delta (s_v + v / M), Delta = int beta over the whole step
        s_v = p.velocity_score(u, x0_hat, grid.time(t_mid, u))
        v = v + (2 * p.friction * (grid.B[i] - grid.B[i + 1])) * (s_v + v / p.mass)
        u = _ou_half(grid, p.join(xs, v), b_mid - grid.B[i + 1], generator, noise)
        return u, x0_hat

    return _run(step, denoiser, process, x, ts, generator, callback, hook, "sscs")


@sampler_info(order=1, stochastic=True, nfe_per_step=1, default_schedule="logsnr_cosine", processes=CLD_ONLY,
              description="Euler-Maruyama on CLD's reverse SDE (Dockhorn et al. 2022, eq. 6); cld only")
def sample_cld_euler_maruyama(
    denoiser: Denoiser,
    process: Process,
    x: Tensor,
    ts: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    hook: Hook | None = None,
) -> Tensor:
    """Euler-Maruyama in phase space over ``ts``."""

    def step(grid: PhaseGrid, i: int, u: Tensor, noise: bool):
        p = grid.process
        h, b = grid.t[i] - grid.t[i + 1], grid.beta(grid.t[i])
        x0_hat = denoiser(u, grid.tb[i])
        xs, v = p.split(u)
        s_v = p.velocity_score(u, x0_hat, grid.tb[i])
        g, m = p.friction, p.mass
        x_new = xs - (h * b / m) * v
        v_new = v + (h * b) * (xs + (g / m) * v + 2 * g * s_v)
        if noise:
            v_new = v_new + noise_like(v, generator, math.sqrt(2 * g * b * h))
        return p.join(x_new, v_new), x0_hat

    return _run(step, denoiser, process, x, ts, generator, callback, hook, "cld_euler_maruyama")


@sampler_info(order=2, stochastic=False, nfe_per_step=2, default_schedule="logsnr_cosine", processes=CLD_ONLY,
              description="Heun's method on CLD's probability-flow ODE (Dockhorn et al. 2022, Sec. 3); cld only")
def sample_cld_heun(
    denoiser: Denoiser,
    process: Process,
    x: Tensor,
    ts: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    hook: Hook | None = None,
) -> Tensor:
    """Heun (explicit trapezoid) on du/dt = f(u) - (0, Gamma beta s_v) over ``ts``."""

    def step(grid: PhaseGrid, i: int, u: Tensor, noise: bool):
        p = grid.process
        h = grid.t[i + 1] - grid.t[i]  # negative: integrating towards the data
        x0_hat = denoiser(u, grid.tb[i])
        d = p.pf_ode_velocity(u, x0_hat, grid.tb[i])
        u_e = u + h * d
        d2 = p.pf_ode_velocity(u_e, denoiser(u_e, grid.tb[i + 1]), grid.tb[i + 1])
        return u + (0.5 * h) * (d + d2), x0_hat

    return _run(step, denoiser, process, x, ts, generator, callback, hook, "cld_heun")


@sampler_info(order=5, stochastic=False, nfe_per_step=float("nan"), default_schedule="logsnr_cosine", processes=CLD_ONLY,
              description="Adaptive CLD probability-flow ODE (torchdiffeq dopri5); cld only")
def sample_cld_ode(
    denoiser: Denoiser,
    process: Process,
    x: Tensor,
    ts: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    hook: Hook | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    stats: dict | None = None,
) -> Tensor:
    """Integrate CLD's probability-flow ODE adaptively node to node (``rtol``, ``atol``, torchdiffeq ``method``)."""

    nfe = [0]

    def counted(u: Tensor, t: Tensor) -> Tensor:
        nfe[0] += 1
        return denoiser(u, t)

    def velocity(t: Tensor, u: Tensor) -> Tensor:
        tb = torch.full((u.shape[0],), float(t), dtype=u.dtype, device=u.device)
        return process.pf_ode_velocity(u, counted(u, tb), tb)

    def step(grid: PhaseGrid, i: int, u: Tensor, noise: bool):
        return integrate_pf_ode(velocity, u, grid.t[i], grid.t[i + 1], rtol=rtol, atol=atol, method=method), None

    try:
        return _run(step, counted, process, x, ts, generator, callback, hook, "cld_ode")
    finally:
        if stats is not None:
            stats["nfe"] = nfe[0]
