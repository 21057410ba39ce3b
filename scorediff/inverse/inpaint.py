"""Inpainting (replacement, RePaint, SMC) and SDEdit, through a registered sampler's step hook."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..processes.base import Process
from ..samplers import sample
from ..samplers._common import Denoiser, Grid, bind_cond
from ..utils import unknown
from ._common import INPAINT_METHODS, _check_inputs, _coeffs, _grid, _Replace, default_steps
from .operators import mask_operator
from .smc import _smc

# -- inpainting ---------------------------------------------------------------------------------------------------


def inpaint(
    denoiser: Denoiser,
    process: Process,
    known: Tensor,
    mask: Tensor,
    *,
    method: str = "repaint",
    sampler: str = "ddpm",
    steps: int | None = None,
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
        sampler, steps, schedule, **options: the sampler driving replace / repaint (any registered one);
            steps defaults per method (``inverse._common.DEFAULT_STEPS``: smc 400 by protocol 5b, replace 400
            and repaint 200 by protocol 5d).
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
    steps = default_steps(method, steps)
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


