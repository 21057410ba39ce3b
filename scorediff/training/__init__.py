"""Training: the one training loop, its state and schedules, DDP, classifiers and distillation.

``train(config, out)`` trains a config into a run folder. Run folders themselves (``load_run``, the config format,
checkpoints, the lock, building components from a config) live in ``scorediff.runs``, below this package; the old
names stay importable from here.
"""

from __future__ import annotations

import sys

from .. import distributed as ddp
from ..runs import build as components
from ..runs import checkpoint, config, fitted, lock, run
from . import lr_schedule

# Deprecated module paths (before scorediff.runs existed): scorediff.training.{config, checkpoint, ...} still import.
for _name, _module in {"checkpoint": checkpoint, "components": components, "config": config, "ddp": ddp,
                       "fitted": fitted, "lock": lock, "run": run, "schedule": lr_schedule}.items():
    sys.modules.setdefault(f"{__name__}.{_name}", _module)

from ..runs.config import DEFAULTS, packaged_configs  # noqa: E402
from ..runs.lock import RunLockedError  # noqa: E402
from ..runs.run import Run, load_codec, load_run  # noqa: E402
from .loop import NonFiniteLossError, Trainer, build, train  # noqa: E402

__all__ = [
    "DEFAULTS", "NonFiniteLossError", "Run", "RunLockedError", "Trainer", "build", "config", "load_codec", "load_run",
    "packaged_configs", "train",
]
