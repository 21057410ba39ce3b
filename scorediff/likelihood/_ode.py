"""The machinery the likelihood routines share: the augmented probability-flow ODE (state and divergence), its
solver, trace estimators and input checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..parameterizations import pf_ode_velocity
from ..processes.base import Process
from ..samplers.ode import integrate_pf_ode
from ..utils import sum_flat

METHODS = ("ode", "vlb")
TRACES = ("exact", "hutchinson")
NOISES = ("rademacher", "gaussian")
REDUCTIONS = ("mean", "logmeanexp")


@dataclass
class Likelihood:
    """log p per example in nats (``logp``), its standard error (Hutchinson with K >= 2 probes, else None),
    the number of ODE function evaluations (``nfe``; each costs K or D denoiser calls on the batch), the
    prior term, the integrated divergence, the encoding x_{t_max} and, from ``bits_per_dim``, bits/dim."""

    logp: Tensor
    stderr: Tensor | None
    nfe: int
    prior_logp: Tensor | None = None
    delta_logp: Tensor | None = None
    z: Tensor | None = None
    bpd: Tensor | None = None
    bpd_stderr: Tensor | None = None


# ---------------------------------------------------------------------------------------------------
# The ODE
# ---------------------------------------------------------------------------------------------------


def _probes(x: Tensor, trace: str, probes: int, noise: str, generator) -> Tensor | None:
    """(M, B, *event): the D basis vectors for the exact trace, or K random probes."""
    b, d = x.shape[0], x[0].numel()
    if trace == "exact":
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        return eye[:, None, :].expand(d, b, d).reshape(d, *x.shape)
    shape = (probes, *x.shape)
    if noise == "gaussian":
        return torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device)
    r = torch.randint(0, 2, shape, generator=generator, device=x.device)
    return (2 * r - 1).to(x.dtype)


class _Dynamics:
    """The augmented PF-ODE: state (x, int div_1..M); one call evaluates v and M probe products."""

    def __init__(self, denoiser, process: Process, probes: Tensor | None, cond: dict, sum_probes: bool, bar=None,
                 t_span=(0.0, 1.0), chunk: int = 64, velocity: Callable[..., Tensor] = pf_ode_velocity):
        self.denoiser, self.process, self.probes, self.cond, self.chunk = denoiser, process, probes, cond, chunk
        self.velocity = velocity  # (denoiser, process, x, t, **cond) -> dx/dt; CLD's phase-space one in likelihood/cld.py
        self.sum_probes, self.bar, self.t_span, self.nfe = sum_probes, bar, t_span, 0

    def _cond(self, m: int) -> dict:
        # conditioning tensors follow the tiled batch
        return {k: (v.repeat(m, *([1] * (v.ndim - 1))) if torch.is_tensor(v) and v.ndim > 0 else v) for k, v in self.cond.items()}

    def __call__(self, t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        self.nfe += 1
        x = state[0]
        if self.bar is not None:
            lo, hi = self.t_span
            self.bar.n = min(1000, int(1000 * abs(float(t) - lo) / abs(hi - lo)))
            self.bar.refresh()
        if self.probes is None:  # plain encoding/decoding: no divergence
            with torch.no_grad():
                return (self.velocity(self.denoiser, self.process, x, t, **self.cond),)
        b, divs, v0 = x.shape[0], [], None
        for probes in self.probes.split(self.chunk):
            m = probes.shape[0]
            with torch.enable_grad():
                # one forward and one backward over the batch tiled m times, probe k in tile k
                xr = x.detach().repeat(m, *([1] * (x.ndim - 1))).requires_grad_(True)
                v = self.velocity(self.denoiser, self.process, xr, t, **self._cond(m))
                p = probes.reshape(m * b, *x.shape[1:])
                (vjp,) = torch.autograd.grad(v, xr, p)
            divs.append(sum_flat(vjp * p).reshape(m, b).detach())
            v0 = v[:b].detach() if v0 is None else v0
        div = torch.cat(divs)
        if self.sum_probes:  # exact trace: the diagonal entries add up
            div = div.sum(0, keepdim=True)
        return (v0, div)


def _solve(dyn: _Dynamics, state: tuple[Tensor, ...], t0: float, t1: float, rtol: float, atol: float, solver: str):
    # the sampler's integrator (``samplers.ode.integrate_pf_ode``): one edge handling for sampling and likelihood
    with torch.no_grad():
        return integrate_pf_ode(dyn, state, t0, t1, rtol=rtol, atol=atol, method=solver)


def _check_common(process: Process, t_min: float | None, rtol: float, atol: float) -> float:
    t_min = process.t_min if t_min is None else float(t_min)
    if not (0 <= t_min < process.t_max):
        raise ValueError(f"t_min must lie in [0, {process.t_max:g}) for process '{process.name}', got {t_min:g}")
    if rtol <= 0 or atol <= 0:
        raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
    return t_min


def _bar(progress: bool, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=1000, desc=desc, leave=False, bar_format="{l_bar}{bar}| {elapsed}")


