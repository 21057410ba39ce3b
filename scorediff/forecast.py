"""Forecasting, imputation and frame interpolation with a diffusion model over sequences (C, L) or video (C, T, H, W).

Every task is "sample the unknown entries given the known ones" (a mask, ``scorediff.masking``), done one of
two ways, selected by ``method``:
* through an unconditional model and the inpainting methods of ``scorediff.inverse`` -- ``replace``,
  ``repaint`` (Lugmayr et al. 2022) or ``smc`` (asymptotically exact, MCGdiff-like): any trained model;
* ``conditional``: a model trained CSDI-style (Tashiro et al. 2021; ``nets.MaskedConditional`` and
  ``masking.MaskedConditionLoss``) is given the known entries and the mask as cond ``observed`` /
  ``observed_mask`` and sampled with any registered sampler; the known entries are set at the end.

Both return samples of the whole example with the known entries in place. :func:`forecast` places a context of
k steps (frames) at the start of the model's window and returns the next ``horizon`` ones; :func:`forecast_run`,
:func:`impute_run` do the same for a run folder, in the data's own units (a series run's per-channel
normalisation undone). Checked against the exact conditionals of a Gaussian process (``analytic.gp``,
``tests/test_forecast.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .data.series import denormalize, normalize
from .guidance import classifier_free
from .inverse import INPAINT_METHODS, inpaint
from .inverse._common import _check_inputs
from .masking import forecast_mask
from .processes.base import Process
from .samplers import sample
from .samplers._common import Denoiser
from .utils import unknown

METHODS = (*INPAINT_METHODS, "conditional")


def complete(denoiser: Denoiser, process: Process, known: Tensor, mask: Tensor, *, method: str = "repaint",
             sampler: str = "ddpm", steps: int = 100, seed: int = 0, cond: dict[str, Any] | None = None,
             guidance: float = 1.0, **options) -> Tensor:
    """Samples (B, *event) of the entries where ``mask`` is False given ``known`` where it is True.

    ``method``: one of ``METHODS`` (module docstring). ``replace`` / ``repaint`` / ``smc`` take the options of
    ``inverse.inpaint`` (jumps, resample, particles, schedule, ...); ``conditional`` takes the sampler's options
    and ``guidance``: the classifier-free guidance scale s on the observation (``guidance.classifier_free``:
    D = D_u + s (D_c - D_u), one batched call; 1 = the conditional model, s = 1 + w of eps = (1 + w) eps(x | obs)
    - w eps(x)), for a run trained with the observation dropped (``conditioning.p_uncond`` > 0).
    """
    if method not in METHODS:
        raise unknown("conditioning method", method, METHODS)
    if float(guidance) != 1.0 and method != "conditional":
        raise ValueError(f"guidance {guidance:g} needs method 'conditional' (a CSDI-style run), got {method!r}")
    known, m = _check_inputs(known, mask)
    if not torch.isfinite(known[m]).all():
        raise ValueError("the known entries hold NaN or inf; mark missing entries in the mask instead")
    known = torch.where(m, known, torch.zeros_like(known))  # unknown entries (NaN allowed there) are never read
    if method != "conditional":
        return inpaint(denoiser, process, known, m, method=method, sampler=sampler, steps=steps, seed=seed,
                       cond=cond, **options)
    c = {**(cond or {}), "observed": known, "observed_mask": m}
    if float(guidance) != 1.0:
        denoiser = classifier_free(denoiser, float(guidance))
    x = sample(denoiser, process, tuple(known.shape), sampler=sampler, steps=steps, seed=seed, cond=c,
               device=known.device, dtype=known.dtype, **options)
    return torch.where(m, known, x)


def _context(context: Tensor, shape: tuple[int, ...]) -> Tensor:
    """A context as (C, k, *rest) for an example of ``shape`` (C, L, *rest); (k,) / (k, *rest) when C = 1."""
    c = torch.as_tensor(context)
    if c.ndim == len(shape) - 1 and shape[0] == 1:
        c = c[None]
    if c.ndim != len(shape) or tuple(c.shape[:1]) + tuple(c.shape[2:]) != (shape[0], *shape[2:]):
        want = "(C, k)" if len(shape) == 2 else "(C, k, H, W)"
        raise ValueError(f"context must have shape {want} = {(shape[0], 'k', *shape[2:])} for this model, "
                         f"got {tuple(c.shape)}")
    if c.shape[1] < 1:
        raise ValueError("context is empty: it needs at least one step")
    if not torch.isfinite(c).all():
        idx = tuple(int(i) for i in (~torch.isfinite(c)).nonzero()[0])
        raise ValueError(f"context holds NaN or inf (first at index {idx}); a forecast needs a complete context "
                         "(use imputation for missing values)")
    return c


def forecast(denoiser: Denoiser, process: Process, context: Tensor, horizon: int, shape: tuple[int, ...], *,
             num: int = 100, method: str = "repaint", **options) -> Tensor:
    """``num`` sampled continuations (num, C, horizon, *rest) of ``context`` (C, k, *rest) by a model of example
    ``shape`` (C, L, *rest).

    The model's window holds L steps: the context's last min(k, L - horizon) steps fill its start and the
    horizon follows; steps after it (if k + horizon < L) are sampled and dropped. Options: :func:`complete`'s.
    """
    shape = tuple(int(s) for s in shape)
    ctx = _context(context, shape)
    horizon, L = int(horizon), shape[1]
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if horizon >= L:
        raise ValueError(f"horizon {horizon} is not shorter than the model's length {L} (it needs at least one "
                         "context step in its window)")
    if int(num) < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    k = min(ctx.shape[1], L - horizon)
    known = torch.zeros((int(num), *shape), dtype=torch.float32)
    known[:, :, :k] = ctx[:, ctx.shape[1] - k:].to(torch.float32)
    x = complete(denoiser, process, known, forecast_mask(shape, k), method=method, **options)
    return x[:, :, k:k + horizon]


# -- run folders: the data's units ------------------------------------------------------------------------------


def _method_for(run, method: str | None) -> str:
    conditional = bool((run.config.get("conditioning") or {}).get("task"))
    if method is None:
        return "conditional" if conditional else "repaint"
    if method == "conditional" and not conditional:
        raise ValueError("method 'conditional' needs a run trained with conditioning.task set (CSDI-style); "
                         f"this one was not: use one of {', '.join(INPAINT_METHODS)}")
    return method


def _check_kind(run) -> str:
    kind = run.info.get("kind")
    if kind not in ("series", "video"):
        raise ValueError(f"run {str(run.path)!r} models {kind or 'unknown'} data of shape {tuple(run.shape)}, "
                         "not series (C, L) or video (C, T, H, W)")
    return kind


def forecast_run(run, context: Tensor, horizon: int, *, num: int = 100, method: str | None = None,
                 **options) -> Tensor:
    """:func:`forecast` with a loaded run (``training.load_run``): context and result in the data's units.

    ``method`` defaults to "conditional" for a run trained CSDI-style, else "repaint"."""

    _check_kind(run)
    shape = tuple(run.shape)
    ctx = normalize(_context(context, shape).to(torch.float64), run.info)
    x = forecast(run.denoiser, run.process, ctx, horizon, shape, num=num, method=_method_for(run, method), **options)
    return denormalize(x.double(), run.info)


def impute_run(run, observed: Tensor, mask: Tensor | None = None, *, num: int = 100, method: str | None = None,
               **options) -> Tensor:
    """Imputation (or frame interpolation) with a loaded run: ``observed`` (C, L) or (C, T, H, W) in the data's
    units, missing entries NaN (or marked False in ``mask``); returns (num, *shape) samples in the data's units."""

    _check_kind(run)
    shape = tuple(run.shape)
    obs = torch.as_tensor(observed, dtype=torch.float64)
    if tuple(obs.shape) != shape:
        raise ValueError(f"observed series must have the model's shape {shape}, got {tuple(obs.shape)}")
    m = torch.isfinite(obs) if mask is None else torch.as_tensor(mask).bool()
    if tuple(m.shape) != shape:
        raise ValueError(f"mask must have the model's shape {shape}, got {tuple(m.shape)}")
    if not bool(m.any()):
        raise ValueError("nothing is observed: every entry is missing")
    if not torch.isfinite(obs[m]).all():
        raise ValueError("observed entries marked known in the mask hold NaN or inf")
    z = normalize(torch.where(m, obs, torch.zeros_like(obs)), run.info).float()
    known = z.expand(int(num), *shape).contiguous()
    x = complete(run.denoiser, run.process, known, m, method=_method_for(run, method), **options)
    return denormalize(x.double(), run.info)
