"""Adaptive probability-flow ODE sampling (Song et al. 2021, Sec. 4.3 and Appendix D.2: the black-box
RK45 solver), with torchdiffeq's Dormand-Prince ``dopri5`` (Dormand & Prince 1980) by default.

dx/dt = f x - g^2 / 2 score = alpha' x0_hat + sigma' eps_hat (``parameterizations.pf_ode_velocity``), finite
at alpha = 0. The solver integrates node to node over ``ts`` so that the hook and the callback run at
every node (``steps=1`` is one uninterrupted integration from ts[0] to ts[-1]); each interval restarts
the step-size control. Onto sigma = 0 (t = 0, where eps_hat = (x - alpha x0_hat) / 0) the last interval
is the denoise-to-zero step. The solver evaluates no x0_hat at the nodes themselves, so the hook and the
callback receive x0_hat = None there (a hook must not rely on it). Evaluations used are counted: the callback payload carries "nfe"
(cumulative), and a dict passed as ``stats`` receives {"nfe": ...}.

``integrate_pf_ode`` is the one place the probability-flow ODE is handed to torchdiffeq: this sampler, and
``scorediff.likelihood`` (the augmented ODE of the log-density, ``data_to_prior``; ``prior_to_data`` is this sampler) use it,
so the edge handling (no evaluation outside the span) is written once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..parameterizations import pf_ode_velocity
from ..processes.base import Process
from ._common import Callback, Denoiser, Grid, Hook, denoise_to_zero, sampler_info

# torchdiffeq's adaptive (embedded) Runge-Kutta methods
METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")


def integrate_pf_ode(
    fn: Callable[[Tensor, Any], Any], state: Any, t0: float, t1: float, *, rtol: float, atol: float,
    method: str = "dopri5",
) -> Any:
    """Integrate dy/dt = fn(t, y) from t0 to t1 (either direction) with torchdiffeq's adaptive ``method``.

    ``state`` is a tensor or a tuple of tensors (e.g. (x, int div) for the likelihood); the value at t1 is
    returned in the same form. Every evaluation stays inside [min(t0, t1), max(t0, t1)], where the process is
    defined: ``first_step`` (1% of the span) skips torchdiffeq's initial probe, which would evaluate beyond t0,
    and ``step_t`` stops steps at t1 instead of overshooting and interpolating back.
    """
    from torchdiffeq import odeint

    if method not in METHODS:
        raise ValueError(f"ode: method {method!r} unknown; one of: {', '.join(METHODS)}")
    x = state[0] if isinstance(state, tuple) else state
    span = torch.tensor([t0, t1], dtype=x.dtype, device=x.device)
    opts = {"first_step": 0.01 * abs(t1 - t0), "step_t": span[1:]}
    out = odeint(fn, state, span, rtol=rtol, atol=atol, method=method, options=opts)
    return tuple(o[-1] for o in out) if isinstance(state, tuple) else out[-1]


@sampler_info(order=5, stochastic=False, nfe_per_step=float("nan"), default_schedule="uniform",
              description="Adaptive probability-flow ODE (torchdiffeq dopri5; Song et al. 2021, Sec. 4.3)")
def sample_ode(
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
    """Integrate the PF-ODE from ts[0] to ts[-1] adaptively (``rtol``, ``atol``, torchdiffeq ``method``)."""
    if method not in METHODS:
        raise ValueError(f"ode: method {method!r} unknown; one of: {', '.join(METHODS)}")
    grid = Grid(process, ts, x)
    nfe = [0]

    def velocity(t: Tensor, y: Tensor) -> Tensor:
        nfe[0] += 1
        return pf_ode_velocity(denoiser, process, y, t.to(y.dtype))

    def report(i: int, x: Tensor, x0_hat: Tensor | None) -> Tensor:
        if hook is not None:
            x = hook(x, grid.tb[i + 1], x0_hat)
        if callback is not None:
            callback({"i": i, "t": grid.t[i + 1], "x": x, "x0_hat": x0_hat, "nfe": nfe[0]})
        return x

    try:
        for i in range(grid.steps):
            if grid.to_zero(i):
                nfe[0] += 1
                x = denoise_to_zero(denoiser, grid, x, hook,
                                    None if callback is None else lambda d: callback({**d, "nfe": nfe[0]}))
                break
            x = integrate_pf_ode(velocity, x, grid.t[i], grid.t[i + 1], rtol=rtol, atol=atol, method=method)
            x = report(i, x, None)
    finally:
        if stats is not None:
            stats["nfe"] = nfe[0]
    return x
