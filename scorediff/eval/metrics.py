"""Sample-quality metrics on feature arrays (N, F): FID, KID, precision / recall, sliced W2; all in float64.

* ``frechet_distance`` -- the Frechet (2-Wasserstein) distance between the Gaussians fitted to two feature sets,
  ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a^{1/2} S_b S_a^{1/2})^{1/2}) (Heusel et al. 2017, "GANs trained by a
  two time-scale update rule converge to a local Nash equilibrium", eq. 6); FID when the features are Inception's.
* ``kid`` -- the kernel inception distance (Binkowski et al. 2018, "Demystifying MMD GANs", sec. 4): the unbiased
  estimator of MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / F + 1)^3, averaged over random subsets.
* ``precision_recall`` -- improved precision and recall (Kynkaanniemi et al. 2019, "Improved precision and recall
  metric for assessing generative models", eqs. 1-3): each set's manifold is the union of balls around its points
  with radius the distance to the k-th nearest neighbour in the same set.
* ``sliced_w2`` -- sliced Wasserstein-2 between two equal-size point sets (``scorediff.analytic.sliced_wasserstein``).

These are written here, in a few lines of torch, rather than taken from torchmetrics: torchmetrics is an optional
extra and its FID / KID are stateful metrics over images, while scorediff caches reference *features* and needs
the statistics of arrays; it has no precision / recall. The tests check these functions against torchmetrics'
own FID and KID kernel code, against closed-form Gaussian truth, and against scikit-learn's nearest neighbours.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..analytic import sliced_wasserstein

__all__ = ["frechet_distance", "gaussian_frechet", "kid", "precision_recall", "sliced_w2"]


def _f64(feats: Tensor | np.ndarray, name: str) -> Tensor:
    x = torch.as_tensor(feats).detach().to("cpu", torch.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must be a (N, F) array with N >= 2, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds non-finite values")
    return x


def _pair(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    a, b = _f64(a, "feats_a"), _f64(b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets differ in width: {a.shape[1]} and {b.shape[1]}")
    return a, b


def _sqrt_psd(s: Tensor) -> Tensor:
    evals, evecs = torch.linalg.eigh(s)
    return (evecs * evals.clamp(min=0).sqrt()) @ evecs.T


def gaussian_frechet(mu_a: Tensor, cov_a: Tensor, mu_b: Tensor, cov_b: Tensor) -> float:
    """Frechet distance between N(mu_a, cov_a) and N(mu_b, cov_b) (float64).

    Tr (S_a S_b)^{1/2} is taken as Tr (S_a^{1/2} S_b S_a^{1/2})^{1/2}: the same eigenvalues, but of a symmetric
    positive semi-definite matrix, so a rank-deficient covariance (fewer samples than features) stays real.
    """
    mu_a, mu_b, cov_a, cov_b = (torch.as_tensor(v, dtype=torch.float64) for v in (mu_a, mu_b, cov_a, cov_b))
    root_a = _sqrt_psd(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def mean_cov(feats: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """Sample mean and unbiased covariance (divisor N - 1, as pytorch-fid's ``np.cov``) in float64."""
    x = _f64(feats, "features")
    mu = x.mean(0)
    d = x - mu
    return mu, d.T @ d / (x.shape[0] - 1)


def frechet_distance(feats_a: Tensor | np.ndarray, feats_b: Tensor | np.ndarray) -> float:
    """Frechet distance between the Gaussians fitted to two (N, F) feature sets; FID on Inception features."""
    a, b = _pair(feats_a, feats_b)
    return gaussian_frechet(*mean_cov(a), *mean_cov(b))


def _poly_kernel(x: Tensor, y: Tensor) -> Tensor:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: Tensor, y: Tensor) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel (Binkowski et al. 2018, eq. 2; Gretton et al. 2012, eq. 3)."""
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    # the diagonal k(x_i, x_i) is left out: with it the estimator is biased upwards by O(1/m)
    return float((kxx.sum() - kxx.diag().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diag().sum()) / (n * (n - 1))
                 - 2 * kxy.mean())


def kid(feats_a: Tensor | np.ndarray, feats_b: Tensor | np.ndarray, subsets: int = 100,
        subset_size: int | None = None, seed: int = 0) -> tuple[float, float]:
    """Kernel inception distance: (mean, std) of the unbiased MMD^2 over ``subsets`` random subsets.

    Each subset draws ``subset_size`` points without replacement from each set (capped at the set's size), from a
    generator seeded by ``seed``. The default is the usual 1000 (torch-fidelity, torchmetrics) when both sets hold
    at least 2000 points, else half the smaller set, so that the subsets differ and their std means something.
    The mean is unbiased: over independent draws of equal distributions it averages to 0.
    """
    a, b = _pair(feats_a, feats_b)
    if subset_size is None:
        smaller = min(a.shape[0], b.shape[0])
        subset_size = 1000 if smaller >= 2000 else max(2, smaller // 2)
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"kid needs subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
    g = torch.Generator().manual_seed(seed)
    ma, mb = min(subset_size, a.shape[0]), min(subset_size, b.shape[0])
    vals = torch.tensor([mmd2_unbiased(a[torch.randperm(a.shape[0], generator=g)[:ma]],
                                       b[torch.randperm(b.shape[0], generator=g)[:mb]]) for _ in range(subsets)],
                        dtype=torch.float64)
    return float(vals.mean()), float(vals.std()) if subsets > 1 else 0.0


def _kth_radius(x: Tensor, k: int, chunk: int) -> Tensor:
    # distance to the k-th nearest neighbour other than the point itself (index k of the sorted row: 0 is itself)
    return torch.cat([torch.cdist(x[i:i + chunk], x).kthvalue(k + 1, dim=1).values for i in range(0, len(x), chunk)])


def _coverage(points: Tensor, centres: Tensor, radii: Tensor, chunk: int) -> float:
    inside = [(torch.cdist(points[i:i + chunk], centres) <= radii[None]).any(1) for i in range(0, len(points), chunk)]
    return float(torch.cat(inside).double().mean())


def precision_recall(feats_real: Tensor | np.ndarray, feats_fake: Tensor | np.ndarray, k: int = 3,
                     chunk: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of ``feats_fake`` against ``feats_real``.

    precision: the fraction of generated points inside the real manifold (some real point phi_r with
    ||phi_g - phi_r|| <= its k-NN radius among the real points); recall: the fraction of real points inside the
    generated manifold. k = 3 is the paper's choice.
    """
    real, fake = _pair(feats_real, feats_fake)
    if not 1 <= k < min(len(real), len(fake)):
        raise ValueError(f"precision_recall needs 1 <= k < the size of each set, got k = {k} for sizes "
                         f"{len(real)} and {len(fake)}")
    precision = _coverage(fake, real, _kth_radius(real, k, chunk), chunk)
    recall = _coverage(real, fake, _kth_radius(fake, k, chunk), chunk)
    return precision, recall


def sliced_w2(x: Tensor, y: Tensor, projections: int = 256, seed: int = 12345) -> float:
    """Sliced Wasserstein-2 between two point sets (flattened), on the first min(len) points of each."""
    n = min(len(x), len(y))
    g = torch.Generator().manual_seed(seed)
    return float(sliced_wasserstein(x[:n].double(), y[:n].double(), projections, generator=g))
