"""Pictures people look at: image grids (PNG via PIL), 2-D scatter plots and loss curves (matplotlib Agg).

matplotlib is used through ``Figure`` + ``FigureCanvasAgg`` only, never pyplot, so nothing here
changes a global backend or opens a window.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..atomic import write_atomic
from ..data import from_unit


def image_grid(images: Tensor | np.ndarray, nrow: int | None = None, pad: int = 2, scale: int | None = None) -> np.ndarray:
    """Tile (N, C, H, W) images with values in [0, 1] into one uint8 array (rows, cols, C') with C' in {1, 3}.

    ``scale`` enlarges each pixel (nearest neighbour); by default tiny images (8x8 digits) are blown up
    to about 64 pixels so the grid is readable.
    """
    x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images).detach().float().cpu()
    if x.ndim == 3:  # (N, H, W)
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"image grid needs (N, 1|3, H, W) images, got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    if scale is None:
        scale = max(1, 64 // max(h, w))
    if scale > 1:
        x = x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
        h, w = h * scale, w * scale
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol_rows = math.ceil(n / nrow)
    grid = torch.full((c, ncol_rows * (h + pad) + pad, nrow * (w + pad) + pad), 0.5)  # grey gaps: visible on black and on white images
    for i in range(n):
        r, q = divmod(i, nrow)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = x[i]
    return (grid.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()


def save_image_grid(images: Tensor | np.ndarray, path: str | Path, nrow: int | None = None, scale: int | None = None,
                    root: str | Path | None = None) -> Path:
    """Write (N, C, H, W) images in [0, 1] as one PNG grid, whole (``atomic.write_atomic``; ``root``: the run
    folder, whose symbolic links are refused); returns the path."""
    from PIL import Image

    arr = image_grid(images, nrow=nrow, scale=scale)
    img = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    return write_atomic(path, lambda f: img.save(f, format="PNG"), root=root)


def _figure(size=(5, 5)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_scatter(points: Tensor | np.ndarray, path: str | Path, reference: Tensor | np.ndarray | None = None,
                 title: str | None = None, root: str | Path | None = None) -> Path:
    """A 2-D scatter plot of (N, D) points (the first two coordinates), optionally over reference data."""
    pts = np.asarray(torch.as_tensor(points).detach().float().cpu().reshape(len(points), -1))
    if pts.shape[1] < 2:
        pts = np.concatenate([pts, np.zeros_like(pts)], axis=1)
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    if reference is not None:
        ref = np.asarray(torch.as_tensor(reference).detach().float().cpu().reshape(len(reference), -1))
        ax.scatter(ref[:, 0], ref[:, 1] if ref.shape[1] > 1 else 0 * ref[:, 0], s=2, c="0.75", label="data")
    ax.scatter(pts[:, 0], pts[:, 1], s=2, c="tab:blue", label="samples")
    if reference is not None:
        ax.legend(loc="upper right", markerscale=4)
    ax.set_aspect("equal", adjustable="datalim")
    if title:
        ax.set_title(title)
    return _save_figure(fig, path, root)


def _save_figure(fig, path: str | Path, root: str | Path | None) -> Path:
    """A figure as a PNG file, written whole (``atomic.write_atomic``)."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    return write_atomic(path, lambda f: fig.savefig(f, format=fmt, bbox_inches="tight"), root=root)


def save_loss_plot(metrics_path: str | Path, path: str | Path, root: str | Path | None = None) -> Path:
    """Plot the training loss (log scale) from a run's ``metrics.jsonl`` (lines that are not records skipped)."""
    steps, loss = [], []
    for raw in Path(metrics_path).read_bytes().splitlines():
        try:
            rec = json.loads(raw)
            step, value = float(rec["step"]), float(rec["loss"])
        except (ValueError, KeyError, TypeError):
            continue
        steps.append(step)
        loss.append(value)
    fig = _figure((6, 3.5))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(steps, loss)
    if loss and min(loss) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    return _save_figure(fig, path, root)


def to_unit(x: Tensor) -> Tensor:
    """Model-space images in [-1, 1] to [0, 1], quantised as ``scorediff.data.from_unit`` stores pixels."""

    return from_unit(x).float() / 255.0
