"""The batch stream of a run on sharded data (``scorediff.data.shards``): each rank's K loader workers
(``data.workers``; 0: read in the training process) each read their own shards, and the rank takes their
batches in turn. Same interface and state as ``batches.Batches``: ``next()`` and one integer ``position``
(examples of the global stream consumed), saved in the checkpoint, so a run resumed mid-epoch continues the
exact order (``data.shards`` explains the order).

Workers run ``torch.utils.data.DataLoader`` processes with pinned memory on CUDA; a resumed stream rotates the
workers' roles so that the next batch still comes from the reader whose turn it is.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .. import distributed as ddp
from ..data.shards import ReaderPlan, StreamingData, check_readers, reader_batches, reader_stream


class _RankReaders(IterableDataset):
    """The K readers of one rank; in a DataLoader, worker w plays reader (w + first) mod K."""

    def __init__(self, data: StreamingData, seed: int, rank: int, workers: int, batch: int, taken: int):
        self.data, self.seed, self.rank, self.workers, self.batch, self.taken = data, seed, rank, workers, batch, taken
        self.world_readers = 0  # set by ShardBatches

    def reader(self, k: int) -> Iterator[tuple[Tensor, Tensor]]:
        plan = ReaderPlan(tuple(self.data.counts), self.seed, self.rank * self.workers + k, self.world_readers)
        return reader_stream(self.data, plan, self.batch, reader_batches(self.taken, k, self.workers))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        info = get_worker_info()
        if info is not None:  # one DataLoader worker: one reader
            torch.set_num_threads(1)
            yield from self.reader((info.id + self.taken) % self.workers)
            return
        streams = [self.reader(k) for k in range(self.workers)]
        n = self.taken
        while True:  # in-process: the readers in turn
            yield next(streams[n % self.workers])
            n += 1


class ShardBatches:
    """Batches of a streamed data set; ``position`` (settable, for resume) counts global examples consumed."""

    preloaded = False

    def __init__(self, dataset: StreamingData, batch_size: int, seed: int, world: ddp.World, device: torch.device,
                 workers: int = 0):
        if batch_size % world.world_size:
            raise ValueError(f"optim.batch_size {batch_size} must be divisible by the {world.world_size} DDP ranks")
        self.dataset, self.seed, self.world, self.device = dataset, seed, world, device
        self.global_batch, self.local_batch = batch_size, batch_size // world.world_size
        self.workers = int(workers)
        self.readers = max(1, self.workers)
        check_readers(dataset, world.world_size * self.readers)
        self._position, self._it = 0, None

    @property
    def position(self) -> int:
        return self._position

    @position.setter
    def position(self, value: int) -> None:
        if value % self.global_batch:
            raise ValueError(f"data position {value} is not a whole number of batches of {self.global_batch}")
        self._position, self._it = int(value), None

    def _start(self) -> Iterator[tuple[Tensor, Tensor]]:
        src = _RankReaders(self.dataset, self.seed, self.world.rank, self.readers, self.local_batch,
                           self._position // self.global_batch)
        src.world_readers = self.world.world_size * self.readers
        if self.workers == 0:
            return iter(src)
        # forkserver: workers start from a clean process, not a fork of this one (its process-group threads,
        # an earlier run's loader); they read files only, so nothing of this process needs to be inherited
        return iter(DataLoader(src, batch_size=None, num_workers=self.workers, pin_memory=self.device.type == "cuda",
                               persistent_workers=True, prefetch_factor=4, multiprocessing_context="forkserver",
                               # the loader's worker seeds come from its own generator, not the global RNG
                               # (which a resume restores for dropout and must not advance here)
                               generator=torch.Generator().manual_seed(self.seed)))

    def next(self) -> tuple[Tensor, Tensor]:
        if self._it is None:
            self._it = self._start()
        x, y = next(self._it)
        self._position += self.global_batch
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
