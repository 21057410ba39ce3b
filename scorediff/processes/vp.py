"""Variance-preserving processes: continuous VP (linear and cosine beta), sub-VP, and discrete DDPM.

VP (Song et al. 2021, eq. 11 and Appendix B): beta(t) = beta_min + t (beta_max - beta_min),
    alpha(t) = exp(-B(t) / 2),  B(t) = int_0^t beta = beta_min t + t^2 (beta_max - beta_min) / 2,
    sigma(t) = sqrt(1 - alpha^2).
Cosine (Nichol & Dhariwal 2021, eq. 17): alpha_bar(t) = cos^2((t+s)/(1+s) pi/2) / cos^2(s/(1+s) pi/2),
    alpha = sqrt(alpha_bar); at t = 1, alpha = 0 and the prior is exactly N(0, I).
sub-VP (Song et al. 2021, eq. 12): same alpha as VP, sigma(t) = 1 - alpha(t)^2.
DDPM (Ho et al. 2020): T discrete steps with beta_1..beta_T, alpha_bar_i = prod_{j<=i} (1 - beta_j),
    step i sits at t = i / T. Between grid points log alpha_bar is interpolated *linearly in t*
    (as DPM-Solver's discrete noise schedule does), so alpha(t) is exact on the grid, continuous,
    and has a piecewise-constant d log alpha / dt = (T/2) log(1 - beta_i) on ((i-1)/T, i/T].
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..utils import append_dims
from .base import Process, posterior_coefficients


class _VPFamily(Process):
    """A process whose alpha is given through log alpha_bar(t) = 2 log alpha(t)."""

    def _log_abar(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def _d_log_abar(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def _t_of_log_abar(self, la: Tensor) -> Tensor:
        raise NotImplementedError

    def _alpha(self, t):
        return torch.exp(0.5 * self._log_abar(t))

    def _d_alpha(self, t):
        return 0.5 * self._d_log_abar(t) * self._alpha(t)

    def _sigma(self, t):
        return torch.sqrt(-torch.expm1(self._log_abar(t)))

    def _d_sigma(self, t):
        # sigma^2 = 1 - abar  =>  2 sigma dsigma = -abar d log abar
        return -torch.exp(self._log_abar(t)) * self._d_log_abar(t) / (2 * self._sigma(t))

    def _log_snr(self, t):
        la = self._log_abar(t)
        return 0.5 * la - 0.5 * torch.log(-torch.expm1(la))

    def _t_of_log_snr(self, lam):
        # abar = 1 / (1 + exp(-2 lam))
        return self._t_of_log_abar(-torch.nn.functional.softplus(-2 * lam))


class VPLinear(_VPFamily):
    """Continuous VP SDE with linear beta(t) (Song et al. 2021); the DDPM limit for T -> infinity."""

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-5, schedule: str = "linear"):
        if not (0 < beta_min < beta_max):
            raise ValueError(f"vp: need 0 < beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}")
        if schedule != "linear":
            raise ValueError(f"vp: schedule {schedule!r} unknown; one of: linear, cosine")
        self.beta_min, self.beta_max, self.t_min = float(beta_min), float(beta_max), float(t_min)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _log_abar(self, t):
        return -(self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min))

    def _d_log_abar(self, t):
        return -self.beta(t)

    def _t_of_log_abar(self, la):
        b = -la
        db = self.beta_max - self.beta_min
        return 2 * b / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * db * b))

    def config(self):
        return {"name": self.name, "schedule": "linear", "beta_min": self.beta_min, "beta_max": self.beta_max, "t_min": self.t_min}


class VPCosine(_VPFamily):
    """Continuous VP with the cosine schedule of Nichol & Dhariwal (2021); alpha(1) = 0."""

    name = "vp"

    def __init__(self, s: float = 0.008, t_min: float = 1e-5):
        self.s, self.t_min = float(s), float(t_min)
        self._c = math.pi / 2 / (1 + self.s)
        self._log_cos0 = math.log(math.cos(self.s * self._c))

    def _phase(self, t):
        return (t + self.s) * self._c

    def _alpha(self, t):
        return torch.cos(self._phase(t)).clamp_min(0) / math.exp(self._log_cos0)

    def _d_alpha(self, t):
        return -self._c * torch.sin(self._phase(t)) / math.exp(self._log_cos0)

    def _log_abar(self, t):
        return 2 * (torch.log(torch.cos(self._phase(t)).clamp_min(1e-30)) - self._log_cos0)

    def _d_log_abar(self, t):
        return -2 * self._c * torch.tan(self._phase(t))

    def _sigma(self, t):
        return torch.sqrt((1 - self._alpha(t) ** 2).clamp_min(0))

    def _d_sigma(self, t):
        return -self._alpha(t) * self._d_alpha(t) / self._sigma(t)

    def _log_snr(self, t):
        return torch.log(self._alpha(t)) - torch.log(self._sigma(t))

    def _t_of_log_abar(self, la):
        cos = torch.exp(0.5 * la + self._log_cos0).clamp(max=1.0)
        return torch.acos(cos) / self._c - self.s

    def config(self):
        return {"name": self.name, "schedule": "cosine", "s": self.s, "t_min": self.t_min}


class SubVP(VPLinear):
    """sub-VP SDE (Song et al. 2021, eq. 12): alpha as VP, sigma = 1 - alpha^2 (its variance is below VP's)."""

    name = "sub-vp"

    def _sigma(self, t):
        return -torch.expm1(self._log_abar(t))

    def _d_sigma(self, t):
        return -torch.exp(self._log_abar(t)) * self._d_log_abar(t)

    def _log_snr(self, t):
        la = self._log_abar(t)
        return 0.5 * la - torch.log(-torch.expm1(la))

    def _t_of_log_snr(self, lam):
        # alpha / (1 - alpha^2) = e^lam  =>  alpha = 2u / (1 + sqrt(1 + 4u^2)), u = e^lam
        u = torch.exp(lam)
        alpha = 2 * u / (1 + torch.sqrt(1 + 4 * u**2))
        return self._t_of_log_abar(2 * torch.log(alpha))

    def config(self):
        c = super().config()
        c["name"] = self.name
        del c["schedule"]
        return c


def linear_betas(steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """DDPM's linear beta schedule (Ho et al. 2020, Sec. 4), rescaled so that 1000 steps give 1e-4..0.02."""
    scale = 1000.0 / steps
    return torch.linspace(scale * beta_start, scale * beta_end, steps, dtype=torch.float64)


def scaled_linear_betas(steps: int, beta_start: float = 0.00085, beta_end: float = 0.012, rescale: bool = True) -> Tensor:
    """Latent diffusion's "scaled linear" schedule (Rombach et al. 2022; diffusers' ``scaled_linear``):
    sqrt(beta) linear from sqrt(beta_start) to sqrt(beta_end). ``rescale`` scales both ends by 1000 / steps
    as ``linear_betas`` does (a no-op at 1000 steps); diffusers does not rescale."""
    scale = 1000.0 / steps if rescale else 1.0
    return torch.linspace(math.sqrt(scale * beta_start), math.sqrt(scale * beta_end), steps, dtype=torch.float64) ** 2


def cosine_betas(steps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal (2021) eq. 17: beta_i = min(1 - abar(i/T) / abar((i-1)/T), max_beta)."""
    i = torch.arange(steps + 1, dtype=torch.float64)
    f = torch.cos((i / steps + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


class VPDiscrete(_VPFamily):
    """DDPM (Ho et al. 2020): T discrete steps; step i in 1..T sits at t = i / T.

    Options: ``steps`` T (1000), ``schedule`` "linear" (beta 1e-4 -> 0.02), "scaled_linear" (sqrt(beta)
    linear between ``beta_start`` and ``beta_end``, latent diffusion's schedule) or "cosine" (Nichol & Dhariwal,
    with beta clipped at 0.999), or an explicit ``betas`` list (e.g. a diffusers scheduler's ``trained_betas``). ``alpha_bar`` holds the exact
    cumulative products on the grid; see the module docstring for the interpolation in between.
    """

    name = "vp-discrete"

    def __init__(
        self,
        steps: int = 1000,
        schedule: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        betas: list[float] | Tensor | None = None,
        t_min: float | None = None,
    ):
        if betas is not None:
            betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
            steps = len(betas)
            schedule = "custom"
        elif int(steps) < 1:
            raise ValueError(f"vp-discrete: steps must be >= 1, got {steps}")
        elif schedule == "linear":
            betas = linear_betas(int(steps), beta_start, beta_end)
        elif schedule == "scaled_linear":
            betas = scaled_linear_betas(int(steps), beta_start, beta_end)
        elif schedule == "cosine":
            betas = cosine_betas(int(steps))
        else:
            raise ValueError(
                f"vp-discrete: schedule {schedule!r} unknown; one of: linear, scaled_linear, cosine (or pass betas=)"
            )
        if not bool(((betas > 0) & (betas < 1)).all()):
            bad = betas[~((betas > 0) & (betas < 1))][0].item()
            raise ValueError(
                f"vp-discrete: every beta must lie in (0, 1) so that alpha_bar decreases strictly; got beta={bad:g}"
            )
        self.steps = int(steps)
        self.schedule = schedule
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        self.betas = betas
        self.alpha_bar = torch.cumprod(1 - betas, 0)  # alpha_bar_i, i = 1..T
        # log alpha_bar on the grid t_i = i/T, i = 0..T (alpha_bar_0 = 1)
        self._grid_log_abar = torch.cat([torch.zeros(1, dtype=torch.float64), torch.log(self.alpha_bar)])
        self._slopes = torch.log1p(-betas) * self.steps  # d log abar / dt on ((i-1)/T, i/T]
        self.t_min = float(t_min) if t_min is not None else 1.0 / self.steps

    # piecewise-linear log alpha_bar -------------------------------------------------------------
    def _interval(self, t: Tensor) -> Tensor:
        """Index i-1 of the interval ((i-1)/T, i/T] holding t (t = 0 maps to the first interval)."""
        k = torch.ceil(t * self.steps).long() - 1
        return k.clamp(0, self.steps - 1)

    def _log_abar(self, t):
        k = self._interval(t)
        grid = self._grid_log_abar.to(t.device)
        slope = self._slopes.to(t.device)[k]
        out = grid[k] + slope * (t.double() - k.double() / self.steps)
        return out.to(t.dtype)

    def _d_log_abar(self, t):
        return self._slopes.to(t.device)[self._interval(t)].to(t.dtype)

    def _t_of_log_abar(self, la):
        grid = self._grid_log_abar.to(la.device)
        neg = (-grid).contiguous()  # increasing
        k = torch.searchsorted(neg, (-la.double()).contiguous()).clamp(1, self.steps) - 1
        t = k.double() / self.steps + (la.double() - grid[k]) / self._slopes.to(la.device)[k]
        return t.to(la.dtype)

    # DDPM helpers ---------------------------------------------------------------------------------
    def posterior(self, x0: Tensor, x_t: Tensor, i: Tensor | int) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_{i-1} | x_i, x0) (Ho et al. 2020, eqs. 6-7); i in 1..T, scalar or (B,).

        mean = sqrt(abar_{i-1}) beta_i / (1 - abar_i) x0 + sqrt(1 - beta_i)(1 - abar_{i-1}) / (1 - abar_i) x_t,
        variance beta_tilde_i = (1 - abar_{i-1}) / (1 - abar_i) beta_i  (0 for i = 1).
        """
        i = torch.as_tensor(i, device=x_t.device).long()
        if (i < 1).any() or (i > self.steps).any():
            raise ValueError(f"vp-discrete: step i must lie in 1..{self.steps}, got {i.tolist()}")
        return self._posterior(x0, x_t, i)

    def _posterior(self, x0: Tensor, x_t: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
        """``posterior`` for a (B,) or scalar long tensor i already in 1..T (no host synchronisation)."""
        abar = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar]).to(x_t.device)
        ab_t, ab_prev = abar[i], abar[i - 1]
        # alpha = sqrt(abar), sigma = sqrt(1 - abar) at steps i and i - 1: the general posterior
        c0, ct, var, _, _ = posterior_coefficients(ab_t.sqrt(), (1 - ab_t).sqrt(), ab_prev.sqrt(), (1 - ab_prev).sqrt())
        c0, ct, var = (append_dims(v.to(x_t.dtype), x_t.ndim) for v in (c0, ct, var))  # var broadcasts
        return c0 * x0 + ct * x_t, var

    def config(self):
        c = {"name": self.name, "steps": self.steps, "t_min": self.t_min}
        if self.schedule == "custom":
            c["betas"] = self.betas.tolist()
        else:
            c["schedule"] = self.schedule
            if self.schedule in ("linear", "scaled_linear"):
                c.update(beta_start=self.beta_start, beta_end=self.beta_end)
        return c
