"""Learning-rate schedules relative to the planned run, and the time budget.

A run ends at ``optim.steps`` optimizer steps or, when ``optim.max_minutes`` is set, when its training
time reaches the budget, whichever comes first. Its *progress* after step k (k = 0, 1, ... counts the
steps before it) is

    p_k = min(1, max((k + 1) / steps, elapsed / budget)),

so a schedule written for a long run still anneals within a short budget. The learning rate is

    lr_k = lr * w_k * d(p_k),

with the linear warm-up of DDPM (Ho et al. 2020, Appendix B) w_k = min(1, (k + 1) / warmup_steps), or,
when ``optim.warmup_fraction`` f is set, w_k = min(1, p_k / f) (the warm-up is a fraction of the run,
not a step count a short run never leaves), and the decay d:

    constant   d(p) = 1
    cosine     d(p) = 1/2 (1 + cos(pi p))                      (SGDR, Loshchilov & Hutter 2017)
    inv_sqrt   d(p) = 1 / sqrt(max(1, p / p_ref))             (EDM2, Karras et al. 2024, eq. 16)

where p_ref is the end of the warm-up as a fraction of the run (f, or warmup_steps / steps), or 0.1
without warm-up. ``elapsed`` is the run's training time in seconds (saved with the checkpoint, so a
resumed run continues its schedule where it stopped).
"""

from __future__ import annotations

import math

from ..runs.config import LR_SCHEDULES as SCHEDULES
from .ema import decay_from

EMA_HALF_LIVES = 3  # a run shorter than warm-up + this many EMA half-lives is warned about


def budget_seconds(cfg: dict) -> float | None:
    """``optim.max_minutes`` in seconds, or None."""
    m = cfg["optim"]["max_minutes"]
    return None if m is None else 60.0 * float(m)


def progress(cfg: dict, step: int, elapsed: float = 0.0) -> float:
    """p_k: the fraction of the planned run done at the end of step ``step`` (see the module doc)."""
    p = (step + 1) / int(cfg["optim"]["steps"])
    budget = budget_seconds(cfg)
    if budget is not None:
        p = max(p, elapsed / budget)
    return min(1.0, p)


def _warmup_end(cfg: dict) -> float:
    """The end of the warm-up as a fraction of the run (0 without warm-up)."""
    o = cfg["optim"]
    if o["warmup_fraction"] is not None:
        return float(o["warmup_fraction"])
    return min(1.0, int(o["warmup_steps"]) / int(o["steps"]))


def lr_factor(cfg: dict, step: int, elapsed: float = 0.0) -> float:
    """w_k * d(p_k): the learning rate of step ``step`` divided by ``optim.lr``."""
    o = cfg["optim"]
    p = progress(cfg, step, elapsed)
    if o["warmup_fraction"] is not None:
        warm = min(1.0, p / float(o["warmup_fraction"])) if o["warmup_fraction"] > 0 else 1.0
    else:
        w = int(o["warmup_steps"])
        warm = min(1.0, (step + 1) / w) if w > 0 else 1.0
    kind = o["schedule"]
    if kind == "constant":
        decay = 1.0
    elif kind == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * p))
    elif kind == "inv_sqrt":
        p_ref = _warmup_end(cfg) or 0.1
        decay = 1.0 / math.sqrt(max(1.0, p / p_ref))
    else:  # the config check names the allowed ones first; this guards direct callers
        raise ValueError(f"optim.schedule {kind!r} unknown; one of: {', '.join(SCHEDULES)}")
    return warm * decay


def lr_at(cfg: dict, step: int, elapsed: float = 0.0) -> float:
    """The learning rate of optimizer step ``step`` after ``elapsed`` seconds of training."""
    return float(cfg["optim"]["lr"]) * lr_factor(cfg, step, elapsed)


def out_of_budget(cfg: dict, elapsed: float) -> bool:
    budget = budget_seconds(cfg)
    return budget is not None and elapsed >= budget


def short_run_warning(cfg: dict, planned_steps: int) -> str | None:
    """A warning when ``planned_steps`` is shorter than the warm-up plus a few EMA half-lives, else None.

    The EMA's half-life counts as it will be at the end of the run (capped by its warm-up ratio).
    """
    o, e = cfg["optim"], cfg["ema"]
    warm = (float(o["warmup_fraction"]) * planned_steps if o["warmup_fraction"] is not None
            else int(o["warmup_steps"]))
    beta = decay_from(e["decay"], e["half_life_steps"])
    half_life = math.log(0.5) / math.log(beta) if beta > 0 else 0.0
    if e["rampup_ratio"] is not None:
        half_life = min(half_life, float(e["rampup_ratio"]) * planned_steps)
    need = warm + EMA_HALF_LIVES * half_life
    if planned_steps >= need:
        return None
    return (f"the planned run ({planned_steps} steps) is shorter than its learning-rate warm-up ({warm:.0f} steps) "
            f"plus {EMA_HALF_LIVES} EMA half-lives ({half_life:.0f} steps each): its samples will be poor. "
            "Shorten them (e.g. --set optim.warmup_fraction=0.05 --set ema.rampup_ratio=0.1) or train longer")
