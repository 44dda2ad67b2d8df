"""Probability-flow ODE sampler (Song et al. 2021 Eq. (13)) with an adaptive solver from torchdiffeq.

In VE coordinates y = x/α, σ̃ = σ/α the PF-ODE of any VP schedule is dy/dσ̃ = (y - x̂_0)/σ̃ (Karras et al.
2022 Eq. (3)); with u = log σ̃ it reads dy/du = y - x̂_0(α y, t(u)), whose right-hand side stays O(1) from
σ̃_max ≈ 157 down to σ̃ → 0, so an adaptive Runge–Kutta solver needs few steps at either end.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from ..denoiser import Denoiser
from .grids import check_grid

Method = Literal["dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"]
METHODS: tuple[str, ...] = get_args(Method)


class MissingDependency(ImportError, ValueError):
    """An optional dependency is not installed (both an ImportError and a ValueError)."""


@torch.no_grad()
def ode(D: Denoiser, x: Tensor, ts: Tensor, *, rtol: float = 1e-5, atol: float = 1e-5, method: Method = "dopri5",
        generator: torch.Generator | None = None, cond: dict[str, Any] | None = None, progress: bool = False,
        callback: Callable[[int, Tensor, Tensor], None] | None = None) -> Tensor:
    """Song et al. Eq. (13) solved adaptively in (y = x/α, u = log σ̃) from t = ts[0] to ts[-2], then x_0 = x̂_0.

    Only the grid's ends are used: the solver chooses its own steps between t_0 = ts[0] and the last
    positive time ts[-2] (fractional t in (0, 1) allowed), and the step into t = 0 is a denoise at ts[-2]
    (σ̃ there is small: logsnr/karras grids end at t = 1, σ̃ ≈ 0.01 for the linear schedule). The NFE is
    whatever the solver used plus one; count it with CountingDenoiser. ``callback(i, x_t, x̂_0)`` sees every
    evaluation; ``generator`` is unused (deterministic); ``progress`` shows a running count of evaluations.
    """
    try:
        from torchdiffeq import odeint
    except ImportError as e:  # optional dependency, kuosan[ode]
        raise MissingDependency("the ode sampler needs torchdiffeq: pip install 'kuosan[ode]'") from e
    if method not in METHODS:
        raise ValueError(f"unknown adaptive ODE method {method!r}; choose one of {', '.join(METHODS)}")
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"ODE tolerances must be positive, got rtol={rtol!r}, atol={atol!r}")
    sched, cond = D.schedule, cond or {}
    check_grid(ts, sched.T)
    B, dt = x.shape[0], x.dtype
    t0, t1 = (torch.tensor(float(v), dtype=torch.float64) for v in (ts[0], ts[-2]))
    lam0, lam1 = sched.log_snr(t0), sched.log_snr(t1)
    alpha = lambda lam: (-0.5 * F.softplus(-lam)).exp()  # noqa: E731 - α = sqrt(sigmoid(λ))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="ode evaluations", leave=False)
    calls = [0]

    def rhs(u: Tensor, y: Tensor) -> Tensor:
        # dy/du = y - x̂_0(α y, t) with λ = -2u; y (B, *D)
        lam = -2.0 * u.to(torch.float64)
        t = sched.t_from_log_snr(lam)
        x_t = alpha(lam).to(dt) * y
        x0 = D(x_t, torch.full((B,), float(t), dtype=dt, device=x.device), **cond)
        if callback is not None:
            callback(calls[0], x_t, x0)
        calls[0] += 1
        if bar is not None:
            bar.update(1)
        return y - x0

    y = x / alpha(lam0).to(dt)
    if t1 < t0:
        u_span = torch.tensor([-0.5 * float(lam0), -0.5 * float(lam1)], dtype=dt, device=x.device)
        y = odeint(rhs, y, u_span, rtol=rtol, atol=atol, method=method)[-1]
    x = alpha(lam1).to(dt) * y
    x0 = D(x, torch.full((B,), float(t1), dtype=dt, device=x.device), **cond)
    if callback is not None:
        callback(calls[0], x, x0)
    if bar is not None:
        bar.close()
    return x0
