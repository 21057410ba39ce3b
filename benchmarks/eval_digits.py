"""Benchmark: ``scorediff.eval`` on the default digits run, scored on held-out digits.

Trains the default ``scorediff train`` config on the ``split=train`` side of the 8x8 digits (or reuses the run
with ``--skip-train``), then scores samples of it against the ``split=test`` digits (359 images the model never
saw) in two feature spaces: the raw 64 pixels, and the 64-unit penultimate layer of an MLP classifier trained on
the train split only (scikit-learn, wrapped as a ``torch.nn.Module`` and passed to ``module_features``, the way a
user plugs in any network). For scale: the same metrics for real train-split digits (the real-vs-real floor, the
same number of examples as the model's samples where the split allows) and for uniform noise. Also checks the
Frechet distance against torchmetrics' FID on the same features.

    python benchmarks/eval_digits.py [--out runs/eval-digits] [--skip-train] [--num 1000] [--threads 1]

Prints a Markdown table and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def classifier_module(train_x, train_y):
    """An MLP (64 -> 128 -> 64 -> 10) fitted by scikit-learn on the train split, as a torch module whose
    ``features`` are its 64-unit penultimate ReLU layer."""
    import torch
    from sklearn.neural_network import MLPClassifier
    from torch import nn

    clf = MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=600, random_state=0).fit(train_x, train_y)

    class Features(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(*w.shape) for w in clf.coefs_[:-1])
            for lin, w, b in zip(self.layers, clf.coefs_[:-1], clf.intercepts_[:-1]):
                lin.weight.data = torch.as_tensor(w.T, dtype=torch.float32).contiguous()
                lin.bias.data = torch.as_tensor(b, dtype=torch.float32)

        def features(self, x):
            h = (x.flatten(1) + 1) / 2  # [-1, 1] -> [0, 1], the classifier's input range
            for lin in self.layers:
                h = torch.relu(lin(h))
            return h

    return Features(), clf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "runs" / "eval-digits"))
    ap.add_argument("--skip-train", action="store_true", help="evaluate an existing run folder")
    ap.add_argument("--num", type=int, default=1000, help="samples to draw")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    out = Path(args.out)
    if not args.skip_train:
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        res = subprocess.run([sys.executable, "-m", "scorediff", "train", "--out", str(out), "--set",
                              "data.options.split=train", "--set", "log.progress=false"], env=env, cwd=ROOT,
                             capture_output=True, text=True)
        if res.returncode:
            sys.exit(res.stderr)

    import torch

    from scorediff import data
    from scorediff.eval import frechet_distance, generate, module_features, raw_features, score
    from scorediff.training import load_run

    torch.set_num_threads(args.threads)
    train, test = data.make("digits", split="train"), data.make("digits", split="test")
    net, clf = classifier_module(((train.x.flatten(1) + 1) / 2).numpy(), train.y.numpy())
    held_acc = clf.score(((test.x.flatten(1) + 1) / 2).numpy(), test.y.numpy())
    run = load_run(out)
    s = run.config["sample"]
    t0 = time.perf_counter()
    x = generate(run.denoiser, run.process, run.shape, args.num, sampler=s["sampler"], steps=s["steps"], seed=0)
    sample_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    real = train.x[torch.randperm(len(train), generator=g)[: args.num]]
    noise = torch.rand(args.num, *run.shape, generator=g) * 2 - 1
    feats = {"raw pixels": raw_features(), "classifier": module_features(net, "digits-mlp")}
    rows, summary = [], {"run": str(out), "step": run.step, "sampler": f"{s['sampler']} x {s['steps']} steps",
                         "num": args.num, "num_test": len(test), "classifier_test_accuracy": held_acc,
                         "sample_s": sample_s}
    for fname, f in feats.items():
        for what, xs in (("model samples", x), ("real train-split digits (floor)", real), ("uniform noise", noise)):
            t0 = time.perf_counter()
            r = score(xs, test.x, f, use_cache=False)
            r["seconds"] = time.perf_counter() - t0
            rows.append((fname, what, len(xs), r))
            summary[f"{fname}/{what}"] = {k: r[k] for k in ("fid", "kid", "kid_std", "precision", "recall",
                                                             "sliced_w2", "seconds")}
    try:  # the same Frechet distance through torchmetrics, on the classifier features of the model's samples
        from torch import nn
        from torchmetrics.image.fid import FrechetInceptionDistance

        class Identity(nn.Module):
            num_features = 64

            def forward(self, v):
                return v

        fa, fb = feats["classifier"](test.x).double(), feats["classifier"](x).double()
        fid = FrechetInceptionDistance(feature=Identity())
        fid.update(fa, real=True)
        fid.update(fb, real=False)
        ours = frechet_distance(fa, fb)
        summary["torchmetrics_fid"], summary["ours_fid"] = float(fid.compute()), ours
    except ImportError:
        pass

    print(f"{out} (step {run.step}), {args.num} samples ({summary['sampler']}) vs the {len(test)} test-split "
          f"digits; classifier test accuracy {held_acc:.3f}\n")
    print("| features | compared with the test split | n | FID | KID | precision | recall |")
    print("|---|---|---|---|---|---|---|")
    for fname, what, n, r in rows:
        print(f"| {fname} | {what} | {n} | {r['fid']:.3g} | {r['kid']:.3g} +- {r['kid_std']:.2g} | "
              f"{r['precision']:.3f} | {r['recall']:.3f} |")
    print()
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
