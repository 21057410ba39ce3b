"""Inpainting, SDEdit and linear inverse problems with an unconditional diffusion model.

Every method drives a registered sampler through its step hook ``hook(x, t, x0_hat) -> x`` or wraps the
denoiser (DESIGN.md); none copies a sampler's loop. The sequential Monte Carlo method has a particle loop of
its own, built on the DDPM posterior step (``Grid.posterior``, ``processes.base.posterior_coefficients``).

Methods (y = A x + s n, n ~ N(0, I), s = ``noise_std``; inpainting is A = a pixel mask, s = 0):

* ``replace`` -- after every step the known pixels are overwritten by a forward-noised copy of the known
  image, alpha(t) x_known + sigma(t) eps (Song et al. 2021, score SDE, Appendix I.2; the "conditional
  sampling by replacement" heuristic). Any sampler. Biased: the free pixels never see the known ones' exact
  conditional.
* ``repaint`` -- RePaint (Lugmayr et al. 2022, Algorithm 1 with the jump schedule of their Sec. 4.2): the
  grid is cut into blocks of ``jumps`` steps; each block is solved ``resample`` times with replacement,
  re-noising its end back to its start with the forward transition q(x_t | x_s) between the passes, so the
  free pixels harmonise with the known ones. Any sampler (each pass is one call of it on the block's grid).
* ``dps`` -- diffusion posterior sampling (Chung et al. 2023, Algorithm 1): after each sampler step,
  x <- x - zeta grad_{x_t} ||y - A x0_hat(x_t)||_2, zeta = ``scale``; the gradient is taken by autograd in a
  denoiser wrapper at the step's (last) model call and applied by the hook. Any sampler.
* ``pigdm`` -- pseudoinverse-guided diffusion (Pi-GDM, Song et al. 2023, eqs. 7-8): a denoiser wrapper adding
  the score of p(y | x_t) ~ N(A x0_hat, r_t^2 A A^T + s^2 I), r_t^2 = sigma^2 / (alpha^2 + sigma^2) (the
  posterior variance of data of unit scale), through x0_hat' = x0_hat + (sigma^2 / alpha) scale J^T A^T
  (r_t^2 A A^T + s^2 I)^{-1} (y - A x0_hat), J = d x0_hat / d x_t (a vector-Jacobian product). Any sampler.
  Exact for a standard normal prior; an approximation otherwise.
* ``smc`` -- a sequential Monte Carlo sampler in the spirit of MCGdiff (Cardoso et al. 2024), asymptotically
  exact (as the number of particles grows) for the model's own prior: see :func:`_smc`. DDPM transitions only.

Operators: ``A`` is an (M, D) matrix on flattened examples or a callable mapping (B, *event) -> (B, M),
linear in x, which is materialised by one call on the D basis vectors (its transpose is then exact). Small
helpers build the usual ones: :func:`mask_operator` (inpainting), :func:`downsample_operator`
(super-resolution), :func:`blur_operator` (deblurring), :func:`grayscale_operator` (colourisation),
:func:`gaussian_operator` (compressed sensing).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from . import schedules
from .analytic import GaussianMixture
from .processes.base import Process
from .samplers import SAMPLERS, default_schedule, sample
from .samplers._common import Denoiser, Grid, bind_cond
from .utils import append_dims, unknown

INPAINT_METHODS = ("replace", "repaint", "smc")
LINEAR_METHODS = ("dps", "pigdm", "smc")

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


# -- shared bits -------------------------------------------------------------------------------------------------


def _grid(process: Process, sampler: str, steps: int, schedule: str | None) -> Tensor:
    if sampler not in SAMPLERS:
        raise unknown("sampler", sampler, SAMPLERS)
    return schedules.make(schedule or default_schedule(sampler, process), steps, process)


def _coeffs(process: Process, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    t = t.to(torch.float64)
    return (append_dims(process.alpha(t), like.ndim).to(like.dtype),
            append_dims(process.sigma(t), like.ndim).to(like.dtype))


class _Replace:
    """The replacement hook: x <- m * (alpha(t) known + sigma(t) eps) + (1 - m) * x, eps fresh at every call."""

    def __init__(self, process: Process, known: Tensor, mask: Tensor, generator: torch.Generator):
        self.process, self.known, self.mask, self.generator = process, known, mask, generator

    def __call__(self, x: Tensor, t: Tensor, x0_hat: Tensor | None = None) -> Tensor:
        a, s = _coeffs(self.process, t, x)
        eps = torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)
        return torch.where(self.mask, a * self.known + s * eps, x)


def _check_inputs(known: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    if not torch.is_tensor(known) or known.ndim < 2:
        raise ValueError(f"known must be a (B, *event) tensor, got {type(known).__name__} "
                         f"of shape {tuple(getattr(known, 'shape', ()))}")
    m = torch.as_tensor(mask, device=known.device)
    if m.dtype != torch.bool:
        m = m > 0.5
    if m.shape != known.shape and m.shape != known.shape[1:]:
        raise ValueError(f"mask must have the shape of one example {tuple(known.shape[1:])} or of the batch "
                         f"{tuple(known.shape)}, got {tuple(m.shape)}")
    return known, m.expand(known.shape)


# -- inpainting ---------------------------------------------------------------------------------------------------


def inpaint(
    denoiser: Denoiser,
    process: Process,
    known: Tensor,
    mask: Tensor,
    *,
    method: str = "repaint",
    sampler: str = "ddpm",
    steps: int = 100,
    jumps: int = 10,
    resample: int = 10,
    schedule: str | None = None,
    seed: int = 0,
    particles: int | None = None,
    cond: dict[str, Any] | None = None,
    **options,
) -> Tensor:
    """Fill in the pixels where ``mask`` is False, keeping those where it is True (see the module docstring).

    Args:
        known: (B, *event), the images to complete (values under ~mask are ignored); B = number of samples.
        mask: event-shaped or (B, *event), True (or 1) where a pixel is known.
        method: "replace", "repaint" or "smc".
        sampler, steps, schedule, **options: the sampler driving replace / repaint (any registered one).
        jumps, resample: RePaint's jump length j (steps per block) and number of passes r per block
            (r = 1 is plain replacement). Model calls: about r * steps * (the sampler's calls per step).
        particles: smc only: particles per particle system; the batch is cut into B / particles independent
            systems, each returning ``particles`` equally weighted samples (default: one system, B particles).
            smc needs one mask for the whole batch.
        seed: seeds the start noise and every draw.
    Returns: (B, *event) samples, equal to ``known`` on the mask up to the last node's noise (exact for smc).
    """
    known, m = _check_inputs(known, mask)
    if method not in INPAINT_METHODS:
        raise unknown("inpainting method", method, INPAINT_METHODS)
    if method == "smc":
        if not bool((m == m[:1]).all()):
            raise ValueError("inpaint method 'smc' needs the same mask for every row of the batch")
        a = mask_operator(m[0])
        y = known.reshape(known.shape[0], -1).to(torch.float64)[:, m[0].flatten()]
        return _smc(bind_cond(denoiser, cond), process, a, y, 0.0, tuple(known.shape), steps=steps, seed=seed,
                    particles=particles, schedule=schedule)
    if jumps < 1 or resample < 1:
        raise ValueError(f"jumps and resample must be >= 1, got jumps={jumps}, resample={resample}")
    ts = _grid(process, sampler, steps, schedule)
    generator = torch.Generator(device=known.device).manual_seed(int(seed))
    hook = _Replace(process, known, m, generator)
    x = process.prior_sample(tuple(known.shape), generator, device=known.device, dtype=known.dtype)
    x = hook(x, torch.full((x.shape[0],), float(ts[0]), dtype=torch.float64))
    blocks = [ts] if method == "replace" else [ts[i : i + jumps + 1] for i in range(0, len(ts) - 1, jumps)]
    passes = 1 if method == "replace" else resample
    for block in blocks:
        for r in range(passes):
            x_end = sample(denoiser, process, x, sampler=sampler, schedule=block, generator=generator, hook=hook,
                           cond=cond, dtype=known.dtype, **options)
            if r < passes - 1:
                x = _renoise(process, x_end, block, generator)
        x = x_end
    return x


def _renoise(process: Process, x: Tensor, block: Tensor, generator: torch.Generator) -> Tensor:
    """Draw x_t ~ q(x_t | x_s) from the block's end s back to its start t: the forward transition
    x_t = a_ts x_s + s_ts z, a_ts = alpha_t / alpha_s, s_ts^2 = sigma_t^2 - a_ts^2 sigma_s^2 (RePaint's jump)."""
    grid = Grid(process, block[[0, -1]], x)
    _, _, _, a_ts, s2_ts = grid.posterior[0]
    s_ts = math.sqrt(s2_ts)
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return a_ts * x + s_ts * z


# -- SDEdit ----------------------------------------------------------------------------------------------------


def sdedit(
    denoiser: Denoiser,
    process: Process,
    guide: Tensor,
    strength: float,
    *,
    sampler: str = "ddpm",
    steps: int = 100,
    schedule: str | None = None,
    seed: int = 0,
    cond: dict[str, Any] | None = None,
    **options,
) -> Tensor:
    """SDEdit (Meng et al. 2022, Algorithm 1): noise the guide to a time t0 set by ``strength``, solve back from t0.

    t0 is the node at fraction ``strength`` of the sampler's ``steps``-step grid, counted from its clean end:
    the run starts at node i0 = steps - round(strength * steps) and takes the grid's remaining nodes. On a grid
    uniform in t (ddpm's default) this is Meng et al.'s t0 = strength * t_max; on a grid in sigma (karras, the
    CLI's default) it is the same place in noise level on every process, including EDM, whose time is sigma
    (diffusers' image-to-image counts strength the same way). x(t0) = alpha(t0) guide + sigma(t0) eps, eps drawn
    first from the seeded generator, so strength 1 on a process with alpha(t_max) = 0 (e.g. flow) is exactly
    unconditional sampling from the same seed. strength -> 0 (fewer than half a step) returns the guide.
    """
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must lie in [0, 1], got {strength}")
    if not torch.is_tensor(guide) or guide.ndim < 2:
        raise ValueError(f"guide must be a (B, *event) tensor, got shape {tuple(getattr(guide, 'shape', ()))}")
    ts = _grid(process, sampler, steps, schedule)
    i0 = steps - round(strength * steps)
    if i0 >= steps:
        return guide.clone()
    ts = ts[i0:]
    t0 = float(ts[0])
    generator = torch.Generator(device=guide.device).manual_seed(int(seed))
    eps = torch.randn(guide.shape, generator=generator, dtype=guide.dtype, device=guide.device)
    a, s = _coeffs(process, torch.tensor(t0), guide)
    x = a * guide + s * eps
    return sample(denoiser, process, x, sampler=sampler, schedule=ts, generator=generator, cond=cond,
                  dtype=guide.dtype, **options)


# -- linear inverse problems -------------------------------------------------------------------------------------


def linear(
    denoiser: Denoiser,
    process: Process,
    A: Operator,
    y: Tensor,
    noise_std: float,
    *,
    shape: tuple[int, ...],
    method: str = "pigdm",
    sampler: str = "ddpm",
    steps: int = 100,
    scale: float = 1.0,
    schedule: str | None = None,
    seed: int = 0,
    particles: int | None = None,
    cond: dict[str, Any] | None = None,
    **options,
) -> Tensor:
    """Sample p(x | y) for y = A x + noise_std * n with an unconditional model (see the module docstring).

    Args:
        A: (M, D) matrix on flattened examples, or a callable (B, *event) -> (B, M) linear in x.
        y: (M,) one observation for the whole batch, or (B, M) one per row.
        shape: (B, *event), the output shape.
        method: "dps", "pigdm" or "smc".
        scale: dps's step size zeta (Chung et al. use 0.3-1), pigdm's guidance weight (1 = the formula).
        sampler, steps, schedule, **options: the sampler driving dps / pigdm (any registered one).
        particles: smc only, as in :func:`inpaint` (y must then be the same within each particle system).
    """
    if method not in LINEAR_METHODS:
        raise unknown("inverse-problem method", method, LINEAR_METHODS)
    shape = tuple(shape)
    a = as_matrix(A, shape[1:])
    yv = torch.as_tensor(y, dtype=torch.float64)
    yv = yv.reshape(1, -1).expand(shape[0], -1) if yv.ndim <= 1 else yv.reshape(yv.shape[0], -1)
    if yv.shape != (shape[0], a.shape[0]):
        raise ValueError(f"y must have shape ({a.shape[0]},) or ({shape[0]}, {a.shape[0]}), got {tuple(yv.shape)}")
    if not float(noise_std) >= 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    den = bind_cond(denoiser, cond)
    if method == "smc":
        return _smc(den, process, a, yv, float(noise_std), shape, steps=steps, seed=seed, particles=particles,
                    schedule=schedule)
    ts = _grid(process, sampler, steps, schedule)
    if method == "dps":
        dps = _DPS(den, a, yv, scale)
        return sample(dps, process, shape, sampler=sampler, schedule=ts, seed=seed, hook=dps.hook, **options)
    guided = _PiGDM(den, process, a, yv, float(noise_std), scale)
    return sample(guided, process, shape, sampler=sampler, schedule=ts, seed=seed, **options)


def _apply(a: Tensor, x: Tensor) -> Tensor:
    """A x for a batch x (B, *event) -> (B, M) in float64."""
    return x.reshape(x.shape[0], -1).to(torch.float64) @ a.T


class _DPS:
    """DPS's two halves: the wrapper computes grad_{x_t} ||y - A x0_hat(x_t)|| per example at each model call,
    the hook subtracts zeta times the latest one from the new state (Chung et al. 2023, Algorithm 1, line 7)."""

    def __init__(self, denoiser: Denoiser, a: Tensor, y: Tensor, zeta: float):
        self.denoiser, self.a, self.y, self.zeta = denoiser, a, y, float(zeta)
        self.grad: Tensor | None = None

    @property
    def nfe(self) -> int:
        return getattr(self.denoiser, "nfe", 0)

    def __call__(self, x: Tensor, t: Tensor, **cond) -> Tensor:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            x0_hat = self.denoiser(xg, t, **cond)
            norm = (self.y - _apply(self.a, x0_hat)).norm(dim=1)
            (self.grad,) = torch.autograd.grad(norm.sum(), xg)
        return x0_hat.detach()

    def hook(self, x: Tensor, t: Tensor, x0_hat: Tensor) -> Tensor:
        return x - self.zeta * self.grad.to(x.dtype)


class _PiGDM:
    """Pi-GDM as a Denoiser: x0_hat + (sigma^2 / alpha) w J^T A^T (r^2 A A^T + s^2 I)^{-1} (y - A x0_hat)."""

    def __init__(self, denoiser: Denoiser, process: Process, a: Tensor, y: Tensor, noise_std: float, w: float):
        self.denoiser, self.process, self.a, self.y, self.s2, self.w = denoiser, process, a, y, noise_std**2, w
        self.evals, self.evecs = torch.linalg.eigh(a @ a.T)  # A A^T = Q diag(e) Q^T, once

    @property
    def nfe(self) -> int:
        return getattr(self.denoiser, "nfe", 0)

    def __call__(self, x: Tensor, t: Tensor, **cond) -> Tensor:
        a_t, s_t = _coeffs(self.process, t, x.new_zeros(x.shape[0], 1).double())
        a_t, s_t = a_t[:, 0], s_t[:, 0]
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            x0_hat = self.denoiser(xg, t, **cond)
            resid = self.y - _apply(self.a, x0_hat)  # (B, M)
            r2 = s_t**2 / (a_t**2 + s_t**2)
            # (r^2 A A^T + s^2 I)^{-1} resid through the eigendecomposition of A A^T
            inv = 1.0 / (r2[:, None] * self.evals[None] + self.s2).clamp_min(1e-30)
            v = ((resid @ self.evecs) * inv) @ self.evecs.T
            (g,) = torch.autograd.grad(_apply(self.a, x0_hat), xg, grad_outputs=v.detach())
        # sigma^2 / alpha turns a score into an x0 shift; no guidance where alpha ~ 0 (pure noise)
        c = torch.where(a_t > 1e-6, s_t**2 / a_t.clamp_min(1e-6), torch.zeros_like(a_t)) * self.w
        return (x0_hat.detach() + append_dims(c, x.ndim).to(x.dtype) * g.to(x.dtype)).to(x.dtype)


def _smc(
    denoiser: Denoiser,
    process: Process,
    a: Tensor,
    y: Tensor,
    noise_std: float,
    shape: tuple[int, ...],
    *,
    steps: int,
    seed: int,
    particles: int | None,
    schedule: str | None,
) -> Tensor:
    """Sequential Monte Carlo for y = A x + s n: a twisted particle filter, asymptotically exact for the model.

    Frame (MCGdiff, Cardoso et al. 2024): with the SVD A = U S V^T, z = V^T x diffuses like x (the noise is
    isotropic) and the observation says z_j = y^_j + k_j n_j on the r observed directions, y^ = (U^T y)_j / S_j,
    k_j = s / S_j (k_j = 0: observed exactly).
    Targets (twisted diffusion sampler, Wu et al. 2023): phi_i(x_i) proportional to p_model(x_i) g_i(x_i), with
    the twist g_i(x) = prod_j N(y^_j; (V^T x0_hat(x))_j, r_i^2 + k_j^2), r_i^2 = sigma_i^2 / (alpha_i^2 + sigma_i^2)
    (Pi-GDM's p(y | x_t), Song et al. 2023), which tends to the likelihood as sigma -> 0 and costs no extra
    model call: x0_hat(x_{i+1}) is the next step's call anyway.
    Moves: the DDPM posterior transition p(x_{i+1} | x_i) = N(m, v I) (``Grid.posterior``), proposed
    as in MCGdiff: the observed directions from N(m, v) N(alpha_{i+1} y^, c), c = sigma_{i+1}^2 +
    alpha_{i+1}^2 k^2 (a Gaussian product, which pins them to y^ as sigma -> 0), the others from N(m, v).
    Weights: w_{i+1} = w_i p(z' | x_i) g_{i+1}(x') / (q(z' | x_i) g_i(x_i)); each particle system resamples
    (systematically) when its effective sample size falls below half.
    The grid ends at its last node with sigma > 0 (a sigma = 0 node is dropped); the result is that node's
    x0_hat with the exactly observed directions set to y^, each system resampled to equal weights.
    Error: O(1 / particles) Monte Carlo, plus the model's and the grid's own, plus O(sigma(t_min)^2).
    """
    b = shape[0]
    p = b if particles is None else int(particles)
    if p < 1 or b % p:
        raise ValueError(f"particles must divide the batch size {b}, got {particles}")
    groups = b // p
    if not bool((y.reshape(groups, p, -1) == y.reshape(groups, p, -1)[:, :1]).all()):
        raise ValueError("smc: y (or the known pixels) must be the same within each particle system")
    yg = y.reshape(groups, p, -1)[:, 0]  # (G, M)
    u, sv, vh = torch.linalg.svd(a, full_matrices=True)  # vh: (D, D), rows = right singular vectors
    rank = int((sv > sv.max() * 1e-10).sum()) if sv.numel() else 0
    yhat = ((yg @ u)[:, :rank] / sv[:rank]).repeat_interleave(p, dim=0)  # (B, r)
    k2 = (noise_std / sv[:rank]) ** 2  # (r,)
    ts = schedules.make(schedule or "logsnr", steps, process)  # log-SNR steps: the twist changes evenly
    if float(process._sigma(ts[-1:])) == 0.0:
        ts = ts[:-1]
    generator = torch.Generator().manual_seed(int(seed))
    x = process.prior_sample(shape, generator)
    grid = Grid(process, ts, x)

    def rot(x: Tensor) -> Tensor:
        return x.reshape(b, -1).to(torch.float64) @ vh.T

    def log_twist(x0_hat: Tensor, i: int) -> Tensor:
        r2 = grid.sigma[i] ** 2 / (grid.alpha[i] ** 2 + grid.sigma[i] ** 2)
        return -0.5 * ((rot(x0_hat)[:, :rank] - yhat) ** 2 / (r2 + k2)).sum(1)

    def log_normal(z: Tensor, mean: Tensor, var: Tensor | float) -> Tensor:
        return -0.5 * ((z - mean) ** 2 / var + torch.log(torch.as_tensor(var, dtype=torch.float64))).sum(1)

    x0_hat = grid.denoise(denoiser, x, 0)
    logg = log_twist(x0_hat, 0)
    logw = logg.clone()
    for i in range(grid.steps):
        idx = _resample(logw.reshape(groups, p), generator, adaptive=True)
        if idx is not None:
            x, x0_hat, logg, logw = x[idx], x0_hat[idx], logg[idx], torch.zeros_like(logw)
        c0, ct, v, _, _ = grid.posterior[i]
        m = rot(c0 * x0_hat + ct * x)
        c = grid.sigma[i + 1] ** 2 + grid.alpha[i + 1] ** 2 * k2  # (r,)
        z = m + math.sqrt(v) * torch.randn(m.shape, generator=generator, dtype=torch.float64)
        # observed directions: N(m, v) N(alpha y^, c) = N((c m + v alpha y^) / (v + c), v c / (v + c))
        q_mean = (c * m[:, :rank] + v * grid.alpha[i + 1] * yhat) / (v + c)
        q_var = v * c / (v + c)
        z[:, :rank] = q_mean + torch.sqrt(q_var) * torch.randn(b, rank, generator=generator, dtype=torch.float64)
        log_p_over_q = log_normal(z[:, :rank], m[:, :rank], v) - log_normal(z[:, :rank], q_mean, q_var)
        x = (z @ vh).reshape(shape).to(x.dtype)
        x0_hat = grid.denoise(denoiser, x, i + 1)
        logg_next = log_twist(x0_hat, i + 1)
        logw = logw + log_p_over_q + logg_next - logg
        logg = logg_next
    x0 = rot(x0_hat)
    exact = torch.nonzero(k2 == 0).flatten()
    x0[:, exact] = yhat[:, exact]
    idx = _resample(logw.reshape(groups, p), generator, adaptive=False)
    return (x0[idx] @ vh).reshape(shape).to(x.dtype)


def _resample(logw: Tensor, generator: torch.Generator, adaptive: bool) -> Tensor | None:
    """Systematic resampling within each row of logw (G, P); flat indices, or None if every ESS >= P / 2."""
    g, p = logw.shape
    w = torch.softmax(logw, dim=1)
    if adaptive and bool((1.0 / (w**2).sum(1) >= 0.5 * p).all()):
        return None
    u = (torch.rand(g, 1, generator=generator, dtype=torch.float64) + torch.arange(p, dtype=torch.float64)) / p
    cdf = torch.cumsum(w, dim=1)
    cdf[:, -1] = 1.0
    idx = torch.searchsorted(cdf, u).clamp_max(p - 1)
    return (idx + p * torch.arange(g)[:, None]).flatten()


# -- measuring against the exact posterior ---------------------------------------------------------------------


def mode_weights(mixture: GaussianMixture, x: Tensor) -> Tensor:
    """The mean over samples of p(k | x) under ``mixture`` (K,): the mixture's weights if x ~ mixture."""
    # each component as a mixture of one (weight 1: a posterior's weight may underflow to 0)
    logj = torch.stack([GaussianMixture([1.0], mixture.means[k : k + 1], mixture.covs[k : k + 1],
                                        mixture.event_shape).log_prob(x) for k in range(mixture.num_components)], 1)
    return torch.softmax(logj + torch.log(mixture.weights)[None], dim=1).mean(0)


def posterior_errors(samples: Tensor, truth: GaussianMixture, n_ref: int = 20000, seed: int = 1) -> dict[str, float]:
    """How far samples are from the exact posterior ``truth``: ``tv`` (total variation between the mode weights
    of :func:`mode_weights` and truth's weights) and ``gap`` = E_truth[log p] - E_samples[log p] in nats (log p
    under truth; E_truth from ``n_ref`` exact draws), as in ``scorediff bench``."""
    x = samples.reshape(samples.shape[0], *truth.event_shape).to(torch.float64)
    tv = 0.5 * float((mode_weights(truth, x) - truth.weights).abs().sum())
    ref = truth.sample(n_ref, torch.Generator().manual_seed(seed))
    gap = float(truth.log_prob(ref).mean() - truth.log_prob(x).mean())
    return {"tv": tv, "gap": gap}


__all__ = [
    "INPAINT_METHODS", "LINEAR_METHODS", "as_matrix", "blur_operator", "downsample_operator", "gaussian_blur_kernel",
    "gaussian_operator", "grayscale_operator", "inpaint", "linear", "mask_operator", "mode_weights",
    "posterior_errors", "sdedit",
]
