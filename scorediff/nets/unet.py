"""The U-Net of DDPM (Ho et al. 2020, appendix B) with the options of NCSN++/DDPM++ (Song et al. 2021).

Layout (DDPM's ``unet.py``, rewritten): a 3x3 input conv; ``len(channel_mult)`` levels, each with
``num_res_blocks`` ResNet blocks at ``channels * channel_mult[level]`` channels (self-attention after
each block on the levels in ``attention_levels``) and a stride-2 conv down to the next level; a middle
of ResNet block, attention, ResNet block; the mirror-image upward path with ``num_res_blocks + 1``
blocks per level, each fed the concatenation with one skip activation, and nearest-neighbour x2
upsampling followed by a 3x3 conv; GroupNorm, SiLU and a 3x3 conv out.

A ResNet block is GroupNorm, SiLU, conv3x3, (noise embedding), GroupNorm, SiLU, dropout, conv3x3, plus
a 1x1 conv on the skip path when the channel count changes. The noise embedding (sinusoidal or
random Fourier features then an MLP, ``embeddings.NoiseEmbedding``) enters every block either
- ``time_injection="add"``: h += Linear(SiLU(emb)) after the first conv (DDPM), or
- ``time_injection="scale_shift"``: GroupNorm(h) * (1 + scale) + shift before the second conv
  (adaptive group norm, Dhariwal & Nichol 2021 / DDPM++).
Class labels add a learned embedding (null row for classifier-free guidance) to the noise embedding.
A prompt (``context`` (B, L, D), ``context_mask`` (B, L)) enters by cross-attention after the self-attention
of the levels in ``cross_attention_levels`` and in the middle (latent diffusion, Rombach et al. 2022, sec. 3.3;
``attention.SpatialCrossAttention``), and with ``pooled_context`` also as its masked mean added to the noise
embedding; labels and prompts combine. ``context=None`` is "no prompt": cross-attention then adds 0.

Levels are counted from 0 (full resolution); ``attention_levels=(1,)`` on 32x32 input is DDPM's
"attention at 16x16". Any H, W divisible by 2^(len(channel_mult) - 1) and any channel count work.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import PooledContext, SpatialCrossAttention, check_context
from .embeddings import LabelEmbedding, NoiseEmbedding, check_unconditional, noise_batch

TIME_INJECTIONS = ("add", "scale_shift")


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    # the largest group count <= groups that divides the channels, so any width works
    return nn.GroupNorm(math.gcd(groups, channels), channels, eps=1e-6)


def _scale_init(module: nn.Module, scale: float) -> nn.Module:
    """Scale the default init of a residual branch's last layer (DDPM/EDM start each branch near zero)."""
    if scale != 1.0:
        with torch.no_grad():
            module.weight.mul_(scale)
            if module.bias is not None:
                module.bias.zero_()
    return module


class ResBlock(nn.Module):
    def __init__(self, c_in, c_out, emb_dim, dropout, groups, time_injection, skip_rescale, init_scale):
        super().__init__()
        self.norm1 = group_norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.scale_shift = time_injection == "scale_shift"
        # emb_dim = 0: a block without noise embedding (the autoencoder's)
        self.emb = nn.Linear(emb_dim, 2 * c_out if self.scale_shift else c_out) if emb_dim > 0 else None
        self.norm2 = group_norm(c_out, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _scale_init(nn.Conv2d(c_out, c_out, 3, padding=1), init_scale)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.skip_rescale = skip_rescale

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        # emb arrives already passed through SiLU (once for all blocks)
        h = self.conv1(F.silu(self.norm1(x)))
        if self.emb is None:
            h = self.norm2(h)
        elif self.scale_shift:
            e = self.emb(emb)[:, :, None, None]
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + self.emb(emb)[:, :, None, None])
        h = self.conv2(self.dropout(F.silu(h)))
        out = self.skip(x) + h
        return out / math.sqrt(2) if self.skip_rescale else out


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions, with a residual connection (DDPM's AttnBlock)."""

    def __init__(self, channels, heads, groups, init_scale):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention: {channels} channels do not split into {heads} heads")
        self.heads = heads
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _scale_init(nn.Conv2d(channels, channels, 1), init_scale)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        # (B, heads, HW, d): attention weights softmax(q k^T / sqrt(d)) over positions
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))


class Downsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """net(x, noise_input, y=None) for x of shape (B, in_channels, H, W); output (B, out_channels, H, W)."""

    def __init__(
        self,
        in_channels: int = 3,  # image channels C
        out_channels: int | None = None,  # None: same as in_channels
        channels: int = 128,  # base width ("ch" in DDPM)
        channel_mult: tuple[int, ...] = (1, 2, 2, 2),  # width multiplier per level
        num_res_blocks: int = 2,  # ResNet blocks per level on the way down (one more on the way up)
        attention_levels: tuple[int, ...] = (1,),  # levels (0 = full resolution) with self-attention
        mid_attention: bool = True,  # self-attention in the middle block
        num_heads: int = 1,  # attention heads
        dropout: float = 0.1,
        time_injection: str = "add",  # "add" (DDPM) or "scale_shift" (adaptive group norm)
        embedding: str = "sinusoidal",  # "sinusoidal" (for 1000 t) or "fourier" (for t, log sigma / 4)
        emb_features: int | None = None,  # width of the fixed features; None: channels
        emb_mult: int = 4,  # embedding width = emb_mult * channels
        fourier_scale: float = 16.0,  # std of the Fourier frequencies
        input_scale: float = 1.0,  # multiplies the noise input before the fixed features
        num_classes: int = 0,  # 0: unconditional; else labels 0..num_classes-1 and -1 (null)
        norm_groups: int = 32,  # GroupNorm groups (reduced to a divisor of the width where needed)
        skip_rescale: bool = False,  # divide residual sums by sqrt(2) (NCSN++)
        out_init_scale: float = 1e-5,  # init scale of each residual branch's last layer and the output conv
        seed: int = 0,  # seeds the Fourier frequencies
        context_dim: int = 0,  # width D of a prompt's token embeddings; 0: no cross-attention
        cross_attention_levels: tuple[int, ...] | None = None,  # levels with cross-attention; None: attention_levels
        pooled_context: bool = False,  # also add Linear(masked mean of the context) to the noise embedding
    ):
        super().__init__()
        if time_injection not in TIME_INJECTIONS:
            raise ValueError(f"time_injection {time_injection!r} unknown; one of: {', '.join(TIME_INJECTIONS)}")
        channel_mult = tuple(int(m) for m in channel_mult)
        if not channel_mult or min(channel_mult) < 1:
            raise ValueError(f"channel_mult must be a non-empty list of positive ints, got {channel_mult}")
        levels = len(channel_mult)
        bad = [lv for lv in attention_levels if not 0 <= int(lv) < levels]
        if bad:
            raise ValueError(f"attention_levels {bad} out of range; levels are 0..{levels - 1}")
        if in_channels < 1 or channels < 1 or num_res_blocks < 1:
            raise ValueError(
                f"in_channels, channels, num_res_blocks must be >= 1, got {in_channels}, {channels}, {num_res_blocks}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.levels = levels
        emb_dim = emb_mult * channels
        self.emb = NoiseEmbedding(
            emb_features or channels, emb_dim, embedding, fourier_scale, input_scale, seed=seed
        )
        self.label = LabelEmbedding(num_classes, emb_dim) if num_classes > 0 else None
        # prompt conditioning (nets/attention.py); context_dim = 0 builds none of it
        self.context_dim = int(context_dim)
        xlevels = tuple(attention_levels if cross_attention_levels is None else cross_attention_levels)
        if any(not 0 <= int(lv) < levels for lv in xlevels):
            raise ValueError(f"cross_attention_levels {list(xlevels)} out of range; levels are 0..{levels - 1}")
        xlevels = xlevels if context_dim else ()
        cross = lambda c: SpatialCrossAttention(c, context_dim, num_heads, norm_groups, out_init_scale)  # noqa: E731
        self.pool = PooledContext(context_dim, emb_dim) if (context_dim and pooled_context) else None

        block = lambda ci, co: ResBlock(  # noqa: E731
            ci, co, emb_dim, dropout, norm_groups, time_injection, skip_rescale, out_init_scale
        )
        attn = lambda c: Attention(c, num_heads, norm_groups, out_init_scale)  # noqa: E731

        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        # Downward path; ``skips`` tracks the width of every activation handed to the upward path.
        self.down = nn.ModuleList()
        skips, c = [channels], channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layer = nn.ModuleList([block(c, channels * mult)])
                c = channels * mult
                if level in attention_levels:
                    layer.append(attn(c))
                if level in xlevels:
                    layer.append(cross(c))
                self.down.append(layer)
                skips.append(c)
            if level != levels - 1:
                self.down.append(nn.ModuleList([Downsample(c)]))
                skips.append(c)
        self.mid = nn.ModuleList([block(c, c), attn(c) if mid_attention else nn.Identity(), block(c, c)])
        self.mid_cross = cross(c) if context_dim else None
        self.up = nn.ModuleList()
        for level in reversed(range(levels)):
            for _ in range(num_res_blocks + 1):
                layer = nn.ModuleList([block(c + skips.pop(), channels * channel_mult[level])])
                c = channels * channel_mult[level]
                if level in attention_levels:
                    layer.append(attn(c))
                if level in xlevels:
                    layer.append(cross(c))
                self.up.append(layer)
            if level != 0:
                self.up.append(nn.ModuleList([Upsample(c)]))
        self.norm_out = group_norm(c, norm_groups)
        self.conv_out = _scale_init(nn.Conv2d(c, self.out_channels, 3, padding=1), out_init_scale)

    def forward(self, x: Tensor, noise_input: Tensor, y: Tensor | None = None, context: Tensor | None = None,
                context_mask: Tensor | None = None) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"U-Net expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        f = 2 ** (self.levels - 1)
        if x.shape[2] % f or x.shape[3] % f:
            raise ValueError(
                f"U-Net with {self.levels} levels needs H and W divisible by {f}, got {x.shape[2]}x{x.shape[3]}"
            )
        B = x.shape[0]
        e = self.emb(noise_batch(noise_input, B, x))
        if self.label is not None:
            e = e + self.label(y, B, x.device)
        else:
            check_unconditional(y)
        ctx = check_context(context, context_mask, B, self.context_dim)
        if ctx is not None and self.pool is not None:
            e = e + self.pool(*ctx)
        e = F.silu(e).to(x.dtype)

        def apply(m: nn.Module, h: Tensor) -> Tensor:
            if isinstance(m, ResBlock):
                return m(h, e)
            if isinstance(m, SpatialCrossAttention):  # no prompt: cross-attention would add exactly 0
                return h if ctx is None else m(h, *ctx)
            return m(h)

        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            for m in layer:
                h = apply(m, h)
            hs.append(h)
        h = self.mid[0](h, e)
        h = self.mid[1](h)
        if self.mid_cross is not None:
            h = apply(self.mid_cross, h)
        h = self.mid[2](h, e)
        for layer in self.up:
            for m in layer:
                h = apply(m, torch.cat([h, hs.pop()], dim=1) if isinstance(m, ResBlock) else h)
        return self.conv_out(F.silu(self.norm_out(h)))
