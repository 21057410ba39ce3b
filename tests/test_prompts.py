"""Text-conditioned generation: attention masks, the text encoder, guidance on prompts, captions, training, CLI.

Truth: masked tokens must have no effect (changing them changes nothing, to float round-off); the exact
denoiser of a Gaussian mixture whose prompt selects components (``analytic.PromptDenoiser``) is a perfect
text-conditioned model, so classifier-free guidance on prompts, negative prompts and the batching of
prompts of different lengths are checked against its closed form, and guided sampling at scale 1 against
the selected sub-mixture.
"""

from __future__ import annotations

import json

import pytest
import torch

import scorediff
from scorediff import analytic, guidance, nets
from scorediff import processes as P
from scorediff.cli import main
from scorediff.data import captions as C
from scorediff.nets.attention import MultiHeadAttention, cat_contexts
from scorediff.nets.text import BOS, PAD, ByteTextTransformer, byte_tokens
from scorediff.text_encoders import JointEncoder, prompt_guidance

# -- attention masks ----------------------------------------------------------------------------------------


def _padded(B=3, L=5, D=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    context = torch.randn(B, L, D, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)[:B, :L]
    other = torch.where(mask[..., None], context, torch.randn(B, L, D, generator=g) * 10)  # new padding values
    return context, mask, other


def test_cross_attention_ignores_masked_tokens():
    torch.manual_seed(0)
    attn = MultiHeadAttention(8, heads=2, context_dim=6)
    h = torch.randn(3, 4, 8)
    context, mask, other = _padded()
    out = attn(h, context, mask)
    assert torch.allclose(attn(h, other, mask), out, atol=1e-6)
    # the same prompt without its padding gives the same output
    assert torch.allclose(attn(h[1:2], context[1:2, :1], mask[1:2, :1]), out[1:2], atol=1e-6)
    # a real token does matter, and a prompt with no real token adds exactly 0
    changed = context.clone()
    changed[:, 0] += 1
    assert (attn(h, changed, mask) - out).abs().max() > 1e-3
    assert attn(h, context, torch.zeros_like(mask)).abs().max() == 0


NETS = {
    "unet": lambda: nets.make("unet-tiny", context_dim=6, pooled_context=True, out_init_scale=1.0),
    "dit-cross": lambda: nets.make("dit-tiny", context_dim=6, pooled_context=True),
    "dit-concat": lambda: nets.make("dit-tiny", context_dim=6, context_mode="concat"),
}


@pytest.mark.parametrize("name", NETS)
def test_networks_ignore_padding_and_use_the_prompt(name):
    torch.manual_seed(0)
    net = NETS[name]().eval()
    for p in net.parameters():  # DiT starts at exactly 0 output (adaLN-Zero): give every weight a value
        p.data += 0.05 * torch.randn_like(p)
    x, s = torch.randn(3, 1, 8, 8), torch.rand(3) * 100
    context, mask, other = _padded()
    with torch.no_grad():
        out = net(x, s, context=context, context_mask=mask)
        assert torch.allclose(net(x, s, context=other, context_mask=mask), out, atol=1e-5)
        changed = context.clone()
        changed[:, 0] += 1
        assert (net(x, s, context=changed, context_mask=mask) - out).abs().max() > 1e-4
        # no prompt at all = a prompt whose tokens are all masked
        assert torch.allclose(net(x, s, context=context, context_mask=torch.zeros_like(mask)), net(x, s), atol=1e-5)
    with pytest.raises(ValueError, match="context must have shape"):
        net(x, s, context=context[..., :5], context_mask=mask)
    with pytest.raises(ValueError, match="context_mask must be bool"):
        net(x, s, context=context, context_mask=mask.float())


def test_label_and_context_combine():
    net = nets.make("unet-tiny", context_dim=6, num_classes=10, out_init_scale=1.0).eval()
    x, s = torch.randn(3, 1, 8, 8), torch.rand(3) * 100
    context, mask, _ = _padded()
    with torch.no_grad():
        a = net(x, s, y=torch.tensor([1, 2, 3]), context=context, context_mask=mask)
        b = net(x, s, y=torch.tensor([4, 2, 3]), context=context, context_mask=mask)
    assert (a[0] - b[0]).abs().max() > 0 and torch.allclose(a[1:], b[1:])
    with pytest.raises(ValueError, match="without cross-attention"):
        nets.make("unet-tiny")(x, s, context=context)


# -- the byte-level text encoder ------------------------------------------------------------------------------


def test_byte_tokens():
    t = byte_tokens(["", "ab", "é"], max_length=8)
    assert t.tolist() == [[BOS, PAD, PAD], [BOS, 97, 98], [BOS, 0xC3, 0xA9]]
    assert byte_tokens(["abcdefgh"], max_length=4).tolist() == [[BOS, 97, 98, 99]]
    with pytest.raises(ValueError, match="list of strings"):
        byte_tokens("abc")


def test_text_encoder_ignores_padding_and_null_is_one_token():
    torch.manual_seed(0)
    enc = JointEncoder(ByteTextTransformer(width=16, depth=2, heads=2, max_length=32))
    with torch.no_grad():
        alone, m1 = enc.encode(["a thick seven"])
        batch, m2 = enc.encode(["a thick seven", "a much longer prompt about a thin one"])
        null, mn = enc.null()
    L = alone.shape[1]
    assert m1.all() and m2[0, :L].all() and not m2[0, L:].any()
    assert torch.allclose(batch[0, :L], alone[0], atol=1e-5) and batch[0, L:].abs().max() == 0
    assert null.shape == (1, 1, 16) and mn.tolist() == [[True]]


# -- guidance on prompts, against the exact prompt-conditional mixture ---------------------------------------


@pytest.fixture(scope="module")
def oracle():
    return analytic.PromptDenoiser(analytic.ring2d(), P.make("vp"))


def _x_t(oracle, t, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = oracle.mixture.sample(n, g)
    return oracle.process.marginal(x0, t, torch.randn(x0.shape, generator=g, dtype=torch.float64))


def test_prompt_oracle_is_the_sub_mixture(oracle):
    t = torch.full((6,), 0.4, dtype=torch.float64)
    x = _x_t(oracle, t, 6)
    prompts = [[0], [1, 5], [], [2, 3, 4], [7], [0, 1, 2, 3, 4, 5, 6, 7]]
    context, mask = analytic.prompt_tokens(prompts, 8)
    out = oracle(x, t, context=context, context_mask=mask)
    for b, comps in enumerate(prompts):
        sub = oracle.mixture_of(comps or list(range(8)))
        assert torch.allclose(out[b], sub.x0_mean(x[b:b + 1], t[b:b + 1], oracle.process)[0], atol=1e-10)


def test_classifier_free_on_prompts_is_the_formula_in_one_call(oracle):
    t = torch.full((4,), 0.5, dtype=torch.float64)
    x = _x_t(oracle, t, 4, seed=1)
    prompts = [[0], [1, 5], [3], [2, 6, 7]]  # different lengths: padded and masked in the batched call
    context, mask = analytic.prompt_tokens(prompts, 8)
    null = analytic.prompt_tokens([[]], 8)
    for scale in (0.0, 1.0, 3.5):
        g = guidance.classifier_free(oracle, scale, negative=null)
        before = oracle.nfe
        got = g(x, t, context=context, context_mask=mask)
        assert oracle.nfe - before == 1
        d_c = oracle(x, t, context=context, context_mask=mask)
        d_u = oracle.mixture.x0_mean(x, t, oracle.process)
        assert torch.allclose(got, d_u + scale * (d_c - d_u), atol=1e-10)
    # a negative prompt per example replaces the null branch: D_neg + s (D_c - D_neg)
    neg, neg_mask = analytic.prompt_tokens([[4], [4, 0], [], [1]], 8)
    got = guidance.classifier_free(oracle, 2.0)(x, t, context=context, context_mask=mask, negative_context=neg,
                                                negative_context_mask=neg_mask)
    d_n = oracle(x, t, context=neg, context_mask=neg_mask)
    assert torch.allclose(got, d_n + 2.0 * (oracle(x, t, context=context, context_mask=mask) - d_n), atol=1e-10)


def test_guidance_on_prompts_errors(oracle):
    x, t = torch.zeros(2, 2, dtype=torch.float64), torch.full((2,), 0.5, dtype=torch.float64)
    context, mask = analytic.prompt_tokens([[0], [1]], 8)
    with pytest.raises(ValueError, match="needs the unconditional prompt"):
        guidance.classifier_free(oracle, 2.0)(x, t, context=context, context_mask=mask)
    with pytest.raises(ValueError, match="without a prompt"):
        guidance.classifier_free(oracle, 2.0)(x, t, y=torch.tensor([0, 1]), negative_context=context)
    with pytest.raises(ValueError, match="labels, a prompt or observations"):
        guidance.classifier_free(oracle, 2.0)(x, t)


def test_guided_sampling_at_scale_one_samples_the_prompted_mixture(oracle):
    # scale 1 through the guidance wrapper (null branch present but weighted 0) = the exact conditional
    n = 2000
    context, mask = analytic.prompt_tokens([[1, 4]], 8)
    g = guidance.classifier_free(oracle, 1.0, negative=analytic.prompt_tokens([[]], 8))
    x = scorediff.sample(g, oracle.process, (n, 2), sampler="heun", steps=40, seed=0, dtype=torch.float64,
                         cond={"context": context, "context_mask": mask})
    sub = oracle.mixture_of([1, 4])
    post = oracle.mixture.component_posterior(x, torch.full((n,), oracle.process.t_min, dtype=torch.float64),
                                              oracle.process)
    assert post[:, [1, 4]].sum(1).mean() > 0.99  # every sample on a selected component
    share = post[:, 1].mean() / post[:, [1, 4]].sum(1).mean()
    w = sub.weights[0]
    assert abs(share - w) < 4 * (w * (1 - w) / n) ** 0.5 + 0.01


def test_labels_and_prompts_together():
    calls = []

    def fake(x, t, y=None, context=None, context_mask=None):
        calls.append((y.clone(), context.clone(), context_mask.clone()))
        return x * 0 + y[:, None].double() + context.sum((1, 2))[:, None]

    x, t = torch.zeros(2, 3, dtype=torch.float64), torch.full((2,), 0.5, dtype=torch.float64)
    c, m = torch.ones(2, 2, 1, dtype=torch.float64), torch.ones(2, 2, dtype=torch.bool)
    null = (torch.zeros(1, 1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.bool))
    out = guidance.classifier_free(fake, 2.0, negative=null)(x, t, y=torch.tensor([3, 4]), context=c, context_mask=m)
    (y, ctx, mask), = calls
    assert y.tolist() == [3, 4, -1, -1] and mask.tolist() == [[True, True]] * 2 + [[True, False]] * 2
    # D_u = -1 + 0, D_c = y + 2: D_g = -1 + 2 (y + 3)
    assert out[:, 0].tolist() == [-1 + 2 * 6, -1 + 2 * 7]


def test_cat_contexts_pads_with_masked_zeros():
    a, b = torch.ones(1, 2, 3), torch.ones(2, 4, 3)
    c, m = cat_contexts((a, None), (b, torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)))
    assert c.shape == (3, 4, 3) and c[0, 2:].abs().max() == 0
    assert m.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]


# -- captions ---------------------------------------------------------------------------------------------------


def test_attribute_measurements_on_drawn_strokes():
    x = -torch.ones(3, 1, 8, 8)
    for r in range(8):
        x[0, 0, r, 7 - r] = 1  # "/": leans right
        x[1, 0, r, r] = 1  # "\": leans left
        x[2, 0, r, 3:5] = 1  # "|" twice as thick
    a = C.measure_attributes(x)
    assert a["slant"][0] == pytest.approx(1.0) and a["slant"][1] == pytest.approx(-1.0) and a["slant"][2] == 0
    assert a["thickness"].tolist() == [8.0, 8.0, 16.0]
    assert a["width"][2] == pytest.approx(0.5)


def test_digits_text_captions_follow_the_measurements():
    ds = scorediff.data.make("digits-text")
    assert len(ds) == 1797 and ds.info.num_classes == 10
    lv = ds.attributes
    for i in range(0, 1797, 97):
        caps, name = ds.captions[i], C.NUMBER_WORDS[int(ds.y[i])]
        assert f"{'an' if name == 'eight' else 'a'} {name}" in caps and str(int(ds.y[i])) in caps
        assert ("thick" in caps[0].split()) == (int(lv["thickness_level"][i]) == 1)
        assert ("thin" in caps[0].split()) == (int(lv["thickness_level"][i]) == -1)
        assert ("leaning right" in caps[0]) == (int(lv["slant_level"][i]) == 1)
    # each level holds about a third of each class
    assert abs((lv["thickness_level"] == 1).float().mean() - 1 / 3) < 0.02
    # phrasings drawn by a generator: same seed, same prompts; a split keeps captions with their images
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert ds.prompts(range(50), g()) == ds.prompts(range(50), g())
    test = scorediff.data.make("digits-text", split="test")
    j = int(scorediff.data.split_indices(1797, "test")[5])
    assert test.captions[5] == ds.captions[j] and torch.equal(test.x[5], ds.x[j])


def _image(path):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (4, 4), 200).save(path)


def test_caption_folder_formats(tmp_path):
    _image(tmp_path / "a" / "one.png")
    _image(tmp_path / "a" / "two.png")
    (tmp_path / "a" / "one.txt").write_text("a bright square\nsquare\n")
    (tmp_path / "a" / "two.txt").write_text("another\n")
    ds = scorediff.data.make("folder-captions", path=str(tmp_path / "a"), mode="gray")
    assert ds.prompts([0, 1]) == ["a bright square", "another"]
    assert set(ds.prompts([0] * 40, torch.Generator().manual_seed(0))) == {"a bright square", "square"}
    for table, key in (("metadata.jsonl", "text"), ("captions.jsonl", "caption")):
        root = tmp_path / table.split(".")[0]
        _image(root / "img" / "x.png")
        _image(root / "y.png")
        (root / table).write_text(json.dumps({"file_name": "img/x.png", key: "ex"}) + "\n\n"
                                  + json.dumps({"file_name": "y.png", key: ["why", "y"]}) + "\n")
        ds = scorediff.data.make("folder-captions", path=str(root), mode="gray")
        assert ds.prompts([0, 1]) == ["ex", "why"]


@pytest.mark.parametrize("case", ["missing", "empty", "not-utf8", "jsonl-empty", "jsonl-bad", "jsonl-unknown",
                                  "jsonl-not-utf8"])
def test_caption_folder_bad_input_names_the_file(tmp_path, case):
    _image(tmp_path / "p.png")
    _image(tmp_path / "q.png")
    (tmp_path / "p.txt").write_text("fine")
    named = tmp_path / "q.txt"
    if case == "empty":
        named.write_text("  \n\n")
    elif case == "not-utf8":
        named.write_bytes(b"caf\xe9")
    elif case == "missing":
        named = tmp_path / "q.png"
    else:
        named = tmp_path / "metadata.jsonl"
        line = {"jsonl-empty": '{"file_name": "q.png", "text": ""}', "jsonl-bad": '{"file_name": "q.png", "text"',
                "jsonl-unknown": '{"file_name": "r.png", "text": "r"}', "jsonl-not-utf8": None}[case]
        if line is None:
            named.write_bytes(b'{"file_name": "q.png", "text": "caf\xe9"}\n')
        else:
            named.write_text(line + "\n")
    with pytest.raises(ValueError) as e:
        scorediff.data.make("folder-captions", path=str(tmp_path), mode="gray")
    msg = str(e.value)
    assert str(named) in msg and "\n" not in msg
    assert {"missing": "no caption", "empty": "empty caption", "not-utf8": "not UTF-8", "jsonl-empty": "empty caption",
            "jsonl-bad": "not valid JSON", "jsonl-unknown": "names no image", "jsonl-not-utf8": "not UTF-8"}[case] in msg


# -- training with prompts, the CLI -----------------------------------------------------------------------------

_TINY = ["--set", "net.preset=unet-tiny", "--set", "optim.batch_size=8", "--set", "log.progress=false",
         "--set", "sample.num=4", "--set", "sample.steps=2", "--set", "text.options.width=8",
         "--set", "text.options.depth=1", "--set", "text.options.heads=2", "--set", "log.tensorboard=false",
         "--set", "net.overrides.cross_attention_levels=[1]"]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("text") / "run"
    assert main(["train", "digits-text", "--out", str(out), "--set", "optim.steps=2", *_TINY]) == 0
    return out


def test_prompt_dropout_rate_and_exact_resume(tmp_path):
    from scorediff.training import config as config_mod
    from scorediff.training.loop import Trainer, train

    cfg = config_mod.load("digits-text", [*_TINY[1::2], "text.dropout=0.3", "optim.steps=4"])
    tr = Trainer(cfg, tmp_path / "a")
    try:
        tr.batches.next()
        prompts = [p for _ in range(100) for p in tr._prompts()]
        n, k = len(prompts), prompts.count("")
        assert abs(k / n - 0.3) < 4 * (0.3 * 0.7 / n) ** 0.5
        known = {c for caps in tr.components.dataset.captions for c in caps}
        assert set(prompts) <= known | {""}
    finally:
        tr.close()
    whole = train(cfg, tmp_path / "whole")
    train(cfg, tmp_path / "half", stop_after=2)
    resumed = train(cfg, tmp_path / "half", resume=True)
    for (name, a), b in zip(whole.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(k.startswith("text.") for k in whole.net.state_dict())  # the encoder is trained and saved


def test_cli_sample_with_prompts(text_run, tmp_path, capsys):
    import numpy as np

    out = tmp_path / "s.png"
    args = ["sample", str(text_run), "--steps", "2", "--num", "3", "--out", str(out)]
    assert main([*args, "--prompt", "a thick seven", "--prompt", "a one", "--guidance", "3",
                 "--negative-prompt", "a thin seven"]) == 0
    a = np.load(out.with_suffix(".npz"))["samples"]
    assert main([*args, "--prompt", "a thick seven", "--prompt", "a one", "--guidance", "3"]) == 0
    b = np.load(out.with_suffix(".npz"))["samples"]
    # the negative prompt acts (after 2 training steps the cross-attention has barely moved from its zero init)
    assert a.shape == (3, 1, 8, 8) and np.isfinite(a).all() and not np.array_equal(a, b)
    capsys.readouterr()
    # the run's own encoder, loaded from the run folder, is the EMA network's
    r = scorediff.training.load_run(text_run)
    assert isinstance(r.text_encoder, JointEncoder) and r.text_encoder.module is r.net.text
    g = prompt_guidance(r.denoiser, r.text_encoder, 2.0)
    assert g.negative[0].shape[:2] == (1, 1)


@pytest.mark.parametrize("args, message", [
    (["--negative-prompt", "x"], "--negative-prompt needs --guidance"),
    (["--prompt", "x", "--guidance", "-1"], "guidance scale must be >= 0"),
])
def test_cli_prompt_errors(text_run, tmp_path, capsys, args, message):
    code = main(["sample", str(text_run), "--steps", "2", "--num", "2", "--out", str(tmp_path / "x.png"), *args])
    assert code == 2 and message in capsys.readouterr().err


def test_cli_prompt_on_a_run_without_text(toy_run, capsys):
    assert main(["sample", str(toy_run), "--steps", "2", "--num", "2", "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert "has no text encoder" in err and len(err.strip().splitlines()) == 1


def test_text_config_errors(tmp_path, capsys):
    assert main(["train", "digits", "--out", str(tmp_path / "r"), "--set", "text.encoder=bytes", *_TINY[2:]]) == 2
    assert "has no captions" in capsys.readouterr().err
    assert main(["train", "digits-text", "--out", str(tmp_path / "r"), "--set", "text.encoder=clip"]) == 2
    assert "text.encoder 'clip' unknown" in capsys.readouterr().err


# -- a frozen pretrained encoder from a local folder (only where transformers is installed) ---------------------


@pytest.fixture
def clip_folder(tmp_path):
    """A tiny random CLIP text encoder with a small word-piece tokenizer, saved as a pipeline's folders."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=16, pad_token_id=0, bos_token_id=2, eos_token_id=3))
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "thick", "seven", "one"]))
    tok = transformers.BertTokenizer(str(tmp_path / "vocab.txt"))
    model.save_pretrained(tmp_path / "pipe" / "text_encoder")
    tok.save_pretrained(tmp_path / "pipe" / "tokenizer")
    return tmp_path / "pipe", model


def test_pretrained_encoder_from_a_local_folder(clip_folder):
    from scorediff.text_encoders import PretrainedEncoder, context_dim

    path, model = clip_folder
    enc = PretrainedEncoder(path)
    assert enc.dim == 8 == context_dim({"encoder": "pretrained", "path": str(path)})
    c, m = enc.encode(["a thick seven", "one"])
    assert c.shape[0] == 2 and c.shape[2] == 8 and m.sum(1).tolist() == [5, 3]  # [CLS] ... [SEP]
    with torch.no_grad():
        ids = torch.tensor([[2, 4, 5, 6, 3]])
        assert torch.allclose(c[:1], model(input_ids=ids).last_hidden_state, atol=1e-6)
    assert enc.null()[1].tolist() == [[True, True]]
    assert not any(p.requires_grad for p in enc.model.parameters())


def test_training_with_a_frozen_pretrained_encoder(clip_folder, tmp_path):
    path, model = clip_folder
    out = tmp_path / "run"
    assert main(["train", "digits-text", "--out", str(out), "--set", "optim.steps=2", *_TINY,
                 "--set", "text.encoder=pretrained", "--set", f"text.path={json.dumps(str(path))}"]) == 0
    r = scorediff.training.load_run(out)
    assert r.net.context_dim == 8 and not any(k.startswith("text.") for k in r.net.state_dict())
    assert main(["sample", str(out), "--steps", "2", "--num", "2", "--prompt", "a thick seven", "--guidance", "2",
                 "--out", str(tmp_path / "s.png")]) == 0


# -- prompts in evaluation: `scorediff eval` and training-time evaluation sample the run's own captions ----------


def test_eval_prompts_are_the_splits_captions_seeded():
    from scorediff import data

    test = data.make("digits-text", split="test")
    prompts = C.eval_prompts(test, 500, seed=0)
    assert len(prompts) == 500 and prompts == C.eval_prompts(test, 500, seed=0) != C.eval_prompts(test, 500, seed=1)
    known = {c for caps in test.captions for c in caps}
    assert set(prompts) <= known
    # the first len(test) prompts are one caption of each test example: the split's digit proportions exactly
    first = prompts[:len(test)]
    def digit(p):  # phrasings: "a thick seven ...", "the digit 7, ...", "7"
        words = p.replace(",", " ").split()
        return next(d for d, w in enumerate(C.NUMBER_WORDS) if w in words or str(d) in words)

    said = torch.bincount(torch.tensor([digit(p) for p in first]), minlength=10)
    assert torch.equal(said, torch.bincount(test.y, minlength=10))
    with pytest.raises(ValueError, match="data set 'digits' has no captions"):
        C.eval_prompts(data.make("digits"), 4, name="data set 'digits'")


def test_eval_generate_conditions_each_sample_on_its_prompt(oracle):
    # the exact prompt-conditional mixture as the model: sample j, drawn for prompt j, lies on its component
    from scorediff.eval import generate

    prompts = [str(k % 8) for k in range(37)]

    def encode(ps):
        context, mask = analytic.prompt_tokens([[int(p)] for p in ps], 8)
        return {"context": context, "context_mask": mask}

    x = generate(oracle, oracle.process, (2,), 37, sampler="heun", steps=30, batch_size=16, prompts=prompts,
                 encode=encode, dtype=torch.float64)
    post = oracle.mixture.component_posterior(x.double(), torch.full((37,), oracle.process.t_min, dtype=torch.float64),
                                              oracle.process)
    assert (post.argmax(1) == torch.tensor([int(p) for p in prompts])).all()
    with pytest.raises(ValueError, match="3 prompts for 37 samples"):
        generate(oracle, oracle.process, (2,), 37, steps=2, prompts=prompts[:3], encode=encode)


def test_cli_eval_of_a_text_run_samples_its_test_captions(text_run, tmp_path, capsys):
    from scorediff import data

    def run_eval(*extra):
        out = tmp_path / f"e{len(extra)}.json"
        assert main(["eval", str(text_run), "--num", "8", "--steps", "2", "--batch", "3", "--out", str(out),
                     "--no-cache", *extra]) == 0
        return json.loads(out.read_text())

    plain, guided = run_eval(), run_eval("--guidance", "3")
    expected = C.eval_prompts(data.make("digits-text", split="test"), 8, 0)
    assert plain["prompts"]["first"] == guided["prompts"]["first"] == expected[:5]
    assert plain["prompts"]["guidance"] is None and guided["prompts"]["guidance"] == 3
    assert plain["sliced_w2"] != guided["sliced_w2"]  # the guidance (hence the prompts' branch) acts
    assert "prompts: 8 captions of the test split" in capsys.readouterr().out


def test_cli_eval_guidance_on_a_run_without_prompts(toy_run, tmp_path, capsys):
    assert main(["eval", str(toy_run), "--num", "8", "--steps", "2", "--guidance", "2",
                 "--out", str(tmp_path / "e.json")]) == 2
    err = capsys.readouterr().err
    assert "has no prompts (text.encoder)" in err and len(err.strip().splitlines()) == 1


def test_training_time_evaluation_of_a_text_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "digits-text", "--out", str(out), "--set", "optim.steps=2", *_TINY,
                 "--set", "eval.every=2", "--set", "eval.num=6", "--set", "eval.guidance=2"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/fid" in r]
    assert len(evals) == 1 and all(v == v for v in evals[0].values())  # finite, logged at step 2
    assert main(["train", "digits", "--out", str(tmp_path / "r2"), *_TINY[:2], "--set", "eval.guidance=2"]) == 2
    assert "eval.guidance guides a text-conditioned run's prompts" in capsys.readouterr().err
