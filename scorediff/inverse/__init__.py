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
  denoiser wrapper at the step's (last) model call and applied by the hook. Any sampler; default 400 steps
  (protocol 5f, docs/results/defaults.md).
* ``pigdm`` -- pseudoinverse-guided diffusion (Pi-GDM, Song et al. 2023, eqs. 7-8): a denoiser wrapper adding
  the score of p(y | x_t) ~ N(A x0_hat, r_t^2 A A^T + s^2 I), r_t^2 = sigma^2 / (alpha^2 + sigma^2) (the
  posterior variance of data of unit scale), through x0_hat' = x0_hat + (sigma^2 / alpha) scale J^T A^T
  (r_t^2 A A^T + s^2 I)^{-1} (y - A x0_hat), J = d x0_hat / d x_t (a vector-Jacobian product). Any sampler.
  Exact for a standard normal prior; an approximation otherwise. Default 400 steps (protocol 5f).
* ``smc`` -- sequential Monte Carlo: the twisted diffusion sampler (TDS, Wu et al. 2023) in MCGdiff's SVD frame
  (Cardoso et al. 2024), asymptotically exact (as the number of particles grows) for the model's own prior: see
  :func:`_smc`. DDPM transitions plus the twist's gradient (one vector-Jacobian product per step); default
  400 steps (protocol 5b, docs/results/defaults.md).

Operators: ``A`` is an (M, D) matrix on flattened examples or a callable mapping (B, *event) -> (B, M),
linear in x, which is materialised by one call on the D basis vectors (its transpose is then exact). Small
helpers build the usual ones: :func:`mask_operator` (inpainting), :func:`downsample_operator`
(super-resolution), :func:`blur_operator` (deblurring), :func:`grayscale_operator` (colourisation),
:func:`gaussian_operator` (compressed sensing).
"""

from __future__ import annotations

from ._common import INPAINT_METHODS, LINEAR_METHODS
from .inpaint import inpaint, sdedit
from .linear import solve_linear
from .metrics import mode_weights, moment_errors, posterior_errors
from .operators import (
    Operator,
    as_matrix,
    blur_operator,
    downsample_operator,
    gaussian_blur_kernel,
    gaussian_operator,
    grayscale_operator,
    mask_operator,
)

__all__ = [
    "INPAINT_METHODS", "LINEAR_METHODS", "Operator", "as_matrix", "blur_operator", "downsample_operator", "gaussian_blur_kernel",
    "gaussian_operator", "grayscale_operator", "inpaint", "linear", "mask_operator", "solve_linear", "mode_weights",
    "moment_errors",
    "posterior_errors", "sdedit",
]

linear = solve_linear  # deprecated name (README users): ``inverse.linear`` read as the module of operators
