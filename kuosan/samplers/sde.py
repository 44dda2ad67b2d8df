"""Reverse-time VP SDE samplers: Euler–Maruyama (Song et al. 2021 Eq. (6)) and predictor–corrector (Algorithm 5).

The VP SDE of a discrete schedule is dx = -½β(t) x dt + sqrt(β(t)) dw with β(t) = -d log ᾱ/dt, t in step
units; it has exactly the schedule's marginals because log ᾱ is linear in t between integers. Its reverse is
dx = [-½β x - β ∇log p_t(x)] dt + sqrt(β) dw̄ (Eq. (6)), with score ∇log p_t = -ε̂/σ. Shapes: x (B, *D).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..schedules import Schedule
from .grids import check_grid, pairs

Predictor = Literal["reverse_diffusion", "euler_maruyama"]


def beta(sched: Schedule, t: float) -> float:
    """β(t) = -d log ᾱ/dt: log ᾱ is linear on each [k-1, k], so the slope of the interval a reverse step enters."""
    k = min(max(math.ceil(t), 1), sched.T)
    # float64 in: a Python float would be read as float32
    la = sched.log_alpha_bar(torch.tensor([k - 1.0, k], dtype=torch.float64))
    return float(la[0] - la[1])


def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _score(D: Denoiser, x: Tensor, t: float, cond: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """(x̂_0, score = -ε̂/σ) at (x, t); both (B, *D)."""
    sched = D.schedule
    tt = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
    x0 = D(x, tt, **cond)
    t64 = torch.tensor(t, dtype=torch.float64)
    a, s = float(sched.alpha(t64)), float(sched.sigma(t64))
    return x0, -(x - a * x0) / s**2  # -ε̂/σ with ε̂ = (x - α x̂_0)/σ


def _em_step(sched: Schedule, x: Tensor, score: Tensor, t: float, s: float, z: Tensor) -> Tensor:
    """One Euler–Maruyama step of Eq. (6) backwards from t to s: x + h(½β x + β ∇log p) + sqrt(β h) z."""
    b, h = beta(sched, t), t - s
    return x + h * (0.5 * b * x + b * score) + math.sqrt(b * h) * z


def _reverse_diffusion_step(sched: Schedule, x: Tensor, score: Tensor, t: float, s: float, z: Tensor) -> Tensor:
    """Song et al. Eq. (46) for the jump s -> t (x_t = a x_s + sqrt(b) z, b = 1 - a²):
    x_s = (2 - a) x_t + b ∇log p + sqrt(b) z."""
    la_t, la_s = (sched.log_alpha_bar(torch.tensor(v, dtype=torch.float64)) for v in (t, s))
    a = math.exp(0.5 * float(la_t - la_s))  # α_{t|s}
    b = -math.expm1(float(la_t - la_s))  # σ²_{t|s} = 1 - α_{t|s}²
    return (2 - a) * x + b * score + math.sqrt(b) * z


PREDICTORS = {"reverse_diffusion": _reverse_diffusion_step, "euler_maruyama": _em_step}


@torch.no_grad()
def sde(D: Denoiser, x: Tensor, ts: Tensor, *, generator: torch.Generator | None = None,
        cond: dict[str, Any] | None = None, progress: bool = False,
        callback: Callable[[int, Tensor, Tensor], None] | None = None) -> Tensor:
    """Euler–Maruyama on Song et al. Eq. (6) over the grid (β(t) = -d log ᾱ/dt at t); last step x_0 = x̂_0."""
    sched, cond = D.schedule, cond or {}
    for i, (t, s) in enumerate(pairs(check_grid(ts, sched.T), progress, "sde")):
        x0, score = _score(D, x, t, cond)
        x = _em_step(sched, x, score, t, s, _noise(x, generator)) if s > 0 else x0
        if callback is not None:
            callback(i, x, x0)
    return x


@torch.no_grad()
def pc(D: Denoiser, x: Tensor, ts: Tensor, *, snr: float = 0.16, corrector_steps: int = 1,
       predictor: Predictor = "reverse_diffusion", generator: torch.Generator | None = None,
       cond: dict[str, Any] | None = None, progress: bool = False,
       callback: Callable[[int, Tensor, Tensor], None] | None = None) -> Tensor:
    """Song et al. Algorithm 5 (VP): at each t_i, M Langevin corrector steps, then a predictor step to t_{i+1}.

    Corrector: x ← x + ε g + sqrt(2ε) z, g = -ε̂/σ, ε = 2 α_i (r ‖z‖/‖g‖)², α_i = 1 - β(t_i), r = ``snr``.
    ‖z‖² is replaced by its mean d (so ε does not depend on the very noise it multiplies) and ‖g‖² by its
    batch mean (as Song et al.'s code does; a per-sample ‖g‖ near a mode gives unbounded steps). The
    last step into t = 0 is a denoise. NFE = N·(M + 1).
    """
    if not (isinstance(snr, (int, float)) and math.isfinite(snr) and snr > 0):
        raise ValueError(f"the corrector's target signal-to-noise ratio snr must be a finite number > 0, got {snr!r}")
    if not isinstance(corrector_steps, int) or isinstance(corrector_steps, bool) or corrector_steps < 0:
        raise ValueError(f"corrector_steps must be an integer >= 0, got {corrector_steps!r}")
    if predictor not in PREDICTORS:
        raise ValueError(f"unknown predictor {predictor!r}; choose one of {', '.join(PREDICTORS)}")
    sched, cond = D.schedule, cond or {}
    d = x[0].numel()
    for i, (t, s) in enumerate(pairs(check_grid(ts, sched.T), progress, "pc")):
        for _ in range(corrector_steps):  # Langevin MCMC targeting p_t
            _, g = _score(D, x, t, cond)
            g2 = g.reshape(g.shape[0], -1).pow(2).sum(1).mean()
            step = 2 * (1 - beta(sched, t)) * snr**2 * d / g2  # Langevin step size ε
            x = x + step * g + (2 * step).sqrt() * _noise(x, generator)
        x0, score = _score(D, x, t, cond)
        x = PREDICTORS[predictor](sched, x, score, t, s, _noise(x, generator)) if s > 0 else x0
        if callback is not None:
            callback(i, x, x0)
    return x
