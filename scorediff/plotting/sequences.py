"""Pictures of sequences and video: sample series, forecast fan charts, imputations, video strips (PNG only).

A fan chart shows a probabilistic forecast by its quantile bands (the Bank of England's inflation fan charts;
Hyndman & Athanasopoulos, "Forecasting: Principles and Practice", Sec. 5.5): the known context as a line, the
median forecast, and shaded central intervals (50% and 90% by default) of the sampled continuations. A video
strip is one row per clip and one column per frame, so a sample is readable without GIF or MP4 support.
matplotlib through ``Figure`` + ``FigureCanvasAgg`` only, as ``scorediff.plotting``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .figures import _figure, _save_figure, save_image_grid, to_unit


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return np.asarray(torch.as_tensor(x).detach().double().cpu())


def _save(fig, path: str | Path, root: str | Path | None = None) -> Path:
    """Written whole (temp and rename), never through a symbolic link below ``root`` (a run folder)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return _save_figure(fig, path, root)


def save_video_strip(x: Tensor, path: str | Path, max_clips: int = 8, scale: int | None = None,
                     root: str | Path | None = None) -> Path:
    """Clips (N, C, T, H, W) in [-1, 1] as a PNG: one row per clip (at most ``max_clips``), frames left to right."""
    if x.ndim != 5 or x.shape[1] not in (1, 3):
        raise ValueError(f"a video strip needs clips (N, 1|3, T, H, W), got shape {tuple(x.shape)}")
    x = x[:max_clips]
    n, c, t, h, w = x.shape
    frames = x.permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w)
    return save_image_grid(to_unit(frames), path, nrow=t, scale=scale, root=root)


def save_series(x: Tensor, path: str | Path, reference: Tensor | None = None, title: str | None = None,
                max_series: int = 8, root: str | Path | None = None) -> Path:
    """Series (N, C, L) as small multiples, one panel per series (at most ``max_series``), a line per channel;
    ``reference`` series (e.g. training data) drawn faintly in every panel for comparison."""
    if x.ndim != 3:
        raise ValueError(f"series plots need (N, C, L), got shape {tuple(x.shape)}")
    x = _np(x[:max_series])
    ref = None if reference is None else _np(reference[:20])
    cols = min(4, len(x))
    rows = -(-len(x) // cols)
    fig = _figure((3 * cols, 2 * rows))
    for i, s in enumerate(x):
        ax = fig.add_subplot(rows, cols, i + 1)
        if ref is not None:
            for r in ref:
                ax.plot(r[0], color="0.85", lw=0.7)
        for c in range(s.shape[0]):
            ax.plot(s[c], lw=1.2)
        ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title)
    return _save(fig, path, root)


def save_fan_chart(context: Tensor, samples: Tensor, path: str | Path, truth: Tensor | None = None,
                   intervals: Sequence[float] = (0.5, 0.9), title: str | None = None) -> Path:
    """A fan chart of a forecast: ``context`` (C, k) known steps, ``samples`` (S, C, H) sampled continuations,
    optional ``truth`` (C, H) the actual continuation; one panel per channel, shaded central ``intervals``."""
    ctx, smp = _np(context), _np(samples)
    if ctx.ndim != 2 or smp.ndim != 3 or smp.shape[1] != ctx.shape[0]:
        raise ValueError(f"fan chart needs context (C, k) and samples (S, C, H), got {ctx.shape} and {smp.shape}")
    k, h = ctx.shape[1], smp.shape[2]
    steps = np.arange(k, k + h)
    fig = _figure((7, 2.4 * ctx.shape[0]))
    for c in range(ctx.shape[0]):
        ax = fig.add_subplot(ctx.shape[0], 1, c + 1)
        ax.plot(np.arange(k), ctx[c], color="black", lw=1.4, label="context")
        for level, alpha in zip(sorted(intervals, reverse=True), (0.2, 0.4, 0.6)):
            lo, hi = np.quantile(smp[:, c], [(1 - level) / 2, (1 + level) / 2], axis=0)
            ax.fill_between(steps, lo, hi, color="tab:blue", alpha=alpha, lw=0, label=f"{level:.0%} interval")
        ax.plot(steps, np.median(smp[:, c], axis=0), color="tab:blue", lw=1.4, label="median")
        if truth is not None:
            ax.plot(steps, _np(truth)[c], color="tab:red", lw=1.0, ls="--", label="actual")
        ax.axvline(k - 0.5, color="0.5", lw=0.8)
        ax.tick_params(labelsize=7)
        if c == 0:
            ax.legend(fontsize=7, loc="upper left")
            if title:
                ax.set_title(title)
    return _save(fig, path)


def save_imputation(observed: Tensor, mask: Tensor, samples: Tensor, path: str | Path, truth: Tensor | None = None,
                    interval: float = 0.9, title: str | None = None) -> Path:
    """Imputed series: ``observed`` (C, L) values known where ``mask`` (C, L) is True (dots), the median and a
    central ``interval`` of ``samples`` (S, C, L) over the missing steps, optional ``truth`` (C, L) dashed."""
    obs, m, smp = _np(observed), _np(mask).astype(bool), _np(samples)
    fig = _figure((7, 2.4 * obs.shape[0]))
    steps = np.arange(obs.shape[1])
    for c in range(obs.shape[0]):
        ax = fig.add_subplot(obs.shape[0], 1, c + 1)
        lo, hi = np.quantile(smp[:, c], [(1 - interval) / 2, (1 + interval) / 2], axis=0)
        ax.fill_between(steps, lo, hi, color="tab:blue", alpha=0.3, lw=0, label=f"{interval:.0%} interval")
        ax.plot(steps, np.median(smp[:, c], axis=0), color="tab:blue", lw=1.2, label="median")
        if truth is not None:
            ax.plot(steps, _np(truth)[c], color="tab:red", lw=1.0, ls="--", label="actual")
        ax.plot(steps[m[c]], obs[c][m[c]], "k.", ms=4, label="observed")
        ax.tick_params(labelsize=7)
        if c == 0:
            ax.legend(fontsize=7, loc="upper left")
            if title:
                ax.set_title(title)
    return _save(fig, path)
