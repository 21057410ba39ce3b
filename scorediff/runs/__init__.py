"""Run folders: the artefacts a training run leaves, and everything that reads them.

A layer below training, evaluation, the report and the CLI: a reader of a run folder imports this package, never
the training loop. ``load_run(path)`` gives back the trained Denoiser with its process (``run``); ``checkpoint``
holds the committed-save format (safetensors weights, JSON state), ``lock`` the single-writer lock, ``config`` the
config format and its checks, ``build`` the components a config describes (network, process, parameterization,
data, loss), ``fitted`` the fitted time grids kept in a run folder (``fitting`` fits and writes them).
"""

from __future__ import annotations

from . import build, checkpoint, config, fitted, fitting, lock
from .config import DEFAULTS, packaged_configs
from .lock import RunLockedError
from .run import Run, load_codec, load_run

__all__ = [
    "DEFAULTS", "Run", "RunLockedError", "build", "checkpoint", "config", "fitted", "fitting", "load_codec", "load_run", "lock",
    "packaged_configs",
]
