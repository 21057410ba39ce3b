"""The data stream of a run: an endless, exactly resumable sequence of batches.

Epoch e is a permutation from a generator seeded by (seed, e); the stream's state is one integer, the
position in the concatenation of those permutations, so a resumed run continues the exact data order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import distributed as ddp
from ..utils import derive_seed
from .streaming import ShardBatches

__all__ = ["Batches", "derive_seed", "make_batches"]


class Batches:
    """An endless stream of batches: epoch e is a permutation from a generator seeded by (seed, e).

    The state is one integer, ``position``, so a resumed run continues the exact data order. Under DDP
    every rank computes the same global batch and takes its own contiguous slice of it.
    """

    def __init__(self, dataset, batch_size: int, seed: int, world: ddp.World, device: torch.device):
        if batch_size % world.world_size:
            raise ValueError(f"optim.batch_size {batch_size} must be divisible by the {world.world_size} DDP ranks")
        self.n = len(dataset)
        if self.n == 0:
            raise ValueError("the dataset is empty")
        self.global_batch, self.local_batch = batch_size, batch_size // world.world_size
        self.seed, self.rank, self.device = seed, world.rank, device
        self.position = 0
        self._epoch, self._perm = -1, None
        # Array-backed data (every toy set, digits, MNIST, npy) lives on the device as one tensor; a folder
        # of images small enough does too, after one pass of decoding.
        self.dataset = dataset
        self.preloaded = True
        if torch.is_tensor(getattr(dataset, "x", None)) and torch.is_tensor(getattr(dataset, "y", None)):
            dtype = torch.float32 if dataset.x.is_floating_point() else torch.long  # token ids stay integers
            self.x, self.y = dataset.x.to(device, dtype), dataset.y.to(device)
        else:
            item_bytes = torch.as_tensor(dataset[0][0]).numel() * 4
            self.preloaded = self.n * item_bytes <= 2**31
            if self.preloaded:
                xs, ys = self._load(range(self.n))
                self.x, self.y = xs.to(device), ys.to(device)

    def _load(self, indices) -> tuple[Tensor, Tensor]:
        items = [self.dataset[int(i)] for i in indices]
        x = torch.stack([torch.as_tensor(it[0], dtype=torch.float32) for it in items])
        return x, torch.as_tensor([int(it[1]) for it in items], dtype=torch.long)

    def _indices(self, start: int, count: int) -> Tensor:
        out = []
        while count > 0:
            epoch, offset = divmod(start, self.n)
            if epoch != self._epoch:
                g = torch.Generator().manual_seed(derive_seed(self.seed, "data", epoch))
                self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
            take = min(count, self.n - offset)
            out.append(self._perm[offset: offset + take])
            start, count = start + take, count - take
        return torch.cat(out)

    def next(self) -> tuple[Tensor, Tensor]:
        idx = self._indices(self.position, self.global_batch)
        idx = idx[self.rank * self.local_batch: (self.rank + 1) * self.local_batch]
        self.position += self.global_batch
        self.last_indices = idx  # the examples of this batch (their captions, for text-conditioned runs)
        if self.preloaded:
            dev_idx = idx.to(self.x.device)
            return self.x[dev_idx], self.y[dev_idx]
        x, y = self._load(idx)
        return x.to(self.device, non_blocking=True), y.to(self.device)


def make_batches(dataset, batch_size: int, seed: int, world: ddp.World, device: torch.device, workers: int = 0):
    """The batch stream of a run: ``Batches`` for a data set with random access, ``streaming.ShardBatches``
    for one streamed shard by shard (``data.workers`` loader processes per rank)."""
    if getattr(dataset, "streaming", False):
        return ShardBatches(dataset, batch_size, seed, world, device, workers)
    return Batches(dataset, batch_size, seed, world, device)
