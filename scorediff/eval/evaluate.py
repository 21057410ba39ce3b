"""Scoring a model on held-out data: draw samples, embed them and the reference, report FID / KID / P&R / SW.

``score(samples, reference, features)`` takes two sets of data; ``evaluate(denoiser, process, shape, reference,
...)`` draws the samples first with a registered sampler (``scorediff.sample``). ``scorediff train``
runs ``evaluate`` at its checkpoints when its config has an ``eval`` section (``scorediff.training.evaluation``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .. import distributed, samplers
from ..text_encoders import prompt_cond, prompt_guidance
from ..utils import cycle_labels
from .features import Features, raw_features, reference_features
from .metrics import frechet_distance, kid, precision_recall, sliced_w2

__all__ = ["evaluate", "generate", "prompted", "score"]


def score(samples: Tensor, reference: Tensor, features: Features | None = None, *,
          cache_dir: str | os.PathLike | None = None, use_cache: bool = True, kid_subsets: int = 100,
          kid_subset_size: int | None = None, k: int = 3, seed: int = 0, sample_features: Tensor | None = None
          ) -> dict[str, Any]:
    """Metrics of ``samples`` against ``reference`` (both (N, *event) data) in the features of ``features``.

    Returns ``fid`` (Frechet distance of the features; FID proper with Inception), ``kid`` / ``kid_std``,
    ``precision`` / ``recall`` (k-NN manifolds, k = ``k``) and ``sliced_w2`` on the data themselves; the
    reference features come from the cache when they were computed before. ``sample_features``: the samples'
    features when already computed (by the ranks that drew them, ``evaluate`` under torchrun).
    """
    features = features or raw_features()
    if samples.shape[1:] != reference.shape[1:]:
        raise ValueError(f"samples of shape {tuple(samples.shape[1:])} cannot be compared with reference data of "
                         f"shape {tuple(reference.shape[1:])}")
    f_ref = reference_features(reference, features, cache_dir, use_cache)
    f_gen = features(samples) if sample_features is None else sample_features
    kid_mean, kid_std = kid(f_ref, f_gen, kid_subsets, kid_subset_size, seed)
    precision, recall = precision_recall(f_ref, f_gen, k)
    return {"fid": frechet_distance(f_ref, f_gen), "kid": kid_mean, "kid_std": kid_std, "precision": precision,
            "recall": recall, "sliced_w2": sliced_w2(samples.flatten(1), reference.flatten(1)),
            "features": features.name, "num": int(samples.shape[0]), "num_ref": int(reference.shape[0])}


def prompted(denoiser, encoder, guidance: float | None = None):
    """(Denoiser, encode) for evaluating a text-conditioned model: ``encode(prompts) -> cond`` through ``encoder``
    (``scorediff.text_encoders``), and the Denoiser guided on prompts at scale ``guidance`` (classifier-free, the
    null prompt as the other branch; None: the conditional model alone)."""
    if guidance is not None:
        denoiser = prompt_guidance(denoiser, encoder, guidance)
    return denoiser, lambda prompts: prompt_cond(encoder, prompts)


@torch.no_grad()
def generate(denoiser, process, shape: tuple[int, ...], num: int, *, sampler: str | None = None, steps: int | None = None,
             seed: int = 0, batch_size: int = 500, num_classes: int = 0, device: torch.device | str = "cpu",
             decode=None, features: Features | None = None, world=None, prompts: Sequence[str] | None = None,
             encode: Callable[[list[str]], dict[str, Tensor]] | None = None, **options: Any):
    """``num`` samples in batches (batch i seeded ``seed + i``); class-conditional when ``num_classes`` > 0, with
    the labels 0, 1, ..., K-1, 0, ... so that every class is equally represented. ``decode`` maps each batch to
    data (a latent diffusion run's decoder). ``prompts`` (``num`` of them, e.g. ``data.captions.eval_prompts``):
    sample j is conditioned on prompt j, whose ``cond`` (context, context_mask) ``encode`` gives, batch by batch.

    Under torchrun (a process group joined, ``scorediff.distributed``) rank r draws the batches i = r mod W and
    rank 0 gathers them in order: the same samples as one process, each drawn once; other ranks get None. With
    ``features``, each rank also embeds its own batches and ``(samples, features)`` is returned. ``world``
    (a ``distributed.World``) overrides the process group's, e.g. ``World()`` for rank 0 alone.
    """
    def block(i: int):
        start = i * batch_size
        n = min(batch_size, num - start)
        cond = {"y": cycle_labels(start, n, num_classes, device)} if num_classes else {}
        if prompts is not None:
            cond.update(encode(list(prompts[start:start + n])))
        x = samplers.sample(denoiser, process, (n, *shape), sampler=sampler, steps=steps, seed=seed + i, device=device,
                   cond=cond, **options)
        x = (decode(x) if decode is not None else x).to("cpu", torch.float32)
        return (x, features(x).cpu()) if features is not None else x

    if prompts is not None and (len(prompts) != num or encode is None):
        raise ValueError(f"generate: {len(prompts)} prompts for {num} samples (one each, with an encode function)")
    parts = distributed.map_blocks(block, -(-num // batch_size), world or distributed.world())
    if parts is None:
        return None
    if features is None:
        return torch.cat(parts)
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def evaluate(denoiser, process, shape: tuple[int, ...], reference: Tensor, features: Features | None = None, *,
             num: int = 1000, sampler: str | None = None, steps: int | None = None, seed: int = 0, batch_size: int = 500,
             num_classes: int = 0, device: torch.device | str = "cpu", cache_dir: str | os.PathLike | None = None,
             use_cache: bool = True, decode=None, world=None, prompts: Sequence[str] | None = None,
             encode: Callable[[list[str]], dict[str, Tensor]] | None = None, **options: Any) -> dict[str, Any] | None:
    """Draw ``num`` samples from ``denoiser`` (decoded by ``decode`` if given; one per prompt of ``prompts``, see
    ``generate``) and ``score`` them against ``reference``. Under torchrun the ranks share the drawing and embedding (``generate``); rank 0 scores and
    returns the metrics, the other ranks None."""
    if num < 4:
        raise ValueError(f"num must be >= 4 samples to estimate the metrics, got {num}")
    features = features or raw_features()
    drawn = generate(denoiser, process, shape, num, sampler=sampler, steps=steps, seed=seed, batch_size=batch_size,
                     num_classes=num_classes, device=device, decode=decode, features=features, world=world,
                     prompts=prompts, encode=encode, **options)
    if drawn is None:
        return None
    x, f_gen = drawn
    if not torch.isfinite(x).all():
        raise ValueError(f"sampler {sampler or 'default'!r} with {steps or 'default'} steps produced non-finite samples")
    out = score(x, reference, features, cache_dir=cache_dir, use_cache=use_cache, seed=seed, sample_features=f_gen)
    out.update(sampler=sampler, steps=steps, seed=seed)
    return out
