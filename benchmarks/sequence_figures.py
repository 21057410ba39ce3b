"""The figures of docs/guides/sequences-video.md, written to docs/img/.

    python benchmarks/sequence_figures.py [--series-run RUN] [--video-run RUN]

Always (seconds, no training): a fan chart of the exact-denoiser forecast of a Gaussian process next to its
exact conditional, an imputation at a random mask, and a strip of built-in moving-digits clips. With trained
runs (``scorediff train series-gp`` / ``moving-digits``): the run's forecast fan chart and a strip of its
sampled clips and frame predictions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from scorediff import data, forecast, masking, processes
from scorediff.analytic import MaskedDenoiser
from scorediff.data.series import gp_oracle
from scorediff.plotting import sequences as sequence_plots

OUT = Path(__file__).resolve().parent.parent / "docs" / "img"


def oracle_figures() -> None:
    L, K = 32, 16
    gp = gp_oracle(L, 1, "matern52", 0.2)
    proc = processes.make("vp")
    x = gp.sample(1, torch.Generator().manual_seed(5))[0].float()
    s = forecast.forecast(MaskedDenoiser(gp, proc), proc, x[:, :K], L - K, (1, L), num=500, method="conditional",
                          steps=100)
    sequence_plots.save_fan_chart(x[:, :K], s, OUT / "seq_forecast_exact.png", truth=x[:, K:],
                                  title="conditional sampling with the exact GP denoiser (500 forecasts)")
    exact = gp.condition(x, masking.forecast_mask((1, L), K)).sample(500, torch.Generator().manual_seed(1))
    sequence_plots.save_fan_chart(x[:, :K], exact.reshape(500, 1, L - K).float(), OUT / "seq_forecast_truth.png",
                                  truth=x[:, K:], title="the exact GP conditional (500 draws)")
    m = torch.rand(1, L, generator=torch.Generator().manual_seed(2)) < 0.3
    imp = forecast.complete(MaskedDenoiser(gp, proc), proc, x.expand(300, 1, L), m, method="conditional", steps=100)
    sequence_plots.save_imputation(x, m, imp, OUT / "seq_impute_exact.png", truth=x,
                                   title="imputation at a random 30% mask (exact GP denoiser)")
    clips = data.make("moving-digits", n=4, frames=8, size=16, seed=1).x
    sequence_plots.save_video_strip(clips, OUT / "seq_moving_digits.png", scale=3)


def run_figures(series_run: str | None, video_run: str | None) -> None:
    from scorediff.training import load_run

    if series_run:
        r = load_run(series_run)
        opts = r.config["data"]["options"]
        gp = gp_oracle(opts.get("length", 32), 1, opts.get("kernel", "matern52"), opts.get("lengthscale", 0.2))
        x = gp.sample(1, torch.Generator().manual_seed(12345))[0].float()
        L, K = x.shape[1], x.shape[1] // 2
        s = forecast.forecast_run(r, x[:, :K], L - K, num=200, sampler="dpm_solver_pp_2m", steps=20)
        sequence_plots.save_fan_chart(x[:, :K], s, OUT / "seq_forecast_trained.png", truth=x[:, K:],
                                      title=f"trained series-gp run (step {r.step}), conditional, 200 forecasts")
    if video_run:
        from scorediff.samplers import sample

        r = load_run(video_run)
        clips = sample(r.denoiser, r.process, (4, *r.shape), sampler="dpm_solver_pp_2m_sde", steps=25, seed=0)
        ctx = data.make("moving-digits", n=4, frames=r.shape[1], size=r.shape[2], seed=7).x
        k = r.shape[1] // 2
        pred = forecast.complete(r.denoiser, r.process, ctx, masking.forecast_mask(r.shape, k), method="conditional",
                                 sampler="dpm_solver_pp_2m_sde", steps=25, seed=0)
        sequence_plots.save_video_strip(torch.cat([clips, ctx, pred]), OUT / "seq_video_trained.png", max_clips=12,
                                        scale=3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series-run", default=None)
    ap.add_argument("--video-run", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    oracle_figures()
    run_figures(a.series_run, a.video_run)
    print(OUT)


if __name__ == "__main__":
    main()
