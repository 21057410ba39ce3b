"""A small text encoder trained jointly with the diffusion model, on UTF-8 bytes.

The prompt's UTF-8 bytes are its tokens (ids 0..255; ByT5, Xue et al. 2022, shows byte-level tokens work
without a vocabulary to learn), preceded by a begin token ``BOS`` (256) so that even the empty prompt, the
null prompt of classifier-free guidance, is one real token the model learns an embedding for; ``PAD`` (257)
fills a batch to its longest prompt and is masked out. Prompts longer than ``max_length`` tokens are cut.

``ByteTextTransformer``: token + learned position embedding, ``depth`` pre-LayerNorm Transformer encoder
blocks (Vaswani et al. 2017; self-attention with the padding masked out of the keys, GELU MLP), a final
LayerNorm: tokens (B, L) -> (context (B, L, width), context_mask (B, L)), the ``tau_theta(y)`` of latent
diffusion (Rombach et al. 2022, sec. 3.3), trained by the same denoising loss as the U-Net.

``TextConditioned``: a denoising network together with its jointly trained encoder, so that both live in one
module (one optimizer, one EMA, one checkpoint). Its forward is the inner network's: the prompt arrives
already encoded as ``context`` / ``context_mask`` (``scorediff.text_encoders`` encodes it, with gradients
while training).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .attention import MultiHeadAttention

__all__ = ["BOS", "PAD", "VOCAB", "ByteTextTransformer", "TextConditioned", "byte_tokens"]

BOS = 256  # the begin-of-prompt token (every prompt starts with it, so the empty prompt is one token)
PAD = 257  # padding, masked out of attention
VOCAB = 258


def byte_tokens(prompts: list[str], max_length: int = 64) -> Tensor:
    """(B, L) LongTensor: BOS then each prompt's UTF-8 bytes (at most max_length tokens), padded with PAD."""
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of strings, got one string (wrap it in a list)")
    rows = []
    for p in prompts:
        if not isinstance(p, str):
            raise ValueError(f"prompts must be strings, got {type(p).__name__} {p!r}")
        rows.append([BOS, *p.encode("utf-8")][:max_length])
    L = max((len(r) for r in rows), default=1)
    out = torch.full((len(rows), L), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = MultiHeadAttention(width, heads)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        h = h + self.attn(self.norm1(h), mask=mask)
        return h + self.mlp(self.norm2(h))


class ByteTextTransformer(nn.Module):
    """tokens (B, L) -> (context (B, L, width), mask (B, L) bool): a small Transformer over byte tokens."""

    def __init__(self, width: int = 64, depth: int = 2, heads: int = 4, max_length: int = 64, mlp_ratio: float = 2.0):
        super().__init__()
        if width < 1 or depth < 0 or max_length < 1:
            raise ValueError(f"text encoder: width, max_length must be >= 1 and depth >= 0, got {width}, "
                             f"{max_length}, {depth}")
        self.width, self.max_length = int(width), int(max_length)
        self.token = nn.Embedding(VOCAB, width)
        self.pos = nn.Parameter(torch.randn(max_length, width) * 0.02)
        self.blocks = nn.ModuleList([_Block(width, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        if tokens.ndim != 2 or tokens.shape[1] > self.max_length:
            raise ValueError(f"tokens must have shape (B, L <= {self.max_length}), got {tuple(tokens.shape)}")
        mask = tokens != PAD
        h = self.token(tokens) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            h = block(h, mask)
        # padding positions carry zeros: nothing downstream can read them, and they keep no stale values
        return self.norm(h) * mask[..., None].to(h.dtype), mask

    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """Tokenize and encode on this module's device (with gradients when enabled)."""
        return self(byte_tokens(prompts, self.max_length).to(self.token.weight.device))


class TextConditioned(nn.Module):
    """``net(x, noise_input, y=None, context=None, context_mask=None)`` of ``inner``, carrying ``text``, the
    jointly trained encoder of its prompts (state-dict keys ``inner.*`` and ``text.*``)."""

    def __init__(self, inner: nn.Module, text: ByteTextTransformer):
        super().__init__()
        if getattr(inner, "context_dim", 0) != text.width:
            raise ValueError(f"the network's context_dim ({getattr(inner, 'context_dim', 0)}) must equal the text "
                             f"encoder's width ({text.width})")
        self.inner, self.text = inner, text
        self.in_channels = getattr(inner, "in_channels", None)
        self.context_dim = text.width
        # what a reader of ``net.config`` sees: the inner network's config (its type, context_dim) and the encoder
        self.config = {**getattr(inner, "config", {}), "text_encoder": {"width": text.width,
                                                                        "max_length": text.max_length}}

    def forward(self, x: Tensor, noise_input: Tensor, **cond) -> Tensor:
        return self.inner(x, noise_input, **cond)
