"""Ancestral DDPM (Ho et al. 2020, Algorithm 2) and DDIM (Song et al. 2021, Eq. (12)) on any grid.

Both step from t to the grid's next s < t through the posterior q(x_s|x_t, x̂_0); with s = t-1 and
the full grid this is exactly Algorithm 2. Shapes: x (B, *D).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..forward import expand, posterior, posterior_variance, x0_to_eps
from ..variance import VARIANCE_KINDS, AnalyticTable, VarianceKind, reverse_variance
from .grids import check_grid, pairs



def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


@torch.no_grad()
def ddpm(D: Denoiser, x: Tensor, ts: Tensor, *, variance: VarianceKind = "beta_tilde", clip: float | None = None,
         analytic_table: AnalyticTable | None = None, generator: torch.Generator | None = None,
         cond: dict[str, Any] | None = None, progress: bool = False,
         callback: Callable[[int, Tensor, Tensor], None] | None = None) -> Tensor:
    """Ho et al. Algorithm 2: x_s = μ̃(x_t, x̂_0) + σ z with no noise at s = 0, and σ² one of
    β̃ (posterior), β = 1 - ᾱ_t/ᾱ_s, learned_range (improved DDPM: D must offer ``with_v``) or analytic
    (Analytic-DPM, from ``analytic_table``; see :func:`kuosan.variance.estimate_analytic_table`)."""
    if variance not in VARIANCE_KINDS:
        raise ValueError(f"unknown DDPM variance {variance!r}; choose one of {', '.join(VARIANCE_KINDS)}")
    if variance == "learned_range" and not hasattr(D, "with_v"):
        raise ValueError("variance 'learned_range' needs a model trained with learn_variance = true")
    sched, cond = D.schedule, cond or {}
    for i, (t, s) in enumerate(pairs(check_grid(ts, sched.T), progress)):
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)
        ss = torch.full_like(tt, s)
        x0, v = D.with_v(x, tt, **cond) if variance == "learned_range" else (D(x, tt, **cond), None)
        if variance == "learned_range" and v is None:
            raise ValueError("variance 'learned_range' needs a model trained with learn_variance = true")
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        x_prev = posterior(sched, x0, x, tt, ss).mean
        if s > 0:
            var = reverse_variance(variance, sched, tt, ss, net_v=v, analytic_table=analytic_table)
            var = var.to(x) if var.ndim == x.ndim else expand(var, x)
            x_prev = x_prev + var.sqrt() * _noise(x, generator)
        x = x_prev
        if callback is not None:
            callback(i, x, x0)
    return x


@torch.no_grad()
def ddim(D: Denoiser, x: Tensor, ts: Tensor, *, eta: float = 0.0, clip: float | None = None,
         generator: torch.Generator | None = None, cond: dict[str, Any] | None = None, progress: bool = False,
         callback: Callable[[int, Tensor, Tensor], None] | None = None) -> Tensor:
    """Song et al. Eq. (12): x_s = α_s x̂_0 + sqrt(σ_s² - c²) ε̂ + c z, c = η·sqrt(β̃_{t->s}) (Eq. (16))."""
    if not (eta >= 0 and math.isfinite(eta)):
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
    sched, cond = D.schedule, cond or {}
    for i, (t, s) in enumerate(pairs(check_grid(ts, D.schedule.T), progress)):
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)
        ss = torch.full_like(tt, s)
        x0 = D(x, tt, **cond)
        if clip is not None:
            x0 = x0.clamp(-clip, clip)  # and ε̂ from the clipped x̂_0, so the step stays on the same ray
        a_t, s_t = expand(sched.alpha(tt), x), expand(sched.sigma(tt), x)
        eps = x0_to_eps(x, x0, a_t, s_t)
        a_s, s_s = expand(sched.alpha(ss), x), expand(sched.sigma(ss), x)
        x = a_s * x0
        if s > 0:
            c2 = expand(eta**2 * posterior_variance(sched, tt, ss), x)
            x = x + (s_s**2 - c2).clamp_min(0).sqrt() * eps
            if eta > 0:
                x = x + c2.sqrt() * _noise(x, generator)
        if callback is not None:
            callback(i, x, x0)
    return x
