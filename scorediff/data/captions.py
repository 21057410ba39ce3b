"""Images with captions: the built-in captioned digits, and image folders whose captions sit beside them.

A captioned dataset yields ``(x, y)`` like every dataset and adds ``prompts(indices, generator)``: one caption
per example, a phrasing drawn from the example's captions by ``generator`` (so a training run stays exactly
resumable), and ``grid_prompts(n)``, the prompts of a run's sample grid.

**digits-text** (no download): scikit-learn's 8x8 digits with captions generated from the label and from
attributes measured on each image, each judged against the examples of the same digit (a "thick" one has
more ink than two thirds of its class):
- thickness: the ink mass m = sum of the pixel intensities in [0, 1] ("thin" in the lowest third of its
  class, "thick" in the highest);
- slant: the image-moment shear -mu_11 / mu_02 (columns x, rows r downwards; mu_pq the central moments of
  the ink), the horizontal shift per row going up: "leaning left" / "leaning right" in the lowest / highest
  third of its class;
- width: the horizontal spread sqrt(mu_20) of the ink, "narrow" / "wide" in the lowest / highest third.
Each image gets several phrasings: "a thick wide seven leaning right", "the digit 7, thick, wide, leaning
right", "a seven", "7", and one per single attribute ("a thick seven", ...). ``attributes`` holds the
measured values and their labels (-1 low third, 0 middle, 1 high) for measuring prompt adherence
(``measure_attributes`` measures generated images the same way).

**folder-captions**: a folder of images (``scorediff.data.FolderDataset``) with a caption for each image,
either ``name.txt`` beside ``name.png`` (UTF-8; each non-empty line one phrasing), or a ``captions.jsonl`` /
``metadata.jsonl`` in the folder (the convention of Hugging Face image datasets): one JSON object per line
with ``file_name`` (relative to the folder) and ``text`` (or ``caption``; a string or a list of phrasings).
A missing caption, an empty caption, a file that is not UTF-8, a bad JSON line or a ``file_name`` without
its image is one ValueError naming the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from .base import ArrayDataset, DataInfo
from .images import FolderDataset, digits

__all__ = ["ATTRIBUTES", "CaptionedDataset", "CaptionedFolder", "NUMBER_WORDS", "article", "digits_text",
           "eval_prompts", "measure_attributes", "read_captions"]

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# attribute -> (word for the low third, word for the high third)
ATTRIBUTES = {"thickness": ("thin", "thick"), "slant": ("leaning left", "leaning right"), "width": ("narrow", "wide")}


def choose(phrasings: Sequence[Sequence[str]], generator: torch.Generator | None) -> list[str]:
    """One phrasing of each list, uniformly by ``generator`` (one draw per list); the first without a generator."""
    if generator is None:
        return [c[0] for c in phrasings]
    u = torch.rand(len(phrasings), generator=generator, device=generator.device).cpu()
    return [c[min(int(v * len(c)), len(c) - 1)] for c, v in zip(phrasings, u.tolist())]


def eval_prompts(dataset, num: int, seed: int = 0, name: str = "the data set") -> list[str]:
    """``num`` prompts from the caption distribution of ``dataset`` (a captioned data set, e.g. a run's test
    split): example i of a permutation seeded ``seed`` in turn (cycled when num exceeds the examples) and one of
    its phrasings, drawn by the same generator. What ``scorediff eval`` and training-time evaluation sample with."""
    if not hasattr(dataset, "prompts"):
        raise ValueError(f"{name} has no captions to draw evaluation prompts from")
    if len(dataset) < 1:
        raise ValueError(f"{name} has no examples to draw evaluation prompts from")
    generator = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(dataset), generator=generator)
    return dataset.prompts([int(order[i % len(order)]) for i in range(num)], generator)


class CaptionedDataset(ArrayDataset):
    """An in-memory dataset with captions: ``captions[i]`` the phrasings of example i."""

    def __init__(self, x: Tensor, y: Tensor | None, info: DataInfo, captions: Sequence[Sequence[str]],
                 attributes: dict[str, Tensor] | None = None, grid: Sequence[str] | None = None):
        super().__init__(x, y, info)
        if len(captions) != len(self):
            raise ValueError(f"{len(captions)} caption lists for {len(self)} examples")
        self.captions = [list(c) for c in captions]
        self.attributes = attributes or {}
        self.grid = list(grid) if grid else None

    def prompts(self, indices: Iterable[int], generator: torch.Generator | None = None) -> list[str]:
        """One caption per index: a phrasing drawn uniformly by ``generator`` (the first one without)."""
        return choose([self.captions[int(i)] for i in indices], generator)

    def grid_prompts(self, n: int) -> list[str]:
        """The prompts of a sample grid: the dataset's grid prompts in turn, else the first captions."""
        if self.grid:
            return [self.grid[i % len(self.grid)] for i in range(n)]
        return [self.captions[i % len(self)][0] for i in range(n)]

    def select(self, idx: Tensor) -> CaptionedDataset:
        keep = idx.tolist()
        return CaptionedDataset(self.x[idx], self.y[idx], self.info, [self.captions[i] for i in keep],
                                {k: v[idx] for k, v in self.attributes.items()}, self.grid)


# -- the built-in captioned digits ------------------------------------------------------------------------------


def measure_attributes(x: Tensor) -> dict[str, Tensor]:
    """Ink mass, slant (-mu_11 / mu_02) and width (sqrt mu_20) of images x (B, 1, H, W) in [-1, 1]."""
    ink = ((x[:, 0].double() + 1) / 2).clamp(0, 1)
    H, W = ink.shape[-2:]
    rows = torch.arange(H, dtype=ink.dtype)[:, None].expand(H, W)
    cols = torch.arange(W, dtype=ink.dtype)[None, :].expand(H, W)
    mass = ink.sum((1, 2))
    m = mass.clamp_min(1e-9)
    cx, cy = (ink * cols).sum((1, 2)) / m, (ink * rows).sum((1, 2)) / m
    dx, dy = cols - cx[:, None, None], rows - cy[:, None, None]
    mu11, mu02, mu20 = ((ink * dx * dy).sum((1, 2)) / m, (ink * dy**2).sum((1, 2)) / m,
                        (ink * dx**2).sum((1, 2)) / m)
    # rows grow downwards: a digit leaning right moves right going up, i.e. x falls as r grows (mu_11 < 0)
    return {"thickness": mass, "slant": -mu11 / mu02.clamp_min(1e-9), "width": mu20.sqrt()}


def class_thresholds(values: dict[str, Tensor], y: Tensor, num_classes: int) -> dict[str, Tensor]:
    """Per class and attribute, the (1/3, 2/3) quantiles: (num_classes, 2) per attribute."""
    return {k: torch.stack([torch.quantile(v[y == c], torch.tensor([1 / 3, 2 / 3], dtype=v.dtype))
                            for c in range(num_classes)]) for k, v in values.items()}


def attribute_levels(values: dict[str, Tensor], y: Tensor, thresholds: dict[str, Tensor]) -> dict[str, Tensor]:
    """-1 (lowest third of its class), 0 or 1 (highest third) per attribute."""
    out = {}
    for k, v in values.items():
        lo, hi = thresholds[k][y, 0], thresholds[k][y, 1]
        out[k] = (v > hi).long() - (v < lo).long()
    return out


def article(word: str) -> str:
    return "an" if word == "eight" else "a"  # the only vowel sound among the words used here


def digit_captions(label: int, levels: dict[str, int]) -> list[str]:
    """The phrasings of one digit with attribute levels (-1, 0, 1) per attribute."""
    name = NUMBER_WORDS[label]
    words = {k: ATTRIBUTES[k][0] if lv < 0 else ATTRIBUTES[k][1] for k, lv in levels.items() if lv != 0}
    adjectives = [words[k] for k in ("thickness", "width") if k in words]
    tail = [words["slant"]] if "slant" in words else []
    caps = [" ".join([article(adjectives[0] if adjectives else name), *adjectives, name, *tail]),
            ", ".join([f"the digit {label}", *adjectives, *tail]),
            f"{article(name)} {name}", str(label)]
    for k, w in words.items():
        caps.append(f"{article(name)} {name} {w}" if k == "slant" else f"{article(w)} {w} {name}")
    return list(dict.fromkeys(caps))  # without repeats, first phrasing first


def digits_text() -> CaptionedDataset:
    """scikit-learn's digits with captions from the label and measured attributes (see the module docstring)."""
    base = digits()
    values = measure_attributes(base.x)
    thresholds = class_thresholds(values, base.y, 10)
    levels = attribute_levels(values, base.y, thresholds)
    captions = [digit_captions(int(base.y[i]), {k: int(v[i]) for k, v in levels.items()}) for i in range(len(base))]
    attributes = {**values, **{f"{k}_level": v for k, v in levels.items()}}
    return CaptionedDataset(base.x, base.y, base.info, captions, attributes,
                            grid=[f"{article(w)} {w}" for w in NUMBER_WORDS])


# -- captions beside images -----------------------------------------------------------------------------------

CAPTION_FILES = ("captions.jsonl", "metadata.jsonl")


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"caption file {str(path)!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def _phrasings(text, where: str) -> list[str]:
    items = [text] if isinstance(text, str) else text
    if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
        raise ValueError(f"{where}: the caption must be a string or a list of strings, got {text!r}")
    items = [t.strip() for t in items if t.strip()]
    if not items:
        raise ValueError(f"{where}: empty caption")
    return items


def read_captions(root: str | os.PathLike, files: Sequence[Path]) -> dict[Path, list[str]]:
    """The phrasings of every image in ``files`` under ``root``: from captions.jsonl / metadata.jsonl in root,
    else from ``name.txt`` beside each image. Bad input raises one ValueError naming the file."""
    root = Path(root)
    found: dict[Path, list[str]] = {}
    table = next((root / n for n in CAPTION_FILES if (root / n).is_file()), None)
    if table is not None:
        images = {p.resolve(): p for p in files}
        for n, line in enumerate(_read_text(table).splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{table}, line {n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or "file_name" not in row:
                raise ValueError(f"{where}: expected an object with file_name and text")
            key = "text" if "text" in row else "caption" if "caption" in row else None
            if key is None:
                raise ValueError(f"{where}: no caption for {row['file_name']!r} (expected a 'text' field)")
            image = (root / str(row["file_name"])).resolve()
            if image not in images:
                raise ValueError(f"{where}: file_name {row['file_name']!r} names no image in {str(root)!r}")
            found[images[image]] = _phrasings(row[key], f"{where} ({row['file_name']})")
    for p in files:
        if p in found:
            continue
        txt = p.with_suffix(".txt")
        if not txt.is_file():
            where = f" nor in {table.name}" if table is not None else f" (nor a {' / '.join(CAPTION_FILES)})"
            raise ValueError(f"image {str(p)!r} has no caption: no {txt.name} beside it{where}")
        lines = _read_text(txt).splitlines()
        found[p] = _phrasings(lines, f"caption file {str(txt)!r}")
    return found


class CaptionedFolder(FolderDataset):
    """``FolderDataset`` (same options) whose images carry captions (``read_captions``)."""

    def __init__(self, path: str | os.PathLike, size: int | Sequence[int] | None = None, center_crop: bool = True,
                 flip: bool = False, mode: str = "rgb", seed: int = 0, preload: bool = False):
        super().__init__(path, size, center_crop, flip, mode, seed, preload)
        self.caption_of = read_captions(self.root, self.files)

    def prompts(self, indices: Iterable[int], generator: torch.Generator | None = None) -> list[str]:
        return choose([self.caption_of[self.files[int(i)]] for i in indices], generator)

    def grid_prompts(self, n: int) -> list[str]:
        return self.prompts([i % len(self) for i in range(n)])
