"""Loss weightings as w(λ) on the ε-MSE (Kingma & Gao 2023, "Understanding diffusion objectives", §2).

Every diffusion loss is E_t[w(t)·||ε̂ - ε||²] for some weight w on the ε-equivalent error; a network that predicts
another target gets it through the parameterisation (||ε̂ - ε||² = k·||out - target||², k = eps_factor). Members:

  none     plain MSE on the parameterisation's own target: w = 1/k.
  vlb      the variational bound. Discrete chain (Ho et al. 2020 Eq. (12); VDM Eq. (13)): L_{t-1} per dimension
           = w·||ε̂ - ε||² with w = (SNR(t-1)/SNR(t) - 1)/2, and at t = 1 the decoder N(x_0; μ, β_1) term
           1/(2(1 - β_1)). Continuous time (VDM Eq. (17)): w = -½ dλ/dt / p(t), p the density of the times drawn.
  min_snr  Hang et al. 2023: min(SNR, γ) on the x_0-MSE, i.e. w = min(SNR, γ)/SNR.
  edm      Karras et al. 2022 Eq. (8): λ(σ̃)||D - x_0||² with λ = (σ̃² + σ_d²)/(σ̃ σ_d)², i.e.
           w = (σ̃² + σ_d²)/σ_d².
  flow     the flow-matching velocity loss ||û - u||² (Lipman et al. 2023): w = Δ²/α², Δ = α dσ/dt - σ dα/dt.
  sigmoid  Kingma & Gao 2023 §5: w = sigmoid(b - λ).

Computed as w·SNR, the weight on the x_0-MSE, which stays finite where α = 0 (λ = -∞: zero terminal SNR, flow)
while w itself is infinite there; the objective multiplies it by (∂x̂_0/∂out)² (``x0_factor``), also finite.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from torch import Tensor

from ..parameterisation import Parameterisation
from ..paths import Path, f64

WeightingKind = Literal["none", "vlb", "min_snr", "edm", "flow", "sigmoid"]
WEIGHTINGS: tuple[str, ...] = get_args(WeightingKind)


def dlog_snr_dt(path: Path, t: Tensor) -> Tensor:
    """dλ/dt = 2(dα/dt / α - dσ/dt / σ) (float64, <= 0)."""
    t = f64(t)
    return 2 * (path.dalpha_dt(t) / path.alpha(t) - path.dsigma_dt(t) / path.sigma(t))


def x0_factor(param: Parameterisation, path: Path, t: Tensor) -> Tensor:
    """(∂x̂_0/∂out)² (B,) float64: ||x̂_0 - x_0||² = x0_factor·||out - target||² (every to_x0 is affine in out
    with a scalar slope, so the slope is read off the parameterisation itself). Equals eps_factor/SNR;
    finite at α = 0."""
    t = f64(t)
    zero = torch.zeros_like(t)
    return (param.to_x0(torch.ones_like(t), zero, path, t) - param.to_x0(zero, zero, path, t)) ** 2


def discrete_vlb_x0_weight(path: Path, t: Tensor) -> Tensor:
    """VDM Eq. (13) on the chain: L_{t-1} = ½(SNR(t-1) - SNR(t))·||x̂_0 - x_0||² per dimension (t = 2..T), and the
    t = 1 decoder term with variance β_1, SNR(1)/(2(1 - β_1)). t: integer-valued (B,), float64 result."""
    t = f64(t)
    la_t, la_s = path.log_alpha_bar(t), path.log_alpha_bar(t - 1)  # type: ignore[attr-defined]
    snr_t, snr_s = path.log_snr(t).exp(), path.log_snr(t - 1).exp()
    alpha_step = (la_t - la_s).exp()  # 1 - β_t
    return torch.where(t <= 1, snr_t / (2 * alpha_step), 0.5 * (snr_s - snr_t))


def x0_weight(kind: str, path: Path, t: Tensor, *, param: Parameterisation | None = None, times: Any = None,
              gamma: float = 5.0, sigma_data: float = 0.5, sigmoid_bias: float = 0.0) -> Tensor:
    """w(λ)·SNR, the weighting ``kind`` on the x_0-MSE at times t (B,), float64.

    ``param`` is needed by 'none' (w = 1/k), ``times`` (the time sampler t was drawn from) by 'vlb': integer times
    of a discrete sampler take the chain's bound, continuous ones are divided by the sampler's density."""
    t = f64(t)
    lam = path.log_snr(t)
    if kind == "none":
        if param is None:
            raise ValueError("weighting 'none' (w = 1/k) needs the parameterisation")
        return 1 / x0_factor(param, path, t)
    if kind == "vlb":
        if times is None:
            raise ValueError("weighting 'vlb' needs the time sampler (its density p(t))")
        if getattr(times, "discrete", False):
            return discrete_vlb_x0_weight(path, t)
        if not hasattr(times, "density"):
            raise ValueError(f"weighting 'vlb' divides by the density of t, and time sampling {times.kind!r} has none")
        # -½ dSNR/dt / p(t) with dSNR/dt = -2αΔ/σ³ (finite where α = 0, unlike dλ/dt)
        a, s = path.alpha(t), path.sigma(t)
        delta = a * path.dsigma_dt(t) - s * path.dalpha_dt(t)
        return a * delta / (s**3 * times.density(t))
    if kind == "min_snr":
        return torch.clamp(lam.exp(), max=gamma)
    if kind == "edm":
        return 1 / sigma_data**2 + lam.exp()  # λ(σ̃) = 1/σ_d² + 1/σ̃²
    if kind == "flow":
        a, s = path.alpha(t), path.sigma(t)
        delta = a * path.dsigma_dt(t) - s * path.dalpha_dt(t)
        return (delta / s) ** 2
    if kind == "sigmoid":
        return torch.exp(torch.as_tensor(sigmoid_bias, dtype=torch.float64)) * torch.sigmoid(lam - sigmoid_bias)
    raise ValueError(f"unknown weighting {kind!r}; choose one of {', '.join(WEIGHTINGS)}")


def eps_weight(kind: str, path: Path, t: Tensor, **kw: Any) -> Tensor:
    """w(λ) on the ε-MSE at times t (B,), float64: x0_weight/SNR (infinite where α = 0 for most kinds)."""
    t = f64(t)
    return x0_weight(kind, path, t, **kw) * (-path.log_snr(t)).exp()
