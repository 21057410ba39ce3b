"""Closed-form truth: Gaussian mixtures, whose every diffused marginal is again a Gaussian mixture.

For p0 = sum_k w_k N(mu_k, S_k) and x_t = alpha x0 + sigma eps,
    p_t = sum_k w_k N(alpha mu_k, alpha^2 S_k + sigma^2 I),
so log p_t, its score, the component posterior p(k | x_t) and the exact denoiser (Tweedie)
    E[x0 | x_t] = sum_k p(k | x_t) [mu_k + alpha S_k (alpha^2 S_k + sigma^2 I)^{-1} (x_t - alpha mu_k)]
are all closed form. Each S_k is eigendecomposed once (S_k = U diag(lam) U^T, in float64), which
makes every t cost one rotation. Inputs may have any shape (B, *event) with prod(event) = D.
This is both a product feature (benchmark any sampler against truth) and the tests' backbone.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..processes.base import Process
from ..utils import batch_time

_LOG_2PI = math.log(2 * math.pi)


class GaussianMixture:
    """A mixture of K Gaussians in D dimensions.

    Args:
        weights: (K,) non-negative, normalised here.
        means: (K, D).
        covs: (K, D, D) full, or (K, D) diagonal covariances; each must be positive definite.
        event_shape: the shape of one sample (default (D,)), e.g. (1, 8, 8) for tiny images.
    """

    def __init__(self, weights, means, covs, event_shape: tuple[int, ...] | None = None):
        w = torch.as_tensor(weights, dtype=torch.float64).flatten()
        mu = torch.as_tensor(means, dtype=torch.float64)
        cov = torch.as_tensor(covs, dtype=torch.float64)
        if mu.ndim != 2 or mu.shape[0] != w.shape[0]:
            raise ValueError(f"means must have shape (K, D) with K = {w.shape[0]} weights, got {tuple(mu.shape)}")
        k, d = mu.shape
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be non-negative with a positive sum, got {w.tolist()}")
        if cov.shape == (k, d):
            cov = torch.diag_embed(cov)
        if cov.shape != (k, d, d):
            raise ValueError(f"covs must have shape ({k}, {d}, {d}) or ({k}, {d}), got {tuple(cov.shape)}")
        if not torch.allclose(cov, cov.transpose(1, 2), atol=1e-10, rtol=1e-8):
            raise ValueError("covs must be symmetric")
        evals, evecs = torch.linalg.eigh(cov)
        if (evals <= 0).any():
            bad = int((evals.min(dim=1).values <= 0).nonzero()[0])
            raise ValueError(
                f"covariance of component {bad} is not positive definite (smallest eigenvalue "
                f"{evals[bad].min().item():.3g}); expected a positive definite matrix"
            )
        self.weights = w / w.sum()
        self.means, self.covs = mu, cov
        self.evals, self.evecs = evals, evecs  # S_k = U_k diag(evals_k) U_k^T
        self.event_shape = tuple(event_shape) if event_shape is not None else (d,)
        if math.prod(self.event_shape) != d:
            raise ValueError(f"event_shape {self.event_shape} does not hold D = {d} numbers")
        self._chol = torch.linalg.cholesky(cov)

    @property
    def num_components(self) -> int:
        return self.weights.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    # -- helpers --------------------------------------------------------------------------------
    def _flat(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"expected x of shape (B, {', '.join(map(str, self.event_shape))}), got {tuple(x.shape)}")
        return x.reshape(x.shape[0], -1).to(torch.float64)

    def _unflat(self, y: Tensor, like: Tensor) -> Tensor:
        return y.reshape(like.shape).to(like.dtype)

    def _coeffs(self, x: Tensor, t, process: Process) -> tuple[Tensor, Tensor]:
        t = batch_time(t, x).to(torch.float64)
        return process.alpha(t), process.sigma(t)  # (B,), (B,)

    def _rotated(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """z = U_k^T (x - alpha mu_k) and var = alpha^2 lam_k + sigma^2, both (B, K, D)."""
        diff = x[:, None, :] - alpha[:, None, None] * self.means[None]
        z = torch.einsum("kde,bkd->bke", self.evecs, diff)
        var = alpha[:, None, None] ** 2 * self.evals[None] + sigma[:, None, None] ** 2
        return z, var

    def _component_log_prob(self, z: Tensor, var: Tensor) -> Tensor:
        return -0.5 * ((z**2 / var).sum(-1) + torch.log(var).sum(-1) + self.dim * _LOG_2PI)

    def _joint(self, x: Tensor, t, process: Process):
        xf = self._flat(x)
        alpha, sigma = self._coeffs(x, t, process)
        z, var = self._rotated(xf, alpha, sigma)
        logj = self._component_log_prob(z, var) + torch.log(self.weights)[None]
        return xf, alpha, z, var, logj

    # -- p0 -------------------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None, return_labels: bool = False):
        """n samples of p0 (float64), shaped (n, *event_shape); with labels (n,) if asked."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = self.means[k] + torch.einsum("nde,ne->nd", self._chol[k], eps)
        x = x.reshape(n, *self.event_shape)
        return (x, k) if return_labels else x

    def log_prob(self, x: Tensor) -> Tensor:
        """log p0(x), shape (B,)."""
        xf = self._flat(x)
        zeros = torch.zeros(xf.shape[0], dtype=torch.float64, device=xf.device)
        z, var = self._rotated(xf, torch.ones_like(zeros), zeros)
        return torch.logsumexp(self._component_log_prob(z, var) + torch.log(self.weights)[None], dim=1)

    # -- p_t ------------------------------------------------------------------------------------
    def log_prob_t(self, x: Tensor, t, process: Process) -> Tensor:
        """log p_t(x) of the diffused mixture, shape (B,)."""
        return torch.logsumexp(self._joint(x, t, process)[-1], dim=1)

    def component_posterior(self, x: Tensor, t, process: Process) -> Tensor:
        """p(k | x_t), shape (B, K)."""
        return torch.softmax(self._joint(x, t, process)[-1], dim=1)

    # -- classes: sub-mixtures and the exact conditionals (classifier and classifier-free guidance's truth)
    def _class_map(self, class_map) -> Tensor:
        """(K,) class of every component; the identity (classes = components) when None."""
        if class_map is None:
            return torch.arange(self.num_components)
        c = torch.as_tensor(class_map, dtype=torch.long).flatten()
        if c.numel() != self.num_components or (c < 0).any():
            raise ValueError(
                f"class_map must give a class >= 0 for each of the {self.num_components} components, got {c.tolist()}"
            )
        missing = sorted(set(range(int(c.max()) + 1)) - set(c.tolist()))
        if missing:
            raise ValueError(f"class_map leaves class(es) {missing} without a component; classes are 0..C-1")
        return c

    def num_classes(self, class_map=None) -> int:
        """C, the number of classes under ``class_map`` (K when None)."""
        return int(self._class_map(class_map).max()) + 1

    def class_weights(self, class_map=None) -> Tensor:
        """p(y), shape (C,): the summed weights of each class's components."""
        c = self._class_map(class_map)
        return torch.zeros(int(c.max()) + 1, dtype=torch.float64).index_add_(0, c, self.weights)

    def class_mixture(self, y: int, class_map=None) -> GaussianMixture:
        """p0(x | y), the sub-mixture of the components of class y (weights renormalised)."""
        c = self._class_map(class_map)
        if not 0 <= int(y) <= int(c.max()):
            raise ValueError(f"class {y} out of range; classes are 0..{int(c.max())}")
        idx = (c == int(y)).nonzero().flatten()
        return GaussianMixture(self.weights[idx], self.means[idx], self.covs[idx], self.event_shape)

    def class_log_posterior(self, x: Tensor, t, process: Process, class_map=None) -> Tensor:
        """log p(y | x_t), shape (B, C): the component log-posterior summed (log-sum-exp) within each class.

        Differentiable in x (computed in float64), so ``classifier`` guidance can take its gradient.
        """
        c = self._class_map(class_map).to(x.device)
        logj = self._joint(x, t, process)[-1]
        logpost = logj - torch.logsumexp(logj, dim=1, keepdim=True)
        member = c[None, :] == torch.arange(int(c.max()) + 1, device=x.device)[:, None]  # (C, K)
        return torch.logsumexp(logpost[:, None, :].masked_fill(~member[None], -math.inf), dim=2)

    def conditional_denoiser(self, process: Process, class_map=None) -> ConditionalDenoiser:
        """The exact class-conditional Denoiser D(x, t, y) = E[x0 | x_t, y] (per example), usable as a
        classifier-free-guidance model: y = -1 (the null label) or y=None gives the unconditional E[x0 | x_t].
        ``D.nfe`` counts its calls (one per batched call, whatever the labels)."""
        return ConditionalDenoiser(self, process, self._class_map(class_map))

    def score(self, x: Tensor, t, process: Process) -> Tensor:
        """grad_x log p_t(x), same shape and dtype as x."""
        _, _, z, var, logj = self._joint(x, t, process)
        post = torch.softmax(logj, dim=1)
        g = -torch.einsum("kde,bke->bkd", self.evecs, z / var)  # per-component score
        return self._unflat((post[..., None] * g).sum(1), x)

    def x0_mean(self, x: Tensor, t, process: Process) -> Tensor:
        """The exact denoiser E[x0 | x_t] (Tweedie), same shape and dtype as x."""
        _, alpha, z, var, logj = self._joint(x, t, process)
        return self._posterior_mean(x, alpha, z, var, logj)

    def _posterior_mean(self, x: Tensor, alpha: Tensor, z: Tensor, var: Tensor, logj: Tensor) -> Tensor:
        """sum_k softmax(logj)_k E[x0 | x_t, k]; a logj of -inf drops component k (class conditioning)."""
        post = torch.softmax(logj, dim=1)
        gain = alpha[:, None, None] * self.evals[None] / var  # alpha lam / (alpha^2 lam + sigma^2)
        m = self.means[None] + torch.einsum("kde,bke->bkd", self.evecs, gain * z)
        return self._unflat((post[..., None] * m).sum(1), x)

    # -- phase space (critically-damped Langevin, ``processes.cld``) ------------------------------------------
    def _phase(self, u: Tensor, t, process) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The phase state reduced to its equivalent reading y = x0 + sigma_eff n (``CLD.observation``): the
        mixture's data-space posterior under (alpha = 1, sigma_eff) is the phase-space one."""
        y, s_eff, log_c = process.observation(u, batch_time(t, u))
        yf = self._flat(y)
        ones = torch.ones_like(s_eff)
        z, var = self._rotated(yf, ones, s_eff)
        logj = self._component_log_prob(z, var) + torch.log(self.weights)[None]
        return y, ones, z, var, logj, log_c

    def phase_log_prob_t(self, u: Tensor, t, process: Process) -> Tensor:
        """log p_t(x, v) of the mixture diffused by CLD in phase space (v0 ~ N(0, gamma M)), shape (B,)."""
        *_, logj, log_c = self._phase(u, t, process)
        return torch.logsumexp(logj, dim=1) + log_c

    def phase_x0_mean(self, u: Tensor, t, process: Process) -> Tensor:
        """The exact CLD denoiser E[x0 | x_t, v_t], data-shaped, in u's dtype."""
        y, ones, z, var, logj, _ = self._phase(u, t, process)
        return self._posterior_mean(y, ones, z, var, logj).to(u.dtype)

    def denoiser(self, process: Process):
        """An exact Denoiser D(x, t) = E[x0 | x_t] for ``process``, usable wherever a trained model is.

        It accepts (and ignores) conditioning keywords; ``D.nfe`` counts its calls. For a phase-space process
        (CLD) it takes the phase state u = (x, v) and returns E[x0 | x_t, v_t], as a CLD network does; given a
        data-shaped x it answers E[x0 | x_t] of the position marginal (v integrated out), as for any process.
        """
        return ExactDenoiser(self, process)

    # -- conditionals ---------------------------------------------------------------------------
    def component(self, k: int) -> GaussianMixture:
        """The k-th component alone (a class-conditional p0(x | y = k))."""
        return GaussianMixture(self.weights[k : k + 1], self.means[k : k + 1], self.covs[k : k + 1], self.event_shape)

    def condition(self, x_obs: Tensor, mask: Tensor) -> GaussianMixture:
        """The mixture of the unobserved coordinates given observed ones, p0(x_u | x_o) (for inpainting).

        ``mask`` (event-shaped, bool) is True where a coordinate is observed; ``x_obs`` one example
        (event-shaped). The result is a mixture over the D_u unobserved coordinates (flattened order):
        weights proportional to w_k N(x_o; mu_o, S_oo), means mu_u + S_uo S_oo^{-1} (x_o - mu_o),
        covariances S_uu - S_uo S_oo^{-1} S_ou.
        """
        m = torch.as_tensor(mask, dtype=torch.bool).flatten()
        if m.numel() != self.dim:
            raise ValueError(f"mask must hold {self.dim} entries, got {m.numel()}")
        if m.all() or not m.any():
            raise ValueError("mask must observe some but not all coordinates")
        xo = torch.as_tensor(x_obs, dtype=torch.float64).flatten()[m]
        o, u = m.nonzero().flatten(), (~m).nonzero().flatten()
        s_oo = self.covs[:, o][:, :, o]
        s_uo = self.covs[:, u][:, :, o]
        s_uu = self.covs[:, u][:, :, u]
        diff = xo[None] - self.means[:, o]
        sol = torch.linalg.solve(s_oo, diff[..., None])[..., 0]
        mean_u = self.means[:, u] + torch.einsum("kuo,ko->ku", s_uo, sol)
        cov_u = s_uu - s_uo @ torch.linalg.solve(s_oo, s_uo.transpose(1, 2))
        cov_u = 0.5 * (cov_u + cov_u.transpose(1, 2))
        chol = torch.linalg.cholesky(s_oo)
        half_logdet = torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(-1)
        log_w = torch.log(self.weights) - 0.5 * (diff * sol).sum(-1) - half_logdet
        return GaussianMixture(torch.softmax(log_w, 0), mean_u, cov_u)

    # -- summary --------------------------------------------------------------------------------
    def mean(self) -> Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    def covariance(self) -> Tensor:
        mu = self.mean()
        d = self.means - mu
        return (self.weights[:, None, None] * (self.covs + d[:, :, None] * d[:, None, :])).sum(0)

    def to(self, dtype: torch.dtype) -> GaussianMixture:
        """Noop kept for symmetry with tensors: the oracle computes in float64 and returns x's dtype."""
        return self

    # -- linear inverse problems ----------------------------------------------------------------
    def posterior(self, A, y, noise_std: float, jitter: float = 1e-10) -> GaussianMixture:
        """The exact posterior p0(x | y) under the observation y = A x + noise_std * n, n ~ N(0, I).

        Bayes' rule for a linear Gaussian observation, per component (e.g. Bishop 2006, eqs. 2.113-2.117):
        with S_y,k = A S_k A^T + s^2 I (the covariance of y under component k), gain G_k = S_k A^T S_y,k^{-1},
            weights  w_k' proportional to w_k N(y; A mu_k, S_y,k)   (each component's marginal likelihood),
            means    mu_k' = mu_k + G_k (y - A mu_k),
            covs     S_k'  = S_k - G_k A S_k.
        ``A`` is an (M, D) matrix acting on flattened examples, ``y`` an (M,) observation (or (1, M)),
        s = ``noise_std`` >= 0. With s = 0 (exact observation, e.g. masking) the posterior is degenerate
        along the row space of A (zero variance there); ``jitter`` (a variance, default 1e-10) is then added
        to every covariance so that the result is a proper density, i.e. the observed directions are matched
        to ~1e-5. Compare samples with it on the free directions (``condition`` gives the free part of a
        masking observation as a density of its own). The result keeps this mixture's ``event_shape``.
        """
        a = torch.as_tensor(A, dtype=torch.float64)
        if a.ndim != 2 or a.shape[1] != self.dim:
            raise ValueError(f"A must be an (M, {self.dim}) matrix, got shape {tuple(a.shape)}")
        yv = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
        if yv.numel() != a.shape[0]:
            raise ValueError(f"y must hold M = {a.shape[0]} numbers (one observation), got {yv.numel()}")
        s = float(noise_std)
        if not s >= 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        sa = self.covs @ a.T  # S_k A^T, (K, D, M)
        s_y = a @ sa + s**2 * torch.eye(a.shape[0], dtype=torch.float64)  # (K, M, M)
        s_y = 0.5 * (s_y + s_y.transpose(1, 2))
        chol, bad = torch.linalg.cholesky_ex(s_y)
        if bool((bad != 0).any()):
            raise ValueError("A S_k A^T + noise_std^2 I is singular: with noise_std = 0, A needs independent rows")
        resid = yv[None] - self.means @ a.T  # (K, M)
        sol = torch.cholesky_solve(resid[..., None], chol)[..., 0]  # S_y^{-1} (y - A mu)
        means = self.means + torch.einsum("kdm,km->kd", sa, sol)
        covs = self.covs - sa @ torch.cholesky_solve(sa.transpose(1, 2), chol)
        covs = 0.5 * (covs + covs.transpose(1, 2))
        if s == 0:
            covs = covs + jitter * torch.eye(self.dim, dtype=torch.float64)
        half_logdet = torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(-1)
        log_w = torch.log(self.weights) - 0.5 * (resid * sol).sum(-1) - half_logdet
        return GaussianMixture(torch.softmax(log_w, 0), means, covs, self.event_shape)


class ExactDenoiser:
    """D(x, t) = E[x0 | x_t] of a GaussianMixture under a process; counts its evaluations in ``nfe``."""

    def __init__(self, mixture: GaussianMixture, process: Process):
        self.mixture, self.process, self.nfe = mixture, process, 0

    def __call__(self, x: Tensor, t, **cond) -> Tensor:
        self.nfe += 1
        if getattr(self.process, "phase_space", False) and tuple(x.shape[1:]) != self.mixture.event_shape:
            return self.mixture.phase_x0_mean(x, t, self.process)
        return self.mixture.x0_mean(x, t, self.process)


class ConditionalDenoiser:
    """D(x, t, y) = E[x0 | x_t, y] of a GaussianMixture whose components carry classes (``class_map``).

    For each example, the components outside its class y get zero posterior weight: the exact denoiser of
    the class's sub-mixture. y = -1 (``scorediff.nets.NULL_LABEL``) or y=None: the unconditional E[x0 | x_t].
    One evaluation (``nfe`` + 1) per call, whatever mix of labels the batch holds.
    """

    def __init__(self, mixture: GaussianMixture, process: Process, class_map: Tensor):
        self.mixture, self.process, self.class_map, self.nfe = mixture, process, class_map, 0
        self.num_classes = int(class_map.max()) + 1

    def __call__(self, x: Tensor, t, y: Tensor | None = None, **cond) -> Tensor:
        self.nfe += 1
        m = self.mixture
        _, alpha, z, var, logj = m._joint(x, t, self.process)
        if y is not None:
            y = torch.as_tensor(y, device=x.device).long().expand(x.shape[0])
            if ((y < -1) | (y >= self.num_classes)).any():
                raise ValueError(f"labels must lie in -1..{self.num_classes - 1}, got {sorted(set(y.tolist()))}")
            keep = (self.class_map.to(x.device)[None, :] == y[:, None]) | (y[:, None] < 0)  # (B, K)
            logj = logj.masked_fill(~keep, -math.inf)
        return m._posterior_mean(x, alpha, z, var, logj)


# -- ready-made mixtures ------------------------------------------------------------------------------


def ring2d() -> GaussianMixture:
    """8 Gaussians on the unit circle with unequal weights; component 0 is anisotropic (rotated)."""
    k = 8
    angles = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    means = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    weights = torch.tensor([0.20, 0.05, 0.15, 0.10, 0.20, 0.05, 0.15, 0.10], dtype=torch.float64)
    covs = torch.eye(2, dtype=torch.float64).repeat(k, 1, 1) * 0.06**2
    # component 0: long axis tangent to the ring (std 0.15 along it, 0.03 across)
    rot = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)  # tangent at angle 0 is (0, 1)
    covs[0] = rot @ torch.diag(torch.tensor([0.03**2, 0.15**2], dtype=torch.float64)) @ rot.T
    return GaussianMixture(weights, means, covs)


def mixture64(dim: int = 64, components: int = 10, rank: int = 4, seed: int = 0) -> GaussianMixture:
    """A 64-D mixture of 10 Gaussians with low-rank-plus-diagonal covariances, fixed by ``seed``.

    Means ~ N(0, 0.5^2 I); covariances V V^T / rank * 0.3 + diag(u), u ~ U(0.005, 0.05): most of the
    variance sits in a few directions per component, with small per-coordinate variance that a
    coarse last sampling step wipes out (what the log-density gap measures).
    """
    g = torch.Generator().manual_seed(seed)
    means = 0.5 * torch.randn(components, dim, generator=g, dtype=torch.float64)
    v = torch.randn(components, dim, rank, generator=g, dtype=torch.float64)
    diag = 0.005 + 0.045 * torch.rand(components, dim, generator=g, dtype=torch.float64)
    covs = 0.3 * v @ v.transpose(1, 2) / rank + torch.diag_embed(diag)
    weights = 0.5 + torch.rand(components, generator=g, dtype=torch.float64)
    return GaussianMixture(weights, means, covs)


def sliced_wasserstein(x: Tensor, y: Tensor, projections: int = 256, generator: torch.Generator | None = None) -> Tensor:
    """Sliced Wasserstein-2 distance between two equal-size samples (B, *event), Monte Carlo over directions."""
    xf = x.reshape(x.shape[0], -1).to(torch.float64)
    yf = y.reshape(y.shape[0], -1).to(torch.float64)
    if xf.shape != yf.shape:
        raise ValueError(f"sliced_wasserstein needs samples of equal shape, got {tuple(xf.shape)} and {tuple(yf.shape)}")
    dirs = torch.randn(xf.shape[1], projections, generator=generator, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    px, _ = torch.sort(xf @ dirs, dim=0)
    py, _ = torch.sort(yf @ dirs, dim=0)
    return ((px - py) ** 2).mean().sqrt()


