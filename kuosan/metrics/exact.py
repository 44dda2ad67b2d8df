"""Metrics where the data density is known exactly (a :class:`kuosan.exact.GaussianMixture`), and sample-based
distances with closed forms for Gaussians: mean NLL under the true density, W2 (exact optimal transport by POT),
MMD (Gaussian kernel, unbiased), energy distance, and mode weights against the true weights.

All work on vector samples (n, D) in float64 on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .common import as_features, check_same_dim

if TYPE_CHECKING:
    from ..exact import GaussianMixture


def _samples(x: Any, mixture: "GaussianMixture") -> Tensor:
    x = as_features(x.reshape(len(x), -1) if hasattr(x, "reshape") else x, "samples")
    if x.shape[1] != mixture.dim:
        raise ValueError(f"samples have dimension {x.shape[1]} but the mixture has {mixture.dim}")
    return x


def log_density(x: Any, mixture: "GaussianMixture") -> Tensor:
    """log p(x) (n,) under the mixture: its noisy marginal log_prob_t at α = 1, σ = 0."""
    x = _samples(x, mixture)
    ones = torch.ones(len(x), dtype=torch.float64)
    return mixture.log_prob_t(x, ones, torch.zeros_like(ones))


def mean_nll(x: Any, mixture: "GaussianMixture") -> tuple[float, float]:
    """Mean negative log-density of samples under the true density (nats per sample) and its standard error.

    Its expectation under the data itself is the differential entropy H(p); a model's samples score lower when
    they crowd into the modes (lower is not always better: compare with the real-vs-real baseline)."""
    nll = -log_density(x, mixture)
    if len(nll) < 2:
        raise ValueError("a standard error needs at least 2 samples")
    return float(nll.mean()), float(nll.std() / math.sqrt(len(nll)))


def w2(x: Any, y: Any, *, max_iter: int = 10_000_000) -> float:
    """2-Wasserstein distance between two empirical distributions (uniform weights), by exact OT (POT's emd2).

    The empirical W2 is biased upward at finite n (the plug-in converges at rate n^(-1/D) in D dimensions);
    compare it with the real-vs-real baseline at the same n."""
    try:
        import ot
    except ImportError:
        raise ImportError("W2 needs the POT optimal-transport library: pip install 'kuosan[eval]'") from None
    x, y = as_features(x, "samples"), as_features(y, "reference samples")
    check_same_dim(x, y)
    cost = torch.cdist(x, y).square().numpy()  # (n, m) squared Euclidean
    a = torch.full((len(x),), 1.0 / len(x), dtype=torch.float64).numpy()
    b = torch.full((len(y),), 1.0 / len(y), dtype=torch.float64).numpy()
    w2sq, log = ot.emd2(a, b, cost, numItermax=max_iter, log=True)
    if log.get("warning"):
        raise RuntimeError(f"exact optimal transport did not converge: {log['warning']}")
    return math.sqrt(max(float(w2sq), 0.0))


def gaussian_kernel(a: Tensor, b: Tensor, bandwidth: float) -> Tensor:
    """k(a, b) = exp(-‖a - b‖² / (2h²)) for rows of a (n, d), b (m, d): (n, m)."""
    return torch.exp(-torch.cdist(a, b).square() / (2 * bandwidth**2))


def median_bandwidth(x: Tensor, y: Tensor, max_points: int = 2000) -> float:
    """The median heuristic: the median pairwise distance in the pooled sample (on at most max_points)."""
    z = torch.cat([x[:max_points // 2], y[:max_points // 2]])
    d = torch.pdist(z)
    return float(d.median()) if len(d) else 1.0


def mmd(x: Any, y: Any, *, bandwidth: float | None = None) -> tuple[float, float]:
    """Unbiased MMD² (Gretton et al. 2012, Eq. (3)) with a Gaussian kernel of bandwidth h; returns (MMD², h).

    h defaults to the median pairwise distance of the pooled samples. E[MMD²_u] = MMD² exactly, so it can be
    slightly negative when the distributions are equal."""
    x, y = as_features(x, "samples"), as_features(y, "reference samples")
    check_same_dim(x, y)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("the unbiased MMD needs at least 2 samples in each set")
    h = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
    if not h > 0:
        raise ValueError(f"the MMD bandwidth must be > 0, got {h}")
    m, n = len(x), len(y)
    kxx, kyy = gaussian_kernel(x, x, h), gaussian_kernel(y, y, h)
    off = lambda k, s: (k.sum() - k.diagonal().sum()) / (s * (s - 1))  # noqa: E731 - mean over i ≠ j
    value = off(kxx, m) + off(kyy, n) - 2 * gaussian_kernel(x, y, h).mean()
    return float(value), h


def energy_distance(x: Any, y: Any) -> float:
    """Energy distance 2E‖X - Y‖ - E‖X - X'‖ - E‖Y - Y'‖ (Székely & Rizzo 2013), unbiased
    (U-statistic) form."""
    x, y = as_features(x, "samples"), as_features(y, "reference samples")
    check_same_dim(x, y)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("the energy distance needs at least 2 samples in each set")
    exx = torch.pdist(x).mean()  # pdist: each unordered pair i < j once, so this is the mean over i ≠ j
    eyy = torch.pdist(y).mean()
    return float(2 * torch.cdist(x, y).mean() - exx - eyy)


@dataclass(frozen=True)
class ModeWeights:
    """Share of samples per component (each sample to its most probable component) against the true weights."""

    estimated: list[float]
    true: list[float]
    total_variation: float  # ½ Σ_k |ŵ_k - π_k|
    missing_modes: int  # components with true weight > 0 that got no sample at all

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def component_log_probs(x: Any, mixture: "GaussianMixture") -> Tensor:
    """log π_k + log N(x; μ_k, Σ_k) (n, K): unnormalised log posterior of each component."""
    x = _samples(x, mixture)
    dist = torch.distributions.MultivariateNormal(mixture.means, covariance_matrix=mixture.covs)  # batch (K,)
    return dist.log_prob(x[:, None, :]) + mixture.weights.log()  # (n, K)


def mode_weights(x: Any, mixture: "GaussianMixture") -> ModeWeights:
    """Assign every sample to argmax_k p(k | x) and compare the resulting shares with the mixture weights π."""
    k = component_log_probs(x, mixture).argmax(1)
    counts = torch.bincount(k, minlength=len(mixture.weights)).double()
    est = counts / counts.sum()
    true = mixture.weights
    return ModeWeights(estimated=est.tolist(), true=true.tolist(),
                       total_variation=float(0.5 * (est - true).abs().sum()),
                       missing_modes=int(((counts == 0) & (true > 0)).sum()))


def known_mixture(data_name: str) -> "GaussianMixture | None":
    """The exact density of a built-in data set when kuosan knows it in closed form, else None.

    ``ring`` is kuosan.exact.ring() (8 isotropic Gaussians, std 0.05, on a circle of radius 2, equal weights) and
    ``curves`` the zero-mean Gaussian with kuosan.data.curves_covariance; moons, swissroll and the image sets have
    no closed-form density."""
    from .. import exact
    from ..data import curves_covariance

    if data_name == "ring":
        return exact.ring()
    if data_name == "curves":
        cov = torch.as_tensor(curves_covariance(), dtype=torch.float64)
        return exact.gaussian(torch.zeros(len(cov), dtype=torch.float64), cov)
    return None
