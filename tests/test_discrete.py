"""Discrete diffusion against closed-form truth: the matrix exponential of the rate matrix, the exact categorical
oracle (mixtures of products, Markov chains) and its exact distribution over all V^L sequences."""

from __future__ import annotations

import pytest
import torch

from scorediff import discrete
from scorediff.analytic import MarkovChain, all_sequences, random_mixture, total_variation
from scorediff.discrete import models

V, L = 3, 3
N = 12000  # samples per TV estimate: the Monte Carlo floor of TV over 27 states is about 0.02


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _processes():
    return [("absorbing", {}), ("absorbing", {"schedule": "cosine"}), ("uniform", {}),
            ("uniform", {"schedule": "loglinear", "schedule_options": {"eps": 1e-3}})]


@pytest.mark.parametrize("name,options", _processes())
def test_marginal_is_the_matrix_exponential_of_the_rate_matrix(name, options):
    p = discrete.make(name, vocab=4, **options)
    Q = p.rate_matrix()
    assert torch.allclose(Q.sum(-1), torch.zeros(p.num_states, dtype=torch.float64))
    x0 = torch.tensor([[0, 1, 2, 3]])
    for t in (0.0, 0.1, 0.5, 0.9, 1.0):
        tt = torch.tensor([t], dtype=torch.float64)
        K = torch.linalg.matrix_exp(float(p.schedule.sigma_bar(tt)) * Q) if p.alpha(tt) > 0 else None
        marg = p.marginal(x0, tt)[0]
        if K is None:  # alpha = 0: the stationary law pi
            assert torch.allclose(marg, p.pi.double().expand_as(marg))
        else:
            assert torch.allclose(marg, K[x0[0]], atol=1e-10)
    # sigma(t) = d sigma_bar / dt, by finite differences
    t = torch.tensor([0.3, 0.6], dtype=torch.float64)
    h = 1e-6
    fd = (p.schedule.sigma_bar(t + h) - p.schedule.sigma_bar(t - h)) / (2 * h)
    assert torch.allclose(p.schedule.sigma(t), fd, rtol=1e-5)


@pytest.mark.parametrize("name", ["loglinear", "geometric", "cosine"])
def test_schedule_inverse(name):
    s = discrete.make_schedule(name)
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    assert torch.allclose(s.t_of_alpha(s.alpha(t)), t, atol=1e-9)
    assert float(s.alpha(torch.zeros((), dtype=torch.float64))) == 1.0


def test_sample_marginal_matches_marginal():
    p = discrete.make("uniform", vocab=3, schedule="loglinear")
    x0 = torch.zeros(40000, 1, dtype=torch.long)
    t = torch.full((40000,), 0.4)
    x = p.sample_marginal(x0, t, _gen())
    emp = torch.bincount(x[:, 0], minlength=3).double() / 40000
    assert torch.allclose(emp, p.marginal(x0[:1], t[:1].double())[0, 0], atol=0.01)


@pytest.mark.parametrize("name", ["absorbing", "uniform"])
def test_ratios_are_the_exact_marginal_ratios(name):
    """p_t(x^{i<-y}) / p_t(x) from the posterior equals the ratio of exact marginals p_t, computed by enumeration,
    wherever the reverse chain uses it (every x for uniform; a masked x^i for absorbing)."""
    p = discrete.make(name, vocab=V)
    oracle = random_mixture(V, L, seed=2)
    t = torch.tensor([0.55], dtype=torch.float64)
    seqs = all_sequences(V, L)
    p0 = oracle.probabilities()
    # p_t(x) = sum_x0 p0(x0) prod_i K_t(x0^i -> x^i) over every noisy state x in S^L
    states = all_sequences(p.num_states, L)
    K = p.marginal(torch.arange(V)[None], t)[0]  # (V, S): K[a, y]
    pt = (p0[:, None] * K[seqs[:, None, :], states[None, :, :]].prod(-1)).sum(0)  # (S^L,)
    index = {tuple(s.tolist()): i for i, s in enumerate(states)}
    x = states[pt > 1e-12][:20]
    r = models.ratios(oracle.model(p)(x, t.expand(len(x))).double(), x, t.expand(len(x)), p)
    for b in range(len(x)):
        for i in range(L):
            for y in range(p.num_states):
                if p.pi[x[b, i]] == 0:  # absorbing, unmasked: no forward rate leads here, no reverse rate uses it
                    continue
                z = x[b].clone()
                z[i] = y
                truth = pt[index[tuple(z.tolist())]] / pt[index[tuple(x[b].tolist())]]
                assert float(r[b, i, y]) == pytest.approx(float(truth), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("name", ["absorbing", "uniform"])
def test_ratio_parameterisation_round_trip(name):
    p = discrete.make(name, vocab=4)
    oracle = random_mixture(4, 5, seed=3)
    t = torch.rand(6, generator=_gen(1), dtype=torch.float64) * 0.9 + 0.05
    x = p.sample_marginal(oracle.sample(6, _gen(2)), t, _gen(3))
    log_p0 = oracle.model(p)(x, t).double()
    back = models.ratios_to_log_p0(models.ratios(log_p0, x, t, p).log(), x, t, p)
    assert torch.allclose(back.exp(), log_p0.exp(), atol=1e-8)


def test_markov_chain_posterior_matches_enumeration():
    """Forward-backward against brute force: p(x0^i | x_t) from the exact joint over all V^L sequences."""
    gen = _gen(4)
    chain = MarkovChain(torch.rand(V, generator=gen) + 0.1, torch.rand(V, V, generator=gen) + 0.1, 4)
    assert float(chain.probabilities().sum()) == pytest.approx(1.0)
    p = discrete.make("uniform", vocab=V, schedule="loglinear")
    t = torch.tensor([0.6, 0.3], dtype=torch.float64)
    x = torch.tensor([[0, 2, 1, 1], [2, 2, 0, 1]])
    got = chain.model(p)(x, t).double().exp()
    seqs = all_sequences(V, 4)
    for b in range(2):
        lik = p.marginal(seqs, t[b].expand(len(seqs)))[torch.arange(len(seqs))[:, None], torch.arange(4), x[b]]
        joint = chain.probabilities() * lik.prod(-1)
        for i in range(4):
            truth = torch.bincount(seqs[:, i], weights=joint, minlength=V) / joint.sum()
            assert torch.allclose(got[b, i], truth, atol=1e-6)


@pytest.mark.parametrize("sampler", list(discrete.SAMPLERS))
@pytest.mark.parametrize("name", ["absorbing", "uniform"])
def test_every_sampler_reaches_the_exact_distribution(sampler, name):
    """TV over all V^L sequences, exact oracle model: small at many steps, and no larger than at few steps."""
    if name not in discrete.SAMPLERS[sampler].processes:
        pytest.skip(f"{sampler} is for {discrete.SAMPLERS[sampler].processes}")
    p = discrete.make(name, vocab=V)
    oracle = random_mixture(V, L, seed=1)
    probs = oracle.probabilities()
    tv = {steps: total_variation(discrete.sample(oracle.model(p), p, (N, L), sampler=sampler, steps=steps, seed=0),
                                 probs, V) for steps in (2, 32)}
    assert tv[32] < 0.035, tv  # Monte Carlo floor ~0.02 at N = 12000
    if sampler != "first_hitting":  # exact at any step count
        assert tv[2] > tv[32], tv


def test_first_hitting_and_caching_cost_one_evaluation_per_token():
    """Each sequence is evaluated at most once per unmasked token (L), however many steps the grid has."""
    p = discrete.make("absorbing", vocab=V)
    model = random_mixture(V, 6, seed=1).model(p)
    for sampler, steps in (("first_hitting", 1), ("ancestral", 500)):
        stats = {}
        x = discrete.sample(model, p, (50, 6), sampler=sampler, steps=steps, seed=0, stats=stats)
        assert int(x.max()) < V
        assert stats["sequence_evaluations"] <= 6 * 50, (sampler, stats)
    stats = {}
    discrete.sample(model, p, (50, 6), sampler="ancestral", steps=500, seed=0, stats=stats, cache=False)
    assert stats["sequence_evaluations"] > 6 * 50


@pytest.mark.parametrize("score", discrete.samplers.CONFIDENCE_SCORES)
def test_confidence_order_is_exact_at_one_token_per_step(score):
    """Unmasking the most certain position first, one token per step, with the exact model: each token is drawn
    from its exact conditional given those before it, so the law is the data's whatever the order. (Ordering by
    the drawn token's own probability, MaskGIT's rule, would bias it: TV 0.33-0.37 on these mixtures.)"""
    p = discrete.make("absorbing", vocab=V)
    for seed in (1, 2):
        oracle = random_mixture(V, L, seed=seed)
        x = discrete.sample(oracle.model(p), p, (N, L), sampler="confidence", steps=L, seed=0, score=score)
        assert total_variation(x, oracle.probabilities(), V) < 0.03, (score, seed)


def test_confidence_unmasks_the_most_certain_positions_first():
    """One component, so p(x0^i | x_t) is the position's own marginal: the first step of 4 on L = 4 unmasks the
    position of largest margin (or top probability), the second step the next one."""
    p = discrete.make("absorbing", vocab=3)
    probs = torch.tensor([[0.4, 0.35, 0.25], [0.9, 0.05, 0.05], [0.34, 0.33, 0.33], [0.1, 0.6, 0.3]],
                         dtype=torch.float64)  # margins 0.05, 0.85, 0.01, 0.3; top-1 0.4, 0.9, 0.34, 0.6

    def model(x, t):
        return probs.log().float().expand(x.shape[0], -1, -1)

    ts = discrete.samplers.time_grid(4)
    for score, order in (("margin", [1, 3]), ("max", [1, 3]), ("entropy", [1, 3])):
        x = torch.full((200, 4), 3)
        for j, first in enumerate(order):
            x = discrete.samplers.sample_confidence(model, p, x, ts[j:j + 2], generator=_gen(j), score=score)
            assert bool((x[:, first] != 3).all()) and int((x != 3).sum(-1).max()) == j + 1, (score, x[:3])
    with pytest.raises(ValueError, match="confidence score 'best'"):
        discrete.sample(model, p, (2, 4), sampler="confidence", score="best")
    with pytest.raises(ValueError, match="noise"):
        discrete.sample(model, p, (2, 4), sampler="confidence", noise=-1.0)
    with pytest.raises(ValueError, match="absorbing"):
        discrete.sample(model, discrete.make("uniform", vocab=3), (2, 4), sampler="confidence")


def test_infilling_matches_the_exact_conditional():
    p = discrete.make("absorbing", vocab=V)
    oracle = random_mixture(V, L, seed=5)
    fixed = torch.tensor([True, False, False])
    values = torch.tensor([2, 0, 0])
    truth = oracle.conditional(fixed, values)
    for sampler in ("ancestral", "first_hitting", "confidence"):
        x = discrete.sample(oracle.model(p), p, (N, L), sampler=sampler, steps=32, seed=1, fixed=fixed, values=values)
        assert bool((x[:, 0] == 2).all())
        assert total_variation(x, truth, V) < 0.03


@pytest.mark.parametrize("name,objective", [("absorbing", "score_entropy"), ("absorbing", "mdlm"),
                                            ("uniform", "score_entropy")])
def test_elbo_is_tight_for_the_exact_model_and_loose_for_a_wrong_one(name, objective):
    p = discrete.make(name, vocab=V)
    oracle, wrong = random_mixture(V, L, seed=6), random_mixture(V, L, seed=7)
    x0 = oracle.sample(64, _gen(8))
    nll = -oracle.log_prob(x0)
    terms = discrete.elbo_terms(oracle.model(p), p, x0, objective=objective, samples=128, seed=0)
    gap = terms.mean(0) - nll  # per sequence, expectation 0
    se = terms.std(0).pow(2).mean().div(terms.shape[0] * len(x0)).sqrt()
    assert abs(float(gap.mean())) < 4 * float(se), (float(gap.mean()), float(se))
    bad = discrete.elbo(wrong.model(p), p, x0, objective=objective, samples=128, seed=0)
    assert float((bad - nll).mean()) > 10 * float(se)


def test_mdlm_and_score_entropy_agree_on_absorbing():
    p = discrete.make("absorbing", vocab=V)
    model = random_mixture(V, L, seed=9).model(p)
    x0 = random_mixture(V, L, seed=10).sample(16, _gen())
    a = discrete.elbo(model, p, x0, objective="score_entropy", samples=8, seed=3)
    b = discrete.elbo(model, p, x0, objective="mdlm", samples=8, seed=3)
    assert torch.allclose(a, b, rtol=1e-5)


def test_bad_input_one_line():
    p = discrete.make("absorbing", vocab=3)
    model = random_mixture(3, 2).model(p)
    with pytest.raises(ValueError, match="ids from 0 to 5"):
        discrete.elbo(model, p, torch.tensor([[0, 5]]))
    with pytest.raises(ValueError, match="length"):
        discrete.sample(model, p, (2, 0))
    with pytest.raises(ValueError, match="unknown"):
        discrete.make("gaussian", vocab=3)
    with pytest.raises(ValueError, match="alpha\\(1\\) = 0"):
        discrete.make("absorbing", vocab=3, schedule="geometric")
    with pytest.raises(ValueError, match="absorbing"):
        discrete.sample(random_mixture(3, 2).model(discrete.make("uniform", vocab=3)),
                        discrete.make("uniform", vocab=3), (2, 2), sampler="ancestral")


@pytest.mark.parametrize("name", ["absorbing", "uniform"])
def test_score_entropy_of_a_ratio_model_equals_that_of_its_mean_model(name):
    """SEDD's ratio parameterisation: the same exact model given as concrete scores has the same bound."""
    p = discrete.make(name, vocab=V)
    exact = random_mixture(V, L, seed=12).model(p)

    class RatioModel:
        parameterization = "ratio"

        def log_ratios(self, x, t):
            return models.ratios(exact(x, t).double(), x, t.double(), p).log()

        def __call__(self, x, t):
            return models.ratios_to_log_p0(self.log_ratios(x, t), x, t, p)

    x0 = random_mixture(V, L, seed=12).sample(32, _gen(1))
    t = torch.rand(32, generator=_gen(2), dtype=torch.float64) * 0.98 + 0.01
    x_t = p.sample_marginal(x0, t, _gen(3))
    from scorediff.discrete.losses import score_entropy

    a = score_entropy(exact, p, x0, t, x_t)
    b = score_entropy(RatioModel(), p, x0, t, x_t)
    assert torch.allclose(a.double(), b.double(), rtol=1e-4, atol=1e-5)


def test_sharpen_is_tempered_and_nucleus_renormalised():
    log_p = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=torch.float64))
    assert torch.equal(models.sharpen(log_p), log_p)
    tempered = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64) ** 2
    assert torch.allclose(models.sharpen(log_p, temperature=0.5).exp(), tempered / tempered.sum())
    # top_p 0.8: the two most probable hold 0.8 -> kept; top_p 0.81 needs the third
    assert torch.allclose(models.sharpen(log_p, top_p=0.8).exp(), torch.tensor([[0.625, 0.375, 0, 0]]).double())
    assert torch.allclose(models.sharpen(log_p, top_p=0.81).exp(),
                          torch.tensor([[0.5, 0.3, 0.15, 0]]).double() / 0.95)
    assert torch.allclose(models.sharpen(log_p, top_p=1e-9).exp(), torch.tensor([[1.0, 0, 0, 0]]).double())
    for bad in ({"temperature": 0}, {"temperature": -1.0}, {"top_p": 0}, {"top_p": 1.5}, {"temperature": True}):
        with pytest.raises(ValueError, match="temperature|top_p"):
            models.sharpen(log_p, **bad)


@pytest.mark.parametrize("sampler", ["first_hitting", "ancestral", "tweedie"])
def test_temperature_and_top_p_sample_the_sharpened_product_law(sampler):
    """One component: the positions are independent and p(x0^i | x_t) is the marginal at every t, so sampling
    with temperature T (and top_p) draws each position from sharpen(marginal) independently: exact truth."""
    p = discrete.make("absorbing", vocab=V)
    oracle = random_mixture(V, L, components=1, seed=3)
    marg = oracle.probs[0]  # (L, V)
    for opts in ({"temperature": 0.6}, {"temperature": 1.5, "top_p": 0.9}):
        per_pos = models.sharpen(marg.log(), **opts).exp()
        seqs = all_sequences(V, L)
        truth = per_pos[torch.arange(L), seqs].prod(-1)
        x = discrete.sample(oracle.model(p), p, (N, L), sampler=sampler, steps=32, seed=2, **opts)
        assert total_variation(x, truth, V) < 0.035, opts
        assert total_variation(x, oracle.probabilities(), V) > 0.06, opts  # and not the untempered law


def test_readability_benchmark_counts_real_words_and_distinct_pairs():
    """benchmarks/discrete_readability.py's two numbers on texts whose answer is known by hand."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "discrete_readability.py"
    spec = importlib.util.spec_from_file_location("discrete_readability", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    vocabulary = {"the", "cat", "sat", "mat", "on"}
    # the cut first and last words and words under 3 letters are not counted: cat, sat, xqz, the, mat, zzt
    real, distinct, n = bench.scores(["ca| Cat sat, xqz on the mat zzt mat", "xx the the the the yy"], vocabulary)
    assert n == 6 + 4 and real == pytest.approx(8 / 10)
    assert distinct == pytest.approx((5 + 1) / (5 + 3))  # the second text's three pairs are one pair
    assert bench.parse_spec("confidence:score=max,noise=1") == ("confidence", {"score": "max", "noise": 1})
