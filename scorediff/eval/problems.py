"""A generated distribution of test problems with closed-form truth, each drawn from a seed (protocol 5).

Defaults chosen on a few hand-picked problems overfit them (issue 28). This module draws problems from a
distribution instead, so that a selection can be made on one random sample and checked on a fresh one drawn
after it. Every problem is a ``GaussianMixture`` (``scorediff.analytic``): its exact denoiser, marginals and
probability-flow ODE are the truth a sampler is measured against.

Families (``problem(seed)`` picks one with the probabilities of ``FAMILIES``):

* ``mixture``: K components (log-uniform in 1..16) in D dimensions (log-uniform in 2..``max_dim``). Each
  component's covariance has a random orthonormal basis and eigenvalues lambda_j proportional to j^(-beta),
  beta uniform in [0, 2] (flat to power-law decaying spectra; the anisotropy lambda_1 / lambda_D is D^beta).
  Means ~ N(offset, separation^2 I); the within-component scale relative to the separation is log-uniform in
  [0.05, 0.5]; the overall data scale log-uniform in [0.1, 10] and the offset uniform in [-1, 1] times it (data
  ranges that are not centred, not unit).
* ``field``: image-like mixtures on an s x s grid (s in {4, 8, 16}): means and covariances from a stationary
  squared-exponential field of correlation length ell (log-uniform in [0.5, s / 2] pixels), plus a fine
  per-pixel variance (log-uniform in [1e-4, 1e-2]); K log-uniform in 1..10. The held-out ``image64`` of
  protocols 1-4 is one member of this family.
* ``gp``: a Gaussian process on L points (log-uniform in 8..min(256, ``max_dim``)), kernel drawn from
  ``analytic.gp.KERNELS``, lengthscale log-uniform in [0.05, 0.5], variance log-uniform in [0.1, 10], mean
  uniform in [-2, 2] (``analytic.gaussian_process``).

``max_dim`` caps the dimension (default 4096; the exact oracle stores full D x D covariances and factors them,
so D = 4096 costs seconds per call and ~134 MB per component: cap it to what a run can afford, and say so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..analytic import GaussianMixture, gaussian_process
from ..analytic.gp import KERNELS

FAMILIES = {"mixture": 0.5, "field": 0.3, "gp": 0.2}


@dataclass(frozen=True)
class Problem:
    """One drawn problem: ``name`` says what was drawn (family and parameters), ``mixture`` is the truth."""

    seed: int
    family: str
    name: str
    mixture: GaussianMixture


def _log_uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * float(torch.rand((), generator=g, dtype=torch.float64)))


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _log_int(g: torch.Generator, lo: int, hi: int) -> int:
    return max(lo, min(hi, round(_log_uniform(g, lo, hi + 0.999))))


def _mixture(g: torch.Generator, max_dim: int) -> tuple[str, GaussianMixture]:
    d = _log_int(g, 2, max_dim)
    k = _log_int(g, 1, 16)
    beta = _uniform(g, 0.0, 2.0)
    scale = _log_uniform(g, 0.1, 10.0)
    width = _log_uniform(g, 0.05, 0.5)
    offset = _uniform(g, -1.0, 1.0) * scale
    # separation^2 * D + width^2 * separation^2 * D ~ scale^2 * D: total variance per coordinate ~ scale^2
    sep = scale / math.sqrt(1.0 + width**2)
    means = offset + sep * torch.randn(k, d, generator=g, dtype=torch.float64)
    lam = torch.arange(1, d + 1, dtype=torch.float64) ** (-beta)
    lam = lam / lam.mean() * (width * sep) ** 2
    q, _ = torch.linalg.qr(torch.randn(k, d, d, generator=g, dtype=torch.float64))
    covs = q @ torch.diag_embed(lam.expand(k, d)) @ q.transpose(1, 2)
    covs = 0.5 * (covs + covs.transpose(1, 2))
    w = torch.rand(k, generator=g, dtype=torch.float64) + 0.5
    name = f"mixture D={d} K={k} beta={beta:.2f} scale={scale:.2g} width={width:.2g} offset={offset:+.2g}"
    return name, GaussianMixture(w / w.sum(), means, covs)


def _field(g: torch.Generator, max_dim: int) -> tuple[str, GaussianMixture]:
    sides = [s for s in (4, 8, 16) if s * s <= max_dim] or [max(1, int(math.isqrt(max_dim)))]
    s = sides[int(torch.randint(len(sides), (), generator=g))]
    ell = _log_uniform(g, 0.5, max(s / 2, 0.6))
    fine = _log_uniform(g, 1e-4, 1e-2)
    k = _log_int(g, 1, 10)
    ij = torch.stack(torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij"), -1).reshape(-1, 2)
    r2 = ((ij[:, None] - ij[None]) ** 2).sum(-1).to(torch.float64)
    kern = torch.exp(-r2 / (2 * ell**2)) + 1e-8 * torch.eye(s * s, dtype=torch.float64)
    chol = torch.linalg.cholesky(kern)
    means = 0.5 * torch.randn(k, s * s, generator=g, dtype=torch.float64) @ chol.T
    amp = 0.1 + 0.4 * torch.rand(k, generator=g, dtype=torch.float64)
    covs = amp[:, None, None] * kern + fine * torch.eye(s * s, dtype=torch.float64)
    name = f"field {s}x{s} K={k} ell={ell:.2g} fine={fine:.1g}"
    return name, GaussianMixture(torch.full((k,), 1.0 / k, dtype=torch.float64), means, covs, (1, s, s))


def _gp(g: torch.Generator, max_dim: int) -> tuple[str, GaussianMixture]:
    length = _log_int(g, 8, max(8, min(256, max_dim)))
    kernel = KERNELS[int(torch.randint(len(KERNELS), (), generator=g))]
    ls = _log_uniform(g, 0.05, 0.5)
    var = _log_uniform(g, 0.1, 10.0)
    mean = _uniform(g, -2.0, 2.0)
    name = f"gp L={length} {kernel} l={ls:.2g} v={var:.2g} mean={mean:+.2g}"
    return name, gaussian_process(length, kernel=kernel, lengthscale=ls, variance=var, mean=mean, jitter=1e-4)


def problem(seed: int, max_dim: int = 4096) -> Problem:
    """The problem of ``seed``: the same seed gives the same problem (family, parameters and mixture)."""
    if int(max_dim) < 2:
        raise ValueError(f"max_dim must be >= 2, got {max_dim}")
    g = torch.Generator().manual_seed(int(seed))
    u = float(torch.rand((), generator=g, dtype=torch.float64))
    acc = 0.0
    family = "gp"
    for fam, prob in FAMILIES.items():
        acc += prob
        if u < acc:
            family = fam
            break
    draw = {"mixture": _mixture, "field": _field, "gp": _gp}[family]
    name, mix = draw(g, int(max_dim))
    return Problem(int(seed), family, name, mix)


def sample_problems(n: int, seed: int, max_dim: int = 4096) -> list[Problem]:
    """``n`` problems from seeds ``seed * 100_003 + i`` (disjoint ranges for different ``seed``: a fresh sample
    is a different ``seed``)."""
    return [problem(int(seed) * 100_003 + i, max_dim) for i in range(int(n))]


def summary(problems: list[Problem]) -> Tensor:
    """(n, 2) float64: each problem's dimension and number of components (for describing a sample)."""
    return torch.tensor([[p.mixture.dim, p.mixture.num_components] for p in problems], dtype=torch.float64)
