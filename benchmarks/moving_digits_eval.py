"""A trained moving-digits run: do its frames show digits, the right digit, moving the right way?

    python -m scorediff train moving-digits --out runs/moving-digits
    python benchmarks/moving_digits_eval.py runs/moving-digits [--num 200] [--context 2] [--guidance 2]

Frames are scored one by one. Each frame is cropped to the 8x8 window of largest ink (where the digit sits) and
fed to a digits classifier (scikit-learn's MLP, 64-128-10, trained on such crops of 6000 single frames of moving
digits at another seed, no download); its 128-unit hidden layer gives the features. Held-out clips come from the moving-digits generator at other seeds.
Columns (frames: every frame of a sampled clip; for forecasts only the predicted frames):
  frame FID     Frechet distance of those features, the frames vs held-out frames (``eval.metrics``);
  label agree   fraction of frames the classifier reads as the clip's digit (forecasts: the digit of the context;
                data: the classifier's accuracy on these crops, the ceiling); unconditional clips have no label;
  class agree   fraction of clips whose frames all get the same predicted digit (a digit keeps its identity);
  ink drift     mean over clips of the std over frames of the total ink (sum of pixel values in [0, 1]),
                relative to its mean (a moving digit keeps its ink: 0 for the data, whatever the motion);
  frame diff    mean |x_t+1 - x_t| between consecutive frames (data: motion only);
  pos err       forecasts: mean distance in pixels between the ink centroid of a predicted frame and of the true
                frame (the motion; the data's is 0).
Rows: held-out data (the floor, vs a second held-out set), the run's unconditional samples, its forecasts of
the frames after the first ``--context`` of each held-out clip (``forecast.complete(method="conditional")``) and,
as a baseline a user would try first, the last context frame repeated. Prints a markdown table, and the CPU
seconds (process time) of each sampling row.
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


def digits_classifier(size: int):
    """An MLP on the crops (``crops``) of single frames of moving digits, so that it reads a crop however the
    window fell on the digit (trained on the 8x8 images themselves it misreads crops shifted by a pixel)."""
    from sklearn.neural_network import MLPClassifier

    d = data.make("moving-digits", n=6000, frames=1, size=size, seed=999)
    clf = MLPClassifier(hidden_layer_sizes=(128,), max_iter=400, random_state=0)
    clf.fit(crops(d.x[:, :, 0]).double().numpy(), d.y.numpy())
    return clf


def crops(frames: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) in [-1, 1] -> (N, 64) in [0, 1]: the 8x8 window holding the most ink."""
    ink = (frames + 1) / 2
    sums = F.avg_pool2d(ink, 8, stride=1)  # (N, 1, H-7, W-7)
    idx = sums.flatten(1).argmax(1)
    w = sums.shape[-1]
    r, c = idx // w, idx % w
    return torch.stack([ink[i, 0, r[i]:r[i] + 8, c[i]:c[i] + 8] for i in range(len(ink))]).reshape(-1, 64)


def centroids(clips: torch.Tensor) -> torch.Tensor:
    """(n, 1, T, H, W) -> (n, T, 2): the ink-weighted mean pixel position of each frame."""
    ink = ((clips.clamp(-1, 1) + 1) / 2)[:, 0]
    h, w = ink.shape[-2:]
    mass = ink.sum((-2, -1)).clamp_min(1e-6)
    r = (ink.sum(-1) * torch.arange(h, dtype=ink.dtype)).sum(-1) / mass
    c = (ink.sum(-2) * torch.arange(w, dtype=ink.dtype)).sum(-1) / mass
    return torch.stack([r, c], -1)


def scores(clips: torch.Tensor, clf, ref_feats: np.ndarray | None, labels: torch.Tensor | None = None,
           frames: slice = slice(None), truth: torch.Tensor | None = None):
    """The columns of the module docstring for the ``frames`` of ``clips``; also the features (for a reference)."""
    clips = clips.clamp(-1, 1)
    part = clips[:, :, frames]
    n, _, t, h, w = part.shape
    x = crops(part.permute(0, 2, 1, 3, 4).reshape(n * t, 1, h, w)).double().numpy()
    feats = np.maximum(x @ clf.coefs_[0] + clf.intercepts_[0], 0)  # the hidden layer (ReLU)
    pred = clf.predict(x).reshape(n, t)
    ink = ((clips + 1) / 2).sum((1, 3, 4))  # (n, T)
    nan = float("nan")
    row = {
        "frame FID": frechet_distance(feats, ref_feats) if ref_feats is not None else nan,
        "label agree": float((pred == labels.numpy()[:, None]).mean()) if labels is not None else nan,
        "class agree": float((pred == pred[:, :1]).all(1).mean()),
        "ink drift": float((ink.std(1) / ink.mean(1).clamp_min(1e-6)).mean()),
        "frame diff": float((clips[:, :, 1:] - clips[:, :, :-1]).abs().mean()),
        "pos err": (float((centroids(part) - centroids(truth[:, :, frames])).norm(dim=-1).mean())
                    if truth is not None else nan),
    }
    return row, feats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--num", type=int, default=200)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--context", type=int, default=None, help="frames given to a forecast (default: half)")
    ap.add_argument("--no-samples", action="store_true", help="skip the unconditional clips")
    ap.add_argument("--guidance", type=float, default=1.0,
                    help="classifier-free guidance scale on the context (runs trained with conditioning.p_uncond > 0)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    run = load_run(a.run)
    opts = run.config["data"]["options"]
    frames, size = int(opts.get("frames", 8)), int(opts.get("size", 16))
    speed = float(opts.get("speed", 1.0))
    held = data.make("moving-digits", n=a.num, frames=frames, size=size, speed=speed, seed=1001)
    test = data.make("moving-digits", n=a.num, frames=frames, size=size, speed=speed, seed=1002)
    clf = digits_classifier(size)
    _, ref = scores(held.x, clf, None)
    k = frames // 2 if a.context is None else a.context
    future = slice(k, frames)
    rows = {"held-out data": scores(test.x, clf, ref, test.y)[0],
            f"held-out data, frames {k}..{frames - 1}": scores(test.x, clf, ref, test.y, future, test.x)[0]}
    with torch.no_grad():
        if not a.no_samples:
            t0 = time.process_time()
            x = sample(run.denoiser, run.process, (a.num, *run.shape), sampler="dpm_solver_pp_2m_sde",
                       steps=a.steps, seed=0)
            rows[f"samples ({time.process_time() - t0:.0f} CPU s)"] = scores(x, clf, ref)[0]
        m = masking.forecast_mask(run.shape, k)
        method = "conditional" if (run.config.get("conditioning") or {}).get("task") else "repaint"
        t0 = time.process_time()
        pred = forecast.complete(run.denoiser, run.process, test.x, m, method=method,
                                 sampler="dpm_solver_pp_2m_sde", steps=a.steps, seed=0, guidance=a.guidance)
        g = "" if a.guidance == 1.0 else f", guidance {a.guidance:g}"
        name = f"forecast of frames {k}..{frames - 1}, {method}{g} ({time.process_time() - t0:.0f} CPU s)"
        rows[name] = scores(pred, clf, ref, test.y, future, test.x)[0]
    last = torch.where(m, test.x, test.x[:, :, k - 1:k].expand_as(test.x))
    rows["baseline: last context frame repeated"] = scores(last, clf, ref, test.y, future, test.x)[0]
    print(f"run {a.run} (step {run.step}); {a.num} clips of {frames} frames, {size}x{size}, context {k} frames")
    cols = ["frame FID", "label agree", "class agree", "ink drift", "frame diff", "pos err"]
    print("| clips | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join("-" if r[c] != r[c] else f"{r[c]:.3f}" for c in cols) + " |")


if __name__ == "__main__":
    main()
