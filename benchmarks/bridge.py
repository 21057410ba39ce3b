"""A data-to-data bridge on toy sets: two moons (source) to 8 Gaussians (target), the ready config ``toy2d-bridge``.

    python benchmarks/bridge.py --out runs/bridge      # trains it (~2 min of CPU) unless finished, then measures

The stochastic interpolant x_t = (1 - t) x0 + t x1 + 0.2 sqrt(t (1 - t)) z (``scorediff.losses.bridge``), unpaired.
2000 fresh source points are carried to t = 0 by registered deterministic samplers; sliced W2 (256 projections) of
the result to 2000 fresh target points (floor: two target draws; start: the source itself). Figure
``docs/img/bridge_moons.png``: 64 trajectories from source to target over both data sets.
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
from scorediff.runs import load_run  # noqa: E402
from scorediff.samplers import SAMPLERS, sample  # noqa: E402


def sw(x, y) -> float:
    return float(A.sliced_wasserstein(x, y, 256, torch.Generator().manual_seed(3)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/bridge")
    ap.add_argument("--figure", default=str(HERE.parent / "docs" / "img" / "bridge_moons.png"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    if not (out / "ema.safetensors").exists():
        assert cli(["train", "toy2d-bridge", "--out", str(out), "--set", "log.progress=false",
                    "--set", "log.tensorboard=false"]) == 0
    run = load_run(out)
    src = data.make("moons", n=2000, seed=3).x
    tgt = data.make("8gaussians", n=2000, seed=4).x
    print(f"sliced W2 to the target: floor {sw(data.make('8gaussians', n=2000, seed=5).x, tgt):.4f}, "
          f"source itself {sw(src, tgt):.4f}")
    print("| sampler | steps | model calls | sliced W2 |")
    print("|---|---|---|---|")
    for name, steps in (("euler", 4), ("euler", 16), ("heun", 16), ("dpm_solver_pp_2m", 16)):
        y = sample(run.denoiser, run.process, src, sampler=name, steps=steps)
        calls = steps * int(SAMPLERS[name].info.nfe_per_step)
        print(f"| {name} | {steps} | ~{calls} | {sw(y, tgt):.4f} |")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(src[:1000, 0], src[:1000, 1], s=2, c="tab:blue", alpha=0.3, label="source: moons")
    ax.scatter(tgt[:1000, 0], tgt[:1000, 1], s=2, c="0.6", alpha=0.5, label="target: 8 Gaussians")
    pts = [src[:64]]
    SAMPLERS["euler"](run.denoiser, run.process, src[:64], schedules.make("uniform", 50, run.process),
                      callback=lambda d: pts.append(d["x"]))
    traj = torch.stack(pts).detach()
    for i in range(traj.shape[1]):
        ax.plot(traj[:, i, 0], traj[:, i, 1], lw=0.6, c="tab:red", alpha=0.7)
    ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=6, c="tab:red", label="carried (t = 0)")
    ax.legend(loc="lower left", fontsize=7)
    ax.set_title("bridge: moons -> 8 Gaussians (gamma = 0.2)")
    fig.tight_layout()
    fig.savefig(args.figure)
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
