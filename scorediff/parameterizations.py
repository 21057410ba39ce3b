"""Parameterizations and preconditioning: the only place that reads a raw network output.

A network F sees ``c_in(t) * x_t`` and a noise input ``c_noise(t)`` and returns a raw output. The
parameterization turns it into the denoised estimate x0_hat = D(x_t, t) in the process's own
coordinates, and builds the regression target for training:

=========  =============================  =======================================================
name       raw output F predicts          x0_hat from F
=========  =============================  =======================================================
eps        eps (Ho et al. 2020)           (x - sigma F) / alpha
x0         x0                             F
v          v = alpha eps - sigma x0       (alpha x - sigma F) / (alpha^2 + sigma^2)  (Salimans & Ho 2022)
score      grad log p_t = -eps / sigma    (x + sigma^2 F) / alpha
velocity   dx/dt = alpha' x0 + sigma' eps  (sigma F - sigma' x) / (alpha' sigma - sigma' alpha)  (flow matching)
edm        F of Karras et al. (2022)      c_skip x~ + c_out F, x~ = x / alpha, sigma~ = sigma / alpha
consistency  as edm, with c_skip(t_min)=1  (Song et al. 2023, Appendix C)
=========  =============================  =======================================================

The conversions between x0_hat, eps_hat, score and the velocity live once, as plain functions
(``eps_from_x0``, ``x0_from_eps``, ...), with alpha, sigma broadcast to x's shape.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .processes.base import Process
from .utils import append_dims, batch_time, unknown

# ---------------------------------------------------------------------------------------------------
# Conversions. alpha, sigma (and their derivatives) must already broadcast against x.
# ---------------------------------------------------------------------------------------------------


def eps_from_x0(x: Tensor, x0: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """eps_hat = (x_t - alpha x0_hat) / sigma."""
    return (x - alpha * x0) / sigma


def x0_from_eps(x: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """x0_hat = (x_t - sigma eps_hat) / alpha."""
    return (x - sigma * eps) / alpha


def score_from_x0(x: Tensor, x0: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """grad log p_t(x) = (alpha x0_hat - x_t) / sigma^2 (Tweedie)."""
    return (alpha * x0 - x) / sigma**2


def x0_from_score(x: Tensor, score: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """x0_hat = (x_t + sigma^2 score) / alpha (Tweedie's formula)."""
    return (x + sigma**2 * score) / alpha


def v_from_x0(x: Tensor, x0: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """v = alpha eps - sigma x0 (Salimans & Ho 2022, Appendix D)."""
    return alpha * eps_from_x0(x, x0, alpha, sigma) - sigma * x0


def x0_from_v(x: Tensor, v: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """x0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2); for VP alpha^2 + sigma^2 = 1."""
    return (alpha * x - sigma * v) / (alpha**2 + sigma**2)


def velocity_from_x0(x: Tensor, x0: Tensor, alpha: Tensor, sigma: Tensor, d_alpha: Tensor, d_sigma: Tensor) -> Tensor:
    """The probability-flow velocity dx/dt = alpha' x0_hat + sigma' eps_hat (flow matching's u_t)."""
    return d_alpha * x0 + d_sigma * eps_from_x0(x, x0, alpha, sigma)


def x0_from_velocity(x: Tensor, u: Tensor, alpha: Tensor, sigma: Tensor, d_alpha: Tensor, d_sigma: Tensor) -> Tensor:
    """Invert ``velocity_from_x0``: x0 = (sigma u - sigma' x) / (alpha' sigma - sigma' alpha)."""
    return (sigma * u - d_sigma * x) / (d_alpha * sigma - d_sigma * alpha)


def coefficients(process: Process, t: Tensor, x: Tensor, derivatives: bool = False) -> tuple[Tensor, ...]:
    """alpha(t), sigma(t) (and alpha', sigma' if asked) as tensors broadcasting against x.

    Unchecked (the inner path of every model call): t was checked where it entered (``Grid``, a loss, the
    likelihood), so no host synchronisation happens here.
    """
    t = batch_time(t, x)
    out = [process._alpha(t), process._sigma(t)]
    if derivatives:
        out += [process._d_alpha(t), process._d_sigma(t)]
    return tuple(append_dims(v.to(x.dtype), x.ndim) for v in out)


# ---------------------------------------------------------------------------------------------------
# Parameterizations
# ---------------------------------------------------------------------------------------------------

NOISE_INPUTS = ("t1000", "t", "log_sigma", "log_snr")


class Parameterization:
    """Base class: identity input scaling, a configurable noise input; see the module docstring.

    ``noise_input`` names what the network receives as its time signal:
    "t1000" (1000 t / t_max, DDPM's step scale, the default), "t" (t / t_max),
    "log_sigma" (log(sigma / alpha) / 4, EDM's c_noise), "log_snr" (lambda(t)).
    """

    name = "base"
    needs_derivatives = False

    def __init__(self, noise_input: str = "t1000"):
        if noise_input not in NOISE_INPUTS:
            raise unknown("noise input", noise_input, NOISE_INPUTS)
        self.noise_input = noise_input

    # what the network sees ------------------------------------------------------------------------
    def c_noise(self, process: Process, t: Tensor) -> Tensor:
        if self.noise_input == "t1000":
            return 1000.0 * t / process.t_max
        if self.noise_input == "t":
            return t / process.t_max
        if self.noise_input == "log_sigma":
            return 0.25 * (torch.log(process._sigma(t)) - torch.log(process._alpha(t)))
        return process._log_snr(t)

    def c_in(self, process: Process, t: Tensor, x: Tensor) -> Tensor:
        """Scale applied to x_t before the network (broadcasts against x)."""
        return torch.ones((), dtype=x.dtype, device=x.device)

    # raw output <-> x0_hat ------------------------------------------------------------------------
    def to_x0(self, raw: Tensor, x: Tensor, t: Tensor, process: Process) -> Tensor:
        raise NotImplementedError

    def target(self, x0: Tensor, eps: Tensor, x_t: Tensor, t: Tensor, process: Process) -> Tensor:
        """The regression target for the raw output, given the clean x0 and the noise that made x_t."""
        raise NotImplementedError

    def x0_weight(self, x: Tensor, t: Tensor, process: Process) -> Tensor:
        """w(t) with ||raw - target||^2 = w(t) ||x0_hat - x0||^2 (broadcasts against x).

        A loss uses it to move any weighting stated on x0 (or eps) onto this parameterization's output.
        """
        raise NotImplementedError

    def config(self) -> dict:
        return {"name": self.name, "noise_input": self.noise_input}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config()})"


class EpsParam(Parameterization):
    """The network predicts the noise eps (Ho et al. 2020)."""

    name = "eps"

    def to_x0(self, raw, x, t, process):
        a, s = coefficients(process, t, x)
        return x0_from_eps(x, raw, a, s)

    def target(self, x0, eps, x_t, t, process):
        return eps

    def x0_weight(self, x, t, process):
        a, s = coefficients(process, t, x)
        return (a / s) ** 2


class X0Param(Parameterization):
    """The network predicts x0 directly."""

    name = "x0"

    def to_x0(self, raw, x, t, process):
        return raw

    def target(self, x0, eps, x_t, t, process):
        return x0

    def x0_weight(self, x, t, process):
        return torch.ones((), dtype=x.dtype, device=x.device)


class VParam(Parameterization):
    """The network predicts v = alpha eps - sigma x0 (Salimans & Ho 2022)."""

    name = "v"

    def to_x0(self, raw, x, t, process):
        a, s = coefficients(process, t, x)
        return x0_from_v(x, raw, a, s)

    def target(self, x0, eps, x_t, t, process):
        a, s = coefficients(process, t, x_t)
        return a * eps - s * x0

    def x0_weight(self, x, t, process):
        a, s = coefficients(process, t, x)
        return (a**2 + s**2) ** 2 / s**2


class ScoreParam(Parameterization):
    """The network predicts the score grad log p_t = -eps / sigma (NCSN; Song et al. 2021)."""

    name = "score"

    def to_x0(self, raw, x, t, process):
        a, s = coefficients(process, t, x)
        return x0_from_score(x, raw, a, s)

    def target(self, x0, eps, x_t, t, process):
        _, s = coefficients(process, t, x_t)
        return -eps / s

    def x0_weight(self, x, t, process):
        a, s = coefficients(process, t, x)
        return a**2 / s**4


class VelocityParam(Parameterization):
    """The network predicts the probability-flow velocity alpha' x0 + sigma' eps (flow matching)."""

    name = "velocity"
    needs_derivatives = True

    def to_x0(self, raw, x, t, process):
        return x0_from_velocity(x, raw, *coefficients(process, t, x, derivatives=True))

    def target(self, x0, eps, x_t, t, process):
        _, _, da, ds = coefficients(process, t, x_t, derivatives=True)
        return da * x0 + ds * eps

    def x0_weight(self, x, t, process):
        a, s, da, ds = coefficients(process, t, x, derivatives=True)
        return ((da * s - ds * a) / s) ** 2


class EDMPrecond(Parameterization):
    """EDM preconditioning (Karras et al. 2022, Table 1), generalised to any process through x~ = x / alpha.

    With sigma~ = sigma / alpha (the noise level in data units):
        c_skip = sigma_data^2 / (sigma~^2 + sigma_data^2),  c_out = sigma~ sigma_data / sqrt(sigma~^2 + sigma_data^2),
        c_in = 1 / sqrt(sigma~^2 + sigma_data^2) (applied to x~),  c_noise = log(sigma~) / 4,
        x0_hat = c_skip x~ + c_out F(c_in x~, c_noise).
    For the EDM process (alpha = 1, sigma = t) these are the paper's formulas.
    """

    name = "edm"

    def __init__(self, sigma_data: float = 0.5, noise_input: str = "log_sigma"):
        super().__init__(noise_input)
        if sigma_data <= 0:
            raise ValueError(f"edm: sigma_data must be > 0, got {sigma_data}")
        self.sigma_data = float(sigma_data)

    def _sigma_tilde(self, process, t, x):
        a, s = coefficients(process, t, x)
        return a, s / a

    def _skip_out(self, st: Tensor) -> tuple[Tensor, Tensor]:
        sd = self.sigma_data
        return sd**2 / (st**2 + sd**2), st * sd / torch.sqrt(st**2 + sd**2)

    def c_in(self, process, t, x):
        a, st = self._sigma_tilde(process, t, x)
        return 1 / (a * torch.sqrt(st**2 + self.sigma_data**2))

    def to_x0(self, raw, x, t, process):
        a, st = self._sigma_tilde(process, t, x)
        c_skip, c_out = self._skip_out(st)
        return c_skip * (x / a) + c_out * raw

    def target(self, x0, eps, x_t, t, process):
        a, st = self._sigma_tilde(process, t, x_t)
        c_skip, c_out = self._skip_out(st)
        return (x0 - c_skip * (x_t / a)) / c_out

    def x0_weight(self, x, t, process):
        _, st = self._sigma_tilde(process, t, x)
        return 1 / self._skip_out(st)[1] ** 2

    def config(self):
        return {**super().config(), "sigma_data": self.sigma_data}


class ConsistencyParam(EDMPrecond):
    """Consistency-model boundary condition (Song et al. 2023, Appendix C): f(x, t_min) = x exactly.

    c_skip = sigma_data^2 / ((sigma~ - sigma~_min)^2 + sigma_data^2), c_out = (sigma~ - sigma~_min) sigma_data /
    sqrt(sigma~^2 + sigma_data^2), with sigma~_min = sigma~(t_min) of the process.
    """

    name = "consistency"

    def to_x0(self, raw, x, t, process):
        a, st = self._sigma_tilde(process, t, x)
        c_skip, c_out = self._cm_skip_out(st, process, x)
        return c_skip * (x / a) + c_out * raw

    def _cm_skip_out(self, st, process, x):
        t_min = torch.tensor(process.t_min, dtype=torch.float64)  # a host constant: no device tensor is read
        st_min = float(process._sigma(t_min) / process._alpha(t_min))
        sd = self.sigma_data
        d = st - st_min
        return sd**2 / (d**2 + sd**2), d * sd / torch.sqrt(st**2 + sd**2)

    def target(self, x0, eps, x_t, t, process):
        a, st = self._sigma_tilde(process, t, x_t)
        c_skip, c_out = self._cm_skip_out(st, process, x_t)
        return (x0 - c_skip * (x_t / a)) / c_out

    def x0_weight(self, x, t, process):
        _, st = self._sigma_tilde(process, t, x)
        return 1 / self._cm_skip_out(st, process, x)[1] ** 2


class CLDParam(Parameterization):
    """Critically-damped Langevin diffusion's output (Dockhorn et al. 2022, Sec. 3.3 and App. B.2): the network sees
    the phase state u = (x_t, v_t) (``processes.cld``) and predicts the velocity noise eps_v of
    u_t = m_t x0 + L_t eps, so that the velocity score is grad_v log p_t = -eps_v / ell_t (ell_t = L_vv). With the
    mixed score (``mixed``, the paper's default) the network adds to the score of the Gaussian of v alone:
        alpha_theta = ell_t v_t / Sigma_t^vv + F_v(u_t, t),   s_theta = -alpha_theta / ell_t,
    where F_v is the velocity half of the raw output (the network maps u to u's shape). x0_hat follows by solving
    u_t = m_t x0 + L_t eps for x0 with eps_v = alpha_theta (``CLD.x0_from_eps_v``)."""

    name = "cld"

    def __init__(self, noise_input: str = "t1000", mixed: bool = True):
        super().__init__(noise_input)
        self.mixed = bool(mixed)

    @staticmethod
    def _check(process: Process) -> None:
        if not getattr(process, "phase_space", False):
            raise ValueError(f"parameterization 'cld' needs the phase-space process 'cld', got '{process.name}'")

    def _gaussian_part(self, u: Tensor, t: Tensor, process) -> Tensor:
        """ell_t v_t / Sigma_t^vv (the mixed score's fixed part), 0 without the mixed score."""
        _, v = process.split(u)
        if not self.mixed:
            return torch.zeros_like(v)
        t = batch_time(t, u)
        ell = append_dims(process.cholesky(t)[2], v.ndim).to(v.dtype)
        svv = append_dims(process.kernel(t)[4], v.ndim).to(v.dtype)
        return ell * v / svv

    def output(self, raw: Tensor, process) -> Tensor:
        """The part of the raw (phase-shaped) output that is read: its velocity half F_v."""
        return process.split(raw)[1]

    def to_x0(self, raw, x, t, process):
        self._check(process)
        eps_v = self._gaussian_part(x, t, process) + self.output(raw, process)
        return process.x0_from_eps_v(x, eps_v, batch_time(t, x))

    def target(self, x0, eps, x_t, t, process):
        """The target of F_v given the phase noise eps that made x_t: eps_v minus the mixed score's part."""
        self._check(process)
        return process.split(eps)[1] - self._gaussian_part(x_t, t, process)

    def x0_weight(self, x, t, process):
        # eps_v error = (phi_vx - phi_xx Lvx / Lxx) / ell x0 error (the inverse of ``CLD.x0_from_eps_v``)
        self._check(process)
        t = batch_time(t, x)
        p_xx, p_vx = process.kernel(t)[:2]
        lxx, lvx, lvv = process.cholesky(t)
        return append_dims(((p_vx - p_xx * lvx / lxx) / lvv) ** 2, x.ndim).to(x.dtype)

    def config(self):
        return {**super().config(), "mixed": self.mixed}


def for_process(param: Parameterization, process: Process) -> Parameterization:
    """The parameterization a network of ``process`` uses: on the phase-space process "cld", "eps" is CLD's own
    eps prediction (``CLDParam``, the velocity noise with the mixed score); any other there is a ValueError, as is
    "cld" on a data-space process."""
    if getattr(process, "phase_space", False):
        if isinstance(param, CLDParam):
            return param
        if param.name == "eps":
            return CLDParam(noise_input=param.noise_input)
        raise ValueError(f"process '{process.name}' trains with parameterization 'cld' (or 'eps', the same: the "
                         f"velocity noise, Dockhorn et al. 2022), got '{param.name}'")
    if isinstance(param, CLDParam):
        raise ValueError(f"parameterization 'cld' needs the phase-space process 'cld', got '{process.name}'")
    return param


PARAMETERIZATIONS: dict[str, Callable[..., Parameterization]] = {
    "eps": EpsParam,
    "x0": X0Param,
    "v": VParam,
    "score": ScoreParam,
    "velocity": VelocityParam,
    "edm": EDMPrecond,
    "consistency": ConsistencyParam,
    "cld": CLDParam,
}


def make(name: str, **options) -> Parameterization:
    """Build a parameterization by name: eps, x0, v, score, velocity, edm, consistency, cld."""
    if name not in PARAMETERIZATIONS:
        raise unknown("parameterization", name, PARAMETERIZATIONS)
    try:
        return PARAMETERIZATIONS[name](**options)
    except TypeError as e:
        raise ValueError(f"parameterization '{name}': bad option(s) {sorted(options)}: {e}") from None


def from_config(config: dict) -> Parameterization:
    config = dict(config)
    return make(config.pop("name"), **config)


class NetDenoiser(nn.Module):
    """Wrap a network ``net(x, noise_input, **cond)`` into a Denoiser ``D(x, t, **cond) -> x0_hat``.

    This is where a raw network meets the parameterization: x is scaled by c_in, the time becomes
    the noise input, and the raw output becomes x0_hat. Samplers, guidance and likelihood call this.
    """

    def __init__(self, net: nn.Module, process: Process, param: Parameterization):
        super().__init__()
        self.net, self.process, self.param = net, process, param

    def raw(self, x: Tensor, t: Tensor | float, **cond) -> Tensor:
        """The network's raw output at (x, t): what a loss compares with ``param.target``."""
        t = batch_time(t, x)
        x_in = self.param.c_in(self.process, t, x) * x
        return self.net(x_in, self.param.c_noise(self.process, t).to(x.dtype), **cond)

    def forward(self, x: Tensor, t: Tensor | float, **cond) -> Tensor:
        t = batch_time(t, x)
        return self.param.to_x0(self.raw(x, t, **cond), x, t, self.process)


def pf_ode_velocity(denoiser: Callable[..., Tensor], process: Process, x: Tensor, t: Tensor | float, **cond) -> Tensor:
    """dx/dt of the probability-flow ODE, f x - g^2/2 score = alpha' x0_hat + sigma' eps_hat.

    Written in x0_hat so it stays finite where alpha = 0 (flow and cosine VP at t = 1).
    """
    a, s, da, ds = coefficients(process, t, x, derivatives=True)
    return velocity_from_x0(x, denoiser(x, batch_time(t, x), **cond), a, s, da, ds)


