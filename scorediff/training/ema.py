"""Exponential moving average of the weights (Polyak averaging; as used by DDPM, Ho et al. 2020, and EDM).

theta_ema <- decay * theta_ema + (1 - decay) * theta after every optimizer step. The decay may be
given directly or as a half-life in steps h, decay = 0.5 ** (1 / h) (EDM's "ema_halflife" in steps).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def decay_from(decay: float | None, half_life_steps: float | None) -> float:
    """The per-step decay from a decay or a half-life in optimizer steps."""
    if decay is not None:
        return float(decay)
    if half_life_steps is None:
        return 0.0  # no averaging: the EMA model is the model
    return 0.5 ** (1.0 / float(half_life_steps))


class EMA:
    """An averaged copy of ``model`` (kept in float32, in eval mode, without gradients)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        # lerp: ema + (1 - decay) (p - ema) = decay ema + (1 - decay) p
        torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)
