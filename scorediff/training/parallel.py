"""How the network is spread over the ranks: PyTorch's DistributedDataParallel or FSDP2, per block
activation checkpointing, and the few places where the loop must know which one it has.

``dist.strategy`` (config):
- ``"ddp"``: every rank holds the whole network and optimizer; gradients are all-reduced
  (``torch.nn.parallel.DistributedDataParallel``).
- ``"fsdp"``: fully sharded data parallel, FSDP2 (``torch.distributed.fsdp.fully_shard``; Zhao et al. 2023,
  "PyTorch FSDP"): each block (U-Net ``ResBlock`` / ``Attention``, ``DiTBlock``) and then the whole network is
  sharded along dim 0 over a 1-D device mesh of all ranks; a block's parameters are all-gathered just before
  its forward and backward and freed after, gradients are reduce-scattered, and each rank keeps only its shard of
  the weights, the EMA and the AdamW moments. Checkpoints are sharded (``training/sharded.py``).

``dist.activation_checkpointing`` recomputes each block's activations in the backward pass
(``torch.utils.checkpoint``, non-reentrant; Chen et al. 2016, "Training deep nets with sublinear memory cost")
instead of keeping them: about one more forward pass of compute for activation memory of one block.

On one process (no torchrun) both strategies train the plain network; only the checkpoint format follows the
strategy.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint

from .. import distributed as ddp
from ..nets.dit import DiTBlock
from ..nets.unet import Attention, ResBlock


def blocks(net: nn.Module) -> list[nn.Module]:
    """The network's repeated blocks, in order: the unit of sharding and of activation checkpointing."""

    return [m for m in net.modules() if isinstance(m, (ResBlock, Attention, DiTBlock))]


def checkpoint_blocks(net: nn.Module) -> int:
    """Recompute each block's activations in backward (activation checkpointing); returns the block count.

    The block's own ``forward`` is wrapped on the instance, so module hooks (FSDP2's all-gather) still run
    around it and a recomputation sees the same unsharded parameters. RNG state (dropout) is replayed.
    """
    found = blocks(net)
    for m in found:
        m.forward = functools.partial(checkpoint, m.forward, use_reentrant=False)
    return len(found)


def wrap(net: nn.Module, ema_model: nn.Module, world: ddp.World, device: torch.device, strategy: str,
         activation_checkpointing: bool = False) -> nn.Module:
    """The module the loop trains through; under FSDP ``net`` and ``ema_model`` are sharded in place.

    Call before the optimizer is built (FSDP2 replaces the parameters by sharded DTensors).
    """
    if activation_checkpointing:
        checkpoint_blocks(net)
    if not world.distributed:
        return net
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(net, device_ids=ids)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world.world_size,))
    for module in (net, ema_model):
        for block in blocks(module):
            fully_shard(block, mesh=mesh)
        fully_shard(module, mesh=mesh)
    return net


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


@contextlib.contextmanager
def _fsdp_no_sync(module) -> Iterator[None]:
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def no_sync(train_net: nn.Module):
    """A context in which backward accumulates gradients locally, without the cross-rank reduction
    (gradient accumulation: reduce once, on the last micro-batch)."""
    train_net = getattr(train_net, "_orig_mod", train_net)  # under torch.compile: the compiled module
    if hasattr(train_net, "no_sync"):  # DDP
        return train_net.no_sync()
    if is_sharded(train_net):
        return _fsdp_no_sync(train_net)
    return contextlib.nullcontext()


def replicated(value: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a possibly replicated DTensor (FSDP's gradient norm); no copy, no sync."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def first_nonfinite(named: Iterable[tuple[str, torch.Tensor]], world: ddp.World) -> str | None:
    """The name of the first parameter with a NaN / inf on any rank (each rank checks its own shard), the
    same answer on every rank (one all-reduce), or None."""
    bad = next((name for name, p in named if not torch.isfinite(p.to_local() if hasattr(p, "to_local") else p).all()),
               None)
    if world.distributed:
        flag = torch.tensor([float(bad is not None)])
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if float(flag) > 0 and bad is None:
            bad = "a parameter shard on another rank"
    return bad
