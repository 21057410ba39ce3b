"""diffusers interop: a wrapped diffusers model sampled by scorediff equals diffusers' own scheduler loop.

The models are tiny randomly initialised ``UNet2DModel`` / ``UNet2DConditionModel`` built here (a few
channels, 8x8). The independent implementation is diffusers itself: its scheduler (DDIM, Euler,
DPM-Solver++(2M), EDM Euler) drives the raw model over its timesteps; scorediff's sampler drives
``from_diffusers``' denoiser over the same grid (diffusers' timestep k is our t = (k + 1) / T,
``tests/peers.py``) from the same start. Both run in float32, so agreement is to float32 round-off.
"""

import os

import pytest
import torch

import scorediff
from scorediff import likelihood
from tests.peers import timesteps_to_ts

if os.environ.get("CI"):
    import diffusers  # in CI the test extra installs diffusers: a failing import must fail
else:
    diffusers = pytest.importorskip("diffusers")
from scorediff import interop  # noqa: E402

# diffusers converts schedule tables with np.array(tensor): a numpy deprecation, not ours
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

TOL = 2e-5  # float32: relative to the sample's scale


def tiny_unet(seed=0, out_channels=2):
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=2, out_channels=out_channels, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()


def tiny_cond_unet(seed=0):
    torch.manual_seed(seed)
    return diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=4, cross_attention_dim=6, attention_head_dim=2,
    ).eval()


def noise(n=3, seed=1):
    return torch.randn(n, 2, 8, 8, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def diffusers_loop(unet, scheduler, x, steps, **cond):
    """diffusers' own sampling loop; returns (final sample, our grid ts, start state x_t at ts[0])."""
    scheduler.set_timesteps(steps)
    sample = x * scheduler.init_noise_sigma
    # the model's x_t at the first timestep (e.g. Euler keeps x / alpha and feeds alpha x)
    x_start = scheduler.scale_model_input(sample, scheduler.timesteps[0]).clone()
    for k in scheduler.timesteps:
        out = unet(scheduler.scale_model_input(sample, k), k, **cond).sample
        sample = scheduler.step(out, k, sample).prev_sample
    return sample, x_start


CASES = [
    # (our sampler, diffusers scheduler, its config)
    ("ddim", diffusers.DDIMScheduler, {"clip_sample": False, "set_alpha_to_one": True}),
    ("ddim", diffusers.DDIMScheduler, {"clip_sample": False, "set_alpha_to_one": True, "prediction_type": "v_prediction",
                                       "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}),
    ("ddim", diffusers.DDIMScheduler, {"clip_sample": False, "set_alpha_to_one": True, "prediction_type": "sample",
                                       "beta_schedule": "squaredcos_cap_v2", "timestep_spacing": "trailing"}),
    ("euler", diffusers.EulerDiscreteScheduler, {"timestep_spacing": "leading"}),
    ("euler", diffusers.EulerDiscreteScheduler, {"timestep_spacing": "trailing", "prediction_type": "v_prediction",
                                                 "beta_schedule": "scaled_linear"}),
    ("dpm_solver_pp_2m", diffusers.DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    ("dpm_solver_pp_2m", diffusers.DPMSolverMultistepScheduler,
     {"algorithm_type": "dpmsolver++", "solver_order": 2, "beta_schedule": "squaredcos_cap_v2",
      "num_train_timesteps": 500, "timestep_spacing": "trailing"}),
]


@pytest.mark.parametrize("name,cls,config", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_sampler_matches_diffusers_loop(name, cls, config):
    unet, scheduler = tiny_unet(), cls(**config)
    theirs, x_start = diffusers_loop(unet, scheduler, noise(), 8)
    denoiser, process = interop.from_diffusers(unet, scheduler)
    ts = timesteps_to_ts(scheduler.timesteps, process)
    with torch.no_grad():
        ours = scorediff.sample(denoiser, process, x_start, sampler=name, schedule=ts)
    assert (ours - theirs).abs().max() <= TOL * theirs.abs().max(), f"max diff {(ours - theirs).abs().max():.3g}"


def test_sampling_schedule_reproduces_the_scheduler_grid():
    # sampling_schedule's grid is the scheduler's: exactly for the integer spacings, to diffusers' float32 and
    # its log-sigma interpolation of timesteps (~1e-4) for Karras sigmas
    for spacing, offset in (("leading", 0), ("trailing", 0), ("leading", 1)):  # 1: Stable Diffusion's steps_offset
        s = diffusers.DDIMScheduler(timestep_spacing=spacing, steps_offset=offset)
        s.set_timesteps(10)
        _, process = interop.from_diffusers(tiny_unet(), s)
        grid = scorediff.schedules.make(steps=10, process=process, **_grid_args(interop.sampling_schedule(s)))
        assert torch.allclose(grid, timesteps_to_ts(s.timesteps, process), rtol=1e-12, atol=0)
    s = diffusers.EulerDiscreteScheduler(use_karras_sigmas=True)
    s.set_timesteps(10)
    _, process = interop.from_diffusers(tiny_unet(), s)
    grid = scorediff.schedules.make(steps=10, process=process, **_grid_args(interop.sampling_schedule(s)))
    sigma_tilde = process.sigma(grid) / process.alpha(grid)
    assert torch.allclose(sigma_tilde, s.sigmas.double(), rtol=2e-4, atol=0)


def _grid_args(kw):
    return {"name": kw["schedule"], **kw.get("schedule_options", {})}


def test_karras_euler_matches_diffusers_loop():
    # Euler on Karras sigmas: diffusers feeds fractional timesteps (interpolated in log sigma between integers),
    # we feed t T - 1 (log alpha_bar interpolated in t): the grids agree to ~1e-4 (measured samples: ~1e-6)
    unet, s = tiny_unet(), diffusers.EulerDiscreteScheduler(use_karras_sigmas=True)
    theirs, x_start = diffusers_loop(unet, s, noise(), 10)
    denoiser, process = interop.from_diffusers(unet, s)
    with torch.no_grad():
        ours = scorediff.sample(denoiser, process, x_start, sampler="euler", steps=10, **interop.sampling_schedule(s))
    assert (ours - theirs).abs().max() <= 1e-4 * theirs.abs().max()


def test_process_has_the_schedulers_exact_alphas_cumprod():
    for cfg in ({"beta_schedule": "linear"}, {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
                {"beta_schedule": "squaredcos_cap_v2"}, {"beta_schedule": "linear", "num_train_timesteps": 200},
                {"trained_betas": torch.linspace(1e-3, 0.05, 50).tolist(), "num_train_timesteps": 50}):
        s = diffusers.DDPMScheduler(**cfg)
        _, process = interop.from_diffusers(tiny_unet(), s)
        assert process.name == "vp-discrete" and process.steps == s.config.num_train_timesteps
        # diffusers keeps float32 tables (its float32 cumprod drifts by ~1e-5 over 1000 steps); ours are float64
        assert torch.allclose(process.betas, s.betas.double(), rtol=1e-6, atol=0)
        assert torch.allclose(process.alpha_bar, s.alphas_cumprod.double(), rtol=1e-4, atol=0)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_x0_hat_is_diffusers_own_conversion(prediction):
    # at a grid time the denoiser's x0_hat is what DDPMScheduler.step computes as pred_original_sample
    unet, s = tiny_unet(), diffusers.DDPMScheduler(prediction_type=prediction, clip_sample=False)
    s.set_timesteps(1000)
    denoiser, process = interop.from_diffusers(unet, s)
    x, k = noise(), 437
    with torch.no_grad():
        out = unet(x, k).sample
        theirs = s.step(out, k, x, generator=torch.Generator().manual_seed(0)).pred_original_sample
        ours = denoiser(x, (k + 1) / 1000)
    assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("sigma_schedule", ["karras", "exponential"])
def test_edm_euler_matches_diffusers(prediction, sigma_schedule):
    # EDM preconditioning (Karras et al. 2022): EDMEulerScheduler's loop against our Euler on the edm process,
    # on the grid sampling_schedule gives (Karras sigmas, or log-uniform sigmas = our logsnr grid)
    unet = tiny_unet()
    s = diffusers.EDMEulerScheduler(prediction_type=prediction, sigma_max=20.0, sigma_schedule=sigma_schedule)
    s.set_timesteps(8)
    sample = noise() * s.init_noise_sigma
    with torch.no_grad():
        x = sample.clone()
        for k in s.timesteps:
            x = s.step(unet(s.scale_model_input(x, k), k).sample, k, x).prev_sample
        denoiser, process = interop.from_diffusers(unet, s)
        assert process.name == "edm" and process.t_max == 20.0
        ours = scorediff.sample(denoiser, process, sample, sampler="euler", steps=8, **interop.sampling_schedule(s))
    assert (ours - x).abs().max() <= TOL * x.abs().max()


def test_conditional_unet_passes_cond_through():
    unet, s = tiny_cond_unet(), diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=True)
    ehs = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(2))
    theirs, x_start = diffusers_loop(unet, s, noise(), 6, encoder_hidden_states=ehs)
    denoiser, process = interop.from_diffusers(unet, s)
    ts = timesteps_to_ts(s.timesteps, process)
    with torch.no_grad():
        ours = scorediff.sample(denoiser, process, x_start, sampler="ddim", schedule=ts, cond={"encoder_hidden_states": ehs})
        other = scorediff.sample(denoiser, process, x_start, sampler="ddim", schedule=ts,
                                 cond={"encoder_hidden_states": -ehs})
    assert (ours - theirs).abs().max() <= TOL * theirs.abs().max()
    assert (other - theirs).abs().max() > 1e-3  # the condition reaches the model


def test_learned_variance_output_keeps_the_mean_half():
    unet, s = tiny_unet(out_channels=4), diffusers.DDPMScheduler(variance_type="learned_range")
    denoiser, _ = interop.from_diffusers(unet, s)
    x = noise()
    with torch.no_grad():
        eps = unet(x, 99).sample[:, :2]
        a, sig = s.alphas_cumprod[99].sqrt(), (1 - s.alphas_cumprod[99]).sqrt()
        assert torch.allclose(denoiser(x, 0.1), (x - sig * eps) / a, rtol=1e-5, atol=1e-5)


def test_folder_round_trip(tmp_path):
    unet = tiny_unet()
    s = diffusers.DPMSolverMultistepScheduler(prediction_type="v_prediction", beta_schedule="scaled_linear")
    unet.save_pretrained(tmp_path / "unet")
    s.save_pretrained(tmp_path / "scheduler")
    loaded, process = interop.from_diffusers(tmp_path)  # a pipeline-style folder: unet/ and scheduler/
    direct, _ = interop.from_diffusers(unet, s)
    alone, _ = interop.from_diffusers(tmp_path / "unet", tmp_path / "scheduler" / "scheduler_config.json")
    x = noise()
    with torch.no_grad():
        expected = direct(x, 0.3)
        assert torch.equal(loaded(x, 0.3), expected)
        assert torch.equal(alone(x, 0.3), expected)
    assert process.config() == interop.process_from_scheduler(s)[0].config()


def test_log_likelihood_of_a_wrapped_model_runs():
    unet, s = tiny_unet(), diffusers.DDPMScheduler()
    denoiser, process = interop.from_diffusers(unet, s)
    x = noise(2).clamp(-1, 1)
    with torch.no_grad():
        vlb = likelihood.log_likelihood(denoiser, process, x, method="vlb", stride=100,
                                        generator=torch.Generator().manual_seed(0))
    ode = likelihood.log_likelihood(denoiser, process, x, trace="hutchinson", rtol=1e-3, atol=1e-3,
                                    generator=torch.Generator().manual_seed(0))
    for res in (vlb, ode):
        assert res.logp.shape == (2,) and torch.isfinite(res.logp).all() and res.nfe > 0

    # The value: the same bound through a denoiser written here from the scheduler's own alphas_cumprod and the
    # UNet's eps at the integer timestep k = t T - 1 (x0_hat = (x - sqrt(1 - abar_k) eps) / sqrt(abar_k)).
    abar = s.alphas_cumprod.double()

    def by_hand(xt, t, **cond):
        k = torch.round(torch.as_tensor(t, dtype=torch.float64).expand(xt.shape[0]) * 1000 - 1).long()
        a, sig = abar[k].sqrt().float()[:, None, None, None], (1 - abar[k]).sqrt().float()[:, None, None, None]
        return (xt - sig * unet(xt, k.float()).sample) / a

    with torch.no_grad():
        expected = likelihood.log_likelihood(by_hand, process, x, method="vlb", stride=100,
                                             generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(vlb.logp, expected.logp, rtol=1e-4, atol=1e-3)


def test_bad_inputs_name_what_is_wrong(tmp_path):
    unet = tiny_unet()
    with pytest.raises(ValueError, match="beta_schedule 'sigmoid' is not mapped"):
        interop.from_diffusers(unet, {"beta_schedule": "sigmoid"})
    with pytest.raises(ValueError, match="trained_betas has 3 entries but num_train_timesteps is 1000"):
        interop.from_diffusers(unet, {"trained_betas": [0.1, 0.2, 0.3]})
    with pytest.raises(ValueError, match="rescale_betas_zero_snr"):
        interop.from_diffusers(unet, {"rescale_betas_zero_snr": True})
    with pytest.raises(ValueError, match="prediction_type 'flow' is not mapped"):
        interop.from_diffusers(unet, {"prediction_type": "flow"})
    with pytest.raises(FileNotFoundError, match="no diffusers model"):
        interop.from_diffusers(tmp_path)
    with pytest.raises(ValueError, match="needs its scheduler"):
        interop.from_diffusers(unet)


# -- export: a scorediff U-Net as a diffusers UNet2DModel ------------------------------------------------------


def randomized(net):
    # scorediff initialises residual branches near zero; random weights make every layer count
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return net.eval()


UNET = {"type": "unet", "in_channels": 2, "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
        "attention_levels": [1], "norm_groups": 4, "time_injection": "scale_shift"}
EXPORTS = [
    ("vp-discrete", {}, "eps", {}),
    # add-injection, two heads, class labels, 3 levels, cosine betas, v prediction
    ("vp-discrete", {"schedule": "cosine"}, "v", {"channel_mult": [1, 2, 2], "num_res_blocks": 2, "attention_levels": [1, 2],
                                                  "num_heads": 2, "time_injection": "add", "num_classes": 3, "emb_mult": 2}),
    ("vp-discrete", {"schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}, "x0", {"mid_attention": False}),
    ("edm", {}, "edm", {}),
]


@pytest.mark.parametrize("process,popts,param,over", EXPORTS, ids=[f"{e[0]}-{e[2]}" for e in EXPORTS])
def test_export_computes_the_same_denoiser(process, popts, param, over):
    from scorediff import nets, parameterizations, processes

    net = randomized(nets.make({**UNET, **over}))
    p = processes.make(process, **popts)
    ours = parameterizations.NetDenoiser(net, p, parameterizations.make(param)).eval()
    unet, scheduler = interop.to_diffusers(ours, (2, 8, 8))
    assert isinstance(unet, diffusers.UNet2DModel)
    theirs, p2 = interop.from_diffusers(unet, scheduler)
    assert p2.config() == p.config()
    x = noise()
    labels = {"y": torch.tensor([0, 2, -1])} if over.get("num_classes") else {}
    their_labels = {"class_labels": torch.tensor([0, 2, 3])} if over.get("num_classes") else {}  # null = last row
    times = [0.001, 0.4373, 0.981, 0.5555] if process == "vp-discrete" else [0.01, 1.3, 40.0]  # 0.5555: off the grid
    with torch.no_grad():
        for t in times:
            a, b = ours(x, t, **labels), theirs(x, t, **their_labels)
            assert (a - b).abs().max() <= 1e-5 * a.abs().max(), (t, float((a - b).abs().max()))


def test_export_time_shift_is_a_rotation_of_the_features():
    # the exported model at diffusers' timestep k is our network at noise input k + 1 (DDPM: 1000 t = k + 1)
    from scorediff import nets

    net = randomized(nets.make(UNET))
    x, k = noise(), torch.tensor([0.0, 411.0, 999.0])
    shifted = interop.unet_to_diffusers(net, (2, 8, 8), time_shift=1.0)
    plain = interop.unet_to_diffusers(net, (2, 8, 8))
    with torch.no_grad():
        ref = net(x, k + 1)
        assert (shifted(x, k).sample - ref).abs().max() <= 1e-5 * ref.abs().max()
        assert (plain(x, k).sample - net(x, k)).abs().max() <= 1e-5 * ref.abs().max()
        assert (plain(x, k).sample - ref).abs().max() > 1e-3  # the shift matters


@pytest.mark.parametrize("over,process,param,message", [
    ({"skip_rescale": True}, "vp-discrete", "eps", "skip_rescale=True"),
    ({"embedding": "fourier"}, "vp-discrete", "eps", "embedding 'fourier'"),
    ({"norm_groups": 16}, "vp-discrete", "eps", "norm_groups 16 does not divide every width [8, 16]"),
    ({}, "vp", "eps", "process 'vp' (diffusers' schedulers are discrete VP"),
    ({}, "vp-discrete", "score", "parameterization 'score' on vp-discrete"),
    ({"context_dim": 4}, "vp-discrete", "eps", "context_dim 4 (a text-conditioned U-Net"),
])
def test_export_refuses_what_does_not_map(over, process, param, message):
    from scorediff import nets, parameterizations, processes

    d = parameterizations.NetDenoiser(nets.make({**UNET, **over}), processes.make(process), parameterizations.make(param))
    with pytest.raises(ValueError, match="cannot export to diffusers: .*" + message.replace("[", r"\[").replace("(", r"\(")):
        interop.to_diffusers(d, (2, 8, 8))


def test_export_cli_round_trip(tmp_path, capsys):
    # the default digits run (EDM) and a DDPM variant: exported, loaded back, the same denoiser
    from scorediff.cli import main
    from scorediff.training import load_run

    fast = ["--set", "optim.steps=1", "--set", "log.progress=false", "--set", "sample.every=0", "--set", "sample.num=4",
            "--set", "sample.steps=2"]
    ddpm = ["--set", 'process.name="vp-discrete"', "--set", 'parameterization.name="eps"',
            "--set", 'loss.options.weighting="simple"', "--set", 'sample.sampler="ddim"']
    for name, extra in (("edm", []), ("ddpm", ddpm)):
        run = tmp_path / name
        assert main(["train", "digits", "--out", str(run), *fast, *extra]) == 0
        out = tmp_path / f"{name}-diffusers"
        assert main(["export", str(run), "--diffusers", str(out)]) == 0
        ours = load_run(run)
        theirs, process = interop.from_diffusers(out)
        assert process.config() == ours.process.config()
        x = torch.randn(4, *ours.shape, generator=torch.Generator().manual_seed(0))
        t = 0.5 * process.t_max
        with torch.no_grad():
            a, b = ours.denoiser(x, t), theirs(x, t)
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()
    assert isinstance(diffusers.DDPMPipeline.from_pretrained(str(tmp_path / "ddpm-diffusers")), diffusers.DDPMPipeline)
    capsys.readouterr()
    assert main(["export", str(tmp_path / "edm"), "--diffusers", str(tmp_path / "edm-diffusers")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


def test_export_refuses_a_network_without_a_diffusers_class():
    from scorediff import nets, parameterizations, processes

    d = parameterizations.NetDenoiser(nets.make("mlp-2d"), processes.make("vp-discrete"), parameterizations.make("eps"))
    with pytest.raises(ValueError, match="cannot export to diffusers: network type 'mlp' has no diffusers counterpart"):
        interop.to_diffusers(d, (2,))


# -- prompts: Stable-Diffusion-style classifier-free guidance and the latent text-to-image pipeline ------------


@torch.no_grad()
def diffusers_cfg_loop(unet, scheduler, x, steps, scale, cond_emb, uncond_emb, mask=None):
    """The Stable Diffusion pipeline's denoising loop: [uncond; cond] in one batch, eps_u + s (eps_c - eps_u)."""
    scheduler.set_timesteps(steps)
    sample = x * scheduler.init_noise_sigma
    x_start = scheduler.scale_model_input(sample, scheduler.timesteps[0]).clone()
    ehs = torch.cat([uncond_emb.expand_as(cond_emb), cond_emb])
    kw = {} if mask is None else {"encoder_attention_mask": torch.cat([torch.ones_like(mask), mask])}
    for k in scheduler.timesteps:
        inp = scheduler.scale_model_input(torch.cat([sample, sample]), k)
        eps_u, eps_c = unet(inp, k, encoder_hidden_states=ehs, **kw).sample.chunk(2)
        sample = scheduler.step(eps_u + scale * (eps_c - eps_u), k, sample).prev_sample
    return sample, x_start


@pytest.mark.parametrize("masked", [False, True])
def test_prompt_guidance_matches_the_stable_diffusion_loop(masked):
    # scorediff's classifier_free on context / negative = the pipeline's CFG on encoder_hidden_states (eps is
    # affine in x0_hat at fixed (x, t), so guiding x0_hat is guiding eps); with a padding mask as well
    unet, s = tiny_cond_unet(), diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=True,
                                                        beta_schedule="scaled_linear")
    g = torch.Generator().manual_seed(3)
    cond_emb, uncond_emb = torch.randn(3, 4, 6, generator=g), torch.randn(1, 4, 6, generator=g)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool) if masked else None
    theirs, x_start = diffusers_cfg_loop(unet, s, noise(), 6, 4.0, cond_emb, uncond_emb, mask)
    denoiser, process = interop.from_diffusers(unet, s)
    ts = timesteps_to_ts(s.timesteps, process)
    guided = scorediff.guidance.classifier_free(denoiser, 4.0, negative=(uncond_emb, None))
    cond = {"context": cond_emb} if mask is None else {"context": cond_emb, "context_mask": mask}
    with torch.no_grad():
        ours = scorediff.sample(guided, process, x_start, sampler="ddim", schedule=ts, cond=cond)
    assert (ours - theirs).abs().max() <= TOL * theirs.abs().max()


def test_text_to_image_folder_matches_diffusers(tmp_path):
    # a pipeline folder (unet/, scheduler/, vae/) with fixed prompt embeddings: scorediff's sampler and guidance,
    # then the VAE's decoder at z / scaling_factor, against diffusers' loop and decoder
    torch.manual_seed(0)
    unet = tiny_cond_unet()
    vae = diffusers.AutoencoderKL(in_channels=1, out_channels=1, latent_channels=2, block_out_channels=(8, 8),
                                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                                  norm_num_groups=4, layers_per_block=1, scaling_factor=0.5).eval()
    s = diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")
    unet.save_pretrained(tmp_path / "unet")
    s.save_pretrained(tmp_path / "scheduler")
    vae.save_pretrained(tmp_path / "vae")
    model = interop.text_to_image(tmp_path)
    assert model.latent_shape == (2, 8, 8) and model.scale == 0.5 and model.text_encoder is None
    g = torch.Generator().manual_seed(4)
    cond_emb, uncond_emb = torch.randn(2, 4, 6, generator=g), torch.randn(1, 4, 6, generator=g)
    x = noise(2)
    z, x_start = diffusers_cfg_loop(unet, s, x, 5, 3.0, cond_emb, uncond_emb)
    with torch.no_grad():
        theirs = vae.decode(z / 0.5).sample
    ts = timesteps_to_ts(s.timesteps, model.process)
    ours = model.sample((cond_emb, None), guidance=3.0, negative=(uncond_emb, None), start=x_start, schedule=ts)
    assert ours.shape == (2, 1, 16, 16)
    assert (ours - theirs).abs().max() <= 10 * TOL * theirs.abs().max()
    with pytest.raises(ValueError, match="no text encoder"):
        model.sample(["a prompt"])
