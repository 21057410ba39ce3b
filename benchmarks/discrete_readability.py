"""How readable are a text run's samples? Real words and repetition, per sampler, against held-out text.

For each run (a token run of text) and each sampler spec, draws ``--num`` samples and reports:

* real words: of the alphabetic words of 3+ letters in the samples (the first and last word of each sample are
  dropped: the sequence may cut them), the fraction that occur in the run's training text (case-insensitive);
* distinct bigrams: distinct word pairs over all word pairs of the samples (low: the samples repeat themselves);
* the same two numbers for ``--num`` held-out chunks of the run's test split (the ceiling: real text).

A proxy for "readable", not a likelihood: a sampler that only writes "the the the" scores high real words and low
distinct bigrams, which is why both are printed. Sampler specs are ``name`` or ``name:key=value,key=value``
(values parsed as JSON, else taken as strings), e.g. ``confidence:score=max``; an autoregressive run ignores the name and takes only
temperature / top_p.

    python benchmarks/discrete_readability.py runs/text-chars runs/text-bpe \\
        --samplers ancestral confidence confidence:score=max --steps 64

Prints a Markdown table (docs/results/discrete.md records one).
"""

from __future__ import annotations

import argparse
import re

import torch

from scorediff import data
from scorediff.runs.tokens import sample_tokens
from scorediff.training import load_run
from scorediff.utils import parse_key_values

WORD = re.compile(r"[A-Za-z]+")


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)[1:-1] if len(w) >= 3]


def scores(texts: list[str], vocabulary: set[str]) -> tuple[float, float, int]:
    """(real-word fraction, distinct-bigram fraction, number of words) over the texts."""
    ws = [words(t) for t in texts]
    flat = [w for row in ws for w in row]
    pairs = [(a, b) for row in ws for a, b in zip(row, row[1:])]
    real = sum(w in vocabulary for w in flat) / max(len(flat), 1)
    return real, len(set(pairs)) / max(len(pairs), 1), len(flat)


def parse_spec(spec: str) -> tuple[str, dict]:
    name, _, rest = spec.partition(":")
    return name, parse_key_values(filter(None, rest.split(",")), f"sampler spec {spec!r}")


def split_texts(run, split: str) -> list[str]:
    opts = {**run.config["data"]["options"], "split": split}
    ds = data.make(run.config["data"]["name"], **opts)
    return run.decode(ds.x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="token run folders of text")
    ap.add_argument("--samplers", nargs="+", default=["ancestral", "confidence"], help="sampler specs")
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default: the sampler's)")
    ap.add_argument("--num", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| run | sampler | real words | distinct bigrams | words |")
    print("|---|---|---|---|---|")
    for path in args.runs:
        run = load_run(path)
        vocabulary = {w for t in split_texts(run, "train") for w in (x.lower() for x in WORD.findall(t))}
        held = split_texts(run, "test")
        idx = torch.randperm(len(held), generator=torch.Generator().manual_seed(args.seed))[: args.num]
        real, distinct, n = scores([held[int(i)] for i in idx], vocabulary)
        print(f"| {path} | held-out text | {real:.3f} | {distinct:.3f} | {n} |", flush=True)
        specs = ["autoregressive"] if run.process is None else args.samplers
        for spec in specs:
            name, options = parse_spec(spec)
            if run.process is None:
                name, steps = None, None
            else:
                steps = args.steps
            x = sample_tokens(run.model, run.process, args.num, run.shape[0], name, steps, args.seed, "cpu",
                              **options)
            real, distinct, n = scores(run.decode(x), vocabulary)
            print(f"| {path} | {spec}{'' if steps is None else f', {steps} steps'} | {real:.3f} | {distinct:.3f} "
                  f"| {n} |", flush=True)


if __name__ == "__main__":
    main()
