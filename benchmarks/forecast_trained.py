"""Probabilistic forecasts of a trained gp-series run, scored by CRPS and energy score against the exact GP.

    python -m scorediff train series-gp --out runs/series-gp
    python benchmarks/forecast_trained.py runs/series-gp [--contexts 20] [--num 50] [--context-steps 16]
    python -m scorediff train series-seasonal --out runs/series-seasonal
    python benchmarks/forecast_trained.py runs/series-seasonal

Test series: ``contexts`` fresh draws (seed 12345, not the training seed) of the run's own GP (``gp_oracle`` with
the run's data options); each one's first ``context-steps`` steps are the context, the rest the truth to score.
Forecasters: the run with each conditioning method (conditional: DPM-Solver++(2M), 20 steps; repaint: DDPM,
25 steps, jumps 5, 2 passes), next to the exact GP conditional (the best any forecaster can do: the GP's own
posterior with the kernel known), "naive" (the last value repeated: seasonal naive with period 1), for a
``periodic`` or ``seasonal`` kernel "seasonal naive" (the last season of the context repeated, at the true period
period * (L - 1) steps), and "climatology" (unconditional draws of the GP, ignoring the context). Columns: CRPS
(mean over steps) and energy score (over the whole horizon), averaged over the test series (+- standard error);
lower is better (``scorediff.eval.scoring_rules``). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from scorediff import forecast, masking
from scorediff.data.series import gp_oracle
from scorediff.eval.scoring_rules import crps, energy_score
from scorediff.training import load_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--contexts", type=int, default=20)
    ap.add_argument("--num", type=int, default=50, help="forecast samples per context")
    ap.add_argument("--context-steps", type=int, default=16)
    ap.add_argument("--methods", nargs="+", default=["conditional", "repaint"])
    a = ap.parse_args()
    torch.set_num_threads(1)
    run = load_run(a.run)
    opts = dict(run.config["data"]["options"])
    gp = gp_oracle(**{k: opts[k] for k in ("length", "channels", "kernel", "lengthscale", "variance", "period")
                      if k in opts})
    C, L = run.shape
    k, m, num = a.context_steps, a.contexts, a.num
    series = gp.sample(m, torch.Generator().manual_seed(12345)).float()  # (m, C, L)
    mask = masking.forecast_mask((C, L), k)
    g = torch.Generator().manual_seed(0)
    forecasts: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    forecasts["exact GP conditional"] = torch.stack(
        [gp.condition(s, mask).sample(num, g).reshape(num, C, L - k).float() for s in series])
    forecasts["naive (last value)"] = series[:, None, :, k - 1:k].expand(m, 1, C, L - k)
    if opts.get("kernel") in ("periodic", "seasonal"):  # the season in steps: period / grid spacing 1 / (L - 1)
        p = round(float(opts.get("period", 0.5)) * (L - 1))
        if 1 <= p <= k:
            steps = k - p + torch.arange(L - k) % p  # the same phase in the last season of the context
            forecasts[f"seasonal naive (period {p})"] = series[:, None, :, steps]
    forecasts["climatology"] = gp.sample(m * num, g).float().reshape(m, num, C, L)[..., k:]
    settings = {"conditional": dict(sampler="dpm_solver_pp_2m", steps=20),
                "repaint": dict(sampler="ddpm", steps=25, jumps=5, resample=2)}
    for method in a.methods:
        known = series[:, None].expand(m, num, C, L).reshape(m * num, C, L)
        t0 = time.perf_counter()
        with torch.no_grad():
            x = forecast.complete(run.denoiser, run.process, known, mask, method=method, seed=1,
                                  **settings.get(method, {}))
        seconds[f"model: {method}"] = time.perf_counter() - t0
        forecasts[f"model: {method}"] = x.reshape(m, num, C, L)[..., k:]
    print(f"run {a.run} (step {run.step}); {m} test series, context {k} steps, horizon {L - k}, {num} samples each")
    print("| forecaster | CRPS | energy score | seconds |")
    print("|---|---|---|---|")
    for name, f in forecasts.items():
        truth = series[..., k:]
        c = torch.tensor([crps(f[i], truth[i]) for i in range(m)])
        e = torch.tensor([energy_score(f[i], truth[i]) for i in range(m)])
        se = lambda v: float(v.std() / math.sqrt(m))  # noqa: E731
        sec = f"{seconds[name]:.0f}" if name in seconds else "-"
        print(f"| {name} | {float(c.mean()):.3f} +- {se(c):.3f} | {float(e.mean()):.3f} +- {se(e):.3f} | {sec} |",
              flush=True)


if __name__ == "__main__":
    main()
