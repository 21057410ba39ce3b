"""Denoising score matching under every weighting and time sampling (the loss "dsm").

Denoising score matching (Vincent 2011; Ho et al. 2020; Song et al. 2021; Karras et al. 2022): draw
t ~ p(t), eps ~ N(0, I), x_t = alpha(t) x0 + sigma(t) eps, and regress the network's raw output
F = ``model.raw(x_t, t)`` on the parameterization's target (``param.target``). Every weighting is
stated once on the x0 scale, w_x0(t) ||x0_hat - x0||^2, and moved onto the raw output by
``param.x0_weight`` (||F - target||^2 = x0_weight ||x0_hat - x0||^2), so the same weighting means
the same objective whatever the network predicts:

============  ===========================================  =====================================
weighting     w_x0(t)                                      reference
============  ===========================================  =====================================
simple        SNR = alpha^2 / sigma^2 (unit weight on eps)  Ho et al. 2020, L_simple
elbo          -(1/2) d SNR/dt / p(t)  (nats)                Kingma et al. 2021 (VDM), eq. 17
likelihood    g^2 alpha^2 / sigma^4 / p(t)  = 2 x elbo      Song et al. 2021 (ML training), lambda = g^2
min_snr       min(SNR, gamma)                               Hang et al. 2023 (min-SNR-gamma)
edm           (s~^2 + s_d^2) / (s~ s_d)^2, s~ = sigma/alpha  Karras et al. 2022, eq. 8 / Table 1
ncsn          sigma^2 on the score = SNR                   Song & Ermon 2019 (same as simple)
none          (plain MSE on the raw output)                -
============  ===========================================  =====================================

"elbo" and "likelihood" are integrals over t, so their per-sample weight is divided by the density
p(t) of the time sampling (a Monte Carlo estimate of the integral whatever p is); the others are
expectations over p(t) as their papers define them. Reduction: the squared error is *averaged* over
all but the batch dimension, so a loss is per dimension (for "elbo": nats per dimension of the
diffusion term of the bound).

Time sampling: "uniform" (continuous in [t_min, t_max]), "discrete" (t = i/T, i ~ U{1..T}, vp-discrete
only), "lognormal" (EDM: ln sigma~ ~ N(P_mean, P_std^2), t = t_of_log_snr(-ln sigma~)), "importance"
(density proportional to g^2 / sigma^2 = -2 d lambda/dt, sampled exactly by inverting lambda: the
per-sample likelihood weight becomes 2 (lambda(t_lo) - lambda(t_hi)) SNR, i.e. constant on the eps
scale), "levels" (uniform over NCSN's discrete sigma levels of a VE process built with ``levels``).

Where alpha(t_max) = 0 (flow, cosine VP) sampled times stop at t_max (1 - 1e-4), where alpha is
about 1e-4, so that weights such as SNR / x0_weight stay finite; the part of any bound beyond is O(alpha^2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..couplings import check_coupling, couple
from ..parameterizations import ConsistencyParam, EDMPrecond, Parameterization
from ..processes.base import Process
from ..processes.vp import VPDiscrete
from ..utils import mean_flat, unknown
from .base import Loss

WEIGHTINGS = ("simple", "elbo", "likelihood", "min_snr", "edm", "ncsn", "none")
TIME_SAMPLINGS = ("uniform", "discrete", "lognormal", "importance", "levels")
_INTEGRAL_WEIGHTINGS = ("elbo", "likelihood")  # weights of an integral over t: divided by p(t)



def _t_hi(process: Process) -> float:
    """The largest time a loss samples: t_max, or just below it where alpha(t_max) = 0."""
    a = float(process._alpha(torch.tensor(process.t_max, dtype=torch.float64)))
    return process.t_max * (1 - 1e-4) if a < 1e-6 else process.t_max


def _d_log_snr(process: Process, t: Tensor) -> Tensor:
    """d lambda / dt = alpha'/alpha - sigma'/sigma (negative)."""
    return process._d_alpha(t) / process._alpha(t) - process._d_sigma(t) / process._sigma(t)


class DSMLoss(Loss):
    """Denoising score matching with a weighting and a time sampling (see the module docstring).

    Options:
        weighting: one of ``WEIGHTINGS`` (default "simple").
        time_sampling: one of ``TIME_SAMPLINGS``; default "discrete" for vp-discrete, "lognormal" for
            the edm weighting, "levels" for a VE process with levels, else "uniform".
        importance: True is a synonym of time_sampling="importance" (Song et al. 2021's variance reduction).
        gamma: min-SNR's gamma (5).
        sigma_data: EDM's sigma_data (default: the parameterization's, else 0.5).
        P_mean, P_std: EDM's log-normal (-1.2, 1.2).
        t_min, t_max: the range of continuous time sampling (default the process's t_min and t_max).
        coupling: how noise pairs with data in a batch (``scorediff.couplings``): "independent" (default), "ot"
            (exact minibatch optimal transport) or "ot-sinkhorn" (entropic, ``sinkhorn_reg`` times the mean cost,
            ``sinkhorn_iters`` iterations); the last two on the flow process (flow matching), sampled with the
            deterministic (probability-flow) samplers, since x_t given x0 is then no longer N(alpha x0, sigma^2).
    """

    name = "dsm"

    def __init__(
        self,
        process: Process,
        param: Parameterization,
        weighting: str = "simple",
        time_sampling: str | None = None,
        importance: bool = False,
        gamma: float = 5.0,
        sigma_data: float | None = None,
        P_mean: float = -1.2,
        P_std: float = 1.2,
        t_min: float | None = None,
        t_max: float | None = None,
        coupling: str = "independent",
        sinkhorn_reg: float = 0.05,
        sinkhorn_iters: int = 200,
    ):
        super().__init__(process, param)
        check_coupling(coupling, process.name, sinkhorn_reg, sinkhorn_iters)
        self.coupling, self.sinkhorn_reg, self.sinkhorn_iters = coupling, float(sinkhorn_reg), int(sinkhorn_iters)
        if weighting not in WEIGHTINGS:
            raise unknown("weighting", weighting, WEIGHTINGS)
        if importance:
            if time_sampling not in (None, "importance"):
                raise ValueError(f"dsm: importance=True conflicts with time_sampling={time_sampling!r}")
            time_sampling = "importance"
        if time_sampling is None:
            if isinstance(process, VPDiscrete):
                time_sampling = "discrete"
            elif weighting == "edm":
                time_sampling = "lognormal"
            elif getattr(process, "levels", None) is not None:
                time_sampling = "levels"
            else:
                time_sampling = "uniform"
        if time_sampling not in TIME_SAMPLINGS:
            raise unknown("time sampling", time_sampling, TIME_SAMPLINGS)
        if time_sampling == "discrete" and not isinstance(process, VPDiscrete):
            raise ValueError(f"dsm: time_sampling 'discrete' needs a vp-discrete process, got '{process.name}'")
        if time_sampling == "levels" and getattr(process, "levels", None) is None:
            raise ValueError(f"dsm: time_sampling 'levels' needs a VE process built with levels=L, got {process!r}")
        if isinstance(param, ConsistencyParam) and time_sampling in ("discrete", "levels"):
            raise ValueError(
                f"dsm: the consistency parameterization has c_out(t_min) = 0, so its target is undefined at the grid "
                f"time t_min that time_sampling {time_sampling!r} hits; use 'uniform', 'lognormal' or 'importance'"
            )
        if gamma <= 0:
            raise ValueError(f"dsm: min-SNR gamma must be > 0, got {gamma}")
        if P_std <= 0:
            raise ValueError(f"dsm: P_std must be > 0, got {P_std}")
        if sigma_data is None:
            sigma_data = param.sigma_data if isinstance(param, EDMPrecond) else 0.5
        if sigma_data <= 0:
            raise ValueError(f"dsm: sigma_data must be > 0, got {sigma_data}")
        lo = process.t_min if t_min is None else float(t_min)
        hi = _t_hi(process) if t_max is None else float(t_max)
        if not (0 <= lo < hi <= process.t_max):
            raise ValueError(
                f"dsm: need 0 <= t_min < t_max <= {process.t_max:g} for process '{process.name}', got t_min={lo:g}, t_max={hi:g}"
            )
        self.weighting, self.time_sampling = weighting, time_sampling
        self.gamma, self.sigma_data = float(gamma), float(sigma_data)
        self.P_mean, self.P_std = float(P_mean), float(P_std)
        self.t_lo, self.t_hi = lo, hi
        self._user_range = (t_min, t_max)
        t = torch.tensor([lo, hi], dtype=torch.float64)
        self._lam_lo, self._lam_hi = (float(v) for v in process._log_snr(t))

    def options(self) -> dict:
        opts = {"weighting": self.weighting, "time_sampling": self.time_sampling}
        if self.weighting == "min_snr":
            opts["gamma"] = self.gamma
        if self.weighting == "edm" or self.time_sampling == "lognormal":
            opts.update(sigma_data=self.sigma_data, P_mean=self.P_mean, P_std=self.P_std)
        if self._user_range[0] is not None:
            opts["t_min"] = self.t_lo
        if self._user_range[1] is not None:
            opts["t_max"] = self.t_hi
        if self.coupling != "independent":
            opts["coupling"] = self.coupling
        if self.coupling == "ot-sinkhorn":
            opts.update(sinkhorn_reg=self.sinkhorn_reg, sinkhorn_iters=self.sinkhorn_iters)
        return opts

    # -- time sampling -----------------------------------------------------------------------------
    def sample_t(self, n: int, generator: torch.Generator | None = None, device=None, dtype=torch.float64) -> Tensor:
        """n times from this loss's time distribution (float64 computation, returned in ``dtype``)."""
        p = self.process
        if self.time_sampling == "discrete":
            i = torch.randint(1, p.steps + 1, (n,), generator=generator, device=device)
            t = i.to(torch.float64) / p.steps
        elif self.time_sampling == "levels":
            lt = p.level_times.to(device)
            t = lt[torch.randint(0, len(lt), (n,), generator=generator, device=device)]
        else:
            u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
            if self.time_sampling == "uniform":
                t = self.t_lo + (self.t_hi - self.t_lo) * u
            elif self.time_sampling == "importance":
                # CDF of the density -lambda'(t) / (lambda_lo - lambda_hi) is (lambda_lo - lambda(t)) / (...)
                t = p.t_of_log_snr(self._lam_lo + u * (self._lam_hi - self._lam_lo))
            else:  # lognormal: ln sigma~ ~ N(P_mean, P_std^2), lambda = -ln sigma~
                z = torch.randn(n, generator=generator, device=device, dtype=torch.float64)
                t = p.t_of_log_snr(-(self.P_mean + self.P_std * z))
            t = t.clamp(self.t_lo, self.t_hi)
        return t.to(dtype)

    def density(self, t: Tensor) -> Tensor:
        """p(t) of the time sampling (float64). For "discrete" and "levels" 1/t_max: their sum over the grid
        is read as a Riemann sum of the integral over [0, t_max]. The log-normal's clamping at the ends is ignored."""
        t = t.to(torch.float64)
        if self.time_sampling == "uniform":
            return torch.full_like(t, 1.0 / (self.t_hi - self.t_lo))
        if self.time_sampling in ("discrete", "levels"):
            return torch.full_like(t, 1.0 / self.process.t_max)
        dlam = _d_log_snr(self.process, t)
        if self.time_sampling == "importance":
            return -dlam / (self._lam_lo - self._lam_hi)
        z = (-self.process._log_snr(t) - self.P_mean) / self.P_std
        return torch.exp(-0.5 * z**2) / (self.P_std * math.sqrt(2 * math.pi)) * (-dlam)

    # -- weights -----------------------------------------------------------------------------------
    def x0_weight(self, t: Tensor) -> Tensor:
        """w_x0(t) of the weighting, divided by p(t) for the integral weightings (float64, shape of t)."""
        p, t = self.process, t.to(torch.float64)
        a, s = p._alpha(t), p._sigma(t)
        snr = (a / s) ** 2
        w = self.weighting
        if w in ("simple", "ncsn"):
            return snr
        if w == "min_snr":
            return snr.clamp(max=self.gamma)
        if w == "edm":
            st, sd = s / a, self.sigma_data
            return (st**2 + sd**2) / (st * sd) ** 2
        if self.time_sampling == "importance":
            # w / p with p = -lambda' / (lam_lo - lam_hi) and w = -lambda' SNR (elbo): no 0/0 near alpha = 0
            w_over_p = (self._lam_lo - self._lam_hi) * snr
        else:
            da, ds = p._d_alpha(t), p._d_sigma(t)
            elbo = a * (a * ds - da * s) / s**3  # -(1/2) d SNR / dt = -lambda' SNR
            w_over_p = elbo / self.density(t)
        return w_over_p if w == "elbo" else 2 * w_over_p  # likelihood weighting g^2 = 2 x the ELBO's

    def raw_weight(self, t: Tensor) -> Tensor:
        """The per-example weight on mean((F - target)^2): w_x0(t) / param.x0_weight (float64, shape (B,))."""
        if self.weighting == "none":
            return torch.ones_like(t, dtype=torch.float64)
        t64 = t.to(torch.float64)
        probe = torch.zeros(t.shape[0], 1, dtype=torch.float64, device=t.device)
        xw = self.param.x0_weight(probe, t64, self.process)
        xw = xw.reshape(-1) if xw.numel() == t.shape[0] else xw.reshape(()).expand(t.shape[0])
        return self.x0_weight(t64) / xw

    # -- the loss ----------------------------------------------------------------------------------
    def __call__(self, model, x0: Tensor, generator: torch.Generator | None = None, t: Tensor | None = None, **cond) -> Tensor:
        """Per-example loss (B,). ``t`` (optional, (B,) or scalar) fixes the times instead of sampling them."""
        b = x0.shape[0]
        if t is None:
            t = self.sample_t(b, generator, device=x0.device)
        else:
            t = torch.as_tensor(t, dtype=torch.float64, device=x0.device).expand(b)
            if torch.isnan(t).any() or (t < self.t_lo).any() or (t > self.t_hi).any():
                raise ValueError(
                    f"dsm: t must lie in [{self.t_lo:g}, {self.t_hi:g}], got values in [{float(t.min()):g}, {float(t.max()):g}]"
                )
        weight = self.raw_weight(t).to(x0.dtype)
        t = t.to(x0.dtype)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        eps = couple(self.coupling, x0, eps, generator, reg=self.sinkhorn_reg, iters=self.sinkhorn_iters)
        x_t = self.process._marginal(x0, t, eps)  # t was sampled or checked above
        target = self.param.target(x0, eps, x_t, t, self.process)
        raw = model.raw(x_t, t, **cond)
        return weight * mean_flat((raw - target) ** 2)
