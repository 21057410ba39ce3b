"""Pictures people look at: image grids, scatter plots, loss curves (``figures``); series, fan charts, imputations
and video strips (``sequences``). ``save_samples`` picks the picture for a kind of data."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from . import figures, sequences
from .figures import image_grid, save_image_grid, save_loss_plot, save_scatter, to_unit

__all__ = ["figures", "image_grid", "save_image_grid", "save_loss_plot", "save_samples", "save_scatter", "sequences",
           "to_unit"]


def save_samples(x: Tensor, kind: str, path: str | Path, reference: Tensor | None = None, title: str | None = None,
                 root: str | Path | None = None) -> Path:
    """A picture of samples: an image grid for ``kind == "images"``, line plots for "series", a strip of frames
    for "video", else a scatter plot; written whole (``root``: the run folder whose symbolic links are refused)."""
    if kind == "images":
        return save_image_grid(to_unit(x), path, root=root)
    if kind == "video":
        return sequences.save_video_strip(x, path, root=root)
    if kind == "series":
        return sequences.save_series(x, path, reference=reference, title=title, root=root)
    return save_scatter(x, path, reference=reference, title=title, root=root)
