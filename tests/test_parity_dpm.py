"""Parity of the high-order solvers with an independent implementation: diffusers' schedulers.

Same analytic model (ring2d's exact denoiser, as an epsilon model), the DDPM linear schedule (vp-discrete,
T = 1000), the same timesteps and the same initial noise; diffusers' float32 tables are replaced by float64
ones (``tests.peers``), and its float32 upcast inside DPMSolverMultistepScheduler.step is kept in float64
(``peers.float64_updates``), so agreement is to rounding: 1e-12 on states of size ~1.
Where our defaults differ from diffusers', the comparison uses settings under which both compute the same
method, and the sampler's docstring says why (3M's weight of the second difference, PNDM's constant
coefficients, the final-step order rule at >= 15 steps).
"""

import pytest
import torch

import scorediff.processes as P
from scorediff.analytic import ring2d
from scorediff.samplers import SAMPLERS
from tests.conftest import import_or_skip_outside_ci

diffusers = import_or_skip_outside_ci("diffusers")  # in CI a missing diffusers fails
from diffusers.schedulers import scheduling_dpmsolver_multistep  # noqa: E402

from tests.peers import diffusers_config, float64_updates, run_scheduler, timesteps_to_ts_final  # noqa: E402

TOL = 1e-12



@pytest.fixture(scope="module")
def setup():
    p = P.make("vp-discrete")
    noise = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return p, ring2d().denoiser(p), noise


def run_theirs(scheduler, d, p, noise, steps, **kw):
    with float64_updates(scheduling_dpmsolver_multistep):
        return run_scheduler(scheduler, d, p, noise, steps, **kw)


@pytest.mark.parametrize(
    "steps,spacing", [(8, "linspace"), (8, "leading"), (8, "trailing"), (20, "linspace")]
)
def test_dpm_solver_pp_2m(setup, steps, spacing):
    p, d, noise = setup
    s = diffusers.DPMSolverMultistepScheduler(
        **diffusers_config(p), algorithm_type="dpmsolver++", solver_order=2, timestep_spacing=spacing
    )
    theirs, ts, x = run_theirs(s, d, p, noise, steps)
    ours = SAMPLERS["dpm_solver_pp_2m"](d, p, x, ts)
    assert (ours - theirs).abs().max() < TOL


@pytest.mark.parametrize("steps", [8, 20])
def test_dpm_solver_pp_3m_reference_form(setup, steps):
    p, d, noise = setup
    s = diffusers.DPMSolverMultistepScheduler(**diffusers_config(p), algorithm_type="dpmsolver++", solver_order=3)
    theirs, ts, x = run_theirs(s, d, p, noise, steps)
    ours = SAMPLERS["dpm_solver_pp_3m"](d, p, x, ts, reference_third_order=True)
    assert (ours - theirs).abs().max() < TOL
    # our default (the Taylor weight of the second difference) is a different method: it must differ
    assert (SAMPLERS["dpm_solver_pp_3m"](d, p, x, ts) - theirs).abs().max() > 1e-6


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("order", [2, 3])
def test_dpm_solver_multistep_noise_form(setup, order):
    # diffusers' "dpmsolver" (noise prediction) needs final_sigmas_type="sigma_min": the grid ends at t = 1 / T
    p, d, noise = setup
    s = diffusers.DPMSolverMultistepScheduler(
        **diffusers_config(p), algorithm_type="dpmsolver", solver_order=order, final_sigmas_type="sigma_min"
    )
    theirs, _, x = run_theirs(s, d, p, noise, 12)
    ts = timesteps_to_ts_final(s.timesteps, p, 1 / p.steps)
    ours = SAMPLERS["dpm_solver"](d, p, x, ts, method="multistep", order=order, reference_third_order=True)
    assert (ours - theirs).abs().max() < TOL


def test_dpm_solver_pp_2m_sde_same_noise(setup):
    # the SDE variant with the same generator stream: diffusers draws one N(0, I) per step, as we do (we draw none
    # on the final denoise-to-zero step, which comes last)
    p, d, noise = setup
    s = diffusers.DPMSolverMultistepScheduler(**diffusers_config(p), algorithm_type="sde-dpmsolver++", solver_order=2)
    theirs, ts, x = run_theirs(s, d, p, noise, 10, step_kwargs={"generator": torch.Generator().manual_seed(5)})
    ours = SAMPLERS["dpm_solver_pp_2m_sde"](d, p, x, ts, generator=torch.Generator().manual_seed(5))
    assert (ours - theirs).abs().max() < TOL


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("steps,lower_order_final", [(8, True), (20, False)])
def test_unipc(setup, variant, order, steps, lower_order_final):
    # final_sigmas_type="sigma_min" (grid ends at t = 1 / T): diffusers' bh1 returns NaN onto sigma = 0
    # (B(h) = -h = -inf times a zero sum). diffusers lowers the last steps' order at any step count, we only
    # below 15 steps: at 20 steps both run with lower_order_final=False.
    p, d, noise = setup
    s = diffusers.UniPCMultistepScheduler(
        **diffusers_config(p), solver_type=variant, solver_order=order, final_sigmas_type="sigma_min",
        lower_order_final=lower_order_final,
    )
    theirs, _, x = run_theirs(s, d, p, noise, steps)
    ts = timesteps_to_ts_final(s.timesteps, p, 1 / p.steps)
    ours = SAMPLERS[f"unipc_{variant}"](d, p, x, ts, order=order, lower_order_final=lower_order_final)
    assert (ours - theirs).abs().max() < TOL


def test_unipc_onto_sigma_zero(setup):
    # diffusers' default final sigma = 0: its last step returns x0_hat at the uncorrected state, as ours
    p, d, noise = setup
    s = diffusers.UniPCMultistepScheduler(**diffusers_config(p), solver_type="bh2", solver_order=2)
    theirs, ts, x = run_theirs(s, d, p, noise, 10)
    assert ts[-1] == 0
    assert (SAMPLERS["unipc_bh2"](d, p, x, ts) - theirs).abs().max() < TOL


@pytest.mark.parametrize("steps", [10, 20])
@pytest.mark.parametrize("name", ["pndm", "plms"])
def test_pndm_plms_paper_form(setup, name, steps):
    # PNDMScheduler (skip_prk_steps for PLMS) with the paper's constant coefficients (variable_step=False).
    # set_alpha_to_one=False and steps_offset=1: the last node is alpha_bar_1 (t = 1 / T), a regular step for us;
    # its float32 final_alpha_cumprod is replaced by the float64 value.
    p, d, noise = setup
    s = diffusers.PNDMScheduler(
        **diffusers_config(p), skip_prk_steps=name == "plms", set_alpha_to_one=False, steps_offset=1
    )
    s.final_alpha_cumprod = p.alpha_bar[0].clone()
    theirs, _, x = run_scheduler(s, d, p, noise, steps)
    ks = torch.as_tensor(s._timesteps[::-1].copy(), dtype=torch.float64)
    ts = torch.cat([(ks + 1) / p.steps, torch.tensor([1 / p.steps], dtype=torch.float64)])
    ours = SAMPLERS[name](d, p, x, ts, variable_step=False)
    assert (ours - theirs).abs().max() < TOL
