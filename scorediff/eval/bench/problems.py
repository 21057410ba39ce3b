"""Benchmark problems: an analytic mixture under a process, shared start states, an exact sample of p0 and the
exact probability-flow ODE solutions (``pf_ode_reference``), and the errors of a sample against them."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchdiffeq import odeint

from ... import analytic, processes
from ...analytic import sliced_wasserstein
from ...utils import unknown

MIXTURES = ("ring2d", "mixture64")


@dataclass
class Problem:
    """One benchmark problem; everything every sampler is measured against."""

    name: str
    mixture: Any  # scorediff.analytic.GaussianMixture
    process: Any  # scorediff.processes.Process
    x_T: Tensor  # (n, *event) start states at t_max, float64, shared by every sampler
    exact: Tensor  # (n, *event) an independent exact sample of p0
    ref: Tensor | None  # exact PF-ODE solutions (at t = 0) from x_T[:ref_points]
    logp_mean: float  # E_p0[log p0], Monte Carlo over a large exact sample
    floor_sw: float  # sliced W2 between two independent exact samples of size n
    floor_gap: float  # plain gap of an independent exact sample of size n (sampling noise of the plain gap)
    gap_se: float  # standard error of a plain gap estimated from n samples
    logp_ode: Tensor | None = None  # (n,) log p0 at the exact PF-ODE images of x_T (the control variate)
    projections: int = 256
    proj_seed: int = 12345
    ref_seconds: float = 0.0
    ref_nfe: int = 0

    @property
    def n(self) -> int:
        return self.x_T.shape[0]

    def denoiser(self):
        """A fresh exact denoiser (its ``nfe`` counter starts at 0)."""
        return self.mixture.denoiser(self.process)

    def sw(self, x: Tensor) -> float:
        g = torch.Generator().manual_seed(self.proj_seed)  # the same projections for every sampler
        return float(sliced_wasserstein(x, self.exact, self.projections, generator=g))


def make_mixture(name: str):
    if name not in MIXTURES:
        raise unknown("mixture", name, MIXTURES)
    return getattr(analytic, name)()


def pf_ode_reference(mixture, process, x_start: Tensor, t_start: float, rtol: float = 1e-10,
                     t_end: float | None = None) -> tuple[Tensor, int]:
    """The exact probability-flow ODE solution at ``t_end`` from x_start at t_start; returns (x, model calls).
    Default: the noise-free end, sigma~ = 0 (the data), also for a process whose own times never reach it (VE).

    Solved in EDM coordinates: y = x / alpha, u = log sigma~, dy/du = y - D(y, sigma~) (Karras et al. 2022,
    eq. 4 with dt = sigma~ du), where D is the mixture's exact denoiser of y = x0 + sigma~ eps. This is
    independent of the process's own time variable (smooth where the process's is not: ``vp-discrete``
    interpolates its alphas piecewise) and of every sampler in the package. To t = 0 it stops at
    sigma~ = 1e-7 and returns D there (which differs from the sigma~ = 0 limit by O(1e-14)); to a t_end with
    sigma(t_end) > 0 (any t_end of VE: sigma(0) = sigma_min) it returns alpha(t_end) y at sigma~(t_end).
    Needs alpha(t_start) > 0 (not the pure-noise end of flow or cosine VP).
    """
    t0 = torch.tensor(float(t_start), dtype=torch.float64)
    if not float(process.alpha(t0)) > 0:
        raise ValueError(f"pf_ode_reference: alpha(t_start) = 0 for process '{process.name}' at t = {t_start:g}; "
                         "start below the pure-noise end")
    s_start = float(process.coeffs(t0).sigma_tilde)
    t1 = torch.tensor(0.0 if t_end is None else float(t_end), dtype=torch.float64)
    s_end = 0.0 if t_end is None else float(process.coeffs(t1).sigma_tilde)
    to_data = not s_end > 0
    s_end = 1e-7 if to_data else s_end
    ve = processes.make("edm", sigma_min=s_end / 10, sigma_max=max(s_start * 10, 100.0))
    calls = [0]

    def f(u: Tensor, y: Tensor) -> Tensor:
        calls[0] += 1
        return y - mixture.x0_mean(y, torch.exp(u), ve)

    y0 = x_start.to(torch.float64) / process.alpha(t0)
    u = torch.tensor([math.log(s_start), math.log(s_end)], dtype=torch.float64)
    y = odeint(f, y0, u, rtol=rtol, atol=rtol, method="dopri5")[-1]
    if not to_data:
        return y * process.alpha(t1), calls[0]
    return mixture.x0_mean(y, torch.tensor(s_end, dtype=torch.float64), ve), calls[0] + 1


def make_problem(
    name: str,
    process,
    n: int,
    *,
    seed: int = 0,
    ref_points: int = 256,
    rtol: float = 1e-10,
    gap_rtol: float | None = 1e-7,
    mc: int = 100_000,
) -> Problem:
    """Build a problem: start states, an exact sample, floors, E_p0[log p0] and the exact ODE solutions.

    ``ref_points`` starts get the rms reference at ``rtol``; all n starts get an ODE solution at ``gap_rtol``
    for the control-variate gap (None: the plain gap).
    """
    mixture = make_mixture(name) if isinstance(name, str) else name
    label = name if isinstance(name, str) else "mixture"
    g = torch.Generator().manual_seed(seed)
    x_T = process.prior_sample((n, *mixture.event_shape), g, dtype=torch.float64)
    exact = mixture.sample(n, torch.Generator().manual_seed(seed + 1))
    other = mixture.sample(n, torch.Generator().manual_seed(seed + 2))
    big = mixture.sample(mc, torch.Generator().manual_seed(seed + 3))
    lp = mixture.log_prob(big)
    prob = Problem(label, mixture, process, x_T, exact, None, float(lp.mean()), 0.0, 0.0,
                   float(lp.std() / math.sqrt(n)))
    prob.floor_sw = prob.sw(other)
    prob.floor_gap = prob.logp_mean - float(mixture.log_prob(other).mean())
    t0 = time.perf_counter()
    if ref_points > 0:
        prob.ref, prob.ref_nfe = pf_ode_reference(mixture, process, x_T[:ref_points], process.t_max, rtol)
    if gap_rtol is not None:
        x0, _ = pf_ode_reference(mixture, process, x_T, process.t_max, gap_rtol)
        prob.logp_ode = mixture.log_prob(x0)
    prob.ref_seconds = time.perf_counter() - t0
    return prob


def errors(problem: Problem, x: Tensor, deterministic: bool) -> dict[str, float | None]:
    """sw, gap and (for deterministic samplers) rms of samples x drawn from problem.x_T; nan if x is not finite."""
    x = x.to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        nan = float("nan")
        return {"sw": nan, "gap": nan, "rms": nan if deterministic else None}
    logp = problem.mixture.log_prob(x)
    plain = problem.logp_mean - float(logp.mean())
    out: dict[str, float | None] = {"sw": problem.sw(x), "gap": plain, "rms": None, "gap_plain": plain}
    if problem.logp_ode is not None:
        diff = problem.logp_ode - logp
        out["gap"] = float(diff.mean())
        out["gap_se"] = float(diff.std() / math.sqrt(len(diff)))
    if deterministic and problem.ref is not None:
        m = problem.ref.shape[0]
        # per-start mean squared error: kept so that two samplers can be compared start by start (paired), since
        # on a mixture a few trajectories that end in another mode than the exact ODE's dominate the rms
        sq = ((x[:m] - problem.ref) ** 2).reshape(m, -1).mean(1)
        out["rms"] = float(sq.mean().sqrt())
        out["rms_sq"] = sq
    return out
