"""Classifier guidance (Dhariwal & Nichol 2021, Alg. 1 and 2, on any path and sampler) as a Denoiser wrapper.

D&N add s·∇_x log p_φ(y | x_t, t) to the score. In x̂_0 terms (Tweedie: x̂_0 = (x_t + σ² ∇log p_t(x_t))/α), a
score shifted by s·g shifts the denoiser by
    x̃_0 = x̂_0 + s (σ²/α) ∇_x log p(y | x_t, t),
so ε̂ moves by -s σ g (D&N Alg. 2's ε̂ - √(1-ᾱ) s g) and every sampler sees the guided score. With s = 1 and
the exact p(y | x_t) the guided score is ∇log p_t(x_t | y) (Bayes): the sampler draws p(x_0 | y) exactly
(tests/guidance/test_classifier_guidance.py). Where α(t) = 0 (flow, zero terminal SNR at t_max) x_t carries no
information about x_0, the exact ∇log p(y|x_t) is O(α) and (σ²/α)·∇ has a finite limit no learned classifier
gives: those rows are left unguided, and so are rows with σ̃ = σ/α above 10³ (kuosan.pf_ode's VE_SIGMA_CAP: the
discrete cosine chain's t = T has σ̃ = 2·10⁴). There a trained classifier's gradient, O(0.1) rather than O(α),
times σ²/α ~ 10⁴ moved the first DDIM step by ~10² and digits samples left [-1, 1] by 50×; unguided, the step
loses only the O(α) exact guidance. A classifier is anything with ``log_probs(x_t, t) -> (B, C)``
differentiable in x_t, and ``num_classes``: :class:`NoisyClassifier` (a trained network) or
:class:`kuosan.exact.ExactClassifier`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ..broadcast import batch_times, expand
from ..denoiser import Denoiser, has_variance
from ..paths import Path
from ..pf_ode import VE_SIGMA_CAP
from .combine import Interval, check_interval, check_scale, in_interval

LAMBDA_CLAMP = 20.0  # the classifier's time input is λ clipped to ±20 (σ̃ from 4.5e-5 to 2.2e4), finite at α = 0


@runtime_checkable
class TimeClassifier(Protocol):
    num_classes: int

    def log_probs(self, x_t: Tensor, t: Tensor) -> Tensor: ...  # (B, C) log p(y | x_t, t)


class NoisyClassifier(nn.Module):
    """A classifier network f(c_in x_t, c_noise) -> logits read on a path: c_in = 1/√(α² + σ²) (unit-scale input
    on every path: x_t/√(α² + σ²) depends only on x_t/α and λ), c_noise = -125·clip(λ, ±20)
    (EDM's ¼ ln σ̃ × 1000)."""

    def __init__(self, net: nn.Module, path: Path, num_classes: int):
        super().__init__()
        self.net, self.path, self.num_classes = net, path, num_classes

    def logits(self, x_t: Tensor, t: Tensor) -> Tensor:
        t = batch_times(t, x_t)
        a, s = self.path.alpha(t), self.path.sigma(t)
        c_in = expand(1 / (a**2 + s**2).sqrt(), x_t)
        c_noise = -125.0 * self.path.log_snr(t).clamp(-LAMBDA_CLAMP, LAMBDA_CLAMP)
        dtype = next(self.net.parameters()).dtype
        return self.net((c_in * x_t).to(dtype), c_noise.to(dtype)).to(x_t.dtype)

    def log_probs(self, x_t: Tensor, t: Tensor) -> Tensor:
        return torch.log_softmax(self.logits(x_t, t), dim=1)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        return self.logits(x_t, t)


def check_labels(y: Any, num_classes: int, rows: int) -> Tensor:
    """y as (rows,) int64 in [0, num_classes), else ValueError."""
    if not isinstance(y, Tensor) or y.shape != (rows,) or y.dtype.is_floating_point:
        raise ValueError(f"classifier guidance needs integer labels y of shape ({rows},)")
    if rows and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}) for a {num_classes}-class classifier")
    return y.long()


def grad_log_prob(classifier: TimeClassifier, x_t: Tensor, t: Tensor, y: Tensor) -> Tensor:
    """∇_x log p(y | x_t, t) (B, *D) by autograd (also inside a sampler's no_grad)."""
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        lp = classifier.log_probs(x, t).gather(1, y[:, None]).sum()
        return torch.autograd.grad(lp, x)[0]


class ClassifierGuided:
    """Denoiser -> Denoiser: x̂_0 + s (σ²/α) ∇log p(y | x_t, t) (see the module docstring);
    s = 0 is D bit for bit.

    ``cond["y"]`` names the class; it is passed on to D only when ``conditional_model`` (D&N guide both
    unconditional and conditional models). Rows with σ̃ > 10³ (α = 0 included) or λ outside ``interval`` are left
    unguided."""

    def __init__(self, D: Denoiser, classifier: TimeClassifier, scale: float, *, conditional_model: bool = False,
                 interval: Interval | None = None):
        self.D, self.classifier, self.path = D, classifier, D.path
        self.scale = check_scale(scale, "classifier guidance scale")
        self.conditional_model, self.interval = conditional_model, check_interval(interval)
        self.learns_variance = has_variance(D)
        if hasattr(D, "kind"):  # a consistency model stays one (sample() reads D.kind)
            self.kind = D.kind

    def _model_cond(self, cond: dict[str, Any]) -> dict[str, Any]:
        return cond if self.conditional_model else {k: v for k, v in cond.items() if k != "y"}

    def _guide(self, x0: Tensor, x_t: Tensor, t: Tensor, cond: dict[str, Any]) -> Tensor:
        if self.scale == 0.0:
            return x0
        y = check_labels(cond.get("y"), self.classifier.num_classes, x_t.shape[0])
        t = batch_times(t, x_t)
        a, s = self.path.alpha(t), self.path.sigma(t)
        keep = (s <= VE_SIGMA_CAP * a) & in_interval(self.path, t, self.interval)  # σ̃ <= 1e3: see module doc
        if not bool(keep.any()):
            return x0
        coef = s**2 / a.clamp_min(torch.finfo(torch.float64).tiny)  # σ²/α (B,), float64
        shift = self.scale * expand(coef, x_t) * grad_log_prob(self.classifier, x_t, t, y).to(x0.dtype)
        return torch.where(expand(keep, x_t) > 0, x0 + shift, x0)

    def __call__(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        return self._guide(self.D(x_t, t, **self._model_cond(cond)), x_t, t, cond)

    def with_variance(self, x_t: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor | None]:
        x0, v = self.D.with_variance(x_t, t, **self._model_cond(cond))  # type: ignore[attr-defined]
        return self._guide(x0, x_t, t, cond), v


def classifier_guidance(D: Denoiser, classifier: TimeClassifier, scale: float, *, conditional_model: bool = False,
                        interval: Interval | None = None) -> ClassifierGuided:
    """Dhariwal & Nichol 2021 Alg. 1/2 generalised to every path and sampler: the score += s ∇log p(y|x_t, t)."""
    return ClassifierGuided(D, classifier, scale, conditional_model=conditional_model, interval=interval)
