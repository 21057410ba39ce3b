"""Toy 2-D point sets (as in FFJORD / the score-matching literature; our own constants)."""

from __future__ import annotations

import math

import torch

from .base import ArrayDataset, _check_n, _gen, _points

TOY_OPTIONS = ("n", "seed", "noise")



def eight_gaussians(n: int = 10000, seed: int = 0, noise: float = 0.1) -> ArrayDataset:
    """Mixture of 8 equal Gaussians, means on a circle of radius sqrt(2) (per-coordinate std ~ 1)."""
    g, n = _gen(seed), _check_n(n)
    k = torch.randint(0, 8, (n,), generator=g)
    angle = k.double() * (2 * math.pi / 8)
    means = math.sqrt(2) * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return _points(means + noise * torch.randn(n, 2, generator=g, dtype=torch.float64), k, 8)


def swissroll(n: int = 10000, seed: int = 0, noise: float = 0.05) -> ArrayDataset:
    """2-D Swiss roll: r = theta, theta in 1.5 pi (1 + 2 u), divided by 7 (per-coordinate std ~ 1)."""
    g, n = _gen(seed), _check_n(n)
    theta = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g, dtype=torch.float64))
    x = torch.stack([theta * torch.cos(theta), theta * torch.sin(theta)], dim=1) / 7.0
    return _points(x + noise * torch.randn(n, 2, generator=g, dtype=torch.float64), None)


def moons(n: int = 10000, seed: int = 0, noise: float = 0.05) -> ArrayDataset:
    """Two interleaved half circles (scikit-learn's make_moons layout), centred and scaled to std ~ 1."""
    g, n = _gen(seed), _check_n(n)
    label = torch.randint(0, 2, (n,), generator=g)
    a = math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    upper = torch.stack([torch.cos(a), torch.sin(a)], dim=1)
    lower = torch.stack([1 - torch.cos(a), 0.5 - torch.sin(a)], dim=1)
    x = torch.where(label[:, None] == 0, upper, lower)
    x = (x - torch.tensor([0.5, 0.25], dtype=torch.float64)) / torch.tensor([0.87, 0.5], dtype=torch.float64)
    return _points(x + noise * torch.randn(n, 2, generator=g, dtype=torch.float64), label, 2)


def checkerboard(n: int = 10000, seed: int = 0) -> ArrayDataset:
    """Uniform on the 8 dark squares of a 4x4 checkerboard over [-2, 2]^2 (per-coordinate std ~ 1.15)."""
    g, n = _gen(seed), _check_n(n)
    x1 = 4 * torch.rand(n, generator=g, dtype=torch.float64) - 2
    # choose one of the two squares in x1's column with the right parity
    row = torch.randint(0, 2, (n,), generator=g).double() * 2 + torch.floor(x1).remainder(2)
    x2 = row - 2 + torch.rand(n, generator=g, dtype=torch.float64)
    return _points(torch.stack([x1, x2], dim=1), None)


def rings(n: int = 10000, seed: int = 0, noise: float = 0.04) -> ArrayDataset:
    """Four concentric circles of radii 0.5, 1, 1.5, 2 chosen uniformly (labels: ring), std ~ 1."""
    g, n = _gen(seed), _check_n(n)
    k = torch.randint(0, 4, (n,), generator=g)
    r = 0.5 * (k.double() + 1)
    a = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    x = r[:, None] * torch.stack([torch.cos(a), torch.sin(a)], dim=1)
    return _points(x + noise * torch.randn(n, 2, generator=g, dtype=torch.float64), k, 4)


