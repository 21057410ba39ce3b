"""Work spread over the processes ``torchrun`` starts (one or many nodes; gloo on CPU, NCCL on GPU):
joining the process group, the few collectives the library uses, and splitting a job of numbered blocks
over the ranks so that the result does not depend on how many there are.

One code path: ``setup()`` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); without
it the run is a world of one and nothing here does anything. Only rank 0 writes files, logs and bars.

Block splitting (sampling, evaluation): a job of n blocks, block i seeded from (seed, i) alone, is computed
by rank i mod W and gathered to rank 0 in block order; so W ranks give exactly the set one process gives,
with no block drawn twice.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


DEVICES = "auto, cpu, cuda, cuda:N, mps"


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device named by ``device`` ("auto": cuda if available); ValueError if it cannot be used here."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} unknown; expected one of {DEVICES}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: no CUDA device is available to this torch build; use cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: MPS is not available here; use cpu or auto")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r} not supported; expected one of {DEVICES}")
    return dev


def setup(device: str = "auto") -> tuple[World, torch.device]:
    """Join the process group torchrun describes (if any) and pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank if world_size > 1 else torch.cuda.current_device())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    world = World(rank, world_size, local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", init_method="env://")
        world.initialized_here = True
    elif dist.is_initialized():
        world = World(dist.get_rank(), dist.get_world_size(), local_rank)
    return world, dev


def teardown(world: World) -> None:
    if world.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def all_mean(value: torch.Tensor, world: World) -> torch.Tensor:
    """Mean of a tensor over ranks (identity on one process)."""
    if world.distributed:
        value = value.clone()
        dist.all_reduce(value)
        value /= world.world_size
    return value


def all_gather_bytes(data: torch.Tensor, world: World) -> list[torch.Tensor]:
    """Gather a 1-D uint8 tensor (e.g. an RNG state) from every rank; equal lengths on every rank."""
    if not world.distributed:
        return [data]
    # gloo and nccl move uint8 fine, but nccl needs it on the GPU
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    src = data.to(dev)
    out = [torch.empty_like(src) for _ in range(world.world_size)]
    dist.all_gather(out, src)
    return [o.cpu() for o in out]


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def my_blocks(n_blocks: int, world: World) -> range:
    """The blocks this rank computes: i = rank, rank + W, ..."""
    return range(world.rank, n_blocks, world.world_size)


def gather_blocks(results: dict[int, Any], n_blocks: int, world: World) -> list[Any] | None:
    """Every rank's ``{block: result}`` gathered to rank 0 as a list in block order (None on other ranks).
    Tensors travel on the CPU (``gather_object``: any picklable result, gloo and NCCL alike)."""
    if not world.distributed:
        return [results[i] for i in range(n_blocks)]
    parts: list[dict[int, Any]] | None = [{} for _ in range(world.world_size)] if world.is_main else None
    dist.gather_object(results, parts, dst=0)
    if not world.is_main:
        return None
    merged = {k: v for part in parts for k, v in part.items()}
    missing = [i for i in range(n_blocks) if i not in merged]
    if missing:  # a programming error, never user input: every block must have been computed once
        raise RuntimeError(f"blocks {missing[:5]} were computed by no rank")
    return [merged[i] for i in range(n_blocks)]


def map_blocks(fn: Callable[[int], Any], n_blocks: int, world: World) -> list[Any] | None:
    """``[fn(0), ..., fn(n_blocks - 1)]`` on rank 0 (None elsewhere), each block computed by one rank."""
    return gather_blocks({i: fn(i) for i in my_blocks(n_blocks, world)}, n_blocks, world)


def world() -> World:
    """This process's place (rank, size) in the process group, if one was joined; else a world of one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return World()
