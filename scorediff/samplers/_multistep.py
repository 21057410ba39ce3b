"""The machinery shared by the exponential integrators in lambda (``dpm_solver``, ``dpm_solver_pp``, ``unipc``):
per-node lambda with infinite noise mapped to -inf, off-grid nodes placed by lambda, the divided differences of a
multistep history as weights, the per-step order, ``run_multistep``, the one loop that keeps the history, and
``run_singlestep``, the one loop of the singlestep methods (DPM-Solver-k, DPM-Solver++(2S)), whose intermediate
nodes sit at fixed fractions of each step in lambda.

Lu et al. 2022b (DPM-Solver++, Algorithm 2 and its third-order form) and Zhao et al. 2023 (UniPC, Algorithms
1-2) share this loop: at node i one model call gives x0_hat_i; the output a method keeps (x0_hat, or eps_hat for
the noise form) joins the history m_0 = m(lambda_i), m_1, ... (most recent first, at most ``order`` long); the
step's order k is limited by the warm-up (k <= usable history + 1) and, with ``lower_order_final``, by the steps
left; the method's step then combines x and the history.

Nodes at infinite noise. Where alpha(t_max) = 0 (flow, cosine VP; ``Grid.infinite``) lambda = -inf, so the first
step has h = inf: it is taken at order 1 (the DDIM step, finite in alpha/sigma form), and a model output at
lambda = -inf is never used as history (its ratio h_prev / h is infinite, so the difference it would enter with
vanishes): the next step runs at the order its finite history allows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..processes.base import Process
from ._common import Callback, Denoiser, Grid, Hook, denoise_to_zero, end_step

# Below this many steps the last steps of a multistep method drop to lower order for stability, as the
# DPM-Solver++ reference code and diffusers' ``lower_order_final`` do (diffusers uses 15).
LOWER_ORDER_FINAL_STEPS = 15


def grid_log_snr(grid: Grid) -> list[float]:
    """lambda at every node of ``grid``, with nodes at (numerically) infinite noise set to -inf."""
    return [-math.inf if grid.infinite(i) else lam for i, lam in enumerate(grid.lam)]


def node_at_log_snr(process: Process, lam: float) -> tuple[float, float, float]:
    """(t, alpha, sigma) of the off-grid node with log_snr = lam (a singlestep intermediate node)."""
    t = process.t_of_log_snr(torch.tensor(lam, dtype=torch.float64))
    return float(t), float(process._alpha(t)), float(process._sigma(t))


def nodes_at_log_snr(process: Process, lams: Sequence[float]) -> list[tuple[float, float, float]]:
    """``node_at_log_snr`` for many lambdas at once (one vectorised call per quantity, before a sampling loop)."""
    if not lams:
        return []
    t = process.t_of_log_snr(torch.tensor(list(lams), dtype=torch.float64))
    return list(zip(t.tolist(), process._alpha(t).tolist(), process._sigma(t).tolist()))


def difference_weights(h: float, lam_hist: Sequence[float], order: int, c1: float, c2: float = 0.0) -> list[float]:
    """Weights w_j with c1 D1 + c2 D2 = sum_j w_j m_j, over model outputs m_0, m_1, ... (most recent first).

    D1 and D2 are the multistep estimates of h m' and h^2 m'' / 2 from the divided differences at the
    lambdas ``lam_hist``, r_j = (lam_hist[j] - lam_hist[j + 1]) / h: order 2: D1 = (m_0 - m_1) / r_0;
    order 3: D1_j = (m_j - m_{j+1}) / r_j, D1 = D1_0 + r_0 / (r_0 + r_1) (D1_0 - D1_1),
    D2 = (D1_0 - D1_1) / (r_0 + r_1) (Lu et al. 2022b, Algorithm 2 and its third-order form). Expanding the
    differences into weights lets a step be one linear combination of the stored outputs.
    """
    r0 = (lam_hist[0] - lam_hist[1]) / h
    if order == 2:
        return [c1 / r0, -c1 / r0]
    r1 = (lam_hist[1] - lam_hist[2]) / h
    k0 = c1 * (1 + r0 / (r0 + r1)) + c2 / (r0 + r1)  # weight of D1_0
    k1 = -c1 * r0 / (r0 + r1) - c2 / (r0 + r1)  # weight of D1_1
    return [k0 / r0, -k0 / r0 + k1 / r1, -k1 / r1]


def multistep_order(order: int, i: int, steps: int, history: int, lower_order_final: bool) -> int:
    """The order of step i of a multistep method with ``history`` usable earlier model outputs.

    Warm-up: no more than history + 1. With ``lower_order_final`` and fewer than
    ``LOWER_ORDER_FINAL_STEPS`` steps, step i runs at most at order steps - i (the last at order 1).
    """
    k = min(order, history + 1)
    if lower_order_final and steps < LOWER_ORDER_FINAL_STEPS:
        k = min(k, steps - i)
    return max(k, 1)


def finite_history(lams: Sequence[float]) -> int:
    """How many of the earlier nodes (most recent first) have finite lambda and can serve as history."""
    n = 0
    for lam in lams:
        if not math.isfinite(lam):
            break
        n += 1
    return n


# step(i, x, x0_hat_i, nodes_i) -> the state at node i + 1, nodes_i the step's intermediate (t, alpha, sigma)
SingleStepFn = Callable[[int, Tensor, Tensor, list[tuple[float, float, float]]], Tensor]


def run_singlestep(
    denoiser: Denoiser,
    grid: Grid,
    x: Tensor,
    hook: Hook | None,
    callback: Callback | None,
    *,
    fractions: Sequence[Sequence[float]],
    step: SingleStepFn,
) -> Tensor:
    """The singlestep loop over ``grid`` from state x at ts[0] (Lu et al. 2022, Algorithms 1-2; 2022b, Alg. 1).

    Step i has intermediate nodes at lambda_i + r (lambda_{i+1} - lambda_i) for r in ``fractions[i]`` (empty: no
    intermediate node, e.g. from lambda = -inf or onto sigma = 0), all placed before the loop in one vectorised
    call. Per step: x0_hat_i = D(x, t_i); ``step(i, x, x0_hat_i, nodes_i)`` gives the state at node i + 1. Onto
    sigma = 0 the last step is the denoise-to-zero step.
    """
    lam = grid_log_snr(grid)
    wanted = [lam[i] + r * (lam[i + 1] - lam[i]) for i, fr in enumerate(fractions) for r in fr]
    flat = iter(nodes_at_log_snr(grid.process, wanted))
    nodes = [[next(flat) for _ in fr] for fr in fractions]
    for i in range(grid.steps):
        if grid.to_zero(i):
            return denoise_to_zero(denoiser, grid, x, hook, callback)
        x0_i = grid.denoise(denoiser, x, i)
        x = end_step(grid, i, step(i, x, x0_i, nodes[i]), x0_i, hook, callback)
    return x


# step(i, x, x0_hat_i, history, lam_history, k) -> the state at node i + 1 (before hook and callback)
StepFn = Callable[[int, Tensor, Tensor, list[Tensor], list[float], int], Tensor]


def run_multistep(
    denoiser: Denoiser,
    grid: Grid,
    x: Tensor,
    hook: Hook | None,
    callback: Callback | None,
    *,
    order: int,
    lower_order_final: bool,
    step: StepFn,
    output: Callable[[Tensor, Tensor, int], Tensor] | None = None,
    correct: StepFn | None = None,
) -> Tensor:
    """The multistep loop (see the module docstring) over ``grid``, from state x at ts[0].

    Per step i: x0_hat_i = D(x, t_i); ``correct(i, x, x0_hat_i, history, lam_history, 0)`` (UniPC's corrector;
    the history still ends at node i - 1) may replace x, the state at node i, before the history moves on; the kept output ``output(x, x0_hat_i, i)`` (default x0_hat_i) joins the
    history; k is the step's order (``multistep_order``; 1 from lambda = -inf); ``step(...)`` gives the state at
    node i + 1. Onto sigma = 0 the last step is the denoise-to-zero step.
    """
    lam = grid_log_snr(grid)
    hist: list[Tensor] = []
    lam_hist: list[float] = []
    for i in range(grid.steps):
        if grid.to_zero(i):
            return denoise_to_zero(denoiser, grid, x, hook, callback)
        x0_i = grid.denoise(denoiser, x, i)
        if correct is not None:
            x = correct(i, x, x0_i, hist, lam_hist, 0)
        m = x0_i if output is None else output(x, x0_i, i)
        hist, lam_hist = [m, *hist][:order], [lam[i], *lam_hist][:order]
        k = multistep_order(order, i, grid.steps, finite_history(lam_hist[1:]), lower_order_final)
        if not math.isfinite(lam[i]):
            k = 1
        x = end_step(grid, i, step(i, x, x0_i, hist, lam_hist, k), x0_i, hook, callback)
    return x
