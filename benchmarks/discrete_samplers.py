"""Discrete samplers against the exact distribution: TV over all V^L sequences with the exact oracle model.

The protocol behind ``scorediff.discrete.samplers.DEFAULTS`` (fixed before running): for each process, every
applicable sampler at 4, 16 and 64 steps on the oracle suite (a 3-component mixture of products, V = 4, L = 3, and
a first-order Markov chain, V = 3, L = 4), N samples each; the default is the sampler whose worst TV over the suite
at 64 steps is lowest, ties (within the Monte Carlo floor's spread, 0.005) going to fewer model evaluations per sequence.

    python benchmarks/discrete_samplers.py --num 8000

Prints a Markdown table: TV (mean over the suite), worst TV, model evaluations per sequence (worst problem).
"""

from __future__ import annotations

import argparse

import torch

from scorediff import discrete
from scorediff.analytic import MarkovChain, random_mixture, total_variation


def suite():
    g = torch.Generator().manual_seed(0)
    chain = MarkovChain(torch.rand(3, generator=g) + 0.1, torch.rand(3, 3, generator=g) ** 2 + 0.05, 4)
    return {"mixture V4 L3": random_mixture(4, 3, seed=1), "markov V3 L4": chain}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=8000)
    ap.add_argument("--steps", type=int, nargs="+", default=[4, 16, 64])
    ap.add_argument("--samplers", nargs="+", default=list(discrete.SAMPLERS), help="a subset (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    problems = suite()
    floors = [total_variation(o.sample(args.num, torch.Generator().manual_seed(7)), o.probabilities(), o.vocab)
              for o in problems.values()]
    print(f"problems: {', '.join(problems)}; N = {args.num}; Monte Carlo floor (exact samples): "
          f"{', '.join(f'{f:.4f}' for f in floors)}\n")
    print("| process | sampler | steps | TV mean | TV worst | evaluations per sequence |")
    print("|---|---|---|---|---|---|")
    for pname in discrete.PROCESSES:
        for name, info in discrete.SAMPLERS.items():
            if pname not in info.processes or name not in args.samplers:
                continue
            for steps in args.steps:
                tvs, calls = [], []
                for oracle in problems.values():
                    p = discrete.make(pname, vocab=oracle.vocab)
                    stats: dict = {}
                    x = discrete.sample(oracle.model(p), p, (args.num, oracle.length), sampler=name, steps=steps,
                                        seed=0, stats=stats)
                    tvs.append(total_variation(x, oracle.probabilities(), oracle.vocab))
                    calls.append(stats["sequence_evaluations"] / args.num)
                print(f"| {pname} | {name} | {steps} | {sum(tvs) / len(tvs):.4f} | {max(tvs):.4f} | "
                      f"{max(calls):.1f} |", flush=True)


if __name__ == "__main__":
    main()
