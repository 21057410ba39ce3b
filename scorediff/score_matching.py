"""Score matching without diffusion: objectives that fit a score model s(x) ~ grad_x log p(x) to data.

Each objective returns a per-example loss of shape (B,) whose expectation over the data equals the
Fisher divergence 1/2 E_p ||s(x) - grad log p(x)||^2 up to a constant that does not depend on the model
(for denoising score matching: the Fisher divergence to the *noised* data density q_sigma).

=====================  ==============================================================  ===========================
objective              per-example loss                                                paper
=====================  ==============================================================  ===========================
exact                  tr(grad_x s(x)) + 1/2 ||s(x)||^2                                Hyvarinen (2005), eq. (4)
sliced                 v^T grad_x(v^T s(x)) + 1/2 (v^T s(x))^2, v ~ p_v                Song et al. (2019), eq. (7)
sliced-vr              v^T grad_x(v^T s(x)) + 1/2 ||s(x)||^2                           Song et al. (2019), eq. (8)
dsm                    1/2 ||s(x + sigma z) + z / sigma||^2, z ~ N(0, I)              Vincent (2011), eq. (11)
=====================  ==============================================================  ===========================

Symbols: s is the model score (any callable ``score_fn(x) -> Tensor`` of x's shape; for a noise-conditional
model s(x, sigma) pass ``lambda x: s(x, sigma)``), x a batch (B, *event) with D = prod(event), v a
projection with E[v v^T] = I (Gaussian, Rademacher, or uniform on the sphere of radius sqrt(D)).
The model must treat examples independently (no batch statistics), since the Jacobian trace is taken
through the batch sum. Randomness comes only from the ``generator`` passed in.

``langevin_dynamics`` samples a fitted score model by plain (unadjusted) Langevin dynamics (below).

``EnergyScore`` turns an energy network E(x) into a score model s(x) = -grad_x E(x) that can be trained
by any of these objectives (the gradient is taken with ``create_graph`` so the loss reaches E's weights).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .samplers._common import langevin_step
from .utils import sum_flat, unknown

ScoreFn = Callable[[Tensor], Tensor]

PROJECTIONS = ("gaussian", "rademacher", "sphere")


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def _as_leaf(x: Tensor) -> Tensor:
    """x as a tensor that requires grad; an x already requiring grad is kept so higher derivatives flow."""
    return x if x.requires_grad else x.detach().requires_grad_(True)


def exact_score_matching(score_fn: ScoreFn, x: Tensor, *, create_graph: bool = True) -> Tensor:
    """Hyvarinen (2005) exact score matching: tr(grad_x s(x)) + 1/2 ||s(x)||^2 per example, shape (B,).

    E_p of this equals 1/2 E_p ||s - grad log p||^2 - 1/2 E_p ||grad log p||^2 (integration by parts,
    Hyvarinen's Theorem 1), so minimising it minimises the Fisher divergence without knowing p.
    The trace of the Jacobian costs D backward passes: use it for low D (sliced matching scales).
    ``create_graph=True`` keeps the graph so the loss can be back-propagated into the model.
    """
    with torch.enable_grad():
        x = _as_leaf(x)
        s = _flat(score_fn(x))
        d = s.shape[1]
        trace = torch.zeros(s.shape[0], dtype=s.dtype, device=s.device)
        for i in range(d):
            # the batch sum is safe: d s_b / d x_c = 0 for b != c
            (g,) = torch.autograd.grad(s[:, i].sum(), x, create_graph=create_graph, retain_graph=True)
            trace = trace + _flat(g)[:, i]
        return trace + 0.5 * (s**2).sum(1)


def _projections(shape: tuple[int, ...], kind: str, generator, dtype, device) -> Tensor:
    """Random v with E[v v^T] = I over the trailing (event) dimensions of ``shape``."""
    if kind == "gaussian":
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
    if kind == "rademacher":
        bits = torch.randint(0, 2, shape, generator=generator, device=device)
        return (2 * bits - 1).to(dtype)
    if kind == "sphere":
        v = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        flat = v.reshape(shape[0], -1)
        return (flat * (math.sqrt(flat.shape[1]) / flat.norm(dim=1, keepdim=True))).reshape(shape)
    raise unknown("projection distribution", kind, PROJECTIONS)


def sliced_score_matching(
    score_fn: ScoreFn,
    x: Tensor,
    *,
    projections: int = 1,
    distribution: str = "gaussian",
    variance_reduction: bool = False,
    generator: torch.Generator | None = None,
    create_graph: bool = True,
) -> Tensor:
    """Sliced score matching (Song, Garg, Shi & Ermon 2019, "Sliced Score Matching"), shape (B,).

    Per example, averaged over K = ``projections`` random directions v:
        v^T grad_x (v^T s(x)) + 1/2 (v^T s(x))^2      (eq. 7; SSM)
        v^T grad_x (v^T s(x)) + 1/2 ||s(x)||^2         (eq. 8; SSM-VR, ``variance_reduction=True``)
    Since E_v[v v^T] = I, both have the expectation of exact score matching, at the cost of one
    backward pass per direction instead of D. ``distribution``: "gaussian", "rademacher" or "sphere"
    (uniform on the sphere of radius sqrt(D)); the variance-reduced form is exact in expectation for all three.
    """
    if projections < 1:
        raise ValueError(f"sliced score matching: projections must be >= 1, got {projections}")
    b = x.shape[0]
    with torch.enable_grad():
        # K copies of the batch, one direction each: one forward and one backward pass for all K
        xk = _as_leaf(x.repeat(projections, *([1] * (x.ndim - 1))))
        v = _projections(tuple(xk.shape), distribution, generator, x.dtype, x.device)
        s = score_fn(xk)
        sv = sum_flat(s * v)
        (g,) = torch.autograd.grad(sv.sum(), xk, create_graph=create_graph)
        vjv = sum_flat(g * v)  # v^T (grad_x s) v
        second = 0.5 * sum_flat(s**2) if variance_reduction else 0.5 * sv**2
        return (vjv + second).reshape(projections, b).mean(0)


def denoising_score_matching(
    score_fn: ScoreFn, x: Tensor, sigma: float | Tensor, *, generator: torch.Generator | None = None
) -> Tensor:
    """Single-sigma denoising score matching (Vincent 2011, eq. 11): 1/2 ||s(x~) + z / sigma||^2, shape (B,).

    x~ = x + sigma z with z ~ N(0, I), so -z / sigma = grad log q_sigma(x~ | x). Its expectation equals the
    Fisher divergence of s to the noised density q_sigma = p * N(0, sigma^2 I) plus a constant, so the
    minimiser is grad log q_sigma, not grad log p: a single small sigma is NCSN's building block.
    ``sigma`` may be a float or a (B,) tensor (one level per example).
    """
    sigma_t = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if (sigma_t <= 0).any():
        raise ValueError(f"denoising score matching: sigma must be > 0, got {sigma}")
    if sigma_t.ndim == 1:
        sigma_t = sigma_t.reshape(-1, *([1] * (x.ndim - 1)))
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    s = score_fn(x + sigma_t * z)
    return 0.5 * sum_flat((s + z / sigma_t) ** 2)


def _exact(score_fn, x, *, generator=None, **options):
    return exact_score_matching(score_fn, x, **options)


def _sliced(score_fn, x, *, generator=None, **options):
    return sliced_score_matching(score_fn, x, generator=generator, **options)


def _sliced_vr(score_fn, x, *, generator=None, **options):
    return sliced_score_matching(score_fn, x, generator=generator, variance_reduction=True, **options)


def _dsm(score_fn, x, *, generator=None, sigma: float = 0.1):
    return denoising_score_matching(score_fn, x, sigma, generator=generator)


#: name -> objective(score_fn, x, *, generator=None, **options) -> (B,)
OBJECTIVES: dict[str, Callable[..., Tensor]] = {
    "exact": _exact,
    "sliced": _sliced,
    "sliced-vr": _sliced_vr,
    "dsm": _dsm,
}


def score_matching_loss(
    name: str, score_fn: ScoreFn, x: Tensor, *, generator: torch.Generator | None = None, **options
) -> Tensor:
    """Per-example loss (B,) of the objective ``name`` ("exact", "sliced", "sliced-vr", "dsm")."""
    if name not in OBJECTIVES:
        raise unknown("score matching objective", name, OBJECTIVES)
    return OBJECTIVES[name](score_fn, x, generator=generator, **options)


class EnergyScore(nn.Module):
    """A score model from an energy: s(x) = -grad_x E(x), so p(x) is proportional to exp(-E(x)).

    ``energy_net(x, *args, **kwargs)`` returns one energy per example, shape (B,) or (B, 1). The gradient
    is taken with ``create_graph`` whenever autograd is recording (training, or an objective that
    differentiates s again), so a score matching loss reaches the energy's weights; under ``torch.no_grad``
    (sampling) it is a plain first-order gradient and the result is detached.
    A conservative score by construction (its Jacobian is symmetric), unlike a free score network.
    """

    def __init__(self, energy_net: nn.Module):
        super().__init__()
        self.energy_net = energy_net

    def energy(self, x: Tensor, *args, **kwargs) -> Tensor:
        """E(x), shape (B,)."""
        e = self.energy_net(x, *args, **kwargs)
        if e.shape not in ((x.shape[0],), (x.shape[0], 1)):
            raise ValueError(f"energy_net must return shape ({x.shape[0]},) or ({x.shape[0]}, 1), got {tuple(e.shape)}")
        return e.reshape(x.shape[0])

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        recording = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = _as_leaf(x)
            (g,) = torch.autograd.grad(self.energy(xg, *args, **kwargs).sum(), xg, create_graph=recording)
        return -g if recording else -g.detach()


# -- sampling: plain (unadjusted) Langevin dynamics on a score model ------------------------------------


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

    Song & Ermon (2019), eq. (1); Welling & Teh (2011); Roberts & Tweedie (1996) (the unadjusted Langevin
    algorithm): x_{k+1} = x_k + (eps / 2) s(x_k) + sqrt(eps) z_k, z_k ~ N(0, I). For finite eps the chain is
    biased by O(eps) (for p = N(mu, S) its stationary law is N(mu, S (I - eps/4 S^{-1})^{-1})). With one score
    of a multi-modal p the chain keeps its starting points' mode weights (Song & Ermon 2019, Sec. 3.2.2):
    the sampler ``annealed_langevin`` in ``scorediff.samplers`` anneals over noise levels on a Denoiser instead.

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
    states = [x] if return_trajectory else None
    with torch.no_grad():
        for k in range(1, n_steps + 1):
            x = langevin_step(x, score_fn(x), step_size, generator)
            if callback is not None:
                callback(k, x)
            if states is not None:
                states.append(x)
    if states is not None:
        return x, torch.stack(states)
    return x
