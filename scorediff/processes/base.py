"""The forward-process interface: x_t = alpha(t) x0 + sigma(t) eps, eps ~ N(0, I).

Every process in scorediff is affine Gaussian. A subclass gives alpha, sigma, their time
derivatives and the inverse of the half log-SNR; everything else (the SDE coefficients, the
prior, sampling of q(x_t | x0)) is derived here once, so samplers never ask which kind they have.

Symbols (Song et al. 2021, "Score-Based Generative Modeling through SDEs"; Kingma et al. 2021, VDM):
    alpha(t)  -- signal scale alpha_t (sqrt(alpha_bar) in DDPM)
    sigma(t)  -- noise scale sigma_t
    log_snr   -- lambda(t) = log(alpha_t / sigma_t), the half log signal-to-noise ratio
    sde(t)    -- (f(t), g(t)^2) with dx = f x dt + g dw,
                 f = d log alpha / dt,  g^2 = d sigma^2 / dt - 2 f sigma^2
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ..utils import append_dims, as_time, sum_flat


class Coeffs(NamedTuple):
    """The coefficients of x_t = alpha x0 + sigma eps at a time t, computed together (``Process.coeffs``).

    sigma_tilde = sigma / alpha is the noise level of x_t / alpha (EDM's sigma, the variance-exploding view; inf
    where alpha = 0) and log_snr = lambda = log(alpha / sigma).
    """

    alpha: Tensor
    sigma: Tensor
    sigma_tilde: Tensor
    log_snr: Tensor


def posterior_coefficients(alpha_t, sigma_t, alpha_s, sigma_s):
    """The Gaussian posterior q(x_s | x_t, x0) = N(c0 x0 + ct x_t, var) of an affine-Gaussian process, s < t.

    Kingma et al. 2021 (VDM), eqs. 4-5; for DDPM Ho et al. 2020, eqs. 6-7 (var is beta_tilde). The forward
    transition is x_t = a_ts x_s + s_ts z with a_ts = alpha_t / alpha_s, s_ts^2 = sigma_t^2 - a_ts^2 sigma_s^2
    (DDPM's beta_t between neighbouring steps), and
        c0 = alpha_s s_ts^2 / sigma_t^2,  ct = a_ts sigma_s^2 / sigma_t^2,  var = s_ts^2 sigma_s^2 / sigma_t^2.
    Works on Python floats (the samplers' per-step coefficients) and on tensors alike. Returns
    (c0, ct, var, a_ts, s_ts^2); s_ts^2 is clamped at 0 against rounding.
    """
    a_ts = alpha_t / alpha_s
    s2_ts = sigma_t**2 - a_ts**2 * sigma_s**2
    s2_ts = s2_ts.clamp(min=0.0) if torch.is_tensor(s2_ts) else max(s2_ts, 0.0)
    return alpha_s * s2_ts / sigma_t**2, a_ts * sigma_s**2 / sigma_t**2, s2_ts * sigma_s**2 / sigma_t**2, a_ts, s2_ts


class Process:
    """Base class of every forward process; see the module docstring for the symbols."""

    name: str = "process"
    t_min: float = 1e-5  # where sampling stops and likelihood starts
    t_max: float = 1.0  # the prior's time

    # -- to be given by a subclass -------------------------------------------------------------
    def _alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def _sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def _d_alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def _d_sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def _t_of_log_snr(self, lam: Tensor) -> Tensor:
        raise NotImplementedError

    def _log_snr(self, t: Tensor) -> Tensor:
        return torch.log(self._alpha(t)) - torch.log(self._sigma(t))

    # -- unchecked, for hot paths: t was checked once at the entry point (Grid, a loss, the likelihood) ----------
    # A check turns a tensor into a Python bool, which on an accelerator is a device-to-host synchronisation:
    # a sampler step or a training step never makes one (tests/test_sync.py).
    def _coeffs(self, t: Tensor) -> Coeffs:
        a, s = self._alpha(t), self._sigma(t)
        return Coeffs(a, s, s / a, self._log_snr(t))

    def _marginal(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = alpha(t) x0 + sigma(t) eps for a (B,) or scalar tensor t already checked (no host sync)."""
        a = append_dims(self._alpha(t), x0.ndim)
        s = append_dims(self._sigma(t), x0.ndim)
        return a * x0 + s * noise

    # -- public, checked ---------------------------------------------------------------------------
    def check_t(self, t: Tensor | float) -> Tensor:
        """Return t as a float tensor; raise ValueError if any entry lies outside [0, t_max]."""
        t = as_time(t)
        if torch.isnan(t).any() or (t < 0).any() or (t > self.t_max * (1 + 1e-6)).any():
            lo, hi = float(t.min()), float(t.max())
            raise ValueError(f"time t must lie in [0, {self.t_max:g}] for process '{self.name}', got values in [{lo:g}, {hi:g}]")
        return t

    def alpha(self, t: Tensor | float) -> Tensor:
        return self._alpha(self.check_t(t))

    def coeffs(self, t: Tensor | float) -> Coeffs:
        """alpha(t), sigma(t), sigma~(t) = sigma / alpha and lambda(t) at once (see ``Coeffs``)."""
        return self._coeffs(self.check_t(t))

    def sigma(self, t: Tensor | float) -> Tensor:
        return self._sigma(self.check_t(t))

    def d_alpha(self, t: Tensor | float) -> Tensor:
        """d alpha / dt."""
        return self._d_alpha(self.check_t(t))

    def d_sigma(self, t: Tensor | float) -> Tensor:
        """d sigma / dt."""
        return self._d_sigma(self.check_t(t))

    def log_snr(self, t: Tensor | float) -> Tensor:
        """lambda(t) = log(alpha / sigma), decreasing in t."""
        return self._log_snr(self.check_t(t))

    def t_of_log_snr(self, lam: Tensor | float) -> Tensor:
        """The inverse of log_snr: the t with log_snr(t) = lam (clamped to [0, t_max])."""
        return self._t_of_log_snr(as_time(lam)).clamp(0.0, self.t_max)

    def sde(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """(f(t), g(t)^2) of the forward SDE dx = f x dt + g dw, derived from alpha and sigma."""
        t = self.check_t(t)
        a, s, da, ds = self._alpha(t), self._sigma(t), self._d_alpha(t), self._d_sigma(t)
        f = da / a
        g2 = 2 * s * ds - 2 * f * s**2
        return f, g2

    # -- marginals and prior -----------------------------------------------------------------------
    def marginal(self, x0: Tensor, t: Tensor | float, noise: Tensor) -> Tensor:
        """x_t = alpha(t) x0 + sigma(t) eps for given noise eps (t is scalar or (B,))."""
        return self._marginal(x0, self.check_t(as_time(t, x0)), noise)

    def q_sample(self, x0: Tensor, t: Tensor | float, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw x_t ~ q(x_t | x0); returns (x_t, eps)."""
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return self.marginal(x0, t, eps), eps

    @property
    def prior_std(self) -> float:
        """Standard deviation of the prior N(0, prior_std^2 I) at t_max (sigma(t_max))."""
        return float(self._sigma(torch.tensor(self.t_max, dtype=torch.float64)))

    def prior_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Draw from the prior N(0, sigma(t_max)^2 I)."""
        return self.prior_std * torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def prior_logp(self, x: Tensor) -> Tensor:
        """log N(x; 0, sigma(t_max)^2 I), summed over all but the batch dimension."""
        s = self.prior_std
        d = x[0].numel()
        return -0.5 * sum_flat(x**2) / s**2 - d * (math.log(s) + 0.5 * math.log(2 * math.pi))

    @staticmethod
    def state_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
        """The per-example shape of the state a network sees for data of per-example ``shape`` (the same here;
        a phase-space process doubles the channels, ``processes.cld``)."""
        return tuple(shape)

    # -- description ---------------------------------------------------------------------------------
    def config(self) -> dict:
        """The options that rebuild this process through ``processes.make``."""
        return {"name": self.name}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({opts})"
