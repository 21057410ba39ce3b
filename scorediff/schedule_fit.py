"""A time grid optimised on pilot trajectories: GITS (Chen et al. 2024, "A Geometric Perspective on
Diffusion Models", geometry-inspired time scheduling; see also Sabour et al. 2024, "Align Your Steps").

``optimize_schedule(denoiser, process, steps, x)`` returns a grid of ``steps + 1`` times (usable as
``scorediff.sample(..., schedule=ts)``) chosen for one model and one step count from a small batch of
pilot start states ``x`` (draws of the prior, never the states one later evaluates on):

1. Reference. A fine candidate grid t_0 = t_max > t_1 > ... > t_K (default: ``fine_steps`` = 128 steps
   uniform in lambda, ending at t = 0 with ``denoise_to_zero``) is integrated from x by a high-order
   sampler passed in (``scorediff.samplers.fit_schedule`` passes the registry's ``dpm_solver_pp_3m`` by
   default), keeping the state x_k at every node: a discretisation of the probability-flow ODE trajectory
   of each pilot start.
2. Costs. x0_hat_k = D(x_k, t_k) at every candidate node (the reference solver's own call there where it made
   one at exactly x_k, else one more call) gives eps_hat_k =
   (x_k - alpha_k x0_hat_k) / sigma_k. A first-order (DDIM) jump from node i to node j > i lands at
   alpha_j x0_hat_i + sigma_j eps_hat_i; its cost c(i, j) is the mean over the pilot batch of the squared
   distance to the reference state x_j (closed form: no further model calls). The distance is measured
   in units of sqrt(alpha_j^2 sigma_data^2 + sigma_j^2), the scale of x_t itself, so that the grid does
   not depend on the process's parametrisation (for VP with sigma_data = 1 this is x itself; for EDM,
   x_t ~ 80 at t_max, raw distances would otherwise spend every step at high noise).
3. Path. Dynamic programming over the candidates finds the path t_max = t_{k_0} > t_{k_1} > ... >
   t_{k_steps} = t_K with exactly ``steps`` jumps that minimises the summed cost sum_s c(k_s, k_{s+1})
   (GITS's objective: the summed local truncation errors of the jumps along the teacher trajectory).

The pilot costs ``ScheduleFit.pilot_nfe`` batched model calls: the reference solver's (``fine_steps`` for the
default multistep solver, whose calls at the nodes' states are reused in step 2) plus one per candidate node whose
x0_hat the solver did not already compute. It is a one-off per model and pilot batch (the costs serve every step
count: ``fit_schedule(...).grid(steps)``), amortised over all later sampling. The costs model a first-order step
only; the grid is then used with any solver (GITS reports gains for higher-order solvers too, but it is not their
optimum: on the benchmark's mixtures it helps UniPC-bh2 and DDIM and can hurt UniPC-bh1 and, at 20+ steps, other
multistep solvers, whose errors grow with uneven step ratios).

This module sits beside ``schedules`` (a grid is its result) and below the samplers: the reference sampler is
an argument, never looked up here. ``scorediff.samplers.fit_schedule`` / ``optimize_schedule`` take it by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from . import schedules
from .processes.base import Process

Denoiser = Callable[..., Tensor]


@dataclass
class ScheduleFit:
    """The pilot's result (``fit_schedule``): candidate grid and jump costs; ``grid(steps)`` picks the best path.

    The costs do not depend on the step count, so one pilot serves every step count (each a dynamic program).
    """

    candidates: Tensor  # the candidate grid t_0 = t_max > ... > t_K
    cost: Tensor  # (K + 1, K + 1) jump costs c(i, j) (inf for j <= i)
    pilot_nfe: int  # model calls the pilot took (reference trajectory + any x0_hat it did not compute)
    ends: Tensor | None = None  # the reference trajectory's end states (B, ...): a target for ``refine_schedule``

    def path(self, steps: int) -> tuple[list[int], float]:
        """The chosen candidate nodes for ``steps`` steps and their summed cost."""
        return best_path(self.cost, steps)

    def grid(self, steps: int) -> Tensor:
        """The optimised grid: ``steps + 1`` float64 times from t_max (a ``scorediff.sample`` schedule)."""
        return self.candidates[self.path(steps)[0]].clone()


def jump_costs(process: Process, ts: Tensor, xs: Tensor, x0s: Tensor, sigma_data: float = 1.0) -> Tensor:
    """c(i, j): mean squared distance between the DDIM jump from node i to j and the reference state x_j.

    ``xs`` (K + 1, B, ...) the reference states at the nodes ``ts``; ``x0s`` (K + 1, B, ...) x0_hat there
    (the last row is unused). Distances are in units of sqrt(alpha_j^2 sigma_data^2 + sigma_j^2), per
    coordinate. Entries with j <= i are +inf.
    """
    n = ts.numel()
    a = process._alpha(ts).to(torch.float64)
    s = process._sigma(ts).to(torch.float64)
    scale = torch.sqrt(a**2 * sigma_data**2 + s**2)
    xs = xs.reshape(n, xs.shape[1], -1).to(torch.float64)
    x0s = x0s.reshape(n, x0s.shape[1], -1).to(torch.float64)
    cost = torch.full((n, n), math.inf, dtype=torch.float64)
    for i in range(n - 1):
        if s[i] > 0:
            eps = (xs[i] - a[i] * x0s[i]) / s[i]
        else:  # a node at sigma = 0 is the end; it starts no jump
            continue
        j = torch.arange(i + 1, n)
        pred = a[j, None, None] * x0s[i] + s[j, None, None] * eps  # (J, B, D)
        err = (pred - xs[j]) / scale[j, None, None]
        cost[i, j] = err.pow(2).mean(dim=(1, 2))
    return cost


def best_path(cost: Tensor, steps: int) -> tuple[list[int], float]:
    """The path 0 = k_0 < k_1 < ... < k_steps = K minimising sum_s cost[k_s, k_{s+1}] (dynamic programming).

    ``cost`` (K + 1, K + 1), +inf where a jump is not allowed. O(steps K^2). Returns (nodes, total cost).
    """
    n = cost.shape[0]
    if not 1 <= steps <= n - 1:
        raise ValueError(f"steps = {steps} must lie between 1 and the candidate grid's {n - 1} intervals")
    cost = cost.to(torch.float64)
    # best[j] = the least cost of reaching node j from node 0 in exactly s jumps; arg[s][j] its last jump's start
    best = torch.full((n,), math.inf, dtype=torch.float64)
    best[0] = 0.0
    args = []
    for _ in range(steps):
        total = best[:, None] + cost  # (i, j): reach i, then jump i -> j
        best, arg = total.min(dim=0)
        args.append(arg)
    if not math.isfinite(float(best[-1])):
        raise ValueError("no finite path: the cost matrix allows no path of that many steps")
    path = [n - 1]
    for arg in reversed(args):
        path.append(int(arg[path[-1]]))
    path.reverse()
    return path, float(best[-1])


def fit_schedule(
    denoiser: Denoiser,
    process: Process,
    x: Tensor,
    *,
    fine_steps: int = 128,
    candidates: str | Tensor = "logsnr",
    reference: Callable[..., Tensor],
    denoise_to_zero: bool = False,
    sigma_data: float = 1.0,
    generator: torch.Generator | None = None,
) -> ScheduleFit:
    """Run the pilot (steps 1 and 2 of the module docstring): reference trajectory and jump costs.

    Args: as ``optimize_schedule``, without ``steps``; ``fit_schedule(...).grid(steps)`` is its result.
    ``generator`` is passed to the reference sampler: on a phase-space process (CLD) its samplers draw the start
    velocity v | x from it, so a later run that should follow the same trajectories must use the same seed.

    Phase-space processes (CLD, ``process.phase_space``): the denoiser is called on u = (x, v), the costs are
    measured on the position half x with the position marginal's alpha and sigma (the process's data-space view),
    and ``ends`` holds positions. The state u at a node is the reference's model input there (node 0: its first
    call, whose position half must be the start) or the callback's (x, v).
    """
    if isinstance(candidates, str):
        ts = schedules.make(candidates, fine_steps, process, denoise_to_zero=denoise_to_zero)
    else:
        ts = torch.as_tensor(candidates, dtype=torch.float64)
        if ts.ndim != 1 or ts.numel() < 2 or float(ts[0]) != process.t_max or not bool((ts[1:] < ts[:-1]).all()):
            raise ValueError("candidates must be a strictly decreasing 1-D grid starting at t_max = "
                             f"{process.t_max:g}, got {ts.tolist()[:6]}...")
    if not callable(reference):
        raise ValueError(f"reference must be a sampler function (e.g. scorediff.samplers.SAMPLERS[name]), got {reference!r}")
    calls = [0]
    seen: dict[float, tuple[Tensor, Tensor]] = {}  # the reference's model calls: time -> (input, x0_hat)

    def counted(xx: Tensor, t: Tensor, **cond) -> Tensor:
        calls[0] += 1
        out = denoiser(xx, t, **cond)
        tt = t.reshape(-1)[0] if torch.is_tensor(t) else t
        seen[float(tt)] = (xx, out)
        return out

    x = torch.as_tensor(x)
    phase = getattr(process, "phase_space", False)
    states, inputs = [x], [None]  # positions at the nodes; the model inputs there (phase space: u = (x, v))

    def record(info: dict) -> None:
        states.append(info["x"])
        inputs.append(process.join(info["x"], info["v"]) if phase else info["x"])

    with torch.no_grad():
        reference(counted, process, x, ts, callback=record, generator=generator)
        xs = torch.stack(states)  # (K + 1, B, ...)
        x0s = torch.empty_like(xs)
        x0s[-1] = xs[-1]
        like = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        first = seen.get(float(ts[0].to(x.dtype)))
        if not phase:
            inputs[0] = x
        elif first is not None and torch.equal(process.split(first[0])[0], x):
            inputs[0] = first[0]  # the start's velocity was drawn inside the reference sampler
        else:
            raise ValueError("on a phase-space process the reference sampler must call the model at its start "
                             f"state (e.g. cld_heun), got {getattr(reference, '__name__', reference)}")
        for k in range(ts.numel() - 1):  # x0_hat at every node that starts a jump: one call, unless the reference
            # solver already made it at exactly this state (a multistep solver such as DPM-Solver++(3M) evaluates
            # the model once per node, at the node's state), which halves the pilot's cost
            tk = float(ts[k].to(x.dtype))
            hit = seen.get(tk)
            if hit is not None and hit[0].shape == inputs[k].shape and torch.equal(hit[0], inputs[k]):
                x0s[k] = hit[1]
            else:
                x0s[k] = counted(inputs[k], like * float(ts[k]))
    return ScheduleFit(ts, jump_costs(process, ts, xs, x0s, sigma_data), calls[0], xs[-1])


def optimize_schedule(
    denoiser: Denoiser,
    process: Process,
    steps: int,
    x: Tensor,
    *,
    fine_steps: int = 128,
    candidates: str | Tensor = "logsnr",
    reference: Callable[..., Tensor],
    denoise_to_zero: bool = False,
    sigma_data: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A time grid of ``steps + 1`` nodes fitted to ``denoiser`` on pilot start states (GITS; module docstring).

    Args:
        denoiser: ``D(x, t) -> x0_hat`` (bind conditioning first, ``scorediff.samplers._common.bind_cond``).
        process: its forward process.
        steps: the number of steps the grid is for.
        x: pilot start states at t_max (e.g. 256 draws of ``process.prior_sample``), not the evaluation starts.
        fine_steps: intervals of the candidate grid (made by ``schedules.make(candidates, fine_steps, ...)``).
        candidates: a ``schedules`` name or an explicit descending grid starting at t_max.
        reference: the sampler function (signature of ``scorediff.samplers``) that integrates the reference
            trajectory on the candidate grid, e.g. ``SAMPLERS["dpm_solver_pp_3m"]``.
        denoise_to_zero: candidates (and so the result) end at t = 0, the last step denoising (see ``schedules``);
            where the chosen grid's last step starts is then also optimised.
        sigma_data: the data scale in the cost's normalisation.
        generator: passed to the reference sampler (on CLD it draws the start velocities).

    For several step counts, run the pilot once: ``fit = fit_schedule(...)``, then ``fit.grid(steps)``.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    fit = fit_schedule(denoiser, process, x, fine_steps=fine_steps, candidates=candidates, reference=reference,
                       denoise_to_zero=denoise_to_zero, sigma_data=sigma_data, generator=generator)
    if steps > fit.candidates.numel() - 1:
        raise ValueError(f"steps = {steps} exceeds the {fit.candidates.numel() - 1} intervals of the candidate "
                         "grid; raise fine_steps")
    return fit.grid(steps)


def refine_schedule(
    sampler: Callable[..., Tensor],
    denoiser: Denoiser,
    process: Process,
    ts: Tensor,
    x: Tensor,
    target: Tensor,
    *,
    rounds: int = 2,
    move: float = 0.5,
) -> tuple[Tensor, float, float]:
    """Refine a grid for one deterministic sampler by its own end-to-end error on pilot starts.

    GITS (``fit_schedule``) scores first-order jumps, which is not the optimum of a higher-order solver (it can
    hurt Heun and multistep solvers). This criterion is the one the protocols measure a grid by, in the manner of
    Align Your Steps (Sabour et al. 2024: optimise the grid of *the* solver on the model itself, by iterative
    refinement of its nodes): the RMS distance, over the pilot starts ``x``, between ``sampler``'s result on
    the grid and ``target`` (the pilot's reference end states, e.g. a 128-step DPM-Solver++(3M) solution).
    Coordinate descent: each interior node in turn is moved a fraction ``move`` of the way towards either
    neighbour in log-SNR (in t where a neighbour's log-SNR is infinite), the move kept when the error falls; the fraction halves every round. Endpoints stay fixed, the
    grid stays strictly decreasing. Cost: up to ``rounds * 2 * (steps - 1) + 1`` sampler runs on the pilot.

    Returns (grid, pilot error before, pilot error after).
    """
    info = getattr(sampler, "info", None)
    if info is not None and info.stochastic:
        raise ValueError(f"refine_schedule needs a deterministic sampler, got the stochastic {getattr(sampler, '__name__', sampler)}")
    ts = torch.as_tensor(ts, dtype=torch.float64).clone()
    if ts.ndim != 1 or ts.numel() < 2 or not bool((ts[1:] < ts[:-1]).all()):
        raise ValueError("ts must be a strictly decreasing 1-D grid of at least 2 times")
    n = x.shape[0]

    def err(grid: Tensor) -> float:
        with torch.no_grad():
            y = sampler(denoiser, process, x, grid)
        e = float((y - target).reshape(n, -1).pow(2).sum(1).mean().sqrt())
        return e if math.isfinite(e) else math.inf

    def moved(t: float, t_nb: float, frac: float) -> float:
        # in log-SNR (lambda) where both ends are finite, so that a node can approach sigma ~ 0 geometrically;
        # else (pure noise at t_max, or t = 0) in t
        lam, lam_nb = (float(process.log_snr(torch.tensor(v, dtype=torch.float64))) for v in (t, t_nb))
        if math.isfinite(lam) and math.isfinite(lam_nb):
            return float(process.t_of_log_snr(torch.tensor(lam + frac * (lam_nb - lam), dtype=torch.float64)))
        return t + frac * (t_nb - t)

    best = before = err(ts)
    frac = float(move)
    for _ in range(int(rounds)):
        for i in range(1, ts.numel() - 1):
            for nb in (i - 1, i + 1):
                trial = ts.clone()
                trial[i] = moved(float(ts[i]), float(ts[nb]), frac)
                if not bool((trial[1:] < trial[:-1]).all()):
                    continue
                e = err(trial)
                if e < best:
                    best, ts = e, trial
        frac /= 2
    return ts, before, best


__all__ = ["ScheduleFit", "best_path", "fit_schedule", "jump_costs", "optimize_schedule", "refine_schedule"]
