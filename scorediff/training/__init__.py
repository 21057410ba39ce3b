"""Training: configs (data, never code), the one training loop, run folders, DDP.

``train(config, out)`` trains a config into a run folder; ``load_run(path)`` gives back the trained
Denoiser with its process; ``config.load(path_or_name, overrides)`` reads and checks a config.
"""

from __future__ import annotations

from . import config
from .config import DEFAULTS, packaged_configs
from .lock import RunLockedError
from .loop import NonFiniteLossError, Trainer, build, train
from .run import Run, load_codec, load_run

__all__ = [
    "DEFAULTS", "NonFiniteLossError", "Run", "RunLockedError", "Trainer", "build", "config", "load_codec", "load_run",
    "packaged_configs", "train",
]
