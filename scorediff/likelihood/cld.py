"""The likelihood of critically-damped Langevin diffusion: a bound through phase space.

Dockhorn, Vahdat & Kreis 2022, Sec. 3.5 and App. B.4. CLD's probability-flow ODE lives in phase space u = (x, v)
(``processes.cld``), so the change of variables (``scorediff.likelihood``, Song et al. 2021) gives the exact model
density of a *phase state*, log p_{t_min}(x, v) = log p_{t_max}(u_{t_max}) + int div f~ dt (``phase_log_likelihood``).
The data carry no velocity: the initial velocity is v0 ~ q = N(0, gamma M), and by Jensen

    log p_{t_min}(x) = log E_{v ~ q}[p_{t_min}(x, v) / q(v)]  >=  E_{v ~ q}[log p_{t_min}(x, v) - log q(v)]  (the bound),

with equality exactly when the model's p_{t_min}(v | x) is q; its gap is E_q KL(q || p_{t_min}(v | x)), small for a
small t_min (at t = 0 the true phase density is p0(x) q(v)). What is bounded is the density of the position at
t_min (x_{t_min} = alpha x0 + sigma eps, as for every process; ``CLD.alpha``, ``sigma``), which tends to p0 as
t_min -> 0. ``log_likelihood_bound`` estimates the bound with K = ``velocities`` draws of v per example and reports
its Monte Carlo standard error (K >= 2). ``scorediff.likelihood.log_likelihood`` calls it on a phase-space process.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..processes.base import Process
from ..utils import batch_time, sum_flat, unknown
from ._ode import NOISES, TRACES, Likelihood, _bar, _check_common, _Dynamics, _probes, _solve

LIKELIHOOD_T_MIN = 1e-5  # the bound's default t_min (gap on ring2d: 0.13 nats at 1e-3, 0.003 at 1e-4, < 1e-4 here)


def phase_velocity(denoiser: Callable[..., Tensor], process, u: Tensor, t, **cond) -> Tensor:
    """du/dt of CLD's probability-flow ODE with x0_hat = D(u, t) (``CLD.pf_ode_velocity``)."""
    tb = batch_time(t, u)
    return process.pf_ode_velocity(u, denoiser(u, tb, **cond), tb)


def phase_log_likelihood(
    denoiser: Callable[..., Tensor], process: Process, u: Tensor, *, trace: str = "exact", probes: int = 1,
    noise: str = "rademacher", rtol: float = 1e-5, atol: float = 1e-5, t_min: float | None = None,
    solver: str = "dopri5", chunk: int = 64, generator: torch.Generator | None = None, cond: dict | None = None,
    progress: bool = False,
) -> Likelihood:
    """log p_{t_min}(u) of phase states u = (x, v) through CLD's probability-flow ODE and its phase-space prior
    N(0, Sigma_{t_max}) (``CLD.phase_prior_logp``); options as ``scorediff.likelihood.log_likelihood``."""
    if not getattr(process, "phase_space", False):
        raise ValueError(f"phase_log_likelihood needs the phase-space process 'cld', got '{process.name}'")
    if trace not in TRACES:
        raise unknown("trace estimator", trace, TRACES)
    if noise not in NOISES:
        raise unknown("probe noise", noise, NOISES)
    if trace == "hutchinson" and int(probes) < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    t_min = _check_common(process, t_min, rtol, atol)
    if not t_min > 0:
        raise ValueError(f"t_min must be > 0 on process '{process.name}' (Sigma_0 is singular), got {t_min:g}")
    pr = _probes(u, trace, int(probes), noise, generator)
    bar = _bar(progress, "log-likelihood bound (CLD)")
    dyn = _Dynamics(denoiser, process, pr, dict(cond or {}), sum_probes=trace == "exact", bar=bar,
                    t_span=(t_min, process.t_max), chunk=int(chunk), velocity=phase_velocity)
    m = 1 if trace == "exact" else pr.shape[0]
    try:
        z, integral = _solve(dyn, (u, torch.zeros(m, u.shape[0], dtype=u.dtype, device=u.device)), t_min,
                             process.t_max, rtol, atol, solver)
    finally:
        if bar is not None:
            bar.close()
    prior = process.phase_prior_logp(z)
    estimates = prior[None] + integral
    stderr = estimates.std(0, unbiased=True) / math.sqrt(m) if trace == "hutchinson" and m >= 2 else None
    return Likelihood(logp=estimates.mean(0), stderr=stderr, nfe=dyn.nfe, prior_logp=prior,
                      delta_logp=integral.mean(0), z=z)


def log_likelihood_bound(
    denoiser: Callable[..., Tensor], process: Process, x: Tensor, *, velocities: int = 1,
    generator: torch.Generator | None = None, cond: dict | None = None, **options,
) -> Likelihood:
    """The lower bound E_{v ~ N(0, gamma M)}[log p_{t_min}(x, v) - log N(v; 0, gamma M)] on log p_{t_min}(x) in nats
    per example (module docstring), from ``velocities`` K draws of v per example (``generator``); ``stderr`` is
    the Monte Carlo standard error over the K draws (K >= 2; with Hutchinson probes it holds their noise too).
    ``options`` go to ``phase_log_likelihood``; t_min defaults to ``LIKELIHOOD_T_MIN`` (below the process's t_min,
    where sampling stops): the bound is on the density of x at t_min."""
    options.setdefault("t_min", None)
    if options["t_min"] is None:  # the bound's gap falls fast with t_min (docs/guides/cld.md): start at 1e-5
        options["t_min"] = min(process.t_min, LIKELIHOOD_T_MIN)
    k = int(velocities)
    if k < 1:
        raise ValueError(f"velocities must be >= 1 draws of v0 per example, got {velocities}")
    b = x.shape[0]
    xr = x.repeat(k, *([1] * (x.ndim - 1)))
    std = process.v0_std()
    v0 = std * torch.randn(xr.shape, generator=generator, dtype=x.dtype, device=x.device)
    cond = {key: (v.repeat(k, *([1] * (v.ndim - 1))) if torch.is_tensor(v) and v.ndim > 0 else v)
            for key, v in dict(cond or {}).items()}
    out = phase_log_likelihood(denoiser, process, process.join(xr, v0), generator=generator, cond=cond, **options)
    d = x[0].numel()
    log_q = -0.5 * sum_flat(v0**2) / std**2 - d * (math.log(std) + 0.5 * math.log(2 * math.pi))
    w = (out.logp - log_q).reshape(k, b)
    stderr = w.std(0, unbiased=True) / math.sqrt(k) if k >= 2 else out.stderr
    return Likelihood(logp=w.mean(0), stderr=stderr, nfe=out.nfe, prior_logp=out.prior_logp,
                      delta_logp=out.delta_logp, z=out.z)
