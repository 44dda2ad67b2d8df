"""Exact class-conditional test bed: a Gaussian mixture whose components carry class labels.

With components k of class c(k), p(x_0, y) = Σ_{k: c(k) = y} π_k N(μ_k, Σ_k), so on a path x_t = α x_0 + σ ε
everything guidance needs is closed form (the component posterior
r_k(x_t) ∝ π_k N(x_t; α μ_k, α² Σ_k + σ² I)):
  p(y | x_t)        = Σ_{k: c(k) = y} r_k(x_t)                              (the exact noisy classifier),
  E[x_0 | x_t, y]   = Σ_{k: c(k) = y} r_k E_k[x_0|x_t] / p(y|x_t)          (the conditional denoiser),
  E[x_0 | x_t]      = Σ_k r_k E_k[x_0|x_t]                                  (the unconditional one),
and p(x_0 | y) is the mixture of class y's components (``given``). Data are vectors (B, D), float64 by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..broadcast import batch_times
from ..paths import Path
from .mixture import GaussianMixture


@dataclass(eq=False)
class LabelledMixture:
    """A GaussianMixture whose component k belongs to class labels[k] ∈ {0, …, num_classes - 1}; the label
    ``num_classes`` (kuosan's null class) and ``None`` mean "no label" everywhere below."""

    mixture: GaussianMixture
    labels: Tensor  # (K,) int64

    def __post_init__(self) -> None:
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64)
        K = len(self.mixture.weights)
        if self.labels.shape != (K,) or int(self.labels.min()) < 0:
            raise ValueError(f"labels must be ({K},) integers >= 0, one per component, got {tuple(self.labels.shape)}")
        missing = sorted(set(range(self.num_classes)) - set(self.labels.tolist()))
        if missing:
            raise ValueError(f"every class needs a component; classes {missing} have none")

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1

    @property
    def class_weights(self) -> Tensor:
        """p(y) (C,): the summed weights of each class's components."""
        return torch.zeros(self.num_classes, dtype=torch.float64).index_add_(0, self.labels, self.mixture.weights)

    def given(self, y: int) -> GaussianMixture:
        """p(x_0 | y): class y's components with their weights renormalised."""
        keep = self.labels == y
        m = self.mixture
        return GaussianMixture(m.means[keep], m.covs[keep], m.weights[keep])

    def _component_logits(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """(log π_k N(x; α μ_k, α² Σ_k + σ² I) (B, K), E_k[x_0 | x] (B, K, D))."""
        logp, x0, _ = self.mixture._moments(x, alpha, sigma)
        return logp + self.mixture.weights.to(x).log(), x0

    def _mask(self, y: Tensor | None, like: Tensor) -> Tensor:
        """(B, K) additive mask: 0 for components of row b's class (all of them for the null label), -∞ else."""
        B, K = like.shape[0], len(self.labels)
        if y is None:
            return torch.zeros(B, K, dtype=like.dtype, device=like.device)
        y = torch.as_tensor(y, device=like.device).reshape(-1).expand(B)
        if bool(((y < 0) | (y > self.num_classes)).any()):
            raise ValueError(f"labels must be in [0, {self.num_classes}] ({self.num_classes} = no label)")
        keep = (self.labels.to(like.device)[None, :] == y[:, None]) | (y[:, None] == self.num_classes)
        return torch.zeros(B, K, dtype=like.dtype, device=like.device).masked_fill(~keep, float("-inf"))

    def denoise(self, x: Tensor, alpha: Tensor, sigma: Tensor, y: Tensor | None = None) -> Tensor:
        """E[x_0 | x_t = x, y] (B, D) for per-sample α, σ (B,); y (B,) labels, or None for E[x_0 | x_t]."""
        logits, x0 = self._component_logits(x, alpha, sigma)
        w = torch.softmax(logits + self._mask(y, x), dim=1)  # (B, K): r_k restricted to class y, renormalised
        return torch.einsum("bk,bkd->bd", w, x0)

    def class_log_probs(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """log p(y | x_t = x) (B, C), differentiable in x."""
        logits, _ = self._component_logits(x, alpha, sigma)
        r = torch.log_softmax(logits, dim=1)  # (B, K) log r_k
        onehot = self.labels.to(x.device)[None, :] == torch.arange(self.num_classes, device=x.device)[:, None]
        return torch.logsumexp(r[:, None, :].masked_fill(~onehot[None], float("-inf")), dim=2)


class ConditionalExactDenoiser:
    """D(x_t, t, y) = E[x_0 | x_t, y] of a LabelledMixture on a path; y absent or the null label: E[x_0 | x_t]."""

    def __init__(self, data: LabelledMixture, path: Path):
        self.data, self.path = data, path

    def __call__(self, x_t: Tensor, t: Tensor, y: Tensor | None = None, **cond: Any) -> Tensor:
        t = batch_times(t, x_t)
        flat = x_t.reshape(x_t.shape[0], -1)
        a, s = self.path.alpha(t).to(x_t.dtype), self.path.sigma(t).to(x_t.dtype)
        return self.data.denoise(flat, a, s, y).reshape(x_t.shape)


class ExactClassifier:
    """The exact time-conditioned classifier log p(y | x_t) of a LabelledMixture on a path: ``log_probs(x_t, t)``
    (B, C), the interface :func:`kuosan.guidance.classifier_guidance` differentiates."""

    def __init__(self, data: LabelledMixture, path: Path):
        self.data, self.path = data, path
        self.num_classes = data.num_classes

    def log_probs(self, x_t: Tensor, t: Tensor) -> Tensor:
        t = batch_times(t, x_t)
        a, s = self.path.alpha(t).to(x_t.dtype), self.path.sigma(t).to(x_t.dtype)
        return self.data.class_log_probs(x_t.reshape(x_t.shape[0], -1), a, s)
