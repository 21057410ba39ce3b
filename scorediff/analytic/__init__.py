"""Closed-form truth, the backbone of the tests and a product feature (benchmark any method against truth).

* ``gaussian``: Gaussian mixtures, whose every diffused marginal is again a Gaussian mixture (exact score,
  denoiser, log p_t, class posteriors, conditionals and linear-Gaussian posteriors); ``ring2d``,
  ``mixture64``, ``sliced_wasserstein``.
* ``prompts``: a mixture whose "prompt" selects components: the exact denoiser taking ``context``.
* ``categorical``: mixtures of products of categoricals and Markov chains over tokens, whose discrete-diffusion
  posterior p(x0^i | x_t) is exact (the oracle of ``scorediff.discrete``).
* ``gp``: Gaussian processes on a grid (one-component mixtures) for forecasting and imputation.
* ``transport``: optimal transport between Gaussians and the straight flow it induces (flow-matching couplings).
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
from .gp import KERNELS, MaskedDenoiser, gaussian_process, kernel_matrix
from .prompts import PromptDenoiser, prompt_tokens
from .transport import GaussianBridgeDenoiser, OTFlowDenoiser, gaussian_ot_map, gaussian_w2_squared

__all__ = [
    "KERNELS", "CategoricalMixture", "ConditionalDenoiser", "ExactDenoiser", "GaussianBridgeDenoiser", "GaussianMixture",
    "MarkovChain", "MaskedDenoiser", "OTFlowDenoiser", "PromptDenoiser", "all_sequences", "gaussian_ot_map",
    "gaussian_process", "gaussian_w2_squared", "kernel_matrix", "mixture64", "prompt_tokens", "random_mixture", "ring2d",
    "sliced_wasserstein", "total_variation",
]
