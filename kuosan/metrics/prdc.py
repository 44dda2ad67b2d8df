"""Precision, recall, density and coverage (Naeem et al. 2020, "Reliable fidelity and diversity metrics for
generative models"), with k-nearest-neighbour balls as the estimate of each manifold.

With real features X (N, d), fake features Y (M, d), r_i the distance from X_i to its k-th nearest other real and
r'_j that from Y_j to its k-th nearest other fake (Kynkäänniemi et al. 2019 for precision/recall):

    precision = 1/M Σ_j 1[∃i: ‖Y_j - X_i‖ < r_i]      fakes inside the real manifold
    recall    = 1/N Σ_i 1[∃j: ‖X_i - Y_j‖ < r'_j]     reals inside the fake manifold
    density   = 1/(kM) Σ_j Σ_i 1[‖Y_j - X_i‖ < r_i]   Naeem Eq. (3); E = 1 for identical distributions
    coverage  = 1/N Σ_i 1[min_j ‖X_i - Y_j‖ < r_i]    Naeem Eq. (4); E → 1 - 2^-k for identical ones

Strict inequalities, as in the authors' reference code. Disjoint sets give 0 for all four; identical sets
(Y = X, no duplicates) give precision = recall = coverage = 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from .common import as_features, check_same_dim


@dataclass(frozen=True)
class PRDCResult:
    precision: float
    recall: float
    density: float
    coverage: float
    k: int
    n_real: int
    n_fake: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _chunks(a: Tensor, b: Tensor, size: int = 1024) -> Any:
    """Rows of a in chunks with their distances to all of b: yields (start, dist (chunk, len b))."""
    for s in range(0, len(a), size):
        yield s, torch.cdist(a[s:s + size], b)


def kth_neighbour_radii(x: Tensor, k: int) -> Tensor:
    """Distance from each row of x (n, d) to its k-th nearest other row (n,)."""
    out = torch.empty(len(x), dtype=x.dtype)
    for s, d in _chunks(x, x):
        # the k+1 smallest include the point itself at distance 0 (or a duplicate at 0: also 0 either way)
        out[s:s + len(d)] = d.topk(k + 1, dim=1, largest=False).values[:, k]
    return out


def prdc(real: Any, fake: Any, *, k: int = 5) -> PRDCResult:
    """Precision, recall, density and coverage of ``fake`` (M, d) against ``real`` (N, d), k-NN balls of size k."""
    x, y = as_features(real, "real features"), as_features(fake, "fake features")
    check_same_dim(x, y)
    if k < 1 or len(x) <= k or len(y) <= k:
        raise ValueError(f"PRDC with k = {k} needs more than k samples in each set, got {len(x)} real and "
                         f"{len(y)} fake")
    r_real = kth_neighbour_radii(x, k)  # (N,)
    r_fake = kth_neighbour_radii(y, k)  # (M,)
    inside_count = torch.zeros(len(y), dtype=torch.float64)  # per fake: number of real balls containing it
    covered = torch.zeros(len(x), dtype=torch.bool)  # per real: its ball holds some fake
    in_fake_ball = torch.zeros(len(x), dtype=torch.bool)  # per real: inside some fake ball
    for s, d in _chunks(x, y):  # d (chunk of reals, M)
        ball = d < r_real[s:s + len(d), None]
        inside_count += ball.sum(0)
        covered[s:s + len(d)] = ball.any(1)
        in_fake_ball[s:s + len(d)] = (d < r_fake[None]).any(1)
    return PRDCResult(precision=float((inside_count > 0).double().mean()), recall=float(in_fake_ball.double().mean()),
                      density=float(inside_count.sum() / (k * len(y))), coverage=float(covered.double().mean()),
                      k=k, n_real=len(x), n_fake=len(y))
