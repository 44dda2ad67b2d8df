"""Ancestral DDPM (Ho et al. 2020, Algorithm 2) and DDIM (Song et al. 2021, Eq. (12)) on a time grid.

Both step from t to the grid's next s < t through the posterior q(x_s|x_t, x̂_0); with s = t - 1 on the full
integer grid of the discrete chain, ``ddpm`` is exactly Algorithm 2. DDIM runs on any path: its step
x_s = α_s x̂_0 + σ_s ε̂ (η = 0) never divides by α, so it leaves α(t_max) = 0 (σ̃ = ∞) finitely, with
ε̂ = x_t/σ_t there. Shapes: x (B, *D).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..broadcast import batch_times, expand
from ..denoiser import Denoiser, has_variance
from ..forward import posterior_coefficients
from ..likelihood.variances import VARIANCE_KINDS, AnalyticTable, VarianceKind, reverse_variance
from ..paths import f64, require_discrete
from .common import Callback, after_step, check_clip, coefficient_table, denoise, eps_hat, steps
from .grids import check_grid
from .noise import NoiseSource, noise_like

NO_LEARNED_VARIANCE = "variance 'learned_range' needs a denoiser with a learned variance (learn_variance = true)"


@torch.no_grad()
def ddpm(D: Denoiser, x: Tensor, ts: Tensor, *, variance: VarianceKind = "beta_tilde", clip: float | None = None,
         analytic_table: AnalyticTable | None = None, noise: NoiseSource | None = None,
         cond: dict[str, Any] | None = None,
         progress: bool = False, callback: Callback | None = None) -> Tensor:
    """Ho et al. Algorithm 2 on the discrete chain: x_s = μ̃(x_t, x̂_0) + σ z, no noise into s = 0.

    σ² = reverse_variance(variance, ...) of :mod:`kuosan.likelihood.variances`: β̃ (posterior), β (= σ²_{t|s}),
    learned_range (improved DDPM, Nichol & Dhariwal 2021 Eq. (15): D must offer ``with_variance``) or analytic
    (Bao et al. 2022, Analytic-DPM: ``analytic_table`` from estimate_analytic_table)."""
    path = require_discrete(D.path, "ancestral DDPM (Ho et al. 2020 Alg. 2; use ddim with eta=1 on other paths)")
    if variance not in VARIANCE_KINDS:
        raise ValueError(f"unknown DDPM variance {variance!r}; choose one of {', '.join(VARIANCE_KINDS)}")
    learned = variance == "learned_range"
    if learned and not has_variance(D):
        raise ValueError(NO_LEARNED_VARIANCE)
    if variance == "analytic" and analytic_table is None:
        raise ValueError("variance 'analytic' needs analytic_table (see kuosan.likelihood.estimate_analytic_table)")
    check_clip(clip)
    cond = cond or {}
    for i, (t, s) in enumerate(steps(check_grid(ts, path), progress, "ddpm")):
        tt = batch_times(t, x)  # (B,) float64 for the denoiser
        t1, s1 = f64([t]), f64([s])  # (1,): the step's coefficients, shared by the batch
        x0, v = D.with_variance(x, tt, **cond) if learned else (D(x, tt, **cond), None)
        if learned and v is None:
            raise ValueError(NO_LEARNED_VARIANCE)
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        c_xt, c_x0, _ = posterior_coefficients(path, t1, s1)
        x_prev = expand(c_xt, x) * x + expand(c_x0, x) * x0  # μ̃(x_t, x̂_0), Ho et al. Eq. (7)
        if s > 0:
            var = reverse_variance(variance, path, t1, s1, net_v=v, analytic_table=analytic_table)
            var = var.to(x) if var.ndim == x.ndim else expand(var, x)  # (B, *D) learned, else (1,) -> (1, 1, ...)
            x_prev = x_prev + var.sqrt() * noise_like(noise, x)
        x = x_prev
        x = after_step(callback, i, x, x0)
    return x


def check_eta(eta: float) -> None:
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not (eta >= 0 and math.isfinite(eta)):
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")


@torch.no_grad()
def ddim(D: Denoiser, x: Tensor, ts: Tensor, *, eta: float = 0.0, clip: float | None = None,
         noise: NoiseSource | None = None, cond: dict[str, Any] | None = None, progress: bool = False,
         callback: Callback | None = None) -> Tensor:
    """Song et al. Eq. (12): x_s = α_s x̂_0 + √(σ_s² - c²) ε̂ + c z with c² = η² β̃_{t→s} (Eq. (16)),
    β̃_{t→s} = (1 - e^{λ_t - λ_s}) σ_s² (λ the full log-SNR); η = 1 is the ancestral posterior step."""
    check_eta(eta)
    check_clip(clip)
    path = D.path
    coef = coefficient_table(path)
    for i, (t, s) in enumerate(steps(check_grid(ts, path), progress, "ddim")):
        x0 = denoise(D, x, t, cond)
        if clip is not None:
            x0 = x0.clamp(-clip, clip)  # and ε̂ from the clipped x̂_0, so the step stays on the same ray
        if s == 0:
            x = x0  # α(0) = 1, σ(0) = 0
        else:
            a_t, s_t, lam_t = coef(t)
            a_s, s_s, lam_s = coef(s)
            e = eps_hat(x, x0, a_t, s_t)
            c2 = eta**2 * -math.expm1(lam_t - lam_s) * s_s**2  # λ_t = -∞ (α_t = 0) gives β̃ = σ_s²
            x = a_s * x0 + math.sqrt(max(s_s**2 - c2, 0.0)) * e
            if eta > 0:
                x = x + math.sqrt(c2) * noise_like(noise, x)
        x = after_step(callback, i, x, x0)
    return x
