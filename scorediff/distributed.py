"""Scale-out with PyTorch DistributedDataParallel under ``torchrun`` (gloo on CPU, NCCL on GPU).

One code path: ``setup()`` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); without
it the run is a world of one and nothing here does anything. Only rank 0 writes files, logs and bars.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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
