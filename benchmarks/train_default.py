"""Benchmark: the default ``scorediff train`` (8x8 digits) — wall time, and how digit-like its samples are,
measured on digits the model never saw.

The 1797 digits are split once (seed 0) into 1200 for training and 597 held out. The run trains on the
training split only (written to an .npy and read with ``data.name=npy``), with the config's every other
setting. Quality is measured with a small classifier trained on the training split (scikit-learn MLP,
64 -> 128 -> 64 -> 10): the Frechet distance between 597 generated and the 597 held-out digits in its
penultimate (64-unit) features ("FID" in the sense of Heusel et al. 2017, with this classifier in place of
Inception), and the classifier's mean confidence (max class probability). The real-data floor is the same
distance between the held-out digits and 597 training digits; pure noise gives the ceiling.

``--upsample 28`` trains on the split enlarged to 28x28 (bilinear) instead, to measure a 28x28 config (e.g.
``--config mnist-cpu``) where no MNIST is at hand; its samples are shrunk back to 8x8 (area average) for
the same classifier.

    python benchmarks/train_default.py [--config digits] [--set KEY=VALUE ...] [--threads 1] [--out DIR]
                                       [--skip-train] [--upsample 28] [--picture docs/img/x.png]

Prints a JSON summary; ``--picture`` writes a grid of 100 samples.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def features(clf, x: np.ndarray) -> np.ndarray:
    """The classifier's last hidden layer (ReLU activations)."""
    h = x
    for w, b in zip(clf.coefs_[:-1], clf.intercepts_[:-1]):
        h = np.maximum(h @ w + b, 0)
    return h


def digit_classifier():
    """The judge shared with benchmarks/distill.py: (classifier trained on the 1200-digit split, real digits in
    [0, 1] as (1797, 64), labels, the training indices, the held-out indices)."""
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    d = load_digits()
    real = d.images.reshape(-1, 64) / 16.0
    perm = np.random.default_rng(0).permutation(len(real))
    train_idx, held_idx = perm[:1200], perm[1200:]
    clf = MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=600, random_state=0).fit(real[train_idx],
                                                                                      d.target[train_idx])
    return clf, real, d.target, train_idx, held_idx


def split_digits():
    """(train x, train y, held-out x, held-out y), x in [0, 1] as (N, 64): the fixed 1200 / 597 split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    real = d.images.reshape(-1, 64) / 16.0
    perm = np.random.default_rng(0).permutation(len(real))
    tr, held = perm[:1200], perm[1200:]
    return real[tr], d.target[tr], real[held], d.target[held]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="digits")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for the training run (default 1)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-digits"))
    ap.add_argument("--skip-train", action="store_true", help="evaluate an existing run folder")
    ap.add_argument("--upsample", type=int, default=None, help="train on the digits enlarged to this side")
    ap.add_argument("--picture", default=None, help="write 100 samples here (.png)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the evaluated samples")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    x_tr, y_tr, x_held, y_held = split_digits()
    out = Path(args.out)
    wall = None
    if not args.skip_train:
        out.mkdir(parents=True, exist_ok=True)
        images = torch.as_tensor(x_tr, dtype=torch.float32).reshape(-1, 1, 8, 8) * 2 - 1
        if args.upsample:
            images = F.interpolate(images, size=(args.upsample,) * 2, mode="bilinear", align_corners=False)
        np.save(out / "train_split.npy", images.numpy())
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        sets = ["--set", "data.name=npy", "--set", json.dumps({"path": str(out / "train_split.npy")}).join(
            ["data.options=", ""]), "--set", "log.progress=false", "--set", f"threads={args.threads}"]
        for item in args.overrides:
            sets += ["--set", item]
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "scorediff", "train", args.config, "--out", str(out / "run"),
                              *sets], env=env, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if res.returncode:
            sys.exit(res.stderr)
        print("grid:", res.stdout.strip(), file=sys.stderr)

    from sklearn.neural_network import MLPClassifier

    from scorediff import plotting, sample
    from scorediff.data import from_unit
    from scorediff.eval import frechet_distance as frechet
    from scorediff.training import load_run

    torch.set_num_threads(args.threads)
    clf = MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=600, random_state=0).fit(x_tr, y_tr)
    n = len(x_held)
    run = load_run(out / "run")
    s = run.config["sample"]
    t0 = time.perf_counter()
    x = sample(run.denoiser, run.process, (n, *run.shape), sampler=s["sampler"], steps=s["steps"], seed=args.seed,
               **s["options"])
    sample_s = time.perf_counter() - t0
    small = F.adaptive_avg_pool2d(x.clamp(-1, 1), 8) if x.shape[-1] != 8 else x
    gen = from_unit(small).numpy().reshape(n, -1) / 255.0
    noise = np.random.default_rng(1).uniform(0, 1, size=(n, 64))
    f_held = features(clf, x_held)
    metrics = json.loads((out / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    summary = {
        "config": args.config, "overrides": args.overrides, "upsample": args.upsample,
        "train_wall_s": wall, "threads": args.threads, "steps": run.step,
        "steps_per_s_last": metrics.get("steps_per_s"),
        "sampler": f"{s['sampler']} x {s['steps']} steps",
        f"sample_{n}_s": sample_s,
        "classifier_heldout_accuracy": clf.score(x_held, y_held),
        "fid_generated_vs_heldout": frechet(features(clf, gen), f_held),
        "fid_floor_train_vs_heldout": frechet(features(clf, x_tr[:n]), f_held),
        "fid_uniform_noise_vs_heldout": frechet(features(clf, noise), f_held),
        "confidence_generated": float(clf.predict_proba(gen).max(1).mean()),
        "confidence_heldout_real": float(clf.predict_proba(x_held).max(1).mean()),
        "class_histogram_generated": np.bincount(clf.predict(gen), minlength=10).tolist(),
    }
    if args.picture:
        plotting.save_image_grid(from_unit(x[:100]).float() / 255.0, args.picture, nrow=10)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
