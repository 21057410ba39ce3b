"""Discrete diffusion for tokens and categorical data: its own small stack beside the continuous one.

* ``schedules``: alpha(t) = exp(-sigma_bar(t)) (loglinear, geometric, cosine), apart from the transition graph;
* ``processes``: the absorbing and uniform chains per position, ``make(name, vocab=V)``, ``PROCESSES``,
  ``process.marginal(x0, t)``, ``process.prior_sample(shape, generator)``; ``make("absorbing", vocab=V, block=K)``
  is block diffusion (BD3-LM: masked diffusion within blocks of K tokens, blocks left to right);
* ``models``: the one model interface ``model(x_t, t, **cond) -> (B, L, V)`` log p(x0^i | x_t) and the conversions
  to concrete scores (ratios), reverse rates and reverse steps, written once; ``NetModel`` wraps a network;
* ``losses``: denoising score entropy (SEDD) and the masked-diffusion ELBO (MDLM); ``elbo`` in nats;
* ``samplers``: Euler and Tweedie tau-leaping, MDLM's cached ancestral sampler, first-hitting, predictor-corrector;
  ``SAMPLERS``, ``sample(model, process, (B, L), sampler=None, steps=None, seed=0, **options)``, infilling;
* ``autoregressive``: the left-to-right baseline of the same size, trained by the same loop.

The exact oracle (mixtures of products of categoricals, Markov chains) is ``scorediff.analytic.categorical``.

>>> import torch
>>> from scorediff import discrete
>>> from scorediff.analytic import random_mixture
>>> process = discrete.make("absorbing", vocab=3)
>>> oracle = random_mixture(vocab=3, length=4)
>>> x = discrete.sample(oracle.model(process), process, (8, 4), seed=0)
>>> x.shape, int(x.max()) < 3
(torch.Size([8, 4]), True)
"""

from __future__ import annotations

from .losses import OBJECTIVES, DiscreteLoss, bits_per_token, elbo, elbo_terms
from .models import NetModel, ratios, ratios_to_log_p0, reverse_rates, reverse_step_probs
from .processes import PROCESSES, Absorbing, DiscreteProcess, Uniform, make
from .samplers import DEFAULTS, SAMPLERS, SamplerInfo, sample
from .schedules import SCHEDULES, Schedule, make_schedule

__all__ = [
    "DEFAULTS", "OBJECTIVES", "PROCESSES", "SAMPLERS", "SCHEDULES", "Absorbing", "DiscreteLoss", "DiscreteProcess",
    "NetModel", "SamplerInfo", "Schedule", "Uniform", "bits_per_token", "elbo", "elbo_terms", "make",
    "make_schedule", "ratios", "ratios_to_log_p0", "reverse_rates", "reverse_step_probs", "sample",
]
