"""Fitted time grids kept in a run folder: ``scorediff fit-schedule`` writes them, ``scorediff sample`` reads them.

A GITS grid (``scorediff.schedule_fit``; Chen et al. 2024, "A Geometric Perspective on Diffusion Models") is
fitted on the run's EMA denoiser from a pilot batch of prior draws, once, and then serves every later sampling
of that run with that sampler and step count. It is kept as ``RUN/schedules/<sampler>-<steps>.json``::

    {"format": 1, "sampler": "heun", "steps": 10, "times": [t_0 = t_max, ..., t_steps],
     "checkpoint_step": 1500, "weights": "ema",
     "pilot": {"size": 64, "seed": 0, "model_calls": 128, "cpu_s": 4.1, "wall_s": 4.3},
     "fit": {"method": "gits", "reference": "dpm_solver_pp_3m", "fine_steps": 128, "candidates": "logsnr",
             "sigma_data": 0.5},
     "process": {...the run's process config...}}

``pilot.model_calls`` counts batched calls of the network (each on ``size`` examples). The fit does not depend on
the sampler (its costs model a first-order step); the sampler in the name says which sampling the grid is for.

A run folder is sacred to its readers. Only ``write`` adds to it: it takes the run's writer lock as a trainer
does (and is refused while one trains), and writes each file whole (temp file, then ``os.replace``). ``lookup``
(used by ``scorediff sample`` and ``Run.fitted_schedule``) only reads. A grid is used only for exactly its sampler
and step count, and only on the checkpoint it was fitted on (same step, EMA weights); a stale or corrupt file is
reported in one line and ignored (the sampler's default grid is used): a cache never makes a reader fail.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..atomic import check_no_symlink, ensure_dir
from . import checkpoint as ckpt
from .lock import RunLock
from .run import Run, load_run

SCHEDULES = "schedules"  # the folder of fitted grids inside a run folder
FORMAT = 1
PURPOSE = "written by scorediff fit-schedule"  # the lock's holder, as a refused trainer is told


def schedule_path(run_dir: str | Path, sampler: str, steps: int) -> Path:
    """Where the fitted grid of ``sampler`` with ``steps`` steps lives in a run folder."""
    return Path(run_dir) / SCHEDULES / f"{sampler}-{int(steps)}.json"


@dataclass(frozen=True)
class Lookup:
    """What ``lookup`` found: the grid to sample with (or None) and the one line to tell the user (or None)."""

    times: Tensor | None  # float64, steps + 1 times from t_max; None: use the default grid
    note: str | None  # used / stale / corrupt, one line; None when there is no fitted grid for this pair


def _plain(obj: dict) -> dict:
    """``obj`` as it reads back from JSON (tuples become lists, ...), for comparing with a stored record."""
    return json.loads(json.dumps(obj))


def _times(record: object, run: Run, sampler: str, steps: int) -> Tensor:
    """The record's grid, checked against what it must be; a ValueError says what is wrong."""
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if record.get("format") != FORMAT:
        raise ValueError(f"format {record.get('format')!r}, expected {FORMAT}")
    if record.get("sampler") != sampler or record.get("steps") != steps:
        raise ValueError(f"it holds sampler {record.get('sampler')!r} with steps {record.get('steps')!r}, its name "
                         f"says {sampler!r} with {steps}")
    if isinstance(record.get("checkpoint_step"), bool) or not isinstance(record.get("checkpoint_step"), int):
        raise ValueError(f"checkpoint_step {record.get('checkpoint_step')!r} is not an integer")
    times = record.get("times")
    if (not isinstance(times, list) or len(times) != steps + 1
            or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) for t in times)):
        raise ValueError(f"'times' must be a list of {steps + 1} finite numbers")
    ts = torch.tensor(times, dtype=torch.float64)
    t_max = run.process.t_max
    if not (bool((ts[1:] < ts[:-1]).all()) and abs(float(ts[0]) - t_max) <= 1e-9 * max(1.0, t_max)
            and float(ts[-1]) >= 0):
        raise ValueError(f"'times' must fall strictly from t_max = {t_max:g} to a time >= 0")
    return ts


def lookup(run: Run, sampler: str, steps: int) -> Lookup:
    """The fitted grid of ``run`` for ``sampler`` with ``steps`` steps, if there is a valid, current one.

    Reads only. Current means fitted on the checkpoint ``run`` holds: the same training step, EMA weights, the
    same process. A file that cannot be read or is malformed is reported (``note`` names it) and ignored.
    """
    path = schedule_path(run.path, sampler, steps)
    if not path.is_file():
        return Lookup(None, None)
    name = str(path)
    try:
        record = json.loads(path.read_text())
        ts = _times(record, run, sampler, steps)
    except (OSError, UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        return Lookup(None, f"fitted schedule {name!r} is unreadable or corrupt ({e}); ignored, the default grid "
                            "is used (rewrite it with scorediff fit-schedule)")
    fitted_on = record["checkpoint_step"]
    if record.get("weights", "ema") != "ema" or not run.ema:
        return Lookup(None, f"fitted schedule {name!r} is for the EMA weights of step {fitted_on}, not the raw "
                            "weights: not used")
    if fitted_on != run.step:
        return Lookup(None, f"fitted schedule {name!r} is stale: fitted on step {fitted_on}, the run is at step "
                            f"{run.step}; not used (refit with scorediff fit-schedule)")
    if record.get("process") != _plain(run.process.config()):
        return Lookup(None, f"fitted schedule {name!r} was fitted for process {record.get('process')}, the run "
                            f"uses {run.process.config()}: not used")
    pilot = record.get("pilot") if isinstance(record.get("pilot"), dict) else {}
    return Lookup(ts, f"using the fitted schedule {name!r} (GITS, fitted on step {fitted_on} from "
                      f"{pilot.get('size', '?')} pilot draws; --schedule NAME overrides it)")


def write(run_dir: str | Path, samplers: Sequence[str], steps: Sequence[int], *, pilot: int = 64, seed: int = 0,
          fine_steps: int = 128, reference: str = "dpm_solver_pp_3m", device: str = "cpu",
          log: Callable[[str], None] | None = None) -> list[Path]:
    """Fit the GITS grid on the EMA denoiser of run ``run_dir`` and write one file per (sampler, steps) pair.

    One pilot serves every pair: ``pilot`` prior draws (seeded by ``seed``; for a class-conditional run with labels
    cycling through the classes) are integrated by ``reference`` over ``fine_steps`` candidate intervals uniform in
    log-SNR (``scorediff.samplers.fit_schedule``), and ``.grid(n)`` is taken for every n in ``steps``. Holds the
    run's writer lock throughout (a ``RunLockedError`` while a trainer holds it). ``log`` gets one line once every
    check has passed and the pilot starts. Returns the files written.
    """
    from .. import distill
    from ..samplers import SAMPLERS, fit_schedule
    from ..samplers._common import bind_cond
    from ..utils import unknown

    for name in samplers:
        if name not in SAMPLERS:
            raise unknown("sampler", name, SAMPLERS)
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
        if run.config["loss"]["name"] in distill.OBJECTIVES:
            raise ValueError(f"run {str(run_dir)!r} is a few-step model (loss "
                             f"{run.config['loss']['name']!r}), sampled on its own grid; a fitted grid needs a "
                             "diffusion model's denoiser")
        generator = torch.Generator(device).manual_seed(seed)
        x = run.process.prior_sample((pilot, *run.shape), generator, device=device)
        cond = {}
        if run.class_conditional:
            cond = {"y": (torch.arange(pilot) % int(run.info["num_classes"])).to(device)}
        sigma_data = float(getattr(run.param, "sigma_data", 1.0))
        if log is not None:
            log(f"fitting a grid on step {run.step} of {str(run_dir)!r}: {pilot} pilot draws, about {fine_steps} "
                "batched model calls")
        cpu0, wall0 = time.process_time(), time.perf_counter()
        fit = fit_schedule(bind_cond(run.denoiser, cond), run.process, x, reference=reference,
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
                    "process": _plain(run.process.config()),
                }
                path = schedule_path(run_dir, name, n)
                ckpt.write_json_atomic(path, record, root=run_dir)
                written.append(path)
        return written
    finally:
        lock.release()


__all__ = ["FORMAT", "Lookup", "SCHEDULES", "lookup", "schedule_path", "write"]
