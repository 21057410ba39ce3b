"""DPM-Solver (Lu et al. 2022, "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling
in Around 10 Steps", NeurIPS): exponential integrators of the probability-flow ODE in lambda, noise form.

Symbols. lambda = log(alpha / sigma) (half log-SNR, increasing towards the data), h = lambda_t - lambda_s > 0
for a step s -> t, eps_hat the noise prediction (derived from the Denoiser's x0_hat). The PF-ODE solution is
(Lu et al. 2022, eq. 3.4 / Prop. 3.1)

    x_t = alpha_t / alpha_s x_s - alpha_t int_{lambda_s}^{lambda_t} e^{-lambda} eps_hat(lambda) d lambda,

and a k-th order solver expands eps_hat in lambda around lambda_s. The first-order step is DDIM, written
here as x_t = alpha_t x0_hat_s + sigma_t eps_hat_s (an exact identity that stays finite where alpha_s = 0).

The multistep variant runs on the loop shared with ``dpm_solver_pp`` and ``unipc`` (``_multistep``); this
module holds what is DPM-Solver's own: the noise-form weights, the singlestep steps and the DPM-Solver-fast
order schedule.

Nodes at infinite noise (alpha = 0, lambda = -inf): the step from there is the DDIM step; singlestep
intermediate nodes do not exist there (see ``_multistep`` for the multistep history).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..processes.base import Process
from ._common import (
    Callback,
    Denoiser,
    Grid,
    Hook,
    call_model,
    lincomb,
    sampler_info,
)
from ._multistep import difference_weights, grid_log_snr, run_multistep, run_singlestep


def fast_orders(nfe: int, order: int = 3) -> list[int]:
    """The per-step orders of singlestep DPM-Solver-fast for a budget of ``nfe`` model evaluations.

    Lu et al. (2022), Sec. 3.4: K = nfe // 3 + 1 steps, all of order 3 but the last one or two, which take the
    remainder (nfe % 3 == 0: ..., 2, 1; == 1: ..., 1; == 2: ..., 2). For order 2: nfe // 2 steps of order 2
    (+ one of order 1 if nfe is odd); order 1 is nfe DDIM steps. sum(orders) == nfe.
    """
    nfe, order = int(nfe), int(order)
    if order not in (1, 2, 3):
        raise ValueError(f"dpm_solver: order must be 1, 2 or 3, got {order}")
    if nfe < order:
        raise ValueError(f"dpm_solver: nfe must be >= order ({order}), got {nfe}")
    if order == 3:
        k = nfe // 3 + 1
        if nfe % 3 == 0:
            return [3] * (k - 2) + [2, 1]
        return [3] * (k - 1) + [nfe % 3]
    if order == 2:
        return [2] * (nfe // 2) + [1] * (nfe % 2)
    return [1] * nfe


def _phi(h: float) -> tuple[float, float, float]:
    """The noise-form weights phi_1 = e^h - 1, phi_2 = phi_1 / h - 1, phi_3 = phi_2 / h - 1/2.

    sigma_t (phi_1, phi_2 h, phi_3 h^2) are the weights of eps_hat and its first two lambda-derivatives in the
    exact integral (Lu et al. 2022, eq. 3.6); for small h they come from their Taylor series, which avoids
    the cancellation in (e^h - 1 - h) / h.
    """
    if abs(h) < 1e-3:
        phi2 = h / 2 + h * h / 6 + h**3 / 24
        phi3 = h / 6 + h * h / 24 + h**3 / 120
        return math.expm1(h), phi2, phi3
    phi1 = math.expm1(h)
    phi2 = phi1 / h - 1
    return phi1, phi2, phi2 / h - 0.5


# ---------------------------------------------------------------------------------------------------
# DPM-Solver steps (noise prediction)
# ---------------------------------------------------------------------------------------------------


def _singlestep_noise(denoiser, grid, i, x, x0_s, lam_s, lam_t, order, nodes):
    """One singlestep DPM-Solver step of ``order`` from node i (state x, x0_hat_s) to node i + 1.

    Lu et al. (2022), Algorithm 1 (DPM-Solver-2, r1 = 1/2) and Algorithm 2 (DPM-Solver-3, r1 = 1/3,
    r2 = 2/3); intermediate nodes s_j sit at lambda_s + r_j h, ``nodes`` their precomputed (t, alpha, sigma).
    The eps differences D_j = eps(u_j) - eps_s are formed from x0_hat differences (u_j is built from x0_hat_s
    and eps_s, so eps(u_j) - eps_s = e^{lambda_j} (x0_hat_s - x0_hat_j) - [correction of u_j] / sigma_j
    exactly), which avoids cancelling two O(1) noise estimates when alpha_s is small. With
    eps_s = p x + q x0_hat_s every u_j and x_t is then one linear combination of x, x0_hat_s and the
    intermediate outputs, with bounded weights (e^{lambda_j} sigma_t <= alpha_t e^{h}): one pass per term.
    """
    alpha_t, sigma_t = grid.alpha[i + 1], grid.sigma[i + 1]
    p, q = 1.0 / grid.sigma[i], -grid.alpha[i] / grid.sigma[i]  # eps_s = p x + q x0_hat_s
    if order == 1:
        return grid.ddim(x, x0_s, i)  # DPM-Solver-1 = DDIM
    h = lam_t - lam_s
    phi1, phi2, _ = _phi(h)
    if order == 2:
        r1 = 0.5
        (t1, a1, s1), = nodes
        u1 = lincomb((s1 * p, x), (a1 + s1 * q, x0_s))
        m1 = call_model(denoiser, u1, t1)
        k1 = sigma_t / (2 * r1) * phi1 * math.exp(lam_s + r1 * h)  # Algorithm 1, line 4: x_t - k1 (x0_s - m1)
        return lincomb((sigma_t * p, x), (alpha_t + sigma_t * q - k1, x0_s), (k1, m1))
    r1, r2 = 1.0 / 3.0, 2.0 / 3.0
    (t1, a1, s1), (t2, a2, s2) = nodes
    e1, e2 = math.exp(lam_s + r1 * h), math.exp(lam_s + r2 * h)
    u1 = lincomb((s1 * p, x), (a1 + s1 * q, x0_s))
    m1 = call_model(denoiser, u1, t1)  # d1 = e1 (x0_s - m1)
    c2 = (r2 / r1) * _phi(r2 * h)[1]
    # Algorithm 2, line 5: u2 = a2 x0_s + s2 eps_s - s2 c2 d1
    u2 = lincomb((s2 * p, x), (a2 + s2 * q - s2 * c2 * e1, x0_s), (s2 * c2 * e1, m1))
    m2 = call_model(denoiser, u2, t2)  # d2 = e2 (x0_s - m2) - c2 d1
    k = sigma_t / r2 * phi2  # Algorithm 2, line 7: x_t - k d2
    return lincomb(
        (sigma_t * p, x), (alpha_t + sigma_t * q - k * e2 + k * c2 * e1, x0_s), (k * e2, m2), (-k * c2 * e1, m1)
    )


def _multistep_noise_weights(sigma_t, h, lam_hist, order, reference_third_order=False) -> list[float]:
    """Weights of eps_0, eps_1, ... (most recent first) in the higher-order part of a multistep DPM-Solver step.

    Noise form, the reference's "dpmsolver" type; order >= 2. Order 2: - sigma_t phi_1 D1 / 2 with
    D1 = (eps_0 - eps_1) / r0, r0 = h_0 / h (Lu et al. 2022b, Sec. 4 / App.). Order 3:
    - sigma_t (phi_2 D1 + 2 phi_3 D2), where D1 estimates h eps' and D2 = (D1_0 - D1_1) / (r0 + r1) estimates
    h^2 eps'' / 2 (hence the 2; the reference code's weight phi_3, ``reference_third_order``, leaves the step
    second order; see ``dpm_solver_pp._data_weights``). ``difference_weights`` expands the D's.
    """
    phi1, phi2, phi3 = _phi(h)
    if order == 2:
        return difference_weights(h, lam_hist, 2, -0.5 * sigma_t * phi1)
    c2 = 1.0 if reference_third_order else 2.0
    return difference_weights(h, lam_hist, 3, -sigma_t * phi2, -c2 * sigma_t * phi3)


@sampler_info(
    order=3,
    stochastic=False,
    nfe_per_step=3,
    default_schedule="logsnr_cosine",
    description="DPM-Solver (Lu et al. 2022), noise form; singlestep order 3 by default, or multistep",
)
def sample_dpm_solver(
    denoiser: Denoiser,
    process: Process,
    x: Tensor,
    ts: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    hook: Hook | None = None,
    order: int = 3,
    method: str = "singlestep",
    nfe: int | None = None,
    lower_order_final: bool = True,
    reference_third_order: bool = False,
) -> Tensor:
    """DPM-Solver (Lu et al. 2022, NeurIPS), the noise-prediction exponential integrator in lambda.

    Args:
        order: 1 (= DDIM), 2 or 3.
        method: "singlestep" (the paper's DPM-Solver-k: k - 1 intermediate nodes per step, placed by lambda at
            r1 = 1/2 for order 2, r1 = 1/3 and r2 = 2/3 for order 3; k model evaluations per step) or
            "multistep" (one evaluation per step, earlier outputs as history; the first steps warm up).
        nfe: singlestep only: the DPM-Solver-fast budget (Lu et al. 2022, Sec. 3.4). The steps then follow
            ``fast_orders(nfe, order)`` (all order 3 but the last one or two), so ts must hold exactly
            len(fast_orders(nfe, order)) steps (nfe // 3 + 1 for order 3), e.g. a logsnr grid made with
            that many steps. Without ``nfe`` every step of ts is of ``order``: NFE = order * steps.
        lower_order_final: multistep only: with fewer than 15 steps the last steps drop to lower order.
        reference_third_order: multistep order 3 only: weigh the second difference as the reference code
            does (second order in fact; see ``_multistep_noise_weights``), for comparison.

    Steps and NFE: ts gives the outer steps; singlestep uses order evaluations per step (fewer in the
    fast schedule), multistep one. A first node at infinite noise (alpha = 0) is a DDIM step (1 NFE), and a
    last step onto sigma = 0 returns x0_hat (1 NFE). Symbols as in the module docstring.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"dpm_solver: order must be 1, 2 or 3, got {order!r}")
    if method not in ("singlestep", "multistep"):
        raise ValueError(f"dpm_solver: method {method!r} unknown; one of: multistep, singlestep")
    grid = Grid(process, ts, like=x)
    lam = grid_log_snr(grid)
    if method == "singlestep":
        orders = [order] * grid.steps
        if nfe is not None:
            orders = fast_orders(nfe, order)
            if len(orders) != grid.steps:
                raise ValueError(
                    f"dpm_solver: nfe={nfe} at order {order} takes {len(orders)} steps (orders {orders}), "
                    f"so ts must hold {len(orders) + 1} times; got {grid.steps + 1}"
                )
        # no intermediate node exists at lambda = -inf; none is needed onto sigma = 0
        orders = [1 if not math.isfinite(lam[i]) or grid.to_zero(i) else k for i, k in enumerate(orders)]
        fractions = {1: (), 2: (0.5,), 3: (1.0 / 3.0, 2.0 / 3.0)}
        return run_singlestep(
            denoiser, grid, x, hook, callback, fractions=[fractions[k] for k in orders],
            step=lambda i, x, x0_s, nodes: _singlestep_noise(denoiser, grid, i, x, x0_s, lam[i], lam[i + 1],
                                                             orders[i], nodes))
    if nfe is not None:
        raise ValueError("dpm_solver: nfe applies to method='singlestep' only")

    def step(i: int, x: Tensor, x0_s: Tensor, eps_hist: list[Tensor], lam_hist: list[float], k: int) -> Tensor:
        # DDIM part alpha_t x0_hat + sigma_t eps_s, plus the weighted history, as one combination
        w = [0.0] * k
        if k > 1:
            w = _multistep_noise_weights(grid.sigma[i + 1], lam[i + 1] - lam[i], lam_hist, k, reference_third_order)
        w[0] += grid.sigma[i + 1]
        return lincomb((grid.alpha[i + 1], x0_s), *zip(w, eps_hist))

    return run_multistep(denoiser, grid, x, hook, callback, order=order, lower_order_final=lower_order_final,
                         step=step, output=lambda x, x0_s, i: grid.eps(x, x0_s, i))
