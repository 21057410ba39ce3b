"""Exponential moving average of the weights (Polyak averaging; as used by DDPM, Ho et al. 2020, and EDM),
with EDM's warm-up of the averaging length (Karras et al. 2022, Appendix F.3, ``ema_rampup_ratio``).

After optimizer step k (k = 0, 1, ... counts the steps before this one)

    theta_ema <- beta_k theta_ema + (1 - beta_k) theta,

with beta_k = 0.5 ** (1 / h_k): h_k is the half-life in optimizer steps. Without warm-up h_k = h, the
configured half-life (or beta_k = the configured decay). With warm-up ratio r the half-life is capped
at a fraction of the steps taken so far,

    h_k = min(h, r * k),   beta_k = 0.5 ** (1 / h_k)   (beta_0 = 0: the first average is the model),

so the average never weights the initial random weights more than the trained ones: it spans the last
~r of the run until the run is long enough for the full half-life (k >= h / r). A fixed ``decay``
d becomes the half-life h = ln(0.5) / ln(d) under warm-up.

The EMA also tracks, exactly, the weight its average still puts on the initial weights
(``init_weight`` = prod_j beta_j) and its centre of mass in steps (``mean_step`` = sum_i w_i i over the
iterates theta_0..theta_k); ``age`` = steps - mean_step is how many steps old the average is. They are
saved with the checkpoint so ``scorediff sample`` can warn about an average still made of the
initial weights.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..utils import ema_update_


def decay_from(decay: float | None, half_life_steps: float | None) -> float:
    """The per-step decay from a decay or a half-life in optimizer steps."""
    if decay is not None:
        return float(decay)
    if half_life_steps is None:
        return 0.0  # no averaging: the EMA model is the model
    return 0.5 ** (1.0 / float(half_life_steps))


def ema_decay_at(step: int, decay: float, rampup_ratio: float | None) -> float:
    """beta_k for the update after optimizer step ``step`` (= k, the steps before it); see the module doc."""
    if rampup_ratio is None or decay <= 0.0:
        return decay
    half_life = math.log(0.5) / math.log(decay)  # h from beta = 0.5 ** (1 / h)
    h_k = min(half_life, rampup_ratio * step)
    return 0.5 ** (1.0 / h_k) if h_k > 0 else 0.0


class EMA:
    """An averaged copy of ``model`` (kept in float32, in eval mode, without gradients).

    ``decay`` is the long-run beta; ``rampup_ratio`` (None: off) caps the half-life at that fraction of
    the steps so far. ``steps``, ``init_weight`` and ``mean_step`` are the averaging state (``state()`` /
    ``load_state()``; with the weights, that is all a resume needs).
    """

    def __init__(self, model: nn.Module, decay: float, rampup_ratio: float | None = None):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        if rampup_ratio is not None and not rampup_ratio > 0:
            raise ValueError(f"EMA rampup_ratio must be positive or None, got {rampup_ratio}")
        self.decay = decay
        self.rampup_ratio = rampup_ratio
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.steps = 0  # updates so far
        self.init_weight = 1.0  # weight of theta_0 in the average
        self.mean_step = 0.0  # sum_i w_i * i

    @property
    def age(self) -> float:
        """Steps between now and the average's centre of mass (0 for no averaging)."""
        return self.steps - self.mean_step

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        beta = ema_decay_at(self.steps, self.decay, self.rampup_ratio)
        ema_update_(self.model, model, beta)
        self.steps += 1
        self.init_weight *= beta
        self.mean_step = beta * self.mean_step + (1.0 - beta) * self.steps

    def state(self) -> dict:
        """The averaging state as JSON (floats round-trip exactly through Python's json)."""
        return {"decay": self.decay, "rampup_ratio": self.rampup_ratio, "steps": self.steps,
                "init_weight": self.init_weight, "mean_step": self.mean_step, "age": self.age}

    def load_state(self, state: dict | None, steps: int) -> None:
        """Restore ``state()``; a checkpoint written before it existed had no warm-up: recompute that."""
        if state is not None:
            self.steps, self.init_weight, self.mean_step = (int(state["steps"]), float(state["init_weight"]),
                                                            float(state["mean_step"]))
            return
        self.steps, self.init_weight, self.mean_step = 0, 1.0, 0.0
        for k in range(steps):
            beta = self.decay  # old runs averaged with a fixed decay
            self.init_weight *= beta
            self.mean_step = beta * self.mean_step + (1.0 - beta) * (k + 1)
        self.steps = steps
