"""Discrete diffusion against the autoregressive baseline at equal training compute on the built-in text.

Trains ``text-chars`` (absorbing process, MDLM ELBO) and/or ``text-chars-ar`` (the same transformer with causal
attention, exact log-likelihood) for the same number of optimizer steps of the same batch (so the same network
passes: equal compute; the CPU seconds each took are measured and printed, since a shared machine's wall clock is
not), one thread, then reports bits/token on the held-out split (diffusion: the ELBO, an upper bound, with its
standard error; autoregressive: exact) and a few samples.

    python benchmarks/discrete_text.py --steps 500 --out runs/discrete_text
    python benchmarks/discrete_text.py --models text-chars --steps 500 --out runs/discrete_text   # one of the two

Prints a Markdown table (docs/results/discrete.md records one).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from scorediff.runs.tokens import likelihood
from scorediff.training import config as config_mod
from scorediff.training import load_run, train


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=500, help="optimizer steps of each run")
    ap.add_argument("--batch", type=int, default=32, help="sequences per step")
    ap.add_argument("--models", nargs="+", default=["text-chars", "text-chars-ar"])
    ap.add_argument("--out", default="runs/discrete_text", help="folder for the two run folders")
    ap.add_argument("--num", type=int, default=256, help="held-out sequences evaluated")
    ap.add_argument("--elbo-samples", type=int, default=8, help="ELBO times per sequence")
    ap.add_argument("--preset", default="tokens-small")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    rows, samples = [], {}
    for name in args.models:
        cfg = config_mod.load(name, ["optim.max_minutes=null", "sample.every=0", "sample.num=4",
                                     "log.progress=false", "log.tensorboard=false", f"net.preset={args.preset}",
                                     f"optim.steps={args.steps}", f"optim.batch_size={args.batch}", "ckpt.every=0"])
        run_dir = out / name
        c0, w0 = cpu_seconds(), time.perf_counter()
        trainer = train(cfg, run_dir)
        cpu, wall = cpu_seconds() - c0, time.perf_counter() - w0
        run = load_run(run_dir)
        test = __import__("scorediff").data.make(cfg["data"]["name"], **{**cfg["data"]["options"], "split": "test"}).x
        x = test[torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[: args.num]]
        c1 = cpu_seconds()
        res = likelihood(run, x, samples=args.elbo_samples, seed=0)
        rows.append({"model": name, "steps": trainer.step, "train_cpu_s": round(cpu), "train_wall_s": round(wall),
                     "bits_per_token": round(res["bits_per_token"], 4), "se": round(res["bits_per_token_se"], 4),
                     "perplexity": round(res["perplexity"], 3), "bound": res["bound"],
                     "eval_cpu_s": round(cpu_seconds() - c1)})
        txt = sorted((run_dir / "samples").glob("step_*.txt"))
        samples[name] = txt[-1].read_text() if txt else ""
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    for name, text in samples.items():
        print(f"\nsamples of {name}:\n{text[:1200]}")
    (out / f"results-{'-'.join(args.models)}.json").write_text(json.dumps({"rows": rows, "samples": samples}, indent=1))


if __name__ == "__main__":
    main()
