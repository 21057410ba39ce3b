"""The generated distribution of problems (scorediff.eval.problems): reproducible, valid, and as specified."""

from __future__ import annotations

import pytest
import torch

from scorediff.analytic import gaussian_process
from scorediff.eval.problems import FAMILIES, problem, sample_problems


def test_same_seed_same_problem_and_disjoint_samples():
    a, b = problem(17, max_dim=64), problem(17, max_dim=64)
    assert a.name == b.name
    torch.testing.assert_close(a.mixture.covs, b.mixture.covs, rtol=0, atol=0)
    sel, fresh = sample_problems(5, seed=1), sample_problems(5, seed=2)
    assert not {p.seed for p in sel} & {p.seed for p in fresh}


def test_problems_are_valid_mixtures_within_the_cap():
    probs = sample_problems(40, seed=0, max_dim=64)
    assert {p.family for p in probs} == set(FAMILIES)  # every family drawn at this sample size
    for p in probs:
        m = p.mixture
        assert 2 <= m.dim <= 64 and abs(float(m.weights.sum()) - 1) < 1e-12
        assert float(torch.linalg.eigvalsh(m.covs).min()) > 0, p.name  # positive definite: a density
        x = m.sample(4, torch.Generator().manual_seed(0))
        assert torch.isfinite(m.log_prob(x)).all()


def test_mixture_spectrum_and_gp_family_follow_their_definitions():
    # a drawn mixture component's eigenvalues follow j^-beta (the name records beta)
    p = next(p for p in sample_problems(40, seed=3, max_dim=32) if p.family == "mixture" and p.mixture.dim >= 8)
    beta = float(p.name.split("beta=")[1].split()[0])
    lam = torch.linalg.eigvalsh(p.mixture.covs[0]).flip(0)
    j = torch.arange(1, lam.numel() + 1, dtype=torch.float64)
    torch.testing.assert_close(lam / lam[0], j ** (-beta), rtol=2e-2, atol=1e-9)  # name rounds beta to 0.01
    # a drawn GP is analytic.gaussian_process with the drawn parameters
    g = next(p for p in sample_problems(40, seed=3, max_dim=256) if p.family == "gp")
    length = int(g.name.split("L=")[1].split()[0])
    assert g.mixture.dim == length and g.mixture.num_components == 1
    assert float(g.mixture.covs[0].diagonal().min()) > 0


def test_bad_cap_is_one_clear_error():
    with pytest.raises(ValueError, match="max_dim"):
        problem(0, max_dim=1)
    assert gaussian_process(8).dim == 8
