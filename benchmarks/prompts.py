"""Benchmark: prompt adherence of a trained ``digits-text`` run against guidance scale, and the cost of prompts.

Adherence (``--run RUN``): for each guidance scale s, samples for the prompts "a zero" .. "a nine" are judged
by a classifier trained on real digits (scikit-learn's MLP on the train split, ``benchmarks/eval_digits.py``):
the fraction whose requested digit is recognised; samples for "a thick seven", "a seven leaning left", ...
(every digit, every attribute word) are measured like the captions were (``data.captions.measure_attributes``
against the real digits' per-class thirds): the fraction in the requested third (chance: 1/3). FID: the
Frechet distance between the samples of the digit prompts and the real test-split digits in that classifier's
64-unit feature space. ``--label-run`` adds the label-conditional model (``--class`` and guidance) alongside.
``--figure`` draws samples for a few prompts at a few scales.

Cost (``--cost``): CPU time of one training step (batch 64), of one model evaluation (batch 256) and of sampling
(Heun, 18 steps, 256 at once, unguided and guided; per sample) for the label-only model and for the text model
(the same U-Net plus cross-attention and the byte encoder).

    python benchmarks/prompts.py --run runs/digits-text [--label-run runs/digits-cond] [--scales 1 2 3 5]
    python benchmarks/prompts.py --cost
Prints Markdown tables and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

FIGURE_PROMPTS = ["a seven", "a thick seven", "a thin seven", "a seven leaning left", "a seven leaning right",
                  "a wide zero", "a narrow zero", "a two", "the digit 4"]


def _sample(run, cond_list, scale, seed, label=False):
    """Samples of a run for a list of prompts (text run) or labels (label run) at guidance ``scale``."""
    import torch

    import scorediff
    from scorediff.guidance import classifier_free
    from scorediff.text_encoders import prompt_cond, prompt_guidance

    s = run.config["sample"]
    if label:
        den = run.denoiser if scale == 1 else classifier_free(run.denoiser, scale)
        cond = {"y": torch.as_tensor(cond_list)}
    else:
        den = run.denoiser if scale == 1 else prompt_guidance(run.denoiser, run.text_encoder, scale)
        cond = prompt_cond(run.text_encoder, cond_list)
    return scorediff.sample(den, run.process, (len(cond_list), *run.shape), sampler=s["sampler"], steps=s["steps"],
                            seed=seed, cond=cond)


def adherence(args) -> dict:
    import numpy as np
    import torch

    from benchmarks.eval_digits import classifier_module
    from scorediff import data
    from scorediff.data.captions import (
        ATTRIBUTES,
        NUMBER_WORDS,
        article,
        class_thresholds,
        measure_attributes,
    )
    from scorediff.eval import frechet_distance, module_features
    from scorediff.training import load_run

    torch.set_num_threads(args.threads)
    train, test, full = data.make("digits", split="train"), data.make("digits", split="test"), data.make("digits")
    net, clf = classifier_module(((train.x.flatten(1) + 1) / 2).numpy(), train.y.numpy())
    feats = module_features(net, "digits-mlp")
    real_feats = feats(test.x)
    thresholds = class_thresholds(measure_attributes(full.x), full.y, 10)

    def predict(x):
        return torch.as_tensor(clf.predict(((x.flatten(1).clamp(-1, 1) + 1) / 2).numpy()))

    run = load_run(args.run) if args.run else None
    label_run = load_run(args.label_run) if args.label_run else None
    n = args.num
    digits = [d for d in range(10) for _ in range(n)]
    digit_prompts = [f"{article(NUMBER_WORDS[d])} {NUMBER_WORDS[d]}" for d in digits]
    attr_prompts, attr_targets = [], []  # (digit, attribute, level)
    for d in range(10):
        name = NUMBER_WORDS[d]
        for k, (lo, hi) in ATTRIBUTES.items():
            for level, word in ((-1, lo), (1, hi)):
                p = f"{article(name)} {name} {word}" if k == "slant" else f"{article(word)} {word} {name}"
                attr_prompts += [p] * args.num_attr
                attr_targets += [(d, k, level)] * args.num_attr
    rows, summary = [], {"run": str(args.run), "step": run.step if run else None,
                         "label_run": str(args.label_run), "label_step": label_run.step if label_run else None,
                         "num_per_digit": n,
                         "num_per_attribute_prompt": args.num_attr,
                         "classifier_test_accuracy": float(clf.score(((test.x.flatten(1) + 1) / 2).numpy(),
                                                                     test.y.numpy()))}
    for scale in args.scales:
        t0 = time.process_time()
        row = {"scale": scale}
        if label_run is not None:
            xl = _sample(label_run, digits, scale, seed=0, label=True)
            row["label_digit_accuracy"] = float((predict(xl) == torch.as_tensor(digits)).float().mean())
            row["label_fid"] = frechet_distance(feats(xl.clamp(-1, 1)), real_feats)
        if run is None:
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
            continue
        x = _sample(run, digit_prompts, scale, seed=0)
        acc = float((predict(x) == torch.as_tensor(digits)).float().mean())
        fid = frechet_distance(feats(x.clamp(-1, 1)), real_feats)
        xa = _sample(run, attr_prompts, scale, seed=1)
        va = measure_attributes(xa)
        hit = {k: [] for k in ATTRIBUTES}
        ok_digit = predict(xa) == torch.as_tensor([d for d, _, _ in attr_targets])
        for i, (d, k, level) in enumerate(attr_targets):
            lo, hi = thresholds[k][d]
            got = 1 if va[k][i] > hi else (-1 if va[k][i] < lo else 0)
            hit[k].append(got == level)
        row.update({"digit_accuracy": acc, "fid": fid,
                    "digit_accuracy_attribute_prompts": float(ok_digit.float().mean()),
                    **{f"{k}_accuracy": float(np.mean(v)) for k, v in hit.items()}, "cpu_s": time.process_time() - t0})
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    summary["rows"] = rows
    if run is None:
        print(f"{args.label_run} (step {label_run.step}); {n} samples per digit\n")
        print("| guidance | label model: digit right | label model: FID |\n|---|---|---|")
        for r in rows:
            print(f"| {r['scale']:g} | {r['label_digit_accuracy']:.3f} | {r['label_fid']:.3g} |")
        return summary
    print(f"{args.run} (step {run.step}); {n} samples per digit prompt, {args.num_attr} per attribute prompt; "
          f"classifier test accuracy {summary['classifier_test_accuracy']:.3f}\n")
    head = "| guidance | digit right | thickness | slant | width | FID (classifier features) |"
    sep = "|---|---|---|---|---|---|"
    if label_run is not None:
        head += " label model: digit right | label model: FID |"
        sep += "---|---|"
    print(head)
    print(sep)
    for r in rows:
        line = (f"| {r['scale']:g} | {r['digit_accuracy']:.3f} | {r['thickness_accuracy']:.3f} | "
                f"{r['slant_accuracy']:.3f} | {r['width_accuracy']:.3f} | {r['fid']:.3g} |")
        if label_run is not None:
            line += f" {r['label_digit_accuracy']:.3f} | {r['label_fid']:.3g} |"
        print(line)
    print()
    if args.figure:
        figure(run, args.figure, args.figure_scales)
    if args.tradeoff_figure:
        tradeoff(rows, args.tradeoff_figure)
    return summary


def tradeoff(rows, path: str) -> None:
    """FID against adherence, one point per guidance scale (the trade-off figure of Ho & Salimans 2022, Fig. 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    series = [("text: digit right", "digit_accuracy", "fid", "o-"),
              ("text: attribute in the requested third", None, "fid", "s--")]
    if "label_fid" in rows[0]:
        series.append(("label model: digit right", "label_digit_accuracy", "label_fid", "^-"))
    for name, key, fkey, style in series:
        xs = [r[key] if key else (r["thickness_accuracy"] + r["slant_accuracy"] + r["width_accuracy"]) / 3
              for r in rows]
        ys = [r[fkey] for r in rows]
        ax.plot(xs, ys, style, label=name)
        for r, x, y in zip(rows, xs, ys):
            ax.annotate(f"{r['scale']:g}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xlabel("adherence (fraction of samples)")
    ax.set_ylabel("FID (classifier features)")
    ax.set_title("guidance scale: adherence against FID", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"figure: {path}")


def figure(run, path: str, scales) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 6
    fig, axes = plt.subplots(len(FIGURE_PROMPTS), len(scales), figsize=(1.6 * cols * len(scales) / 3,
                                                                        0.62 * len(FIGURE_PROMPTS) + 0.5))
    for j, scale in enumerate(scales):
        x = _sample(run, [p for p in FIGURE_PROMPTS for _ in range(cols)], scale, seed=2)
        for i, p in enumerate(FIGURE_PROMPTS):
            row = x[i * cols:(i + 1) * cols, 0].clamp(-1, 1)
            strip = row.permute(1, 0, 2).reshape(row.shape[1], -1)  # cols images side by side
            ax = axes[i, j]
            ax.imshow(strip.numpy(), cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(p, rotation=0, ha="right", va="center", fontsize=8)
            if i == 0:
                ax.set_title(f"guidance {scale:g}", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    print(f"figure: {path}")


def cost(args) -> dict:
    import torch

    from scorediff.parameterizations import NetDenoiser
    from scorediff.training import config as config_mod
    from scorediff.training.loop import Trainer

    torch.set_num_threads(args.threads)
    out = {}
    print("| model | parameters | train step, batch 64 (CPU ms) | model evaluation, batch 256 (CPU ms) | "
          "sample, Heun 18 steps (CPU ms per sample) | same, guided (CPU ms per sample) |")
    print("|---|---|---|---|---|---|")
    for name, config, extra in (("label-only (digits-cond)", "digits-cond", []),
                                ("label-only, widened to the text model's size", "digits-cond",
                                 ["net.overrides.channels=18"]),
                                ("text (digits-text)", "digits-text", [])):
        cfg = config_mod.load(config, ["log.progress=false", "log.tensorboard=false", *extra])
        with tempfile.TemporaryDirectory() as tmp:
            tr = Trainer(cfg, Path(tmp) / "run")
            try:
                for _ in range(3):
                    tr.train_step()
                t0 = time.process_time()
                for _ in range(args.cost_steps):
                    tr.train_step()
                step_ms = 1000 * (time.process_time() - t0) / args.cost_steps
                den = NetDenoiser(tr.ema.model, tr.process, tr.param).eval()
                x, t = torch.randn(256, *tr.shape), torch.full((256,), 1.0)
                cond = {"y": torch.arange(256) % 10} if tr.settings.class_conditional else {}
                if tr.text is not None:
                    with torch.no_grad():
                        c, m = tr.text.encode([f"a thick {i % 10}" for i in range(256)])
                    cond = {"context": c, "context_mask": m}
                with torch.no_grad():
                    den(x, t, **cond)
                    t0 = time.process_time()
                    for _ in range(args.cost_steps):
                        den(x, t, **cond)
                eval_ms = 1000 * (time.process_time() - t0) / args.cost_steps
                sample_ms = _sample_cost(den, tr, cond, args.cost_samples)
                params = sum(p.numel() for p in tr.net.parameters())
            finally:
                tr.close()
        out[name] = {"parameters": params, "train_step_ms": step_ms, "eval_ms": eval_ms, **sample_ms}
        print(f"| {name} | {params} | {step_ms:.1f} | {eval_ms:.1f} | {sample_ms['sample_ms']:.2f} | "
              f"{sample_ms['sample_guided_ms']:.2f} |")
    print()
    return out


def _sample_cost(den, tr, cond, num: int) -> dict:
    """CPU ms per sample of the config's sampler (Heun, 18 steps) on ``num`` samples at once, unguided and at
    guidance 2 (the null prompt or null label as the other branch, batched with the conditional one)."""
    import torch

    import scorediff
    from scorediff.guidance import classifier_free
    from scorediff.text_encoders import prompt_guidance

    s = tr.cfg["sample"]
    cond = {k: v[:num] for k, v in cond.items()}
    guided = prompt_guidance(den, tr.text, 2.0) if tr.text is not None else classifier_free(den, 2.0)
    out = {}
    for key, d in (("sample_ms", den), ("sample_guided_ms", guided)):
        with torch.no_grad():
            t0 = time.process_time()
            scorediff.sample(d, tr.process, (num, *tr.shape), sampler=s["sampler"], steps=s["steps"], seed=0,
                             cond=cond)
        out[key] = 1000 * (time.process_time() - t0) / num
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="a digits-text run folder")
    ap.add_argument("--label-run", default=None, help="a label-conditional digits run (digits-cond) to compare")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0])
    ap.add_argument("--num", type=int, default=50, help="samples per digit prompt")
    ap.add_argument("--num-attr", type=int, default=10, help="samples per attribute prompt (60 prompts)")
    ap.add_argument("--figure", default=None, help="write a figure of samples (PNG)")
    ap.add_argument("--tradeoff-figure", default=None, help="write FID against adherence per scale (PNG)")
    ap.add_argument("--figure-scales", type=float, nargs="+", default=[1.0, 3.0])
    ap.add_argument("--cost", action="store_true", help="measure training and evaluation cost")
    ap.add_argument("--cost-steps", type=int, default=20)
    ap.add_argument("--cost-samples", type=int, default=256, help="samples drawn at once for the sampling cost")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    summary = {}
    if args.cost:
        summary["cost"] = cost(args)
    if args.run or args.label_run:
        summary["adherence"] = adherence(args)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
