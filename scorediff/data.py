"""Datasets: ``make(name, **options) -> Dataset`` yielding ``(x, y)``, y a class label or -1 (none).

Every dataset has ``.info`` (``DataInfo``: ``shape`` of one example, ``num_classes`` (0 if unlabeled),
``kind`` "points" | "images", ``class_names``). Images are float32 (C, H, W) in [-1, 1]; points
float32 (D,). Array-backed datasets (everything but "folder") also expose the whole data as
``.x`` (N, ...) and ``.y`` (N,) tensors, for fast batching without a DataLoader.

==============  ==============================================================================
name            source and options
==============  ==============================================================================
8gaussians      8 Gaussians on a circle (labels: component); n, seed, noise
swissroll       2-D Swiss roll (no labels); n, seed, noise
moons           two interleaved half circles (labels: moon); n, seed, noise
checkerboard    uniform on the dark squares of a 4x4 board over [-2, 2]^2 (no labels); n, seed
rings           four concentric circles (labels: ring); n, seed, noise
digits          scikit-learn's 8x8 digits (1797 images, shipped with scikit-learn), (1, 8, 8), labels 0..9
folder          PNG/JPEG/BMP/WebP files under ``path``, recursively; labels from first-level sub-folders
npy             a ``.npy`` / ``.npz`` array of points (N, D) or images (N, H, W), (N, C, H, W), (N, H, W, C)
mnist           MNIST IDX files the user has (``images``, ``labels``; optionally .gz), or ``path`` + ``split``
==============  ==============================================================================

Toy sets are drawn from a ``torch.Generator`` seeded by ``seed``: same seed, same points. Their
constants put each coordinate at roughly unit standard deviation.

Every dataset also takes ``split`` ("train" | "test"), ``test_fraction`` (0.2) and ``split_seed`` (0): a
deterministic held-out split (see ``make``), so that a model trained on "train" is scored on "test".
"""

from __future__ import annotations

import gzip
import inspect
import math
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .utils import check_options, unknown

__all__ = ["DATASETS", "ArrayDataset", "DataInfo", "FolderDataset", "from_unit", "make", "to_unit"]


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about a dataset: one example's shape, the label count, the kind."""

    shape: tuple[int, ...]
    num_classes: int = 0  # 0: unlabeled (every y is -1)
    kind: str = "points"  # "points" | "images"
    class_names: tuple[str, ...] = field(default=())
    levels: int = 256  # images: the quantization levels of the stored pixels (8-bit: 256; digits: 17)

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "num_classes": self.num_classes, "kind": self.kind,
                "class_names": list(self.class_names), "levels": self.levels}


# ---------------------------------------------------------------------------------------------------
# uint8 <-> [-1, 1]
# ---------------------------------------------------------------------------------------------------


def to_unit(x: Tensor | np.ndarray) -> Tensor:
    """uint8 values 0..255 -> float32 in [-1, 1] (x / 127.5 - 1)."""
    x = torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x)
    return x.to(torch.float32) / 127.5 - 1.0


def from_unit(x: Tensor | np.ndarray) -> Tensor:
    """Float in [-1, 1] -> uint8 0..255, rounded and clipped (the inverse of ``to_unit`` on its image)."""
    x = torch.as_tensor(x)
    return ((x.to(torch.float32) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


# ---------------------------------------------------------------------------------------------------
# Array-backed datasets
# ---------------------------------------------------------------------------------------------------


class ArrayDataset(Dataset):
    """(x[i], y[i]) from in-memory tensors; y is -1 where there are no labels."""

    def __init__(self, x: Tensor, y: Tensor | None, info: DataInfo):
        if y is None:
            y = torch.full((x.shape[0],), -1, dtype=torch.long)
        if y.shape != (x.shape[0],):
            raise ValueError(f"labels have shape {tuple(y.shape)}, expected ({x.shape[0]},) to match the data")
        self.x, self.y, self.info = x, y.long(), info

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.x[i], int(self.y[i])

    def __repr__(self) -> str:
        return f"ArrayDataset(n={len(self)}, info={self.info})"


def _points(x: Tensor, y: Tensor | None, num_classes: int = 0) -> ArrayDataset:
    return ArrayDataset(x.to(torch.float32), y, DataInfo(tuple(x.shape[1:]), num_classes, "points"))


# ---------------------------------------------------------------------------------------------------
# Toy 2-D sets (as in FFJORD / the score-matching literature; our own constants)
# ---------------------------------------------------------------------------------------------------

TOY_OPTIONS = ("n", "seed", "noise")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _check_n(n: int) -> int:
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return int(n)


def eight_gaussians(n: int = 10000, seed: int = 0, noise: float = 0.1) -> ArrayDataset:
    """Mixture of 8 equal Gaussians, means on a circle of radius sqrt(2) (per-coordinate std ~ 1)."""
    g, n = _gen(seed), _check_n(n)
    k = torch.randint(0, 8, (n,), generator=g)
    angle = k.double() * (2 * math.pi / 8)
    means = math.sqrt(2) * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return _points(means + noise * torch.randn(n, 2, generator=g, dtype=torch.float64), k, 8)


def swissroll(n: int = 10000, seed: int = 0, noise: float = 0.05) -> ArrayDataset:
    """2-D Swiss roll: r = theta, theta in 1.5 pi (1 + 2 u), divided by 7 (per-coordinate std ~ 1)."""
    g, n = _gen(seed), _check_n(n)
    theta = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g, dtype=torch.float64))
    x = torch.stack([theta * torch.cos(theta), theta * torch.sin(theta)], dim=1) / 7.0
    return _points(x + noise * torch.randn(n, 2, generator=g, dtype=torch.float64), None)


def moons(n: int = 10000, seed: int = 0, noise: float = 0.05) -> ArrayDataset:
    """Two interleaved half circles (scikit-learn's make_moons layout), centred and scaled to std ~ 1."""
    g, n = _gen(seed), _check_n(n)
    label = torch.randint(0, 2, (n,), generator=g)
    a = math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    upper = torch.stack([torch.cos(a), torch.sin(a)], dim=1)
    lower = torch.stack([1 - torch.cos(a), 0.5 - torch.sin(a)], dim=1)
    x = torch.where(label[:, None] == 0, upper, lower)
    x = (x - torch.tensor([0.5, 0.25], dtype=torch.float64)) / torch.tensor([0.87, 0.5], dtype=torch.float64)
    return _points(x + noise * torch.randn(n, 2, generator=g, dtype=torch.float64), label, 2)


def checkerboard(n: int = 10000, seed: int = 0) -> ArrayDataset:
    """Uniform on the 8 dark squares of a 4x4 checkerboard over [-2, 2]^2 (per-coordinate std ~ 1.15)."""
    g, n = _gen(seed), _check_n(n)
    x1 = 4 * torch.rand(n, generator=g, dtype=torch.float64) - 2
    # choose one of the two squares in x1's column with the right parity
    row = torch.randint(0, 2, (n,), generator=g).double() * 2 + torch.floor(x1).remainder(2)
    x2 = row - 2 + torch.rand(n, generator=g, dtype=torch.float64)
    return _points(torch.stack([x1, x2], dim=1), None)


def rings(n: int = 10000, seed: int = 0, noise: float = 0.04) -> ArrayDataset:
    """Four concentric circles of radii 0.5, 1, 1.5, 2 chosen uniformly (labels: ring), std ~ 1."""
    g, n = _gen(seed), _check_n(n)
    k = torch.randint(0, 4, (n,), generator=g)
    r = 0.5 * (k.double() + 1)
    a = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    x = r[:, None] * torch.stack([torch.cos(a), torch.sin(a)], dim=1)
    return _points(x + noise * torch.randn(n, 2, generator=g, dtype=torch.float64), k, 4)


# ---------------------------------------------------------------------------------------------------
# scikit-learn digits
# ---------------------------------------------------------------------------------------------------


def digits() -> ArrayDataset:
    """scikit-learn's 8x8 handwritten digits (UCI optdigits test set, 1797 images), no download.

    Pixel values 0..16 map linearly onto [-1, 1]; shape (1, 8, 8); labels 0..9.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32)[:, None] / 8.0 - 1.0
    names = tuple(str(i) for i in range(10))
    return ArrayDataset(x, torch.as_tensor(d.target), DataInfo((1, 8, 8), 10, "images", names, levels=17))


# ---------------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _size_hw(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        hw = (size, size)
    else:
        hw = tuple(int(s) for s in size)
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"size must be an int or (height, width) of positive ints, got {size!r}")
    return hw  # type: ignore[return-value]


class FolderDataset(Dataset):
    """Images under a folder, found recursively; (C, H, W) float32 in [-1, 1].

    Labels: if every image lies inside a first-level sub-folder, the sorted sub-folder names are the
    classes; otherwise every label is -1. Images are decoded on access (``preload=True`` decodes all
    at construction, so a bad file is reported at once). Resizing: with ``center_crop`` (default)
    the image is scaled to cover ``size`` and the centre cut out; without, it is scaled to ``size``
    exactly. ``size=None`` takes the first image's size. ``flip=True`` flips horizontally with
    probability 1/2, decided deterministically by (seed, epoch, index); call ``set_epoch`` for new flips.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        size: int | Sequence[int] | None = None,
        center_crop: bool = True,
        flip: bool = False,
        mode: str = "rgb",
        seed: int = 0,
        preload: bool = False,
    ):
        root = Path(path)
        if not root.exists():
            raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
        if not root.is_dir():
            raise ValueError(f"image folder {str(root)!r} is not a folder")
        if mode not in ("rgb", "gray"):
            raise ValueError(f"mode {mode!r} unknown; one of: gray, rgb")
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise ValueError(f"image folder {str(root)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        rel = [p.relative_to(root) for p in files]
        if all(len(r.parts) > 1 for r in rel):
            class_names = tuple(sorted({r.parts[0] for r in rel}))
            index = {c: i for i, c in enumerate(class_names)}
            self.labels = [index[r.parts[0]] for r in rel]
        else:
            class_names, self.labels = (), [-1] * len(files)
        self.files, self.root = files, root
        self.center_crop, self.flip, self.mode, self.seed, self.epoch = center_crop, flip, mode, seed, 0
        self.size = _size_hw(size)
        if self.size is None:
            img = self._open(0)
            self.size = (img.height, img.width)
        channels = 3 if mode == "rgb" else 1
        self.info = DataInfo((channels, *self.size), len(class_names), "images", class_names)
        self._cache = [self._decode(i) for i in range(len(files))] if preload else None

    def _open(self, i: int):
        from PIL import Image

        path = self.files[i]
        try:
            img = Image.open(path)
            img.load()
        except Exception as e:  # PIL raises several types (UnidentifiedImageError, OSError, SyntaxError)
            raise ValueError(f"image {path} could not be decoded: {e}") from e
        return img.convert("RGB" if self.mode == "rgb" else "L")

    def _decode(self, i: int) -> Tensor:
        from PIL import Image

        img = self._open(i)
        h, w = self.size
        if (img.height, img.width) != (h, w):
            if self.center_crop:
                s = max(h / img.height, w / img.width)
                rh, rw = max(h, round(img.height * s)), max(w, round(img.width * s))
                img = img.resize((rw, rh), Image.Resampling.BICUBIC, reducing_gap=3.0)
                top, left = (rh - h) // 2, (rw - w) // 2
                img = img.crop((left, top, left + w, top + h))
            else:
                img = img.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0)
        a = np.asarray(img, dtype=np.uint8)
        a = a[:, :, None] if a.ndim == 2 else a
        return to_unit(torch.from_numpy(a.copy()).permute(2, 0, 1))

    def set_epoch(self, epoch: int) -> None:
        """Choose a fresh set of flips (deterministic in seed and epoch)."""
        self.epoch = int(epoch)

    def _flipped(self, i: int) -> bool:
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1_000_033 + i)
        return bool(torch.randint(0, 2, (1,), generator=g))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        x = self._cache[i] if self._cache is not None else self._decode(i)
        if self.flip and self._flipped(i):
            x = x.flip(-1)
        return x, self.labels[i]

    def __repr__(self) -> str:
        return f"FolderDataset({str(self.root)!r}, n={len(self)}, info={self.info})"


# ---------------------------------------------------------------------------------------------------
# Arrays on disk
# ---------------------------------------------------------------------------------------------------

LAYOUTS = ("auto", "nchw", "nhwc")


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
    yt, num_classes = _labels(y, x.shape[0], str(p))
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
    return yt, int(yt.max()) + 1 if n else 0


# ---------------------------------------------------------------------------------------------------
# MNIST IDX files
# ---------------------------------------------------------------------------------------------------

# IDX: magic = 0x00 0x00, type code, number of dims; then the dims as big-endian int32; then data.
_IDX_UBYTE = 0x08


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format) of unsigned bytes, gzip-compressed or not."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"IDX file {str(p)!r} not found")
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ValueError(f"IDX file {p} could not be read: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{p} is not an IDX file (expected magic bytes 00 00 <type> <ndim>)")
    if raw[2] != _IDX_UBYTE:
        raise ValueError(f"{p}: IDX type code 0x{raw[2]:02x} unsupported; expected 0x08 (unsigned byte)")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}i", raw[4 : 4 + 4 * ndim])
    count = int(np.prod(dims)) if dims else 0
    body = raw[4 + 4 * ndim :]
    if len(body) != count:
        raise ValueError(f"{p}: header says shape {dims} ({count} bytes), file holds {len(body)} bytes")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"no {stem}[.gz] in {str(folder)!r}")


def mnist(
    images: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
    path: str | os.PathLike | None = None,
    split: str = "train",
) -> ArrayDataset:
    """MNIST (or Fashion-MNIST, KMNIST: same format) from IDX files already on disk.

    Either ``images`` (``*-images-idx3-ubyte[.gz]``) and optionally ``labels``
    (``*-labels-idx1-ubyte[.gz]``), or ``path`` to a folder with the standard names and
    ``split`` "train" or "test" ("t10k"). Images become (1, 28, 28) in [-1, 1].
    """
    if path is not None:
        if images is not None or labels is not None:
            raise ValueError("mnist: pass either path (and split) or images/labels files, not both")
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"MNIST folder {str(folder)!r} not found")
        prefix = {"train": "train", "test": "t10k", "t10k": "t10k"}.get(split)
        if prefix is None:
            raise unknown("mnist split", split, ("train", "test"))
        images = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
        labels = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
    if images is None:
        raise ValueError("mnist needs images= (an *-images-idx3-ubyte[.gz] file) or path= (a folder)")
    arr = read_idx(images)
    if arr.ndim != 3:
        raise ValueError(f"{images}: IDX images must have 3 dims (N, H, W), got shape {arr.shape}")
    x = to_unit(torch.from_numpy(arr.copy()))[:, None]
    y, num_classes = None, 0
    if labels is not None:
        lab = read_idx(labels)
        if lab.shape != (arr.shape[0],):
            raise ValueError(f"{labels}: labels of shape {lab.shape}, expected ({arr.shape[0]},) to match {images}")
        y, num_classes = torch.from_numpy(lab.astype(np.int64)), int(lab.max()) + 1 if lab.size else 0
    names = tuple(str(i) for i in range(num_classes))
    return ArrayDataset(x, y, DataInfo(tuple(x.shape[1:]), num_classes, "images", names))


# ---------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------

DATASETS: dict[str, Callable[..., Dataset]] = {
    "8gaussians": eight_gaussians,
    "swissroll": swissroll,
    "moons": moons,
    "checkerboard": checkerboard,
    "rings": rings,
    "digits": digits,
    "folder": FolderDataset,
    "npy": npy,
    "mnist": mnist,
}


SPLITS = ("train", "test")


def split_indices(n: int, split: str, test_fraction: float = 0.2, split_seed: int = 0) -> Tensor:
    """The indices of ``split`` in a deterministic train / test split of n examples: a permutation seeded by
    ``split_seed``; its first round(n * test_fraction) entries (at least 1) are the test set, the rest train."""
    if split not in SPLITS:
        raise unknown("split", split, SPLITS)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = max(1, round(n * test_fraction))
    if n_test >= n:
        raise ValueError(f"a dataset of {n} examples cannot be split with test_fraction {test_fraction}")
    perm = torch.randperm(n, generator=_gen(split_seed))
    return (perm[:n_test] if split == "test" else perm[n_test:]).sort().values


def _select(ds: Dataset, idx: Tensor) -> Dataset:
    if isinstance(ds, ArrayDataset):
        return ArrayDataset(ds.x[idx], ds.y[idx], ds.info)
    if isinstance(ds, FolderDataset):
        keep = idx.tolist()
        ds.files, ds.labels = [ds.files[i] for i in keep], [ds.labels[i] for i in keep]
        if ds._cache is not None:
            ds._cache = [ds._cache[i] for i in keep]
        return ds
    raise ValueError(f"dataset {type(ds).__name__} cannot be split")


def _downsampled(ds: Dataset, factor: int) -> Dataset:
    """Images average-pooled by ``factor`` (the base data of a cascade: 8x8 digits -> 4x4)."""
    import torch.nn.functional as F

    if not isinstance(ds, ArrayDataset) or ds.info.kind != "images":
        raise ValueError(f"downsample works on in-memory image data, not {type(ds).__name__} of kind {ds.info.kind!r}")
    C, H, W = ds.info.shape
    if not (isinstance(factor, int) and factor >= 2) or H % factor or W % factor:
        raise ValueError(f"downsample must be an integer >= 2 dividing the image size {H}x{W}, got {factor!r}")
    # the mean of factor^2 pixels on (levels - 1) steps lies on a grid of (levels - 1) factor^2 steps
    info = DataInfo((C, H // factor, W // factor), ds.info.num_classes, ds.info.kind, ds.info.class_names,
                    (ds.info.levels - 1) * factor * factor + 1)
    return ArrayDataset(F.avg_pool2d(ds.x, factor), ds.y, info)


def make(name: str, split: str | None = None, test_fraction: float = 0.2, split_seed: int = 0,
         downsample: int | None = None, **options: Any) -> Dataset:
    """Build dataset ``name`` (see the module docstring) with its options; ``.info`` describes it.

    ``split="train"`` / ``"test"`` keeps one side of a deterministic split (``split_indices``: a fraction
    ``test_fraction`` held out, chosen by ``split_seed``), so that a model trained on "train" is evaluated on
    examples it never saw. A dataset with its own split (mnist's official train / t10k files) uses that instead.
    ``downsample=f`` average-pools in-memory images by f (the low-resolution base data of a cascade).
    """
    if name not in DATASETS:
        raise unknown("dataset", name, DATASETS)
    fn = DATASETS[name]
    target = fn.__init__ if isinstance(fn, type) else fn
    allowed = [k for k in inspect.signature(target).parameters if k != "self"]
    check_options(f"dataset {name!r}", options, allowed)
    if split is not None and "split" in allowed:
        ds = fn(split=split, **options)
    else:
        ds = fn(**options)
        if split is not None:
            ds = _select(ds, split_indices(len(ds), split, test_fraction, split_seed))
    return _downsampled(ds, downsample) if downsample is not None else ds
