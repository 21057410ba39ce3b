"""Datasets: toy sets, scikit-learn digits, image folders, .npy/.npz arrays, MNIST IDX files."""

from __future__ import annotations

import gzip
import math
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from scorediff import data

TOYS = ["8gaussians", "swissroll", "moons", "checkerboard", "rings"]


# ---------------------------------------------------------------------------------------------------
# toy sets
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TOYS)
def test_toy_shape_determinism_scale(name):
    a, b, c = data.make(name, n=2000, seed=1), data.make(name, n=2000, seed=1), data.make(name, n=2000, seed=2)
    assert len(a) == 2000 and a.info.shape == (2,) and a.info.kind == "points"
    assert a.x.shape == (2000, 2) and a.x.dtype == torch.float32
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    x, y = a[5]
    assert torch.equal(x, a.x[5]) and isinstance(y, int)
    std = a.x.std(dim=0)
    assert ((std > 0.7) & (std < 1.3)).all(), std
    assert a.x.mean(dim=0).abs().max() < 0.4
    if a.info.num_classes:
        assert set(a.y.tolist()) == set(range(a.info.num_classes))
    else:
        assert (a.y == -1).all()


def test_toy_geometry():
    # each set lies where its definition says, with its labels matching the geometry
    g = data.make("8gaussians", n=4000)
    angle = g.y.double() * 2 * math.pi / 8
    centres = math.sqrt(2) * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    assert (g.x.double() - centres).norm(dim=1).max() < 0.6  # noise 0.1: > 6 sigma otherwise

    r = data.make("rings", n=4000)
    assert ((r.x.double().norm(dim=1) - 0.5 * (r.y.double() + 1)).abs() < 0.25).all()

    cb = data.make("checkerboard", n=4000).x
    assert (cb.abs() <= 2).all()
    parity = (torch.floor(cb[:, 0]) + torch.floor(cb[:, 1])).remainder(2)
    assert (parity == parity[0]).all()  # only one colour of squares is occupied
    # and all 8 squares of that colour are
    cells = set(zip(torch.floor(cb[:, 0]).tolist(), torch.floor(cb[:, 1]).tolist()))
    assert len(cells) == 8

    m = data.make("moons", n=4000, noise=0.0)
    # undo the documented centring and scaling: the two unit half circles of make_moons
    raw = m.x.double() * torch.tensor([0.87, 0.5], dtype=torch.float64) + torch.tensor([0.5, 0.25], dtype=torch.float64)
    up, lo = raw[m.y == 0], raw[m.y == 1]
    assert torch.allclose(up.norm(dim=1), torch.ones(len(up), dtype=torch.float64), atol=1e-5)
    assert (up[:, 1] >= -1e-6).all()
    assert torch.allclose((lo - torch.tensor([1.0, 0.5], dtype=torch.float64)).norm(dim=1),
                          torch.ones(len(lo), dtype=torch.float64), atol=1e-5)


def test_toy_bad_options():
    with pytest.raises(ValueError, match="n must be >= 1"):
        data.make("moons", n=0)
    with pytest.raises(ValueError, match=r"unknown option\(s\) size"):
        data.make("moons", size=3)
    with pytest.raises(ValueError, match=r"dataset 'mnsit' unknown; one of: .*mnist"):
        data.make("mnsit")


# ---------------------------------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------------------------------


def test_digits():
    from sklearn.datasets import load_digits

    d = data.make("digits")
    raw = load_digits()
    assert len(d) == 1797 and d.info.shape == (1, 8, 8) and d.info.kind == "images" and d.info.num_classes == 10
    assert d.x.min() == -1 and d.x.max() == 1
    # 0..16 -> [-1, 1] linearly
    assert torch.allclose(d.x[:, 0].double(), torch.as_tensor(raw.images) / 8 - 1, atol=1e-6)
    assert torch.equal(d.y, torch.as_tensor(raw.target).long())
    x, y = d[10]
    assert x.shape == (1, 8, 8) and y == int(raw.target[10])


# ---------------------------------------------------------------------------------------------------
# image folders
# ---------------------------------------------------------------------------------------------------


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _pattern(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_folder_labels_values_and_jpeg(tmp_path):
    imgs = {"cats/a.png": _pattern(6, 6, 0), "cats/b.png": _pattern(6, 6, 1), "dogs/deep/c.png": _pattern(6, 6, 2)}
    for name, a in imgs.items():
        _png(tmp_path / name, a)
    Image.fromarray(np.full((6, 6, 3), 200, np.uint8)).save(tmp_path / "dogs" / "d.jpg", quality=95)
    ds = data.make("folder", path=tmp_path)
    assert len(ds) == 4
    assert ds.info.shape == (3, 6, 6) and ds.info.num_classes == 2 and ds.info.class_names == ("cats", "dogs")
    assert [ds[i][1] for i in range(4)] == [0, 0, 1, 1]
    # PNG is lossless: exact values through to_unit
    for i, name in enumerate(["cats/a.png", "cats/b.png"]):
        assert torch.equal(ds[i][0], data.to_unit(torch.from_numpy(imgs[name]).permute(2, 0, 1)))
    # a flat JPEG decodes close to its value
    jpg = ds[3][0] if ds.files[3].suffix == ".jpg" else ds[2][0]
    assert (data.from_unit(jpg).int() - 200).abs().max() <= 2
    gray = data.make("folder", path=tmp_path, mode="gray", preload=True)
    assert gray.info.shape == (1, 6, 6) and gray[0][0].shape == (1, 6, 6)


def test_folder_resize_crop_and_unlabeled(tmp_path):
    # 4x12 image: left third 0, middle 128, right third 255 -> a 4x4 centre crop is the middle
    a = np.zeros((4, 12), np.uint8)
    a[:, 4:8], a[:, 8:] = 128, 255
    _png(tmp_path / "wide.png", a)
    _png(tmp_path / "sub" / "other.png", np.full((8, 8), 7, np.uint8))  # not every image in a sub-folder
    ds = data.make("folder", path=tmp_path, size=4, mode="gray")
    assert ds.info.num_classes == 0 and [ds[i][1] for i in range(2)] == [-1, -1]
    i = [p.name for p in ds.files].index("wide.png")
    assert torch.equal(data.from_unit(ds[i][0]), torch.full((1, 4, 4), 128, dtype=torch.uint8))
    squashed = data.make("folder", path=tmp_path, size=(4, 6), mode="gray", center_crop=False)
    assert squashed[i][0].shape == (1, 4, 6)
    row = data.from_unit(squashed[i][0])[0, 0].int()
    assert row[0] < 30 and row[-1] > 225  # the whole width survives


def test_folder_flip_deterministic(tmp_path):
    a = np.zeros((4, 4, 3), np.uint8)
    a[:, :2] = 255
    for k in range(16):
        _png(tmp_path / f"{k:02d}.png", a)
    ds = data.make("folder", path=tmp_path, flip=True, seed=5)
    plain = data.make("folder", path=tmp_path)[0][0]
    flips = [not torch.equal(ds[i][0], plain) for i in range(16)]
    assert flips == [not torch.equal(ds[i][0], plain) for i in range(16)]  # same index, same flip
    assert 0 < sum(flips) < 16
    for i in range(16):
        assert torch.equal(ds[i][0], plain.flip(-1) if flips[i] else plain)
    ds.set_epoch(1)
    assert [not torch.equal(ds[i][0], plain) for i in range(16)] != flips


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        data.make("folder", path=tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="missing"):
        data.make("folder", path=tmp_path / "missing")
    good = tmp_path / "data" / "cats" / "001.png"
    _png(good, _pattern(4, 4, 0))
    bad = tmp_path / "data" / "cats" / "004.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    ds = data.make("folder", path=tmp_path / "data")
    with pytest.raises(ValueError, match=r"image .*cats/004\.png could not be decoded"):
        ds[1]
    with pytest.raises(ValueError, match=r"004\.png could not be decoded"):
        data.make("folder", path=tmp_path / "data", preload=True)
    with pytest.raises(ValueError, match="mode 'cmyk' unknown"):
        data.make("folder", path=tmp_path / "data", mode="cmyk")


# ---------------------------------------------------------------------------------------------------
# npy / npz
# ---------------------------------------------------------------------------------------------------


def test_npy_layouts(tmp_path):
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(10, 3))
    np.save(tmp_path / "pts.npy", pts)
    d = data.make("npy", path=tmp_path / "pts.npy")
    assert d.info.kind == "points" and d.info.shape == (3,) and torch.allclose(d.x.double(), torch.as_tensor(pts), atol=1e-6)

    hw = rng.integers(0, 256, size=(5, 6, 4), dtype=np.uint8)
    np.save(tmp_path / "hw.npy", hw)
    d = data.make("npy", path=tmp_path / "hw.npy")
    assert d.info.shape == (1, 6, 4) and torch.equal(data.from_unit(d.x[:, 0]), torch.as_tensor(hw))

    hwc = rng.integers(0, 256, size=(5, 6, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "hwc.npy", hwc)
    d = data.make("npy", path=tmp_path / "hwc.npy")
    assert d.info.shape == (3, 6, 4)
    assert torch.equal(data.from_unit(d.x), torch.as_tensor(hwc).permute(0, 3, 1, 2))

    chw = rng.uniform(0, 1, size=(5, 3, 6, 5)).astype(np.float32)
    np.savez(tmp_path / "chw.npz", x=chw, y=np.arange(5) % 2)
    d = data.make("npy", path=tmp_path / "chw.npz", value_range=(0, 1))
    assert d.info.shape == (3, 6, 5) and d.info.num_classes == 2 and d.y.tolist() == [0, 1, 0, 1, 0]
    assert torch.allclose(d.x, torch.as_tensor(chw) * 2 - 1, atol=1e-6)
    d = data.make("npy", path=tmp_path / "chw.npz")  # floats are taken as they are
    assert torch.equal(d.x, torch.as_tensor(chw))

    np.save(tmp_path / "labels.npy", np.array([3, 1, 0, 2, 1]))
    d = data.make("npy", path=tmp_path / "hw.npy", labels=tmp_path / "labels.npy")
    assert d.info.num_classes == 4 and d[0][1] == 3

    amb = np.zeros((2, 3, 5, 3), np.uint8)
    np.save(tmp_path / "amb.npy", amb)
    with pytest.raises(ValueError, match="ambiguous; pass layout"):
        data.make("npy", path=tmp_path / "amb.npy")
    assert data.make("npy", path=tmp_path / "amb.npy", layout="nhwc").info.shape == (3, 3, 5)


def test_npy_errors(tmp_path):
    np.save(tmp_path / "r5.npy", np.zeros((2, 1, 2, 2, 2)))
    with pytest.raises(ValueError, match=r"r5\.npy has shape \(2, 1, 2, 2, 2\); expected \(N, D\)"):
        data.make("npy", path=tmp_path / "r5.npy")
    np.save(tmp_path / "r1.npy", np.zeros(4))
    with pytest.raises(ValueError, match="expected"):
        data.make("npy", path=tmp_path / "r1.npy")
    with pytest.raises(FileNotFoundError, match="nothere.npy"):
        data.make("npy", path=tmp_path / "nothere.npy")
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 2)), b=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="pass key="):
        data.make("npy", path=tmp_path / "two.npz")
    np.save(tmp_path / "pts.npy", np.zeros((3, 2)))
    np.save(tmp_path / "badlab.npy", np.zeros(4, np.int64))
    with pytest.raises(ValueError, match=r"expected \(3,\) integers"):
        data.make("npy", path=tmp_path / "pts.npy", labels=tmp_path / "badlab.npy")


# ---------------------------------------------------------------------------------------------------
# MNIST IDX
# ---------------------------------------------------------------------------------------------------


def _write_idx(path, array, gz=False):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx(tmp_path, gz):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labs = np.array([0, 1, 2, 3, 4, 5, 9], np.uint8)
    sfx = ".gz" if gz else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{sfx}", imgs, gz)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{sfx}", labs, gz)
    d = data.make("mnist", images=tmp_path / f"train-images-idx3-ubyte{sfx}",
                  labels=tmp_path / f"train-labels-idx1-ubyte{sfx}")
    assert len(d) == 7 and d.info.shape == (1, 28, 28) and d.info.num_classes == 10
    assert torch.equal(data.from_unit(d.x[:, 0]), torch.as_tensor(imgs))
    assert d.y.tolist() == labs.tolist()
    d2 = data.make("mnist", path=tmp_path, split="train")
    assert torch.equal(d2.x, d.x)
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        data.make("mnist", path=tmp_path, split="test")


def test_mnist_errors(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x03" + b"\x00" * 12)
    with pytest.raises(ValueError, match="not an IDX file"):
        data.make("mnist", images=tmp_path / "bad")
    _write_idx(tmp_path / "img", np.zeros((3, 4, 4), np.uint8))
    _write_idx(tmp_path / "lab", np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match=r"expected \(3,\)"):
        data.make("mnist", images=tmp_path / "img", labels=tmp_path / "lab")
    raw = (tmp_path / "img").read_bytes()
    (tmp_path / "short").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="header says shape"):
        data.make("mnist", images=tmp_path / "short")
    with pytest.raises(FileNotFoundError, match="nope"):
        data.make("mnist", images=tmp_path / "nope")


# ---------------------------------------------------------------------------------------------------
# uint8 <-> [-1, 1]
# ---------------------------------------------------------------------------------------------------


def test_unit_round_trip():
    u = torch.arange(256, dtype=torch.uint8)
    x = data.to_unit(u)
    assert x[0] == -1 and x[-1] == 1 and x.dtype == torch.float32
    assert torch.equal(data.from_unit(x), u)
    assert torch.equal(data.from_unit(torch.tensor([-3.0, 5.0])), torch.tensor([0, 255], dtype=torch.uint8))
    assert torch.equal(data.to_unit(np.array([0, 255], np.uint8)), torch.tensor([-1.0, 1.0]))
