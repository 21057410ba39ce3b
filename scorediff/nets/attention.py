"""Attention over a prompt: cross-attention with key masks, as latent diffusion conditions on text.

Rombach et al. (2022), "High-resolution image synthesis with latent diffusion models", sec. 3.3: the
intermediate representation phi(z) of the U-Net (N = H W positions of width C, flattened) attends to the
prompt's token embeddings tau(y) (L tokens of width D),

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V,   Q = W_Q phi(z),  K = W_K tau(y),  V = W_V tau(y),

split into ``heads`` heads of width d = C / heads. The prompt arrives as ``context`` (B, L, D) with
``context_mask`` (B, L) bool, True for a real token and False for padding: a masked key gets weight
exactly 0, so padding never changes the output. A row whose mask is all False (no prompt at all) attends
to nothing and contributes exactly 0 (the softmax over no keys is defined as 0 here rather than NaN).

- ``MultiHeadAttention``: tokens (B, N, C) attend to themselves or to a context (B, L, D), with a key mask.
- ``SpatialCrossAttention``: the U-Net's block, for activations (B, C, *spatial) of any dimensionality:
  GroupNorm, flatten the positions, cross-attention, a residual connection (its output projection starts
  near 0, so a freshly added block is near the identity).
- ``PooledContext``: the masked mean of the context through a linear map, a vector to add to the noise
  embedding (the pooled text embedding of Imagen, Saharia et al. 2022, sec. 2.2, and SDXL).
- ``check_context`` / ``cat_contexts``: input checks at the network's door, and the batching of prompts
  of different lengths (padding with masked zeros) that classifier-free guidance needs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MultiHeadAttention", "PooledContext", "SpatialCrossAttention", "cat_contexts", "check_context"]


def check_context(context: Tensor | None, context_mask: Tensor | None, batch: int, dim: int
                  ) -> tuple[Tensor, Tensor] | None:
    """(context, mask) checked for a network of context width ``dim``; None when no prompt is given.

    ``context`` (B, L, D) or (1, L, D) (broadcast to the batch); ``context_mask`` (B, L) bool or None (every
    token real). A network without cross-attention (dim = 0) refuses a context rather than drop it.
    """
    if context is None:
        if context_mask is not None:
            raise ValueError("context_mask given without context")
        return None
    if dim == 0:
        raise ValueError("context given to a network without cross-attention (context_dim=0)")
    if context.ndim != 3 or context.shape[0] not in (1, batch) or context.shape[2] != dim:
        raise ValueError(f"context must have shape ({batch}, L, {dim}), got {tuple(context.shape)}")
    if context_mask is None:
        context_mask = torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)
    if context_mask.shape != context.shape[:2]:
        raise ValueError(f"context_mask must have shape {tuple(context.shape[:2])} (that of context's first two "
                         f"dimensions), got {tuple(context_mask.shape)}")
    if context_mask.dtype != torch.bool:
        raise ValueError(f"context_mask must be bool (True = a real token), got dtype {context_mask.dtype}")
    return context.expand(batch, -1, -1), context_mask.expand(batch, -1)


def cat_contexts(*pairs: tuple[Tensor, Tensor | None]) -> tuple[Tensor, Tensor]:
    """Concatenate (context, mask) pairs along the batch, padding each to the longest L with masked zeros."""
    L = max(c.shape[1] for c, _ in pairs)
    cs, ms = [], []
    for c, m in pairs:
        if m is None:
            m = torch.ones(c.shape[:2], dtype=torch.bool, device=c.device)
        pad = L - c.shape[1]
        cs.append(F.pad(c, (0, 0, 0, pad)))
        ms.append(F.pad(m, (0, pad), value=False))
    return torch.cat(cs), torch.cat(ms)


def _zero_init(module: nn.Linear, scale: float) -> nn.Linear:
    with torch.no_grad():
        module.weight.mul_(scale)
        module.bias.zero_()
    return module


class MultiHeadAttention(nn.Module):
    """softmax(Q K^T / sqrt(d)) V over ``heads`` heads: queries from h (B, N, C), keys and values from
    ``context`` (B, L, D) (cross-attention; D = ``context_dim``) or from h itself (self-attention,
    context_dim = None). ``mask`` (B, L) bool marks the keys that count; masked keys have weight 0."""

    def __init__(self, dim: int, heads: int = 1, context_dim: int | None = None, out_init_scale: float = 1.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention: {dim} channels do not split into {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim or dim, 2 * dim)
        self.proj = _zero_init(nn.Linear(dim, dim), out_init_scale) if out_init_scale != 1.0 else nn.Linear(dim, dim)

    def forward(self, h: Tensor, context: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        B, N, C = h.shape
        src = h if context is None else context
        q = self.q(h).view(B, N, self.heads, -1).transpose(1, 2)  # (B, heads, N, d)
        k, v = self.kv(src).view(B, src.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)  # (B, heads, L, d)
        if mask is None:
            return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C))
        # a row without any real key would softmax over nothing (NaN): give it one key, then zero its output
        any_key = mask.any(dim=1)
        keys = mask | ~any_key[:, None]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=keys[:, None, None, :])
        return self.proj(a.transpose(1, 2).reshape(B, N, C)) * any_key[:, None, None].to(a.dtype)


class SpatialCrossAttention(nn.Module):
    """x + CrossAttn(GroupNorm(x), context) for x (B, C, *spatial): the positions attend to the prompt."""

    def __init__(self, channels: int, context_dim: int, heads: int = 1, groups: int = 32, init_scale: float = 1.0):
        super().__init__()
        self.norm = nn.GroupNorm(math.gcd(groups, channels), channels, eps=1e-6)
        self.attn = MultiHeadAttention(channels, heads, context_dim, init_scale)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        B, C = x.shape[:2]
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, N, C)
        return x + self.attn(h, context.to(x.dtype), mask).transpose(1, 2).reshape(x.shape)


class PooledContext(nn.Module):
    """Linear(masked mean of the context over its real tokens): (B, L, D) -> (B, out_dim); 0 for no tokens."""

    def __init__(self, context_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(context_dim, out_dim)

    def forward(self, context: Tensor, mask: Tensor) -> Tensor:
        w = mask.to(context.dtype)[..., None]
        mean = (context * w).sum(1) / w.sum(1).clamp_min(1.0)
        return self.proj(mean) * mask.any(1, keepdim=True).to(context.dtype)
