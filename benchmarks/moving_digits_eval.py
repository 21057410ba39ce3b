"""A trained moving-digits run: frame-level FID on a digits classifier, and temporal consistency.

    python -m scorediff train moving-digits --out runs/moving-digits
    python benchmarks/moving_digits_eval.py runs/moving-digits [--num 200]

Frames are scored one by one against frames of held-out clips (the moving-digits generator at another seed).
Each 16x16 frame is cropped to the 8x8 window of largest ink (where the digit sits) and fed to a digits
classifier (scikit-learn's MLP, 64-128-10, trained on the 1797 8x8 digits, no download); features are its
128-unit hidden layer. Columns:
  frame FID     Frechet distance of those features, samples vs held-out frames (``eval.metrics``);
  class agree   fraction of clips whose frames all get the same predicted digit (a digit keeps its identity);
  ink drift     mean over clips of the std over frames of the total ink (sum of pixel values in [0, 1]),
                relative to its mean (a moving digit keeps its ink: 0 for the data, whatever the motion);
  frame diff    mean |x_t+1 - x_t| between consecutive frames (data: motion only).
Rows: held-out data (the floor, vs a second held-out set), the run's unconditional samples, its frame predictions
(the first half of each held-out clip given, ``forecast.complete(method="conditional")``) and, as a baseline a
user would try first, the last context frame repeated. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from scorediff import data, forecast, masking
from scorediff.eval.metrics import frechet_distance
from scorediff.samplers import sample
from scorediff.training import load_run


def digits_classifier():
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    d = load_digits()
    clf = MLPClassifier(hidden_layer_sizes=(128,), max_iter=400, random_state=0)
    clf.fit(d.images.reshape(-1, 64) / 16.0, d.target)
    return clf


def crops(frames: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) in [-1, 1] -> (N, 64) in [0, 1]: the 8x8 window holding the most ink."""
    ink = (frames + 1) / 2
    sums = F.avg_pool2d(ink, 8, stride=1)  # (N, 1, H-7, W-7)
    idx = sums.flatten(1).argmax(1)
    w = sums.shape[-1]
    r, c = idx // w, idx % w
    return torch.stack([ink[i, 0, r[i]:r[i] + 8, c[i]:c[i] + 8] for i in range(len(ink))]).reshape(-1, 64)


def scores(clips: torch.Tensor, clf, ref_feats: np.ndarray | None):
    n, _, t, h, w = clips.shape
    x = crops(clips.clamp(-1, 1).permute(0, 2, 1, 3, 4).reshape(n * t, 1, h, w)).double().numpy()
    feats = np.maximum(x @ clf.coefs_[0] + clf.intercepts_[0], 0)  # the hidden layer (ReLU)
    pred = clf.predict(x).reshape(n, t)
    ink = ((clips.clamp(-1, 1) + 1) / 2).sum((1, 3, 4))  # (n, T)
    row = {
        "frame FID": frechet_distance(feats, ref_feats) if ref_feats is not None else float("nan"),
        "class agree": float((pred == pred[:, :1]).all(1).mean()),
        "ink drift": float((ink.std(1) / ink.mean(1).clamp_min(1e-6)).mean()),
        "frame diff": float((clips[:, :, 1:] - clips[:, :, :-1]).abs().mean()),
    }
    return row, feats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--num", type=int, default=200)
    ap.add_argument("--steps", type=int, default=25)
    a = ap.parse_args()
    torch.set_num_threads(1)
    run = load_run(a.run)
    opts = run.config["data"]["options"]
    frames, size = int(opts.get("frames", 8)), int(opts.get("size", 16))
    held = data.make("moving-digits", n=a.num, frames=frames, size=size, seed=1001).x
    held2 = data.make("moving-digits", n=a.num, frames=frames, size=size, seed=1002).x
    clf = digits_classifier()
    _, ref = scores(held, clf, None)
    rows = {"held-out data": scores(held2, clf, ref)[0]}
    t0 = time.perf_counter()
    with torch.no_grad():
        x = sample(run.denoiser, run.process, (a.num, *run.shape), sampler="dpm_solver_pp_2m_sde", steps=a.steps,
                   seed=0)
        rows[f"samples ({time.perf_counter() - t0:.0f} s)"] = scores(x, clf, ref)[0]
        k = frames // 2
        m = masking.forecast_mask(run.shape, k)
        method = "conditional" if (run.config.get("conditioning") or {}).get("task") else "repaint"
        t0 = time.perf_counter()
        pred = forecast.complete(run.denoiser, run.process, held2, m, method=method,
                                 sampler="dpm_solver_pp_2m_sde", steps=a.steps, seed=0)
        rows[f"predict last {frames - k} frames, {method} ({time.perf_counter() - t0:.0f} s)"] = scores(pred, clf, ref)[0]
    last = torch.where(m, held2, held2[:, :, k - 1:k].expand_as(held2))
    rows["baseline: last context frame repeated"] = scores(last, clf, ref)[0]
    print(f"run {a.run} (step {run.step}); {a.num} clips of {frames} frames, {size}x{size}")
    cols = ["frame FID", "class agree", "ink drift", "frame diff"]
    print("| clips | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")


if __name__ == "__main__":
    main()
