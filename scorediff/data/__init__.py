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
digits-text     digits with generated captions (label, thickness, slant, width; ``data.captions``)
folder-captions an image folder with captions: ``name.txt`` beside ``name.png`` or captions.jsonl / metadata.jsonl
npy             a ``.npy`` / ``.npz`` array of points (N, D) or images (N, H, W), (N, C, H, W), (N, H, W, C)
mnist           MNIST IDX files the user has (``images``, ``labels``; optionally .gz), or ``path`` + ``split``
shards          streamed WebDataset tar shards in folder ``path`` (``scorediff data pack``; data/shards.py)
hf              streamed local Hugging Face parquet / arrow files in ``path``; image_column, label_column
series          time series (C, L) from a .npy / .npz / .csv file, normalised per channel (``data.series``)
sinusoids       sums of damped sinusoids with noise (C, L) (``data.series``)
gp-series       sample paths of a Gaussian process with a known kernel (C, L) (``data.series.gp_oracle``)
video           clips (C, T, H, W): a folder of frame folders or a .npy / .npz array (``data.video``)
moving-digits   scikit-learn's digits bouncing in a small frame (1, T, size, size), labels 0..9 (``data.video``)
text            token sequences (L,) of the UTF-8 text ``files``; ``tokenizer`` char / bpe (``vocab_size``) / byte /
                JSON file, ``length``
pydoc-text      the same over the standard library's ``pydoc_data.topics`` (no download); ``prose`` for its prose
digits-tokens   the 8x8 digits as 64 tokens over 17 grey levels (kind "tokens", vocab 17)
==============  ==============================================================================

Toy sets are drawn from a ``torch.Generator`` seeded by ``seed``: same seed, same points. Their
constants put each coordinate at roughly unit standard deviation.

Every dataset also takes ``split`` ("train" | "test"), ``test_fraction`` (0.2) and ``split_seed`` (0): a
deterministic held-out split (see ``make``), so that a model trained on "train" is scored on "test".
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..utils import check_options, unknown
from .arrays import LAYOUTS, npy
from .base import ArrayDataset, DataInfo, _gen, from_unit, to_unit
from .captions import CaptionedDataset, CaptionedFolder, digits_text
from .hf import HFShards
from .images import IMAGE_EXTENSIONS, FolderDataset, digits, mnist, read_idx
from .series import gp_series, series, sinusoids
from .shards import TarShards
from .text import TokenInfo, digits_tokens, pydoc_text, text
from .toys import TOY_OPTIONS, checkerboard, eight_gaussians, moons, rings, swissroll
from .video import moving_digits, video

__all__ = [
    "DATASETS", "IMAGE_EXTENSIONS", "LAYOUTS", "SPLITS", "TOY_OPTIONS", "ArrayDataset", "CaptionedDataset", "CaptionedFolder", "DataInfo", "FolderDataset",
    "checkerboard", "digits", "digits_text", "eight_gaussians", "from_unit", "make", "mnist", "moons", "npy", "read_idx", "rings",
    "split_indices", "swissroll", "to_unit",
    "TokenInfo", "digits_tokens", "pydoc_text", "text",
]

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
    "digits-text": digits_text,  # captioned (data/captions.py): ds.prompts(indices, generator)
    "folder-captions": CaptionedFolder,
    "shards": TarShards,  # streamed: WebDataset tar shards (data/shards.py)
    "hf": HFShards,  # streamed: a local Hugging Face parquet / arrow folder (optional ``datasets``)
    "series": series,
    "sinusoids": sinusoids,
    "gp-series": gp_series,
    "video": video,
    "moving-digits": moving_digits,
    "text": text,  # token data (discrete diffusion): scorediff.data.text
    "pydoc-text": pydoc_text,
    "digits-tokens": digits_tokens,
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
    if hasattr(ds, "select"):  # a dataset that carries more than (x, y), e.g. captions
        return ds.select(idx)
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
