"""Flow matching with couplings (scorediff/couplings.py), reflow (scorediff/reflow.py) and straightness
(scorediff/eval/straightness.py), against closed form: Gaussian source and target, whose optimal transport map, W2
and OT interpolant velocity are known exactly (scorediff/analytic/transport.py), and brute-force assignment."""

from __future__ import annotations

import itertools

import pytest
import torch

import scorediff
import scorediff.analytic as A
import scorediff.parameterizations as PZ
import scorediff.processes as P
from scorediff.couplings import couple, ot_pairing, sinkhorn_log_plan
from scorediff.eval.straightness import straightness
from scorediff.losses import make as make_loss
from scorediff.reflow import Reflow

M = torch.tensor([2.0, -1.0], dtype=torch.float64)
S = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)


def _gaussian_batch(g, n=512):
    x0 = M + torch.randn(n, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(S).T
    return x0, torch.randn(n, 2, generator=g, dtype=torch.float64)


def test_ot_pairing_is_the_brute_force_optimum():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    cost = lambda perm: float(((x0 - x1[list(perm)]) ** 2).sum())
    best = min(itertools.permutations(range(6)), key=cost)
    assert cost(ot_pairing(x0, x1).tolist()) == pytest.approx(cost(best), rel=1e-12)


def test_sinkhorn_plan_has_the_marginals_and_tends_to_the_assignment():
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(16, 2, generator=g), torch.randn(16, 2, generator=g)
    p = sinkhorn_log_plan(x0, x1, reg=0.2, iters=500).exp()
    torch.testing.assert_close(p.sum(0), torch.full((16,), 1 / 16, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(p.sum(1), torch.full((16,), 1 / 16, dtype=torch.float64), atol=1e-6, rtol=0)
    sharp = sinkhorn_log_plan(x0, x1, reg=1e-3, iters=2000).exp()
    assert torch.equal(sharp.argmax(1), ot_pairing(x0, x1))


def test_minibatch_ot_approaches_the_gaussian_ot_map():
    # noise N(0, I) -> data N(M, S): the OT map is T(x1) = S^{1/2} x1 + M; pairs from a 512-batch
    a, b = A.gaussian_ot_map(torch.zeros(2), torch.eye(2), M, S)
    w2 = A.gaussian_w2_squared(torch.zeros(2), torch.eye(2), M, S)
    g = torch.Generator().manual_seed(0)
    cost, err = {}, {}
    for name in ("independent", "ot", "ot-sinkhorn"):
        c, e = 0.0, 0.0
        for _ in range(2):
            x0, x1 = _gaussian_batch(g)
            x1c = couple(name, x0, x1, g)
            c += float(((x0 - x1c) ** 2).sum(1).mean()) / 2
            e += float(((x0 - (x1c @ a.T + b)) ** 2).sum(1).mean()) / 2
        cost[name], err[name] = c, e
    # independent pairs cost E|x0 - x1|^2 = |M|^2 + tr S + 2 = 7.8; exact minibatch OT is near W2^2 = 5.38 (the
    # mean over two 512-batches has a standard deviation of about 0.2 here)
    assert cost["independent"] == pytest.approx(7.8, rel=0.1)
    assert cost["ot"] == pytest.approx(w2, rel=0.1) and cost["ot"] < cost["ot-sinkhorn"] < cost["independent"]
    # and its pairs lie near the map (measured 0.025; independent 1.56, Sinkhorn at reg 0.05 0.23)
    assert err["ot"] < 0.06 and err["ot"] < err["ot-sinkhorn"] < 0.5 < err["independent"]


@pytest.mark.parametrize("name", ["independent", "ot"])
def test_interpolant_velocity_is_the_closed_form(name):
    # E[x1 - x0 | x_t] at t = 0.4 estimated by affine least squares over coupled pairs (it is affine for Gaussians):
    # independent pairs -> the flow oracle's velocity; minibatch OT -> the OT map's straight velocity
    t, g = 0.4, torch.Generator().manual_seed(2)
    xs, vs = [], []
    for _ in range(16):
        x0, x1 = _gaussian_batch(g, 256)
        x1 = couple(name, x0, x1, g)
        xs.append((1 - t) * x0 + t * x1)
        vs.append(x1 - x0)
    x, v = torch.cat(xs), torch.cat(vs)
    design = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], 1)
    coef = torch.linalg.lstsq(design, v).solution
    probe = M * (1 - t) + torch.randn(64, 2, generator=g, dtype=torch.float64)
    fitted = torch.cat([probe, torch.ones(64, 1, dtype=torch.float64)], 1) @ coef
    tt = torch.full((64,), t, dtype=torch.float64)
    if name == "independent":
        flow, mix = P.make("flow"), A.GaussianMixture([1.0], [M.tolist()], [S.tolist()])
        truth = PZ.pf_ode_velocity(mix.denoiser(flow), flow, probe, tt)
    else:
        truth = A.OTFlowDenoiser(M, S).velocity(probe, tt)
    assert float((fitted - truth).abs().mean()) < 0.05  # Monte Carlo error of the fit, 4096 pairs


def test_straightness_is_zero_exactly_on_straight_paths():
    flow, g = P.make("flow"), torch.Generator().manual_seed(3)
    x = torch.randn(256, 2, generator=g, dtype=torch.float64)
    s_ot, end = straightness(A.OTFlowDenoiser(M, S), flow, x, steps=50)
    a, b = A.gaussian_ot_map(torch.zeros(2), torch.eye(2), M, S)
    t_end = flow.t_min  # the straight path's point at t_min: (1 - t) T(x1) + t x1
    assert s_ot < 1e-20 and float((end - ((1 - t_end) * (x @ a.T + b) + t_end * x)).abs().max()) < 1e-10
    s_ind, _ = straightness(A.GaussianMixture([1.0], [M.tolist()], [S.tolist()]).denoiser(flow), flow, x, steps=50)
    assert s_ind > 0.2


def test_dsm_coupling_options():
    flow, param = P.make("flow"), PZ.make("velocity")
    loss = make_loss("dsm", flow, param, weighting="none", coupling="ot")
    assert loss.config()["coupling"] == "ot"

    class Zero:
        def raw(self, x, t):
            return torch.zeros_like(x)

    x0, _ = _gaussian_batch(torch.Generator().manual_seed(0), 64)
    # with a zero velocity the loss is the pairs' mean |x1 - x0|^2 / D: OT pairs cost less than independent ones
    ind = make_loss("dsm", flow, param, weighting="none")(Zero(), x0, torch.Generator().manual_seed(1)).mean()
    ot = loss(Zero(), x0, torch.Generator().manual_seed(1)).mean()
    assert float(ot) < 0.8 * float(ind)
    with pytest.raises(ValueError, match="coupling 'sinkhorn' unknown; one of: independent, ot, ot-sinkhorn"):
        make_loss("dsm", flow, param, coupling="sinkhorn")
    with pytest.raises(ValueError, match="coupling 'ot' pairs noise and data for flow matching; it needs the 'flow'"):
        make_loss("dsm", P.make("vp"), PZ.make("eps"), coupling="ot")
    with pytest.raises(ValueError, match="sinkhorn_reg must be > 0"):
        make_loss("dsm", flow, param, coupling="ot-sinkhorn", sinkhorn_reg=0.0)


class _VelocityModel:
    """model.raw for the velocity parameterization from a denoiser on the flow process (v = (x - x0_hat) / t)."""

    def __init__(self, denoiser):
        self.denoiser = denoiser

    def raw(self, x, t, **cond):
        return (x - self.denoiser(x, t)) / t[:, None]


def test_reflow_pairs_are_the_teachers_ode_map_and_its_fixed_point():
    # Gaussian data: the independent flow's ODE map from N(0, I) is S^{1/2} x1 + M, the OT map; so the reflow pairs
    # are OT pairs, the straight OT field is the reflow loss's minimiser (loss ~ 0) and the teacher is not
    flow, param = P.make("flow"), PZ.make("velocity")
    teacher = A.GaussianMixture([1.0], [M.tolist()], [S.tolist()]).denoiser(flow)
    rf = Reflow(flow, param, teacher, (2,), pairs=256, sampler="heun", sampler_steps=32)
    x0, x1 = rf.draw_pairs()
    a, b = A.gaussian_ot_map(torch.zeros(2), torch.eye(2), M, S)
    assert float((x0.double() - (x1.double() @ a.T + b)).abs().max()) < 0.02  # Heun's error at 32 steps: 0.008
    batch = torch.zeros(256, 2)
    ot = float(rf(_VelocityModel(A.OTFlowDenoiser(M, S)), batch, torch.Generator().manual_seed(0)).mean())
    before = float(rf(_VelocityModel(teacher), batch, torch.Generator().manual_seed(0)).mean())
    assert ot < 1e-3 and before > 0.05
    with pytest.raises(ValueError, match="reflow rectifies a flow model"):
        Reflow(P.make("vp"), PZ.make("eps"), teacher, (2,))
    with pytest.raises(ValueError, match="sampler 'euler_maruyama' is stochastic"):
        Reflow(flow, param, teacher, (2,), sampler="euler_maruyama")


def test_reflow_cli_repeats(tmp_path, capsys):
    from scorediff.cli import main

    fast = ["--set", "log.progress=false", "--set", "log.tensorboard=false", "--set", "sample.num=16"]
    assert main(["train", "toy2d-flow", "--out", str(tmp_path / "flow"), "--set", "optim.steps=4",
                 "--set", "data.options.n=300", *fast]) == 0
    for src, dst in [("flow", "reflow1"), ("reflow1", "reflow2")]:  # 2- and 3-rectified flow
        assert main(["distill", "reflow", str(tmp_path / src), "--out", str(tmp_path / dst), "--steps", "3",
                     "--pairs", "32", "--pair-steps", "4", "--sample-steps", "2", *fast]) == 0
        cfg = __import__("json").loads((tmp_path / dst / "config.json").read_text())
        assert cfg["loss"]["name"] == "reflow" and cfg["sample"]["sampler"] == "euler" and cfg["sample"]["steps"] == 2
    capsys.readouterr()
    assert main(["train", "toy2d-flow", "--out", str(tmp_path / "bad"), "--set", "loss.options.coupling=sinkhorn",
                 *fast]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "coupling 'sinkhorn' unknown" in err


# -- stochastic interpolants / bridges (losses/bridge.py) ----------------------------------------------------------

M1 = torch.tensor([-1.0, 1.5], dtype=torch.float64)
S1 = torch.tensor([[0.2, -0.05], [-0.05, 0.4]], dtype=torch.float64)


class _BridgeModel:
    def __init__(self, den, d=0.0):
        self.den, self.d = den, d

    def raw(self, x, t, **cond):
        return self.den.velocity(x, t) + self.d


@pytest.mark.parametrize("gamma", [0.0, 0.5])
def test_bridge_loss_is_minimal_at_the_closed_form_velocity(gamma):
    # Gaussian target N(M, S) and unpaired Gaussian source N(M1, S1): with common random numbers
    # L(+d) + L(-d) - 2 L(0) = 2 d^2 exactly, and L(+-d) > L(0), at the closed-form interpolant velocity
    g = torch.Generator().manual_seed(0)
    source = M1 + torch.randn(4096, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(S1).T
    x0, _ = _gaussian_batch(g, 2048)
    loss = make_loss("bridge", P.make("flow"), PZ.make("velocity"), source=source, gamma=gamma)
    den = A.GaussianBridgeDenoiser(M, S, M1, S1, gamma)
    vals = {d: float(loss(_BridgeModel(den, d), x0, torch.Generator().manual_seed(1)).mean()) for d in (-0.1, 0, 0.1)}
    assert vals[0.1] + vals[-0.1] - 2 * vals[0] == pytest.approx(2 * 0.1**2, rel=1e-6)
    assert vals[0.1] > vals[0] and vals[-0.1] > vals[0]


def test_bridge_transports_source_to_target_with_the_registry():
    # the closed-form bridge's probability-flow ODE, integrated by the registered Heun sampler from source samples
    flow, g = P.make("flow"), torch.Generator().manual_seed(4)
    x1 = M1 + torch.randn(2000, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(S1).T
    y = scorediff.sample(A.GaussianBridgeDenoiser(M, S, M1, S1, 0.5), flow, x1, sampler="heun", steps=32,
                         dtype=torch.float64)
    target, _ = _gaussian_batch(torch.Generator().manual_seed(5), 2000)
    floor, _ = _gaussian_batch(torch.Generator().manual_seed(6), 2000)
    sw = lambda a, b: float(A.sliced_wasserstein(a, b, 128, torch.Generator().manual_seed(0)))
    assert sw(y, target) < 2 * sw(floor, target)
    torch.testing.assert_close(y.mean(0), M, atol=0.05, rtol=0)


def test_bridge_paired_degradations_and_errors():
    from scorediff.losses.bridge import degrade

    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    blurred = degrade(x, "blur", std=1.0, size=5)
    low = degrade(x, "downsample", factor=2)
    assert blurred.shape == low.shape == x.shape
    torch.testing.assert_close(low[:, :, ::2, ::2], torch.nn.functional.avg_pool2d(x, 2))
    # a constant image stays constant under the (normalised) blur away from the border
    assert float((degrade(torch.ones(1, 1, 9, 9), "blur", std=1.0, size=3)[0, 0, 1:-1, 1:-1] - 1).abs().max()) < 1e-6
    flow, v = P.make("flow"), PZ.make("velocity")
    loss = make_loss("bridge", flow, v, degrade={"name": "downsample", "factor": 2})
    assert loss(_ZeroImages(), x, torch.Generator().manual_seed(0)).shape == (3,)
    for kwargs, msg in [({}, "exactly one of source"), ({"degrade": {"name": "sharpen"}}, "degrade 'sharpen' unknown"),
                        ({"source": "moons", "gamma": -1.0}, "gamma must be >= 0")]:
        with pytest.raises(ValueError, match=msg):
            make_loss("bridge", flow, v, **kwargs)
    with pytest.raises(ValueError, match="parameterization 'velocity', got 'eps'"):
        make_loss("bridge", flow, PZ.make("eps"), source="moons")
    with pytest.raises(ValueError, match="on the 'flow' process's time, got 'vp'"):
        make_loss("bridge", P.make("vp"), v, source="moons")


class _ZeroImages:
    def raw(self, x, t, **cond):
        return torch.zeros_like(x)


def test_bridge_config_trains_and_translates(tmp_path):
    from scorediff.cli import main
    from scorediff.data import make as make_data
    from scorediff.runs import load_run

    out = tmp_path / "bridge"
    assert main(["train", "toy2d-bridge", "--out", str(out), "--set", "optim.steps=4", "--set", "log.progress=false",
                 "--set", "log.tensorboard=false", "--set", "sample.num=16", "--set", "sample.steps=2",
                 "--set", "data.options.n=300"]) == 0
    run = load_run(out)
    x1 = make_data("moons", n=32, seed=3).x
    y = scorediff.sample(run.denoiser, run.process, x1, sampler="heun", steps=4)
    assert y.shape == x1.shape and torch.isfinite(y).all()
