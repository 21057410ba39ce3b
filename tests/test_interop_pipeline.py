"""`scorediff sample FOLDER` on a local diffusers pipeline folder, end to end against diffusers' own loop.

Tiny randomly initialised pipelines are saved to tmp_path here. The independent implementation is diffusers: its
scheduler drives the raw U-Net from the same start noise (``process.prior_sample`` with the CLI's seed), with
classifier-free guidance written out as the Stable Diffusion pipeline does it. The unconditional folder
(``DDPMPipeline``: a ``UNet2DModel`` and a scheduler) runs in CI; the Stable-Diffusion-style one needs a CLIP text
encoder, i.e. the optional transformers package, and is skipped without it.
"""

import json
import os

import numpy as np
import pytest
import torch

from scorediff.cli import main

if os.environ.get("CI"):
    import diffusers  # in CI the test extra installs diffusers: a failing import must fail
else:
    diffusers = pytest.importorskip("diffusers")
from scorediff import interop  # noqa: E402
from tests.test_interop import TOL, diffusers_loop  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def tiny_image_unet(seed=0):
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()


def start_noise(shape, seed=0):
    """The start of a batch seeded ``seed``: diffusers' pipelines' latents, N(0, I) from a generator of that seed."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def ddpm_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddpm_pipeline")
    scheduler = diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")
    diffusers.DDPMPipeline(unet=tiny_image_unet(), scheduler=scheduler).save_pretrained(str(folder))
    return folder


def test_cli_samples_an_unconditional_pipeline_folder_like_diffusers(ddpm_folder, tmp_path, capsys):
    # DDIM over the scheduler's own (trailing) grid from the same noise: diffusers' loop, to float32 round-off
    assert main(["sample", str(ddpm_folder), "--steps", "5", "--num", "3", "--out", str(tmp_path)]) == 0
    png = tmp_path / "sample_ddim_5.png"
    assert capsys.readouterr().out.strip() == str(png) and png.is_file()
    ours = torch.from_numpy(np.load(png.with_suffix(".npz"))["samples"])
    unet = diffusers.UNet2DModel.from_pretrained(str(ddpm_folder / "unet")).eval()
    scheduler = diffusers.DDIMScheduler.from_pretrained(str(ddpm_folder / "scheduler"))
    x = start_noise((3, 1, 8, 8))
    theirs, _ = diffusers_loop(unet, scheduler, x, 5)
    assert ours.shape == (3, 1, 8, 8)
    assert (ours - theirs).abs().max() <= TOL * theirs.abs().max()
    assert sorted(p.name for p in ddpm_folder.iterdir()) == ["model_index.json", "scheduler", "unet"]  # read only


def test_cli_pipeline_folder_takes_any_sampler_and_batches_by_seed(ddpm_folder, tmp_path):
    # batch i starts from seed + i: 2 samples in batches of 1 = the first sample of seeds 0 and 1
    out = tmp_path / "heun.png"
    assert main(["sample", str(ddpm_folder), "--sampler", "heun", "--steps", "3", "--num", "2", "--batch", "1",
                 "--seed", "4", "--out", str(out)]) == 0
    got = np.load(out.with_suffix(".npz"))["samples"]
    pipe = interop.load_pipeline(ddpm_folder)
    for i in range(2):
        one = interop.generate_pipeline(pipe, 1, sampler="heun", steps=3, seed=4 + i).x
        assert np.array_equal(got[i:i + 1], one.numpy())
    assert not np.array_equal(got[0], got[1])


@pytest.mark.parametrize("args, message", [
    (["--prompt", "a cat"], "need a text-conditioned U-Net (UNet2DConditionModel); this folder's is a UNet2DModel"),
    (["--guidance", "2"], "need a text-conditioned U-Net"),
    (["--class", "1"], "--class: not available for a diffusers pipeline folder"),
    (["--sampler", "nope"], "nope"),
])
def test_cli_pipeline_folder_bad_options_are_one_line(ddpm_folder, tmp_path, capsys, args, message):
    assert main(["sample", str(ddpm_folder), "--steps", "2", "--num", "1", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_cli_bad_folders_name_what_is_missing(ddpm_folder, tmp_path, capsys):
    def error(folder, *extra):
        assert main(["sample", str(folder), "--steps", "2", "--num", "1", *extra]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        return err

    empty = tmp_path / "empty"
    empty.mkdir()
    err = error(empty)
    assert repr(str(empty)) in err and "not a run folder (no config.json) nor a diffusers pipeline folder" in err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (broken / "text_encoder").mkdir()
    err = error(broken)
    assert repr(str(broken)) in err
    for part in ("no unet/config.json", "no scheduler/scheduler_config.json", "text_encoder/ without tokenizer/"):
        assert part in err
    err = error(ddpm_folder, "--out", str(ddpm_folder / "x.png"))  # a reader never writes into the folder
    assert "lies inside the run folder" in err


# -- a Stable-Diffusion-style folder: CLIP text encoder (transformers), UNet2DConditionModel, AutoencoderKL ------

VOCAB = ["<|startoftext|>", "<|endoftext|>", "a</w>", "c", "a", "t", "t</w>", "ca", "cat</w>", "d", "o", "g</w>",
         "do", "dog</w>", "!</w>"]
MERGES = ["#version: 0.2", "c a", "ca t</w>", "d o", "do g</w>"]


def tiny_sd_folder(folder):
    transformers = pytest.importorskip("transformers")
    (folder / "tok").mkdir(parents=True)
    (folder / "tok" / "vocab.json").write_text(json.dumps({w: i for i, w in enumerate(VOCAB)}))
    (folder / "tok" / "merges.txt").write_text("\n".join(MERGES) + "\n")
    tokenizer = transformers.CLIPTokenizer(str(folder / "tok" / "vocab.json"), str(folder / "tok" / "merges.txt"),
                                           model_max_length=8, pad_token="<|endoftext|>")
    torch.manual_seed(0)
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(VOCAB), hidden_size=6, intermediate_size=12, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=8, bos_token_id=0, eos_token_id=1, pad_token_id=1)).eval()
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=4, cross_attention_dim=6, attention_head_dim=2,
    ).eval()
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=2, block_out_channels=(8, 8),
                                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                                  norm_num_groups=4, layers_per_block=1, scaling_factor=0.5).eval()
    scheduler = diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=True, beta_schedule="scaled_linear",
                                        beta_start=0.00085, beta_end=0.012, timestep_spacing="leading", steps_offset=1)
    pipe = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                             scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.save_pretrained(str(folder / "sd"))
    return folder / "sd", tokenizer, text_encoder, unet, vae, scheduler


def test_cli_samples_a_stable_diffusion_folder_with_prompts_like_diffusers(tmp_path, capsys):
    # prompts encoded by CLIP (padding masked), guidance 3 with a negative prompt: diffusers' DDIM loop with
    # eps_u + s (eps_c - eps_u) on the same embeddings, then the VAE decoder at z / scaling_factor
    folder, tokenizer, text_encoder, unet, vae, scheduler = tiny_sd_folder(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    prompts = ["a cat", "a dog !"]
    assert main(["sample", str(folder), "--prompt", prompts[0], "--prompt", prompts[1], "--negative-prompt", "a dog",
                 "--guidance", "3", "--steps", "4", "--num", "2", "--out", str(out)]) == 0
    npz = np.load(out / "sample_ddim_4.npz")
    assert list(npz["prompts"]) == prompts and npz["samples"].shape == (2, 3, 16, 16)

    def embed(texts):
        t = tokenizer(texts, padding="longest", return_tensors="pt")
        with torch.no_grad():
            return text_encoder(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).last_hidden_state, \
                t["attention_mask"].bool()

    (cond, mask), (neg, _) = embed(prompts), embed(["a dog"])
    sample = start_noise((2, 2, 8, 8))
    scheduler.set_timesteps(4)
    with torch.no_grad():
        for k in scheduler.timesteps:
            eps_u = unet(sample, k, encoder_hidden_states=neg.expand(2, -1, -1)).sample
            eps_c = unet(sample, k, encoder_hidden_states=cond, encoder_attention_mask=mask).sample
            sample = scheduler.step(eps_u + 3.0 * (eps_c - eps_u), k, sample).prev_sample
        theirs = vae.decode(sample / 0.5).sample
    assert np.abs(npz["latents"] - sample.numpy()).max() <= 10 * TOL * sample.abs().max().item()
    assert np.abs(npz["samples"] - theirs.numpy()).max() <= 10 * TOL * theirs.abs().max().item()
