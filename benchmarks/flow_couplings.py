"""Flow matching with independent vs minibatch-OT couplings vs reflow: few-step quality, straightness, a figure.

    python benchmarks/flow_couplings.py --out runs/flow      # trains three runs (~2 min of CPU each), then measures
    python benchmarks/flow_couplings.py --out runs/flow      # again: reuses the finished runs

Runs (all on the 8-Gaussians toy set, the same MLP, 2000 optimizer steps): the ready configs ``toy2d-flow``
(independent coupling) and ``toy2d-ot`` (exact minibatch OT, ``scorediff.couplings``), identical otherwise, and the
reflow of ``toy2d-flow`` (``scorediff distill reflow``: 4000 pairs from Heun at 32 steps, 1000 steps, the 2-rectified
flow). Metrics on 2000 starts from N(0, I), the same for every run:

* sliced W2 (256 projections) of Euler samples with 1, 2, 4, 8 uniform steps from t = 1 to t_min
  (``scorediff.sample(..., sampler="euler", schedule="uniform")``, as many model calls) to
  2000 fresh draws of the data (floor: two data draws), and of Heun at 32 steps (the model's own accuracy);
* straightness S (Liu et al. 2023, Def. 3.6; ``scorediff.eval.straightness``): the mean squared deviation of the
  trajectory's velocity from its chord, 100 Euler steps; 0 for straight paths.

The figure (``docs/img/flow_couplings.png``): 64 trajectories of each run from the same starts, over the data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
try:
    import scorediff  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

import scorediff.analytic as A  # noqa: E402
from scorediff import data, schedules  # noqa: E402
from scorediff.cli import main as cli  # noqa: E402
from scorediff.eval.straightness import straightness  # noqa: E402
from scorediff.runs import load_run  # noqa: E402
from scorediff.samplers import SAMPLERS, sample  # noqa: E402

QUIET = ["--set", "log.progress=false", "--set", "log.tensorboard=false"]


def ensure_runs(out: Path) -> dict[str, Path]:
    runs = {"independent": out / "toy2d-flow", "minibatch OT": out / "toy2d-ot", "reflow (2-rectified)": out / "reflow"}
    for cfg in ("toy2d-flow", "toy2d-ot"):
        if not (out / cfg / "ema.safetensors").exists():
            assert cli(["train", cfg, "--out", str(out / cfg), *QUIET]) == 0
    if not (out / "reflow" / "ema.safetensors").exists():
        assert cli(["distill", "reflow", str(out / "toy2d-flow"), "--out", str(out / "reflow"), "--steps", "1000",
                    "--pairs", "4000", "--sample-steps", "4", *QUIET]) == 0
    return runs


def sw(x, y) -> float:
    return float(A.sliced_wasserstein(x, y, 256, torch.Generator().manual_seed(3)))


def figure(runs: dict, path: Path, truth: torch.Tensor) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.2), dpi=80)
    FigureCanvasAgg(fig)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(11))
    for k, (name, run) in enumerate(runs.items()):
        ax = fig.add_subplot(1, len(runs), k + 1)
        ax.scatter(truth[:1000, 0], truth[:1000, 1], s=2, c="0.8")
        path_pts = [x]
        ts = schedules.make("uniform", 100, run.process)
        SAMPLERS["euler"](run.denoiser, run.process, x, ts, callback=lambda d, pts=path_pts: pts.append(d["x"]))
        traj = torch.stack(path_pts).detach()  # (steps + 1, 64, 2)
        for i in range(traj.shape[1]):
            ax.plot(traj[:, i, 0], traj[:, i, 1], lw=0.7, alpha=0.8)
        ax.scatter(traj[0, :, 0], traj[0, :, 1], s=6, c="k", label="noise (t = 1)")
        ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=6, c="tab:red", label="sample (t = 0)")
        s, _ = straightness(run.denoiser, run.process, x, steps=100)
        ax.set_title(f"{name}: S = {s:.3f}")
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
        ax.set_aspect("equal")
        if k == 0:
            ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/flow", help="folder of the three runs (reused when finished)")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--figure", default=str(HERE.parent / "docs" / "img" / "flow_couplings.png"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs = {k: load_run(p) for k, p in ensure_runs(Path(args.out)).items()}
    truth = data.make("8gaussians", n=args.n, seed=1).x
    floor = sw(truth, data.make("8gaussians", n=args.n, seed=2).x)
    x = torch.randn(args.n, 2, generator=torch.Generator().manual_seed(0))
    print(f"sliced W2 to the data (floor {floor:.4f}) by Euler steps, Heun at 32 steps, and straightness S")
    print("| coupling | Euler 1 | Euler 2 | Euler 4 | Euler 8 | Heun 32 | straightness S |")
    print("|---|---|---|---|---|---|---|")
    for name, run in runs.items():
        with torch.no_grad():
            cells = [sw(sample(run.denoiser, run.process, x, sampler="euler", steps=k, schedule="uniform"), truth)
                     for k in (1, 2, 4, 8)]
            cells.append(sw(sample(run.denoiser, run.process, x, sampler="heun", steps=32), truth))
        s, _ = straightness(run.denoiser, run.process, x, steps=100)
        print(f"| {name} | " + " | ".join(f"{c:.4f}" for c in cells) + f" | {s:.4f} |", flush=True)
    figure(runs, Path(args.figure), truth)
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
