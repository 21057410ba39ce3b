"""Critically-damped Langevin diffusion (CLD; Dockhorn, Vahdat & Kreis 2022, "Score-Based Generative Modeling
with Critically-Damped Langevin Diffusion", ICLR): diffusion in phase space, data x coupled to a velocity v.

Forward SDE (eq. 5), per coordinate, with mass M, friction Gamma and time scale beta(t):
    dx = M^{-1} v beta dt,    dv = -x beta dt - Gamma M^{-1} v beta dt + sqrt(2 Gamma beta) dw,
critically damped at Gamma^2 = 4 M (``gamma_friction`` = 2 sqrt(M)). The data start with v0 ~ N(0, gamma M)
(``gamma``, the paper's gamma = 0.04); the equilibrium is N(0, I) x N(0, M I).

Transition kernel (App. B.1), closed form because the drift matrix F = [[0, 1/M], [-1, -Gamma/M]] has the double
eigenvalue -2/Gamma: with s = int_0^t beta and r = 2 s / Gamma,
    Phi(s) = exp(F s) = e^{-r} [[1 + r, 4 s / Gamma^2], [-s, 1 - r]],
    mean(u_t | x0) = Phi (x0, 0)^T = e^{-r} ((1 + r) x0, -s x0)          (``kernel``: phi_xx, phi_vx)
    Sigma_t = Sigma_inf + Phi (Sigma_0 - Sigma_inf) Phi^T,  Sigma_inf = diag(1, M), Sigma_0 = diag(0, gamma M),
one 2x2 covariance per coordinate (Sxx, Sxv, Svv), the same for every coordinate and every x0.

Phase state: ``u = join(x, v) = cat([x, v], dim=1)``, shape (B, 2C, ...) for data (B, C, ...) (as in the paper's
code). A CLD Denoiser takes u and returns x0_hat = E[x0 | x_t, v_t] in data shape; every sampler and loss derive
the velocity score from it:
    grad_v log p_t(u) = -[Sigma_t^{-1} (u - m_t x0_hat)]_v,  m_t = (phi_xx, phi_vx)       (``velocity_score``)
which holds because Sigma_t does not depend on x0 (Tweedie's formula in phase space).

The data-space view: as a ``Process``, ``alpha`` and ``sigma`` are those of the *position marginal* with v0
integrated out, x_t | x0 ~ N(phi_xx x0, Sxx): so schedules, ``log_snr`` and the oracle's p_t(x) are defined as for
every other process, and ``sample`` takes and returns data shapes. The base class's ``sde`` is then a data-space
SDE with the same position marginals, not CLD's own (that is ``pf_ode_velocity`` / ``beta`` here).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..utils import append_dims, as_time
from .base import Process


class CLD(Process):
    """Critically-damped Langevin diffusion (see the module docstring for the symbols).

    Args:
        beta: beta(t) at t = 0 (the paper's beta = 4 for a constant schedule).
        beta_max: beta(1) for a linear schedule from ``beta``; None: constant beta.
        mass: M (the paper's M^{-1} = 4, i.e. M = 0.25); Gamma = 2 sqrt(M).
        gamma: v0 ~ N(0, gamma M) at t = 0 (the paper's 0.04).
        t_min: where sampling stops and the likelihood starts.
    """

    name = "cld"
    phase_space = True  # the sampler's state carries a velocity (samplers declare whether they run here)

    def __init__(self, beta: float = 4.0, beta_max: float | None = None, mass: float = 0.25, gamma: float = 0.04,
                 t_min: float = 1e-3):
        if not beta > 0 or (beta_max is not None and not beta_max > 0):
            raise ValueError(f"cld: beta and beta_max must be > 0, got beta={beta}, beta_max={beta_max}")
        if not mass > 0:
            raise ValueError(f"cld: mass M must be > 0, got {mass}")
        if not 0 < gamma < 1:
            raise ValueError(f"cld: gamma (v0 ~ N(0, gamma M)) must lie in (0, 1), got {gamma}")
        if not 0 < t_min < 1:
            raise ValueError(f"cld: t_min must lie in (0, 1), got {t_min}")
        self.beta0 = float(beta)
        self.beta1 = float(beta if beta_max is None else beta_max)
        self._linear = beta_max is not None
        self.mass, self.gamma, self.t_min = float(mass), float(gamma), float(t_min)
        self.friction = 2 * math.sqrt(self.mass)  # Gamma, critical damping

    # -- time scale ------------------------------------------------------------------------------------------
    def beta(self, t: Tensor) -> Tensor:
        """beta(t)."""
        return self.beta0 + (self.beta1 - self.beta0) * t

    def beta_int(self, t: Tensor) -> Tensor:
        """s = int_0^t beta."""
        return self.beta0 * t + 0.5 * (self.beta1 - self.beta0) * t**2

    # -- the phase-space kernel (float64 inside: Sxx ~ gamma r^2 is a difference of O(1) terms near t = 0) -----
    def kernel(self, t: Tensor | float) -> tuple[Tensor, ...]:
        """(phi_xx, phi_vx, Sxx, Sxv, Svv) at t, float64, t's shape: mean m_t x0 = (phi_xx, phi_vx) x0, covariance."""
        t = t.to(torch.float64) if torch.is_tensor(t) else torch.tensor(float(t), dtype=torch.float64)
        s = self.beta_int(t)
        g, m, gam = self.friction, self.mass, self.gamma
        r = 2 * s / g
        e = torch.exp(-r)
        p_xx, p_xv, p_vx, p_vv = e * (1 + r), e * 4 * s / g**2, -e * s, e * (1 - r)
        # Sigma_inf + Phi diag(-1, (gamma - 1) M) Phi^T
        sxx = -torch.expm1(-2 * r) - e**2 * (2 * r + (2 - gam) * r**2)  # = 1 - p_xx^2 - (1 - gamma) M p_xv^2
        sxv = -p_xx * p_vx + (gam - 1) * m * p_xv * p_vv
        svv = m - p_vx**2 + (gam - 1) * m * p_vv**2
        return p_xx, p_vx, sxx.clamp(min=0.0), sxv, svv

    def cholesky(self, t: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
        """(Lxx, Lvx, Lvv) of Sigma_t = L L^T; Lvv is the paper's ell_t (App. B.2), float64."""
        _, _, sxx, sxv, svv = self.kernel(t)
        lxx = sxx.sqrt()
        lvx = sxv / lxx
        return lxx, lvx, (svv - lvx**2).clamp(min=0.0).sqrt()

    # -- data-space view: the position marginal x_t | x0 ~ N(phi_xx x0, Sxx) -------------------------------------
    def _alpha(self, t):
        return self.kernel(t)[0].to(t.dtype)

    def _sigma(self, t):
        return self.kernel(t)[2].sqrt().to(t.dtype)

    def _d_alpha(self, t):
        t64 = t.to(torch.float64)
        r = 2 * self.beta_int(t64) / self.friction
        return (-r * torch.exp(-r) * 2 * self.beta(t64) / self.friction).to(t.dtype)

    def _d_sigma(self, t):
        t64 = t.to(torch.float64)
        r = 2 * self.beta_int(t64) / self.friction
        # d Sxx / dr = 2 r e^{-2r} (gamma + (2 - gamma) r)
        dsxx = 2 * r * torch.exp(-2 * r) * (self.gamma + (2 - self.gamma) * r) * 2 * self.beta(t64) / self.friction
        return (dsxx / (2 * self.kernel(t64)[2].sqrt())).to(t.dtype)

    def _log_snr(self, t):
        p_xx, _, sxx, _, _ = self.kernel(t)
        return (torch.log(p_xx) - 0.5 * torch.log(sxx)).to(t.dtype)

    def _t_of_log_snr(self, lam):
        # lambda(t) is strictly decreasing (alpha falls, Sxx rises); no closed form: bisection in float64
        lam64 = lam.to(torch.float64)
        lo, hi = torch.zeros_like(lam64), torch.ones_like(lam64)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            above = self._log_snr(mid) > lam64
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return (0.5 * (lo + hi)).to(lam.dtype)

    # -- phase space ----------------------------------------------------------------------------------------------
    @staticmethod
    def state_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
        """The per-example phase-state shape of data of per-example ``shape``: channels (dim 1) doubled."""
        return (2 * shape[0], *shape[1:])

    @staticmethod
    def join(x: Tensor, v: Tensor) -> Tensor:
        return torch.cat([x, v], dim=1)

    @staticmethod
    def split(u: Tensor) -> tuple[Tensor, Tensor]:
        x, v = u.chunk(2, dim=1)
        return x, v

    def _b(self, values: tuple[Tensor, ...], like: Tensor) -> list[Tensor]:
        return [append_dims(v, like.ndim).to(like.dtype) for v in values]

    def phase_marginal(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """u_t = m_t x0 + L_t eps for phase-shaped noise eps (v0 ~ N(0, gamma M) integrated out)."""
        p_xx, p_vx = self._b(self.kernel(t)[:2], x0)
        lxx, lvx, lvv = self._b(self.cholesky(t), x0)
        ex, ev = self.split(eps)
        return self.join(p_xx * x0 + lxx * ex, p_vx * x0 + lvx * ex + lvv * ev)

    def x0_from_eps_v(self, u: Tensor, eps_v: Tensor, t: Tensor) -> Tensor:
        """x0 from the phase state and the velocity noise eps_v of ``phase_marginal`` (solve its two rows for x0)."""
        x, v = self.split(u)
        p_xx, p_vx = self._b(self.kernel(t)[:2], x)
        lxx, lvx, lvv = self._b(self.cholesky(t), x)
        return (v - lvv * eps_v - lvx * x / lxx) / (p_vx - p_xx * lvx / lxx)

    def velocity_score(self, u: Tensor, x0_hat: Tensor, t: Tensor) -> Tensor:
        """grad_v log p_t(u) = -[Sigma_t^{-1} (u - m_t x0_hat)]_v = (Sxv e_x - Sxx e_v) / det Sigma_t."""
        x, v = self.split(u)
        p_xx, p_vx, sxx, sxv, svv = self._b(self.kernel(t), x)
        det = sxx * svv - sxv**2
        return (sxv * (x - p_xx * x0_hat) - sxx * (v - p_vx * x0_hat)) / det

    def pf_ode_velocity(self, u: Tensor, x0_hat: Tensor, t: Tensor) -> Tensor:
        """du/dt of the probability-flow ODE (eq. 9 of the paper's App.): f(u) - (0, Gamma beta grad_v log p_t)."""
        x, v = self.split(u)
        b = append_dims(self.beta(as_time(t).to(torch.float64)), x.ndim).to(x.dtype)
        g, m = self.friction, self.mass
        dv = -x - (g / m) * v - g * self.velocity_score(u, x0_hat, t)
        return self.join(b * v / m, b * dv)

    def observation(self, u: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The data-space observation equivalent to u: (y, sigma_eff, log_c), all float64, with
            p(u | x0) = exp(log_c) N(y; x0, sigma_eff^2 I)   (log_c per example, free of x0),
        y = m^T Sigma^{-1} u / kappa, kappa = m^T Sigma^{-1} m = 1 / sigma_eff^2 (the Gaussian likelihood of x0 from
        (x, v) is that of one noisy reading). So E[x0 | u] and log p_t(u) of any prior on x0 follow from the
        data-space ones of (y, sigma_eff) (``analytic.GaussianMixture.denoiser``)."""
        u64 = u.to(torch.float64)
        x, v = self.split(u64)
        p_xx, p_vx, sxx, sxv, svv = self._b(self.kernel(t), x)
        det = sxx * svv - sxv**2
        ix_x, ix_v = (svv * x - sxv * v) / det, (sxx * v - sxv * x) / det  # Sigma^{-1} u
        kappa = (svv * p_xx**2 - 2 * sxv * p_xx * p_vx + sxx * p_vx**2) / det
        y = (p_xx * ix_x + p_vx * ix_v) / kappa
        quad = x * ix_x + v * ix_v - kappa * y**2  # (u - m y)^T Sigma^{-1} (u - m y)
        d = x[0].numel()
        log_c = (-0.5 * quad.reshape(x.shape[0], -1).sum(1)
                 - 0.5 * d * (torch.log(det.reshape(-1)) + torch.log(kappa.reshape(-1)) + math.log(2 * math.pi)))
        return y, kappa.reshape(-1).rsqrt(), log_c

    def reverse_ou(self, ds: float) -> tuple[tuple[float, ...], tuple[float, float, float]]:
        """SSCS's A part over time scale ds = int beta (Dockhorn et al. 2022, App. D.1), exactly: the linear SDE
        dx = -M^{-1} v beta dtau, dv = (x - Gamma M^{-1} v) beta dtau + sqrt(2 Gamma beta) dw has (critical damping,
        double eigenvalue -2/Gamma again) u <- Phi u + L n with, r = 2 ds / Gamma,
            Phi = e^{-r} [[1 + r, -4 ds / Gamma^2], [ds, 1 - r]],  L L^T = Sigma_inf - Phi Sigma_inf Phi^T.
        Returns ((Phi_xx, Phi_xv, Phi_vx, Phi_vv), (Lxx, Lvx, Lvv)) as floats."""
        g, m = self.friction, self.mass
        r = 2 * ds / g
        e = math.exp(-r)
        phi = (e * (1 + r), -e * 4 * ds / g**2, e * ds, e * (1 - r))
        cxx = -math.expm1(-2 * r) - e * e * (2 * r + 2 * r * r)  # 1 - e^{-2r} ((1 + r)^2 + r^2)
        cxv = -e * e * 2 * r * ds
        cvv = m - e * e * (ds * ds + m * (1 - r) ** 2)
        lxx = math.sqrt(max(cxx, 0.0))
        lvx = cxv / lxx if lxx > 0 else 0.0
        return phi, (lxx, lvx, math.sqrt(max(cvv - lvx * lvx, 0.0)))

    # -- the prior: the kernel from x0 = 0 at t_max (the equilibrium N(0, I) x N(0, M I) up to e^{-2r}) --------
    def phase_start(self, x: Tensor, t: float, generator: torch.Generator | None = None) -> Tensor:
        """u at time t from a position x ~ N(0, Sxx(t)): v drawn from the kernel's v | x, N(Sxv/Sxx x, ell_t^2)."""
        _, _, sxx, sxv, _ = (float(c) for c in self.kernel(float(t)))
        lvv = float(self.cholesky(float(t))[2])
        v = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device) * lvv + (sxv / sxx) * x
        return self.join(x, v)

    def phase_prior_logp(self, u: Tensor) -> Tensor:
        """log N(u; 0, Sigma_{t_max}) summed over all but the batch dimension."""
        x, v = self.split(u)
        _, _, sxx, sxv, svv = (float(c) for c in self.kernel(self.t_max))
        det = sxx * svv - sxv**2
        quad = (svv * x**2 - 2 * sxv * x * v + sxx * v**2) / det
        d = x[0].numel()
        return -0.5 * quad.reshape(x.shape[0], -1).sum(1) - 0.5 * d * (math.log(det) + 2 * math.log(2 * math.pi))

    def v0_std(self) -> float:
        """The std sqrt(gamma M) of the initial velocity v0."""
        return math.sqrt(self.gamma * self.mass)

    def config(self) -> dict:
        out = {"name": self.name, "beta": self.beta0, "mass": self.mass, "gamma": self.gamma, "t_min": self.t_min}
        if self._linear:
            out["beta_max"] = self.beta1
        return out
