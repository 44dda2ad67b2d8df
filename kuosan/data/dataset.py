"""The in-memory data set every loader returns, its checks and subsets, and the train/val split."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch

DataKind = Literal["image", "vector"]


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
