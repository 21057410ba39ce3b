"""Noise-conditional classifiers ``net(x_t, noise_input) -> logits (B, K)`` for classifier guidance.

Dhariwal & Nichol (2021), "Diffusion models beat GANs on image synthesis", sec. 4 and appendix: the
classifier that guides a diffusion model sees the noisy x_t and the noise level, so it is "the
downsampling trunk of the U-Net model with an attention pool at the 8x8 layer"; here the trunk is the
same as ``unet.UNet``'s downward path and middle block (same blocks, same noise embedding, so a run's
U-Net options carry over), followed by GroupNorm, SiLU and a global average pool (guided-diffusion's
``pool="adaptive"`` head) giving the features (B, F), F = channels * channel_mult[-1], and a linear
layer to the K logits.

For (B, D) data the trunk is an MLP with the noise embedding added to every hidden layer
(``MLPClassifier``); its features are the last hidden layer, width F = ``width``.

Both expose ``features(x, noise_input) -> (B, F)`` (penultimate activations; the evaluation code uses
them as an Inception-like embedding) and ``forward = head(features)``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .embeddings import NoiseEmbedding, noise_batch
from .unet import TIME_INJECTIONS, Attention, Downsample, ResBlock, group_norm


class EncoderClassifier(nn.Module):
    """net(x, noise_input) -> logits (B, num_classes) for x of shape (B, in_channels, H, W)."""

    def __init__(
        self,
        in_channels: int = 3,  # image channels C
        num_classes: int = 10,  # K, the number of logits
        channels: int = 128,  # base width (as UNet)
        channel_mult: tuple[int, ...] = (1, 2, 2, 2),  # width multiplier per level
        num_res_blocks: int = 2,  # ResNet blocks per level
        attention_levels: tuple[int, ...] = (1,),  # levels (0 = full resolution) with self-attention
        mid_attention: bool = True,  # self-attention in the middle block
        num_heads: int = 1,  # attention heads
        dropout: float = 0.0,
        time_injection: str = "scale_shift",  # "add" or "scale_shift" (as UNet)
        embedding: str = "sinusoidal",  # "sinusoidal" (for 1000 t) or "fourier" (for t, log sigma / 4)
        emb_features: int | None = None,  # width of the fixed features; None: channels
        emb_mult: int = 4,  # embedding width = emb_mult * channels
        fourier_scale: float = 16.0,  # std of the Fourier frequencies
        input_scale: float = 1.0,  # multiplies the noise input before the fixed features
        norm_groups: int = 32,  # GroupNorm groups (reduced to a divisor of the width where needed)
        seed: int = 0,  # seeds the Fourier frequencies
    ):
        super().__init__()
        if time_injection not in TIME_INJECTIONS:
            raise ValueError(f"time_injection {time_injection!r} unknown; one of: {', '.join(TIME_INJECTIONS)}")
        channel_mult = tuple(int(m) for m in channel_mult)
        if not channel_mult or min(channel_mult) < 1:
            raise ValueError(f"channel_mult must be a non-empty list of positive ints, got {channel_mult}")
        if num_classes < 2:
            raise ValueError(f"a classifier needs num_classes >= 2, got {num_classes}")
        levels = len(channel_mult)
        bad = [lv for lv in attention_levels if not 0 <= int(lv) < levels]
        if bad:
            raise ValueError(f"attention_levels {bad} out of range; levels are 0..{levels - 1}")
        self.in_channels, self.num_classes, self.levels = in_channels, num_classes, levels
        emb_dim = emb_mult * channels
        self.emb = NoiseEmbedding(emb_features or channels, emb_dim, embedding, fourier_scale, input_scale, seed=seed)

        def block(ci: int, co: int) -> ResBlock:
            # init scale 1: no residual branch needs to start at zero in a classifier
            return ResBlock(ci, co, emb_dim, dropout, norm_groups, time_injection, False, 1.0)

        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down = nn.ModuleList()
        c = channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layer = nn.ModuleList([block(c, channels * mult)])
                c = channels * mult
                if level in attention_levels:
                    layer.append(Attention(c, num_heads, norm_groups, 1.0))
                self.down.append(layer)
            if level != levels - 1:
                self.down.append(nn.ModuleList([Downsample(c)]))
        self.mid = nn.ModuleList(
            [block(c, c), Attention(c, num_heads, norm_groups, 1.0) if mid_attention else nn.Identity(), block(c, c)]
        )
        self.norm_out = group_norm(c, norm_groups)
        self.num_features = c
        self.head = nn.Linear(c, num_classes)

    def features(self, x: Tensor, noise_input: Tensor) -> Tensor:
        """The pooled trunk activations (B, F), the input of the last linear layer."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"classifier expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        f = 2 ** (self.levels - 1)
        if x.shape[2] % f or x.shape[3] % f:
            raise ValueError(f"classifier with {self.levels} levels needs H and W divisible by {f}, got "
                             f"{x.shape[2]}x{x.shape[3]}")
        e = F.silu(self.emb(noise_batch(noise_input, x.shape[0], x))).to(x.dtype)
        h = self.conv_in(x)
        for layer in self.down:
            for m in layer:
                h = m(h, e) if isinstance(m, ResBlock) else m(h)
        h = self.mid[0](h, e)
        h = self.mid[1](h)
        h = self.mid[2](h, e)
        return F.silu(self.norm_out(h)).mean(dim=(2, 3))

    def forward(self, x: Tensor, noise_input: Tensor) -> Tensor:
        return self.head(self.features(x, noise_input))


class MLPClassifier(nn.Module):
    """net(x, noise_input) -> logits (B, num_classes) for x of shape (B, *dims), prod(dims) = dim."""

    def __init__(
        self,
        dim: int = 2,  # data dimension D
        num_classes: int = 2,  # K, the number of logits
        width: int = 128,  # hidden width (= the feature width F)
        depth: int = 3,  # hidden layers
        emb_dim: int = 64,  # width of the noise embedding
        embedding: str = "sinusoidal",  # "sinusoidal" (for 1000 t) or "fourier" (for t, log sigma / 4)
        fourier_scale: float = 16.0,  # std of the Fourier frequencies
        input_scale: float = 1.0,  # multiplies the noise input before the fixed features
        seed: int = 0,  # seeds the Fourier frequencies
    ):
        super().__init__()
        if dim < 1 or width < 1 or depth < 1:
            raise ValueError(f"dim, width and depth must be >= 1, got {dim}, {width}, {depth}")
        if num_classes < 2:
            raise ValueError(f"a classifier needs num_classes >= 2, got {num_classes}")
        self.dim, self.num_classes, self.num_features = dim, num_classes, width
        self.emb = NoiseEmbedding(emb_dim, emb_dim, embedding, fourier_scale, input_scale, seed=seed)
        self.layers = nn.ModuleList([nn.Linear(dim, width)] + [nn.Linear(width, width) for _ in range(depth - 1)])
        self.emb_proj = nn.ModuleList([nn.Linear(emb_dim, width) for _ in range(depth)])
        self.head = nn.Linear(width, num_classes)

    def features(self, x: Tensor, noise_input: Tensor) -> Tensor:
        """The last hidden layer (B, width)."""
        h = x.reshape(x.shape[0], -1)
        if h.shape[1] != self.dim:
            raise ValueError(f"classifier built for dim={self.dim}, got input of shape {tuple(x.shape)}")
        e = F.silu(self.emb(noise_batch(noise_input, x.shape[0], x))).to(h.dtype)
        for i, (layer, proj) in enumerate(zip(self.layers, self.emb_proj)):
            z = F.silu(layer(h) + proj(e))
            h = h + z if i > 0 else z  # residual after the first layer, as the MLP denoiser
        return h

    def forward(self, x: Tensor, noise_input: Tensor) -> Tensor:
        return self.head(self.features(x, noise_input))
