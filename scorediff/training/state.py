"""The resumable state of a training run and its checkpoint: weights, EMA, optimizer, GradScaler, data
position and every random generator, written as safetensors + JSON (``checkpoint.save_files``).

Restoring all of it makes a stopped and resumed run bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import distributed as ddp
from ..runs import checkpoint as ckpt
from .batches import Batches, derive_seed
from .ema import EMA


@dataclass
class TrainingState:
    """References to everything a checkpoint holds; ``save`` and ``load`` move it to and from a run folder."""

    net: nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    batches: Batches
    gen_loss: torch.Generator  # times and noise of the loss (and label dropout)
    gen_aug: torch.Generator  # data augmentation
    world: ddp.World
    device: torch.device
    seed: int
    objective: Any = None  # the loss; a distillation objective has state of its own (state / load_state)
    extra: dict = field(default_factory=dict)  # state.json of the last checkpoint loaded

    def _rng_tensors(self) -> dict[str, Tensor]:
        """Every rank's generator states, gathered to every rank (rank 0 writes them)."""
        states = {
            "loss": ckpt.generator_state(self.gen_loss),
            "augment": ckpt.generator_state(self.gen_aug),
            "global": torch.get_rng_state(),  # dropout
        }
        if self.device.type == "cuda":
            states["global_cuda"] = torch.cuda.get_rng_state(self.device)
        out = {}
        for name, state in states.items():
            for r, s in enumerate(ddp.all_gather_bytes(state, self.world)):
                out[f"rng.{name}.rank{r}"] = s
        return out

    def record(self, step: int, extra: dict | None = None) -> dict:
        """The JSON part of a checkpoint (state.json) but for the optimizer's, which the format decides."""
        return {
            "objective": None,
            "step": step,
            "data_position": self.batches.position,
            "optimizer": None,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "world_size": self.world.world_size,
            "ema_decay": self.ema.decay,
            "ema": self.ema.state(),  # the EMA warm-up's bookkeeping (exact resume)
            **(extra or {}),
        }

    def save(self, out: Path, step: int, extra: dict | None = None) -> None:
        """Save the state at ``step`` atomically (every rank calls; rank 0 writes); ``extra``: more JSON-able
        entries of state.json (the trainer's elapsed time), given back as ``self.extra`` by ``load``."""
        rng = self._rng_tensors()
        if not self.world.is_main:
            ddp.barrier(self.world)
            return
        opt_tensors, opt_info = ckpt.optimizer_state(self.optimizer)
        obj_tensors, obj_info = self.objective.state() if hasattr(self.objective, "state") else ({}, None)
        state = {**self.record(step, extra), "objective": obj_info, "optimizer": opt_info}
        ckpt.save_files(
            out,
            {"model.safetensors": self.net.state_dict(), "ema.safetensors": self.ema.model.state_dict(),
             "state.safetensors": {**opt_tensors, **rng, **{f"objective.{k}": v for k, v in obj_tensors.items()}}},
            {"state.json": state},
            metadata={"step": str(step)},
        )
        ddp.barrier(self.world)

    def load_weights(self, out: Path, state: dict) -> None:
        ckpt.load_weights(self.net, out / "model.safetensors")
        ckpt.load_weights(self.ema.model, out / "ema.safetensors")

    def load_optimizer(self, state: dict, tensors: dict[str, Tensor]) -> None:
        if state.get("sharded"):
            raise ValueError("it was written by a sharded run (dist.strategy \"fsdp\"): resume it under torchrun "
                             "with dist.strategy \"fsdp\" on two or more ranks")
        ckpt.load_optimizer_state(self.optimizer, {k: v.to(self.device) for k, v in tensors.items()
                                                   if k.startswith("optim.")}, state["optimizer"])

    def load(self, out: Path) -> int:
        """Restore the checkpoint in ``out`` (already recovered by the writer); returns its step."""
        state = ckpt.read_json(out / "state.json")
        self.extra = state
        self.load_weights(out, state)
        tensors = ckpt.read_tensors(out / "state.safetensors")
        try:
            self.load_optimizer(state, tensors)
            if self.scaler and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            step = int(state["step"])
            self.batches.position = int(state["data_position"])
            self.ema.load_state(state.get("ema"), step)
            if hasattr(self.objective, "load_state"):
                self.objective.load_state({k[len("objective."):]: v.to(self.device) for k, v in tensors.items()
                                           if k.startswith("objective.")}, state.get("objective"))
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"checkpoint {str(out)!r}: state.json / state.safetensors do not match the run "
                             f"({type(e).__name__}: {e})") from None
        r = self.world.rank
        if state.get("world_size", 1) != self.world.world_size and self.world.is_main:
            print(f"resuming a {state.get('world_size')}-process run on {self.world.world_size} processes: "
                  "the data order continues exactly, the per-rank noise streams are reseeded", file=sys.stderr)
        if f"rng.loss.rank{r}" in tensors:
            self.gen_loss.set_state(tensors[f"rng.loss.rank{r}"])
            self.gen_aug.set_state(tensors[f"rng.augment.rank{r}"])
            torch.set_rng_state(tensors[f"rng.global.rank{r}"])
            if self.device.type == "cuda" and f"rng.global_cuda.rank{r}" in tensors:
                torch.cuda.set_rng_state(tensors[f"rng.global_cuda.rank{r}"], self.device)
        else:
            self.gen_loss.manual_seed(derive_seed(self.seed, "loss", r, "resume", step))
            self.gen_aug.manual_seed(derive_seed(self.seed, "augment", r, "resume", step))
        return step
