"""Variance-exploding processes: VE SDE (NCSN++), EDM, and rectified flow.

VE (Song et al. 2021, eq. 9 and Appendix C): alpha = 1, sigma(t) = sigma_min (sigma_max / sigma_min)^t,
    so g^2 = d sigma^2 / dt = 2 sigma^2 log(sigma_max / sigma_min). As in score_sde, sigma(0) = sigma_min:
    t_min = 0 is where sampling stops. With ``levels=L`` the process also carries NCSN's discrete
    geometric noise levels sigma_1 > ... > sigma_L (Song & Ermon 2019) as ``sigma_levels`` and their times.
EDM (Karras et al. 2022): alpha = 1, sigma = t; time *is* sigma, from sigma_min (0.002) to sigma_max (80).
Rectified flow (Liu et al. 2022; Lipman et al. 2022): alpha = 1 - t, sigma = t.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Process


class VE(Process):
    """VE SDE with geometric sigma from sigma_min to sigma_max (default 0.01..50, score_sde's CIFAR-10)."""

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, levels: int | None = None, t_min: float = 0.0):
        if not (0 < sigma_min < sigma_max):
            raise ValueError(f"ve: need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        if levels is not None and int(levels) < 2:
            raise ValueError(f"ve: levels must be >= 2 (NCSN's number of noise levels), got {levels}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)
        self.levels = None if levels is None else int(levels)
        self.t_min = float(t_min)

    @property
    def level_times(self) -> Tensor | None:
        """Times of NCSN's discrete levels, descending (t = 1 .. 0); None without ``levels``."""
        if self.levels is None:
            return None
        return torch.linspace(1.0, 0.0, self.levels, dtype=torch.float64)

    @property
    def sigma_levels(self) -> Tensor | None:
        """NCSN's sigma_1 > ... > sigma_L (geometric from sigma_max to sigma_min); None without ``levels``."""
        lt = self.level_times
        return None if lt is None else self._sigma(lt)

    def _alpha(self, t):
        return torch.ones_like(t)

    def _d_alpha(self, t):
        return torch.zeros_like(t)

    def _sigma(self, t):
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def _d_sigma(self, t):
        return self._sigma(t) * self._log_ratio

    def _log_snr(self, t):
        return -(math.log(self.sigma_min) + t * self._log_ratio)

    def _t_of_log_snr(self, lam):
        return (-lam - math.log(self.sigma_min)) / self._log_ratio

    def config(self):
        c = {"name": self.name, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "t_min": self.t_min}
        if self.levels is not None:
            c["levels"] = self.levels
        return c


class EDM(Process):
    """EDM (Karras et al. 2022): x_t = x0 + t eps, time is sigma; t_min = sigma_min, t_max = sigma_max."""

    name = "edm"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, sigma_data: float | None = None):
        # sigma_data is a property of the data, read by the preconditioning and the loss weighting; a process
        # (alpha, sigma) never uses it, so a value given here would be silently ignored: reject it
        if sigma_data is not None:
            raise ValueError(
                "edm process: sigma_data is not a process option; give it to the parameterization "
                f"(parameterizations.make('edm', sigma_data={sigma_data})) and the loss, got sigma_data={sigma_data}"
            )
        if not (0 < sigma_min < sigma_max):
            raise ValueError(f"edm: need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.t_min, self.t_max = float(sigma_min), float(sigma_max)

    def _alpha(self, t):
        return torch.ones_like(t)

    def _d_alpha(self, t):
        return torch.zeros_like(t)

    def _sigma(self, t):
        return t

    def _d_sigma(self, t):
        return torch.ones_like(t)

    def _log_snr(self, t):
        return -torch.log(t)

    def _t_of_log_snr(self, lam):
        return torch.exp(-lam)

    def config(self):
        return {"name": self.name, "sigma_min": self.t_min, "sigma_max": self.t_max}


class Flow(Process):
    """Rectified flow / linear interpolant: x_t = (1 - t) x0 + t eps; alpha(1) = 0, the prior is N(0, I)."""

    name = "flow"

    def __init__(self, t_min: float = 1e-5):
        self.t_min = float(t_min)

    def _alpha(self, t):
        return 1 - t

    def _d_alpha(self, t):
        return -torch.ones_like(t)

    def _sigma(self, t):
        return t

    def _d_sigma(self, t):
        return torch.ones_like(t)

    def _log_snr(self, t):
        return torch.log1p(-t) - torch.log(t)

    def _t_of_log_snr(self, lam):
        return torch.sigmoid(-lam)

    def config(self):
        return {"name": self.name, "t_min": self.t_min}
