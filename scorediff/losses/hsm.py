"""Hybrid score matching (HSM) for critically-damped Langevin diffusion (the loss "hsm").

Dockhorn, Vahdat & Kreis 2022, Sec. 3.2 and eq. 11: the data start with a fresh velocity v0 ~ N(0, gamma M), which
is integrated out analytically, so the regression is on the score of the kernel p(u_t | x0) (``processes.cld``)
rather than of p(u_t | x0, v0). Only the velocity score enters CLD's reverse SDE and probability-flow ODE, so
only it is learned: with u_t = m_t x0 + L_t eps, eps ~ N(0, I) in phase space,
    grad_v log p(u_t | x0) = -eps_v / ell_t,
and with the paper's weighting lambda(t) = ell_t^2 and output s_theta = -alpha_theta / ell_t the loss is
    E_{t ~ U[t_min, t_max], x0, eps} || alpha_theta(u_t, t) - eps_v ||^2
(eps prediction of the velocity noise; ``parameterizations.CLDParam`` reads the network, with the mixed score).
Averaged over the data dimensions per example, like "dsm".
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..parameterizations import CLDParam, Parameterization
from ..processes.base import Process
from ..utils import mean_flat
from .base import Loss

HSM_WEIGHTINGS = ("simple",)  # lambda(t) = ell_t^2: unit weight on eps_v (the paper's choice for sampling quality)


class HSMLoss(Loss):
    """Hybrid score matching on the phase-space process "cld" (see the module docstring).

    Options: ``weighting`` "simple" (the only one), ``time_sampling`` "uniform" (the only one), ``t_min``,
    ``t_max`` (default the process's).
    """

    name = "hsm"

    def __init__(self, process: Process, param: Parameterization, weighting: str = "simple",
                 time_sampling: str = "uniform", t_min: float | None = None, t_max: float | None = None):
        super().__init__(process, param)
        if not getattr(process, "phase_space", False):
            raise ValueError(f"loss 'hsm' needs the phase-space process 'cld', got '{process.name}'")
        if not isinstance(param, CLDParam):
            raise ValueError(f"loss 'hsm' needs parameterization 'cld', got '{param.name}'")
        if weighting not in HSM_WEIGHTINGS:
            raise ValueError(f"hsm: weighting {weighting!r} unknown; one of: {', '.join(HSM_WEIGHTINGS)}")
        if time_sampling != "uniform":
            raise ValueError(f"hsm: time_sampling {time_sampling!r} unknown; one of: uniform")
        lo = process.t_min if t_min is None else float(t_min)
        hi = process.t_max if t_max is None else float(t_max)
        if not 0 < lo < hi <= process.t_max:
            raise ValueError(f"hsm: need 0 < t_min < t_max <= {process.t_max:g}, got t_min={lo:g}, t_max={hi:g}")
        self.t_lo, self.t_hi, self._user_range = lo, hi, (t_min, t_max)

    def options(self) -> dict:
        opts = {"weighting": "simple", "time_sampling": "uniform"}
        if self._user_range[0] is not None:
            opts["t_min"] = self.t_lo
        if self._user_range[1] is not None:
            opts["t_max"] = self.t_hi
        return opts

    def __call__(self, model, x0: Tensor, generator: torch.Generator | None = None, t: Tensor | None = None,
                 **cond) -> Tensor:
        """Per-example loss (B,); ``t`` (optional) fixes the times."""
        p, b = self.process, x0.shape[0]
        if t is None:
            u = torch.rand(b, generator=generator, device=x0.device, dtype=torch.float64)
            t = self.t_lo + (self.t_hi - self.t_lo) * u
        t = torch.as_tensor(t, dtype=torch.float64, device=x0.device).expand(b).to(x0.dtype)
        eps = torch.randn((b, *p.state_shape(tuple(x0.shape[1:]))), generator=generator, device=x0.device,
                          dtype=x0.dtype)
        u_t = p.phase_marginal(x0, t, eps)
        raw = model.raw(u_t, t, **cond)
        return mean_flat((self.param.output(raw, p) - self.param.target(x0, eps, u_t, t, p)) ** 2)
