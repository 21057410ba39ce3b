"""The ``scorediff`` command line: ``scorediff COMMAND [options]`` or ``python -m scorediff COMMAND``.

Each command is one module in this package with ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; the table below is the whole registry (no import side effects, modules load
lazily so ``scorediff --help`` stays fast). A ``ValueError`` / ``OSError`` (a missing, unreadable or
unwritable file, a full disk) raised by a command becomes one clear line on stderr and exit code 2; so does
the ``ImportError`` of a missing optional extra (its message names the ``pip install`` that adds it).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> module under scorediff.cli
COMMANDS: dict[str, str] = {
    "train": "train",
    "sample": "sample",
    "presets": "presets",
    "samplers": "samplers",
    "bench": "bench",
    "likelihood": "likelihood",
    "eval": "eval",
    "report": "report",
    "export": "export",
    "train-classifier": "train_classifier",
    "inpaint": "inpaint",
    "edit": "edit",
    "distill": "distill",
    "fit-schedule": "fit_schedule",
    "data": "data",
    "forecast": "forecast",
}


def _available() -> dict[str, object]:
    mods = {}
    for name, mod in COMMANDS.items():
        try:
            mods[name] = importlib.import_module(f"scorediff.cli.{mod}")
        except ModuleNotFoundError as e:  # a command whose module is not written yet
            if e.name != f"scorediff.cli.{mod}":
                raise
    return mods


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scorediff", description="Score-based diffusion models: train, sample, guide, measure likelihood."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in _available().items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (ValueError, OSError, KeyError, ImportError) as e:
        if isinstance(e, ImportError) and "pip install" not in str(e):
            raise  # a broken installation, not a missing optional extra (whose message says what to install)
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        msg = " ".join(str(msg).split())  # one line, whatever the message held
        print(f"scorediff {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
