"""Karras et al. 2022 (EDM) deterministic Euler and Heun samplers (Algorithm 1), in VE coordinates.

Any VP schedule becomes VE under y = x/α, σ̃ = σ/α = exp(-λ/2): the PF-ODE reads dy/dσ̃ = (y - x̂_0)/σ̃
(Karras et al. §2 with s = 1), where x̂_0 = D(α y, t) is the VP denoiser at the matching t. The result is
x_0 = α(0) y = y. Euler here is exactly DDIM η = 0 (Song et al. 2021 Eq. (14); Karras et al. §3). Shapes: x (B, *D).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..schedules import Schedule
from .grids import check_grid, full, pairs

Callback = Callable[[int, Tensor, Tensor], None]


def _ve(sched: Schedule, t: float) -> tuple[float, float]:
    """(α, σ̃ = σ/α) at time t; σ̃ = 0 at t = 0."""
    tt = torch.tensor(t, dtype=torch.float64)
    a = sched.alpha(tt).item()
    return a, sched.sigma(tt).item() / a


@torch.no_grad()
def euler(D: Denoiser, x: Tensor, ts: Tensor, *, generator: torch.Generator | None = None,
          cond: dict[str, Any] | None = None, progress: bool = False, callback: Callback | None = None) -> Tensor:
    """Karras Alg. 1 without the correction: y_s = y_t + (σ̃_s - σ̃_t)(y_t - x̂_0)/σ̃_t; NFE = N."""
    grid, sched, cond = check_grid(ts, D.schedule.T), D.schedule, cond or {}
    a_t, sg_t = _ve(sched, grid[0])
    y = x / a_t
    for i, (t, s) in enumerate(pairs(grid, progress)):
        a_t, sg_t = _ve(sched, t)
        a_s, sg_s = _ve(sched, s)
        x0 = D(a_t * y, full(y, t), **cond)
        # at σ̃_s = 0 the Euler step lands exactly on x̂_0
        y = x0 if s == 0 else y + ((sg_s - sg_t) / sg_t) * (y - x0)
        if callback is not None:
            callback(i, a_s * y, x0)
    return y * _ve(sched, grid[-1])[0]


@torch.no_grad()
def heun(D: Denoiser, x: Tensor, ts: Tensor, *, generator: torch.Generator | None = None,
         cond: dict[str, Any] | None = None, progress: bool = False, callback: Callback | None = None) -> Tensor:
    """Karras Alg. 1 (deterministic Heun, 2nd order): Euler then the trapezoidal correction, none into σ̃ = 0.

    NFE = 2N - 1 (two evaluations per step, one on the last step).
    """
    grid, sched, cond = check_grid(ts, D.schedule.T), D.schedule, cond or {}
    a_t, sg_t = _ve(sched, grid[0])
    y = x / a_t
    for i, (t, s) in enumerate(pairs(grid, progress)):
        a_t, sg_t = _ve(sched, t)
        a_s, sg_s = _ve(sched, s)
        x0 = D(a_t * y, full(y, t), **cond)
        if s == 0:
            y = x0
        else:
            d = (y - x0) / sg_t  # dy/dσ̃ at (y_t, σ̃_t)
            y_e = y + (sg_s - sg_t) * d
            d_e = (y_e - D(a_s * y_e, full(y, s), **cond)) / sg_s
            y = y + (sg_s - sg_t) * 0.5 * (d + d_e)
        if callback is not None:
            callback(i, a_s * y, x0)
    return y * _ve(sched, grid[-1])[0]
