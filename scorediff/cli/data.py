"""``scorediff data pack SOURCE --out SHARDS --shard-size N``: write a data set as WebDataset tar shards.

SOURCE is a folder of images (labels from first-level sub-folders), a ``.npy`` / ``.npz`` file, or the name
of a built-in data set (``digits``, ``8gaussians``, ...); ``--option KEY=VALUE`` passes that data set's options
(e.g. ``size=32``). Train on the result with ``--set data.name=shards --set data.options.path=SHARDS``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "data set tools: pack a data set into WebDataset tar shards for streaming"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("pack", help="write SOURCE as tar shards of --shard-size samples, with an index.json")
    p.add_argument("source", help="an image folder, a .npy/.npz file, or a built-in data set name")
    p.add_argument("--out", required=True, help="the folder for the shards (new or empty)")
    p.add_argument("--shard-size", type=int, required=True, metavar="N", help="samples per shard")
    p.add_argument("--seed", type=int, default=0, help="shuffles the samples across shards (default 0)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the data set (value parsed as JSON where possible); repeatable")
    p.add_argument("--no-progress", action="store_true")


def _source(source: str, options: dict):
    from .. import data

    path = Path(source)
    if path.is_dir():
        return data.make("folder", path=source, **options)
    if path.suffix in (".npy", ".npz"):
        if not path.exists():
            raise ValueError(f"data pack: file {source!r} does not exist")
        return data.make("npy", path=source, **options)
    if source in data.DATASETS and not getattr(data.DATASETS[source], "streaming", False):
        return data.make(source, **options)
    raise ValueError(f"data pack: {source!r} is neither a folder, a .npy/.npz file nor a built-in data set "
                     f"({', '.join(k for k in data.DATASETS if k not in ('folder', 'npy', 'shards', 'hf'))})")


def run(args: argparse.Namespace) -> int:
    from ..data.shards import pack

    options = {}
    for item in args.option:
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--option {item!r} must be KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    ds = _source(args.source, options)
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ds), desc="pack", unit="sample")
    try:
        paths = pack(ds, args.out, args.shard_size, seed=args.seed, progress=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
    print(f"{len(ds)} samples in {len(paths)} shards of up to {args.shard_size} in {args.out}")
    return 0
