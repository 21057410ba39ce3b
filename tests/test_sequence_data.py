"""Series and video data: file layouts, windows, normalisation round trip, built-in families, bad input in one line;
and the end-to-end path: train a tiny series run and a tiny video run, then ``forecast`` / ``inpaint`` / ``report``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from scorediff import data
from scorediff.analytic import kernel_matrix
from scorediff.cli import main
from scorediff.data.series import denormalize, gp_oracle, normalize

FAST = ["--set", "optim.steps=6", "--set", "log.progress=false", "--set", "log.tensorboard=false",
        "--set", "sample.num=4", "--set", "sample.steps=2", "--set", "optim.batch_size=8"]


# -- series ----------------------------------------------------------------------------------------------------


def test_series_file_layouts_windows_and_normalisation(tmp_path):
    g = np.random.default_rng(0)
    x = g.normal(3.0, 2.0, size=(10, 2, 12))
    np.save(tmp_path / "ncl.npy", x)
    ds = data.make("series", path=str(tmp_path / "ncl.npy"))
    assert ds.x.shape == (10, 2, 12) and ds.info.kind == "series"
    # per channel: zero mean, unit std; the stored statistics undo it exactly
    torch.testing.assert_close(ds.x.double().mean((0, 2)), torch.zeros(2, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(ds.x.double().std((0, 2), unbiased=False), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(denormalize(ds.x.double(), ds.info.to_dict()), torch.from_numpy(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(normalize(torch.from_numpy(x), ds.info), ds.x.double(), atol=1e-6, rtol=0)
    np.save(tmp_path / "nlc.npy", x.transpose(0, 2, 1))
    torch.testing.assert_close(data.make("series", path=str(tmp_path / "nlc.npy"), layout="nlc").x, ds.x)
    np.save(tmp_path / "nl.npy", x[:, 0])
    assert data.make("series", path=str(tmp_path / "nl.npy"), normalize=False).x.shape == (10, 1, 12)
    # one long series (L, C) cut into windows; a .csv with a header is the same
    long = g.normal(size=(50, 2))
    np.save(tmp_path / "long.npy", long)
    w = data.make("series", path=str(tmp_path / "long.npy"), window=8, stride=4, normalize=False)
    assert w.x.shape == (11, 2, 8)
    torch.testing.assert_close(w.x[3].double(), torch.from_numpy(long[12:20].T), atol=1e-6, rtol=0)
    (tmp_path / "long.csv").write_text("a,b\n" + "\n".join(f"{r[0]},{r[1]}" for r in long))
    torch.testing.assert_close(data.make("series", path=str(tmp_path / "long.csv"), window=8, stride=4,
                                         normalize=False).x, w.x)


def test_series_bad_input_is_one_line(tmp_path):
    x = np.zeros((4, 1, 8))
    x[2, 0, 5] = np.nan
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(ValueError, match=r"non-finite value \(nan\) at index \(2, 0, 5\)"):
        data.make("series", path=str(tmp_path / "nan.npy"))
    np.save(tmp_path / "r4.npy", np.zeros((2, 1, 3, 4)))
    with pytest.raises(ValueError, match=r"has shape \(2, 1, 3, 4\); expected \(N, C, L\)"):
        data.make("series", path=str(tmp_path / "r4.npy"))
    np.save(tmp_path / "short.npy", np.zeros(5))
    with pytest.raises(ValueError, match="fewer than window=8"):
        data.make("series", path=str(tmp_path / "short.npy"), window=8)
    (tmp_path / "bad.csv").write_text("1,2\n3,x\n")
    with pytest.raises(ValueError, match="line 2"):
        data.make("series", path=str(tmp_path / "bad.csv"), window=1)
    with pytest.raises(FileNotFoundError, match="series file"):
        data.make("series", path=str(tmp_path / "none.npy"))


def test_gp_series_is_drawn_from_its_oracle():
    ds = data.make("gp-series", n=4000, length=12, kernel="rbf", lengthscale=0.3, seed=1)
    assert ds.x.shape == (4000, 1, 12)
    cov = torch.cov(ds.x[:, 0].double().T)
    # the sample covariance against the kernel matrix: entries within ~4 standard errors (sqrt(2 / n))
    torch.testing.assert_close(cov, kernel_matrix(12, "rbf", 0.3), atol=0.1, rtol=0)
    assert gp_oracle(12, 1, "rbf", 0.3).event_shape == (1, 12)


def test_sinusoids_are_seeded_sums_of_damped_sines():
    a, b = data.make("sinusoids", n=20, seed=3), data.make("sinusoids", n=20, seed=3)
    assert torch.equal(a.x, b.x) and a.x.shape == (20, 1, 64)
    quiet = data.make("sinusoids", n=20, components=1, noise=0.0, seed=3).x
    assert float(quiet.abs().max()) <= 1.0  # one component: |a e^{-dt} sin| <= a <= 1


# -- video -----------------------------------------------------------------------------------------------------


def test_moving_digits_move_and_bounce_inside_the_frame():
    ds = data.make("moving-digits", n=50, frames=12, size=12, speed=1.5, seed=0)
    assert ds.x.shape == (50, 1, 12, 12, 12) and ds.info.kind == "video" and ds.y.shape == (50,)
    x = ds.x[:, 0]
    # every frame holds the same digit: the same multiset of pixel values (just moved)
    vals = x.flatten(2).sort(-1).values
    assert torch.equal(vals, vals[:, :1].expand_as(vals))
    # the digit moves: consecutive frames differ for most clips
    moved = (x[:, 1:] != x[:, :-1]).flatten(2).any(-1).float().mean()
    assert moved > 0.8


def test_video_from_clip_folders_and_arrays(tmp_path):
    g = np.random.default_rng(0)
    clips = g.integers(0, 256, size=(3, 4, 6, 8), dtype=np.uint8)
    for i, c in enumerate(clips):
        (tmp_path / "clips" / f"c{i}").mkdir(parents=True)
        for t, f in enumerate(c):
            Image.fromarray(f).save(tmp_path / "clips" / f"c{i}" / f"{t:03d}.png")
    a = data.make("video", path=str(tmp_path / "clips"))
    assert a.x.shape == (3, 1, 4, 6, 8)
    np.save(tmp_path / "v.npy", clips)
    b = data.make("video", path=str(tmp_path / "v.npy"))
    torch.testing.assert_close(a.x, b.x)
    np.save(tmp_path / "rgb.npy", g.random((2, 5, 4, 4, 3)).astype(np.float32))
    assert data.make("video", path=str(tmp_path / "rgb.npy"), frames=3).x.shape == (2, 3, 3, 4, 4)
    np.save(tmp_path / "bad.npy", np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match=r"expected \(N, T, H, W\)"):
        data.make("video", path=str(tmp_path / "bad.npy"))
    (tmp_path / "clips" / "c9").mkdir()
    Image.fromarray(clips[0, 0]).save(tmp_path / "clips" / "c9" / "000.png")
    with pytest.raises(ValueError, match="different frame counts"):
        data.make("video", path=str(tmp_path / "clips"))


# -- end to end: train, forecast, inpaint, report --------------------------------------------------------------


@pytest.fixture(scope="module")
def series_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("series") / "run"
    assert main(["train", "series-gp", "--out", str(out), *FAST, "--set", "net.preset=unet1d-tiny",
                 "--set", "data.options.n=64", "--set", "data.options.length=16"]) == 0
    return out


def test_forecast_and_inpaint_cli_on_a_series_run(series_run, tmp_path, capsys):
    x = gp_oracle(16).sample(1, torch.Generator().manual_seed(0))[0].numpy()
    np.save(tmp_path / "ctx.npy", x[:, :10])
    assert main(["forecast", str(series_run), "--context", str(tmp_path / "ctx.npy"), "--horizon", "6",
                 "--num", "5", "--steps", "4", "--out", str(tmp_path / "f.png")]) == 0
    f = np.load(tmp_path / "f.npz")
    assert f["samples"].shape == (5, 1, 6) and np.isfinite(f["samples"]).all() and (tmp_path / "f.png").exists()
    assert main(["forecast", str(series_run), "--context", str(tmp_path / "ctx.npy"), "--horizon", "6",
                 "--num", "4", "--steps", "4", "--method", "repaint", "--jumps", "2", "--resample", "2",
                 "--out", str(tmp_path)]) == 0  # an existing folder: the default file name inside it
    assert (tmp_path / "forecast_repaint.png").exists()
    assert not (series_run / "forecasts").exists()  # a reader never writes into the run
    # classifier-free guidance on the context (its law: tests/test_forecast.py); a same-seed guided run differs
    assert main(["forecast", str(series_run), "--context", str(tmp_path / "ctx.npy"), "--horizon", "6",
                 "--num", "5", "--steps", "4", "--guidance", "2", "--out", str(tmp_path / "g.png")]) == 0
    g = np.load(tmp_path / "g.npz")["samples"]
    assert g.shape == (5, 1, 6) and np.isfinite(g).all() and not np.allclose(g, f["samples"])
    holes = x.copy()
    holes[0, 3:9] = np.nan
    np.save(tmp_path / "holes.npy", holes)
    assert main(["inpaint", str(series_run), "--image", str(tmp_path / "holes.npy"), "--num", "4", "--steps", "4",
                 "--out", str(tmp_path)]) == 0
    imp = np.load(tmp_path / "inpaint_conditional.npz")
    kept = np.isfinite(holes)
    np.testing.assert_allclose(imp["samples"][:, kept], np.broadcast_to(holes[kept], (4, kept.sum())), atol=1e-5)
    capsys.readouterr()
    # bad input: one line each
    ctx = x[:, :10].copy()
    ctx[0, 2] = np.nan
    np.save(tmp_path / "nan.npy", ctx)
    for argv, msg in [
        (["--context", str(tmp_path / "nan.npy"), "--horizon", "4"], "context holds NaN"),
        (["--context", str(tmp_path / "ctx.npy"), "--horizon", "16"], "not shorter than the model's length 16"),
        (["--context", str(tmp_path / "ctx.npy"), "--horizon", "4", "--method", "x"], "conditioning method 'x'"),
        (["--context", str(tmp_path / "ctx.npy"), "--horizon", "4", "--method", "repaint", "--guidance", "2"],
         "guidance 2 needs method 'conditional'"),
    ]:
        assert main(["forecast", str(series_run), *argv]) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, err
    from scorediff.report import write_report

    page = write_report(series_run, tmp_path / "report.html").read_text()
    assert "Samples across training" in page


def test_video_run_trains_and_predicts_frames(tmp_path):
    out = tmp_path / "video"
    assert main(["train", "moving-digits", "--out", str(out), *FAST, "--set", "net.preset=unet-video-tiny",
                 "--set", "data.options.n=32", "--set", "data.options.frames=4", "--set", "data.options.size=8"]) == 0
    assert list((out / "samples").glob("step_*.png"))
    clip = data.make("moving-digits", n=1, frames=4, size=8).x[0, 0]
    np.save(tmp_path / "ctx.npy", clip[:2].numpy())
    assert main(["forecast", str(out), "--context", str(tmp_path / "ctx.npy"), "--horizon", "2", "--num", "2",
                 "--steps", "3", "--out", str(tmp_path)]) == 0
    f = np.load(tmp_path / "forecast_conditional.npz")
    assert f["samples"].shape == (2, 1, 2, 8, 8)
