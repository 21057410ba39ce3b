"""A diffusion transformer (DiT, Peebles & Xie 2023, "Scalable Diffusion Models with Transformers").

net(x, noise_input, y=None) for x of shape (B, C, H, W):
1. patchify: a p x p convolution with stride p turns the image into N = (H / p)(W / p) tokens of width
   ``hidden`` (Sec. 3.2, "Patchify"), plus a 2-D position embedding: fixed 2-D sine-cosine (the paper's
   choice, half of the width for each axis) or learned;
2. conditioning c = embedding(noise input) + embedding(label) (the null label -1 for classifier-free
   guidance, as the U-Net);
3. ``depth`` DiT blocks with adaLN-Zero (Sec. 3.2, "adaLN-Zero block"): from c a zero-initialised linear
   layer regresses (shift, scale, gate) for the attention and the MLP branch,
   h <- h + gate_a * Attn(LN(h) * (1 + scale_a) + shift_a),  h <- h + gate_m * MLP(LN(h) * (1 + scale_m) + shift_m),
   so every block starts as the identity;
4. the final layer: adaLN (shift, scale) + a zero-initialised linear map to p * p * C_out per token, then
   unpatchify. At construction the network's output is exactly zero (as the paper's initialisation).

A prompt (``context`` (B, L, D), ``context_mask`` (B, L); ``context_dim`` = D > 0) enters either
- ``context_mode="cross"``: a cross-attention sub-layer in every block between self-attention and MLP,
  h <- h + CrossAttn(LN(h), context), its output projection zero-initialised (PixArt-alpha, Chen et al. 2023,
  sec. 2.3), or
- ``context_mode="concat"``: the prompt's tokens, projected to the token width, join the image tokens in
  every self-attention (padding masked out of the keys) and are dropped before the final layer (in-context
  conditioning, Peebles & Xie 2023, sec. 3.2);
and with ``pooled_context`` also as its masked mean added to c. ``context=None`` is "no prompt".

Sequences (B, C, L): ``image_size=[L]`` (a one-entry list) makes the tokens 1-D patches of p steps (a stride-p
1-D convolution), with the 1-D sine-cosine position embedding; everything else is the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import MultiHeadAttention, PooledContext, check_context
from .embeddings import LabelEmbedding, NoiseEmbedding, check_unconditional, noise_batch

POS_EMBEDDINGS = ("sincos", "learned")
CONTEXT_MODES = ("cross", "concat")


def sincos_2d(hidden: int, grid_h: int, grid_w: int) -> Tensor:
    """Fixed 2-D sine-cosine position embedding (N, hidden), N = grid_h * grid_w, row-major tokens.

    Half of the width encodes the row, half the column, each as [sin(w_k pos), cos(w_k pos)] with
    w_k = 10000^(-k / (d/4)) (the 1-D Transformer encoding, Vaswani et al. 2017, per axis).
    """
    if hidden % 4:
        raise ValueError(f"sincos position embedding needs a width divisible by 4, got {hidden}")
    quarter = hidden // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows = torch.arange(grid_h, dtype=torch.float64).repeat_interleave(grid_w)
    cols = torch.arange(grid_w, dtype=torch.float64).repeat(grid_h)
    parts = []
    for pos in (rows, cols):
        a = pos[:, None] * omega[None, :]
        parts += [torch.sin(a), torch.cos(a)]
    return torch.cat(parts, dim=1).float()


def sincos_1d(hidden: int, length: int) -> Tensor:
    """Fixed 1-D sine-cosine position embedding (N, hidden): [sin(w_k pos), cos(w_k pos)], w_k = 10000^(-k / (d/2))."""
    if hidden % 2:
        raise ValueError(f"sincos position embedding needs an even width, got {hidden}")
    half = hidden // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64) / half)
    a = torch.arange(length, dtype=torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(a), torch.cos(a)], dim=1).float()


def _modulate(h: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return h * (1 + scale[:, None, :]) + shift[:, None, :]


class DiTBlock(nn.Module):
    """One transformer block with adaLN-Zero conditioning (Peebles & Xie 2023, Fig. 3)."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, dropout: float, context_dim: int = 0):
        super().__init__()
        self.heads = heads
        # cross-attention to a prompt (context_mode "cross"), starting at exactly 0
        self.cross = MultiHeadAttention(hidden, heads, context_dim, out_init_scale=0.0) if context_dim else None
        self.norm_x = nn.LayerNorm(hidden, eps=1e-6) if context_dim else None
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        width = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden, width), nn.GELU(approximate="tanh"), nn.Dropout(dropout),
                                 nn.Linear(width, hidden))
        self.ada = nn.Linear(hidden, 6 * hidden)
        nn.init.zeros_(self.ada.weight)  # adaLN-Zero: every gate starts at 0, the block at the identity
        nn.init.zeros_(self.ada.bias)

    def forward(self, h: Tensor, c: Tensor, ctx: tuple[Tensor, Tensor] | None = None,
                key_mask: Tensor | None = None) -> Tensor:
        """``ctx`` (context, mask): cross-attention to a prompt; ``key_mask`` (B, N): the self-attention's keys."""
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.ada(c).chunk(6, dim=1)
        B, N, W = h.shape
        q, k, v = self.qkv(_modulate(self.norm1(h), shift_a, scale_a)).view(B, N, 3, self.heads, -1).unbind(2)
        am = None if key_mask is None else key_mask[:, None, None, :]
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=am)
        h = h + gate_a[:, None, :] * self.proj(a.transpose(1, 2).reshape(B, N, W))
        if self.cross is not None and ctx is not None:
            h = h + self.cross(self.norm_x(h), ctx[0].to(h.dtype), ctx[1])
        return h + gate_m[:, None, :] * self.mlp(_modulate(self.norm2(h), shift_m, scale_m))


class DiT(nn.Module):
    """net(x, noise_input, y=None) for x of shape (B, in_channels, *image_size); output of x's shape."""

    def __init__(
        self,
        in_channels: int = 4,  # image (or latent) channels C
        out_channels: int | None = None,  # None: same as in_channels
        image_size: int | tuple[int, ...] = 32,  # H (= W), (H, W), or (L,) for sequences; divisible by patch_size
        patch_size: int = 2,  # p: tokens are p x p patches (p steps for sequences)
        hidden: int = 384,  # token width (DiT-S: 384)
        depth: int = 12,  # number of blocks (DiT-S: 12)
        heads: int = 6,  # attention heads (DiT-S: 6)
        mlp_ratio: float = 4.0,  # MLP width / token width
        dropout: float = 0.0,
        pos_embedding: str = "sincos",  # "sincos" (fixed, the paper's) or "learned"
        embedding: str = "sinusoidal",  # noise embedding: "sinusoidal" (for 1000 t) or "fourier" (t, log sigma / 4)
        emb_features: int = 256,  # width of the fixed noise features (the paper's frequency embedding size)
        fourier_scale: float = 16.0,  # std of the Fourier frequencies
        input_scale: float = 1.0,  # multiplies the noise input before the fixed features
        num_classes: int = 0,  # 0: unconditional; else labels 0..num_classes-1 and -1 (null)
        seed: int = 0,  # seeds the Fourier frequencies
        context_dim: int = 0,  # width D of a prompt's token embeddings; 0: no prompt
        context_mode: str = "cross",  # "cross" (cross-attention per block) or "concat" (tokens join self-attention)
        pooled_context: bool = False,  # also add Linear(masked mean of the context) to c
    ):
        super().__init__()
        if context_mode not in CONTEXT_MODES:
            raise ValueError(f"context_mode {context_mode!r} unknown; one of: {', '.join(CONTEXT_MODES)}")
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
        if len(size) not in (1, 2):
            raise ValueError(f"DiT image_size must be H, [H, W] or [L] (sequences), got {image_size!r}")
        if pos_embedding not in POS_EMBEDDINGS:
            raise ValueError(f"pos_embedding {pos_embedding!r} unknown; one of: {', '.join(POS_EMBEDDINGS)}")
        if patch_size < 1 or any(s % patch_size for s in size):
            raise ValueError(f"size {'x'.join(map(str, size))} must be divisible by patch_size {patch_size}")
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        if in_channels < 1 or depth < 1:
            raise ValueError(f"in_channels and depth must be >= 1, got {in_channels}, {depth}")
        self.in_channels, self.out_channels = in_channels, out_channels or in_channels
        self.size, self.p = size, patch_size
        self.grid = tuple(s // patch_size for s in size)
        conv = nn.Conv1d if len(size) == 1 else nn.Conv2d
        self.patch = conv(in_channels, hidden, patch_size, stride=patch_size)
        N = self.grid[0] * (self.grid[1] if len(size) == 2 else 1)
        if pos_embedding == "sincos":
            pos = sincos_1d(hidden, N) if len(size) == 1 else sincos_2d(hidden, *self.grid)
            self.register_buffer("pos", pos[None], persistent=False)
        else:
            self.pos = nn.Parameter(torch.randn(1, N, hidden) * 0.02)
        self.emb = NoiseEmbedding(emb_features, hidden, embedding, fourier_scale, input_scale, seed=seed)
        self.label = LabelEmbedding(num_classes, hidden) if num_classes > 0 else None
        self.context_dim, self.context_mode = int(context_dim), context_mode
        cross_dim = context_dim if context_mode == "cross" else 0
        self.context_in = nn.Linear(context_dim, hidden) if (context_dim and context_mode == "concat") else None
        self.pool = PooledContext(context_dim, hidden) if (context_dim and pooled_context) else None
        self.blocks = nn.ModuleList([DiTBlock(hidden, heads, mlp_ratio, dropout, cross_dim) for _ in range(depth)])
        self.norm_out = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(hidden, 2 * hidden)
        self.out = nn.Linear(hidden, patch_size ** len(size) * self.out_channels)
        for m in (self.ada_out, self.out):  # zero output at construction
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        # the paper's initialisation of the patch projection: as a linear layer (xavier)
        nn.init.xavier_uniform_(self.patch.weight.view(hidden, -1))
        nn.init.zeros_(self.patch.bias)

    def forward(self, x: Tensor, noise_input: Tensor, y: Tensor | None = None, context: Tensor | None = None,
                context_mask: Tensor | None = None) -> Tensor:
        if x.ndim != 2 + len(self.size) or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.size:
            raise ValueError(f"DiT expects (B, {self.in_channels}, {', '.join(map(str, self.size))}), "
                             f"got {tuple(x.shape)}")
        B = x.shape[0]
        c = self.emb(noise_batch(noise_input, B, x))
        if self.label is not None:
            c = c + self.label(y, B, x.device)
        else:
            check_unconditional(y)
        ctx = check_context(context, context_mask, B, self.context_dim)
        if ctx is not None and self.pool is not None:
            c = c + self.pool(*ctx)
        c = F.silu(c).to(x.dtype)
        h = self.patch(x).flatten(2).transpose(1, 2) + self.pos.to(x.dtype)
        N, key_mask = h.shape[1], None
        if ctx is not None and self.context_in is not None:  # in-context: prompt tokens join the image tokens
            h = torch.cat([h, self.context_in(ctx[0].to(h.dtype))], dim=1)
            key_mask = torch.cat([torch.ones(B, N, dtype=torch.bool, device=x.device), ctx[1]], dim=1)
            ctx = None
        for block in self.blocks:
            h = block(h, c, ctx, key_mask)
        h = h[:, :N]
        shift, scale = self.ada_out(c).chunk(2, dim=1)
        h = self.out(_modulate(self.norm_out(h), shift, scale))  # (B, N, p * p * C_out), (B, N, p * C_out) in 1-D
        p, C = self.p, self.out_channels
        if len(self.size) == 1:
            return h.view(B, self.grid[0], p, C).permute(0, 3, 1, 2).reshape(B, C, self.size[0])
        gh, gw = self.grid
        h = h.view(B, gh, gw, p, p, C).permute(0, 5, 1, 3, 2, 4)  # (B, C, gh, p, gw, p)
        return h.reshape(B, C, gh * p, gw * p)

