"""Images: scikit-learn's digits, image folders and MNIST IDX files."""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..utils import unknown
from .base import ArrayDataset, DataInfo, to_unit

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


