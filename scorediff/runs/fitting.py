"""Fitting a run's time grids and keeping them in its folder: the library side of ``scorediff fit-schedule``.

Two methods, both on the run's EMA denoiser, written in the format of ``scorediff.runs.fitted``, which
``scorediff sample`` / ``eval`` and ``Run.fitted_schedule`` read:

- ``"gits"``: the GITS grid (``scorediff.samplers.fit_schedule``; Chen et al. 2024) of the whole pilot.
- ``"refined"`` (the default): the pilot is cut in two halves. On the first, the GITS grid is fitted and then
  refined for the sampler by its own end-to-end error against the fine reference (``schedule_fit.refine_schedule``,
  in the manner of Align Your Steps, Sabour et al. 2024). On the second, held-out half, the sampler is run from
  the same starts on the refined grid and on the grid it would use without one (its default, or the run's
  configured grid), each against the reference; the record keeps both errors and whether the refined grid won.
  A grid that did not win is kept (the measurement is worth keeping) but not used: readers fall back to the
  default grid. A stochastic sampler has no deterministic end state to compare, so it gets the GITS grid of the
  first half, unchecked, used as before.
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
from ..schedule_fit import refine_schedule
from ..utils import cycle_labels, unknown
from . import checkpoint as ckpt
from .fitted import FORMAT, PURPOSE, SCHEDULES, plain, schedule_path
from .lock import RunLock
from .run import load_run

METHODS = ("refined", "gits")


def _rms(x: torch.Tensor, target: torch.Tensor) -> float:
    """RMS over the starts of the distance between end states (the protocols' error)."""
    return float((x - target).reshape(x.shape[0], -1).to(torch.float64).pow(2).sum(1).mean().sqrt())


def fit_run(run_dir: str | Path, samplers: Sequence[str], steps: Sequence[int], *, pilot: int = 64, seed: int = 0,
          fine_steps: int = 128, reference: str | None = None, method: str = "refined", device: str = "cpu",
          log: Callable[[str], None] | None = None) -> list[Path]:
    """Fit a grid on the EMA denoiser of run ``run_dir`` and write one file per (sampler, steps) pair.

    One pilot serves every pair: ``pilot`` prior draws (seeded by ``seed``; for a class-conditional run with labels
    cycling through the classes) are integrated by ``reference`` (default ``samplers.pilot_reference``: cld_heun on
    a CLD run) over ``fine_steps`` candidate intervals uniform in log-SNR (``scorediff.samplers.fit_schedule``),
    and ``.grid(n)`` is taken for every n in ``steps``; with
    ``method="refined"`` (module docstring) on the first half of the pilot, each grid then refined for its sampler
    and checked on the second half. On a CLD run every sampler run of the fit (reference, refinement, check) draws
    its start velocities v | x from a generator seeded ``seed + 1``, so that runs from the same starts are compared
    on the same phase-space trajectories; errors are on the position (data) half. Holds the run's writer lock throughout (a ``RunLockedError`` while a trainer
    holds it). ``log`` gets one line once every check has passed and the pilot starts. Returns the files written.
    """
    if method not in METHODS:
        raise unknown("fit method", method, METHODS)
    for name in samplers:
        if name not in samplers_mod.SAMPLERS:
            raise unknown("sampler", name, samplers_mod.SAMPLERS)
    for name, value, low in (("--pilot", pilot, 2 if method == "refined" else 1), ("--fine-steps", fine_steps, 2)):
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
        reference = samplers_mod.pilot_reference(run.process) if reference is None else reference
        v_seed = seed + 1  # CLD's start velocities, independent of the starts' own noise

        def v_gen() -> torch.Generator:
            return torch.Generator(device).manual_seed(v_seed)

        half = pilot - pilot // 2 if method == "refined" else pilot  # the fit's starts; the rest are held out
        cond = {}
        if run.class_conditional:  # each part of the pilot cycles through the classes
            k = int(run.info["num_classes"])
            cond = {"y": torch.cat([cycle_labels(0, half, k), cycle_labels(0, pilot - half, k)]).to(device)}
        sigma_data = float(getattr(run.param, "sigma_data", 1.0))
        if log is not None:
            calls = fine_steps * (2 if method == "refined" else 1)  # the reference runs; refining adds sampler runs
            log(f"fitting a grid on step {run.step} of {str(run_dir)!r}: {pilot} pilot draws, about {calls} "
                "batched model calls" + (" and the refining sampler's runs" if method == "refined" else ""))
        cpu0, wall0 = time.process_time(), time.perf_counter()
        fit = samplers_mod.fit_schedule(bind_cond(run.denoiser, _part(cond, 0, half)), run.process, x[:half],
                                        reference=reference, fine_steps=fine_steps, sigma_data=sigma_data,
                                        generator=v_gen())
        grids = {(name, n): (fit.grid(n), None) for name in samplers for n in steps}
        calls = fit.pilot_nfe
        if method == "refined":
            held = x[half:]
            held_d = bind_cond(run.denoiser, _part(cond, half, pilot))
            with torch.no_grad():  # the reference end states of the held-out starts, on the same candidate grid
                target = samplers_mod.SAMPLERS[reference](held_d, run.process, held, fit.candidates,
                                                          generator=v_gen())
            calls += fine_steps
            fit_d = bind_cond(run.denoiser, _part(cond, 0, half))
            for name in samplers:
                if samplers_mod.SAMPLERS[name].info.stochastic:
                    continue
                # as `generate` samples: the run's options for its own sampler; a fitted grid replaces its grid
                opts = dict(run.config["sample"]["options"]) if name == run.config["sample"]["sampler"] else {}
                bare = {k: v for k, v in opts.items() if k not in ("schedule", "schedule_options")}

                def run_on(d, process, xx, ts, name=name, bare=bare):
                    with torch.no_grad():
                        return samplers_mod.sample(d, process, xx, sampler=name, schedule=ts, dtype=xx.dtype,
                                                   seed=v_seed, **bare)

                for n in steps:
                    refined, _, _ = refine_schedule(run_on, fit_d, run.process, fit.grid(n), x[:half], fit.ends)
                    with torch.no_grad():
                        e_default = _rms(samplers_mod.sample(held_d, run.process, held, sampler=name, steps=n,
                                                             dtype=held.dtype, seed=v_seed, **opts), target)
                    e_fitted = _rms(run_on(held_d, run.process, held, refined), target)
                    grids[(name, n)] = (refined, {
                        "starts": pilot - half, "default_grid": str(opts.get("schedule") or
                                                                    samplers_mod.default_schedule(name, run.process)),
                        "default_error": e_default, "fitted_error": e_fitted,
                        "wins": bool(e_fitted < e_default)})
        cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
        ensure_dir(run_dir / SCHEDULES, run_dir)  # never into a planted symlink
        written = []
        for name in samplers:
            for n in steps:
                times, heldout = grids[(name, n)]
                record = {
                    "format": FORMAT, "sampler": name, "steps": n, "times": times.tolist(),
                    "checkpoint_step": run.step, "weights": "ema",
                    "pilot": {"size": pilot, "seed": seed, "model_calls": calls,
                              "cpu_s": round(cpu_s, 3), "wall_s": round(wall_s, 3)},
                    "fit": {"method": "refined" if heldout is not None else "gits", "reference": reference,
                            "fine_steps": fine_steps, "candidates": "logsnr", "sigma_data": sigma_data,
                            "fitted_on": half},
                    "process": plain(run.process.config()),
                }
                if heldout is not None:
                    record["heldout"] = heldout
                path = schedule_path(run_dir, name, n)
                ckpt.write_json_atomic(path, record, root=run_dir)
                written.append(path)
        return written
    finally:
        lock.release()


def _part(cond: dict, start: int, stop: int) -> dict:
    """The conditioning of pilot draws ``start:stop``."""
    return {k: v[start:stop] for k, v in cond.items()}


__all__ = ["METHODS", "fit_run"]
