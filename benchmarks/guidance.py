"""Benchmark: classifier-free guidance on class-conditional 8x8 digits, and solvers under strong guidance.

1. ``scales``: a figure with one row per guidance scale (0, 1, 2, 4), one column per class, every column
   from the same noise (docs/img/guidance_scales.png).
2. ``tradeoff``: guidance scale against sample quality, 50 samples per class: the noisy classifier's
   accuracy on the samples (the fraction classified as the asked class, at its smallest trained noise
   level), the within-class diversity (mean pairwise L2 distance of samples of one class, divided by the
   same for the real digits of that class), and the Frechet distance between samples and the real digits in
   the classifier's penultimate features ("FID" with our classifier in place of Inception; trained on
   these digits, so a sanity measure, not comparable to published FIDs). Figure docs/img/guidance_tradeoff.png.
3. ``threshold``: the same quality measures for DPM-Solver++(2M), 10 steps, at scales 4, 8, 16 with and
   without dynamic thresholding.
4. ``solvers``: the known trouble of high-order multistep solvers under strong guidance (Lu et al. 2022,
   DPM-Solver++, sec. 4): for each sampler, steps and scale, the RMS distance of the samples to a
   converged solution of the same guided ODE from the same noise (Heun, 256 steps), on the oracle
   (mixture64, classes = components, the exact conditional denoiser) and on the digits model; and, on
   digits, the fraction of pixels outside [-1, 1] and the same with dynamic thresholding (Saharia et al.
   2022) applied by the wrapper (whose reference also uses it).

    python benchmarks/guidance.py [--run runs/digits-cond] [--parts scales,tradeoff,threshold,solvers]

The run (``scorediff train digits-cond``, ~3 min) and its classifier (``scorediff train-classifier``, ~4 min)
are trained first if the folder lacks them. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from scorediff import analytic, guidance, plotting  # noqa: E402
from scorediff import processes as P  # noqa: E402
from scorediff.samplers import SAMPLERS, sample  # noqa: E402

SOLVERS = ["ddim", "heun", "dpm_solver", "dpm_solver_pp_2m", "dpm_solver_pp_3m", "unipc_bh2", "unipc_bh2_3"]


def ensure_run(path: Path) -> None:
    from scorediff.training import config, train
    from scorediff.training.classifier import train_classifier

    if not (path / "ema.safetensors").exists():
        t0 = time.time()
        train(config.load("digits-cond", ["log.progress=false"]), path)
        print(f"trained {path} in {time.time() - t0:.0f} s", file=sys.stderr)
    if not (path / "classifier" / "info.json").exists():
        t0 = time.time()
        train_classifier(path, steps=2000)
        print(f"trained its classifier in {time.time() - t0:.0f} s", file=sys.stderr)


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import linalg

    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(sa @ sb)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa + sb - 2 * covmean))


def mean_pairwise(x: torch.Tensor) -> float:
    f = x.reshape(x.shape[0], -1).double()
    d = torch.cdist(f, f)
    n = f.shape[0]
    return float(d.sum() / (n * (n - 1)))


def part_scales(r, out: Path) -> None:
    labels = torch.arange(10)
    start = r.process.prior_sample((10, *r.shape), torch.Generator().manual_seed(0))
    rows = []
    for s in (0.0, 1.0, 2.0, 4.0):
        rows.append(sample(guidance.classifier_free(r.denoiser, s), r.process, start, sampler="heun", steps=18,
                           cond={"y": labels}))
    x = torch.cat(rows)
    plotting.save_image_grid(plotting.to_unit(x), out, nrow=10)
    print(f"wrote {out}: rows = guidance scale 0, 1, 2, 4; columns = classes 0..9, same noise per column\n")


class Quality:
    """Classifier accuracy, within-class diversity (real = 1) and FD in classifier features of digit samples."""

    def __init__(self, clf):
        from scorediff import data

        real = data.make("digits")
        self.clf = clf
        with torch.no_grad():
            self.fr = clf.features(real.x).numpy()
        self.div_real = [mean_pairwise(real.x[real.y == c]) for c in range(10)]

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[float, float, float]:
        clf = self.clf
        with torch.no_grad():
            acc = float((clf(x, clf.t_range[0]).argmax(1) == labels).double().mean())
            f = clf.features(x).numpy()
        div = float(np.mean([mean_pairwise(x[labels == c]) / self.div_real[c] for c in range(10)]))
        return acc, div, frechet(f, self.fr)


def part_threshold(r, clf, per_class: int = 50) -> None:
    """Does dynamic thresholding help the samples (not only the solver)? DPM-Solver++(2M), 10 steps."""
    quality = Quality(clf)
    labels = torch.arange(10).repeat_interleave(per_class)
    start = r.process.prior_sample((labels.numel(), *r.shape), torch.Generator().manual_seed(1))
    print("| scale | threshold | classifier accuracy | within-class diversity | FD in classifier features |")
    print("|---|---|---|---|---|")
    for s in (4.0, 8.0, 16.0):
        for p in (None, 0.995):
            x = sample(guidance.classifier_free(r.denoiser, s, threshold=p), r.process, start,
                       sampler="dpm_solver_pp_2m", steps=10, cond={"y": labels}).clamp(-1, 1)
            acc, div, fd = quality(x, labels)
            print(f"| {s:g} | {p or 'off'} | {acc:.3f} | {div:.3f} | {fd:.2f} |")
    print()


def part_tradeoff(r, clf, out: Path, per_class: int = 50) -> None:
    quality = Quality(clf)
    labels = torch.arange(10).repeat_interleave(per_class)
    start = r.process.prior_sample((labels.numel(), *r.shape), torch.Generator().manual_seed(1))
    scales = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0]
    rows = []
    print("| scale | classifier accuracy | within-class diversity (real = 1) | FD in classifier features |")
    print("|---|---|---|---|")
    for s in scales:
        x = sample(guidance.classifier_free(r.denoiser, s), r.process, start, sampler="heun", steps=18,
                   cond={"y": labels})
        acc, div, fd = quality(x, labels)
        rows.append((s, acc, div, fd))
        print(f"| {s:g} | {acc:.3f} | {div:.3f} | {fd:.2f} |")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.2))
    FigureCanvasAgg(fig)
    sc = [r_[0] for r_ in rows]
    for k, (i, name) in enumerate([(1, "classifier accuracy"), (2, "within-class diversity (real = 1)"),
                                   (3, "FD in classifier features")]):
        ax = fig.add_subplot(1, 3, k + 1)
        ax.plot(sc, [r_[i] for r_ in rows], "o-")
        ax.set_xlabel("guidance scale")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    print(f"\nwrote {out}\n")


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).mean().sqrt())


class _Counted:
    """Counts model calls of a denoiser (the network wrapper has no counter of its own)."""

    def __init__(self, denoiser):
        self.denoiser, self.nfe = denoiser, 0

    def __call__(self, x, t, **cond):
        self.nfe += 1
        return self.denoiser(x, t, **cond)


def part_solvers_oracle(budgets=(10, 20), scales=(1.0, 4.0, 8.0, 16.0)) -> None:
    # the oracle: mixture64 (10 classes = components), EDM process, exact conditional denoiser
    mix, proc = analytic.mixture64(), P.make("edm")
    n = 500
    labels = torch.arange(n) % 10
    start = proc.prior_sample((n, 64), torch.Generator().manual_seed(2), dtype=torch.float64)
    print("Oracle (mixture64, EDM, exact conditional denoiser): RMS distance to the converged guided ODE solution")
    print("(Heun, 256 steps) from the same noise, at a budget of about 10 and 20 model calls (NFE, measured).\n")
    _solver_table(lambda: mix.conditional_denoiser(proc), {}, proc, start, labels, budgets, scales)


def part_solvers_digits(r, budgets=(10, 20), scales=(1.0, 4.0, 8.0, 16.0)) -> None:
    n = 200
    labels = torch.arange(n) % 10
    start = r.process.prior_sample((n, *r.shape), torch.Generator().manual_seed(3))
    print("\nDigits model (digits-cond run): RMS distance (pixels in [-1, 1]) to the converged guided solution, and "
          "(in brackets) the fraction of pixels more than one grey level (1/8) outside [-1, 1]; then with "
          "dynamic thresholding (p = 0.995).\n")
    _solver_table(lambda: r.denoiser, {}, r.process, start, labels, budgets, scales, pixels=True)
    print()
    _solver_table(lambda: r.denoiser, {"threshold": 0.995}, r.process, start, labels, budgets, scales[1:], pixels=True)


def _steps_for(name: str, nfe: int) -> int:
    """Steps that spend about ``nfe`` model calls (Heun: 2 per step but 1 on the last; DPM-Solver-3: 3)."""
    per = SAMPLERS[name].info.nfe_per_step
    return max(1, (nfe + 1) // 2 if name == "heun" else int(nfe // per))


def _solver_table(make_denoiser, options, process, start, labels, budgets, scales, pixels=False) -> None:
    def run(s, name, steps):
        d = _Counted(make_denoiser())
        x = sample(guidance.classifier_free(d, s, **options), process, start, sampler=name, steps=steps,
                   dtype=start.dtype, cond={"y": labels})
        return x, d.nfe

    refs = {s: run(s, "heun", 256)[0] for s in scales}
    print("| sampler | NFE | " + " | ".join(f"scale {s:g}" for s in scales) + " |")
    print("|" + "---|" * (2 + len(scales)))
    for name in SOLVERS:
        for budget in budgets:
            cells = []
            for s in scales:
                x, nfe = run(s, name, _steps_for(name, budget))
                err = _rms(x, refs[s])
                cell = "nan" if not math.isfinite(err) else f"{err:.3f}"
                if pixels:
                    # the digits take 17 grey levels 1/8 apart; a pixel beyond 1 + 1/8 is visibly clipped
                    cell += f" ({float((x.abs() > 1.125).double().mean()):.2f})"
                cells.append(cell)
            print(f"| {name} | {nfe} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/digits-cond")
    parser.add_argument("--parts", default="scales,tradeoff,threshold,solvers",
                        help="comma-separated: scales, tradeoff, threshold, solvers (= solvers-oracle + solvers-digits)")
    parser.add_argument("--img", default=str(ROOT / "docs" / "img"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from scorediff.training import load_run

    run = Path(args.run)
    ensure_run(run)
    r = load_run(run)
    clf = guidance.load_classifier(run / "classifier")
    parts = args.parts.split(",")
    img = Path(args.img)
    t0 = time.time()
    if "scales" in parts:
        part_scales(r, img / "guidance_scales.png")
    if "tradeoff" in parts:
        part_tradeoff(r, clf, img / "guidance_tradeoff.png")
    if "threshold" in parts:
        part_threshold(r, clf)
    if "solvers" in parts or "solvers-oracle" in parts:
        part_solvers_oracle()
    if "solvers" in parts or "solvers-digits" in parts:
        part_solvers_digits(r)
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
