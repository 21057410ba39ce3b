"""Block diffusion (BD3-LM; ``discrete.make("absorbing", vocab=V, block=K)``): masked diffusion within blocks of K
tokens, blocks left to right. Checked against the exact oracle (its posterior with the later blocks masked is the
block model's exact conditional), and the network's one-call training pass against the block-by-block loop."""

from __future__ import annotations

import json

import pytest
import torch

from scorediff import discrete, nets
from scorediff.analytic import random_mixture, total_variation
from scorediff.cli import main
from scorediff.discrete.models import blockwise_log_p0
from scorediff.training import load_run, train
from tests.test_discrete_training import tiny_text, train_on_markov_chain
from tests.test_training import assert_same_files

V, N = 3, 12000  # TV over 3^L states at N samples: Monte Carlo floor ~0.02


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("sampler", [s for s, i in discrete.SAMPLERS.items() if "absorbing" in i.processes])
@pytest.mark.parametrize("L,block", [(4, 2), (5, 3)])
def test_every_sampler_samples_the_exact_distribution_block_by_block(sampler, L, block):
    """Blocks of 2 or 3 (the last one shorter at L = 5), exact oracle model: TV within 0.01 of the Monte Carlo
    floor (the TV of N exact draws) with enough steps, and clearly larger with one step per block where the
    sampler discretises time (each block is then unmasked in one step, its tokens drawn independently)."""
    p = discrete.make("absorbing", vocab=V, block=block)
    oracle = random_mixture(V, L, seed=1)
    probs = oracle.probabilities()
    floor = total_variation(oracle.sample(N, _gen(9)), probs, V)
    tv = {steps: total_variation(discrete.sample(oracle.model(p), p, (N, L), sampler=sampler, steps=steps, seed=0),
                                 probs, V) for steps in (2, 48)}
    assert tv[48] < floor + 0.01, (tv, floor)
    if sampler != "first_hitting":  # exact at any step count
        assert tv[2] > tv[48] + 0.02, (tv, floor)


def test_blocks_go_left_to_right_and_stats_count_every_call():
    """A model that records what it is shown: every call sees the blocks before the current one unmasked and the
    ones after it masked, and blocks are finished in order."""
    p = discrete.make("absorbing", vocab=V, block=2)
    oracle = random_mixture(V, 6, seed=2)
    inner = oracle.model(p)
    seen = []

    def model(x, t):
        seen.append(x.clone())
        return inner(x, t)

    stats = {}
    discrete.sample(model, p, (8, 6), sampler="confidence", steps=6, seed=0, stats=stats)
    assert stats["model_calls"] == len(seen) == 6  # one token per step, two steps per block
    for j, x in enumerate(seen):
        b = j // 2
        assert bool((x[:, : 2 * b] != p.mask_index).all()) and bool((x[:, 2 * b + 2:] == p.mask_index).all()), j


@pytest.mark.parametrize("objective", ["mdlm", "score_entropy"])
def test_block_elbo_is_tight_for_the_exact_model_and_loose_for_a_wrong_one(objective):
    """-log p(x0) = sum_b -log p(x0^b | x0^{<b}); with the exact model each block's bound is tight."""
    L = 4
    p = discrete.make("absorbing", vocab=V, block=2)
    oracle, wrong = random_mixture(V, L, seed=6), random_mixture(V, L, seed=7)
    x0 = oracle.sample(64, _gen(8))
    nll = -oracle.log_prob(x0)
    terms = discrete.elbo_terms(oracle.model(p), p, x0, objective=objective, samples=128, seed=0)
    gap = terms.mean(0) - nll
    se = terms.std(0).pow(2).mean().div(terms.shape[0] * len(x0)).sqrt()
    assert abs(float(gap.mean())) < 4 * float(se), (float(gap.mean()), float(se))
    bad = discrete.elbo(wrong.model(p), p, x0, objective=objective, samples=128, seed=0)
    assert float((bad - nll).mean()) > 10 * float(se)


def _random_block_net(block: int, L: int = 8, vocab: int = 5):
    net = nets.make("tokens-tiny", vocab=vocab, length=L, block=block)
    with torch.no_grad():
        for prm in net.parameters():  # adaLN-Zero starts at 0: give every weight a value
            prm.normal_(0, 0.3, generator=_gen(1))
    return net.eval()


def test_the_one_call_training_pass_equals_the_block_by_block_calls():
    """``given_clean`` (the 2L-token pass) against ``blockwise_log_p0`` with the model hidden behind a plain
    function (one call per block on [x0^{<b}, x_t^b, masks]); and block-causality: the output for a block does
    not move when tokens after it change."""
    L, vocab = 8, 5
    p = discrete.make("absorbing", vocab=vocab, block=3)
    model = discrete.NetModel(_random_block_net(3, L, vocab), p)
    x0 = torch.randint(0, vocab, (6, L), generator=_gen(2))
    t = torch.rand(6, generator=_gen(3))
    x_t = p.sample_marginal(x0, t, _gen(4))
    with torch.no_grad():
        fast = model.given_clean(x_t, x0, t)
        slow = blockwise_log_p0(lambda x, s: model(x, s), p, x_t, x0, t)
        finite = torch.isfinite(fast)
        assert bool((finite == torch.isfinite(slow)).all())
        assert float((fast - slow)[finite].abs().max()) < 1e-4
        assert float(fast[finite].std()) > 0.1  # not a trivially constant output
        later = x_t.clone()
        later[:, 6:] = torch.randint(0, vocab, (6, 2), generator=_gen(5))
        assert torch.equal(model(x_t, t)[:, :6], model(later, t)[:, :6])
        assert not torch.equal(model(x_t, t)[:, 6:], model(later, t)[:, 6:])
    # the same network without blocks sees everything: then the first block does move
    full = nets.make("tokens-tiny", vocab=vocab, length=L)
    full.load_state_dict(model.net.state_dict())
    m0 = discrete.NetModel(full.eval(), discrete.make("absorbing", vocab=vocab))
    with torch.no_grad():
        assert not torch.allclose(m0(x_t, t)[:, :3], m0(later, t)[:, :3])


def test_block_diffusion_learns_a_markov_chain():
    """MDLM within blocks of 4 on a Markov chain (V = 8, L = 16): the bound on fresh data near the exact entropy
    per token (1.04 nats), far below the unigram entropy 2.08, and not below the entropy."""
    mean, se, entropy = train_on_markov_chain(block=4)
    assert entropy - 3 * se < mean < entropy + 0.25, (mean, entropy)


def test_infilling_a_prefix_matches_the_exact_conditional_and_a_later_token_is_refused():
    L = 4
    p = discrete.make("absorbing", vocab=V, block=2)
    oracle = random_mixture(V, L, seed=5)
    for fixed, values in ((torch.tensor([True, False, False, False]), torch.tensor([2, 0, 0, 0])),
                          (torch.tensor([True, True, True, False]), torch.tensor([2, 0, 1, 0]))):
        truth = oracle.conditional(fixed, values)
        for sampler in ("ancestral", "confidence"):
            x = discrete.sample(oracle.model(p), p, (N, L), sampler=sampler, steps=32, seed=1, fixed=fixed,
                                values=values)
            assert bool((x[:, fixed] == values[fixed]).all())
            assert total_variation(x, truth, V) < 0.035, (sampler, fixed)
    with pytest.raises(ValueError, match="conditions on earlier blocks only"):
        discrete.sample(oracle.model(p), p, (4, L), fixed=torch.tensor([False, False, True, False]),
                        values=torch.zeros(L, dtype=torch.long))


def test_flat_weighting_weights_every_masked_token_alike():
    """``weighting="flat"``: each sequence's summed -log p(x0^i | x_t) over its masked tokens, divided by the expected
    masked count L E[t] (loglinear: 1 - alpha(t) = t, so L (lo + hi) / 2), recomputed by hand from the same draws
    (the generator replayed); with blocks, each block's rows given the clean blocks before it. Its batch mean is
    then close to the mean cross-entropy per masked token."""
    L = 6
    for block, t_range in ((None, (0.0, 1.0)), (2, (0.3, 0.8))):
        p = discrete.make("absorbing", vocab=V, block=block)
        model = random_mixture(V, L, seed=3).model(p)
        x0 = random_mixture(V, L, seed=4).sample(32, _gen(1))
        got = discrete.DiscreteLoss("mdlm", p, weighting="flat", t_range=t_range)(model, x0, _gen(7))
        g = _gen(7)
        t = discrete.losses.stratified_times(32, g).float()
        t = t[torch.randperm(32, generator=g)]
        t = t_range[0] + (t_range[1] - t_range[0]) * t
        x_t = p.sample_marginal(x0, t, g)
        masked = x_t == p.mask_index
        for i in range(32):
            total = 0.0
            for j in range(L):
                if masked[i, j]:
                    a = (j // block) * block if block else 0
                    inp = x_t[i].clone()
                    inp[:a] = x0[i, :a]
                    if block:
                        inp[a + block:] = p.mask_index
                    total -= float(model(inp[None], t[i: i + 1])[0, j, x0[i, j]])
            assert abs(float(got[i]) - total / (L * sum(t_range) / 2)) < 1e-4, (block, i)
    with pytest.raises(ValueError, match="discrete loss weighting 'snr'"):
        discrete.DiscreteLoss("mdlm", p, weighting="snr")
    with pytest.raises(ValueError, match="is for loss 'mdlm'"):
        discrete.DiscreteLoss("score_entropy", p, weighting="flat")
    for bad in ((0.5, 0.5), (-0.1, 1.0), (0.2,), "0.3,0.8", (0.2, True)):
        with pytest.raises(ValueError, match="t_range must be"):
            discrete.DiscreteLoss("mdlm", p, t_range=bad)


def test_t_range_draws_mask_rates_in_the_range_only():
    """BD3-LM's clipped schedule: with t in (0.3, 0.8] on the loglinear schedule (masked fraction t) a sequence of
    400 tokens has 30-80% masked (within sampling error), and the flat loss sees them all."""
    p = discrete.make("absorbing", vocab=V)
    seen = []

    def model(x, t):
        seen.append((x == p.mask_index).double().mean(-1))
        assert bool(((t > 0.3 - 1e-6) & (t <= 0.8 + 1e-6)).all()), t
        return torch.full((*x.shape, V), -float(torch.log(torch.tensor(float(V)))))

    x0 = torch.randint(0, V, (64, 400), generator=_gen(0))
    for weighting in ("elbo", "flat"):
        discrete.DiscreteLoss("mdlm", p, weighting=weighting, t_range=[0.3, 0.8])(model, x0, _gen(1))
    frac = torch.cat(seen)
    assert 0.25 < float(frac.min()) and float(frac.max()) < 0.85 and float(frac.max() - frac.min()) > 0.4


def test_block_bad_input_one_line():
    with pytest.raises(ValueError, match="needs the absorbing process"):
        discrete.make("uniform", vocab=3, block=2)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="block must be a positive integer"):
            discrete.make("absorbing", vocab=3, block=bad)
    p = discrete.make("absorbing", vocab=3, block=2)
    with pytest.raises(ValueError, match="attends over blocks of 0"):
        discrete.NetModel(nets.make("tokens-tiny", vocab=3, length=4), p)
    with pytest.raises(ValueError, match="mean parameterisation"):
        discrete.NetModel(nets.make("tokens-tiny", vocab=3, length=4, block=2, out=4), p, "ratio")
    with pytest.raises(ValueError, match="not set with causal"):
        nets.make("tokens-tiny", vocab=3, length=4, block=2, causal=True)
    with pytest.raises(ValueError, match="clean= is the block-diffusion training pass"):
        nets.make("tokens-tiny", vocab=3, length=4)(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1),
                                                    clean=torch.zeros(1, 4, dtype=torch.long))


def test_block_run_trains_resumes_exactly_samples_and_scores(tmp_path, capsys):
    """A text run with ``process.options.block``: the network is built block-causal, resume is bit-exact, and
    sample / likelihood / --prefix work through the CLI."""
    cfg = tiny_text(tmp_path, **{"process.options": {"block": 4}, "sample.sampler": "confidence"})
    straight = train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b", stop_after=3)
    resumed = train(cfg, tmp_path / "b", resume=True)
    assert straight.step == resumed.step == 6
    assert_same_files(tmp_path / "a", tmp_path / "b")
    run = load_run(tmp_path / "a")
    assert run.process.block == 4 and run.net.block == 4
    assert main(["sample", str(tmp_path / "a"), "--num", "2", "--steps", "16", "--prefix", "the lazy"]) == 0
    assert capsys.readouterr().out.count("\nthe lazy") == 2
    assert main(["likelihood", str(tmp_path / "a"), "--num", "8", "--elbo-samples", "2",
                 "--json", str(tmp_path / "lik.json")]) == 0
    res = json.loads((tmp_path / "lik.json").read_text())
    assert 0 < res["bits_per_token"] < 8 and res["bound"]
    capsys.readouterr()
    assert main(["train", "text-chars", "--out", str(tmp_path / "z"), "--set", "process.options.block=0"]) == 2
    assert "block must be a positive integer" in capsys.readouterr().err
    assert main(["train", "text-chars", "--out", str(tmp_path / "z"), "--set", "loss.options.weight=flat"]) == 2
    assert "loss 'mdlm': unknown option(s) weight; allowed: t_range, weighting" in capsys.readouterr().err
    assert main(["train", "text-chars-ar", "--out", str(tmp_path / "z"), "--set", "loss.options.t_range=[0.3,0.8]"]) == 2
    assert "loss 'autoregressive': unknown option(s) t_range; allowed: none" in capsys.readouterr().err
    assert not (tmp_path / "z").exists()
    assert main(["train", "text-chars", "--out", str(tmp_path / "z"), "--set", "parameterization.name=ratio"]) == 2
    assert "block diffusion (process.options.block) takes parameterization 'mean', not 'ratio'" in \
        capsys.readouterr().err
