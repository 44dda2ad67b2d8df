"""Ancestral DDPM (Ho et al. 2020, Algorithm 2) and DDIM (Song et al. 2021, Eq. (12)) on any grid.

Both step from t to the grid's next s < t through the posterior q(x_s|x_t, x̂_0); with s = t-1 and
the full grid this is exactly Algorithm 2. Shapes: x (B, *D).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..forward import expand, jump_variance, posterior, posterior_variance, x0_to_eps

Variance = Literal["beta_tilde", "beta"]


def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _steps(ts: Tensor, progress: bool):
    pairs = list(zip(ts[:-1].tolist(), ts[1:].tolist()))
    if progress:
        from tqdm.auto import tqdm

        return tqdm(pairs, desc="sampling", leave=False)
    return pairs


@torch.no_grad()
def ddpm(D: Denoiser, x: Tensor, ts: Tensor, *, variance: Variance = "beta_tilde", clip: float | None = None,
         generator: torch.Generator | None = None, cond: dict[str, Any] | None = None, progress: bool = False,
         callback: Callable[[int, Tensor, Tensor], None] | None = None) -> Tensor:
    """Ho et al. Algorithm 2: x_s = μ̃(x_t, x̂_0) + σ z, σ² = β̃ (posterior) or β = 1 - ᾱ_t/ᾱ_s; no noise at s = 0."""
    if variance not in ("beta_tilde", "beta"):
        raise ValueError(f"unknown DDPM variance {variance!r}; choose beta_tilde or beta")
    sched, cond = D.schedule, cond or {}
    for i, (t, s) in enumerate(_steps(ts, progress)):
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)
        ss = torch.full_like(tt, s)
        x0 = D(x, tt, **cond)
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        post = posterior(sched, x0, x, tt, ss)
        if s > 0:
            var = post.var if variance == "beta_tilde" else jump_variance(sched, tt, ss).to(x.dtype)
            x = post.mean + expand(var.sqrt(), x) * _noise(x, generator)
        else:
            x = post.mean
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
    for i, (t, s) in enumerate(_steps(ts, progress)):
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
