"""An MLP denoising network for (B, D) data: toy 2-D sets and tabular data.

The noise input s (B,) goes through a ``NoiseEmbedding`` (sinusoidal or random Fourier features, then
an MLP) and meets the data in one of two ways:
- ``time_injection="concat"``: [x, emb(s)] is the first layer's input (the common toy-model design);
- ``time_injection="add"``: every hidden layer adds a linear map of emb(s), as DDPM's ResNet blocks do.
Hidden layers are Linear + SiLU, optionally residual (h <- h + layer(h)). Class labels, when configured,
add a learned label embedding (with a null row for classifier-free guidance) to emb(s).

Inputs of any shape (B, *dims) are flattened to (B, dim) and the output is reshaped back.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .embeddings import LabelEmbedding, NoiseEmbedding, check_unconditional, noise_batch

TIME_INJECTIONS = ("concat", "add")


class MLP(nn.Module):
    """net(x, noise_input, y=None) -> same shape as x."""

    def __init__(
        self,
        dim: int = 2,  # data dimension D (product of the per-example shape)
        width: int = 128,  # hidden width
        depth: int = 3,  # number of hidden layers
        emb_dim: int = 128,  # width of the noise (and label) embedding
        embedding: str = "sinusoidal",  # "sinusoidal" (for 1000 t) or "fourier" (for t, log sigma / 4)
        fourier_scale: float = 16.0,  # std of the Fourier frequencies
        input_scale: float = 1.0,  # multiplies the noise input before the fixed features
        time_injection: str = "add",  # "concat" or "add" (see module docstring)
        residual: bool = True,  # h <- h + layer(h) for the hidden layers after the first
        num_classes: int = 0,  # 0: unconditional; else labels 0..num_classes-1 and -1 (null)
        seed: int = 0,  # seeds the Fourier frequencies
    ):
        super().__init__()
        if time_injection not in TIME_INJECTIONS:
            raise ValueError(f"time_injection {time_injection!r} unknown; one of: {', '.join(TIME_INJECTIONS)}")
        if dim < 1 or width < 1 or depth < 1:
            raise ValueError(f"dim, width and depth must be >= 1, got {dim}, {width}, {depth}")
        self.dim, self.time_injection, self.residual = dim, time_injection, residual
        self.emb = NoiseEmbedding(emb_dim, emb_dim, embedding, fourier_scale, input_scale, seed=seed)
        self.label = LabelEmbedding(num_classes, emb_dim) if num_classes > 0 else None
        first_in = dim + emb_dim if time_injection == "concat" else dim
        self.layers = nn.ModuleList(
            [nn.Linear(first_in, width)] + [nn.Linear(width, width) for _ in range(depth - 1)]
        )
        self.emb_proj = (
            nn.ModuleList([nn.Linear(emb_dim, width) for _ in range(depth)]) if time_injection == "add" else None
        )
        self.act = nn.SiLU()
        self.out = nn.Linear(width, dim)

    def forward(self, x: Tensor, noise_input: Tensor, y: Tensor | None = None) -> Tensor:
        B = x.shape[0]
        h0 = x.reshape(B, -1)
        if h0.shape[1] != self.dim:
            raise ValueError(f"MLP built for dim={self.dim}, got input of shape {tuple(x.shape)}")
        noise_input = noise_batch(noise_input, B, x)
        e = self.emb(noise_input)
        if self.label is not None:
            e = e + self.label(y, B, x.device)
        else:
            check_unconditional(y)
        e = self.act(e.to(h0.dtype))
        h = torch.cat([h0, e], dim=1) if self.time_injection == "concat" else h0
        for i, layer in enumerate(self.layers):
            z = layer(h)
            if self.emb_proj is not None:
                z = z + self.emb_proj[i](e)
            z = self.act(z)
            h = h + z if (self.residual and i > 0) else z
        return self.out(h).reshape(x.shape)
