"""Discrete diffusion trained: on the exact oracle's data (its distribution recovered), in the one training loop (run
folders, exact resume, samples, CLI sample / likelihood / report), the autoregressive baseline, token data."""

from __future__ import annotations

import collections
import json
import re

import pytest
import torch

from scorediff import data, discrete, nets
from scorediff.analytic import MarkovChain, random_mixture, total_variation
from scorediff.cli import main
from scorediff.discrete import autoregressive
from scorediff.training import config, load_run, train
from tests.test_training import assert_same_files


@pytest.mark.parametrize("name,loss,sampler,bound,weighting", [
    ("absorbing", "mdlm", "first_hitting", 0.15, "elbo"), ("uniform", "score_entropy", "tweedie", 0.2, "elbo"),
    ("absorbing", "mdlm", "first_hitting", 0.15, "flat")])
def test_training_recovers_the_oracle_distribution(name, loss, sampler, bound, weighting):
    """250 steps of a tiny transformer on samples of a 3-component mixture over 3^3 sequences: TV to the exact
    distribution below ``bound`` (an untrained model is at 0.37; the Monte Carlo floor at 6000 samples ~0.025), and
    the ELBO on fresh data is an upper bound of the exact -log p (up to its standard error)."""
    torch.manual_seed(0)
    V, L = 3, 3
    oracle = random_mixture(V, L, seed=11)
    x_train = oracle.sample(20000, torch.Generator().manual_seed(0))
    p = discrete.make(name, vocab=V)
    net = nets.make("tokens-tiny", vocab=V, length=L)
    model, objective = discrete.NetModel(net, p), discrete.DiscreteLoss(loss, p, weighting=weighting)
    opt = torch.optim.AdamW(net.parameters(), 5e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(250):
        batch = x_train[torch.randint(0, len(x_train), (128,), generator=g)]
        opt.zero_grad()
        objective(model, batch, g).mean().backward()
        opt.step()
    net.eval()
    x = discrete.sample(model, p, (6000, L), sampler=sampler, steps=32, seed=0)
    assert total_variation(x, oracle.probabilities(), V) < bound
    x0 = oracle.sample(2000, torch.Generator().manual_seed(99))
    gap = discrete.elbo(model, p, x0, samples=8) + oracle.log_prob(x0)
    assert float(gap.mean()) > -3 * float(gap.std() / len(gap) ** 0.5)


def test_masked_diffusion_learns_a_markov_chain_beyond_its_unigram():
    """The check that a context-blind denoiser fails: MDLM training on a first-order Markov chain (V = 8, L = 16,
    x^{i+1} = a fixed permutation of x^i with probability 0.78) must bring the ELBO on fresh data near the exact
    entropy per token (1.04 nats), far below the unigram entropy log 8 = 2.08 that a model ignoring the other
    positions cannot beat; and, being a bound, not below the entropy. With learned absolute positions (the old
    default) the same 200 steps stay at 2.1 nats, the plateau text-chars showed; rotary positions reach ~1.16."""
    mean, se, entropy = train_on_markov_chain()
    assert entropy - 3 * se < mean < entropy + 0.25, (mean, entropy)


def train_on_markov_chain(block: int | None = None) -> tuple[float, float, float]:
    """200 MDLM steps of tokens-tiny on the V = 8, L = 16 Markov chain (with ``block``: block diffusion); returns
    the bound per token on 1000 fresh sequences (mean, standard error) and the chain's exact entropy per token."""
    V, L = 8, 16
    T = 0.75 * torch.nn.functional.one_hot(torch.roll(torch.arange(V), 3), V).double() + 0.25 / V
    chain = MarkovChain(torch.ones(V), T, L)
    x0 = chain.sample(1000, torch.Generator().manual_seed(5))
    entropy = float(-chain.log_prob(x0).mean()) / L
    torch.manual_seed(0)
    p = discrete.make("absorbing", vocab=V, block=block)
    net = nets.make("tokens-tiny", vocab=V, length=L, block=block or 0)
    model, objective = discrete.NetModel(net, p), discrete.DiscreteLoss("mdlm", p)
    opt = torch.optim.AdamW(net.parameters(), 1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        opt.zero_grad()
        objective(model, chain.sample(64, g), g).mean().backward()
        opt.step()
    bound = discrete.elbo(model, p, x0, objective="mdlm", samples=4) / L
    return float(bound.mean()), float(bound.std() / len(bound) ** 0.5), entropy


@pytest.mark.parametrize("name", ["uniform", "absorbing"])
def test_ratio_parameterisation_gives_the_same_interface(name):
    p = discrete.make(name, vocab=5)
    net = nets.make("tokens-tiny", vocab=5, length=4, out=p.num_states)
    model = discrete.NetModel(net, p, "ratio")
    x = torch.randint(0, 5, (3, 4))
    x_t = x.clone()
    x_t[0, :2] = p.num_states - 1  # masked positions for absorbing
    log_p0 = model(x_t, torch.full((3,), 0.5))
    assert log_p0.shape == (3, 4, 5) and torch.allclose(log_p0.exp().sum(-1), torch.ones(3, 4), atol=1e-5)
    loss = discrete.DiscreteLoss("score_entropy", p)(model, x, torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(loss).all()) and float(loss.detach().mean()) < 10  # absorb scaling: near log V
    loss.mean().backward()
    assert all(q.grad is not None and torch.isfinite(q.grad).all() for q in net.parameters() if q.requires_grad)


def test_autoregressive_model_is_causal_and_its_nll_is_the_chain_rule():
    torch.manual_seed(0)
    net = nets.make("tokens-tiny", vocab=4, length=6, causal=True)
    for q in net.parameters():  # away from the zero-initialised head so the check is not vacuous
        q.data.normal_(0, 0.3)
    model = autoregressive.ARModel(net)
    x = torch.randint(0, 4, (2, 6))
    lp = model(x)
    y = x.clone()
    y[:, 3] = (y[:, 3] + 1) % 4
    assert torch.allclose(model(y)[:, :4], lp[:, :4])  # positions <= 3 do not see token 3
    assert not torch.allclose(model(y)[:, 4:], lp[:, 4:])
    # -log p(x) = sum_i -log p(x^i | x^{<i}), each conditional from a pass over the prefix alone
    chain = sum(-model(x[:, : i + 1])[:, i].gather(-1, x[:, i: i + 1])[:, 0] for i in range(6))
    assert torch.allclose(autoregressive.nll(model, x), chain, atol=1e-5)
    s = autoregressive.sample(model, (3, 6), seed=1)
    assert s.shape == (3, 6) and torch.equal(s, autoregressive.sample(model, (3, 6), seed=1))


def test_autoregressive_baseline_learns_a_markov_chain_to_its_entropy():
    """The baseline trained on samples of a Markov chain reaches the exact cross-entropy (to 0.02 nats/token)."""
    g = torch.Generator().manual_seed(0)
    chain = MarkovChain(torch.rand(5, generator=g) + 0.1, torch.rand(5, 5, generator=g) ** 3 + 0.01, 16)
    x_train = chain.sample(5000, g)
    torch.manual_seed(0)
    model = autoregressive.ARModel(nets.make("tokens-tiny", vocab=5, length=16, causal=True))
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    for _ in range(300):
        opt.zero_grad()
        autoregressive.ARLoss()(model, x_train[torch.randint(0, 5000, (64,), generator=g)]).mean().backward()
        opt.step()
    x = chain.sample(2000, g)
    with torch.no_grad():
        excess = (autoregressive.nll(model, x) + chain.log_prob(x)).mean() / 16
    assert 0 <= float(excess) + 0.005 and float(excess) < 0.02, float(excess)


# -- data ------------------------------------------------------------------------------------------------------


def test_token_data(tmp_path):
    d = data.make("pydoc-text", length=32)
    assert d.x.dtype == torch.long and d.x.shape[1] == 32 and d.info.kind == "tokens"
    assert int(d.x.max()) < d.info.vocab
    from scorediff.data.text import tokenizer_from_record

    tok = tokenizer_from_record(d.info.tokenizer)
    assert tok.encode(tok.decode(d.x[0].tolist())) == d.x[0].tolist()
    test, tr = data.make("pydoc-text", length=32, split="test"), data.make("pydoc-text", length=32, split="train")
    assert len(test) + len(tr) == len(d)
    f = tmp_path / "a.txt"
    f.write_text("héllo wörld, " * 20, encoding="utf-8")
    b = data.make("text", files=str(f), tokenizer="byte", length=8)
    assert b.info.vocab == 256 and tokenizer_from_record(b.info.tokenizer).decode(b.x[:2].flatten().tolist()) \
        == ("héllo wörld, " * 20).encode()[:16].decode("utf-8", "replace")
    whole = re.split(r"\n\s*\n", tokenizer_from_record(d.info.tokenizer).decode(d.x.flatten().tolist()))[1:-1]
    whole = [" ".join(p.split()) for p in whole]
    assert len(set(whole)) == len(whole)  # no paragraph twice: a held-out chunk is not also a training chunk
    for name in ("text-chars", "text-chars-ar", "text-bpe", "digits-discrete"):  # the ready configs hold text out
        assert config.load(name)["data"]["options"]["split"] == "train"
    prose = data.make("pydoc-text", length=64, prose=True)
    lines = tokenizer_from_record(prose.info.tokenizer).decode(prose.x.flatten().tolist()).split("\n")
    assert prose.x.numel() < d.x.numel() // 2
    # whole paragraphs, one per line; no indented code, no table, rule or list
    assert all(len(line) >= 60 and line[0] not in " |+=-*" for line in lines[1:-1])
    with pytest.raises(ValueError, match="prose must be true or false"):
        data.make("pydoc-text", prose="yes")
    dg = data.make("digits-tokens")
    assert dg.x.shape == (1797, 64) and dg.info.vocab == 17 and int(dg.x.max()) == 16 and dg.info.image == (8, 8)


def _naive_bpe(text: str, vocab_size: int) -> list[tuple[str, str]]:
    """Byte-pair encoding as Sennrich et al. describe it: recount every pair of every chunk after each merge."""
    from scorediff.data.text import _CHUNK

    words = [list(w) for w in _CHUNK.findall(text)]
    merges = []
    while len(set(text)) + len(merges) < vocab_size:
        counts = collections.Counter(p for w in words for p in zip(w, w[1:]))
        if not counts:
            break
        best, n = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
        if n < 2:
            break
        merges.append(best)
        for k, w in enumerate(words):
            out, i = [], 0
            while i < len(w):
                if w[i:i + 2] == list(best):
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            words[k] = out
    return merges


def test_bpe_tokenizer_learns_the_merges_of_plain_bpe_and_round_trips(tmp_path):
    from scorediff.data.text import BPETokenizer, tokenizer_from_record

    g = torch.Generator().manual_seed(0)
    lexicon = ["low", "lower", "newest", "widest", "the", "a", "ab_c", "12", "3.5", "!!", "  "]
    text = " ".join(lexicon[int(i)] for i in torch.randint(0, len(lexicon), (600,), generator=g)) + "\n\tend"
    for size in (30, 50, 400):
        tok = BPETokenizer.train(text, size)
        assert tok.merges == _naive_bpe(text, size), size  # the incremental counts equal recounting
        assert tok.vocab == len(set(text)) + len(tok.merges) <= size
        ids = tok.encode(text)
        assert tok.decode(ids) == text and max(ids) < tok.vocab
    assert len(ids) < len(text) / 2  # words became tokens
    other = "the lowest widest a"  # unseen words over the same characters round-trip too
    again = tokenizer_from_record(json.loads(json.dumps(tok.record)))
    assert again.encode(other) == tok.encode(other) and again.decode(tok.encode(other)) == other
    with pytest.raises(ValueError, match="character 'Q' is not in the vocabulary"):
        tok.encode("the Q")
    with pytest.raises(ValueError, match="vocab_size must be an integer >= the"):
        BPETokenizer.train(text, 3)
    with pytest.raises(ValueError, match="vocab_size applies to tokenizer 'bpe' only"):
        data.make("pydoc-text", vocab_size=300)
    d = data.make("pydoc-text", tokenizer="bpe", vocab_size=300, length=32)
    assert d.info.vocab == 300 and int(d.x.max()) < 300 and d.info.tokenizer["kind"] == "bpe"


def test_token_data_bad_input_one_line(tmp_path):
    empty, binary = tmp_path / "empty.txt", tmp_path / "bin.txt"
    empty.write_text("  \n")
    binary.write_bytes(b"abc\xff\xfe")
    with pytest.raises(ValueError, match="empty.txt' is empty"):
        data.make("text", files=str(empty))
    with pytest.raises(ValueError, match="bin.txt' is not UTF-8"):
        data.make("text", files=str(binary))
    with pytest.raises(ValueError, match="sequence length must be a positive integer, got 0"):
        data.make("pydoc-text", length=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.make("text", files=str(tmp_path / "missing.txt"))


# -- the training loop, run folders, CLI ---------------------------------------------------------------------


def tiny_text(tmp_path, **over) -> dict:
    f = tmp_path / "corpus.txt"
    if not f.exists():
        f.write_text("the quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    cfg = {
        "data": {"name": "text", "options": {"files": str(f), "length": 16}},
        "process": {"name": "absorbing"}, "parameterization": {"name": "mean"}, "loss": {"name": "mdlm"},
        "net": {"preset": "tokens-tiny", "overrides": {"dropout": 0.1}},
        "optim": {"lr": 1e-3, "batch_size": 24, "warmup_steps": 2, "steps": 6},
        "ema": {"half_life_steps": 2},
        "sample": {"sampler": "ancestral", "steps": 8, "num": 3, "every": 0},
        "log": {"every": 1, "progress": False, "tensorboard": False}, "ckpt": {"every": 0}, "threads": 1,
    }
    for k, v in over.items():
        node = cfg
        *head, last = k.split(".")
        for h in head:
            node = node.setdefault(h, {})
        node[last] = v
    return cfg


@pytest.mark.parametrize("process,loss", [("absorbing", "mdlm"), ("uniform", "score_entropy"),
                                          ("autoregressive", "autoregressive")])
def test_token_run_resumes_bit_exactly(tmp_path, process, loss):
    cfg = tiny_text(tmp_path, **{"process.name": process, "loss.name": loss,
                                 "sample.sampler": "tweedie" if process == "uniform" else "ancestral"})
    straight = train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b", stop_after=3)
    resumed = train(cfg, tmp_path / "b", resume=True)
    assert straight.step == resumed.step == 6
    assert_same_files(tmp_path / "a", tmp_path / "b")
    text = (tmp_path / "a" / "samples" / "step_000006.txt").read_text()
    assert text.count("--- sample") == 3
    run = load_run(tmp_path / "a")
    assert run.task == ("autoregressive" if process == "autoregressive" else "discrete")


def test_cli_sample_likelihood_report(tmp_path, capsys):
    train(tiny_text(tmp_path, **{"optim.steps": 20}), tmp_path / "run")
    assert main(["sample", str(tmp_path / "run"), "--num", "2", "--steps", "8"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- sample") == 2
    chars = set("the quick brown fox jumps over the lazy dog. ")
    assert set(out.split("--- sample 0 (ancestral, 8 steps)\n")[1].split("\n")[0]) <= chars
    assert main(["likelihood", str(tmp_path / "run"), "--num", "8", "--elbo-samples", "4",
                 "--json", str(tmp_path / "lik.json")]) == 0
    res = json.loads((tmp_path / "lik.json").read_text())
    assert res["split"] == "test" and 0 < res["bits_per_token"] < 8 and res["bound"]
    assert "its test split is not held out" in capsys.readouterr().err  # tiny_text trains on all of its data
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "Text samples" in page and "Samples across training" in page
    # bad input: another vocabulary; sequence length zero; token ids out of range
    other = tmp_path / "other.txt"
    other.write_text("completely different text with other letters: XYZ 123 " * 10, encoding="utf-8")
    capsys.readouterr()
    assert main(["likelihood", str(tmp_path / "run"), "--data", "text", "--data-option", f"files={other}",
                 "--data-option", "length=16"]) == 2
    assert "vocabulary" in capsys.readouterr().err
    assert main(["train", "text-chars", "--out", str(tmp_path / "z"), "--set", "data.options.length=0"]) == 2
    assert "sequence length must be a positive integer, got 0" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "run"), "--num", "2", "--steps", "8", "--prefix", "the lazy"]) == 0
    assert capsys.readouterr().out.count("\nthe lazy") == 2
    assert main(["sample", str(tmp_path / "run"), "--prefix", "the lazy Q"]) == 2  # Q is not in the vocabulary
    assert "'Q' is not in the vocabulary" in capsys.readouterr().err
    from scorediff.runs.tokens import likelihood

    with pytest.raises(ValueError, match="vocabulary is 0..27"):
        likelihood(load_run(tmp_path / "run"), torch.full((2, 16), 99))


def test_resume_refuses_a_changed_vocabulary(tmp_path):
    cfg = tiny_text(tmp_path, **{"optim.steps": 4})
    train(cfg, tmp_path / "r", stop_after=2)
    (tmp_path / "corpus.txt").write_text("THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG! " * 40, encoding="utf-8")
    with pytest.raises(ValueError, match="does not match run .*vocabulary of 28 characters"):
        train(cfg, tmp_path / "r", resume=True)


def test_digits_tokens_run_draws_a_grid(tmp_path):
    cfg = {"data": {"name": "digits-tokens"}, "process": {"name": "absorbing"}, "parameterization": {"name": "mean"},
           "loss": {"name": "mdlm"}, "net": {"preset": "tokens-tiny", "class_conditional": True},
           "optim": {"batch_size": 16, "steps": 2}, "sample": {"sampler": "ancestral", "steps": 4, "num": 4},
           "log": {"progress": False, "tensorboard": False}, "threads": 1}
    tr = train(cfg, tmp_path / "d")
    from PIL import Image

    assert Image.open(tr.last_sample_path).size[0] > 8


def test_token_config_errors_one_line(tmp_path, capsys):
    cfg = tiny_text(tmp_path)
    for over, msg in (({"loss.name": "dsm"}, "loss 'dsm' unknown for a token run"),
                      ({"process.name": "uniform", "loss.name": "mdlm"}, "needs the absorbing process"),
                      ({"net.preset": "unet-tiny"}, "needs a token_transformer"),
                      ({"data.name": "moons", "data.options": {}}, "needs token data"),
                      ({"sample.sampler": "heun"}, "discrete sampler 'heun' unknown")):
        with pytest.raises(ValueError, match=msg):
            train(tiny_text(tmp_path, **over), tmp_path / "x")
    del cfg


def test_tokenizer_file(tmp_path):
    """A Hugging Face tokenizers file (the optional 'text' extra): skipped where the package is absent."""
    f = tmp_path / "t.txt"
    f.write_text("hello world " * 50, encoding="utf-8")
    try:
        import tokenizers
    except ModuleNotFoundError:
        with pytest.raises(ValueError, match="'tokenizers' package is not installed"):
            data.make("text", files=str(f), tokenizer=str(tmp_path / "tok.json"), length=4)
        return
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    tok = tokenizers.Tokenizer(WordLevel({"hello": 0, "world": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.save(str(tmp_path / "tok.json"))
    d = data.make("text", files=str(f), tokenizer=str(tmp_path / "tok.json"), length=4)
    assert d.info.vocab == 3 and d.x[0].tolist() == [0, 1, 0, 1]


def test_cli_train_prints_text_and_sampling_takes_temperature_and_top_p(tmp_path, capsys):
    cfg_file = tmp_path / "tiny.json"
    cfg_file.write_text(json.dumps(tiny_text(tmp_path, **{"sample.every": 6})))
    assert main(["train", str(cfg_file), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert out.count("--- sample") == 3 and "step_000006.png" in out  # the last samples, as text
    chars = set("the quick brown fox jumps over the lazy dog. ")
    for opts in (["temperature=0.5"], ["top_p=0.9", "temperature=1.2"]):
        argv = ["sample", str(tmp_path / "run"), "--num", "2", "--steps", "8", "--out", str(tmp_path / "s.png")]
        assert main(argv + [a for o in opts for a in ("--option", o)]) == 0
        text = capsys.readouterr().out.split("--- sample 0 (ancestral, 8 steps)\n")[1].split("\n")[0]
        assert set(text) <= chars
    assert main(["sample", str(tmp_path / "run"), "--option", "temperature=0"]) == 2
    assert "temperature must be a number > 0, got 0" in capsys.readouterr().err
    ar = tiny_text(tmp_path, **{"process.name": "autoregressive", "loss.name": "autoregressive"})
    train(ar, tmp_path / "ar")
    assert main(["sample", str(tmp_path / "ar"), "--num", "2", "--option", "top_p=0.5",
                 "--out", str(tmp_path / "a.png")]) == 0
    assert main(["sample", str(tmp_path / "ar"), "--option", "cache=false"]) == 2
    assert "takes the options temperature, top_p, not cache" in capsys.readouterr().err


def test_bpe_run_samples_words_and_reports_bits_per_character(tmp_path, capsys):
    cfg = tiny_text(tmp_path, **{"data.options.tokenizer": "bpe", "data.options.vocab_size": 60})
    train(cfg, tmp_path / "run")
    assert main(["likelihood", str(tmp_path / "run"), "--num", "8", "--elbo-samples", "2",
                 "--json", str(tmp_path / "lik.json")]) == 0
    res = json.loads((tmp_path / "lik.json").read_text())
    run = load_run(tmp_path / "run")
    from scorediff.data.text import tokenizer_from_record

    tok = tokenizer_from_record(run.info["tokenizer"])
    assert tok.vocab == 60 and tok.encode("the lazy dog") == [tok.index[t] for t in ("the", " lazy", " dog")]
    # every test sequence of 16 tokens covers more than 16 characters; bits per character = per token x 16 / chars
    assert res["characters_per_sequence"] > 16
    assert res["bits_per_character"] == pytest.approx(res["bits_per_token"] * 16 / res["characters_per_sequence"])
    assert "bits/character" in capsys.readouterr().out
    assert main(["sample", str(tmp_path / "run"), "--num", "2", "--prefix", "the lazy",
                 "--out", str(tmp_path / "s.png")]) == 0
    assert capsys.readouterr().out.count("\nthe lazy") == 2
