"""Data sets as tensors: built-in toys and small image sets, image folders, .npz, MNIST IDX, CIFAR-10.

Every loader returns a :class:`Dataset` whose ``x`` is float32: images (N, C, H, W) scaled to [-1, 1],
vectors (N, D) as they are. Paired (coupled) data for reflow — a .npz with ``x`` and ``noise`` of one shape — also
carries ``noise`` (the ε each x was generated from), kept with x through subsets and splits. Every bad input raises
:class:`DataError` with a one-line message.

Modules: dataset.py (Dataset, checks, subsets, split), builtin.py (digits, MNIST-5k, toys), files.py (image
folders, .npz, MNIST IDX), cifar.py (CIFAR-10 batches through a safe unpickler); ``load_dataset`` here picks one.
"""

from __future__ import annotations

import re
from pathlib import Path

from .builtin import DATASETS, curves_covariance
from .cifar import _cifar
from .dataset import DataError, DataKind, Dataset, _finish, _uint8_images, split
from .files import IMAGE_EXTS, _idx, _image_folder, _npz

__all__ = ["DATASETS", "IMAGE_EXTS", "DataError", "DataKind", "Dataset", "curves_covariance", "load_dataset", "split"]


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
