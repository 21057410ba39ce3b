"""``scorediff train [CONFIG] [--set key=value ...] [--out DIR] [--resume]``."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

HELP = "train a diffusion model from a config (default: 8x8 digits in a few minutes on a CPU)"

DEFAULT_CONFIG = "digits"


def packaged_configs() -> list[str]:
    """The ready configs' names (scorediff/configs/*.json), without importing torch for a --help."""
    return sorted(p.name[:-5] for p in resources.files("scorediff").joinpath("configs").iterdir()
                  if p.name.endswith(".json"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config", nargs="?", default=None,
        help="a config file (.json, .toml, .yaml), a packaged config name ("
        + ", ".join(packaged_configs()) + "), or a run folder; default: digits",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=1e-3 (the value is parsed as JSON)")
    parser.add_argument("--out", default=None, help="the run folder (default: runs/<config name>, numbered if taken)")
    parser.add_argument("--resume", action="store_true", help="continue the checkpoint in the run folder exactly")
    parser.add_argument("--minutes", type=float, default=None,
                        help="a time budget (= --set optim.max_minutes=M): stop after M minutes of training with a "
                             "checkpoint and a sample grid; the learning-rate schedule anneals within it")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--accept-data-change", action="store_true",
                        help="with --resume: continue even though the data files changed since the run was created "
                             "(the new fingerprint is recorded in info.json and history.json)")


def _default_out(name: str) -> Path:
    base = Path("runs") / name
    out, k = base, 1
    while (out / "state.json").exists() or (out / "config.json").exists():
        k += 1
        out = Path(f"{base}-{k}")
    return out


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from ..runs import config as config_mod
    from ..training import lr_schedule as schedule
    from ..training.loop import NonFiniteLossError, train

    source = args.config
    if source is None and args.resume and args.out and (Path(args.out) / "config.json").exists():
        source = args.out  # resuming a run folder: its own config
    if args.resume and not args.out and not (source is not None and Path(str(source)).is_dir()):
        raise ValueError("--resume needs the run folder: --out RUN_FOLDER (or the run folder as CONFIG)")
    if source is None:
        source = DEFAULT_CONFIG
    overrides = list(args.overrides)
    if args.minutes is not None:
        if not args.minutes > 0:
            raise ValueError(f"--minutes must be positive, got {args.minutes}")
        overrides.append(f"optim.max_minutes={args.minutes}")
    cfg = config_mod.load(source, overrides)
    if args.print_config:
        print(json.dumps(cfg, indent=2))
        return 0
    name = Path(str(source)).stem if Path(str(source)).suffix else Path(str(source)).name
    out = Path(args.out) if args.out else (Path(source) if Path(source).is_dir() and args.resume else _default_out(name))
    def warn(trainer) -> None:  # once the config, data and network are known good: an error stays one line
        warning = schedule.short_run_warning(cfg, int(cfg["optim"]["steps"]))
        if warning and not args.resume and trainer.is_main:  # a budgeted run is checked again once its pace is known
            print(f"warning: {warning}", file=sys.stderr)

    try:
        trainer = train(cfg, out, resume=args.resume, before=warn, accept_data_change=args.accept_data_change)
    except NonFiniteLossError as e:
        print(f"scorediff train: {e}", file=sys.stderr)
        return 1
    if not trainer.is_main:
        return 0
    if trainer.stopped_by == "signal":
        print(f"stopped at step {trainer.step}; checkpoint saved in {out}. "
              f"Continue with: scorediff train --out {out} --resume", file=sys.stderr)
        return 0
    if trainer.stopped_by == "budget" or (trainer.step < int(cfg["optim"]["steps"])
                                          and schedule.out_of_budget(cfg, trainer.elapsed)):
        print(f"time budget of {cfg['optim']['max_minutes']:g} minutes reached at step {trainer.step}; checkpoint "
              f"saved in {out}. Continue with: scorediff train --out {out} --resume --minutes M (M > "
              f"{trainer.elapsed / 60:.3g})", file=sys.stderr)
        if trainer.last_sample_path is not None:
            print(trainer.last_sample_path)
            _print_text_samples(trainer)
        return 0
    print(f"run folder: {out} (step {trainer.step})", file=sys.stderr)
    if trainer.last_sample_path is not None:
        print(trainer.last_sample_path)
        _print_text_samples(trainer)
    return 0


def _print_text_samples(trainer, count: int = 4) -> None:
    """A text run's last samples on the console (the first ``count`` of ``samples/step_N.txt``)."""
    txt = trainer.last_sample_path.with_suffix(".txt")
    if trainer.info.get("kind") != "tokens" or trainer.info.get("image") or not txt.is_file():
        return  # images, or pixel tokens: the grid is the sample
    blocks = txt.read_text(encoding="utf-8").split("\n\n--- sample ")
    print("\n".join(("" if i == 0 else "--- sample ") + b.rstrip("\n") for i, b in enumerate(blocks[:count])))
