"""The data record every dataset carries (``DataInfo``), in-memory datasets and the uint8 <-> [-1, 1] maps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about a dataset: one example's shape, the label count, the kind."""

    shape: tuple[int, ...]
    num_classes: int = 0  # 0: unlabeled (every y is -1)
    kind: str = "points"  # "points" | "images" | "series" (C, L) | "video" (C, T, H, W)
    class_names: tuple[str, ...] = field(default=())
    levels: int = 256  # images: the quantization levels of the stored pixels (8-bit: 256; digits: 17)
    # series: {"mean": [...], "std": [...]} per channel, x_model = (x - mean) / std (undone on output); None: none
    normalization: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"shape": list(self.shape), "num_classes": self.num_classes, "kind": self.kind,
               "class_names": list(self.class_names), "levels": self.levels}
        if self.normalization is not None:
            out["normalization"] = {k: list(v) for k, v in self.normalization.items()}
        return out


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




def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _check_n(n: int) -> int:
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return int(n)

