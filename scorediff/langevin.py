"""Plain (unadjusted) Langevin dynamics for a score model s(x) ~ grad_x log p(x).

Song & Ermon (2019), "Generative Modeling by Estimating Gradients of the Data Distribution", eq. (1);
Welling & Teh (2011); Roberts & Tweedie (1996) (the unadjusted Langevin algorithm):
    x_{k+1} = x_k + (eps / 2) s(x_k) + sqrt(eps) z_k,   z_k ~ N(0, I).
As eps -> 0 and the number of steps -> infinity, x follows p exactly; for finite eps there is a bias of
order eps (for p = N(mu, S) the chain's stationary law is N(mu, S (I - eps/4 S^{-1})^{-1})).

With a single score of a multi-modal p, the chain mixes between separated modes only over exponentially
long times, so the mode weights it ends with are those of its starting points' basins, not p's
(Song & Ermon 2019, Sec. 3.2.2 and Fig. 3). Annealing over noise levels fixes that: see the sampler
``annealed_langevin`` in ``scorediff.samplers``, which works on a noise-conditional Denoiser.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def langevin_dynamics(
    score_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    step_size: float,
    n_steps: int,
    generator: torch.Generator | None = None,
    *,
    return_trajectory: bool = False,
    callback: Callable[[int, Tensor], None] | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Run ``n_steps`` of unadjusted Langevin dynamics from ``x`` with step size eps = ``step_size``.

    Args:
        score_fn: s(x) -> grad_x log p(x), same shape as x (an ``EnergyScore`` works: it takes its
            own gradient).
        x: the starting points x_0, shape (B, *event).
        step_size: eps > 0; the update is x + eps/2 s(x) + sqrt(eps) z.
        n_steps: number of updates K >= 0.
        generator: the only source of the noise z.
        return_trajectory: also return every state, shape (K + 1, B, *event), x_0 first.
        callback: called as ``callback(k, x_k)`` after each update k = 1..K.

    Returns:
        x_K, or (x_K, trajectory) with ``return_trajectory``.
    """
    if not step_size > 0:
        raise ValueError(f"langevin: step_size must be > 0, got {step_size}")
    if n_steps < 0:
        raise ValueError(f"langevin: n_steps must be >= 0, got {n_steps}")
    noise_scale = math.sqrt(step_size)
    states = [x] if return_trajectory else None
    with torch.no_grad():
        for k in range(1, n_steps + 1):
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x = x + 0.5 * step_size * score_fn(x) + noise_scale * z
            if callback is not None:
                callback(k, x)
            if states is not None:
                states.append(x)
    if states is not None:
        return x, torch.stack(states)
    return x
