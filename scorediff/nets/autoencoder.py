"""A small convolutional KL-regularised autoencoder for latent diffusion (Rombach et al. 2022, "High-Resolution
Image Synthesis with Latent Diffusion Models", Sec. 3.1 and App. G; the "KL-f" autoencoders).

Encoder: a 3x3 conv, then per level ``num_res_blocks`` ResNet blocks (the U-Net's, without noise embedding) at
``channels * channel_mult[level]`` and a stride-2 conv down except after the last level, a middle ResNet
block, GroupNorm, SiLU and a 3x3 conv to 2 * ``latent_channels``: the mean and log-variance of the diagonal
Gaussian posterior q(z | x). Decoder: the mirror image with nearest-neighbour upsampling. The downsampling
factor is f = 2^(len(channel_mult) - 1): an image (C, H, W) has latents (latent_channels, H / f, W / f).

``forward(x)`` returns (reconstruction of the posterior mean, or of a posterior sample, mean, logvar);
``encode`` / ``decode`` are the two halves. The training objective (reconstruction + kl_weight * KL(q(z|x) || N(0, I))) and the latent scale
factor live in ``scorediff.latent``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .unet import Downsample, ResBlock, Upsample, group_norm


class Autoencoder(nn.Module):
    """ae(x) -> (x_hat, mean, logvar); encode(x) -> (mean, logvar); decode(z) -> x_hat."""

    def __init__(
        self,
        in_channels: int = 3,  # image channels C
        latent_channels: int = 4,  # latent channels
        channels: int = 32,  # base width
        channel_mult: tuple[int, ...] = (1, 2),  # width multiplier per level; f = 2^(levels - 1)
        num_res_blocks: int = 1,  # ResNet blocks per level
        norm_groups: int = 8,  # GroupNorm groups (reduced to a divisor of the width where needed)
        logvar_clamp: float = 20.0,  # |log variance| bound, as LDM's DiagonalGaussianDistribution (-30, 20)
    ):
        super().__init__()
        channel_mult = tuple(int(m) for m in channel_mult)
        if not channel_mult or min(channel_mult) < 1:
            raise ValueError(f"channel_mult must be a non-empty list of positive ints, got {channel_mult}")
        if in_channels < 1 or latent_channels < 1 or channels < 1 or num_res_blocks < 1:
            raise ValueError("in_channels, latent_channels, channels and num_res_blocks must be >= 1")
        self.in_channels, self.latent_channels = in_channels, latent_channels
        self.factor = 2 ** (len(channel_mult) - 1)
        self.logvar_clamp = float(logvar_clamp)
        block = lambda ci, co: ResBlock(ci, co, 0, 0.0, norm_groups, "add", False, 1.0)  # noqa: E731
        widths = [channels * m for m in channel_mult]

        enc: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, padding=1)]
        c = channels
        for level, w in enumerate(widths):
            for _ in range(num_res_blocks):
                enc.append(block(c, w))
                c = w
            if level != len(widths) - 1:
                enc.append(Downsample(c))
        enc += [block(c, c), group_norm(c, norm_groups), nn.SiLU(), nn.Conv2d(c, 2 * latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = [nn.Conv2d(latent_channels, c, 3, padding=1), block(c, c)]
        for level in reversed(range(len(widths))):
            for _ in range(num_res_blocks):
                dec.append(block(c, widths[level]))
                c = widths[level]
            if level != 0:
                dec.append(Upsample(c))
        dec += [group_norm(c, norm_groups), nn.SiLU(), nn.Conv2d(c, in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def _check(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"autoencoder expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[2] % self.factor or x.shape[3] % self.factor:
            raise ValueError(f"autoencoder with factor {self.factor} needs H and W divisible by it, "
                             f"got {x.shape[2]}x{x.shape[3]}")

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The posterior q(z | x) = N(mean, diag(exp(logvar)))."""
        self._check(x)
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-self.logvar_clamp, self.logvar_clamp)

    def decode(self, z: Tensor) -> Tensor:
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(f"decoder expects latents (B, {self.latent_channels}, h, w), got {tuple(z.shape)}")
        return self.decoder(z)

    def forward(self, x: Tensor, generator: torch.Generator | None = None, sample: bool = False
                ) -> tuple[Tensor, Tensor, Tensor]:
        """(decode(z), mean, logvar): z = mean, or with ``sample`` a posterior draw z = mean + exp(logvar / 2) * n,
        n ~ N(0, I) from ``generator`` (training; one forward call, so DDP sees the whole objective)."""
        mean, logvar = self.encode(x)
        z = mean
        if sample:
            n = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            z = mean + torch.exp(0.5 * logvar) * n
        return self.decode(z), mean, logvar


class SuperResolution(nn.Module):
    """A super-resolution denoiser for cascaded generation (Ho et al. 2022, "Cascaded Diffusion Models", Sec. 3).

    net(x, noise_input, y=None, low_res=..., aug_level=...) for x (B, C, H, W): the low-resolution image
    (B, C, H / factor, W / factor) is upsampled (bilinear) to (H, W) and concatenated to x along the channels,
    together with one constant channel holding the noise-conditioning augmentation level (the std with which
    the low-resolution input was noised: the model sees how much to trust it, Sec. 4.1); the inner network
    (any image network config: U-Net, DiT) is built with in_channels = 2C + 1 and out_channels = C.
    """

    def __init__(
        self,
        base: dict | None = None,  # the inner network's config, e.g. {"type": "unet", "channels": 32, ...}
        in_channels: int = 1,  # image channels C
        factor: int = 2,  # resolution ratio of this stage
    ):
        super().__init__()
        from . import make  # the package's builder (this module is imported by it)

        if factor < 2:
            raise ValueError(f"super-resolution factor must be >= 2, got {factor}")
        base = dict(base or {"type": "unet", "channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1,
                             "attention_levels": [], "dropout": 0.0, "norm_groups": 8})
        if base.get("type") == "super_resolution":
            raise ValueError("a super-resolution network's base cannot itself be super-resolution")
        self.in_channels, self.factor = in_channels, factor
        self.inner = make(base, in_channels=2 * in_channels + 1, out_channels=in_channels)

    def forward(self, x: Tensor, noise_input: Tensor, y: Tensor | None = None, low_res: Tensor | None = None,
                aug_level: Tensor | float | None = None) -> Tensor:
        if low_res is None:
            raise ValueError("a super-resolution network needs its low-resolution input: cond low_res=...")
        B, C, H, W = x.shape
        expect = (B, self.in_channels, H // self.factor, W // self.factor)
        if tuple(low_res.shape) != expect:
            raise ValueError(f"low_res must have shape {expect} for x of shape {tuple(x.shape)}, "
                             f"got {tuple(low_res.shape)}")
        up = F.interpolate(low_res.to(x.dtype), size=(H, W), mode="bilinear", align_corners=False)
        level = torch.as_tensor(0.0 if aug_level is None else aug_level, dtype=x.dtype, device=x.device)
        plane = level.reshape(-1, 1, 1, 1).expand(B, 1, H, W)
        kwargs = {} if y is None else {"y": y}
        return self.inner(torch.cat([x, up, plane], dim=1), noise_input, **kwargs)
