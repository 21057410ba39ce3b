"""Masks over sequences and video for the conditional tasks, and the CSDI-style training loss that draws them.

Masks are bool tensors of an example's shape (C, L) or (C, T, H, W), True where an entry is known; the time
axis is the event's axis 1 (steps, or frames). The tasks:

* ``forecast``     the first k steps (frames) known: :func:`forecast_mask`;
* ``impute``       any entries known (per channel and step; for video, per frame): :func:`random_mask`;
* ``interpolate``  some whole steps (frames) known, the others to fill: :func:`frames_mask`;
* ``mixed``        each training example draws one of the three.

``MaskedConditionLoss`` trains a ``nets.MaskedConditional`` network as CSDI does (Tashiro et al. 2021, Alg. 1):
for each example a mask m is drawn for the configured task, and the wrapped loss (any ``scorediff.losses``
loss) is computed with cond ``observed = x0``, ``observed_mask = m`` (the network sees x0 * m and m). With
probability ``p_uncond`` the mask is empty, so the same network is also the unconditional model (sample grids,
and classifier-free guidance on the observations). Draws come from the loss's generator, so training resumes
exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .utils import unknown

TASKS = ("forecast", "impute", "interpolate", "mixed")


def _check_event(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"a sequence mask needs an example shape (C, L) or (C, T, H, W), got {shape}")
    return shape


def forecast_mask(shape: Sequence[int], k: int) -> Tensor:
    """True on the first ``k`` steps (frames) of an example of ``shape``, every channel (and pixel)."""
    shape = _check_event(shape)
    if not 0 <= int(k) <= shape[1]:
        raise ValueError(f"context of {k} steps does not fit a length of {shape[1]}")
    m = torch.zeros(shape, dtype=torch.bool)
    m[:, : int(k)] = True
    return m


def frames_mask(shape: Sequence[int], known: Sequence[int]) -> Tensor:
    """True on the listed steps (frames) ``known`` (e.g. every other frame: interpolation)."""
    shape = _check_event(shape)
    idx = [int(i) for i in known]
    bad = [i for i in idx if not 0 <= i < shape[1]]
    if bad:
        raise ValueError(f"known steps {bad} out of range 0..{shape[1] - 1}")
    m = torch.zeros(shape, dtype=torch.bool)
    m[:, idx] = True
    return m


def random_mask(shape: Sequence[int], batch: int, task: str, generator: torch.Generator | None = None,
                context: tuple[float, float] = (0.25, 0.75), known: tuple[float, float] = (0.1, 0.9),
                device: torch.device | str | None = None) -> Tensor:
    """(batch, *shape) masks for ``task`` (module docstring), drawn from ``generator``.

    ``context``: forecast, the known fraction of the steps, uniform in this range (k >= 1, k < L);
    ``known``: impute / interpolate, the probability that an entry (a step) is known, uniform in this range per
    example. For video, impute draws whole frames per channel (pixels of a frame share their fate).
    """
    shape = _check_event(shape)
    if task not in TASKS:
        raise unknown("conditioning task", task, TASKS)
    gen_device = generator.device if generator is not None else device

    def u(lo: float, hi: float, *size: int) -> Tensor:
        return (lo + (hi - lo) * torch.rand(size, generator=generator, device=gen_device)).to(device)

    b, L = int(batch), shape[1]
    steps = torch.arange(L, device=device)
    if task == "mixed":
        which = torch.randint(3, (b,), generator=generator, device=gen_device).to(device)
        masks = [random_mask(shape, b, t, generator, context, known, device) for t in TASKS[:3]]
        return torch.stack(masks)[which, torch.arange(b, device=device)]
    if task == "forecast":
        k = (u(*context, b) * L).round().clamp(1, max(L - 1, 1))
        m = steps[None, :] < k[:, None]  # (b, L)
        return m.reshape(b, 1, L, *([1] * (len(shape) - 2))).expand(b, *shape).contiguous()
    p = u(*known, b)
    if task == "interpolate":
        m = u(0.0, 1.0, b, L) < p[:, None]
        return m.reshape(b, 1, L, *([1] * (len(shape) - 2))).expand(b, *shape).contiguous()
    per = shape[:2]  # impute: per channel and step; a video frame's pixels share it
    m = u(0.0, 1.0, b, *per) < p.reshape(b, 1, 1)
    return m.reshape(b, *per, *([1] * (len(shape) - 2))).expand(b, *shape).contiguous()


class MaskedConditionLoss:
    """CSDI-style conditional training around any loss (module docstring)."""

    def __init__(self, loss: Any, task: str = "mixed", p_uncond: float = 0.1,
                 context: Sequence[float] = (0.25, 0.75), known: Sequence[float] = (0.1, 0.9)):
        if task not in TASKS:
            raise unknown("conditioning task", task, TASKS)
        if not 0 <= p_uncond < 1:
            raise ValueError(f"conditioning p_uncond must be in [0, 1), got {p_uncond}")
        for name, r in (("context", context), ("known", known)):
            if len(r) != 2 or not 0 <= float(r[0]) <= float(r[1]) <= 1:
                raise ValueError(f"conditioning {name} must be a range [lo, hi] within [0, 1], got {list(r)}")
        self.loss, self.task, self.p_uncond = loss, task, float(p_uncond)
        self.context, self.known = tuple(float(c) for c in context), tuple(float(k) for k in known)

    def __call__(self, model, x0: Tensor, generator: torch.Generator | None = None, **cond) -> Tensor:
        gen_device = generator.device if generator is not None else x0.device
        m = random_mask(x0.shape[1:], x0.shape[0], self.task, generator, self.context, self.known, x0.device)
        drop = torch.rand(x0.shape[0], generator=generator, device=gen_device).to(x0.device) < self.p_uncond
        m = m & ~drop.reshape(-1, *([1] * (x0.ndim - 1)))
        return self.loss(model, x0, generator=generator, observed=x0, observed_mask=m, **cond)

