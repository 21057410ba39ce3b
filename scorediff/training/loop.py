"""The training loop: one loop for every process x parameterization x loss x network.

AdamW with a linear learning-rate warm-up (as in DDPM, Ho et al. 2020, Appendix B), global gradient-norm
clipping, an EMA of the weights, autocast (bf16, or fp16 with a GradScaler), gradient accumulation,
periodic sample grids from the EMA model, a JSONL metrics log and a progress bar. Scale-out is DDP under
``torchrun``; one code path, only rank 0 writes.

Randomness comes only from explicit, saved sources, so a run stopped and resumed gives bit-identical
weights: the data order (``batches.Batches``), the loss's times and noise (a per-rank generator), the
augmentation (another), and the global torch RNG (dropout); ``state.TrainingState`` saves and restores them.
The components and typed settings come from ``components`` (built once from the config).
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import distributed as ddp
from .. import plotting, text_encoders
from ..atomic import check_no_symlink, open_append
from ..cascade import downsample
from ..data.fingerprint import fingerprint
from ..nets import NULL_LABEL
from ..parameterizations import NetDenoiser
from ..plotting import save_loss_plot
from ..runs import checkpoint as ckpt
from ..runs import config as config_mod
from ..runs import repair
from ..runs.build import Components, Settings, build, build_net, build_process_param, info_dict
from ..runs.lock import RunLock
from ..runs.tokens import check_forward, check_resume, save_samples
from ..runs.tokens import sample as sample_tokens
from ..samplers import sample
from ..utils import cycle_labels
from . import lr_schedule, parallel, performance
from .batches import derive_seed, make_batches
from .ema import EMA, decay_from
from .evaluation import CheckpointEvaluation
from .sharded import ShardedState
from .state import TrainingState

__all__ = ["Components", "NonFiniteLossError", "Trainer", "build", "build_net", "build_process_param",
           "derive_seed", "info_dict", "train"]


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN / inf loss (or gradient norm); the last good checkpoint is kept."""


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

    def __init__(self, config: dict, out: str | Path, resume: bool = False, components: Components | None = None,
                 accept_data_change: bool = False):
        # file paths pinned absolute: a resume from another directory reads the same data (repair.pin_paths)
        self.cfg = cfg = repair.pin_paths(config_mod.resolve(config))
        self.accept_data_change = accept_data_change
        self.data_fingerprint: dict | None = None  # set by a resume's check (repair.check_data)
        self.data_changed: str | None = None
        self.world, self.device = ddp.setup(cfg["device"])
        self.settings = st = Settings.from_config(cfg)
        if st.threads is not None:
            torch.set_num_threads(st.threads)
        self.out = Path(out)
        self.is_main = self.world.is_main
        # Every check that can fail on bad input runs before the first write to the run folder.
        # (Only rank 0 checks a fresh folder: it writes config.json, which another rank could otherwise see.)
        self.changes = self._check_resumable(cfg) if resume else (self._check_fresh() if self.is_main else {})
        self.resuming = resume
        # The initial weights come from the seed (identical on every rank; DDP broadcasts rank 0's anyway).
        torch.manual_seed(st.seed)
        c = components or build(cfg)
        self.components = c
        self.evaluation: CheckpointEvaluation | None = None  # the config's eval section, built at its first use
        if resume and c.model is not None:  # a token run: the data's vocabulary must still be the run's

            check_resume(self.out, info_dict(c.info))
        self.info, self.process, self.param = c.info, c.process, c.param
        self.loss_fn = c.loss
        self.net = performance.prepare(c.net.to(self.device), cfg["perf"], self.device)
        self.text = text_encoders.from_config(cfg["text"], self.net, self.device)  # None: no prompts
        self.kind = self.info.get("kind", "images" if len(self.info.get("shape", ())) == 3 else "points")
        self.shape = tuple(self.info["shape"])
        self._check_forward()
        o = st.optim
        self.ema = EMA(self.net, decay_from(st.ema_decay, st.ema_half_life_steps), st.ema_rampup_ratio)
        # DDP wraps the network; FSDP2 shards it (and the EMA) in place, so the optimizer comes after
        d = cfg["dist"]
        self.train_net: nn.Module = parallel.wrap(self.net, self.ema.model, self.world, self.device, d["strategy"],
                                                  d["activation_checkpointing"])
        self.sharded = parallel.is_sharded(self.train_net)
        self.train_net = performance.compiled(self.train_net, cfg["perf"])
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=o.lr, betas=o.betas, eps=o.eps,
                                           weight_decay=o.weight_decay, **performance.optimizer_options(cfg["perf"]))
        # Training time so far (saved with the checkpoint): the budget and a budget-relative schedule read it.
        # ``clock`` is injectable so tests can drive the budget without waiting.
        self.elapsed, self.clock, self.lr = 0.0, time.monotonic, 0.0
        self.precision = st.precision
        use_scaler = self.precision == "fp16"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler) if use_scaler else None
        self.denoiser = self._denoiser(self.train_net)
        self.batches = make_batches(c.dataset, o.batch_size, st.seed, self.world, self.device, cfg["data"]["workers"])
        r = self.world.rank
        self.gen_loss = torch.Generator(self.device).manual_seed(derive_seed(st.seed, "loss", r))
        self.gen_aug = torch.Generator(self.device).manual_seed(derive_seed(st.seed, "augment", r))
        torch.manual_seed(derive_seed(st.seed, "global", r))  # dropout
        self.state = (ShardedState if self.sharded else TrainingState)(self.net, self.ema, self.optimizer, self.scaler, self.batches, self.gen_loss,
                                   self.gen_aug, self.world, self.device, st.seed, self.loss_fn)
        self.step = 0
        self.last_checkpoint_step: int | None = None
        self.last_sample_path: Path | None = None
        self._redraw_grid = False  # a resume found the checkpoint step's grid damaged (repair.repair)
        self.stopped_by: str | None = None
        self._tb = None
        self._signals = _StopSignals()
        self._lock = RunLock(self.out) if self.is_main else None
        self._acquire()
        try:
            if self.is_main:
                repair.refuse_links(self.out)
            if resume:
                self._load_checkpoint()
                if self.step > st.optim.steps and self.is_main:  # nothing to train: say so, record no session
                    _warn(f"run {str(self.out)!r} is at step {self.step}, past optim.steps = {st.optim.steps}: "
                          f"nothing to train (pass --set optim.steps=N with N > {self.step} to continue it)")
            elif self.is_main:
                self._check_fresh()  # again under the lock: another trainer may have finished in between
                ckpt.write_json_atomic(self.out / "config.json", cfg)
                ckpt.write_json_atomic(self.out / "info.json", self._info_record())
            self._begin_session()
        except BaseException:
            self._release()
            raise

    # -- the run folder: one writer, resume or fresh, the session history -----------------------------------
    def _check_fresh(self) -> dict:
        """A new run never overwrites one: the folder must not hold a checkpoint or a run's config."""
        held = [f for f in (*ckpt.CHECKPOINT_FILES, ckpt.TMP) if (self.out / f).exists()]
        if held:
            raise ValueError(
                f"run folder {str(self.out)!r} already holds a checkpoint; pass --resume to continue it "
                f"or choose another folder with --out (found {held[0]})"
            )
        if (self.out / "config.json").exists():
            raise ValueError(
                f"run folder {str(self.out)!r} already holds a run (config.json) that has no checkpoint yet; "
                "delete the folder or choose another one with --out"
            )
        return {}

    def _check_resumable(self, cfg: dict) -> dict:
        """Read-only checks of a folder to resume; returns the config values this session changes."""
        if not self.out.is_dir():
            raise FileNotFoundError(f"cannot resume: run folder {str(self.out)!r} does not exist")
        if not (self.out / "config.json").exists():
            raise FileNotFoundError(f"cannot resume {str(self.out)!r}: config.json is missing (not a run folder?)")
        stored = repair.pin_paths(config_mod.resolve(ckpt.read_json(self.out / "config.json")))
        changes = config_mod.resume_changes(stored, cfg)
        self.data_fingerprint, self.data_changed = repair.check_data(
            self.out, cfg["data"].get("options") or {}, self.accept_data_change, "cannot resume")
        return changes

    def _info_record(self) -> dict:
        """info.json: the data's description and fingerprint, the parameter count, the number of processes."""
        fp = self.data_fingerprint
        if fp is None:
            fp = fingerprint(self.cfg["data"].get("options") or {})
        return repair.info_record(self.info, sum(p.numel() for p in self.net.parameters()), self.world.world_size, fp)

    def _acquire(self) -> None:
        if self._lock is not None and not self._lock.held:
            self._lock.acquire()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def _history(self) -> list:
        path = self.out / "history.json"
        return ckpt.read_json(path) if path.exists() else []

    def _begin_session(self) -> None:
        """Append this session to ``history.json``: its start step and the config values it changes.

        ``config.json`` keeps the config the run started with; a resumed session's ``--set`` values are
        recorded here and apply to that session only, so a value that failed is not repeated by a plain
        ``--resume``.
        """
        if not self.is_main:
            return
        history = self._history()
        if history and isinstance(history[-1], dict) and "outcome" not in history[-1]:
            # the last session ended without recording it (kill -9, a full disk): the checkpoint says where
            history[-1].update(end_step=self.step, outcome="interrupted")
        earlier = {k for h in history for k in h.get("changes", {})} - set(self.changes)
        if self.resuming and earlier:
            print(f"note: earlier sessions of this run changed {', '.join(sorted(earlier))}; such changes apply to "
                  "their session only (pass --set again to keep one)", file=sys.stderr)
        if self.step > self.settings.optim.steps:  # nothing to train: no session to record
            return
        history.append({"session": len(history) + 1, "start_step": self.step, "changes": self.changes,
                         "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                         **({"data_changed": self.data_changed} if self.data_changed else {})})
        ckpt.write_json_atomic(self.out / "history.json", history)

    def _end_session(self, outcome: str) -> None:
        if not self.is_main or self.step > self.settings.optim.steps:  # no session was begun
            return
        try:
            history = self._history()
            if history:
                history[-1].update(end_step=self.step, outcome=outcome)
                ckpt.write_json_atomic(self.out / "history.json", history)
        except (OSError, ValueError):  # never hide the error that ended the session behind this one
            pass

    # -- setup helpers -------------------------------------------------------------------------------------
    def _check_forward(self) -> None:
        """One tiny forward pass so that a net that does not fit the data fails now, with a clear message."""
        if self.components.model is not None:  # token runs

            return check_forward(self)
        x = torch.zeros((2, *self.process.state_shape(self.shape)), device=self.device)  # cld: phase state
        cond = {**self._cond(torch.zeros(2, dtype=torch.long, device=self.device)), **self._stage_cond(x),
                **self._prompt_cond(["", "a"], self.text)}
        try:
            with torch.no_grad():
                if self.components.task == "autoencoder":
                    out = self.net(x)[0]
                else:
                    out = NetDenoiser(self.net, self.process, self.param).raw(
                        x, torch.full((2,), 0.5 * self.process.t_max, device=self.device), **cond)
        except (RuntimeError, ValueError) as e:
            raise ValueError(f"network does not fit data of shape {self.shape}: {e}") from None
        if out.shape != x.shape:
            raise ValueError(f"network output shape {tuple(out.shape[1:])} differs from the data shape {self.shape}")

    def _drop(self, y: Tensor) -> Tensor:
        """Classifier-free guidance training (Ho & Salimans 2022): each label becomes the null label with
        probability ``net.label_dropout``, drawn from the loss generator (so resume stays exact)."""
        p = self.settings.label_dropout
        if p <= 0 or not self.settings.class_conditional:
            return y
        keep = torch.rand(y.shape, generator=self.gen_loss, device=self.gen_loss.device) >= p
        return torch.where(keep.to(y.device), y, torch.full_like(y, NULL_LABEL))

    def _cond(self, y: Tensor | None) -> dict:
        return {"y": y} if (self.settings.class_conditional and y is not None) else {}

    @staticmethod
    def _prompt_cond(prompts: list[str], encoder: text_encoders.TextEncoder | None) -> dict:
        if encoder is None:
            return {}
        context, mask = encoder.encode(prompts)
        return {"context": context, "context_mask": mask}

    def _prompts(self) -> list[str]:
        """The captions of the batch just drawn, each replaced by the null prompt "" with probability
        ``text.dropout`` (classifier-free guidance on prompts); phrasings and dropout from the loss generator."""
        prompts = self.components.dataset.prompts(self.batches.last_indices.tolist(), self.gen_loss)
        p = float(self.cfg["text"]["dropout"])
        if p > 0:
            drop = (torch.rand(len(prompts), generator=self.gen_loss, device=self.gen_loss.device) < p).tolist()
            prompts = ["" if d else q for q, d in zip(prompts, drop)]
        return prompts

    def _stage_cond(self, x: Tensor) -> dict:
        """A cascade stage's conditioning for data x (the sample grid, the check): downsample(x) at the
        sampling augmentation level; {} for other runs."""
        f = self.components.cascade_factor
        if not f:
            return {}

        return {"low_res": downsample(x, f), "aug_level": torch.full((x.shape[0],), self.cfg["cascade"]["aug_level"],
                                                                     device=x.device)}

    def _data_head(self, num: int) -> Tensor:
        """The first ``num`` training examples (for reconstruction and super-resolution grids)."""
        if self.batches.preloaded:
            return self.batches.x[:num]
        return torch.stack([torch.as_tensor(self.components.dataset[i][0]) for i in range(num)]).to(self.device)

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` now: warm-up, then the configured decay (training/lr_schedule.py),
        times a distillation objective's own factor (progressive distillation anneals within each stage)."""
        lr = lr_schedule.lr_at(self.cfg, step, self.elapsed)
        return lr * self.loss_fn.lr_factor(step) if hasattr(self.loss_fn, "lr_factor") else lr

    # -- one optimizer step --------------------------------------------------------------------------------
    def _augment(self, x: Tensor) -> Tensor:
        if self.settings.hflip and x.ndim >= 3:
            flip = torch.rand(x.shape[0], generator=self.gen_aug, device=x.device) < 0.5
            x = torch.where(flip.reshape(-1, *([1] * (x.ndim - 1))), x.flip(-1), x)
        return x

    def train_step(self) -> tuple[float, float]:
        """One optimizer step over ``grad_accum`` micro-batches; returns (loss, grad norm) averaged over ranks."""
        o = self.settings.optim
        accum = o.grad_accum
        self.lr = lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.train_net.train()
        total = torch.zeros((), device=self.device)
        for k in range(accum):
            x, y = self.batches.next()
            x = self._augment(x)
            prompts = self._prompts() if self.text is not None else []
            sync = contextlib.nullcontext()
            if self.world.distributed and k < accum - 1:
                sync = parallel.no_sync(self.train_net)  # reduce gradients once, on the last micro-batch
            with sync:
                with _autocast(self.device, self.precision):
                    cond = {**self._cond(self._drop(y)), **self._prompt_cond(prompts, self.text)}
                    loss = self.loss_fn(self.denoiser, x, generator=self.gen_loss, **cond).float().mean()
                scaled = loss / accum
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            total += loss.detach() / accum
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        grad_norm = parallel.replicated(torch.nn.utils.clip_grad_norm_(self.net.parameters(), o.grad_clip))
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
    def save_checkpoint(self) -> None:
        """Save weights, EMA, optimizer, RNG and data position atomically (every rank calls; rank 0 writes).

        Weights that are no longer finite (a step that diverged without a non-finite loss, e.g. a huge
        learning rate) are never saved: the last good checkpoint stays and NonFiniteLossError is raised.
        """
        bad = parallel.first_nonfinite((*self.net.named_parameters(), *(("ema." + n, q) for n, q in
                                       self.ema.model.named_parameters())), self.world)
        if bad is not None:
            kept = (f"the last good checkpoint (step {self.last_checkpoint_step}) is kept"
                    if self.last_checkpoint_step is not None else "no checkpoint was saved")
            raise NonFiniteLossError(
                f"non-finite weights ({bad}) at step {self.step}; training stopped, {kept} in {self.out}. "
                "Try a lower optim.lr, more optim.warmup_steps or optim.grad_clip."
            )
        self.state.save(self.out, self.step, {"elapsed_s": self.elapsed})
        self.last_checkpoint_step = self.step

    def _load_checkpoint(self) -> None:
        """Resume: recover an interrupted save (the writer only), check, load, drop log lines past the checkpoint."""
        missing: list[str] = []
        if self.is_main:
            ckpt.recover(self.out)
            missing = ckpt.missing_files(self.out)
        ddp.barrier(self.world)
        if not self.is_main:
            missing = ckpt.missing_files(self.out)
        if missing:
            raise FileNotFoundError(
                f"cannot resume {str(self.out)!r}: {', '.join(missing)} missing, so the run has no complete "
                "checkpoint; nothing was changed (start a new run with another --out)"
            )
        self.step = self.state.load(self.out)
        self.elapsed = float(self.state.extra.get("elapsed_s", 0.0))
        self.last_checkpoint_step = self.step
        if self.is_main:
            ckpt.drop_log_lines_after(self.out / "metrics.jsonl", self.step, warn=_warn)
            self._redraw_grid = repair.repair(self.out, self._info_record(), self.step, _warn)
            every = self.settings.sample.every
            if every and self.step and self.step % every == 0 and not self._grid_path().exists():
                self._redraw_grid = True  # a kill between the checkpoint and its grid: the weights are here
            recorded = repair.recorded_info(self.out) or {}
            if self.data_changed or "data_fingerprint" not in recorded:
                # an accepted change (--accept-data-change), or a run older than fingerprints: record the data now
                ckpt.write_json_atomic(self.out / "info.json", {**recorded, **self._info_record()}, root=self.out)

    # -- samples and logs ----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, num: int | None = None) -> Tensor:
        """Samples from the EMA model with the configured sampler (rank 0; its own seeded generator)."""

        s = self.settings.sample
        num = num or s.num
        if self.components.model is not None:  # token runs: discrete diffusion or autoregressive

            return sample_tokens(self, num)
        if self.components.task == "autoencoder":  # an autoencoder's grid: reconstructions of training data
            return self.ema.model.eval()(self._data_head(num))[0]
        den = NetDenoiser(self.ema.model, self.process, self.param).eval()
        cond = {}
        if self.settings.class_conditional:
            cond = {"y": cycle_labels(0, num, int(self.info["num_classes"]), self.device)}
        if self.text is not None:  # prompts through the EMA model's own encoder
            ema_text = text_encoders.from_config(self.cfg["text"], self.ema.model, self.device, pretrained=self.text)
            cond.update(self._prompt_cond(self.components.dataset.grid_prompts(num), ema_text))
        if self.components.cascade_factor:  # a super-resolution stage: conditioned on downsampled training data
            num = min(num, len(self.components.dataset))
            cond = {k: v[:num] for k, v in cond.items()}
            cond.update(self._stage_cond(self._data_head(num)))
        return sample(den, self.process, (num, *self.shape), sampler=s.sampler, steps=s.steps,
                      seed=s.seed, device=self.device, cond=cond, **s.options)

    def save_samples(self) -> Path:
        x = self.sample()  # a sharded EMA model: every rank samples (the same), rank 0 writes
        if self.components.model is not None:  # token runs: text (and pixel-token grids)

            self.last_sample_path = save_samples(self, x)
            return self.last_sample_path
        path = self.out / "samples" / f"step_{self.step:06d}.png"
        self.last_sample_path = path
        if not self.is_main:
            return path
        kind = self.kind
        if kind == "latents":  # latent diffusion: the grid shows the decoded samples
            x, kind = self.components.dataset.decode(x), self.info["latent"]["image_kind"]
        path = self._grid_path()
        reference = None
        if kind != "images":
            reference = self.batches.x[: 2000].cpu() if self.batches.preloaded else None
        plotting.save_samples(x.cpu(), kind, path, reference=reference, title=f"step {self.step}", root=self.out)
        self.last_sample_path = path
        return path

    def _grid_path(self) -> Path:
        return self.out / "samples" / f"step_{self.step:06d}.png"

    def _log(self, record: dict) -> None:
        with open_append(self.out / "metrics.jsonl", self.out) as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, record["step"])

    def _open_tensorboard(self) -> None:
        if not (self.is_main and self.settings.tensorboard):
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return
        check_no_symlink(self.out / "tensorboard", self.out)
        self._tb = SummaryWriter(str(self.out / "tensorboard"))

    # -- the loop ------------------------------------------------------------------------------------------
    def train(self, stop_after: int | None = None) -> Trainer:
        """Run until ``optim.steps`` (or ``stop_after`` steps, for a planned stop); returns self.

        SIGTERM / SIGINT end the current step, save a checkpoint and return (``stopped_by == "signal"``);
        the time budget ``optim.max_minutes`` does the same and also draws the sample grid (``"budget"``).
        """
        total = self.settings.optim.steps
        end = total if stop_after is None else min(total, stop_after)
        self._acquire()
        outcome = "error"
        try:
            self._train(end, total)
            outcome = self.stopped_by or ("finished" if self.step == total else "stopped")
            ddp.barrier(self.world)  # every rank leaves together (rank 0 has drawn the samples, the plot)
        except NonFiniteLossError:
            outcome = "non-finite"
            raise
        finally:
            self._end_session(outcome)
            self._release()
        return self

    def _train(self, end: int, total: int) -> None:
        st, cfg = self.settings, self.cfg
        every_log, every_ckpt, every_sample = st.log_every, st.ckpt_every, st.sample.every
        examples_per_step = st.optim.batch_size * st.optim.grad_accum
        bar = None
        if self.is_main and st.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        self._open_tensorboard()
        if self.is_main and self._redraw_grid:  # the checkpoint's grid, lost or damaged: redrawn from its weights
            self.save_samples()
            self._redraw_grid = False
        window_loss, window_n, t0 = 0.0, 0, time.perf_counter()
        budget_base, budget_t0, warned = self.elapsed, self.clock(), False
        try:
            with _StopSignals() as self._signals:
                while self.step < end and not lr_schedule.out_of_budget(cfg, self.elapsed):
                    loss, grad_norm = self.train_step()
                    self.elapsed = budget_base + (self.clock() - budget_t0)
                    if lr_schedule.budget_seconds(cfg) is not None:
                        # every rank must stop at the same step and use the same learning rate
                        self.elapsed = float(ddp.all_mean(torch.tensor(self.elapsed, dtype=torch.float64,
                                                                       device=self.device), self.world))
                        if lr_schedule.out_of_budget(cfg, self.elapsed) and self.stopped_by is None:
                            self.stopped_by = "budget"
                        if not warned and self.is_main and self.step >= 20 and self.elapsed > 0:  # the pace is known
                            warned = True
                            planned = min(total, int(self.step / self.elapsed * lr_schedule.budget_seconds(cfg)))
                            msg = lr_schedule.short_run_warning(cfg, planned)
                            if msg:
                                print(f"warning: at {self.step / self.elapsed:.3g} steps/s the time budget "
                                      f"allows ~{planned} steps; {msg}", file=sys.stderr)
                    window_loss, window_n = window_loss + loss, window_n + 1
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
                    last = self.step == end or self.stopped_by is not None
                    if self.is_main and every_log and (self.step % every_log == 0 or last):
                        dt = time.perf_counter() - t0
                        rate = window_n / dt if dt > 0 else float("nan")
                        self._log({
                            "step": self.step, "loss": window_loss / window_n, "lr": self.lr,
                            "grad_norm": grad_norm, "steps_per_s": rate,
                            "examples_per_s": rate * examples_per_step,
                        })
                        window_loss, window_n, t0 = 0.0, 0, time.perf_counter()
                    if (every_ckpt and self.step % every_ckpt == 0) or last:
                        self.save_checkpoint()
                    if (self.is_main or self.sharded) and ((every_sample and self.step % every_sample == 0)
                                                           or self.step == total or self.stopped_by == "budget"):
                        self.save_samples()
                    if self.is_main and st.eval_every and (self.step % st.eval_every == 0 or last):
                        if self.evaluation is None:
                            self.evaluation = CheckpointEvaluation(self.cfg, self.components, self.device)
                        self._log({"step": self.step, **self.evaluation(self.ema.model)})
                    if self.stopped_by is not None:
                        break
        finally:
            if bar is not None:
                bar.close()
            if self._tb is not None:
                self._tb.close()
        if (self.is_main or self.sharded) and self.last_sample_path is None and self.step == total:
            self.save_samples()  # a finished run resumed without new steps still ends with its grid
        if self.is_main and self.step == total and (self.out / "metrics.jsonl").exists():
            save_loss_plot(self.out / "metrics.jsonl", self.out / "loss.png", root=self.out)

    def _denoiser(self, net: nn.Module):
        """The denoiser the loss calls: the run's own model over ``net``, or the process's parameterisation."""
        c = self.components
        return c.model(net) if c.model is not None else NetDenoiser(net, self.process, self.param)

    def close(self) -> None:
        self._release()
        if self.world.initialized_here and self.train_net is not self.net and not self.sharded:
            # DDP's reducer holds the process group: let it go here, so that the group is destroyed by
            # teardown while every rank is still alive, not later whenever this Trainer is freed
            self.train_net = self.net
            self.denoiser = self._denoiser(self.net)
            gc.collect()
        ddp.teardown(self.world)


def train(config: dict | None = None, out: str | Path = "runs/run", resume: bool = False,
          stop_after: int | None = None, components: Components | None = None,
          before: Callable[[Trainer], None] | None = None, accept_data_change: bool = False) -> Trainer:
    """Train ``config`` (a partial or resolved config dict; see ``config.DEFAULTS``) into the run folder ``out``.

    ``resume=True`` continues the checkpoint in ``out`` exactly; ``stop_after`` stops (with a checkpoint)
    after that many steps in total. Returns the Trainer (``.net``, ``.ema.model``, ``.step``,
    ``.last_sample_path``). Under torchrun every rank calls this; only rank 0 writes. ``before(trainer)`` runs
    once everything is built and checked, before the first step (the CLI prints its warnings there).
    """
    trainer = Trainer(config or {}, out, resume=resume, components=components, accept_data_change=accept_data_change)
    try:
        if before is not None:
            before(trainer)
        return trainer.train(stop_after=stop_after)
    finally:
        trainer.close()
