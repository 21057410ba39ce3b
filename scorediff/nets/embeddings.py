"""Noise-level embeddings: the network's view of the scalar noise input.

- ``SinusoidalEmbedding``: the Transformer position encoding (Vaswani et al. 2017, sec. 3.5) used for
  the time step by DDPM (Ho et al. 2020, appendix B): for frequencies
  w_k = max_period^(-k / (half - 1)), k = 0..half-1, emb(s) = [sin(w_k s), cos(w_k s)].
  Meant for noise inputs on DDPM's step scale (1000 t).
- ``FourierEmbedding``: random Fourier features (Tancik et al. 2020) as in NCSN++ (Song et al. 2021,
  score_sde): fixed Gaussian frequencies W_k ~ N(0, scale^2), emb(s) = [sin(2 pi W_k s), cos(2 pi W_k s)].
  Meant for small-range noise inputs such as log(sigma) / 4 or t in [0, 1].
- ``NoiseEmbedding``: one of the two followed by a two-layer MLP (Linear, SiLU, Linear) to the
  embedding width, the shape DDPM's "temb" takes before it reaches every residual block.

``s`` is the noise input, a float tensor (B,) chosen by the parameterization (1000 t, log sigma / 4, ...).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

EMBEDDINGS = ("sinusoidal", "fourier")


class SinusoidalEmbedding(nn.Module):
    """emb(s)_k = sin(w_k s) for k < half, cos(w_{k-half} s) after; w_k spans 1 .. 1/max_period geometrically."""

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"sinusoidal embedding width must be even and >= 2, got {dim}")
        half = dim // 2
        # DDPM's exponent divides by half - 1 so that the lowest frequency is exactly 1 / max_period.
        # (Computed in Python: a tensor pow under ``torch.device("meta")`` pulls in sympy, ~10 s.)
        freqs = [max_period ** (-k / max(half - 1, 1)) for k in range(half)]
        self.register_buffer("freqs", torch.tensor(freqs, dtype=torch.float32), persistent=False)
        self.dim = dim

    def forward(self, s: Tensor) -> Tensor:
        args = s.to(self.freqs.dtype)[:, None] * self.freqs[None, :]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=1).to(s.dtype if s.is_floating_point() else args.dtype)


class FourierEmbedding(nn.Module):
    """emb(s) = [sin(2 pi W s), cos(2 pi W s)], W ~ N(0, scale^2) fixed (a buffer, saved with the weights).

    The frequencies are drawn from a generator seeded by ``seed``, so the same config builds the same
    embedding without relying on the global RNG.
    """

    def __init__(self, dim: int, scale: float = 16.0, seed: int = 0):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"Fourier embedding width must be even and >= 2, got {dim}")
        g = torch.Generator(device="cpu").manual_seed(seed)
        W = torch.randn(dim // 2, generator=g, device="cpu") * scale
        self.register_buffer("W", W.to(torch.empty(0).device))
        self.dim = dim

    def forward(self, s: Tensor) -> Tensor:
        args = 2 * math.pi * s.to(self.W.dtype)[:, None] * self.W[None, :]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class NoiseEmbedding(nn.Module):
    """Noise input s (B,) -> embedding (B, out_dim): a fixed feature map, then Linear, SiLU, Linear.

    kind: "sinusoidal" or "fourier"; ``features`` is the width of the fixed features,
    ``scale`` the Fourier frequency scale, ``input_scale`` multiplies s first (e.g. to bring
    log sigma / 4 onto a sinusoidal embedding's scale).
    """

    def __init__(
        self,
        features: int,
        out_dim: int,
        kind: str = "sinusoidal",
        scale: float = 16.0,
        input_scale: float = 1.0,
        max_period: float = 10000.0,
        seed: int = 0,
    ):
        super().__init__()
        if kind == "sinusoidal":
            self.features = SinusoidalEmbedding(features, max_period)
        elif kind == "fourier":
            self.features = FourierEmbedding(features, scale, seed)
        else:
            raise ValueError(f"embedding {kind!r} unknown; one of: {', '.join(EMBEDDINGS)}")
        self.input_scale = float(input_scale)
        self.mlp = nn.Sequential(nn.Linear(features, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, s: Tensor) -> Tensor:
        if s.ndim != 1:
            raise ValueError(f"noise input must have shape (B,), got {tuple(s.shape)}")
        e = self.features(s * self.input_scale if self.input_scale != 1.0 else s)
        return self.mlp(e.to(self.mlp[0].weight.dtype))


class LabelEmbedding(nn.Module):
    """Class label y -> embedding, with one extra learned row for the null label (classifier-free guidance).

    Labels are 0..num_classes-1; the null label is -1 (the label data without a class carries), and
    ``num_classes`` itself is accepted as an alias. ``y=None`` means every example is null.
    Ho & Salimans (2022), "Classifier-free diffusion guidance": the null label is what a condition is
    dropped to during training and what the unconditional branch sees when sampling.
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, y: Tensor | None, batch: int, device: torch.device) -> Tensor:
        if y is None:
            idx = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        else:
            idx = null_to_index(y, self.num_classes, batch)
        return self.table(idx)


def null_to_index(y: Tensor, num_classes: int, batch: int) -> Tensor:
    """Check labels y (B,) and map the null label -1 to the table row ``num_classes``."""
    if not torch.is_tensor(y):
        y = torch.as_tensor(y)
    if y.ndim == 0:
        y = y.expand(batch)
    if y.shape != (batch,):
        raise ValueError(f"labels y must have shape ({batch},), got {tuple(y.shape)}")
    if y.is_floating_point():
        raise ValueError(f"labels y must be integers, got dtype {y.dtype}")
    y = y.long()
    if y.numel() and (int(y.min()) < -1 or int(y.max()) > num_classes):
        raise ValueError(
            f"labels must lie in 0..{num_classes - 1}, or be -1 (null), got values in {int(y.min())}..{int(y.max())}"
        )
    return torch.where(y < 0, torch.full_like(y, num_classes), y)


def check_unconditional(y: Tensor | None) -> None:
    """An unconditional network accepts y=None or all-null labels; a real label would be silently lost."""
    if y is None:
        return
    y = torch.as_tensor(y)
    if y.numel() and bool((y >= 0).any()):
        raise ValueError("class labels given to an unconditional network (num_classes=0); pass y=None or -1")


def noise_batch(s: Tensor, B: int, like: Tensor) -> Tensor:
    """Accept a scalar or (B,) noise input; return (B,) in like's dtype/device."""
    s = torch.as_tensor(s, device=like.device)
    if not s.is_floating_point():
        s = s.to(like.dtype)
    if s.ndim == 0:
        s = s.expand(B)
    if s.shape != (B,):
        raise ValueError(f"noise input must be a scalar or of shape ({B},), got {tuple(s.shape)}")
    return s
