"""The default `digits` config's sampling (issue 14: the default sampler at no more than 35 evaluations).

The sampler and step count of the config's ``sample`` section were chosen on held-out digits
(benchmarks/README.md, "Default digits run: held-out search"); these tests check what must hold whatever the
measured quality: the evaluation count, and that with an exact denoiser the chosen sampler draws the true
distribution on the config's own process.
"""

from __future__ import annotations

import torch

from scorediff import analytic, processes, sample
from scorediff.training import config


def _digits_sampling():
    cfg = config.load("digits")
    s = cfg["sample"]
    process = processes.make(cfg["process"]["name"], **cfg["process"]["options"])
    return process, s["sampler"], int(s["steps"]), dict(s["options"])


def test_digits_sampler_uses_at_most_35_evaluations_and_draws_the_exact_mixture():
    # mixture64: a 64-dimensional Gaussian mixture (the digits' 8x8 = 64 dimensions), whose exact denoiser
    # counts its evaluations. The samples' sliced W2 to fresh mixture samples must be near the sampling-noise
    # floor (two independent draws of the truth); measured 0.98x the floor at 35 steps, 2.8x at 5 steps.
    process, sampler, steps, options = _digits_sampling()
    gm = analytic.mixture64()
    g = torch.Generator().manual_seed(0)
    ref, other = gm.sample(2000, g), gm.sample(2000, g)
    floor = float(analytic.sliced_wasserstein(ref, other, generator=torch.Generator().manual_seed(1)))
    den = gm.denoiser(process)
    x = sample(den, process, (2000, 64), sampler=sampler, steps=steps, seed=0, **options)
    assert den.nfe <= 35
    sw = float(analytic.sliced_wasserstein(x, ref, generator=torch.Generator().manual_seed(1)))
    assert sw < 1.5 * floor, (sampler, steps, sw, floor)
