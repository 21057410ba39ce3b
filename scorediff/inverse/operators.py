"""Linear measurement operators A: a matrix on flattened examples, or a callable materialised into one."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Operator = Tensor | Callable[[Tensor], Tensor]


# -- operators ---------------------------------------------------------------------------------------------------


def as_matrix(A: Operator, event_shape: tuple[int, ...]) -> Tensor:
    """The (M, D) float64 matrix of an operator: a matrix as given, a callable applied to the D basis vectors."""
    d = math.prod(event_shape)
    if callable(A) and not torch.is_tensor(A):
        basis = torch.eye(d, dtype=torch.float64).reshape(d, *event_shape)
        with torch.no_grad():
            cols = A(basis)
        a = torch.as_tensor(cols, dtype=torch.float64).reshape(d, -1).T
    else:
        a = torch.as_tensor(A, dtype=torch.float64)
    if a.ndim != 2 or a.shape[1] != d:
        raise ValueError(f"A must be an (M, {d}) matrix for examples of shape {tuple(event_shape)}, "
                         f"got shape {tuple(a.shape)}")
    return a.contiguous()


def mask_operator(mask: Tensor) -> Tensor:
    """Inpainting: the rows of the identity selecting the entries where ``mask`` (event-shaped) is True."""
    m = torch.as_tensor(mask).bool().flatten()
    return torch.eye(m.numel(), dtype=torch.float64)[m]


def downsample_operator(event_shape: tuple[int, ...], factor: int) -> Tensor:
    """Super-resolution: average pooling of (C, H, W) images by ``factor`` (H, W divisible by it)."""
    c, h, w = event_shape
    if h % factor or w % factor:
        raise ValueError(f"downsample factor {factor} must divide the image size {h}x{w}")
    basis = torch.eye(c * h * w, dtype=torch.float64).reshape(-1, c, h, w)
    return torch.nn.functional.avg_pool2d(basis, factor).reshape(c * h * w, -1).T.contiguous()


def blur_operator(event_shape: tuple[int, ...], kernel: Tensor) -> Tensor:
    """Deblurring: a 2-D convolution of each channel with ``kernel`` (odd size), zero padding, same size out."""
    c, h, w = event_shape
    k = torch.as_tensor(kernel, dtype=torch.float64)
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise ValueError(f"blur kernel must be a 2-D tensor of odd size, got shape {tuple(k.shape)}")
    basis = torch.eye(c * h * w, dtype=torch.float64).reshape(-1, 1, h, w)
    out = torch.nn.functional.conv2d(basis, k[None, None], padding=(k.shape[0] // 2, k.shape[1] // 2))
    return out.reshape(c * h * w, -1).T.contiguous()


def gaussian_blur_kernel(size: int = 3, std: float = 1.0) -> Tensor:
    """A normalised (size, size) Gaussian kernel for :func:`blur_operator`."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (r / std) ** 2)
    k = g[:, None] * g[None, :]
    return k / k.sum()


def grayscale_operator(event_shape: tuple[int, ...]) -> Tensor:
    """Colourisation: the channel mean of (C, H, W) images (one grey value per pixel)."""
    c, h, w = event_shape
    return torch.cat([torch.eye(h * w, dtype=torch.float64)] * c, dim=1) / c


def gaussian_operator(m: int, d: int, seed: int = 0) -> Tensor:
    """Compressed sensing: an (m, d) matrix of N(0, 1 / m) entries, fixed by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, d, generator=g, dtype=torch.float64) / math.sqrt(m)



def _apply(a: Tensor, x: Tensor) -> Tensor:
    """A x for a batch x (B, *event) -> (B, M) in float64."""
    return x.reshape(x.shape[0], -1).to(torch.float64) @ a.T

