"""Noise schedules of discrete diffusion: how much of the token survives by time t.

SEDD (Lou, Meng & Ermon 2024, "Discrete Diffusion Modeling by Estimating the Ratios of the Data Distribution")
keeps the noise schedule apart from the transition graph: the forward chain runs at rate sigma(t) along a fixed
generator Q, so its transition kernel over [0, t] is exp(sigma_bar(t) Q), sigma_bar(t) = int_0^t sigma. Here every
schedule is written through

    alpha(t) = exp(-sigma_bar(t)),   the probability that a token has not jumped by time t (MDLM's alpha_t),

and its derivative ``dalpha(t)`` (<= 0), from which sigma(t) = -alpha'(t) / alpha(t). MDLM (Sahoo et al. 2024,
"Simple and Effective Masked Diffusion Language Models") writes its ELBO with alpha and alpha' alone, which stays
finite where alpha(1) = 0 (a fully masked sequence at t = 1) although sigma(1) is infinite there.

==========  ============================================================  ===========================
name        alpha(t)                                                      alpha(1)
==========  ============================================================  ===========================
loglinear   1 - (1 - eps) t          (sigma_bar = -log(1 - (1-eps) t))  eps (default 0: MDLM, SEDD)
geometric   exp(-(s_min^(1-t) s_max^t - s_min))                           exp(-(s_max - s_min))
cosine      eps + (1 - eps) cos(pi t / 2)                                 eps (default 0)
==========  ============================================================  ===========================

Every schedule has alpha(0) = 1 exactly (the data at t = 0), so a bound computed over [0, 1] is a bound on the data
itself; SEDD's geometric sigma_bar is shifted by s_min for that reason. ``t_of_alpha`` inverts alpha (the
first-hitting sampler draws the next unmasking time through it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..utils import check_options, unknown


@dataclass(frozen=True)
class Schedule:
    """alpha(t) = exp(-sigma_bar(t)) on t in [0, 1], its derivative, and its inverse."""

    name: str

    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def dalpha(self, t: Tensor) -> Tensor:
        """d alpha / dt (<= 0)."""
        raise NotImplementedError

    def t_of_alpha(self, alpha: Tensor) -> Tensor:
        raise NotImplementedError

    def sigma_bar(self, t: Tensor) -> Tensor:
        """The total noise int_0^t sigma(s) ds = -log alpha(t)."""
        return -torch.log(self.alpha(t))

    def sigma(self, t: Tensor) -> Tensor:
        """The rate sigma(t) = -alpha'(t) / alpha(t) (infinite where alpha = 0)."""
        return -self.dalpha(t) / self.alpha(t)

    def config(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class LogLinear(Schedule):
    """alpha(t) = 1 - (1 - eps) t: SEDD's log-linear sigma_bar(t) = -log(1 - (1 - eps) t) and MDLM's linear alpha."""

    name: str = "loglinear"
    eps: float = 0.0

    def alpha(self, t: Tensor) -> Tensor:
        return 1 - (1 - self.eps) * t

    def dalpha(self, t: Tensor) -> Tensor:
        return torch.full_like(t, -(1 - self.eps))

    def t_of_alpha(self, alpha: Tensor) -> Tensor:
        return (1 - alpha) / (1 - self.eps)


@dataclass(frozen=True)
class Geometric(Schedule):
    """SEDD's geometric schedule, shifted to start at 0: sigma_bar(t) = s_min^(1-t) s_max^t - s_min."""

    name: str = "geometric"
    sigma_min: float = 1e-3
    sigma_max: float = 20.0

    def _sb(self, t: Tensor) -> Tensor:
        return self.sigma_min ** (1 - t) * self.sigma_max ** t

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(-(self._sb(t) - self.sigma_min))

    def dalpha(self, t: Tensor) -> Tensor:
        return -self.alpha(t) * self._sb(t) * math.log(self.sigma_max / self.sigma_min)

    def t_of_alpha(self, alpha: Tensor) -> Tensor:
        sb = -torch.log(alpha) + self.sigma_min
        return torch.log(sb / self.sigma_min) / math.log(self.sigma_max / self.sigma_min)


@dataclass(frozen=True)
class Cosine(Schedule):
    """alpha(t) = eps + (1 - eps) cos(pi t / 2) (the cosine masking schedule of MaskGIT / MDLM's ablations)."""

    name: str = "cosine"
    eps: float = 0.0

    def alpha(self, t: Tensor) -> Tensor:
        # cos(pi / 2) is 6e-17 in floating point: clamp so that alpha(1) = eps exactly
        return self.eps + (1 - self.eps) * torch.cos(0.5 * math.pi * t).clamp_min(0.0) * (t < 1)

    def dalpha(self, t: Tensor) -> Tensor:
        return -(1 - self.eps) * 0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def t_of_alpha(self, alpha: Tensor) -> Tensor:
        return torch.arccos(((alpha - self.eps) / (1 - self.eps)).clamp(0, 1)) * (2 / math.pi)


SCHEDULES: dict[str, type[Schedule]] = {"loglinear": LogLinear, "geometric": Geometric, "cosine": Cosine}


def make_schedule(name: str, **options: float) -> Schedule:
    """The schedule ``name`` (loglinear, geometric, cosine) with its options (eps; sigma_min, sigma_max)."""
    if name not in SCHEDULES:
        raise unknown("discrete noise schedule", name, SCHEDULES)

    cls = SCHEDULES[name]
    check_options(f"schedule {name!r}", options, [k for k in cls.__dataclass_fields__ if k != "name"])
    s = cls(**{k: float(v) for k, v in options.items()})
    if name in ("loglinear", "cosine") and not 0 <= s.eps < 1:
        raise ValueError(f"schedule {name!r}: eps must lie in [0, 1), got {s.eps}")
    if name == "geometric" and not 0 < s.sigma_min < s.sigma_max:
        raise ValueError(f"schedule 'geometric' needs 0 < sigma_min < sigma_max, got {s.sigma_min}, {s.sigma_max}")
    return s
