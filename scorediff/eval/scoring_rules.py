"""Proper scoring rules for probabilistic forecasts given as ensembles of samples (Gneiting & Raftery 2007,
"Strictly Proper Scoring Rules, Prediction, and Estimation", JASA; eqs. 20-22), lower is better:

* CRPS, per scalar: CRPS(F, y) = E|X - y| - 1/2 E|X - X'|, X, X' ~ F independent; for an ensemble the
  expectations are sample means over the members (the "energy form"; the V-statistic of E|X - X'|, which is the
  CRPS of the ensemble's empirical distribution). ``crps`` averages it over the entries of each forecast.
* energy score, per multivariate forecast: ES(F, y) = E||X - y|| - 1/2 E||X - X'|| (Euclidean norm over the
  whole horizon and channels), which rewards getting the dependence across steps right, not only each marginal.
A deterministic forecast (one member) scores its absolute error (CRPS) or Euclidean error (ES).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _pair(samples: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    s, y = samples.to(torch.float64), y.to(torch.float64)
    if s.shape[1:] != y.shape:
        raise ValueError(f"samples (M, *shape) and observation (*shape) disagree: {tuple(s.shape)} vs {tuple(y.shape)}")
    return s.reshape(s.shape[0], -1), y.reshape(-1)


def crps(samples: Tensor, y: Tensor) -> float:
    """The mean over entries of the ensemble CRPS of ``samples`` (M, *shape) for the observation ``y`` (*shape)."""
    s, y = _pair(samples, y)
    spread = (s[:, None, :] - s[None, :, :]).abs().mean((0, 1))
    return float(((s - y).abs().mean(0) - 0.5 * spread).mean())


def energy_score(samples: Tensor, y: Tensor) -> float:
    """The ensemble energy score of ``samples`` (M, *shape) for the observation ``y`` (*shape)."""
    s, y = _pair(samples, y)
    return float(torch.linalg.vector_norm(s - y, dim=1).mean() - 0.5 * torch.cdist(s, s).mean())
