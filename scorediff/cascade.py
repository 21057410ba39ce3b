"""Cascaded generation (Ho et al. 2022, "Cascaded Diffusion Models for High Fidelity Image Generation"): a base
model samples at low resolution, then super-resolution diffusion models, each conditioned on the upsampled
output of the stage before (``nets.SuperResolution``: channel concatenation), raise the resolution.

Noise-conditioning augmentation (Sec. 4.1): during training the low-resolution input is corrupted with
Gaussian noise of a random std a ~ U(0, aug_max), and the model is told a; at sampling time a fixed small a is
used. It makes each stage robust to the artefacts of the stage before (the "conditioning augmentation" that the
paper found critical for sample quality).

- ``downsample``: the low-resolution view, average pooling by the stage's factor;
- ``SuperResolutionLoss``: wraps any training loss (``scorediff.losses``), adding the augmented low-resolution
  conditioning to each batch;
- ``upsample``: one stage on given low-resolution images; ``sample_cascade``: base samples, then every stage in
  turn, returning every stage's output (``scorediff sample BASE --cascade SR1 SR2`` does the same from runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .processes.base import Process
from .samplers import sample
from .samplers._common import Denoiser


def downsample(x: Tensor, factor: int) -> Tensor:
    """Average pooling by ``factor``: the low-resolution image a super-resolution stage is conditioned on."""
    if factor < 1 or x.shape[-1] % factor or x.shape[-2] % factor:
        raise ValueError(f"cannot downsample {tuple(x.shape)} by {factor}")
    return F.avg_pool2d(x, factor)


def augment(low: Tensor, level: Tensor, generator: torch.Generator | None) -> Tensor:
    """Noise-conditioning augmentation: low + a * N(0, I), a (B,) the per-example std."""
    noise = torch.randn(low.shape, generator=generator, device=low.device, dtype=low.dtype)
    return low + level.to(low.dtype).reshape(-1, *([1] * (low.ndim - 1))) * noise


class SuperResolutionLoss:
    """A training loss for a super-resolution stage: the wrapped loss with cond
    ``low_res = augment(downsample(x0, factor), a)`` and ``aug_level = a``, a ~ U(0, aug_max) per example.

    Draws (a, then the augmentation noise, then whatever the wrapped loss draws) come from the loss's
    generator, so training stays exactly resumable.
    """

    def __init__(self, loss: Any, factor: int = 2, aug_max: float = 0.2):
        if factor < 2:
            raise ValueError(f"cascade factor must be >= 2, got {factor}")
        if aug_max < 0:
            raise ValueError(f"cascade aug_max must be >= 0, got {aug_max}")
        self.loss, self.factor, self.aug_max = loss, int(factor), float(aug_max)

    def __call__(self, model, x0: Tensor, generator: torch.Generator | None = None, **cond) -> Tensor:
        gen_device = generator.device if generator is not None else x0.device
        level = torch.rand(x0.shape[0], generator=generator, device=gen_device).to(x0.device) * self.aug_max
        low = augment(downsample(x0, self.factor), level, generator)
        return self.loss(model, x0, generator=generator, low_res=low, aug_level=level, **cond)


@dataclass
class Stage:
    """One super-resolution stage: its denoiser (conditioned on low_res / aug_level), process and factor, and
    optionally its own sampling settings (a trained stage run samples with its own config's sampler)."""

    denoiser: Denoiser
    process: Process
    factor: int
    aug_level: float = 0.0  # the augmentation std used at sampling (CDM: a small fixed value, or 0)
    sampler: str | None = None  # None: the sampler the cascade is run with
    steps: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # sampler options (used with this stage's own sampler)
    conditional: bool = True  # whether the cascade's cond (e.g. class labels) is passed to this stage


def sample_cascade(
    base: tuple[Denoiser, Process, tuple[int, ...]],
    stages: Sequence[Stage],
    num: int,
    *,
    sampler: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    cond: dict[str, Any] | None = None,
    **options,
) -> list[Tensor]:
    """Samples of a cascade: [base samples, stage 1 output, ...], each stage conditioned on the one before.

    ``base`` is (denoiser, process, per-example shape); ``cond`` (e.g. class labels) goes to every stage.
    The stages run as ``run_stages`` (stage k with seed ``seed + 7919 k``).
    """
    denoiser, process, shape = base
    x = sample(denoiser, process, (num, *shape), sampler=sampler, steps=steps, seed=seed, cond=cond, **options)
    return [x, *run_stages(x, stages, seed=seed, cond=cond, sampler=sampler, steps=steps, **options)]


def run_stages(
    x: Tensor,
    stages: Sequence[Stage],
    *,
    seed: int = 0,
    batch: int | None = None,
    cond: dict[str, Tensor] | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    device: torch.device | str | None = None,
    **options,
) -> list[Tensor]:
    """Each super-resolution stage in turn on the samples ``x``: [stage 1 output, stage 2 output, ...].

    In batches of ``batch`` rows (default: all at once); the batch starting at row i of stage k is seeded
    ``seed + 7919 k + i``. ``cond`` holds per-row tensors (sliced with the batch) for the stages marked
    ``conditional``. A stage samples with its own ``sampler``, ``steps`` and ``options`` where it has them, else
    with those given here. ``device``: where the stages run (default: x's); the outputs stay on x's device.
    """
    outs = []
    for k, st in enumerate(stages, start=1):
        kw = ({"sampler": st.sampler, "steps": st.steps, **st.options} if st.sampler is not None
              else {"sampler": sampler, "steps": steps, **options})
        size = batch or len(x)
        parts = []
        for i in range(0, len(x), size):
            dev = x.device if device is None else device
            c = {key: v[i:i + size].to(dev) for key, v in cond.items()} if (cond and st.conditional) else {}
            parts.append(upsample(st, x[i:i + size].to(dev), seed=int(seed) + 7919 * k + i, cond=c, **kw).to(x.device))
        x = torch.cat(parts)
        outs.append(x)
    return outs


def upsample(stage: Stage, low: Tensor, *, sampler: str | None = None, steps: int | None = None, seed: int = 0,
             cond: dict[str, Any] | None = None, **options) -> Tensor:
    """One stage: samples at ``factor`` times the resolution of ``low`` (B, C, h, w), conditioned on it.

    The augmentation noise (std ``stage.aug_level``) and the sampler's noise come from generators seeded by
    ``seed`` (the first a derived seed), so the same seed gives the same samples.
    """
    B, C, h, w = low.shape
    level = torch.full((B,), float(stage.aug_level), device=low.device)
    if stage.aug_level > 0:
        low = augment(low, level, torch.Generator(device=low.device).manual_seed(int(seed) * 1000003 + 1))
    stage_cond = {**(cond or {}), "low_res": low, "aug_level": level}
    return sample(stage.denoiser, stage.process, (B, C, h * stage.factor, w * stage.factor), sampler=sampler,
                  steps=steps, seed=seed, device=low.device, cond=stage_cond, **options)
