"""Distil a trained run into a few-step run: ``distill(teacher_run, method, out)``.

The student is a copy of the teacher's network (its EMA weights), trained by the one training loop with a
``scorediff.few_step`` objective in place of the loss, so progress bar, checkpoints and exact resume are
those of training. The result is an ordinary run folder whose config samples it with the distilled number
of steps: DDIM on the distilled grid for ``progressive``, the ``consistency`` sampler for ``consistency``.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from .. import data, few_step
from ..reflow import Reflow
from ..runs import checkpoint as ckpt
from ..runs import config as config_mod
from ..runs.build import Components, build_net, build_process_param, check_sampler, info_dict
from ..runs.run import load_run
from .loop import Trainer

METHODS = ("progressive", "consistency", "reflow")


def distill_config(teacher_cfg: dict, method: str, teacher_path: str, *, to_steps: int = 4, teacher_steps: int = 16,
                   steps_per_stage: int | list[int] = 1000, schedule: str = "karras", weighting: str = "snr_trunc",
                   teacher_solver: str = "heun", lr_anneal: bool = True,
                   steps: int = 2000, solver: str = "heun", mu: float = 0.95, s0: int = 18, s1: int = 18,
                   distance: str = "l2", sample_steps: int = 1, time_groups: int = 4, lr: float | None = None,
                   overrides: list[str] | None = None, pairs: int = 4096, pair_sampler: str = "heun",
                   pair_steps: int = 32) -> dict:
    """The student run's config: the teacher's, with the objective, its length and the few-step sampler.

    Progressive defaults (measured on the default digits run, README "Few-step generation"): the first
    stage distils the teacher's Heun steps on a 16-step grid (its ODE, not its 16-step DDIM), 1000
    optimizer steps per halving with the learning rate annealed to 0 within each (Salimans & Ho)."""
    cfg = copy.deepcopy(teacher_cfg)
    cfg["description"] = f"{method} distillation of {teacher_path}"
    if method == "progressive":
        opts = {"teacher": teacher_path, "teacher_steps": teacher_steps, "to_steps": to_steps,
                "steps_per_stage": steps_per_stage, "schedule": schedule, "weighting": weighting,
                "time_groups": time_groups, "teacher_solver": teacher_solver, "lr_anneal": bool(lr_anneal)}
        cfg["loss"] = {"name": "progressive", "options": opts}
        if isinstance(steps_per_stage, int):
            per_stage, total = steps_per_stage, round(math.log2(teacher_steps / to_steps)) * steps_per_stage
        else:  # one number per halving (the objective checks the count)
            per_stage, total = min(steps_per_stage), sum(steps_per_stage)
        cfg["sample"].update(sampler="ddim", steps=to_steps, options={"schedule": schedule})
    elif method == "consistency":
        p = cfg["parameterization"]
        popts = {k: v for k, v in p["options"].items() if k in ("sigma_data", "noise_input")}
        if p["name"] != "edm":
            popts.setdefault("noise_input", "log_sigma")
        cfg["parameterization"] = {"name": "consistency", "options": popts}
        cfg["loss"] = {"name": "consistency_distillation", "options": {
            "teacher": teacher_path, "solver": solver, "mu": mu, "s0": s0, "s1": s1, "distance": distance,
            "time_groups": time_groups}}
        total = steps
        cfg["sample"].update(sampler="consistency", steps=sample_steps, options={})
    elif method == "reflow":  # scorediff.reflow: flow matching on the teacher's (ODE image, noise) pairs
        cfg["loss"] = {"name": "reflow", "options": {"teacher": teacher_path, "pairs": pairs, "sampler": pair_sampler,
                                                     "sampler_steps": pair_steps, "seed": int(cfg["seed"])}}
        total = steps
        cfg["sample"].update(sampler="euler", steps=sample_steps, options={})
    else:
        raise ValueError(f"distillation method {method!r} unknown; one of: {', '.join(METHODS)}")
    cfg["optim"]["steps"] = int(total)
    cfg["optim"]["warmup_steps"] = 0  # the student starts from trained weights
    # the student starts trained: a quarter of the teacher's learning rate unless told
    cfg["optim"]["lr"] = lr if lr is not None else cfg["optim"]["lr"] / 4
    cfg["ema"] = {"decay": None, "half_life_steps": max(1.0, min(100.0, total / 20))}
    cfg["sample"]["every"] = cfg["ckpt"]["every"] = int(total if method != "progressive" else per_stage)
    return config_mod.resolve(cfg, overrides or [])


def _objective(cfg: dict, process, param, teacher, student_net):
    opts = {k: v for k, v in cfg["loss"]["options"].items() if k != "teacher"}
    name = cfg["loss"]["name"]
    try:
        if name == "progressive":
            return few_step.ProgressiveDistillation(process, param, teacher.denoiser, student_net, **opts)
        if name == "reflow":
            return Reflow(process, param, teacher.denoiser, tuple(teacher.info["shape"]), **opts)
        if name == "consistency_distillation":
            return few_step.ConsistencyDistillation(process, param, teacher.denoiser, student_net,
                                                       total_steps=int(cfg["optim"]["steps"]), **opts)
    except TypeError as e:
        raise ValueError(f"loss '{name}': bad option(s) {sorted(opts)}: {e}") from None
    raise ValueError(f"run config's loss {name!r} is not a distillation; one of: progressive, consistency_distillation, "
                     "reflow")


def distill(teacher: str | Path | None, method: str | None, out: str | Path, *, resume: bool = False,
            stop_after: int | None = None, dataset: Any = None, **options: Any) -> Trainer:
    """Distil the run folder ``teacher`` by ``method`` ("progressive" or "consistency") into the run ``out``.

    ``options`` are ``distill_config``'s keywords (``to_steps``, ``steps_per_stage``, ``solver``, ...).
    ``resume=True`` continues the checkpoint in ``out`` exactly, with its own config (teacher and
    method may then be None). ``dataset`` replaces the config's data set (tests). Returns the Trainer.
    """
    out = Path(out)
    if resume and (out / "config.json").exists():  # its own config; Trainer checks the checkpoint itself
        cfg = config_mod.resolve(ckpt.read_json(out / "config.json"))
        teacher = cfg["loss"]["options"].get("teacher", teacher)
    else:
        if teacher is None or method is None:
            raise ValueError("distill needs a teacher run and a method (or --resume on a distillation run folder)")
        t_cfg = ckpt.read_json(Path(teacher) / "config.json") if (Path(teacher) / "config.json").exists() else None
        if t_cfg is None:
            raise FileNotFoundError(f"{str(teacher)!r} is not a run folder (no config.json)")
        # the teacher pinned by its absolute path: a resume from another directory distils the same teacher
        cfg = distill_config(t_cfg, method, str(Path(teacher).resolve()), **options)
    t_run = load_run(teacher)
    t_run.require_task("diffusion", "scorediff distill")
    if t_run.latent:
        raise ValueError(f"scorediff distill: run {str(teacher)!r} is a latent diffusion run; distillation of latent "
                         "runs is not supported yet")
    check_sampler(cfg)
    process, param = build_process_param(cfg)
    ds = dataset if dataset is not None else data.make(cfg["data"]["name"], **cfg["data"]["options"])
    info = info_dict(ds.info)
    student = build_net(cfg, info)
    student.load_state_dict(t_run.net.state_dict())  # the student starts as the teacher (both methods)
    objective = _objective(cfg, process, param, t_run, student)
    trainer = Trainer(cfg, out, resume=resume, components=Components(ds, info, student, process, param, objective))
    try:
        return trainer.train(stop_after=stop_after)
    finally:
        trainer.close()


__all__ = ["METHODS", "distill", "distill_config"]
