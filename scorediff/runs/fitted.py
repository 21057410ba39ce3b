"""Fitted time grids kept in a run folder: ``scorediff fit-schedule`` writes them, ``scorediff sample`` reads them.

A GITS grid (``scorediff.schedule_fit``; Chen et al. 2024, "A Geometric Perspective on Diffusion Models") is
fitted on the run's EMA denoiser from a pilot batch of prior draws, once, and then serves every later sampling
of that run with that sampler and step count. It is kept as ``RUN/schedules/<sampler>-<steps>.json``::

    {"format": 1, "sampler": "heun", "steps": 10, "times": [t_0 = t_max, ..., t_steps],
     "checkpoint_step": 1500, "weights": "ema",
     "pilot": {"size": 64, "seed": 0, "model_calls": 128, "cpu_s": 4.1, "wall_s": 4.3},
     "fit": {"method": "refined", "reference": "dpm_solver_pp_3m", "fine_steps": 128, "candidates": "logsnr",
             "sigma_data": 0.5, "fitted_on": 32},
     "heldout": {"starts": 32, "default_grid": "logsnr", "default_error": 0.21, "fitted_error": 0.12,
                 "wins": true},
     "process": {...the run's process config...}}

``pilot.model_calls`` counts the batched calls of the network (each on up to ``size`` examples) of the reference
trajectories; ``cpu_s`` covers the whole fit. ``fit.method`` "gits": the GITS grid (its costs model a first-order
step, so it does not depend on the sampler; the sampler in the name says which sampling the grid is for).
"refined" (``scorediff.runs.fitting``): the GITS grid of the first ``fitted_on`` pilot draws refined for the
sampler by its own end-to-end error, and ``heldout`` its RMS error and that of the grid the sampler would use
without it (``default_grid``) on the other pilot draws, against the reference. A grid is used only where it won
that check (``wins``); a record without ``heldout`` (a GITS fit, a stochastic sampler) is used unchecked.

A run folder is sacred to its readers. Only ``scorediff.runs.fitting.fit_run`` adds to it: it takes the run's writer lock as a trainer
does (and is refused while one trains), and writes each file whole (temp file, then ``os.replace``). ``lookup``
(used by ``scorediff sample`` and ``Run.fitted_schedule``) only reads. A grid is used only for exactly its sampler
and step count, and only on the checkpoint it was fitted on (same step, EMA weights); a stale or corrupt file is
reported in one line and ignored (the sampler's default grid is used): a cache never makes a reader fail.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # a Run holds its fitted grids (Run.fitted_schedule); this module only reads its attributes
    from .run import Run

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
    path: Path | None = None  # the file looked at (None when there is none)


def plain(obj: dict) -> dict:
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
    heldout = record.get("heldout")
    if heldout is not None and not (
            isinstance(heldout, dict) and isinstance(heldout.get("wins"), bool)
            and all(isinstance(heldout.get(k), (int, float)) and not isinstance(heldout.get(k), bool)
                    for k in ("default_error", "fitted_error"))):
        raise ValueError("'heldout' must be an object with numbers 'default_error', 'fitted_error' and a boolean "
                         "'wins'")
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
                            "is used (rewrite it with scorediff fit-schedule)", path)
    fitted_on = record["checkpoint_step"]
    if record.get("weights", "ema") != "ema" or not run.ema:
        return Lookup(None, f"fitted schedule {name!r} is for the EMA weights of step {fitted_on}, not the raw "
                            "weights: not used", path)
    if fitted_on != run.step:
        return Lookup(None, f"fitted schedule {name!r} is stale: fitted on step {fitted_on}, the run is at step "
                            f"{run.step}; not used (refit with scorediff fit-schedule)", path)
    if record.get("process") != plain(run.process.config()):
        return Lookup(None, f"fitted schedule {name!r} was fitted for process {record.get('process')}, the run "
                            f"uses {run.process.config()}: not used", path)
    pilot = record.get("pilot") if isinstance(record.get("pilot"), dict) else {}
    heldout = record.get("heldout")
    if heldout is None:
        return Lookup(ts, f"using the fitted schedule {name!r} (GITS, fitted on step {fitted_on} from "
                          f"{pilot.get('size', '?')} pilot draws; --schedule NAME overrides it)", path)
    versus = (f"held-out error {heldout['fitted_error']:.4g} against {heldout['default_error']:.4g} on the default "
              f"grid")
    if not heldout["wins"]:
        return Lookup(None, f"fitted schedule {name!r} did not beat the default grid on its held-out pilot draws "
                            f"({versus}): not used", path)
    return Lookup(ts, f"using the fitted schedule {name!r} (refined, fitted on step {fitted_on}; {versus}; "
                      "--schedule NAME overrides it)", path)


__all__ = ["FORMAT", "Lookup", "PURPOSE", "SCHEDULES", "lookup", "schedule_path"]
