"""Benchmark: does streaming from tar shards keep up with training? The digits config's training step rate
(in memory) next to the rate at which ``ShardBatches`` delivers its batches from WebDataset shards with
``--workers`` loader processes, and the step rate of the same training reading the shards.

    python benchmarks/streaming.py [--workers 2] [--steps 40] [--threads 1]

Rates are per wall second on whatever else the machine runs, and per CPU second of the training process (the
fairer comparison on a shared machine: the workers' decoding is not the trainer's); "waiting for data" is the
share of the trainer's wall time spent in ``next()``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def step_rate(cfg: dict, out: Path, steps: int, warmup: int) -> tuple[float, float, float]:
    """(steps per wall second, steps per CPU second of the training process, fraction of the wall time spent
    waiting for the next batch)."""
    from scorediff.training import Trainer

    tr = Trainer(cfg, out)
    next_batch, waited = tr.batches.next, [0.0]

    def timed():
        t = time.perf_counter()
        out = next_batch()
        waited[0] += time.perf_counter() - t
        return out

    tr.batches.next = timed
    try:
        for _ in range(warmup):
            tr.train_step()
        waited[0] = 0.0
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            tr.train_step()
        wall = time.perf_counter() - t0
        return steps / wall, steps / (time.process_time() - c0), waited[0] / wall
    finally:
        tr.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--shard-size", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="alternate the two trainings this often; medians")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from scorediff.data import make
    from scorediff.data.shards import TarShards, pack
    from scorediff.distributed import World
    from scorediff.training import config
    from scorediff.training.streaming import ShardBatches

    cfg = config.resolve(config.load("digits"), {"threads": args.threads, "log.progress": False, "log.tensorboard": False,
                                "sample.every": 0, "ckpt.every": 0})
    batch = cfg["optim"]["batch_size"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pack(make("digits"), tmp / "shards", args.shard_size)
        shards = TarShards(str(tmp / "shards"))
        streamed_cfg = config.resolve(cfg, {"data.name": "shards", "data.options": {"path": str(tmp / "shards")},
                                            "data.workers": args.workers})
        memory, streamed = [], []
        for r in range(args.repeats):  # alternated, so that a change in the machine's load hits both alike
            memory.append(step_rate(cfg, tmp / f"mem{r}", args.steps, args.warmup))
            streamed.append(step_rate(streamed_cfg, tmp / f"stream{r}", args.steps, args.warmup))
        memory, streamed = (sorted(rows)[len(rows) // 2] for rows in (memory, streamed))  # median by wall rate
        sb = ShardBatches(shards, batch, 0, World(), torch.device("cpu"), workers=args.workers)
        for _ in range(args.warmup):
            sb.next()
        n = 20 * args.steps
        t0 = time.perf_counter()
        for _ in range(n):
            sb.next()
        delivered = n / (time.perf_counter() - t0)
        del sb
    print(f"digits config (unet-digits, batch {batch}, {args.threads} thread(s)); {len(shards.shards)} shards of "
          f"<= {args.shard_size}; {args.workers} loader workers; training rates: median of {args.repeats}\n")
    print("| what | per wall second | vs in-memory steps | per CPU second of the trainer | waiting for data |")
    print("|---|---:|---:|---:|---:|")
    print(f"| training steps, data in memory | {memory[0]:.2f} | 1.00 | {memory[1]:.2f} | {100 * memory[2]:.1f}% |")
    print(f"| batches delivered by {args.workers} shard workers (no training) | {delivered:.1f} | "
          f"{delivered / memory[0]:.1f} | | |")
    print(f"| training steps, streamed from shards | {streamed[0]:.2f} | {streamed[0] / memory[0]:.2f} | "
          f"{streamed[1]:.2f} | {100 * streamed[2]:.1f}% |")


if __name__ == "__main__":
    main()
