"""Closed-form truth, the backbone of the tests and a product feature (benchmark any method against truth).

* ``gaussian``: Gaussian mixtures, whose every diffused marginal is again a Gaussian mixture (exact score,
  denoiser, log p_t, class posteriors, conditionals and linear-Gaussian posteriors); ``ring2d``,
  ``mixture64``, ``sliced_wasserstein``.
* ``categorical``: mixtures of products of categoricals and Markov chains over tokens, whose discrete-diffusion
  posterior p(x0^i | x_t) is exact (the oracle of ``scorediff.discrete``).
* ``gp``: Gaussian processes on a grid (one-component mixtures) for forecasting and imputation.
"""

from __future__ import annotations

from .categorical import CategoricalMixture, MarkovChain, all_sequences, random_mixture, total_variation
from .gaussian import (
    ConditionalDenoiser,
    ExactDenoiser,
    GaussianMixture,
    mixture64,
    ring2d,
    sliced_wasserstein,
)
from .gp import KERNELS, gaussian_process, kernel_matrix

__all__ = [
    "CategoricalMixture", "MarkovChain", "all_sequences", "random_mixture", "total_variation",
    "KERNELS", "ConditionalDenoiser", "ExactDenoiser", "GaussianMixture", "gaussian_process", "kernel_matrix",
    "mixture64", "ring2d", "sliced_wasserstein",
]
