"""Time series (C, L): from ``.npy`` / ``.npz`` / ``.csv`` files, and two built-in synthetic families.

Every series dataset has ``info.kind == "series"`` and examples of shape (C, L) (channels, time steps). File data
are normalised per channel, x_model = (x - mean_c) / std_c over all examples and steps; ``info.normalization``
holds the mean and std (written to the run's info.json) and :func:`denormalize` undoes it on output (forecasts,
samples), so results come back in the file's units.

* ``series``     a file the user names (see :func:`series` for the accepted shapes), cut into windows if asked.
* ``sinusoids``  sums of damped sinusoids with noise: x_c(t) = sum_k a_k exp(-d_k t) sin(2 pi f_k t + phi_k)
  + s n(t), t on L points of [0, 1], a_k ~ U(0.5, 1), f_k ~ U(1, 4), d_k ~ U(0, 3), phi_k ~ U(0, 2 pi), n ~ N(0, 1).
* ``gp-series``  sample paths of a stationary Gaussian process with a known kernel (``scorediff.analytic.gp``):
  its law is exactly ``gaussian_process(length, channels, kernel, ...)``, the oracle that forecasting and
  imputation are checked against (:func:`gp_oracle`). Built-in data are already at unit scale and not normalised.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..analytic.gp import gaussian_process
from .arrays import _check_finite, _load_array, _npz_member
from .base import ArrayDataset, DataInfo, _check_n, _gen

SERIES_LAYOUTS = ("ncl", "nlc")


def _read_csv(p: Path) -> np.ndarray:
    """A CSV of numbers: rows are time steps, columns channels; one header row of names is skipped."""
    with open(p, newline="") as f:
        rows = [(i + 1, r) for i, r in enumerate(csv.reader(f)) if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"csv file {str(p)!r} is empty")

    def numbers(line: int, row: list[str]) -> list[float]:
        try:
            return [float(c) if c.strip() else math.nan for c in row]
        except ValueError:
            raise ValueError(f"csv file {str(p)!r}, line {line}: {row!r} is not all numbers") from None

    try:
        numbers(*rows[0])
    except ValueError:
        rows = rows[1:]  # a header
    data = [numbers(*r) for r in rows]
    widths = {len(r) for r in data}
    if len(widths) != 1:
        raise ValueError(f"csv file {str(p)!r} has rows of different lengths {sorted(widths)}")
    return np.asarray(data, dtype=np.float64)


def read_series_file(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """The numeric array in a .npy, .npz (``key``, default the only array or "x") or .csv file; ValueError naming
    the file otherwise."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"series file {str(p)!r} not found (expected .npy, .npz or .csv)")
    if p.suffix.lower() == ".csv":
        return _read_csv(p)
    loaded = _load_array(p)
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            names = list(loaded.files)
            key = key or (names[0] if len(names) == 1 else "x" if "x" in names else None)
            if key not in names:
                raise ValueError(f"{p} holds arrays {names}; pass key= to choose the series")
            arr = _npz_member(loaded, key, p)
    else:
        arr = loaded
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"series in {p} has dtype {arr.dtype}; expected numbers")
    return arr


def windows(x: np.ndarray, window: int, stride: int | None, name: str) -> np.ndarray:
    """One long series (L, C) cut into (N, C, window) windows starting every ``stride`` steps (default: window)."""
    stride = int(stride or window)
    if int(window) < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    if x.shape[0] < window:
        raise ValueError(f"series in {name} has {x.shape[0]} steps, fewer than window={window}")
    starts = range(0, x.shape[0] - int(window) + 1, stride)
    return np.stack([x[s:s + int(window)].T for s in starts])


def series(
    path: str | os.PathLike,
    key: str | None = None,
    layout: str = "ncl",
    window: int | None = None,
    stride: int | None = None,
    normalize: bool = True,
) -> ArrayDataset:
    """Time series from a file.

    Accepted: (N, C, L) arrays (``layout="nlc"`` for (N, L, C)); (N, L) arrays, N series of one channel; or, with
    ``window``, one long series (L,) or (L, C) (a .csv: rows are steps, columns channels) cut into windows of
    ``window`` steps every ``stride`` steps. ``normalize``: per-channel standardisation (module docstring).
    A NaN or inf anywhere is an error naming its index (missing values belong in a mask, not in training data).
    """
    if layout not in SERIES_LAYOUTS:
        raise ValueError(f"series layout {layout!r} unknown; one of: {', '.join(SERIES_LAYOUTS)}")
    name = str(path)
    arr = read_series_file(path, key)
    _check_finite(arr.astype(np.float64), name)
    if window is not None:
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise ValueError(f"series in {name} has shape {arr.shape}; with window= it must be one long series "
                             "(L,) or (L, C)")
        arr = windows(arr, window, stride, name)
    elif arr.ndim == 2 and Path(path).suffix.lower() != ".csv":
        arr = arr[:, None, :]
    elif arr.ndim == 3:
        arr = arr.transpose(0, 2, 1) if layout == "nlc" else arr
    else:
        raise ValueError(f"series in {name} has shape {arr.shape}; expected (N, C, L), (N, L), or one long series "
                         "(L,) / (L, C) with window=")
    if arr.shape[0] == 0 or arr.shape[2] == 0:
        raise ValueError(f"series in {name} is empty (shape {arr.shape})")
    x = torch.from_numpy(np.ascontiguousarray(arr)).to(torch.float64)
    norm = None
    if normalize:
        mean = x.mean(dim=(0, 2))
        std = x.std(dim=(0, 2), unbiased=False).clamp_min(1e-12)
        x = (x - mean[None, :, None]) / std[None, :, None]
        norm = {"mean": mean.tolist(), "std": std.tolist()}
    return ArrayDataset(x.float(), None, DataInfo(tuple(x.shape[1:]), 0, "series", normalization=norm))


def _stats(info) -> tuple[Tensor, Tensor] | None:
    norm = info.get("normalization") if isinstance(info, dict) else getattr(info, "normalization", None)
    if not norm:
        return None
    return torch.tensor(norm["mean"], dtype=torch.float64), torch.tensor(norm["std"], dtype=torch.float64)


def normalize(x: Tensor, info) -> Tensor:
    """Data units -> model units for series (..., C, L) of a dataset's ``info`` (a DataInfo or its dict)."""
    s = _stats(info)
    if s is None:
        return x
    mean, std = (v.to(x.device, x.dtype)[:, None] for v in s)
    return (x - mean) / std


def denormalize(x: Tensor, info) -> Tensor:
    """Model units -> data units: the inverse of :func:`normalize`."""
    s = _stats(info)
    if s is None:
        return x
    mean, std = (v.to(x.device, x.dtype)[:, None] for v in s)
    return x * std + mean


def sinusoids(n: int = 2000, length: int = 64, channels: int = 1, components: int = 2, noise: float = 0.05,
              seed: int = 0) -> ArrayDataset:
    """Sums of ``components`` damped sinusoids plus white noise of std ``noise`` (module docstring)."""
    n, g = _check_n(n), _gen(seed)
    if int(length) < 2 or int(channels) < 1 or int(components) < 1 or noise < 0:
        raise ValueError(f"sinusoids need length >= 2, channels >= 1, components >= 1, noise >= 0; got "
                         f"{length}, {channels}, {components}, {noise}")
    t = torch.linspace(0, 1, int(length), dtype=torch.float64)
    shape = (n, int(channels), int(components), 1)

    def u(lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)

    a, f, d, phi = u(0.5, 1.0), u(1.0, 4.0), u(0.0, 3.0), u(0.0, 2 * math.pi)
    x = (a * torch.exp(-d * t) * torch.sin(2 * math.pi * f * t + phi)).sum(2)
    x = x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)
    return ArrayDataset(x.float(), None, DataInfo(tuple(x.shape[1:]), 0, "series"))


def gp_series(n: int = 2000, length: int = 32, channels: int = 1, kernel: str = "matern52", lengthscale: float = 0.2,
              variance: float = 1.0, period: float = 0.5, seed: int = 0) -> ArrayDataset:
    """Sample paths of the GP ``gp_oracle`` returns for the same options (module docstring)."""
    gp = gp_oracle(length, channels, kernel, lengthscale, variance, period)
    x = gp.sample(_check_n(n), _gen(seed))
    return ArrayDataset(x.float(), None, DataInfo(tuple(x.shape[1:]), 0, "series"))


def gp_oracle(length: int = 32, channels: int = 1, kernel: str = "matern52", lengthscale: float = 0.2,
              variance: float = 1.0, period: float = 0.5):
    """The exact law of ``gp-series`` with these options: a one-component ``GaussianMixture`` over (C, L)."""
    return gaussian_process(int(length), int(channels), kernel, lengthscale, variance, period=period)
