"""Guidance against closed-form truth: the mixture oracle with classes (= components, or a class map).

The exact conditional denoiser E[x0 | x_t, y] of a Gaussian mixture (``GaussianMixture.conditional_denoiser``)
is a perfect classifier-free-guidance model (y = -1 gives E[x0 | x_t]), and ``class_log_posterior`` the
exact p(y | x_t) for classifier guidance. Checks: the wrapper's algebra, one model call per step with every
sampler, scale 1 samples p(x | y), classifier guidance with the exact posterior = the exact conditional,
interval / rescale / dynamic thresholding as defined, the noisy classifier learns p(y | x_t), CLI errors.
"""

from __future__ import annotations

import math

import pytest
import torch

import scorediff
from scorediff import analytic, guidance, nets
from scorediff import processes as P
from scorediff.cli import main
from scorediff.samplers import SAMPLERS
from scorediff.training.classifier import fit_classifier, save_classifier

# ring2d's 8 components in two classes (even / odd angle): each class is itself a 4-component mixture
CLASS_MAP = [0, 1, 0, 1, 0, 1, 0, 1]


@pytest.fixture(scope="module")
def ring():
    return analytic.ring2d()


def _x_t(mix, process, t, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = mix.sample(n, g)
    return process.marginal(x0, t, torch.randn(x0.shape, generator=g, dtype=torch.float64))


# -- the oracle's conditionals --------------------------------------------------------------------------


def test_class_mixtures_make_up_the_mixture(ring):
    x = torch.randn(50, 2, dtype=torch.float64)
    pw = ring.class_weights(CLASS_MAP)
    assert torch.allclose(pw, torch.tensor([0.70, 0.30], dtype=torch.float64))
    # p0(x) = sum_y p(y) p0(x | y)
    parts = torch.stack([ring.class_mixture(c, CLASS_MAP).log_prob(x) + pw[c].log() for c in range(2)], 1)
    assert torch.allclose(torch.logsumexp(parts, 1), ring.log_prob(x), atol=1e-10)
    # with classes = components the class posterior is the component posterior
    proc = P.make("vp")
    t = torch.full((50,), 0.3, dtype=torch.float64)
    assert torch.allclose(ring.class_log_posterior(x, t, proc).exp(), ring.component_posterior(x, t, proc), atol=1e-12)
    with pytest.raises(ValueError, match="class 2 out of range"):
        ring.class_mixture(2, CLASS_MAP)
    with pytest.raises(ValueError, match="without a component"):
        ring.class_mixture(0, [0, 2, 0, 2, 0, 2, 0, 2])


def test_conditional_denoiser_is_the_class_mixtures_denoiser(ring, process):
    t = process.t_min + 0.37 * (process.t_max - process.t_min)
    x = _x_t(ring, process, t, n=40)
    D = ring.conditional_denoiser(process, CLASS_MAP)
    y = torch.arange(40) % 3 - 1  # -1, 0, 1: null, class 0, class 1 in one batch
    out = D(x, t, y=y)
    assert D.nfe == 1
    for label in (-1, 0, 1):
        m = ring if label < 0 else ring.class_mixture(label, CLASS_MAP)
        rows = y == label
        assert torch.allclose(out[rows], m.x0_mean(x[rows], t, process), atol=1e-10)


# -- classifier-free guidance ---------------------------------------------------------------------------


def test_cfg_wrapper_is_the_affine_combination(ring, process):
    t = process.t_min + 0.5 * (process.t_max - process.t_min)
    x = _x_t(ring, process, t, n=30)
    D = ring.conditional_denoiser(process, CLASS_MAP)
    y = torch.arange(30) % 2
    d_c, d_u = D(x, t, y=y), D(x, t, y=torch.full_like(y, -1))
    for s in (0.0, 0.5, 1.0, 2.0, 7.5):
        g = guidance.classifier_free(D, s)
        n0 = D.nfe
        assert torch.allclose(g(x, t, y=y), d_u + s * (d_c - d_u), atol=1e-12, rtol=0)
        assert D.nfe - n0 == 1 and g.nfe == D.nfe  # one batched call, counter visible through the wrapper
    # scale 1 and 0 are the conditional and unconditional models themselves
    assert torch.equal(guidance.classifier_free(D, 1.0)(x, t, y=y), d_c)
    assert torch.equal(guidance.classifier_free(D, 0.0)(x, t, y=y), d_u)


class _Counting:
    """A class-conditional denoiser that records the batch size of every call."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    @property
    def nfe(self):
        return len(self.batches)

    def __call__(self, x, t, y=None):
        self.batches.append(x.shape[0])
        return self.inner(x, t, y=y)


class _TwoCalls:
    """Reference CFG from two separate model calls (no batching), to check the batched wrapper against."""

    def __init__(self, inner, scale):
        self.inner, self.scale = inner, scale

    def __call__(self, x, t, y=None):
        d_c, d_u = self.inner(x, t, y=y), self.inner(x, t, y=torch.full_like(y, -1))
        return d_u + self.scale * (d_c - d_u)


@pytest.mark.parametrize("name", sorted(n for n, f in SAMPLERS.items() if f.info.denoiser == "any"
                                        and f.info.runs_on(P.make("vp"))))
def test_every_sampler_is_guidable_with_one_call_per_step(ring, name):
    proc = P.make("vp")
    y = torch.arange(16) % 2
    steps = 6
    exact = ring.conditional_denoiser(proc, CLASS_MAP)
    plain = _Counting(exact)
    scorediff.sample(plain, proc, (16, 2), sampler=name, steps=steps, seed=3, dtype=torch.float64, cond={"y": y})
    guided = _Counting(exact)
    x = scorediff.sample(guidance.classifier_free(guided, 3.0), proc, (16, 2), sampler=name, steps=steps, seed=3,
                         dtype=torch.float64, cond={"y": y})
    two = _Counting(exact)
    ref = scorediff.sample(_TwoCalls(two, 3.0), proc, (16, 2), sampler=name, steps=steps, seed=3,
                           dtype=torch.float64, cond={"y": y})
    assert 2 * guided.nfe == two.nfe  # one call where the reference makes two, at every evaluation ...
    if name != "ode":  # (the adaptive solver's step count depends on the field it integrates)
        assert guided.nfe == plain.nfe  # ... so as many calls as unguided sampling
    assert set(guided.batches) == {32}  # ... each on the conditional and unconditional halves at once
    assert torch.allclose(x, ref, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("sampler,steps", [("heun", 40), ("dpm_solver_pp_2m", 40)])
def test_scale_one_samples_the_class_conditional(ring, sampler, steps):
    """Scale 1 = p(x | y): sliced W2 to exact p(x | y) samples at the floor (two exact samples' distance), and
    the mean log p0(x | y) of the samples equal to that of exact samples (the negative entropy)."""
    proc = P.make("edm")
    n = 2000
    target = ring.class_mixture(1, CLASS_MAP)
    D = ring.conditional_denoiser(proc, CLASS_MAP)
    x = scorediff.sample(guidance.classifier_free(D, 1.0), proc, (n, 2), sampler=sampler, steps=steps, seed=0,
                         dtype=torch.float64, cond={"y": torch.ones(n, dtype=torch.long)})
    ref = target.sample(n, torch.Generator().manual_seed(1))
    ref2 = target.sample(n, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(0)
    sw = float(analytic.sliced_wasserstein(x, ref, generator=g))
    floor = float(analytic.sliced_wasserstein(ref2, ref, generator=torch.Generator().manual_seed(0)))
    assert sw < 1.5 * floor + 0.005, (sw, floor)
    gap = float(target.log_prob(x).mean() - target.log_prob(ref).mean())
    se = float(target.log_prob(ref).std()) / math.sqrt(n)
    assert abs(gap) < 4 * se + 0.02, (gap, se)
    # the gap detects a wrong scale: 0.7 (too little guidance) and 1.5 (too much) are far off
    for wrong, sign in ((0.7, -1), (1.5, 1)):
        xw = scorediff.sample(guidance.classifier_free(D, wrong), proc, (n, 2), sampler=sampler, steps=steps, seed=0,
                              dtype=torch.float64, cond={"y": torch.ones(n, dtype=torch.long)})
        assert sign * float(target.log_prob(xw).mean() - target.log_prob(ref).mean()) > 0.2
    # and it is not the unconditional distribution: the other class has (almost) no mass
    other = ring.class_mixture(0, CLASS_MAP)
    assert float((other.log_prob(x) > target.log_prob(x)).double().mean()) < 0.01


def test_interval_guides_only_inside(ring):
    proc = P.make("vp")
    D = ring.conditional_denoiser(proc, CLASS_MAP)
    x = torch.randn(40, 2, dtype=torch.float64)
    t = torch.linspace(0.01, 0.99, 40, dtype=torch.float64)
    y = torch.arange(40) % 2
    out = guidance.classifier_free(D, 4.0, interval=(0.3, 0.6))(x, t, y=y)
    d_c, d_u = D(x, t, y=y), D(x, t, y=torch.full_like(y, -1))
    inside = (t >= 0.3) & (t <= 0.6)
    assert 0 < int(inside.sum()) < 40
    assert torch.allclose(out[inside], (d_u + 4.0 * (d_c - d_u))[inside], atol=1e-12)
    assert torch.allclose(out[~inside], d_c[~inside], atol=1e-12)
    # a batch entirely outside the interval costs one call on B examples (the conditional model alone)
    counting = _Counting(D)
    guidance.classifier_free(counting, 4.0, interval=(0.3, 0.6))(x, torch.full((40,), 0.9, dtype=torch.float64), y=y)
    assert counting.batches == [40]


def test_rescale_restores_the_conditional_std(ring):
    proc = P.make("vp")
    D = ring.conditional_denoiser(proc, CLASS_MAP)
    x = torch.randn(20, 2, dtype=torch.float64)
    t, y = 0.4, torch.arange(20) % 2
    d_c, d_u = D(x, t, y=y), D(x, t, y=torch.full_like(y, -1))
    cfg = d_u + 5.0 * (d_c - d_u)
    full = guidance.classifier_free(D, 5.0, rescale=1.0)(x, t, y=y)
    assert torch.allclose(full.std(dim=1), d_c.std(dim=1), atol=1e-10)  # Lin et al.: std of x_pos
    assert torch.allclose(full, cfg * d_c.std(1, keepdim=True) / cfg.std(1, keepdim=True), atol=1e-12)
    half = guidance.classifier_free(D, 5.0, rescale=0.5)(x, t, y=y)
    assert torch.allclose(half, 0.5 * full + 0.5 * cfg, atol=1e-12)
    assert torch.equal(guidance.classifier_free(D, 5.0, rescale=0.0)(x, t, y=y), cfg)


def test_dynamic_threshold():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 1, 4, 4, generator=g, dtype=torch.float64) * torch.linspace(0.1, 3, 8, dtype=torch.float64)[
        :, None, None, None]
    out = guidance.dynamic_threshold(x0, 0.9)
    for i in range(8):
        s = max(1.0, float(torch.quantile(x0[i].abs().flatten(), 0.9)))
        assert torch.allclose(out[i], x0[i].clamp(-s, s) / s, atol=1e-12)
    assert out.abs().max() <= 1
    small = x0[:1] / x0[:1].abs().max()  # inside [-1, 1]: unchanged
    assert torch.equal(guidance.dynamic_threshold(small, 0.995), small)


def test_bad_arguments():
    D = analytic.ring2d().conditional_denoiser(P.make("vp"))
    with pytest.raises(ValueError, match="scale must be >= 0, got -1"):
        guidance.classifier_free(D, -1)
    with pytest.raises(ValueError, match="interval"):
        guidance.classifier_free(D, 2, interval=(0.6, 0.3))
    with pytest.raises(ValueError, match="rescale"):
        guidance.classifier_free(D, 2, rescale=1.5)
    with pytest.raises(ValueError, match="needs class labels"):
        guidance.classifier_free(D, 2)(torch.zeros(3, 2), 0.5)
    with pytest.raises(ValueError, match="labels must lie in -1..7"):
        guidance.classifier_free(D, 2)(torch.zeros(3, 2), 0.5, y=torch.tensor([0, 8, 1]))


# -- classifier guidance --------------------------------------------------------------------------------


def _exact_log_prob(mix, process, class_map=None):
    def log_prob(x, t, y):
        return mix.class_log_posterior(x, t, process, class_map).gather(1, y[:, None])[:, 0]

    return log_prob


def test_classifier_guidance_with_exact_posterior_is_the_conditional(ring, process):
    """grad log p_t(x) + grad log p(y | x_t) = grad log p_t(x | y): at scale 1 the exact conditional denoiser."""
    D_u = ring.denoiser(process)
    D_c = ring.conditional_denoiser(process, CLASS_MAP)
    g = guidance.classifier(D_u, process, _exact_log_prob(ring, process, CLASS_MAP), 1.0)
    for frac in (0.05, 0.3, 0.7):
        t = process.t_min + frac * (process.t_max - process.t_min)
        x = _x_t(ring, process, t, n=32, seed=1)
        y = torch.arange(32) % 2
        with torch.no_grad():  # as inside a sampler
            out = g(x, t, y=y)
        assert torch.allclose(out, D_c(x, t, y=y), atol=1e-8, rtol=1e-8)
    assert g.nfe == D_u.nfe > 0


@pytest.mark.parametrize("sampler", ["heun", "ddpm"])
def test_classifier_guidance_samples_equal_the_conditional(ring, sampler):
    """In samples, from the same noise: scale 1 classifier guidance = the exact conditional model."""
    proc = P.make("vp")
    n, y = 256, torch.arange(256) % 8  # classes = components
    D_c = ring.conditional_denoiser(proc)
    g = guidance.classifier(ring.denoiser(proc), proc, _exact_log_prob(ring, proc), 1.0)
    kw = dict(sampler=sampler, steps=20, seed=5, dtype=torch.float64, cond={"y": y})
    a = scorediff.sample(g, proc, (n, 2), **kw)
    b = scorediff.sample(D_c, proc, (n, 2), **kw)
    assert torch.allclose(a, b, atol=1e-6)
    # ... and lands in the asked component: its own class posterior is near 1 at t_min
    post = ring.component_posterior(a, torch.full((n,), proc.t_min, dtype=torch.float64), proc)
    assert float(post.gather(1, y[:, None]).mean()) > 0.95


# -- the noisy classifier -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_2d(tmp_path_factory):
    """A noisy MLP classifier trained on ring2d samples (classes = components) at VP noise levels."""
    torch.manual_seed(0)
    mix, proc = analytic.ring2d(), P.make("vp")
    x, y = mix.sample(20000, torch.Generator().manual_seed(0), return_labels=True)
    net = nets.make("classifier-2d", num_classes=8)
    clf = guidance.TimeClassifier(net, proc, scorediff.parameterizations.make("eps"), (2,), (proc.t_min, 1.0))
    losses = fit_classifier(clf, x.float(), y, lambda n, g: proc.t_min + (1 - proc.t_min) * torch.rand(n, generator=g),
                            steps=600, batch_size=256, lr=3e-3)
    folder = save_classifier(clf, tmp_path_factory.mktemp("clf") / "classifier")
    return mix, proc, clf, folder, losses


def test_classifier_learns_the_exact_class_posterior(trained_2d):
    mix, proc, clf, _, losses = trained_2d
    assert sum(losses[-50:]) < sum(losses[:50])
    for t in (0.05, 0.3, 0.6):
        x = _x_t(mix, proc, t, n=2000, seed=7)
        exact = mix.class_log_posterior(x, torch.full((2000,), t, dtype=torch.float64), proc)
        with torch.no_grad():
            learned = torch.log_softmax(clf(x.float(), t), 1).double()
        kl = float((exact.exp() * (exact - learned)).sum(1).mean())  # KL(exact || learned), nats
        assert kl < 0.05, (t, kl)
        y = torch.arange(2000) % 8
        lp = clf.log_prob(x.float(), t, y).double()
        assert torch.allclose(lp, learned.gather(1, y[:, None])[:, 0], atol=1e-6)


def test_classifier_folder_round_trip(trained_2d):
    _, proc, clf, folder, _ = trained_2d
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "info.json"}
    back = guidance.load_classifier(folder)
    assert back.num_classes == 8 and back.shape == (2,) and back.t_range == clf.t_range
    x, t = torch.randn(10, 2), torch.rand(10) * 0.9 + 0.05
    with torch.no_grad():
        assert torch.allclose(back(x, t), clf(x, t), atol=1e-6)
        assert torch.allclose(back.features(x), clf.net.features(x, clf.param.c_noise(proc, torch.full((10,), proc.t_min))),
                              atol=1e-5)
    assert back.features(x).shape == (10, 128)
    same = guidance.load_classifier(folder / "model.safetensors")  # a file of the folder names it too
    assert torch.equal(same(x, t), back(x, t))
    # guidance with the learned classifier runs under no_grad and uses autograd inside
    g = guidance.classifier(analytic.ring2d().denoiser(proc), proc, back.log_prob, 2.0)
    x = scorediff.sample(g, proc, (64, 2), sampler="ddim", steps=10, cond={"y": torch.full((64,), 3)})
    assert torch.isfinite(x).all()
    with pytest.raises(FileNotFoundError, match="not a classifier folder"):
        guidance.load_classifier(folder.parent)


# -- CLI ------------------------------------------------------------------------------------------------


_TINY = ["--set", "net.preset=unet-tiny", "--set", "optim.steps=2", "--set", "optim.batch_size=8",
         "--set", "log.progress=false", "--set", "sample.num=4", "--set", "sample.steps=2"]


@pytest.fixture(scope="module")
def cond_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("guided-runs")
    runs = {}
    for name, extra in [("dropout", ["--set", "net.class_conditional=true", "--set", "net.label_dropout=0.2"]),
                        ("nodropout", ["--set", "net.class_conditional=true"]), ("uncond", [])]:
        runs[name] = root / name
        assert main(["train", "digits", "--out", str(runs[name]), *_TINY, *extra]) == 0
    return runs


def test_cli_guided_sampling_and_classifier(cond_runs, tmp_path, capsys):
    import numpy as np

    run = cond_runs["dropout"]
    out = tmp_path / "g.png"
    assert main(["sample", str(run), "--steps", "2", "--num", "5", "--class", "3", "--guidance", "2.5",
                 "--guidance-interval", "0.1", "10", "--guidance-threshold", "0.99", "--guidance-rescale", "0.5",
                 "--out", str(out)]) == 0
    data = np.load(tmp_path / "g.npz")
    assert data["samples"].shape == (5, 1, 8, 8) and (data["labels"] == 3).all()
    assert main(["train-classifier", str(run), "--steps", "3", "--batch", "8"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(run / "classifier")
    # classifier guidance with that classifier, on the class-conditional run (its null label) ...
    assert main(["sample", str(run), "--steps", "2", "--num", "4", "--class", "7", "--classifier-guidance", "3",
                 "--out", str(tmp_path / "c.png")]) == 0
    assert (np.load(tmp_path / "c.npz")["labels"] == 7).all()
    # ... and on an unconditional run of the same data
    uncond = cond_runs["uncond"]
    assert main(["sample", str(uncond), "--steps", "2", "--num", "3", "--class", "2", "--classifier-guidance", "1",
                 "--classifier", str(run / "classifier"), "--out", str(tmp_path / "u.png")]) == 0
    assert np.isfinite(np.load(tmp_path / "u.npz")["samples"]).all()
    clf = guidance.load_classifier(run / "classifier")
    assert clf.num_classes == 10 and clf.shape == (1, 8, 8) and clf.features(torch.zeros(2, 1, 8, 8)).shape == (2, 16)  # unet-tiny: 8 x 2


@pytest.mark.parametrize("run,args,message", [
    ("uncond", ["--guidance", "2"], "not class-conditional"),
    ("uncond", ["--class", "1"], "not class-conditional"),
    ("nodropout", ["--guidance", "2"], "label dropout"),
    ("dropout", ["--guidance", "-1"], "scale must be >= 0, got -1"),
    ("dropout", ["--class", "10", "--guidance", "2"], "--class must lie in 0..9, got 10"),
    ("dropout", ["--guidance-interval", "0.1", "1"], "--guidance-interval need(s) --guidance SCALE"),
    ("dropout", ["--guidance", "3", "--guidance-threshold", "1.5"], "percentile must lie in (0, 1], got 1.5"),
    ("dropout", ["--guidance", "3", "--guidance-rescale", "2"], "rescale must lie in [0, 1], got 2"),
    ("nodropout", ["--classifier-guidance", "2"], "needs an unconditional model"),
    ("uncond", ["--classifier-guidance", "2"], "not a classifier folder"),
    ("uncond", ["--classifier", "x"], "--classifier needs --classifier-guidance"),
    ("dropout", ["--classifier-guidance", "-1"], "classifier guidance scale must be >= 0, got -1"),
])
def test_cli_guidance_errors(cond_runs, capsys, tmp_path, run, args, message):
    assert main(["sample", str(cond_runs[run]), "--steps", "2", "--num", "2", "--out", str(tmp_path / "x.png"),
                 *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_train_classifier_errors(cond_runs, tmp_path, capsys):
    assert main(["train-classifier", str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["train-classifier", str(cond_runs["uncond"]), "--steps", "0"]) == 2
    assert "--steps and --batch must be >= 1" in capsys.readouterr().err
