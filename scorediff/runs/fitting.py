"""Fitting a run's time grids and keeping them in its folder: the library side of ``scorediff fit-schedule``.

The GITS grid (``scorediff.samplers.fit_schedule``; Chen et al. 2024) is fitted on the run's EMA denoiser and
written in the format of ``scorediff.runs.fitted``, which ``scorediff sample`` and ``Run.fitted_schedule`` read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .. import few_step
from .. import samplers as samplers_mod
from ..atomic import check_no_symlink, ensure_dir
from ..samplers._common import bind_cond
from ..utils import cycle_labels, unknown
from . import checkpoint as ckpt
from .fitted import FORMAT, PURPOSE, SCHEDULES, plain, schedule_path
from .lock import RunLock
from .run import load_run


def fit_run(run_dir: str | Path, samplers: Sequence[str], steps: Sequence[int], *, pilot: int = 64, seed: int = 0,
          fine_steps: int = 128, reference: str = "dpm_solver_pp_3m", device: str = "cpu",
          log: Callable[[str], None] | None = None) -> list[Path]:
    """Fit the GITS grid on the EMA denoiser of run ``run_dir`` and write one file per (sampler, steps) pair.

    One pilot serves every pair: ``pilot`` prior draws (seeded by ``seed``; for a class-conditional run with labels
    cycling through the classes) are integrated by ``reference`` over ``fine_steps`` candidate intervals uniform in
    log-SNR (``scorediff.samplers.fit_schedule``), and ``.grid(n)`` is taken for every n in ``steps``. Holds the
    run's writer lock throughout (a ``RunLockedError`` while a trainer holds it). ``log`` gets one line once every
    check has passed and the pilot starts. Returns the files written.
    """
    for name in samplers:
        if name not in samplers_mod.SAMPLERS:
            raise unknown("sampler", name, samplers_mod.SAMPLERS)
    for name, value, low in (("--pilot", pilot, 1), ("--fine-steps", fine_steps, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    for n in steps:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= fine_steps:
            raise ValueError(f"--steps must be integers from 1 to --fine-steps = {fine_steps} (the candidate grid's "
                             f"intervals), got {n!r}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():  # before the lock, which would create the folder
        raise FileNotFoundError(f"run folder {str(run_dir)!r} does not exist")
    if not (run_dir / "config.json").exists():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a run folder (no config.json)")
    lock = RunLock(run_dir, purpose=PURPOSE).acquire()
    try:
        check_no_symlink(run_dir / SCHEDULES, run_dir)  # before the minutes of fitting
        run = load_run(run_dir, ema=True, device=device)
        run.require_task("diffusion", "scorediff fit-schedule")
        if run.config["loss"]["name"] in few_step.OBJECTIVES:
            raise ValueError(f"run {str(run_dir)!r} is a few-step model (loss "
                             f"{run.config['loss']['name']!r}), sampled on its own grid; a fitted grid needs a "
                             "diffusion model's denoiser")
        generator = torch.Generator(device).manual_seed(seed)
        x = run.process.prior_sample((pilot, *run.shape), generator, device=device)
        cond = {}
        if run.class_conditional:
            cond = {"y": cycle_labels(0, pilot, int(run.info["num_classes"])).to(device)}
        sigma_data = float(getattr(run.param, "sigma_data", 1.0))
        if log is not None:
            log(f"fitting a grid on step {run.step} of {str(run_dir)!r}: {pilot} pilot draws, about {fine_steps} "
                "batched model calls")
        cpu0, wall0 = time.process_time(), time.perf_counter()
        fit = samplers_mod.fit_schedule(bind_cond(run.denoiser, cond), run.process, x, reference=reference,
                           fine_steps=fine_steps, sigma_data=sigma_data)
        grids = {n: fit.grid(n) for n in steps}
        cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
        ensure_dir(run_dir / SCHEDULES, run_dir)  # never into a planted symlink
        written = []
        for name in samplers:
            for n in steps:
                record = {
                    "format": FORMAT, "sampler": name, "steps": n, "times": grids[n].tolist(),
                    "checkpoint_step": run.step, "weights": "ema",
                    "pilot": {"size": pilot, "seed": seed, "model_calls": fit.pilot_nfe,
                              "cpu_s": round(cpu_s, 3), "wall_s": round(wall_s, 3)},
                    "fit": {"method": "gits", "reference": reference, "fine_steps": fine_steps,
                            "candidates": "logsnr", "sigma_data": sigma_data},
                    "process": plain(run.process.config()),
                }
                path = schedule_path(run_dir, name, n)
                ckpt.write_json_atomic(path, record, root=run_dir)
                written.append(path)
        return written
    finally:
        lock.release()


__all__ = ["fit_run"]
