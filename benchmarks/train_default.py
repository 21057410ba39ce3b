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

``--seeds 0,1,2`` re-samples the same model with several sampling seeds (the evaluation noise) and reports
their mean. ``--eval SAMPLER:STEPS[:KEY=VALUE,...]`` (repeatable) evaluates other samplers than the
config's ``sample`` section, e.g. ``--eval heun:18:schedule=karras`` or ``--eval heun:18:s_churn=5``.
``--extra-ema 50,1e9@0.2,400@none`` keeps further EMAs of the weights during the run (half-life H in steps,
``@R`` its warm-up ratio, default the config's, ``none`` for off; the standard EMA is untouched), saved as
``ema_h{H}_r{R}.safetensors`` in the run, and evaluates each: the EMA length chosen after the run from one
training. (With warm-up ratio r the half-life is min(H, r k) at step k, so at 1500 steps and r = 0.05 any
H >= 75 gives the same average; a longer average needs a larger r.) Training then runs in this
process instead of a ``scorediff train`` subprocess (same config, same code path). The summary reports
the training's wall and CPU seconds (user + system of the training process).

    python benchmarks/train_default.py [--config digits] [--set KEY=VALUE ...] [--threads 1] [--out DIR]
                                       [--skip-train] [--upsample 28] [--picture docs/img/x.png]
                                       [--seeds 0,1,2] [--eval SPEC ...] [--extra-ema 50,200,400]

Prints a JSON summary; ``--picture`` writes a grid of 100 samples (the first sampler and seed evaluated).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def parse_eval(spec: str) -> tuple[str, int, dict]:
    """``"heun:18:schedule=karras,s_churn=5"`` -> ("heun", 18, {"schedule": "karras", "s_churn": 5})."""
    parts = spec.split(":", 2)
    if len(parts) < 2:
        raise SystemExit(f"--eval {spec!r}: expected SAMPLER:STEPS[:KEY=VALUE,...]")
    from scorediff.utils import parse_key_values

    options = parse_key_values(parts[2].split(",") if len(parts) == 3 and parts[2] else [], f"--eval {spec!r}:")
    return parts[0], int(parts[1]), options


def parse_ema(spec: str) -> tuple[float, float | None | str]:
    """``"400"`` -> (400, "config"); ``"400@0.2"`` -> (400, 0.2); ``"400@none"`` -> (400, None)."""
    h, _, r = spec.partition("@")
    return float(h), ("config" if not r else None if r == "none" else float(r))


def ema_name(h: float, r) -> str:
    return f"ema_h{h:g}" + ("" if r == "config" else f"_r{r:g}" if r is not None else "_rnone")


def train_in_process(config: str, out: Path, sets: list[str], half_lives: list[tuple]) -> None:
    """``scorediff train`` in this process, with further EMAs (same update rule and warm-up) kept alongside."""
    from safetensors.torch import save_file

    from scorediff.training import config as config_mod
    from scorediff.training import train
    from scorediff.training.ema import EMA, decay_from

    cfg = config_mod.load(config, [v for k, v in zip(sets[::2], sets[1::2])])
    extra: dict[str, EMA] = {}

    def before(trainer) -> None:
        for h, r in half_lives:
            extra[ema_name(h, r)] = EMA(trainer.net, decay_from(None, h), trainer.ema.rampup_ratio if r == "config" else r)
        update = trainer.ema.update

        def update_all(model) -> None:
            update(model)
            for e in extra.values():
                e.update(model)

        trainer.ema.update = update_all

    train(cfg, out, before=before)
    for name, e in extra.items():
        save_file({k: v.contiguous() for k, v in e.model.state_dict().items()}, str(out / f"{name}.safetensors"))


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
    ap.add_argument("--seeds", default=None, help="comma-separated sampling seeds (overrides --seed)")
    ap.add_argument("--eval", dest="evals", action="append", default=[], metavar="SAMPLER:STEPS[:K=V,...]",
                    help="evaluate this sampler instead of the config's (repeatable)")
    ap.add_argument("--extra-ema", default="", help="comma-separated further EMA half-lives (steps) to keep")
    args = ap.parse_args()
    seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else [args.seed]
    half_lives = [parse_ema(v) for v in args.extra_ema.split(",") if v]

    import torch
    import torch.nn.functional as F

    x_tr, y_tr, x_held, y_held = split_digits()
    out = Path(args.out)
    wall = cpu = None
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
        if half_lives:
            import torch as _torch

            _torch.set_num_threads(args.threads)
            c0 = time.process_time()
            train_in_process(args.config, out / "run", sets, half_lives)
            cpu = time.process_time() - c0
        else:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            res = subprocess.run([sys.executable, "-m", "scorediff", "train", args.config, "--out",
                                  str(out / "run"), *sets], env=env, cwd=ROOT, capture_output=True, text=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            if res.returncode:
                sys.exit(res.stderr)
            print("grid:", res.stdout.strip(), file=sys.stderr)
        wall = time.perf_counter() - t0

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
    specs = [parse_eval(e) for e in args.evals] or [(s["sampler"], s["steps"], dict(s["options"]))]
    emas = {"ema": None, **{ema_name(*hr): out / "run" / f"{ema_name(*hr)}.safetensors" for hr in half_lives}}
    if args.skip_train:  # evaluate every extra EMA the run kept
        emas.update({p.stem: p for p in sorted((out / "run").glob("ema_h*.safetensors"))})
    noise = np.random.default_rng(1).uniform(0, 1, size=(n, 64))
    f_held = features(clf, x_held)
    metrics = json.loads((out / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    standard = {k: v.clone() for k, v in run.denoiser.net.state_dict().items()}
    rows, first, sample_s = [], None, None
    for which, path in emas.items():
        if path is None:
            run.denoiser.net.load_state_dict(standard)
        else:
            from safetensors.torch import load_file

            run.denoiser.net.load_state_dict(load_file(str(path)))
        for sampler, steps, options in specs:
            fids, confs = [], []
            for seed in seeds:
                t0 = time.perf_counter()
                x = sample(run.denoiser, run.process, (n, *run.shape), sampler=sampler, steps=steps, seed=seed,
                           **options)
                sample_s = time.perf_counter() - t0
                small = F.adaptive_avg_pool2d(x.clamp(-1, 1), 8) if x.shape[-1] != 8 else x
                gen = from_unit(small).numpy().reshape(n, -1) / 255.0
                fids.append(frechet(features(clf, gen), f_held))
                confs.append(float(clf.predict_proba(gen).max(1).mean()))
                if first is None:
                    first = (x, gen)
            rows.append({"ema": which, "sampler": sampler, "steps": steps, "options": options,
                         "fid_by_seed": [round(f, 3) for f in fids], "fid_mean": round(float(np.mean(fids)), 3),
                         "confidence_mean": round(float(np.mean(confs)), 3)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    run.denoiser.net.load_state_dict(standard)
    x, gen = first
    summary = {
        "config": args.config, "overrides": args.overrides, "upsample": args.upsample,
        "train_wall_s": wall, "train_cpu_s": cpu, "threads": args.threads, "steps": run.step,
        "steps_per_s_last": metrics.get("steps_per_s"),
        "sampler": f"{specs[0][0]} x {specs[0][1]} steps {specs[0][2] or ''}".strip(),
        f"sample_{n}_s": sample_s,
        "classifier_heldout_accuracy": clf.score(x_held, y_held),
        "fid_generated_vs_heldout": rows[0]["fid_by_seed"][0],
        "fid_floor_train_vs_heldout": frechet(features(clf, x_tr[:n]), f_held),
        "fid_uniform_noise_vs_heldout": frechet(features(clf, noise), f_held),
        "confidence_generated": float(clf.predict_proba(gen).max(1).mean()),
        "confidence_heldout_real": float(clf.predict_proba(x_held).max(1).mean()),
        "class_histogram_generated": np.bincount(clf.predict(gen), minlength=10).tolist(),
        "rows": rows,
    }
    if args.picture:
        plotting.save_image_grid(from_unit(x[:100]).float() / 255.0, args.picture, nrow=10)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
