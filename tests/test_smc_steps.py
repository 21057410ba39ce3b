"""SMC must not degrade with its number of steps (issue 28), checked against the exact GP conditional.

Truth: ``gaussian_process(32)`` is a one-component ``GaussianMixture``; ``condition`` gives the exact forecast of
the last 16 values given the first 16 (itself checked against textbook GP regression in test_analytic.py).
Eight independent particle systems of 256 particles run in one batch, so the spread between systems measures
the Monte Carlo error of one system.
"""

from __future__ import annotations

import torch

from scorediff import inverse, processes
from scorediff.analytic import gaussian_process

SYSTEMS, PARTICLES = 8, 256


def _forecast_errors(steps: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    proc = processes.make("vp")
    gp = gaussian_process(32)
    x = gp.sample(1, torch.Generator().manual_seed(0))[0]
    mask = torch.zeros(1, 32, dtype=torch.bool)
    mask[0, :16] = True
    truth = gp.condition(x, mask)
    mu, sd = truth.means[0], truth.covs[0].diagonal().sqrt()
    scale = sd.pow(2).mean().sqrt()  # errors in units of the forecast's RMS standard deviation
    n = SYSTEMS * PARTICLES
    s = inverse.inpaint(gp.denoiser(proc), proc, x.expand(n, 1, 32).double(), mask, method="smc", steps=steps,
                        seed=0, particles=PARTICLES)
    torch.testing.assert_close(s.double().reshape(n, 32)[:, :16], x.reshape(1, 32)[:, :16].expand(n, 16).double(), atol=1e-6, rtol=0)
    f = s.reshape(SYSTEMS, PARTICLES, 32)[:, :, 16:]
    mean_err = (f.mean(1) - mu).pow(2).mean(1).sqrt() / scale  # per system
    sd_err = (f.std(1) - sd).pow(2).mean(1).sqrt() / scale
    pooled = f.reshape(-1, 16)
    return (mean_err, sd_err, float((pooled.mean(0) - mu).pow(2).mean().sqrt() / scale),
            float((pooled.std(0) - sd).pow(2).mean().sqrt() / scale))


def test_smc_gp_forecast_does_not_degrade_with_steps():
    few_mean, few_sd, _, _ = _forecast_errors(50)
    many_mean, many_sd, pooled_mean, pooled_sd = _forecast_errors(500)

    def worse_beyond_mc(many: torch.Tensor, few: torch.Tensor) -> bool:
        se = (many.var() / SYSTEMS + few.var() / SYSTEMS).sqrt()
        return bool(many.mean() > few.mean() + 2 * se)

    assert not worse_beyond_mc(many_mean, few_mean), (many_mean, few_mean)
    assert not worse_beyond_mc(many_sd, few_sd), (many_sd, few_sd)
    # a degenerate system collapses onto a few ancestors: its spread shrinks towards 0 (sd error -> 1); the
    # proposal this replaced gave 0.91 here, and 0.23 / 0.23 pooled over the 2048 samples (measured 0.11 / 0.10)
    assert float(many_sd.mean()) < 0.7, many_sd
    assert pooled_mean < 0.2 and pooled_sd < 0.2, (pooled_mean, pooled_sd)


def test_inpaint_step_count_defaults_per_method():
    from scorediff.analytic import ring2d
    from scorediff.inverse._common import DEFAULT_STEPS

    gm, proc = ring2d(), processes.make("vp")
    known, mask = torch.tensor([[0.6, 0.0]]).repeat(8, 1), torch.tensor([True, False])
    for method in ("smc", "replace"):
        den = gm.denoiser(proc)
        inverse.inpaint(den, proc, known, mask, method=method)
        assert den.nfe == DEFAULT_STEPS[method] + (1 if method == "smc" else 0)  # smc also denoises its start
    # protocol 5b (smc) and 5d (replace, repaint): docs/results/defaults.md
    assert (DEFAULT_STEPS["smc"], DEFAULT_STEPS["replace"], DEFAULT_STEPS["repaint"]) == (400, 400, 200)
