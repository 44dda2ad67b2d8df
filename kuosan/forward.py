"""The forward process q(x_t|x_0) of a Gaussian path and its posterior q(x_s|x_t, x_0) for any s < t.

Shapes: x0, x_t, eps are (B, *D); t and s are (B,) or scalars. Coefficients are float64 from the path and
cast once to the data dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .broadcast import batch_times, expand
from .paths import Path


def q_sample(path: Path, x0: Tensor, t: Tensor | float, eps: Tensor | None = None) -> Tensor:
    """Ho et al. Eq. (4), reparameterised, on any path: x_t = α(t) x_0 + σ(t) ε."""
    eps = torch.randn_like(x0) if eps is None else eps
    t = batch_times(t, x0)
    return expand(path.alpha(t), x0) * x0 + expand(path.sigma(t), x0) * eps


class Posterior(NamedTuple):
    mean: Tensor  # (B, *D)
    var: Tensor  # (B,) per-sample variance β̃_{t→s} (isotropic), float64
    c_xt: Tensor  # (B,) float64 coefficient of x_t in the mean
    c_x0: Tensor  # (B,) float64 coefficient of x_0 in the mean


def jump_variance(path: Path, t: Tensor, s: Tensor) -> Tensor:
    """σ²_{t|s} = σ_t² - (α_t/α_s)² σ_s² = σ_t²(1 - e^{λ_t - λ_s}), the forward variance of the jump s -> t
    (β_t when s = t-1 on the discrete chain), float64; written through λ so it keeps precision for s ≈ t."""
    lt, ls = path.log_snr(t), path.log_snr(s)
    return path.sigma(t) ** 2 * -torch.expm1(lt - ls)


def posterior_coefficients(path: Path, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(c_xt, c_x0, β̃) of q(x_s|x_t, x_0) = N(c_xt x_t + c_x0 x_0, β̃ I) (Ho et al. Eqs. (6)-(7) when s = t-1):
    c_xt = α_{t|s} σ_s²/σ_t² = e^{(λ_t - λ_s)/2} σ_s/σ_t,
    c_x0 = α_s σ²_{t|s}/σ_t² = α_s (1 - e^{λ_t - λ_s}),
    β̃ = σ²_{t|s} σ_s²/σ_t² = (1 - e^{λ_t - λ_s}) σ_s².
    At s = 0 (λ_s = +∞): c_xt = 0, c_x0 = 1, β̃ = 0."""
    t, s = torch.as_tensor(t, dtype=torch.float64), torch.as_tensor(s, dtype=torch.float64)
    dl = path.log_snr(t) - path.log_snr(s)  # <= 0
    sig_s, sig_t = path.sigma(s), path.sigma(t)
    frac = -torch.expm1(dl)  # 1 - e^{λ_t - λ_s}
    c_xt = torch.where(sig_s > 0, (0.5 * dl).exp() * sig_s / sig_t, torch.zeros_like(dl))
    return c_xt, path.alpha(s) * frac, frac * sig_s**2


def posterior_variance(path: Path, t: Tensor, s: Tensor) -> Tensor:
    """β̃ for the jump t -> s, float64."""
    return posterior_coefficients(path, t, s)[2]


def posterior(path: Path, x0: Tensor, x_t: Tensor, t: Tensor | float, s: Tensor | float | None = None) -> Posterior:
    """q(x_s|x_t, x_0) for any s < t (s = t - 1 by default, the discrete chain's step)."""
    t = batch_times(t, x_t)
    s = t - 1 if s is None else batch_times(s, x_t)
    c_xt, c_x0, var = posterior_coefficients(path, t, s)
    mean = expand(c_xt, x_t) * x_t + expand(c_x0, x_t) * x0
    return Posterior(mean, var, c_xt, c_x0)
