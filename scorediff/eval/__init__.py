"""Evaluation engines: sample-quality metrics on real data, and the sampler benchmark against closed-form truth.

* ``scorediff.eval.metrics``: ``frechet_distance``, ``kid``, ``precision_recall``, ``sliced_w2`` on feature arrays.
* ``scorediff.eval.features``: feature networks (raw data, FID's Inception-v3 from a local file, a classifier,
  any module) and the cache of reference features.
* ``scorediff.eval.evaluate``: draw samples from a denoiser and score them (``scorediff eval``, training hooks).
* ``scorediff.eval.bench``: every sampler against the exact oracle at matched NFE (``scorediff bench``).
"""

from .evaluate import evaluate, generate, prompted, score
from .features import Features, make_features, module_features, raw_features, reference_features
from .metrics import frechet_distance, gaussian_frechet, kid, precision_recall, sliced_w2

__all__ = ["Features", "evaluate", "frechet_distance", "gaussian_frechet", "generate", "kid", "prompted",
           "make_features", "module_features", "precision_recall", "raw_features", "reference_features", "score",
           "sliced_w2"]
