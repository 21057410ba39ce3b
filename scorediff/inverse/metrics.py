"""Measuring samples against an exact posterior (a Gaussian mixture): mode weights, TV and log-density gap."""

from __future__ import annotations

import torch
from torch import Tensor

from ..analytic import GaussianMixture, sliced_wasserstein

# -- measuring against the exact posterior ---------------------------------------------------------------------


def mode_weights(mixture: GaussianMixture, x: Tensor) -> Tensor:
    """The mean over samples of p(k | x) under ``mixture`` (K,): the mixture's weights if x ~ mixture."""
    # each component as a mixture of one (weight 1: a posterior's weight may underflow to 0)
    logj = torch.stack([GaussianMixture([1.0], mixture.means[k : k + 1], mixture.covs[k : k + 1],
                                        mixture.event_shape).log_prob(x) for k in range(mixture.num_components)], 1)
    return torch.softmax(logj + torch.log(mixture.weights)[None], dim=1).mean(0)


def posterior_errors(samples: Tensor, truth: GaussianMixture, n_ref: int = 20000, seed: int = 1) -> dict[str, float]:
    """How far samples are from the exact posterior ``truth``: ``tv`` (total variation between the mode weights
    of :func:`mode_weights` and truth's weights) and ``gap`` = E_truth[log p] - E_samples[log p] in nats (log p
    under truth; E_truth from ``n_ref`` exact draws), as in ``scorediff bench``."""
    x = samples.reshape(samples.shape[0], *truth.event_shape).to(torch.float64)
    tv = 0.5 * float((mode_weights(truth, x) - truth.weights).abs().sum())
    ref = truth.sample(n_ref, torch.Generator().manual_seed(seed))
    gap = float(truth.log_prob(ref).mean() - truth.log_prob(x).mean())
    return {"tv": tv, "gap": gap}




def moment_errors(samples: Tensor, truth: GaussianMixture, n_ref: int | None = None, seed: int = 1,
                  projections: int = 256) -> dict[str, float]:
    """How far samples (N, D_u) are from an exact conditional ``truth`` in its first two moments and in law:
    ``mean`` = max_i |mean_i - mean*_i|, ``cov`` = max_ij |cov_ij - cov*_ij|, ``sw2`` = sliced W2 to N exact draws
    (``n_ref``, default N), and ``sw2_floor``, the sliced W2 between two independent sets of N exact draws (the
    value a perfect sampler reaches at this N)."""

    x = samples.reshape(samples.shape[0], -1).to(torch.float64)
    n = n_ref or x.shape[0]
    g = torch.Generator().manual_seed(seed)
    ref, ref2 = truth.sample(n, g).reshape(n, -1), truth.sample(n, g).reshape(n, -1)
    m, c = truth.mean().reshape(-1), truth.covariance()
    cov = torch.cov(x.T) if x.shape[1] > 1 else x.var(0, keepdim=True)[None]

    def sw(a: Tensor, b: Tensor) -> float:
        return float(sliced_wasserstein(a[:n], b[:n], projections, generator=torch.Generator().manual_seed(seed)))

    return {"mean": float((x.mean(0) - m).abs().max()), "cov": float((cov - c).abs().max()),
            "sw2": sw(x, ref), "sw2_floor": sw(ref2, ref)}
