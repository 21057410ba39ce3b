"""Few-step generation (scorediff.few_step, the consistency sampler) against closed-form truth.

Teachers are the exact mixture denoiser of ``scorediff.analytic.ring2d`` (no teacher is trained here);
students are small MLPs trained by the one training loop (``Trainer`` with the objective as its loss).
"""

from __future__ import annotations

import math

import pytest
import torch

from scorediff import analytic as A
from scorediff import few_step, nets, sample, schedules
from scorediff import parameterizations as PZ
from scorediff import processes as P
from scorediff.data import ArrayDataset, DataInfo
from scorediff.samplers import SAMPLERS
from scorediff.training.loop import Components, Trainer

torch.set_num_threads(1)


def sw(x, y) -> float:
    return float(A.sliced_wasserstein(x, y, projections=128, generator=torch.Generator().manual_seed(0)))


def ring_data(n=4096, seed=0) -> ArrayDataset:
    x = A.ring2d().sample(n, torch.Generator().manual_seed(seed)).float()
    return ArrayDataset(x, torch.full((n,), -1), DataInfo((2,)))


def small_net():
    return nets.make("mlp-2d", width=128, depth=3, emb_dim=32, embedding="fourier", fourier_scale=4.0)


def config(steps, **more):
    cfg = {"seed": 0, "threads": 1, "optim": {"lr": 3e-3, "batch_size": 256, "steps": steps, "warmup_steps": 0},
           "ema": {"half_life_steps": 20}, "sample": {"sampler": "ddim", "steps": 4, "num": 16, "every": 0},
           "log": {"every": 0, "progress": False, "tensorboard": False}, "ckpt": {"every": 0}}
    for k, v in more.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return cfg


def run(objective_of, param, steps, out, process, stop_after=None, resume=False, **more):
    """Train a fresh small MLP (seeded) with the objective ``objective_of(student_net)``; returns the Trainer."""
    torch.manual_seed(0)
    net = small_net()
    obj = objective_of(net)
    comps = Components(ring_data(), {"shape": [2], "num_classes": 0, "kind": "points"}, net, process, param, obj)
    tr = Trainer(config(steps, **more), out, resume=resume, components=comps)
    return tr.train(stop_after=stop_after)


def teacher_ddim(mix, p, x, steps, schedule="karras"):
    return sample(mix.denoiser(p), p, x, sampler="ddim", steps=steps, schedule=schedule)


# -- the consistency function and the sampler ----------------------------------------------------------


@pytest.mark.parametrize("name", ["edm", "vp", "flow"])
def test_consistency_function_is_identity_at_t_min(name):
    p = P.make(name)
    huge = lambda x, c, **_: 1e6 * torch.randn_like(x)  # noqa: E731  any network output
    f = PZ.NetDenoiser(huge, p, PZ.make("consistency"))
    x = torch.randn(64, 2, dtype=torch.float64)
    out = f(x, torch.full((64,), p.t_min, dtype=torch.float64))
    torch.testing.assert_close(out, x / p.alpha(torch.tensor(p.t_min, dtype=torch.float64)), rtol=1e-12, atol=0)
    # away from t_min the network output does count
    assert (f(x, torch.full((64,), 10 * p.t_min, dtype=torch.float64)) - x).abs().max() > 1.0


def gaussian_consistency_function(p, m, s):
    """The exact PF-ODE map to t_min for data N(m, s^2 I): in x~ = x / alpha, sigma~ = sigma / alpha,
    x~(sigma~_min) = m + (x~ - m) sqrt(s^2 + sigma~_min^2) / sqrt(s^2 + sigma~^2) (closed form)."""
    t_min = torch.tensor(p.t_min, dtype=torch.float64)
    st_min = float(p.sigma(t_min) / p.alpha(t_min))

    def f(x, t):
        a, sg = (v.reshape(-1, 1).to(x.dtype) for v in (p.alpha(t), p.sigma(t)))
        return m + (x / a - m) * math.sqrt(s**2 + st_min**2) / torch.sqrt(s**2 + (sg / a) ** 2)

    return f, st_min


@pytest.mark.parametrize("name", ["edm", "vp"])
def test_one_consistency_step_with_the_exact_gaussian_map_is_exact(name):
    p, m, s, n = P.make(name), torch.tensor([0.7, -0.3], dtype=torch.float64), 0.4, 20000
    f, st_min = gaussian_consistency_function(p, m, s)
    gauss = A.GaussianMixture(torch.ones(1, dtype=torch.float64), m[None], (s**2 * torch.eye(2, dtype=torch.float64))[None])
    # the closed form against an independent solve of the same ODE (adaptive ODE sampler, exact denoiser)
    t_hi = p.t_max if name == "edm" else 0.9
    xt = gauss.sample(8, torch.Generator().manual_seed(1))
    xt = p.alpha(torch.tensor(t_hi)) * xt + p.sigma(torch.tensor(t_hi)) * torch.randn(8, 2, dtype=torch.float64)
    ode = SAMPLERS["ode"](gauss.denoiser(p), p, xt, torch.tensor([t_hi, p.t_min], dtype=torch.float64), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(f(xt, torch.full((8,), t_hi, dtype=torch.float64)), ode / p.alpha(torch.tensor(p.t_min)),
                               rtol=1e-5, atol=1e-5)
    # one step from t_max (start drawn from the exact p_{t_max}) and two steps: exactly N(m, s^2 + sigma~_min^2)
    g = torch.Generator().manual_seed(2)
    t_max = torch.tensor(p.t_max, dtype=torch.float64)
    x_T = p.alpha(t_max) * (m + s * torch.randn(n, 2, generator=g, dtype=torch.float64)) + p.sigma(t_max) * torch.randn(
        n, 2, generator=g, dtype=torch.float64)
    var = s**2 + st_min**2
    for steps in (1, 2):
        y = sample(f, p, x_T, sampler="consistency", steps=steps, seed=3, dtype=torch.float64)
        assert torch.allclose(y.mean(0), m, atol=5 * math.sqrt(var / n)), (steps, y.mean(0))
        cov = torch.cov(y.T)
        assert torch.allclose(cov, var * torch.eye(2, dtype=torch.float64), atol=5 * var * math.sqrt(2 / n)), (steps, cov)
    one = sample(f, p, x_T[:5], sampler="consistency", steps=1, dtype=torch.float64)
    torch.testing.assert_close(one, f(x_T[:5], torch.full((5,), p.t_max, dtype=torch.float64)))


def test_consistency_sampler_chosen_times_and_nfe():
    p = P.make("edm")
    calls = []

    def f(x, t):
        calls.append(float(t[0]))
        return torch.zeros_like(x)

    sample(f, p, (4, 2), sampler="consistency", schedule=[80.0, 5.0, 0.5, 0.002])
    assert calls == [80.0, 5.0, 0.5]


# -- progressive distillation ---------------------------------------------------------------------------

EDM = P.make("edm")


class TeacherPlusMLP(torch.nn.Module):
    """A student that starts as the teacher, as in Salimans & Ho (2022): x0_hat = the exact mixture denoiser
    + c_out(sigma) MLP(c_in(sigma) x, log(sigma) / 4) with the MLP's last layer at zero (x0 parameterization;
    EDM's c_in, c_out with sigma_d = 0.5, so that the truncated-SNR weight max(1 / sigma^2, 1) on the x0 error
    is an even weight on the MLP's error)."""

    def __init__(self, mix, process):
        super().__init__()
        self.teacher = mix.denoiser(process)
        self.mlp = small_net()
        last = [m for m in self.mlp.modules() if isinstance(m, torch.nn.Linear)][-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)

    def forward(self, x, c_noise, **cond):
        sigma = torch.exp(4 * c_noise.double())  # EDM: t = sigma
        with torch.no_grad():
            base = self.teacher(x.double(), sigma).to(x.dtype)
        sigma = sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        scale = torch.sqrt(sigma**2 + 0.25)  # EDM's c_in = 1 / scale keeps the MLP's input at unit size
        return base + sigma * 0.5 / scale * self.mlp(x / scale, c_noise)


@pytest.fixture(scope="module")
def progressive(tmp_path_factory):
    """16-step teacher DDIM (exact ring2d denoiser) distilled to 8, then 4 steps; the student after the
    first halving is kept aside (the run stops there and resumes)."""
    import copy

    mix, out = A.ring2d(), tmp_path_factory.mktemp("pd")
    param = PZ.make("x0", noise_input="log_sigma")

    def student_run(**kw):
        torch.manual_seed(0)
        net = TeacherPlusMLP(mix, EDM)
        obj = few_step.ProgressiveDistillation(EDM, param, mix.denoiser(EDM), net, teacher_steps=16, to_steps=4,
                                              steps_per_stage=300)
        comps = Components(ring_data(), {"shape": [2], "num_classes": 0, "kind": "points"}, net, EDM, param, obj)
        return Trainer(config(600), out, components=comps, resume=kw.pop("resume", False)).train(**kw)

    first = copy.deepcopy(PZ.NetDenoiser(student_run(stop_after=300).ema.model, EDM, param))
    return mix, first, PZ.NetDenoiser(student_run(resume=True).ema.model, EDM, param)


def test_progressive_one_halving_reproduces_two_teacher_steps(progressive):
    mix, student, _ = progressive
    teacher = mix.denoiser(EDM)
    grid8, grid16 = schedules.make("karras", 8, EDM), schedules.make("karras", 16, EDM)
    g = torch.Generator().manual_seed(7)
    errs, baseline = [], []
    for i in range(8):
        t = grid8[i]
        x0 = mix.sample(2000, g)
        x = (x0 + float(t) * torch.randn(2000, 2, generator=g, dtype=torch.float64)).float()  # held-out x_t ~ p_t
        with torch.no_grad():
            two = SAMPLERS["ddim"](teacher, EDM, x, grid16[2 * i: 2 * i + 3])
            one_teacher = SAMPLERS["ddim"](teacher, EDM, x, grid8[i: i + 2])
            one_student = SAMPLERS["ddim"](student, EDM, x, grid8[i: i + 2])
        errs.append(float((one_student - two).pow(2).mean().sqrt()))
        baseline.append(float((one_teacher - two).pow(2).mean().sqrt()))
    # small against the data (ring radius 1, components' std 0.06) and, summed over the steps, against the
    # teacher's own one-step error
    assert max(errs) < 0.05 and sum(errs) < 0.5 * sum(baseline), (errs, baseline)


def test_progressive_4_steps_beat_the_teachers_4_step_ddim(progressive):
    mix, _, student = progressive
    x = EDM.prior_sample((3000, 2), torch.Generator().manual_seed(11))
    truth = mix.sample(3000, torch.Generator().manual_seed(12))
    with torch.no_grad():
        y_student = sample(student, EDM, x, sampler="ddim", steps=4, schedule="karras")
    y_teacher = teacher_ddim(mix, EDM, x, 4)
    assert sw(y_student, truth) < 0.6 * sw(y_teacher, truth), (sw(y_student, truth), sw(y_teacher, truth))


# -- consistency distillation ---------------------------------------------------------------------------


def test_consistency_distillation_beats_the_teachers_ddim_at_1_and_2_steps(tmp_path):
    mix, param = A.ring2d(), PZ.make("consistency")
    tr = run(lambda net: few_step.ConsistencyDistillation(EDM, param, mix.denoiser(EDM), net, total_steps=250,
                                                         solver="heun", mu=0.95, s0=12, s1=12),
             param, 250, tmp_path, EDM, sample={"sampler": "consistency", "steps": 1})
    f = PZ.NetDenoiser(tr.ema.model, EDM, param)
    x = EDM.prior_sample((3000, 2), torch.Generator().manual_seed(11))
    truth = mix.sample(3000, torch.Generator().manual_seed(12))
    for steps in (1, 2):
        with torch.no_grad():
            y = sample(f, EDM, x, sampler="consistency", steps=steps, seed=1)
        ref = teacher_ddim(mix, EDM, x, steps)
        assert sw(y, truth) < 0.5 * sw(ref, truth), (steps, sw(y, truth), sw(ref, truth))


# -- exact resume in the middle of a stage ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["progressive", "progressive_annealed", "consistency_distillation",
                                    "consistency_training"])
def test_resume_mid_stage_is_bit_exact(method, tmp_path):
    mix = A.ring2d()
    if method == "progressive":
        param = PZ.make("x0")

        def objective(net):
            return few_step.ProgressiveDistillation(EDM, param, mix.denoiser(EDM), net, teacher_steps=8, to_steps=2,
                                                   steps_per_stage=4)
    elif method == "progressive_annealed":  # stages of 3 and 5 steps, lr annealed within each, Heun first teacher
        param = PZ.make("x0")

        def objective(net):
            return few_step.ProgressiveDistillation(EDM, param, mix.denoiser(EDM), net, teacher_steps=8, to_steps=2,
                                                   steps_per_stage=[3, 5], teacher_solver="heun", lr_anneal=True)
    elif method == "consistency_distillation":
        param = PZ.make("consistency")

        def objective(net):
            return few_step.ConsistencyDistillation(EDM, param, mix.denoiser(EDM), net, total_steps=8, s0=2, s1=8,
                                                   solver="dpm_solver_pp")
    else:
        param = PZ.make("consistency")

        def objective(net):
            return few_step.ConsistencyTraining(EDM, param, total_steps=8, s0=2, s1=8)

    straight = run(objective, param, 8, tmp_path / "a", EDM)
    run(objective, param, 8, tmp_path / "b", EDM, stop_after=6)  # stage 2 of 2 (progressive), mid-curriculum
    resumed = run(objective, param, 8, tmp_path / "b", EDM, resume=True)
    for a, b in zip(straight.net.state_dict().values(), resumed.net.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.ema.model.state_dict().values(), resumed.ema.model.state_dict().values()):
        assert torch.equal(a, b)
    ta, _ = straight.loss_fn.state()
    tb, _ = resumed.loss_fn.state()
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


# -- the pieces ------------------------------------------------------------------------------------------


def test_progressive_stage_lengths_and_lr_anneal(tmp_path):
    """Per-stage lengths move the stage boundaries; with ``lr_anneal`` the loop's learning rate falls
    linearly to 0 within each stage (lr (1 - j / L) at the j-th step of a stage of L steps); the first
    stage's target uses the chosen teacher solver, later stages the student teacher's DDIM."""
    mix, param = A.ring2d(), PZ.make("x0")
    objs = []

    def objective(net):
        objs.append(few_step.ProgressiveDistillation(EDM, param, mix.denoiser(EDM), net, teacher_steps=8, to_steps=2,
                                                    steps_per_stage=[3, 5], teacher_solver="heun", lr_anneal=True))
        return objs[-1]

    tr = run(objective, param, 8, tmp_path, EDM)
    obj = objs[0]
    assert [obj.stage(k) for k in range(9)] == [0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert [obj.student_steps(obj.stage(k)) for k in (0, 3)] == [4, 2] and obj.total_steps == 8
    lrs = [tr.lr_at(k) for k in range(8)]
    expect = [3e-3 * f for f in (1, 2 / 3, 1 / 3, 1, 4 / 5, 3 / 5, 2 / 5, 1 / 5)]
    assert lrs == pytest.approx(expect, rel=1e-12)
    assert obj.teacher is not obj.first_teacher  # the stage-0 student became the teacher at step 3
    # the first stage's target is the teacher's two Heun steps, inverted through one DDIM step
    fresh = objective(small_net())
    x = EDM.prior_sample((64, 2), torch.Generator().manual_seed(3)).float() * 0.5
    s_grid, t_grid = fresh.grids(4)
    x_tilde = fresh.target(x, 1, 4)
    one_ddim = SAMPLERS["ddim"](lambda *_: x_tilde, EDM, x, torch.tensor(s_grid[1:3], dtype=torch.float64))
    two_heun = SAMPLERS["heun"](mix.denoiser(EDM), EDM, x, torch.tensor(t_grid[2:5], dtype=torch.float64))
    torch.testing.assert_close(one_ddim, two_heun, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="one per halving"):
        few_step.ProgressiveDistillation(EDM, param, mix.denoiser(EDM), small_net(), teacher_steps=8, to_steps=2,
                                        steps_per_stage=[3, 5, 7])


def test_curricula():
    assert few_step.cd_curriculum(0, 100, 2, 150) == 2 and few_step.cd_curriculum(100, 100, 2, 150) == 151
    assert few_step.cd_curriculum(50, 100, 18, 18) == 19
    ns = [few_step.ict_curriculum(k, 1000, 10, 160) for k in range(1000)]
    assert ns[0] == 11 and ns[-1] == 161 and sorted(set(ns)) == [11, 21, 41, 81, 161]
    assert ns == sorted(ns)


def test_ict_index_distribution_is_the_discretised_lognormal():
    obj = few_step.ConsistencyTraining(EDM, PZ.make("consistency"), total_steps=10, s0=10, s1=10)
    ts = obj.grid(11)
    probs = obj.index_probs(ts)
    # independent: the lognormal's mass between the nodes by scipy, renormalised over [sigma_min, sigma_max]
    from scipy.stats import norm

    cdf = norm.cdf((torch.log(ts).numpy() - obj.P_mean) / obj.P_std)
    expect = (cdf[1:] - cdf[:-1]) / (cdf[-1] - cdf[0])
    assert torch.allclose(probs, torch.as_tensor(expect), atol=1e-12)


def test_pseudo_huber():
    a, b = torch.zeros(3, 4), torch.ones(3, 4)
    c = 0.00054 * 2
    assert torch.allclose(few_step.pseudo_huber(a, b), torch.full((3,), (math.sqrt(4 + c * c) - c) / 4))


def test_teacher_objectives_are_not_configurable_from_train():
    with pytest.raises(ValueError, match="needs a teacher run"):
        few_step.make("progressive", EDM, PZ.make("edm"), 10)
    with pytest.raises(ValueError, match="objective 'nope' unknown"):
        few_step.make("nope", EDM, PZ.make("edm"), 10)


# -- the command line ---------------------------------------------------------------------------------------

FAST = ["--set", "log.progress=false", "--set", "sample.num=16"]


@pytest.fixture(scope="module")
def toy_teacher(tmp_path_factory):
    from scorediff.cli import main

    out = tmp_path_factory.mktemp("cli") / "teacher"
    assert main(["train", "toy2d", "--out", str(out), *FAST, "--set", "optim.steps=2", "--set", "data.options.n=500"]) == 0
    return out


def test_cli_distill_progressive_and_consistency_make_sampleable_runs(toy_teacher, tmp_path, capsys):
    import json

    from scorediff.cli import main

    pd = tmp_path / "pd"
    assert main(["distill", "progressive", str(toy_teacher), "--out", str(pd), "--teacher-steps", "4", "--to-steps", "1",
                 "--steps-per-stage", "1,3", *FAST]) == 0
    cfg = json.loads((pd / "config.json").read_text())
    assert (cfg["sample"]["sampler"], cfg["sample"]["steps"], cfg["optim"]["steps"]) == ("ddim", 1, 4)
    opts = cfg["loss"]["options"]
    assert (opts["steps_per_stage"], opts["teacher_solver"], opts["lr_anneal"]) == ([1, 3], "heun", True)  # defaults
    assert json.loads((pd / "state.json").read_text())["objective"]["student_steps"] == 1
    assert main(["sample", str(pd), "--num", "8", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "sample_ddim_1.png").exists()
    cd = tmp_path / "cd"
    assert main(["distill", "consistency", str(toy_teacher), "--out", str(cd), "--steps", "3", "--solver", "ddim",
                 *FAST]) == 0
    cfg = json.loads((cd / "config.json").read_text())
    assert cfg["parameterization"]["name"] == "consistency" and cfg["sample"]["sampler"] == "consistency"
    assert main(["sample", str(cd), "--num", "8", "--steps", "2", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "sample_consistency_2.png").exists()


@pytest.mark.parametrize("argv,message", [
    (["progressive", "no/such/run"], "is not a run folder"),
    (["progressive", "TEACHER", "--to-steps", "3"], "must be to_steps (3) times a power of two"),
    (["progressive", "TEACHER", "--schedule", "nope"], "schedule 'nope' unknown"),
    (["consistency", "TEACHER", "--solver", "rk4"], "teacher solver 'rk4' unknown"),
    (["progressive", "TEACHER", "--teacher-solver", "rk4"], "teacher solver 'rk4' unknown"),
    (["progressive", "TEACHER", "--steps-per-stage", "1,2,3"], "2 positive numbers (one per halving 16 -> 4)"),
])
def test_cli_distill_bad_input_is_one_line(argv, message, toy_teacher, tmp_path, capsys):
    from scorediff.cli import main

    argv = [str(toy_teacher) if a == "TEACHER" else a for a in argv]
    assert main(["distill", *argv, "--out", str(tmp_path / "x"), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x" / "state.json").exists()


def test_train_with_the_consistency_training_config(tmp_path):
    from scorediff.cli import main
    from scorediff.training import load_run

    out = tmp_path / "ict"
    assert main(["train", "digits-ict", "--out", str(out), *FAST, "--set", "net.preset=unet-tiny",
                 "--set", "optim.steps=2"]) == 0
    r = load_run(out)
    assert r.config["loss"]["name"] == "consistency_training" and r.config["sample"]["sampler"] == "consistency"
    # a consistency run samples with the consistency sampler; at t_min the model is exactly the identity
    x = torch.randn(3, *r.shape)
    torch.testing.assert_close(r.denoiser(x, torch.full((3,), r.process.t_min)), x)
