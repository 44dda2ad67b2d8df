"""Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, "FID"), with a bootstrap
standard error.

FD = ‖μ₁ - μ₂‖² + tr Σ₁ + tr Σ₂ - 2 tr (Σ₁^½ Σ₂ Σ₁^½)^½  (Dowson & Landau 1982), computed
in float64 in the symmetric eigen form: S = Σ₁^½ by ``eigh`` (negative round-off eigenvalues clamped to 0), then the
eigenvalues of the symmetric S Σ₂ S, whose square roots sum to tr (Σ₁Σ₂)^½. No complex ``sqrtm`` and no
imaginary parts to discard; singular covariances are handled exactly.

**Small-n bias.** The plug-in estimate is biased *upward*: with the unbiased sample covariances, the mean term
alone gains E‖μ̂₁ - μ̂₂‖² - ‖μ₁ - μ₂‖² = tr Σ₁/n₁ + tr Σ₂/n₂, and the
trace-square-root term is biased in the same direction by O(d/n) (Chong & Forsyth 2020, "Effectively unbiased FID"). Two
samples of one distribution therefore give FD ≈ c·d/n > 0, not 0: compare FDs only at equal n and equal feature
dimension d. With n ≤ d the sample covariance is singular and the estimate is dominated by this bias;
:func:`check_sample_count` refuses it.
The bootstrap standard error measures the spread of the estimate, not its bias.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from .common import as_features, check_same_dim

MIN_SAMPLES_PER_DIM = 5  # below n = 5·d the O(d/n) bias is a sizeable share of a typical FD: warn


@dataclass(frozen=True)
class FDResult:
    """An FD estimate, its bootstrap standard error (None with n_boot = 0) and the set sizes."""

    value: float
    stderr: float | None
    n_real: int
    n_fake: int
    dim: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gaussian_stats(x: Any) -> tuple[Tensor, Tensor]:
    """Mean (d,) and unbiased covariance (d, d) of features (n, d), float64."""
    x = as_features(x, "features")
    if len(x) < 2:
        raise ValueError(f"a covariance needs at least 2 samples, got {len(x)}")
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (len(x) - 1)


def _sqrt_psd(c: Tensor) -> Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix (d, d) by eigh."""
    w, U = torch.linalg.eigh((c + c.T) / 2)
    return (U * w.clamp_min(0).sqrt()) @ U.T


def frechet_distance_gaussians(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """Fréchet (2-Wasserstein²) distance between N(μ₁, Σ₁) and N(μ₂, Σ₂) (Dowson & Landau 1982)."""
    mu1, mu2, cov1, cov2 = (torch.as_tensor(a, dtype=torch.float64) for a in (mu1, mu2, cov1, cov2))
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (*mu1.shape, *mu1.shape):
        raise ValueError(f"mismatched Gaussian statistics: means {tuple(mu1.shape)}, {tuple(mu2.shape)}; "
                         f"covariances {tuple(cov1.shape)}, {tuple(cov2.shape)}")
    s = _sqrt_psd(cov1)
    m = s @ cov2 @ s  # symmetric PSD; its eigenvalues are those of Σ₁Σ₂
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    fd = (mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * tr_sqrt
    return max(float(fd), 0.0)  # round-off can leave -1e-12 for identical statistics


def check_sample_count(n: int, dim: int, what: str = "samples") -> None:
    """Refuse n ≤ d (singular covariance: FD is then mostly bias); warn below n = 5·d."""
    if n <= dim:
        raise ValueError(f"FD needs more {what} than feature dimensions: got {n} for {dim}-dimensional features "
                         f"(use at least {MIN_SAMPLES_PER_DIM * dim})")
    if n < MIN_SAMPLES_PER_DIM * dim:
        warnings.warn(f"only {n} {what} for {dim}-dimensional features: the FD estimate is biased upward by "
                      f"O(d/n); use at least {MIN_SAMPLES_PER_DIM * dim}", stacklevel=2)


def frechet_distance(real: Any, fake: Any, *, n_boot: int = 100, seed: int = 0) -> FDResult:
    """FD between Gaussians fitted to features ``real`` (n₁, d) and ``fake`` (n₂, d), with a bootstrap SE.

    The standard error is the standard deviation of the FD over ``n_boot`` resamples (with replacement, both sets
    independently, seeded by ``seed``). It does not include the small-n bias described in the module docstring.
    """
    x, y = as_features(real, "real features"), as_features(fake, "fake features")
    check_same_dim(x, y)
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    value = frechet_distance_gaussians(*gaussian_stats(x), *gaussian_stats(y))
    stderr = None
    if n_boot > 0:
        g = torch.Generator().manual_seed(seed)
        boots = []
        for _ in range(n_boot):
            i = torch.randint(len(x), (len(x),), generator=g)
            j = torch.randint(len(y), (len(y),), generator=g)
            boots.append(frechet_distance_gaussians(*gaussian_stats(x[i]), *gaussian_stats(y[j])))
        stderr = float(torch.tensor(boots, dtype=torch.float64).std()) if n_boot > 1 else math.nan
    return FDResult(value, stderr, len(x), len(y), x.shape[1])
