"""``scorediff presets``: the network presets and their parameter counts."""

from __future__ import annotations

import argparse

HELP = "list the network presets with their parameter counts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the presets' full configs as JSON")


def _human(n: int) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return str(n)


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from .. import nets

    rows = []
    for name in nets.PRESETS:
        with torch.device("meta"):  # count without allocating (ddpm-cifar10 has 35.7M weights)
            net = nets.make(name)
        rows.append((name, nets.count_parameters(net), net.config))
    if args.json:
        print(json.dumps({name: {"parameters": n, "config": cfg} for name, n, cfg in rows}, indent=2))
        return 0
    width = max(len(r[0]) for r in rows)
    for name, n, cfg in rows:
        print(f"{name:<{width}}  {_human(n):>7}  {cfg['type']}")
    return 0
