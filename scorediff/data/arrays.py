"""Arrays on disk: ``.npy`` / ``.npz`` points or images, read without pickle."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..utils import unknown
from .base import ArrayDataset, DataInfo, to_unit

# ---------------------------------------------------------------------------------------------------
# Arrays on disk
# ---------------------------------------------------------------------------------------------------

LAYOUTS = ("auto", "nchw", "nhwc")
MAX_CLASSES = 100_000  # labels are class indices 0..N-1; a larger one is an ID, not a class


def _image_layout(shape: tuple[int, ...], layout: str, name: str) -> str:
    if layout != "auto":
        return layout
    first, last = shape[1] in (1, 3, 4), shape[3] in (1, 3, 4)
    if first and not last:
        return "nchw"
    if last and not first:
        return "nhwc"
    if first and last:
        raise ValueError(f"array in {name} of shape {shape} is ambiguous; pass layout='nchw' or 'nhwc'")
    raise ValueError(
        f"array in {name} of shape {shape}: no axis looks like channels (1, 3 or 4); pass layout='nchw' or 'nhwc'"
    )


def _load_array(p: Path):
    """``np.load`` without pickle; anything that is not a plain .npy / .npz gives one line naming the file."""
    with open(p, "rb") as f:
        head = f.read(6)
    if not (head.startswith(b"\x93NUMPY") or head.startswith(b"PK")):  # numpy would call anything else a pickle
        raise ValueError(f"array file {str(p)!r} is not a .npy/.npz array (it starts with {head!r}, not the .npy "
                         "or .npz signature)")
    try:
        return np.load(p, allow_pickle=False)
    except Exception as e:
        # numpy's own message for such bytes suggests enabling pickle, which would run code from the file
        why = "it holds pickled Python objects, which are never loaded" if "pickle" in str(e) else str(e)
        raise ValueError(f"array file {str(p)!r} is not a numeric .npy/.npz array ({why})") from None


def _npz_member(npz, key: str, p: Path) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as e:  # an object array inside the .npz
        why = "it holds pickled Python objects, which are never loaded" if "pickle" in str(e) else str(e)
        raise ValueError(f"array {key!r} in {str(p)!r} is not numeric ({why})") from None


def _check_finite(arr: np.ndarray, where: str) -> None:
    """Name the first NaN / inf: found at load, not as a non-finite loss many steps later."""
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"data {where} holds a non-finite value ({arr[index]}) at index {index} "
                             f"({int(bad.sum())} such values); clean the data before training")


def npy(
    path: str | os.PathLike,
    key: str | None = None,
    labels: str | os.PathLike | None = None,
    labels_key: str | None = None,
    layout: str = "auto",
    value_range: Sequence[float] | None = None,
) -> ArrayDataset:
    """Data from a ``.npy`` or ``.npz`` file.

    Accepted shapes: (N, D) points; (N, H, W) one-channel images; (N, C, H, W) or (N, H, W, C)
    images (``layout`` "auto" picks the axis of size 1, 3 or 4; pass "nchw"/"nhwc" when both fit).
    uint8 arrays are scaled from [0, 255] to [-1, 1]; float arrays are taken as they are, or mapped
    from ``value_range=(lo, hi)`` onto [-1, 1]. In a ``.npz``, ``key`` names the data array (default:
    the only array, else "x", "images", "data" or "arr_0"), ``labels_key`` the labels (default "y" or
    "labels" if present); ``labels`` may instead name a separate ``.npy`` of N integers.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"array file {str(p)!r} not found (expected a .npy or .npz)")
    if layout not in LAYOUTS:
        raise unknown("layout", layout, LAYOUTS)
    loaded = _load_array(p)
    y = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            names = list(loaded.files)
            if key is None:
                candidates = [k for k in ("x", "images", "data", "arr_0") if k in names]
                data_names = [k for k in names if k not in ("y", "labels")]
                if len(data_names) == 1:
                    key = data_names[0]
                elif candidates:
                    key = candidates[0]
                else:
                    raise ValueError(f"{p} holds arrays {names}; pass key= to choose the data")
            if key not in names:
                raise ValueError(f"{p} has no array {key!r}; it holds {names}")
            arr = _npz_member(loaded, key, p)
            if labels_key is None:
                labels_key = next((k for k in ("y", "labels") if k in names), None)
            elif labels_key not in names:
                raise ValueError(f"{p} has no array {labels_key!r}; it holds {names}")
            if labels_key is not None:
                y = _npz_member(loaded, labels_key, p)
    else:
        if key is not None or labels_key is not None:
            raise ValueError(f"key/labels_key apply to .npz files; {p} is a .npy")
        arr = loaded
    if labels is not None:
        lp = Path(labels)
        if not lp.is_file():
            raise FileNotFoundError(f"labels file {str(lp)!r} not found (expected a .npy of N integers)")
        y = _load_array(lp)
        if not isinstance(y, np.ndarray):
            raise ValueError(f"labels file {str(lp)!r} must be a .npy of N integers, not a .npz")

    if arr.dtype == np.uint8:
        x = to_unit(torch.from_numpy(np.ascontiguousarray(arr)))
        if value_range is not None:
            raise ValueError("value_range applies to float arrays; uint8 arrays are read as 0..255")
    elif np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer):
        _check_finite(arr, str(p) + (f" (array {key!r})" if key is not None else ""))
        x = torch.from_numpy(np.ascontiguousarray(arr)).to(torch.float32)
        if value_range is not None:
            lo, hi = (float(v) for v in value_range)
            if not hi > lo:
                raise ValueError(f"value_range must be (lo, hi) with hi > lo, got {tuple(value_range)}")
            x = (x - lo) / (hi - lo) * 2 - 1
    else:
        raise ValueError(f"array in {p} has dtype {arr.dtype}; expected uint8, integer or float")

    shape = tuple(arr.shape)
    if x.ndim == 2:
        kind = "points"
    elif x.ndim == 3:
        x, kind = x[:, None], "images"
    elif x.ndim == 4:
        if _image_layout(shape, layout, str(p)) == "nhwc":
            x = x.permute(0, 3, 1, 2).contiguous()
        kind = "images"
    else:
        raise ValueError(
            f"array in {p} has shape {shape}; expected (N, D) points or (N, H, W), (N, C, H, W), (N, H, W, C) images"
        )
    if shape[0] == 0:
        raise ValueError(f"array in {p} is empty (shape {shape})")
    yt, num_classes = _labels(y, x.shape[0], str(labels) if labels is not None else str(p))
    return ArrayDataset(x, yt, DataInfo(tuple(x.shape[1:]), num_classes, kind))


def _labels(y: np.ndarray | None, n: int, name: str) -> tuple[Tensor | None, int]:
    if y is None:
        return None, 0
    y = np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels for {name} have shape {y.shape} and dtype {y.dtype}; expected ({n},) integers")
    yt = torch.from_numpy(y.astype(np.int64))
    if n and int(yt.min()) < -1:
        raise ValueError(f"labels for {name} must be >= 0 (or -1 for none), got {int(yt.min())}")
    if n and int(yt.max()) >= MAX_CLASSES:  # a class embedding has one row per class up to the largest label
        i = int(yt.argmax())
        raise ValueError(f"labels for {name} must be class indices below {MAX_CLASSES}, got {int(yt.max())} at index "
                         f"{i}; renumber the classes 0..N-1")
    return yt, int(yt.max()) + 1 if n else 0


