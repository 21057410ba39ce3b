"""Conversions and parameterizations: float64 round trips over every pair and every process."""

import itertools

import pytest
import torch
from torch import nn

import scorediff.parameterizations as PZ
import scorediff.processes as P
from scorediff.utils import append_dims
from tests.conftest import interior_times


def _state(process, n=9, shape=(3, 2, 2)):
    g = torch.Generator().manual_seed(0)
    t = interior_times(process, n=n)
    x0 = torch.randn(n, *shape, generator=g, dtype=torch.float64)
    eps = torch.randn(n, *shape, generator=g, dtype=torch.float64)
    xt = process.marginal(x0, t, eps)
    return t, x0, eps, xt


# each representation: (from x0 to it, from it back to x0); all take (x, value, a, s, da, ds)
REPRESENTATIONS = {
    "x0": (lambda x, x0, a, s, da, ds: x0, lambda x, v, a, s, da, ds: v),
    "eps": (lambda x, x0, a, s, da, ds: PZ.eps_from_x0(x, x0, a, s), lambda x, v, a, s, da, ds: PZ.x0_from_eps(x, v, a, s)),
    "score": (
        lambda x, x0, a, s, da, ds: PZ.score_from_x0(x, x0, a, s),
        lambda x, v, a, s, da, ds: PZ.x0_from_score(x, v, a, s),
    ),
    "v": (lambda x, x0, a, s, da, ds: PZ.v_from_x0(x, x0, a, s), lambda x, v, a, s, da, ds: PZ.x0_from_v(x, v, a, s)),
    "velocity": (
        lambda x, x0, a, s, da, ds: PZ.velocity_from_x0(x, x0, a, s, da, ds),
        lambda x, v, a, s, da, ds: PZ.x0_from_velocity(x, v, a, s, da, ds),
    ),
}


@pytest.mark.parametrize("src,dst", list(itertools.permutations(REPRESENTATIONS, 2)))
def test_conversion_round_trip_every_pair(process, src, dst):
    """src -> x0 -> dst -> x0 -> src returns the start, in float64, for every process."""
    t, x0, eps, xt = _state(process)
    c = PZ.coefficients(process, t, xt, derivatives=True)
    to_src, from_src = REPRESENTATIONS[src]
    to_dst, from_dst = REPRESENTATIONS[dst]
    value = to_src(xt, x0, *c)
    back = to_src(xt, from_dst(xt, to_dst(xt, from_src(xt, value, *c), *c), *c), *c)
    torch.testing.assert_close(back, value, rtol=1e-9, atol=1e-9)


def test_conversions_agree_with_truth(process):
    """eps from the true x0 is the true eps; the velocity is d x_t / dt along the noise path."""
    t, x0, eps, xt = _state(process)
    a, s, da, ds = PZ.coefficients(process, t, xt, derivatives=True)
    torch.testing.assert_close(PZ.eps_from_x0(xt, x0, a, s), eps)
    tt = t.clone().requires_grad_(True)
    path = process.marginal(x0, tt, eps)
    (jvp,) = torch.autograd.grad(path, tt, grad_outputs=torch.ones_like(path))
    # d x_t/dt summed over each example's entries equals the velocity's sum
    torch.testing.assert_close(jvp, PZ.velocity_from_x0(xt, x0, a, s, da, ds).flatten(1).sum(1))


@pytest.mark.parametrize("name", sorted(PZ.PARAMETERIZATIONS))
def test_target_inverts_to_x0(process, name):
    """to_x0(target(x0, eps)) == x0, and ||raw - target||^2 = x0_weight ||x0_hat - x0||^2."""
    if name == "cld":
        pytest.skip("the phase-space parameterization: tests/test_cld.py::test_cld_param_target_inverts_to_x0")
    param = PZ.make(name)
    t, x0, eps, xt = _state(process)
    target = param.target(x0, eps, xt, t, process)
    torch.testing.assert_close(param.to_x0(target, xt, t, process), x0, rtol=1e-9, atol=1e-9)
    raw = target + 0.1 * torch.randn_like(target)
    lhs = ((raw - target) ** 2).flatten(1).sum(1)
    w = param.x0_weight(xt, t, process)
    rhs = (w * (param.to_x0(raw, xt, t, process) - x0) ** 2).flatten(1).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-8, atol=1e-10)


def test_edm_preconditioning_is_the_papers():
    """For the EDM process, c_skip, c_out, c_in, c_noise are Karras et al.'s Table 1 formulas."""
    p, pre = P.make("edm"), PZ.make("edm", sigma_data=0.5)
    sigma = torch.tensor([0.01, 0.3, 2.0, 70.0], dtype=torch.float64)
    x = torch.randn(4, 5, dtype=torch.float64)
    raw = torch.randn(4, 5, dtype=torch.float64)
    sd = 0.5
    c_skip = sd**2 / (sigma**2 + sd**2)
    c_out = sigma * sd / torch.sqrt(sigma**2 + sd**2)
    c_in = 1 / torch.sqrt(sigma**2 + sd**2)
    torch.testing.assert_close(pre.to_x0(raw, x, sigma, p), c_skip[:, None] * x + c_out[:, None] * raw)
    torch.testing.assert_close(pre.c_in(p, sigma, x), c_in[:, None])
    torch.testing.assert_close(pre.c_noise(p, sigma), torch.log(sigma) / 4)


def test_consistency_boundary_condition(process):
    """The consistency parameterization returns x itself at t_min, whatever the network says."""
    param = PZ.make("consistency")
    x = torch.randn(3, 4, dtype=torch.float64)
    t = torch.full((3,), process.t_min, dtype=torch.float64)
    out = param.to_x0(torch.randn_like(x), x, t, process)
    a = process.alpha(t)[:, None]
    torch.testing.assert_close(out, x / a)


class _Affine(nn.Module):
    def forward(self, x, noise_input, y=None):
        return 0.5 * x + noise_input.reshape(-1, *([1] * (x.ndim - 1)))


def test_net_denoiser_feeds_scaled_input_and_noise(process):
    param = PZ.make("edm")
    d = PZ.NetDenoiser(_Affine(), process, param)
    t, x0, eps, xt = _state(process, n=4)
    raw = 0.5 * param.c_in(process, t, xt) * xt + append_dims(param.c_noise(process, t), xt.ndim)
    torch.testing.assert_close(d(xt, t), param.to_x0(raw, xt, t, process))
    torch.testing.assert_close(d.raw(xt, t), raw)


def test_noise_inputs_and_errors():
    p = P.make("vp")
    t = torch.tensor([0.25, 0.5], dtype=torch.float64)
    torch.testing.assert_close(PZ.make("eps").c_noise(p, t), 1000 * t)
    torch.testing.assert_close(PZ.make("eps", noise_input="t").c_noise(p, t), t)
    torch.testing.assert_close(PZ.make("eps", noise_input="log_snr").c_noise(p, t), p.log_snr(t))
    with pytest.raises(ValueError, match="parameterization 'epsilon' unknown; one of"):
        PZ.make("epsilon")
    with pytest.raises(ValueError, match="noise input 'sigma' unknown"):
        PZ.make("eps", noise_input="sigma")
    with pytest.raises(ValueError, match="sigma_data"):
        PZ.make("edm", sigma_data=-1)
