"""A Gaussian mixture conditioned on prompts: the exact denoiser of text-conditioned generation.

The "prompt" is a sequence of tokens whose embeddings are vectors over the K components (``context``
(B, L, K), ``context_mask`` (B, L)): the prompt selects the components k that any of its real tokens points
at (``context[b, l, k] > 1/2``), and p0(x | prompt) is the sub-mixture of the selected components, weights
renormalised. A prompt that selects nothing, e.g. the null prompt (one zero token, or no real token at
all), leaves the whole mixture: p0(x | null) = p0(x). So

    PromptDenoiser(x, t, context, context_mask) = E[x0 | x_t, prompt],

exactly, with the padding (masked tokens) having no effect, which makes it the ground truth for
classifier-free guidance on prompts, negative prompts and the batching of prompts of different lengths.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..processes.base import Process
from .gaussian import GaussianMixture

__all__ = ["PromptDenoiser", "prompt_tokens"]


def prompt_tokens(components: list[list[int]], num_components: int, dtype=torch.float64) -> tuple[Tensor, Tensor]:
    """(context, mask) for prompts given as lists of component indices (one token each; [] = the null prompt,
    a single zero token), padded to the longest with masked random-looking tokens that must have no effect."""
    L = max(1, *(len(c) for c in components))
    g = torch.Generator().manual_seed(len(components))
    context = torch.rand(len(components), L, num_components, generator=g, dtype=dtype)  # padding: noise
    mask = torch.zeros(len(components), L, dtype=torch.bool)
    for b, comps in enumerate(components):
        context[b, : max(1, len(comps))] = 0
        for i, k in enumerate(comps):
            context[b, i, k] = 1
        mask[b, : max(1, len(comps))] = True
    return context, mask


class PromptDenoiser:
    """D(x, t, context, context_mask) = E[x0 | x_t, prompt] for a GaussianMixture (see the module docstring).
    One evaluation (``nfe`` + 1) per call, whatever mix of prompts the batch holds."""

    def __init__(self, mixture: GaussianMixture, process: Process):
        self.mixture, self.process, self.nfe = mixture, process, 0

    def selected(self, context: Tensor, context_mask: Tensor | None) -> Tensor:
        """(B, K) bool: the components each prompt selects (all of them for a prompt that selects none)."""
        K = self.mixture.num_components
        if context.shape[-1] != K:
            raise ValueError(f"context must have width {K} (one entry per component), got {tuple(context.shape)}")
        if context_mask is None:
            context_mask = torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)
        sel = ((context > 0.5) & context_mask[..., None]).any(1)
        return sel | ~sel.any(1, keepdim=True)

    def __call__(self, x: Tensor, t, context: Tensor | None = None, context_mask: Tensor | None = None,
                 **cond) -> Tensor:
        self.nfe += 1
        m = self.mixture
        _, alpha, z, var, logj = m._joint(x, t, self.process)
        if context is not None:
            keep = self.selected(context.expand(x.shape[0], -1, -1), None if context_mask is None
                                 else context_mask.expand(x.shape[0], -1)).to(x.device)
            logj = logj.masked_fill(~keep, -math.inf)
        return m._posterior_mean(x, alpha, z, var, logj)

    def mixture_of(self, components: list[int]) -> GaussianMixture:
        """p0(x | a prompt selecting ``components``): the sub-mixture, weights renormalised."""
        m = self.mixture
        idx = torch.as_tensor(components, dtype=torch.long)
        w = m.weights[idx]
        return GaussianMixture(w / w.sum(), m.means[idx], m.covs[idx])
