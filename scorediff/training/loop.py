"""The training loop: one loop for every process x parameterization x loss x network.

AdamW with a linear learning-rate warm-up (as in DDPM, Ho et al. 2020, Appendix B), global gradient-norm
clipping, an EMA of the weights, autocast (bf16, or fp16 with a GradScaler), gradient accumulation,
periodic sample grids from the EMA model, a JSONL metrics log and a progress bar. Scale-out is DDP under
``torchrun``; one code path, only rank 0 writes.

Randomness comes only from explicit, saved sources, so a run stopped and resumed gives bit-identical
weights: the data order (a permutation per epoch from a generator seeded by (seed, epoch), plus a
position in the stream), the loss's times and noise (a per-rank generator), the augmentation (another),
and the global torch RNG (dropout).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import parameterizations, processes
from ..nets import NULL_LABEL
from ..parameterizations import NetDenoiser
from . import checkpoint as ckpt
from . import config as config_mod
from . import ddp
from .ema import EMA, decay_from


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN / inf loss (or gradient norm); the last good checkpoint is kept."""


def derive_seed(seed: int, *names: object) -> int:
    """A 63-bit seed for one named random stream, e.g. derive_seed(0, "loss", rank)."""
    digest = hashlib.sha256("/".join(str(v) for v in (seed, *names)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def info_dict(info: Any) -> dict:
    """A dataset's ``info`` as a plain JSON-able dict."""
    if hasattr(info, "to_dict"):
        info = info.to_dict()
    elif is_dataclass(info):
        info = asdict(info)
    out = dict(info)
    for k, v in out.items():
        if isinstance(v, tuple):
            out[k] = list(v)
    return out


# -- components built from a config ------------------------------------------------------------------


@dataclass
class Components:
    dataset: Any
    info: dict
    net: nn.Module
    process: processes.Process
    param: parameterizations.Parameterization
    loss: Any


def build_net(cfg: dict, info: dict) -> nn.Module:
    """The network of a config (``net.preset`` or ``net.config`` with ``net.overrides``)."""
    from .. import nets

    ncfg = cfg["net"]
    spec = ncfg["config"] if ncfg["config"] is not None else ncfg["preset"]
    overrides = dict(ncfg["overrides"])
    if ncfg["class_conditional"]:
        num_classes = info.get("num_classes") or 0
        if num_classes < 1:
            raise ValueError(f"net.class_conditional is set but data {cfg['data']['name']!r} has no classes")
        overrides.setdefault("num_classes", num_classes)
    return nets.make(spec, shape=info["shape"], **overrides)


def build_process_param(cfg: dict) -> tuple[processes.Process, parameterizations.Parameterization]:
    process = processes.make(cfg["process"]["name"], **cfg["process"]["options"])
    param = parameterizations.make(cfg["parameterization"]["name"], **cfg["parameterization"]["options"])
    return process, param


def check_sampler(cfg: dict) -> None:
    """Fail now, not at the first sample grid hours later, on a bad sampler name or option."""
    from ..samplers import options_of

    name, opts = cfg["sample"]["sampler"], cfg["sample"]["options"]
    allowed = options_of(name)  # raises for an unknown sampler
    bad = sorted(set(opts) - set(allowed) - {"schedule", "schedule_options"})
    if bad:
        raise ValueError(f"sampler '{name}': unknown option(s) {', '.join(bad)}; allowed: {', '.join(sorted(allowed))}")


def build(cfg: dict) -> Components:
    """Build every component of a config; any bad name or option raises ValueError before training."""
    from .. import data, distill, losses

    process, param = build_process_param(cfg)
    if cfg["loss"]["name"] in distill.OBJECTIVES:  # a few-step objective (consistency training) in place of a loss
        loss = distill.make(cfg["loss"]["name"], process, param, int(cfg["optim"]["steps"]), **cfg["loss"]["options"])
    else:
        loss = losses.make(cfg["loss"]["name"], process, param, **cfg["loss"]["options"])
    check_sampler(cfg)
    try:
        dataset = data.make(cfg["data"]["name"], **cfg["data"]["options"])
    except TypeError as e:  # a required option missing, e.g. a folder's path
        raise ValueError(f"data {cfg['data']['name']!r}: {e}; set it with --set data.options.KEY=VALUE") from None
    info = info_dict(dataset.info)
    net = build_net(cfg, info)
    return Components(dataset, info, net, process, param, loss)


# -- the data stream -----------------------------------------------------------------------------------


class Batches:
    """An endless stream of batches: epoch e is a permutation from a generator seeded by (seed, e).

    The state is one integer, the position in the concatenated stream of permutations, so a resumed
    run continues the exact data order. Under DDP every rank computes the same global batch and takes
    its own contiguous slice of it.
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
            self.x, self.y = dataset.x.to(device, torch.float32), dataset.y.to(device)
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
        if self.preloaded:
            dev_idx = idx.to(self.x.device)
            return self.x[dev_idx], self.y[dev_idx]
        x, y = self._load(idx)
        return x.to(self.device, non_blocking=True), y.to(self.device)


# -- the trainer ------------------------------------------------------------------------------------------


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class _StopSignals:
    """SIGTERM / SIGINT set a flag; the loop saves a checkpoint at the end of the step and exits cleanly."""

    def __init__(self):
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.received = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


class Trainer:
    """Train a config into a run folder. ``Trainer(config, out).train()``; see ``train`` for the arguments."""

    def __init__(self, config: dict, out: str | Path, resume: bool = False, components: Components | None = None):
        self.world, self.device = ddp.setup(config.get("device", "auto"))
        self.cfg = cfg = config_mod.resolve(config)
        if cfg["threads"] is not None:
            torch.set_num_threads(cfg["threads"])
        self.out = Path(out)
        self.is_main = self.world.is_main
        resuming = resume and ckpt.has_checkpoint(self.out)
        if not resuming and (self.out / "state.json").exists():
            raise ValueError(
                f"run folder {str(self.out)!r} already holds a checkpoint; pass --resume to continue it "
                "or choose another folder with --out"
            )
        seed = cfg["seed"]
        # The initial weights come from the seed (identical on every rank; DDP broadcasts rank 0's anyway).
        torch.manual_seed(seed)
        c = components or build(cfg)
        self.components = c
        self.info, self.process, self.param = c.info, c.process, c.param
        self.loss_fn = c.loss
        self.net = c.net.to(self.device)
        self.kind = self.info.get("kind", "images" if len(self.info.get("shape", ())) == 3 else "points")
        self.shape = tuple(self.info["shape"])
        self._check_forward()
        o = cfg["optim"]
        self.optimizer = torch.optim.AdamW(
            self.net.parameters(), lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"], weight_decay=o["weight_decay"]
        )
        self.ema = EMA(self.net, decay_from(cfg["ema"]["decay"], cfg["ema"]["half_life_steps"]))
        self.precision = cfg["precision"]
        use_scaler = self.precision == "fp16"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler) if use_scaler else None
        if self.world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_net: nn.Module = DistributedDataParallel(self.net, device_ids=ids)
        else:
            self.train_net = self.net
        self.denoiser = NetDenoiser(self.train_net, self.process, self.param)
        self.batches = Batches(c.dataset, o["batch_size"], seed, self.world, self.device)
        r = self.world.rank
        self.gen_loss = torch.Generator(self.device).manual_seed(derive_seed(seed, "loss", r))
        self.gen_aug = torch.Generator(self.device).manual_seed(derive_seed(seed, "augment", r))
        torch.manual_seed(derive_seed(seed, "global", r))  # dropout
        self.step = 0
        self.last_checkpoint_step: int | None = None
        self.last_sample_path: Path | None = None
        self.stopped_by: str | None = None
        self._tb = None
        self._signals = _StopSignals()
        if resuming:
            self._load_checkpoint()
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            ckpt.write_json_atomic(self.out / "config.json", cfg)
            ckpt.write_json_atomic(self.out / "info.json", {
                "data": self.info, "parameters": sum(p.numel() for p in self.net.parameters()),
                "world_size": self.world.world_size,
            })

    # -- setup helpers -------------------------------------------------------------------------------------
    def _check_forward(self) -> None:
        """One tiny forward pass so that a net that does not fit the data fails now, with a clear message."""
        x = torch.zeros((2, *self.shape), device=self.device)
        cond = self._cond(torch.zeros(2, dtype=torch.long, device=self.device))
        try:
            with torch.no_grad():
                out = NetDenoiser(self.net, self.process, self.param).raw(x, torch.full((2,), 0.5 * self.process.t_max,
                                                                                      device=self.device), **cond)
        except (RuntimeError, ValueError) as e:
            raise ValueError(f"network does not fit data of shape {self.shape}: {e}") from None
        if out.shape != x.shape:
            raise ValueError(f"network output shape {tuple(out.shape[1:])} differs from the data shape {self.shape}")

    def _drop(self, y: Tensor) -> Tensor:
        """Classifier-free guidance training (Ho & Salimans 2022): each label becomes the null label with
        probability ``net.label_dropout``, drawn from the loss generator (so resume stays exact)."""
        p = self.cfg["net"]["label_dropout"]
        if p <= 0 or not self.cfg["net"]["class_conditional"]:
            return y
        keep = torch.rand(y.shape, generator=self.gen_loss, device=self.gen_loss.device) >= p
        return torch.where(keep.to(y.device), y, torch.full_like(y, NULL_LABEL))

    def _cond(self, y: Tensor | None) -> dict:
        return {"y": y} if (self.cfg["net"]["class_conditional"] and y is not None) else {}

    def lr_at(self, step: int) -> float:
        """Linear warm-up from lr / warmup_steps to lr over the first warmup_steps steps, then constant."""
        o = self.cfg["optim"]
        w = int(o["warmup_steps"])
        return o["lr"] * min(1.0, (step + 1) / w) if w > 0 else o["lr"]

    # -- one optimizer step --------------------------------------------------------------------------------
    def _augment(self, x: Tensor) -> Tensor:
        if self.cfg["data"]["hflip"] and x.ndim >= 3:
            flip = torch.rand(x.shape[0], generator=self.gen_aug, device=x.device) < 0.5
            x = torch.where(flip.reshape(-1, *([1] * (x.ndim - 1))), x.flip(-1), x)
        return x

    def train_step(self) -> tuple[float, float]:
        """One optimizer step over ``grad_accum`` micro-batches; returns (loss, grad norm) averaged over ranks."""
        o = self.cfg["optim"]
        accum = int(o["grad_accum"])
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.train_net.train()
        total = torch.zeros((), device=self.device)
        for k in range(accum):
            x, y = self.batches.next()
            x = self._augment(x)
            sync = contextlib.nullcontext()
            if self.world.distributed and k < accum - 1:
                sync = self.train_net.no_sync()  # all-reduce gradients once, on the last micro-batch
            with sync:
                with _autocast(self.device, self.precision):
                    loss = self.loss_fn(self.denoiser, x, generator=self.gen_loss, **self._cond(self._drop(y))).float().mean()
                scaled = loss / accum
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            total += loss.detach() / accum
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        clip = o["grad_clip"] or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), clip)
        # One small all-reduce carries the loss, the non-finite flag and a stop request to every rank, so
        # every rank takes the same decision at the same step.
        flags = torch.stack([total, grad_norm.to(total.dtype), torch.tensor(
            float(self._signals.received is not None), device=self.device)])
        flags = ddp.all_mean(flags, self.world)
        loss_v, gn_v, stop = (float(v) for v in flags.cpu())
        if stop > 0 and self.stopped_by is None:
            self.stopped_by = "signal"
        if not math.isfinite(loss_v) or (self.scaler is None and not math.isfinite(gn_v)):
            what = f"loss {loss_v}" if not math.isfinite(loss_v) else f"gradient norm {gn_v} (loss {loss_v:.6g})"
            kept = (f"the last good checkpoint (step {self.last_checkpoint_step}) is kept in {self.out}"
                    if self.last_checkpoint_step is not None else "no checkpoint had been saved yet")
            raise NonFiniteLossError(
                f"non-finite {what} at step {self.step + 1}; training stopped, {kept}. "
                "Try a lower optim.lr, more optim.warmup_steps, optim.grad_clip or precision fp32."
            )
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.net)
        self.step += 1
        if hasattr(self.loss_fn, "after_step"):  # a distillation objective: EMA target, curriculum, stage
            self.loss_fn.after_step(self.net, self.step)
        return loss_v, gn_v

    # -- checkpoints ---------------------------------------------------------------------------------------
    def _rng_tensors(self) -> dict[str, Tensor]:
        """Every rank's generator states, gathered to every rank (rank 0 writes them)."""
        states = {
            "loss": ckpt.generator_state(self.gen_loss),
            "augment": ckpt.generator_state(self.gen_aug),
            "global": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            states["global_cuda"] = torch.cuda.get_rng_state(self.device)
        out = {}
        for name, state in states.items():
            for r, s in enumerate(ddp.all_gather_bytes(state, self.world)):
                out[f"rng.{name}.rank{r}"] = s
        return out

    def save_checkpoint(self) -> None:
        """Save weights, EMA, optimizer, RNG and data position atomically (every rank calls; rank 0 writes)."""
        rng = self._rng_tensors()
        if not self.is_main:
            ddp.barrier(self.world)
            return
        opt_tensors, opt_info = ckpt.optimizer_state(self.optimizer)
        obj_tensors, obj_info = self.loss_fn.state() if hasattr(self.loss_fn, "state") else ({}, None)
        state = {
            "objective": obj_info,
            "step": self.step,
            "data_position": self.batches.position,
            "optimizer": opt_info,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "world_size": self.world.world_size,
            "ema_decay": self.ema.decay,
        }
        meta = {"step": str(self.step)}
        ckpt.save_files(
            self.out,
            {"model.safetensors": self.net.state_dict(), "ema.safetensors": self.ema.model.state_dict(),
             "state.safetensors": {**opt_tensors, **rng, **{f"objective.{k}": v for k, v in obj_tensors.items()}}},
            {"state.json": state},
            metadata=meta,
        )
        self.last_checkpoint_step = self.step
        ddp.barrier(self.world)

    def _load_checkpoint(self) -> None:
        from safetensors.torch import load_file

        ckpt.recover(self.out)
        state = json.loads((self.out / "state.json").read_text())
        ckpt.load_weights(self.net, self.out / "model.safetensors")
        ckpt.load_weights(self.ema.model, self.out / "ema.safetensors")
        tensors = load_file(str(self.out / "state.safetensors"))
        ckpt.load_optimizer_state(self.optimizer, {k: v.to(self.device) for k, v in tensors.items()
                                                   if k.startswith("optim.")}, state["optimizer"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.batches.position = int(state["data_position"])
        if hasattr(self.loss_fn, "load_state"):
            self.loss_fn.load_state({k[len("objective."):]: v.to(self.device) for k, v in tensors.items()
                                     if k.startswith("objective.")}, state.get("objective"))
        r = self.world.rank
        if state.get("world_size", 1) != self.world.world_size and self.is_main:
            print(f"resuming a {state.get('world_size')}-process run on {self.world.world_size} processes: "
                  "the data order continues exactly, the per-rank noise streams are reseeded", file=sys.stderr)
        if f"rng.loss.rank{r}" in tensors:
            self.gen_loss.set_state(tensors[f"rng.loss.rank{r}"])
            self.gen_aug.set_state(tensors[f"rng.augment.rank{r}"])
            torch.set_rng_state(tensors[f"rng.global.rank{r}"])
            if self.device.type == "cuda" and f"rng.global_cuda.rank{r}" in tensors:
                torch.cuda.set_rng_state(tensors[f"rng.global_cuda.rank{r}"], self.device)
        else:
            self.gen_loss.manual_seed(derive_seed(self.cfg["seed"], "loss", r, "resume", self.step))
            self.gen_aug.manual_seed(derive_seed(self.cfg["seed"], "augment", r, "resume", self.step))
        self.last_checkpoint_step = self.step

    # -- samples and logs ----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, num: int | None = None) -> Tensor:
        """Samples from the EMA model with the configured sampler (rank 0; its own seeded generator)."""
        from ..samplers import sample

        s = self.cfg["sample"]
        num = num or int(s["num"])
        den = NetDenoiser(self.ema.model, self.process, self.param).eval()
        cond = {}
        if self.cfg["net"]["class_conditional"]:
            cond = {"y": torch.arange(num, device=self.device) % int(self.info["num_classes"])}
        return sample(den, self.process, (num, *self.shape), sampler=s["sampler"], steps=int(s["steps"]),
                      seed=int(s["seed"]), device=self.device, cond=cond, **s["options"])

    def save_samples(self) -> Path:
        from .. import plotting

        x = self.sample()
        path = self.out / "samples" / f"step_{self.step:06d}.png"
        reference = None
        if self.kind != "images":
            reference = self.batches.x[: 2000].cpu() if self.batches.preloaded else None
        plotting.save_samples(x.cpu(), self.kind, path, reference=reference, title=f"step {self.step}")
        self.last_sample_path = path
        return path

    def _log(self, record: dict) -> None:
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, record["step"])

    def _open_tensorboard(self) -> None:
        if not (self.is_main and self.cfg["log"]["tensorboard"]):
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return
        self._tb = SummaryWriter(str(self.out / "tensorboard"))

    # -- the loop ------------------------------------------------------------------------------------------
    def train(self, stop_after: int | None = None) -> Trainer:
        """Run until ``optim.steps`` (or ``stop_after`` steps, for a planned stop); returns self.

        SIGTERM / SIGINT end the current step, save a checkpoint and return (``stopped_by == "signal"``).
        """
        cfg = self.cfg
        total = int(cfg["optim"]["steps"])
        end = total if stop_after is None else min(total, stop_after)
        every_log, every_ckpt, every_sample = (int(cfg["log"]["every"]), int(cfg["ckpt"]["every"]),
                                               int(cfg["sample"]["every"]))
        bar = None
        if self.is_main and cfg["log"]["progress"]:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        self._open_tensorboard()
        window_loss, window_n, t0 = 0.0, 0, time.perf_counter()
        try:
            with _StopSignals() as self._signals:
                while self.step < end:
                    loss, grad_norm = self.train_step()
                    window_loss, window_n = window_loss + loss, window_n + 1
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
                    last = self.step == end or self.stopped_by is not None
                    if self.is_main and every_log and (self.step % every_log == 0 or last):
                        dt = time.perf_counter() - t0
                        rate = window_n / dt if dt > 0 else float("nan")
                        self._log({
                            "step": self.step, "loss": window_loss / window_n, "lr": self.lr_at(self.step - 1),
                            "grad_norm": grad_norm, "steps_per_s": rate,
                            "examples_per_s": rate * cfg["optim"]["batch_size"] * cfg["optim"]["grad_accum"],
                        })
                        window_loss, window_n, t0 = 0.0, 0, time.perf_counter()
                    if (every_ckpt and self.step % every_ckpt == 0) or last:
                        self.save_checkpoint()
                    if self.is_main and ((every_sample and self.step % every_sample == 0) or self.step == total):
                        self.save_samples()
                    if self.stopped_by is not None:
                        break
        finally:
            if bar is not None:
                bar.close()
            if self._tb is not None:
                self._tb.close()
        if self.is_main and self.step == total and self.last_sample_path is None:
            self.save_samples()  # a finished run resumed without new steps still ends with its grid
        if self.is_main and self.step == total and (self.out / "metrics.jsonl").exists():
            from ..plotting import save_loss_plot

            save_loss_plot(self.out / "metrics.jsonl", self.out / "loss.png")
        return self

    def close(self) -> None:
        ddp.teardown(self.world)


def train(config: dict | None = None, out: str | Path = "runs/run", resume: bool = False,
          stop_after: int | None = None, components: Components | None = None) -> Trainer:
    """Train ``config`` (a partial or resolved config dict; see ``config.DEFAULTS``) into the run folder ``out``.

    ``resume=True`` continues the checkpoint in ``out`` exactly; ``stop_after`` stops (with a checkpoint)
    after that many steps in total. Returns the Trainer (``.net``, ``.ema.model``, ``.step``,
    ``.last_sample_path``). Under torchrun every rank calls this; only rank 0 writes.
    """
    trainer = Trainer(config or {}, out, resume=resume, components=components)
    try:
        return trainer.train(stop_after=stop_after)
    finally:
        trainer.close()
