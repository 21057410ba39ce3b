"""Video clips (C, T, H, W) in [-1, 1]: a folder of clips or an array file, and built-in "moving digits".

* ``video``          ``path`` is a folder with one sub-folder of frames per clip (PNG/JPEG/BMP/WebP, in name
  order), or a ``.npy`` / ``.npz`` array (N, T, H, W) or (N, T, H, W, C), C in {1, 3}; uint8 values map from
  [0, 255], floats are taken as they are (or mapped from ``value_range``). ``frames`` keeps the first T frames
  of each clip (every clip must have at least T); without it every clip must have the same number.
* ``moving-digits``  scikit-learn's 8x8 digits drifting and bouncing in a ``size`` x ``size`` frame (in the
  spirit of Moving MNIST, Srivastava et al. 2015), no download: each clip draws a digit, a start position and a
  velocity of ``speed`` pixels per frame in a random direction; the digit moves in a straight line, reflected at
  the frame's edges, and is drawn at the rounded position. Labels: the digit's class.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .arrays import _check_finite, _load_array, _npz_member
from .base import ArrayDataset, DataInfo, _check_n, _gen, to_unit
from .images import IMAGE_EXTENSIONS


def _clip_folder(folder: Path, channels: int | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
    frames = []
    for f in files:
        try:
            with Image.open(f) as img:
                mode = "L" if (channels or (1 if img.mode in ("L", "1", "I", "I;16") else 3)) == 1 else "RGB"
                frames.append(np.asarray(img.convert(mode), dtype=np.uint8))
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"frame {f} could not be decoded ({e.__class__.__name__})") from None
    return np.stack(frames) if frames else np.zeros((0,), np.uint8)


def video(path: str | os.PathLike, key: str | None = None, frames: int | None = None,
          value_range: Sequence[float] | None = None) -> ArrayDataset:
    """Clips from a folder of frame folders or an array file (module docstring); examples (C, T, H, W)."""
    p = Path(path)
    if p.is_dir():
        clips = sorted(d for d in p.iterdir() if d.is_dir())
        if not clips:
            raise ValueError(f"video folder {str(p)!r} has no clip sub-folders (one folder of frames per clip)")
        first = _clip_folder(clips[0], None)
        channels = 1 if first.ndim == 3 else 3
        arrs = [first] + [_clip_folder(d, channels) for d in clips[1:]]
        for d, a in zip(clips, arrs):
            if a.shape[0] == 0:
                raise ValueError(f"clip folder {str(d)!r} holds no frames ({', '.join(IMAGE_EXTENSIONS)})")
            if a.shape[1:] != arrs[0].shape[1:]:
                raise ValueError(f"clip {str(d)!r} has frames of shape {a.shape[1:]}, the first clip "
                                 f"{arrs[0].shape[1:]}")
        arrs = _same_length(arrs, frames, [str(d) for d in clips])
        arr = np.stack(arrs)
    elif p.is_file():
        loaded = _load_array(p)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                names = list(loaded.files)
                key = key or (names[0] if len(names) == 1 else "x" if "x" in names else None)
                if key not in names:
                    raise ValueError(f"{p} holds arrays {names}; pass key= to choose the clips")
                arr = _npz_member(loaded, key, p)
        else:
            arr = loaded
        if arr.ndim not in (4, 5) or (arr.ndim == 5 and arr.shape[-1] not in (1, 3)):
            raise ValueError(f"video array in {p} has shape {arr.shape}; expected (N, T, H, W) or (N, T, H, W, C) "
                             "with C in {1, 3}")
        if frames is not None:
            arr = np.stack(_same_length(list(arr), frames, [f"{p} clip {i}" for i in range(len(arr))]))
    else:
        raise FileNotFoundError(f"video path {str(p)!r} not found (a folder of clip folders, or a .npy / .npz)")
    if arr.shape[0] == 0:
        raise ValueError(f"video data in {p} is empty (shape {arr.shape})")
    if arr.ndim == 4:
        arr = arr[..., None]
    if arr.dtype == np.uint8:
        x = to_unit(torch.from_numpy(np.ascontiguousarray(arr)))
    elif np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer):
        _check_finite(arr, str(p))
        x = torch.from_numpy(np.ascontiguousarray(arr)).float()
        if value_range is not None:
            lo, hi = (float(v) for v in value_range)
            if not hi > lo:
                raise ValueError(f"value_range must be (lo, hi) with hi > lo, got {tuple(value_range)}")
            x = (x - lo) / (hi - lo) * 2 - 1
    else:
        raise ValueError(f"video array in {p} has dtype {arr.dtype}; expected uint8, integer or float")
    x = x.permute(0, 4, 1, 2, 3).contiguous()  # (N, T, H, W, C) -> (N, C, T, H, W)
    return ArrayDataset(x, None, DataInfo(tuple(x.shape[1:]), 0, "video"))


def _same_length(clips: list[np.ndarray], frames: int | None, names: list[str]) -> list[np.ndarray]:
    lengths = [c.shape[0] for c in clips]
    if frames is None:
        if len(set(lengths)) > 1:
            i = next(i for i, n in enumerate(lengths) if n != lengths[0])
            raise ValueError(f"clips have different frame counts ({names[0]}: {lengths[0]}, {names[i]}: "
                             f"{lengths[i]}); pass frames=T to keep the first T of each")
        return clips
    if int(frames) < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    short = [(n, m) for n, m in zip(names, lengths) if m < int(frames)]
    if short:
        raise ValueError(f"clip {short[0][0]} has {short[0][1]} frames, fewer than frames={frames}")
    return [c[: int(frames)] for c in clips]


def moving_digits(n: int = 1000, frames: int = 8, size: int = 16, speed: float = 1.0, seed: int = 0) -> ArrayDataset:
    """Clips (1, frames, size, size) of one bouncing 8x8 digit (module docstring); labels 0..9."""
    from sklearn.datasets import load_digits

    n, g = _check_n(n), _gen(seed)
    if int(size) < 8 or int(frames) < 1 or speed < 0:
        raise ValueError(f"moving digits need size >= 8, frames >= 1, speed >= 0; got {size}, {frames}, {speed}")
    d = load_digits()
    images = torch.as_tensor(d.images, dtype=torch.float32) / 8.0 - 1.0  # 0..16 -> [-1, 1], as the digits data
    pick = torch.randint(len(images), (n,), generator=g)
    span = int(size) - 8  # the top-left corner moves in [0, span]
    start = torch.rand(n, 2, generator=g, dtype=torch.float64) * span
    angle = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    v = float(speed) * torch.stack([torch.sin(angle), torch.cos(angle)], 1)
    t = torch.arange(int(frames), dtype=torch.float64)
    pos = start[:, None, :] + v[:, None, :] * t[None, :, None]  # (n, T, 2), unfolded
    if span > 0:  # reflect at the edges: a triangle wave of period 2 span
        pos = span - (span - pos.remainder(2 * span)).abs()
    corner = pos.round().long().clamp(0, span)
    x = torch.full((n, 1, int(frames), int(size), int(size)), -1.0)
    rows = corner[..., 0, None] + torch.arange(8)  # (n, T, 8)
    cols = corner[..., 1, None] + torch.arange(8)
    clip = torch.arange(n)[:, None, None, None]
    frame = torch.arange(int(frames))[None, :, None, None]
    x[clip, 0, frame, rows[..., :, None], cols[..., None, :]] = images[pick][:, None].expand(n, int(frames), 8, 8)
    names = tuple(str(i) for i in range(10))
    return ArrayDataset(x, torch.as_tensor(d.target)[pick], DataInfo(tuple(x.shape[1:]), 10, "video", names, levels=17))
