"""Checkpoints of a sharded (FSDP2) run: ``torch.distributed.checkpoint`` (DCP) shards for an exact resume,
consolidated into the usual ``model.safetensors`` / ``ema.safetensors`` at every save.

A save writes, in this order:

1. ``sharded/step_NNNNNN/``: every rank writes its shard of the weights, the EMA and the AdamW moments
   (DCP's ``FileSystemWriter``: ``__<rank>_0.distcp`` files and a ``.metadata`` index); the folder must be
   on a file system every node sees;
2. the full weights, gathered shard by shard onto rank 0's CPU (``get_model_state_dict`` with
   ``full_state_dict=True, cpu_offload=True``), written with the RNG states and ``state.json`` (which names the
   shard folder) by the same atomic journal as an unsharded checkpoint (``checkpoint.save_files``);
3. older ``sharded/step_*`` folders are removed.

So consolidation is automatic: every reader of a run folder (``scorediff sample``, ``eval``, ``export``,
``load_run``) sees an ordinary run, and a crash between 1 and 2 leaves the previous checkpoint valid (the
orphan shard folder is removed at the next save). Resuming reads the shard folder with DCP, which reshards
on load, so a run may resume on another number of ranks (the data order continues exactly; the per-rank noise
streams are then reseeded, as for DDP).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch.distributed.checkpoint as dcp
from torch import Tensor
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from .. import distributed as ddp
from ..runs import checkpoint as ckpt
from .state import TrainingState

SHARDED = "sharded"


class ShardedState(TrainingState):
    """``TrainingState`` whose weights and optimizer moments are saved and loaded as DCP shards."""

    def _sharded(self) -> dict:
        return {"model": get_model_state_dict(self.net), "ema": get_model_state_dict(self.ema.model),
                "optim": get_optimizer_state_dict(self.net, self.optimizer)}

    def save(self, out: Path, step: int, extra: dict | None = None) -> None:
        rel = f"{SHARDED}/step_{step:06d}"
        dcp.save(self._sharded(), checkpoint_id=str(out / rel))
        full = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model, ema = get_model_state_dict(self.net, options=full), get_model_state_dict(self.ema.model, options=full)
        rng = self._rng_tensors()
        if self.world.is_main:
            obj_tensors, obj_info = self.objective.state() if hasattr(self.objective, "state") else ({}, None)
            state = {**self.record(step, extra), "objective": obj_info, "strategy": "fsdp", "sharded": rel}
            ckpt.save_files(
                out,
                {"model.safetensors": model, "ema.safetensors": ema,
                 "state.safetensors": {**rng, **{f"objective.{k}": v for k, v in obj_tensors.items()}}},
                {"state.json": state},
                metadata={"step": str(step)},
            )
            for old in (out / SHARDED).iterdir():
                if old.name != Path(rel).name:
                    shutil.rmtree(old, ignore_errors=True)
        ddp.barrier(self.world)

    def load_weights(self, out: Path, state: dict) -> None:
        rel = state.get("sharded")
        if rel is None:
            raise ValueError(f"checkpoint {str(out)!r} was written by an unsharded run (dist.strategy \"ddp\"); "
                             "resume it with dist.strategy \"ddp\"")
        if not (out / rel / ".metadata").exists():
            raise FileNotFoundError(f"cannot resume {str(out)!r}: its sharded checkpoint {str(out / rel)!r} is missing")
        sd = self._sharded()
        dcp.load(sd, checkpoint_id=str(out / rel))
        set_model_state_dict(self.net, sd["model"])
        set_model_state_dict(self.ema.model, sd["ema"])
        set_optimizer_state_dict(self.net, self.optimizer, sd["optim"])

    def load_optimizer(self, state: dict, tensors: dict[str, Tensor]) -> None:
        pass  # loaded with the weights, from the shards
