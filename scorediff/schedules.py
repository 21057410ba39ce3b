"""Time grids for samplers: ``make(name, steps, process, **options) -> ts``.

A grid is a float64 tensor of ``steps + 1`` strictly decreasing times, from ``process.t_max`` to
``process.t_min``. With ``denoise_to_zero=True`` the schedule places ``steps`` nodes from t_max to t_min
and appends t = 0 (sigma = 0), as EDM does (Karras et al. 2022, eq. 5: t_N = 0); the samplers then take
their last step as "return x0_hat" (see ``scorediff.samplers._common``). VE has no time with sigma = 0
(sigma(0) = sigma_min, already its t_min), so ``denoise_to_zero`` is an error there.

Schedules (sigma~ = sigma / alpha, lambda = log(alpha / sigma) = -log sigma~):
    uniform    uniform in t.
    logsnr     uniform in lambda (DPM-Solver, Lu et al. 2022).
    karras     sigma~_i = (sigma~_max^(1/rho) + i/(N-1) (sigma~_min^(1/rho) - sigma~_max^(1/rho)))^rho, rho = 7
               (Karras et al. 2022, eq. 5), in sigma~ so it serves every process.
    quadratic  t_i = t_min + (t_max - t_min) (1 - i/(N-1))^2: dense near the data (DDIM's "quad").
    power      t_i = t_min + (t_max - t_min) (1 - i/(N-1))^p, p = ``power`` (default 1.25): between uniform
               (p = 1) and quadratic (p = 2); the default of the pairs in ``samplers/_defaults.py`` that chose it.
    logsnr_cosine
               uniform in lambda below the data scale (lambda >= c, sigma~ <= e^{-c}; default c = 0: sigma~ <= 1,
               for data of unit scale) and thinned above it like the cosine schedule (Nichol & Dhariwal 2021,
               whose time t = (2/pi) arctan(e^{-lambda/2}) has density sech(lambda/2) / (2 pi) in lambda): node
               density in lambda 1 for lambda >= c and sech((lambda - c) / 2) below, continuous at c. Why: below
               the data scale data has detail at every scale, which a scale-free (uniform in log sigma~) grid
               resolves evenly; above it x0_hat(lambda) changes by O(sigma_data^2 / sigma~^2) only, so the logsnr
               grid's equal steps there are wasted, and the cosine thinning (e^{lambda/2} far out) moves those
               nodes to sigma~ ~ 1, where the modes of the data are told apart. Option ``center`` (c).
    leading, trailing, linspace
               diffusers' ``timestep_spacing`` for a DDPM of T steps (vp-discrete only); diffusers' step k
               in 0..T-1 is our t = (k + 1) / T. These end on clean data like diffusers' schedulers
               (``denoise_to_zero`` defaults to True): ts = the ``steps`` diffusers timesteps, then 0.

Infinite noise at t_max. For flow and cosine VP, lambda(t_max) = -inf (or about -37 in floating point).
The lambda-based grids (logsnr, karras) keep ts[0] = t_max where lambda(t_max) < ``lambda_min`` (default
-6, i.e. sigma~ > 403) and space the other nodes from lambda_min: the first step then starts from pure
noise, where the samplers take a DDIM-like step that stays finite.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .processes.base import Process
from .utils import unknown

DISCRETE = ("leading", "trailing", "linspace")
SCHEDULES = ("uniform", "logsnr", "karras", "quadratic", "power", "logsnr_cosine", *DISCRETE)


def _t_end(process: Process, denoise_to_zero: bool) -> None:
    if denoise_to_zero and float(process._sigma(torch.tensor(0.0, dtype=torch.float64))) > 0:
        raise ValueError(
            f"denoise_to_zero: process '{process.name}' has sigma > 0 at t = 0 (its grid already ends at "
            f"t_min = {process.t_min:g}); expected a process with sigma(0) = 0"
        )


def _finish(nodes: Tensor, process: Process, denoise_to_zero: bool, name: str) -> Tensor:
    """Pin the endpoints, append 0 if asked, and check the grid strictly decreases."""
    nodes = nodes.clone()
    nodes[0] = process.t_max
    if nodes.numel() > 1:
        nodes[-1] = process.t_min
    if denoise_to_zero:
        nodes = torch.cat([nodes, torch.zeros(1, dtype=torch.float64)])
    if not bool((nodes[1:] < nodes[:-1]).all()):
        raise ValueError(
            f"schedule '{name}' gave a grid that does not strictly decrease for process '{process.name}' "
            f"(too many steps for its time range?): {nodes.tolist()[:8]}..."
        )
    return nodes


def _lam(process: Process, t: float) -> float:
    return float(process._log_snr(torch.tensor(t, dtype=torch.float64)))


def _lambda_nodes(process: Process, n: int, lambda_min: float, spacing) -> Tensor:
    """n times whose lambdas follow ``spacing(lam_lo, lam_hi, m)`` (m increasing lambdas), from t_max to t_min."""
    lam_hi = _lam(process, process.t_min)
    lam_lo = _lam(process, process.t_max)
    if n == 1:
        return torch.tensor([process.t_max], dtype=torch.float64)
    if not lam_lo >= lambda_min:  # also catches -inf / nan
        if lambda_min >= lam_hi:
            raise ValueError(f"lambda_min = {lambda_min:g} must lie below lambda(t_min) = {lam_hi:g}")
        lams = spacing(lambda_min, lam_hi, n - 1)
        t = process._t_of_log_snr(lams).clamp(0.0, process.t_max)
        return torch.cat([torch.tensor([process.t_max], dtype=torch.float64), t])
    return process._t_of_log_snr(spacing(lam_lo, lam_hi, n)).clamp(0.0, process.t_max)


def _uniform_lam(lo: float, hi: float, m: int) -> Tensor:
    return torch.linspace(lo, hi, m, dtype=torch.float64)


def _karras(rho: float):
    def spacing(lo: float, hi: float, m: int) -> Tensor:
        s_max, s_min = math.exp(-lo), math.exp(-hi)  # sigma~ = exp(-lambda)
        ramp = torch.linspace(0, 1, m, dtype=torch.float64)
        s = (s_max ** (1 / rho) + ramp * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho  # eq. (5)
        return -torch.log(s)

    return spacing


def _cosine_above(center: float):
    """Lambdas with node density 1 for lambda >= c and sech((lambda - c) / 2) below (closed-form inverse CDF).

    S(lambda) = 4 arctan(e^{(min(lambda, c) - c) / 2}) + max(lambda - c, 0) is an antiderivative of that
    density (S(c) = pi); the nodes are S^{-1} of m equally spaced values between S(lo) and S(hi).
    """

    def S(lam: float) -> float:
        return 4 * math.atan(math.exp((min(lam, center) - center) / 2)) + max(lam - center, 0.0)

    def spacing(lo: float, hi: float, m: int) -> Tensor:
        a = torch.linspace(S(lo), S(hi), m, dtype=torch.float64)
        below = center + 2 * torch.log(torch.tan(a.clamp(max=math.pi) / 4))  # a <= pi: the sech part
        lams = torch.where(a <= math.pi, below, center + (a - math.pi))
        lams[0], lams[-1] = lo, hi
        return lams

    return spacing


def _discrete(name: str, steps: int, process: Process, steps_offset: int = 0) -> Tensor:
    """diffusers' timestep spacings over T discrete steps, as our times t = (k + 1) / T; ``steps_offset`` shifts
    the "leading" timesteps as diffusers' scheduler option of that name does (Stable Diffusion's is 1)."""
    T = getattr(process, "steps", None)
    if process.name != "vp-discrete" or T is None:
        raise ValueError(f"schedule '{name}' needs the discrete process 'vp-discrete', got '{process.name}'")
    if steps > T:
        raise ValueError(f"schedule '{name}': steps = {steps} exceeds the process's T = {T} discrete steps")
    if name == "leading":  # k = i * (T // N), i = N-1 .. 0
        k = torch.arange(steps - 1, -1, -1, dtype=torch.float64) * (T // steps) + steps_offset
        if not 0 <= k[0] <= T - 1:
            raise ValueError(f"schedule 'leading': steps_offset {steps_offset} puts timestep {int(k[0])} outside "
                             f"0..{T - 1}")
    elif name == "trailing":  # k = round(T - i T / N) - 1, i = 0 .. N-1
        k = (torch.round(torch.arange(T, 0, -T / steps, dtype=torch.float64)) - 1)[:steps]
    else:  # linspace: round(linspace(0, T - 1, N)) reversed
        k = torch.round(torch.linspace(0, T - 1, steps, dtype=torch.float64)).flip(0)
    return (k + 1) / T


def make(
    name: str,
    steps: int,
    process: Process,
    *,
    denoise_to_zero: bool | None = None,
    rho: float = 7.0,
    lambda_min: float = -6.0,
    center: float = 0.0,
    power: float = 1.25,
    steps_offset: int = 0,
) -> Tensor:
    """A float64 grid of ``steps + 1`` times descending from t_max; see the module docstring.

    Options: ``denoise_to_zero`` (end at t = 0; default False, True for the discrete spacings),
    ``steps_offset`` (leading: diffusers' shift of every timestep, e.g. 1 for Stable Diffusion's schedulers),
    ``rho`` (karras), ``lambda_min`` (clip of lambda at t_max for logsnr, karras and logsnr_cosine),
    ``center`` (logsnr_cosine: the lambda below which nodes thin out, default 0), ``power`` (power: the exponent p).
    """
    if name not in SCHEDULES:
        raise unknown("schedule", name, SCHEDULES)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if name in DISCRETE:
        ts = _discrete(name, steps, process, int(steps_offset))
        if denoise_to_zero is False:
            ts = torch.cat([ts, torch.tensor([process.t_min], dtype=torch.float64)])
            if not ts[-1] < ts[-2]:
                raise ValueError(
                    f"schedule '{name}' already ends at t_min = {process.t_min:g}; use denoise_to_zero=True"
                )
        else:
            ts = torch.cat([ts, torch.zeros(1, dtype=torch.float64)])
        return ts
    denoise_to_zero = bool(denoise_to_zero)
    _t_end(process, denoise_to_zero)
    if rho <= 0:
        raise ValueError(f"karras: rho must be > 0, got {rho}")
    if not (math.isfinite(power) and power > 0):
        raise ValueError(f"power: the exponent must be a finite number > 0, got {power}")
    if not math.isfinite(center):
        raise ValueError(f"logsnr_cosine: center must be a finite lambda, got {center}")
    n = steps if denoise_to_zero else steps + 1  # nodes from t_max to t_min
    t_max, t_min = process.t_max, process.t_min
    if name == "uniform":
        nodes = torch.linspace(t_max, t_min, n, dtype=torch.float64)
    elif name in ("quadratic", "power"):
        u = torch.linspace(1, 0, n, dtype=torch.float64)
        nodes = t_min + (t_max - t_min) * u ** (2.0 if name == "quadratic" else power)
    elif name == "logsnr":
        nodes = _lambda_nodes(process, n, lambda_min, _uniform_lam)
    elif name == "logsnr_cosine":
        nodes = _lambda_nodes(process, n, lambda_min, _cosine_above(center))
    else:  # karras
        nodes = _lambda_nodes(process, n, lambda_min, _karras(rho))
    return _finish(nodes, process, denoise_to_zero, name)


__all__ = ["DISCRETE", "SCHEDULES", "make"]
