"""Benchmark: the default ``scorediff train`` (8x8 digits) — wall time, and how digit-like its samples are.

Quality is measured with a small classifier trained on the real digits (scikit-learn MLP, 64 -> 128 -> 64
-> 10): the Frechet distance between generated and real digits in its penultimate (64-unit) features
("FID" in the sense of Heusel et al. 2017, with this classifier in place of Inception), and the classifier's
mean confidence (max class probability) on the samples. For scale the script also reports the same numbers
for held-out real digits and for pure noise.

    python benchmarks/train_default.py [--threads N] [--out runs/bench-digits] [--skip-train]

Writes a picture of 100 samples to docs/img/digits_samples.png and prints a JSON summary.
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


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(sa @ sb)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa + sb - 2 * covmean))


def features(clf, x: np.ndarray) -> np.ndarray:
    """The classifier's last hidden layer (ReLU activations)."""
    h = x
    for w, b in zip(clf.coefs_[:-1], clf.intercepts_[:-1]):
        h = np.maximum(h @ w + b, 0)
    return h


def digit_classifier():
    """The judge: (classifier, real digits in [0, 1] as (1797, 64), its training indices, the held-out ones)."""
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    d = load_digits()
    real = d.images.reshape(-1, 64) / 16.0  # [0, 1]
    perm = np.random.default_rng(0).permutation(len(real))
    train_idx, held_idx = perm[:1200], perm[1200:]
    clf = MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=600, random_state=0).fit(real[train_idx], d.target[train_idx])
    return clf, real, d.target, train_idx, held_idx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the training run")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-digits"))
    ap.add_argument("--skip-train", action="store_true", help="evaluate an existing run folder")
    ap.add_argument("--num", type=int, default=1000, help="samples to evaluate")
    args = ap.parse_args()

    out = Path(args.out)
    wall = None
    if not args.skip_train:
        env = dict(os.environ)
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "scorediff", "train", "--out", str(out), "--set", "log.progress=false"],
                             env=env, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if res.returncode:
            sys.exit(res.stderr)
        print("grid:", res.stdout.strip(), file=sys.stderr)

    import torch

    from scorediff import plotting, sample
    from scorediff.data import from_unit
    from scorediff.training import load_run

    if args.threads:
        torch.set_num_threads(args.threads)
    clf, real, target, train_idx, held_idx = digit_classifier()
    rng = np.random.default_rng(0)
    rng.permutation(len(real))  # the noise reference below keeps its former draws
    held_acc = clf.score(real[held_idx], target[held_idx])

    run = load_run(out)
    t0 = time.perf_counter()
    x = sample(run.denoiser, run.process, (args.num, *run.shape), sampler=run.config["sample"]["sampler"],
               steps=run.config["sample"]["steps"], seed=0)
    sample_s = time.perf_counter() - t0
    gen = from_unit(x).numpy().reshape(len(x), -1) / 255.0
    noise = rng.uniform(0, 1, size=(args.num, 64))

    f_train, f_held = features(clf, real[train_idx]), features(clf, real[held_idx])
    summary = {
        "train_wall_s": wall,
        "threads": args.threads or torch.get_num_threads(),
        "steps": run.step,
        "sampler": f"{run.config['sample']['sampler']} x {run.config['sample']['steps']} steps",
        "sample_1000_s": sample_s,
        "classifier_heldout_accuracy": held_acc,
        "fid_generated": frechet(features(clf, gen), f_train),
        "fid_heldout_real": frechet(f_held, f_train),
        "fid_uniform_noise": frechet(features(clf, noise), f_train),
        "confidence_generated": float(clf.predict_proba(gen).max(1).mean()),
        "confidence_heldout_real": float(clf.predict_proba(real[held_idx]).max(1).mean()),
        "class_histogram_generated": np.bincount(clf.predict(gen), minlength=10).tolist(),
    }
    plotting.save_image_grid(from_unit(x[:100]).float() / 255.0, ROOT / "docs" / "img" / "digits_samples.png", nrow=10)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
