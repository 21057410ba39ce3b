"""scorediff.eval and ``scorediff eval``: FID / KID / precision-recall against closed-form truth and independent
implementations (scipy's sqrtm, torchmetrics, scikit-learn's nearest neighbours), the FID Inception loader, the
feature cache, the data split, the command and the training-time hook."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from scorediff import analytic, data, processes
from scorediff.cli import main
from scorediff.eval import (
    evaluate,
    frechet_distance,
    gaussian_frechet,
    kid,
    make_features,
    module_features,
    precision_recall,
    reference_features,
    score,
)
from scorediff.eval.inception import FIDInceptionV3, load_inception
from tests.conftest import import_or_skip_outside_ci


def _gaussians(F: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    A, B = (torch.randn(F, F, generator=g, dtype=torch.float64) for _ in range(2))
    eye = torch.eye(F, dtype=torch.float64)
    # non-commuting covariances, so that Tr (S_a S_b)^{1/2} is not a sum of per-axis terms
    return (torch.zeros(F, dtype=torch.float64), A @ A.T + 0.1 * eye, torch.full((F,), 0.5, dtype=torch.float64),
            B @ B.T + 0.1 * eye)


def _scipy_frechet(mu_a, s_a, mu_b, s_b) -> float:
    from scipy import linalg

    root = linalg.sqrtm(np.asarray(s_a) @ np.asarray(s_b)).real  # the textbook formula, independently
    return float(((np.asarray(mu_a) - np.asarray(mu_b)) ** 2).sum() + np.trace(s_a + s_b - 2 * root))


# -- metrics -----------------------------------------------------------------------------------------------


def test_frechet_of_gaussian_samples_is_the_closed_form_distance_within_sampling_error():
    mu_a, s_a, mu_b, s_b = _gaussians()
    truth = _scipy_frechet(mu_a, s_a.numpy(), mu_b, s_b.numpy())
    assert gaussian_frechet(mu_a, s_a, mu_b, s_b) == pytest.approx(truth, rel=1e-9)
    g = torch.Generator().manual_seed(1)
    la, lb = torch.linalg.cholesky(s_a), torch.linalg.cholesky(s_b)
    n, reps = 4000, 16
    est = np.array([frechet_distance(mu_a + torch.randn(n, 4, generator=g, dtype=torch.float64) @ la.T,
                                     mu_b + torch.randn(n, 4, generator=g, dtype=torch.float64) @ lb.T)
                    for _ in range(reps)])
    se = est.std(ddof=1) / np.sqrt(reps)
    assert abs(est.mean() - truth) < 4 * se  # the O(F/N) bias of the plug-in estimate is far below se here


def test_frechet_of_the_empirical_statistics_is_exact_and_matches_torchmetrics():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(300, 6, generator=g).exp()  # skewed, non-Gaussian features
    b = torch.randn(200, 6, generator=g) * 1.5 + 0.3
    ours = frechet_distance(a, b)
    an, bn = a.double().numpy(), b.double().numpy()
    assert ours == pytest.approx(_scipy_frechet(an.mean(0), np.cov(an, rowvar=False), bn.mean(0),
                                                np.cov(bn, rowvar=False)), rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # fewer samples than features (rank-deficient covariances): still finite and non-negative
    assert 0 <= frechet_distance(a[:4], b[:5]) < float("inf")

    tm = import_or_skip_outside_ci("torchmetrics.image.fid")

    class Identity(nn.Module):
        num_features = 6

        def forward(self, x):
            return x

    fid = tm.FrechetInceptionDistance(feature=Identity())
    fid.update(a.double(), real=True)
    fid.update(b.double(), real=False)
    assert ours == pytest.approx(float(fid.compute()), rel=1e-6)


def test_kid_is_unbiased_and_matches_torchmetrics_mmd():
    g = torch.Generator().manual_seed(3)
    draws = 200
    # equal distributions: the unbiased MMD^2 averages to 0 over independent draws
    vals = np.array([kid(torch.randn(40, 5, generator=g).exp(), torch.randn(40, 5, generator=g).exp(),
                         subsets=1, subset_size=40)[0] for _ in range(draws)])
    assert abs(vals.mean()) < 4 * vals.std(ddof=1) / np.sqrt(draws)
    # different distributions: clearly positive
    shifted = np.array([kid(torch.randn(40, 5, generator=g), torch.randn(40, 5, generator=g) + 0.5,
                            subsets=1, subset_size=40)[0] for _ in range(20)])
    assert shifted.mean() > 5 * shifted.std(ddof=1) / np.sqrt(20)
    # one subset of the whole sets is the plain estimator: torchmetrics' kernel code gives the same number
    kid_tm = import_or_skip_outside_ci("torchmetrics.image.kid")
    a, b = torch.randn(50, 7, generator=g, dtype=torch.float64), torch.randn(50, 7, generator=g, dtype=torch.float64)
    assert kid(a, b, subsets=1, subset_size=50)[0] == pytest.approx(float(kid_tm.poly_mmd(a, b)), rel=1e-10)
    mean, std = kid(a, b, subsets=10, subset_size=20, seed=4)
    assert std > 0 and (mean, std) == kid(a, b, subsets=10, subset_size=20, seed=4)  # seeded subsets


def _brute_precision_recall(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    from sklearn.neighbors import NearestNeighbors

    def radii(x):  # k-th neighbour other than the point itself
        return NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)[0][:, k]

    def covered(points, centres, r):
        d = np.linalg.norm(points[:, None] - centres[None], axis=-1)
        return float((d <= r[None]).any(1).mean())

    return covered(fake, real, radii(real)), covered(real, fake, radii(fake))


def test_precision_recall_identical_disjoint_and_against_nearest_neighbours():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(200, 3, generator=g)
    assert precision_recall(x, x) == (1.0, 1.0)
    assert precision_recall(x, x + 100.0) == (0.0, 0.0)
    real, fake = torch.randn(300, 3, generator=g), torch.randn(250, 3, generator=g) * 1.5 + 0.5
    p, r = precision_recall(real, fake, k=3, chunk=64)  # chunked distances: the same as all at once
    bp, br = _brute_precision_recall(real.double().numpy(), fake.double().numpy(), 3)
    assert (p, r) == (pytest.approx(bp, abs=1e-12), pytest.approx(br, abs=1e-12)) and 0 < p < 1 and 0 < r < 1
    # truth: generated points uniform on [0, 2] x [0, 1], real ones on [0, 1]^2: half the generated points lie on
    # the real support (precision 1/2), and the generated set covers all the real one (recall 1)
    u = torch.rand(3000, 2, generator=g, dtype=torch.float64)
    v = torch.rand(3000, 2, generator=g, dtype=torch.float64) * torch.tensor([2.0, 1.0], dtype=torch.float64)
    p, r = precision_recall(u, v)
    assert p == pytest.approx(0.5, abs=0.03) and r > 0.97
    with pytest.raises(ValueError, match="k < the size"):
        precision_recall(x[:3], x[:3], k=3)


def test_score_collects_the_metrics_and_evaluate_tells_the_exact_model_from_a_wrong_one(tmp_path):
    mix, process = analytic.ring2d(), processes.make("vp")
    g = torch.Generator().manual_seed(6)
    reference = mix.sample(500, g).float()
    res = evaluate(mix.denoiser(process), process, (2,), reference, num=500, sampler="heun", steps=16,
                   cache_dir=tmp_path)
    floor = frechet_distance(mix.sample(500, g), reference)  # exact sample vs exact sample
    assert res["fid"] < 5 * floor + 1e-3 and res["precision"] > 0.9 and res["recall"] > 0.9
    wrong = analytic.GaussianMixture(mix.weights, mix.means + 1.0, mix.covs)
    bad = evaluate(wrong.denoiser(process), process, (2,), reference, num=500, sampler="heun", steps=16,
                   cache_dir=tmp_path)
    assert bad["fid"] > 100 * res["fid"] and bad["fid"] > 1.0 and bad["precision"] < res["precision"]
    x = wrong.sample(500, g).float()
    s = score(x, reference, cache_dir=tmp_path)
    assert s["fid"] == frechet_distance(reference, x) and s["kid"] == kid(reference, x)[0]
    assert s["kid_std"] > 0  # sets under 2000 points: subsets of half the smaller set, so that they differ
    assert (s["precision"], s["recall"]) == precision_recall(reference, x)


# -- features and the cache ---------------------------------------------------------------------------------


class _Net(nn.Module):
    def __init__(self, features: bool = True):
        super().__init__()
        self.lin = nn.Linear(2, 3)
        if not features:
            self.features = None

    def forward(self, x):
        return self.lin(x) * 10.0

    def features(self, x):
        return torch.tanh(self.lin(x))


def test_module_features_and_the_reference_cache(tmp_path):
    torch.manual_seed(0)
    net = _Net()
    x = torch.randn(50, 2)
    f = module_features(net)
    assert torch.equal(f(x), torch.tanh(net.lin(x)).detach())  # a .features method is preferred
    plain = nn.Sequential(nn.Linear(2, 3))
    assert torch.allclose(module_features(plain)(x), plain(x).detach())

    calls = []
    counting = module_features(net)
    inner = counting.fn
    counting.fn = lambda b: calls.append(len(b)) or inner(b)
    first = reference_features(x, counting, tmp_path)
    assert calls and len(list(tmp_path.iterdir())) == 1
    calls.clear()
    assert torch.equal(reference_features(x, counting, tmp_path), first) and not calls  # read from the cache
    reference_features(x + 1, counting, tmp_path)  # other data: another entry
    with torch.no_grad():
        net.lin.bias += 1.0
    reference_features(x, module_features(net), tmp_path)  # other weights: another entry
    assert len(list(tmp_path.iterdir())) == 3


def test_classifier_features_use_the_guidance_loader(monkeypatch):
    import scorediff.eval.features as F

    stand_in = _Net()
    monkeypatch.setattr(F, "load_classifier", lambda path, device: stand_in if path == "clf.safetensors" else None)
    f = make_features("classifier:clf.safetensors")
    x = torch.randn(7, 2)
    assert f.name == "classifier" and torch.equal(f(x), torch.tanh(stand_in.lin(x)).detach())
    with pytest.raises(ValueError, match="features 'vgg' unknown"):
        make_features("vgg")


# -- the FID Inception network ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A randomly initialised FID Inception-v3 (non-trivial batch-norm statistics) saved as the pytorch-fid file is:
    a plain state dict without num_batches_tracked."""
    torch.manual_seed(0)
    net = FIDInceptionV3()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("inception") / "pt_inception-test.pth"
    torch.save({k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    return net.eval(), path


def test_inception_state_dict_has_pytorch_fids_layout(inception_file):
    net, _ = inception_file
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    # torchvision's Inception-v3 key names, which pytorch-fid's weights file uses (with a 1008-way fc)
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert shapes["Conv2d_1a_3x3.bn.running_var"] == (32,)
    assert shapes["Mixed_5b.branch_pool.conv.weight"] == (32, 192, 1, 1)
    assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
    assert shapes["Mixed_7a.branch7x7x3_4.conv.weight"] == (192, 192, 3, 3)
    assert shapes["Mixed_7c.branch3x3dbl_3b.conv.weight"] == (384, 384, 3, 1)
    assert shapes["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
    assert shapes["fc.weight"] == (1008, 2048)
    assert not any("AuxLogits" in k for k in shapes)
    assert all(not isinstance(m, nn.Conv2d) or m.bias is None for m in net.modules())


def test_inception_loads_back_and_gives_the_same_features(inception_file, tmp_path):
    net, path = inception_file
    loaded = load_inception(path)
    g = torch.Generator().manual_seed(7)
    gray = torch.rand(2, 1, 12, 12, generator=g) * 2 - 1  # any size and one channel: resized and replicated
    with torch.no_grad():
        want = net.features(gray.expand(-1, 3, -1, -1))
    f = make_features(f"inception:{path}")
    got = f(gray)
    assert got.shape == (2, 2048) and torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    assert f.digest == module_features(loaded).digest
    # the same tensors as safetensors
    from safetensors.torch import save_file

    st = tmp_path / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in torch.load(path, weights_only=True).items()}, str(st))
    assert module_features(load_inception(st)).digest == f.digest


def test_inception_errors_name_the_file(inception_file, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth.*not found; expected pytorch-fid's"):
        load_inception(tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pth.*could not be read as a state dict"):
        load_inception(junk)
    other = tmp_path / "other.pth"
    torch.save(nn.Linear(3, 4).state_dict(), other)
    with pytest.raises(ValueError, match="other.pth.*do not fit the FID Inception-v3 layout"):
        load_inception(other)
    pickled = tmp_path / "pickled.pth"
    torch.save({"net": nn.Linear(3, 4)}, pickled)  # a whole module: never unpickled
    with pytest.raises(ValueError, match="pickled.pth.*could not be read"):
        load_inception(pickled)
    _, good = inception_file
    state = torch.load(good, weights_only=True)
    state["fc.weight"] = torch.zeros(10, 2048)
    wrong = tmp_path / "wrong_shape.pth"
    torch.save(state, wrong)
    with pytest.raises(ValueError, match=r"wrong_shape.pth.*fc.weight has shape \(10, 2048\)"):
        load_inception(wrong)


# -- the data split --------------------------------------------------------------------------------------------


def test_split_is_deterministic_disjoint_and_complete(tmp_path):
    full = data.make("8gaussians", n=200)
    train, test = (data.make("8gaussians", n=200, split=s) for s in ("train", "test"))
    assert len(test) == 40 and len(train) == 160
    both = torch.cat([train.x, test.x])
    assert torch.equal(both[both[:, 0].argsort()], full.x[full.x[:, 0].argsort()])  # disjoint and complete
    assert torch.equal(data.make("8gaussians", n=200, split="test").x, test.x)  # deterministic
    other = data.make("8gaussians", n=200, split="test", split_seed=1, test_fraction=0.1)
    assert len(other) == 20 and not torch.equal(other.x, test.x[:20])
    with pytest.raises(ValueError, match="split 'val' unknown"):
        data.make("8gaussians", n=200, split="val")
    with pytest.raises(ValueError, match="test_fraction must be in"):
        data.make("8gaussians", n=200, split="test", test_fraction=1.5)
    from PIL import Image

    for i in range(5):
        Image.fromarray(np.full((4, 4, 3), 50 * i, np.uint8)).save(tmp_path / f"{i}.png")
    test_imgs = data.make("folder", path=str(tmp_path), split="test", test_fraction=0.4)
    train_imgs = data.make("folder", path=str(tmp_path), split="train", test_fraction=0.4)
    assert len(test_imgs) == 2 and len(train_imgs) == 3
    assert not {f.name for f in test_imgs.files} & {f.name for f in train_imgs.files}
    assert test_imgs[1][0].shape == (3, 4, 4)


# -- the command and the training hook --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def split_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "toy"
    assert main(["train", "toy2d", "--out", str(out), "--set", "optim.steps=4", "--set", "log.progress=false",
                 "--set", "sample.num=16", "--set", "sample.steps=4", "--set", "data.options.n=500",
                 "--set", "data.options.split=train", "--set", "eval.every=2", "--set", "eval.num=64",
                 "--set", f"eval.cache={out.parent / 'cache'}"]) == 0
    return out


def test_training_evaluates_at_checkpoints(split_run):
    records = [json.loads(line) for line in (split_run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval/fid" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert all({"eval/kid", "eval/kid_std", "eval/precision", "eval/recall", "eval/sliced_w2"} <= r.keys()
               for r in evals)


def test_cli_eval_writes_json_outside_the_run(split_run, tmp_path, capsys, monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in split_run.rglob("*")}
    out = tmp_path / "res.json"
    assert main(["eval", str(split_run), "--num", "64", "--steps", "4", "--out", str(out),
                 "--cache", str(tmp_path / "cache")]) == 0
    printed = capsys.readouterr().out
    assert "FID" in printed and "precision" in printed
    res = json.loads(out.read_text())
    assert res["num"] == 64 and res["num_ref"] == 100 and res["reference"]["options"]["split"] == "test"
    assert {"fid", "kid", "kid_std", "precision", "recall", "sliced_w2"} <= res.keys()
    # the numbers are the metrics of the samples: the same seed draws them again
    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(split_run), "--num", "64", "--steps", "4", "--cache", str(tmp_path / "cache")]) == 0
    again = json.loads((tmp_path / "outputs" / split_run.name / "eval.json").read_text())
    assert again["fid"] == res["fid"]
    assert {p: p.stat().st_mtime_ns for p in split_run.rglob("*")} == before  # the run is never written
    capsys.readouterr()
    assert main(["eval", str(split_run), "--out", str(split_run / "e.json")]) == 2
    assert "lies inside the run folder" in capsys.readouterr().err
    assert main(["eval", str(split_run), "--num", "8", "--features", f"inception:{tmp_path / 'nope.pth'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope.pth" in err and "not found" in err


def test_bench_compares_a_split_run_with_its_test_split(split_run):
    from scorediff.eval import bench
    from scorediff.training import load_run

    held = bench.held_out(load_run(split_run))
    assert torch.equal(held, data.make("8gaussians", n=500, split="test").x)
