"""Sharded data sets that need not fit in memory: WebDataset tar shards (read with the standard library's
``tarfile``; the ``webdataset`` package is not needed) and the deterministic order in which ranks and loader
workers stream them.

**Format** (WebDataset's): a shard is a plain tar file; a sample is the group of consecutive members sharing a
key (the member name up to the first dot of its file name), one member per field: ``KEY.npy`` (a float32
example, any shape, stored exactly), ``KEY.png`` / ``.jpg`` / ``.jpeg`` / ``.webp`` (an 8-bit image, mapped to
[-1, 1]), ``KEY.cls`` (the class label as text; absent: unlabeled). ``pack`` writes such shards and an
``index.json`` (sample counts per shard and the ``DataInfo``); a folder of WebDataset tars without an index is
counted once when opened.

**Order** (``reader_plan``): with W ranks and K workers per rank there are R = W K readers; reader
j = rank K + worker. Epoch e permutes the shards with a generator seeded by (seed, "shards", e); reader j
reads shards perm[j], perm[j + R], ... (each shard by exactly one reader), each in an order permuted by
(seed, "shard", e, shard). A reader's stream is the endless concatenation of its epochs; a rank's batches come
from its K readers in turn (batch n from worker n mod K). So the order is a function of (seed, W, K) alone,
and the position of a run is one integer, the batches taken so far: a resumed run skips exactly that many in
every reader (by shard counts, without decoding what it skips).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..utils import derive_seed
from .base import DataInfo, from_unit, to_unit

INDEX = "index.json"
IMAGE_FIELDS = (".png", ".jpg", ".jpeg", ".webp")


# -- reading ---------------------------------------------------------------------------------------------------


def _decode(name: str, data: bytes) -> Tensor:
    if name.endswith(".npy"):
        return torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32))
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    img = img.convert("L" if img.mode in ("1", "L", "I;16", "I") else "RGB")
    a = np.asarray(img, dtype=np.uint8)
    a = a[:, :, None] if a.ndim == 2 else a
    return to_unit(torch.from_numpy(a.copy()).permute(2, 0, 1))


def read_tar(path: str | Path) -> tuple[Tensor, Tensor]:
    """All samples of one WebDataset shard, in stored order: x (n, ...) float32 and y (n,) long (-1: no label)."""
    xs, ys = [], []
    key, x, y = None, None, -1

    def flush():
        if key is not None:
            if x is None:
                raise ValueError(f"shard {path}: sample {key!r} has no .npy or image member")
            xs.append(x)
            ys.append(y)

    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                base = m.name.rsplit("/", 1)[-1]
                stem, dot, ext = base.partition(".")
                k = m.name[: len(m.name) - len(base)] + stem
                if k != key:
                    flush()
                    key, x, y = k, None, -1
                field = "." + ext.lower() if dot else ""
                data = tar.extractfile(m).read()
                if field == ".cls":
                    y = int(data.decode().strip())
                elif field == ".npy" or field in IMAGE_FIELDS:
                    x = _decode(field, data)
            flush()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ValueError(f"shard {path} could not be read as a tar file: {e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        if str(e).startswith(f"shard {path}"):
            raise
        raise ValueError(f"shard {path}: a member could not be decoded ({e})") from None
    if not xs:
        raise ValueError(f"shard {path} holds no samples")
    shapes = {tuple(t.shape) for t in xs}
    if len(shapes) > 1:
        raise ValueError(f"shard {path}: samples of different shapes {sorted(shapes)[:3]}; pack images of one size")
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


class StreamingData:
    """A data set read shard by shard. Subclasses give ``shards`` (names), ``counts`` (samples per shard),
    ``info`` and ``read(i) -> (x, y)`` (one whole shard, in stored order)."""

    streaming = True
    shards: list[str]
    counts: list[int]
    info: DataInfo

    def __len__(self) -> int:
        return sum(self.counts)

    def read(self, i: int) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def __getitem__(self, i: int):
        raise TypeError(f"{type(self).__name__} is streamed shard by shard; it has no random access (train on it, "
                        "or read a shard with .read(i))")


class TarShards(StreamingData):
    """WebDataset tar shards in a folder (``shard-*.tar`` and ``index.json`` from ``pack``, or any ``*.tar``)."""

    def __init__(self, path: str):
        folder = Path(path)
        if not folder.is_dir():
            raise ValueError(f"shards: folder {path!r} does not exist")
        if (folder / INDEX).exists():
            try:
                index = json.loads((folder / INDEX).read_text())
                self.shards = [str(folder / s["file"]) for s in index["shards"]]
                self.counts = [int(s["count"]) for s in index["shards"]]
                i = index["info"]
                self.info = DataInfo(tuple(i["shape"]), int(i["num_classes"]), i["kind"], tuple(i["class_names"]),
                                     int(i.get("levels", 256)))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"shards: {folder / INDEX} is not a shard index ({type(e).__name__}: {e})") from None
            missing = [s for s in self.shards if not Path(s).exists()]
            if missing:
                raise ValueError(f"shards: {missing[0]} is listed in {folder / INDEX} but missing")
        else:
            self.shards = [str(p) for p in sorted(folder.glob("*.tar"))]
            if not self.shards:
                raise ValueError(f"shards: no {INDEX} and no .tar files in {path!r}")
            self.counts, labels = [], set()
            for s in self.shards:  # an index-less WebDataset folder: counted (and its labels read) once
                x, y = read_tar(s)
                self.counts.append(len(y))
                labels |= set(y.tolist())
            labels.discard(-1)
            kind = "images" if x.ndim == 4 else "points"
            self.info = DataInfo(tuple(x.shape[1:]), max(labels) + 1 if labels else 0, kind)
        self.path = str(folder)

    def read(self, i: int) -> tuple[Tensor, Tensor]:
        return read_tar(self.shards[i])

    def __repr__(self) -> str:
        return f"TarShards({self.path!r}, shards={len(self.shards)}, n={len(self)})"


# -- writing ---------------------------------------------------------------------------------------------------


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed metadata: same data, same bytes
    tar.addfile(info, io.BytesIO(data))


def pack(dataset, out: str | Path, shard_size: int, seed: int | None = 0,
         progress: Callable[[int], Any] | None = None) -> list[Path]:
    """Write ``dataset`` ((x, y) items with ``.info``) as WebDataset tar shards of ``shard_size`` samples in
    ``out`` with an ``index.json``; returns the shard paths. ``seed`` shuffles the samples across shards (None:
    stored order). 8-bit images (``info.levels == 256``) are stored as PNG, everything else as exact .npy."""
    if not (isinstance(shard_size, int) and shard_size >= 1):
        raise ValueError(f"shard size must be a positive integer, got {shard_size!r}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"shards: output folder {str(out)!r} is not empty; choose another --out")
    n = len(dataset)
    if n == 0:
        raise ValueError("shards: the dataset is empty")
    info = dataset.info
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if seed is not None else torch.arange(n)
    png = info.kind == "images" and info.levels == 256
    out.mkdir(parents=True, exist_ok=True)
    paths, entries = [], []
    for s, start in enumerate(range(0, n, shard_size)):
        idx = order[start: start + shard_size].tolist()
        path = out / f"shard-{s:06d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in idx:
                x, y = dataset[i]
                x = torch.as_tensor(x, dtype=torch.float32)
                key = f"{i:09d}"
                if png:
                    from PIL import Image

                    a = from_unit(x).permute(1, 2, 0).numpy()
                    buf = io.BytesIO()
                    Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).save(buf, format="PNG")
                    _add(tar, key + ".png", buf.getvalue())
                else:
                    buf = io.BytesIO()
                    np.save(buf, x.numpy(), allow_pickle=False)
                    _add(tar, key + ".npy", buf.getvalue())
                if int(y) >= 0:
                    _add(tar, key + ".cls", str(int(y)).encode())
                if progress is not None:
                    progress(1)
        paths.append(path)
        entries.append({"file": path.name, "count": len(idx)})
    (out / INDEX).write_text(json.dumps({"format": "webdataset", "shards": entries, "info": info.to_dict()},
                                        indent=2) + "\n")
    return paths


# -- the order of a stream -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReaderPlan:
    """Which shards reader ``reader`` (of ``readers``) reads in each epoch, and in which order."""

    counts: tuple[int, ...]
    seed: int
    reader: int
    readers: int

    def shards(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(derive_seed(self.seed, "shards", epoch))
        return torch.randperm(len(self.counts), generator=g)[self.reader:: self.readers].tolist()

    def order(self, epoch: int, shard: int) -> Tensor:
        g = torch.Generator().manual_seed(derive_seed(self.seed, "shard", epoch, shard))
        return torch.randperm(self.counts[shard], generator=g)

    def locate(self, skip: int) -> tuple[int, int, int]:
        """(epoch, index in that epoch's shard list, offset in the shard) after ``skip`` samples, from the
        counts alone (nothing is read)."""
        epoch = 0
        while True:
            shards = self.shards(epoch)
            length = sum(self.counts[s] for s in shards)
            if skip < length:
                for k, s in enumerate(shards):
                    if skip < self.counts[s]:
                        return epoch, k, skip
                    skip -= self.counts[s]
            skip -= length
            epoch += 1


def reader_stream(data: StreamingData, plan: ReaderPlan, batch: int, skip_batches: int = 0) -> Iterator[
        tuple[Tensor, Tensor]]:
    """Endless batches of ``batch`` samples from one reader, after skipping ``skip_batches`` of them."""
    epoch, k, offset = plan.locate(skip_batches * batch)
    xs, ys, have = [], [], 0
    while True:
        shards = plan.shards(epoch)
        while k < len(shards):
            s = shards[k]
            x, y = data.read(s)
            if len(y) != plan.counts[s]:
                raise ValueError(f"shard {data.shards[s]} holds {len(y)} samples, its index says {plan.counts[s]}")
            perm = plan.order(epoch, s)[offset:]
            offset = 0
            while len(perm):
                take = perm[: batch - have]
                perm = perm[len(take):]
                xs.append(x[take])
                ys.append(y[take])
                have += len(take)
                if have == batch:
                    yield torch.cat(xs), torch.cat(ys)
                    xs, ys, have = [], [], 0
            k += 1
        epoch, k = epoch + 1, 0


def reader_batches(n: int, worker: int, workers: int) -> int:
    """How many of a rank's first n batches came from worker ``worker`` of ``workers`` (batch i: worker i mod K)."""
    return n // workers + (1 if worker < n % workers else 0)


def check_readers(data: StreamingData, readers: int) -> None:
    if len(data.shards) < readers:
        raise ValueError(f"{len(data.shards)} shard(s) cannot feed {readers} readers (ranks x data.workers): "
                         f"pack the data into at least {readers} shards (scorediff data pack --shard-size)")
