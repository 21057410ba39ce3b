"""Parity with an independent implementation: diffusers' DDIM, Euler and Heun schedulers.

The model is the analytic eps-model of a DDPM (vp-discrete, linear betas, T = 1000): eps from the oracle's
exact x0_hat. diffusers' timestep k is our t = (k + 1) / T (``tests/peers.py``). Same timesteps, same
start: our samplers must give the same samples. diffusers' schedule tables are replaced by the process's
float64 values (``peers.float64_schedule``); DDIM and Heun then agree to float64 round-off. Euler agrees
to ~1e-6 only: EulerDiscreteScheduler.step casts the sample to float32 internally.
"""

import pytest
import torch

import scorediff.analytic as A
import scorediff.processes as P
from scorediff import schedules
from scorediff.samplers import SAMPLERS
from tests.conftest import import_or_skip_outside_ci

diffusers = import_or_skip_outside_ci("diffusers")  # in CI a missing diffusers fails
# diffusers converts the float64 schedule tables with np.array(tensor): a numpy-2 deprecation, not ours
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
peers = import_or_skip_outside_ci("tests.peers")


@pytest.fixture(scope="module")
def setup():
    p = P.make("vp-discrete")
    mix = A.mixture64(dim=8, components=4, rank=2, seed=3)
    noise = torch.randn(32, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return p, mix, noise


CASES = [
    ("ddim", diffusers.DDIMScheduler, {"set_alpha_to_one": True, "clip_sample": False, "timestep_spacing": "leading"}, 1e-12),
    ("ddim", diffusers.DDIMScheduler, {"set_alpha_to_one": True, "clip_sample": False, "timestep_spacing": "trailing"}, 1e-12),
    ("euler", diffusers.EulerDiscreteScheduler, {"timestep_spacing": "leading"}, 1e-5),
    ("euler", diffusers.EulerDiscreteScheduler, {"timestep_spacing": "trailing"}, 1e-5),
    ("heun", diffusers.HeunDiscreteScheduler, {"timestep_spacing": "leading"}, 1e-12),
    ("heun", diffusers.HeunDiscreteScheduler, {"timestep_spacing": "trailing"}, 1e-12),
]


@pytest.mark.parametrize("name,cls,config,tol", CASES, ids=[f"{c[0]}-{c[2]['timestep_spacing']}" for c in CASES])
@pytest.mark.parametrize("steps", [10, 25])
def test_matches_diffusers(setup, name, cls, config, tol, steps):
    p, mix, noise = setup
    sched = cls(**peers.diffusers_config(p), **config)
    theirs, ts, x_start = peers.run_scheduler(sched, mix.denoiser(p), p, noise, steps)
    # their timesteps are our schedule of the same name (ending on clean data, t = 0)
    assert torch.allclose(ts, schedules.make(config["timestep_spacing"], steps, p), atol=0, rtol=1e-15)
    d = mix.denoiser(p)
    ours = SAMPLERS[name](d, p, x_start, ts)
    assert d.nfe == (2 * steps - 1 if name == "heun" else steps)  # Heun's last step onto sigma = 0 is Euler
    scale = theirs.abs().max()
    assert (ours - theirs).abs().max() <= tol * scale, f"max diff {(ours - theirs).abs().max():.3g}"


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_ddim_eta_matches_diffusers_with_the_same_noise(setup, eta):
    # eta > 0: diffusers gets our noise through ``variance_noise``, the draws our sampler makes from the same
    # generator (one per step, in order). 10 steps: with a step count that does not divide T, diffusers'
    # DDIM steps to t - T // N, which is not its next timestep under "trailing" spacing (a diffusers quirk).
    p, mix, noise = setup
    sched = diffusers.DDIMScheduler(**peers.diffusers_config(p), set_alpha_to_one=True, clip_sample=False,
                                    timestep_spacing="trailing")
    g = torch.Generator().manual_seed(11)
    draws = [torch.randn(noise.shape, generator=g, dtype=torch.float64) for _ in range(10)]
    theirs, ts, x_start = peers.run_scheduler(sched, mix.denoiser(p), p, noise, 10,
                                              step_kwargs=lambda i: {"eta": eta, "variance_noise": draws[i]})
    ours = SAMPLERS["ddim"](mix.denoiser(p), p, x_start, ts, eta=eta, generator=torch.Generator().manual_seed(11))
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12)
