"""DPM-Solver++ (Lu et al. 2022b) multistep orders 1-3 and singlestep DPM-Solver-2, data-prediction form in λ.

With λ = log(α/σ) = log_snr/2 (DPM-Solver's half-log-SNR, so e^{-h} = α_t σ_s/(σ_t α_s)) and
h = λ_s - λ_t > 0 for a step t -> s < t, the PF-ODE has the exact solution (DPM-Solver++ §3, variation of constants)
    x_s = (σ_s/σ_t) x_t + α_s ∫_0^h e^{u-h} x̂_0(λ_t + u) du,
and ∫_0^h e^{u-h} u^k/k! du = ψ_{k+1}(h) = h^{k+1} φ_{k+1}(-h), i.e. ψ_1 = 1 - e^{-h}, ψ_{k+1} = h^k/k! - ψ_k.
Each solver puts a polynomial in λ through model outputs x̂_0 in place of x̂_0(λ). The step into t = 0
(σ = 0, λ = +inf, h = inf) is the order-1 step, whose limit is exactly x_0 = x̂_0(x_t, t): higher-order terms
grow like h there, so every solver ends on a plain denoise. Shapes: x (B, *D); coefficients are floats.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..schedules import Schedule
from .grids import check_grid, full, pairs

Callback = Callable[[int, Tensor, Tensor], None]


def coeffs(sched: Schedule, t: float) -> tuple[float, float, float]:
    """(α, σ, λ = log(α/σ) = log_snr/2) at time t as floats (float64 schedule); λ = +inf at t = 0."""
    tt = torch.tensor(t, dtype=torch.float64)
    return sched.alpha(tt).item(), sched.sigma(tt).item(), 0.5 * sched.log_snr(tt).item()


def psi(k: int, h: float) -> float:
    """ψ_k(h) = ∫_0^h e^{u-h} u^{k-1}/(k-1)! du = Σ_j (-1)^j h^{k+j}/(k+j)!  (h^k φ_k(-h) of DPM-Solver)."""
    if h < 1.0:  # the recurrence cancels catastrophically for small h (ψ_k ~ h^k/k!); the series does not
        return sum((-1) ** j * h ** (k + j) / math.factorial(k + j) for j in range(25))
    out = -math.expm1(-h)
    for j in range(1, k):
        out = h**j / math.factorial(j) - out
    return out


def _check_order(order: int) -> None:
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise ValueError(f"solver order must be 1, 2 or 3, got {order!r}")


@torch.no_grad()
def dpmpp(D: Denoiser, x: Tensor, ts: Tensor, *, order: Literal[1, 2, 3] = 2,
          generator: torch.Generator | None = None, cond: dict[str, Any] | None = None, progress: bool = False,
          callback: Callback | None = None) -> Tensor:
    """DPM-Solver++(order M) multistep (Lu et al. 2022b Alg. 2 for 2M; Newton-form order 3); NFE = N.

    Step i uses min(order, i+1) outputs (warm-up), the last step into t = 0 is x̂_0. Order 1 is DDIM (η = 0).
    2M: x_s = (σ_s/σ_t) x_t + α_s ψ_1 [(1 + 1/(2r)) x̂_0 - 1/(2r) x̂_0'], r = h'/h, h' the previous step.
    3M: x̂_0(λ) ≈ quadratic through the last three outputs (divided differences d1, d2 in λ), integrated
    exactly: x_s = (σ_s/σ_t) x_t + α_s [ψ_1 x̂_0 + ψ_2 (d1 + h' d2) + 2ψ_3 d2]; valid on non-uniform grids.
    """
    _check_order(order)
    grid, sched, cond = check_grid(ts, D.schedule.T), D.schedule, cond or {}
    lams: list[float] = []  # λ of the stored outputs, newest last
    x0s: list[Tensor] = []  # x̂_0 (B, *D) at those λ
    for i, (t, s) in enumerate(pairs(grid, progress)):
        _, s_t, lam_t = coeffs(sched, t)
        x0 = D(x, full(x, t), **cond)
        lams, x0s = (lams + [lam_t])[-order:], (x0s + [x0])[-order:]
        if s == 0:
            x = x0  # h = inf: σ_s/σ_t = 0, α_s ψ_1 = 1
        else:
            a_s, s_s, lam_s = coeffs(sched, s)
            h = lam_s - lam_t
            k = len(x0s)
            x = (s_s / s_t) * x + (a_s * psi(1, h)) * x0
            if k == 2:
                h1 = lam_t - lams[-2]
                x = x + (a_s * psi(1, h) * h / (2 * h1)) * (x0 - x0s[-2])  # Alg. 2: ψ_1/(2r) (x̂_0 - x̂_0')
            elif k == 3:
                h1, h2 = lam_t - lams[-2], lams[-2] - lams[-3]
                d1 = (x0 - x0s[-2]) / h1
                d2 = (d1 - (x0s[-2] - x0s[-3]) / h2) / (h1 + h2)
                x = x + a_s * (psi(2, h) * (d1 + h1 * d2) + 2 * psi(3, h) * d2)
        if callback is not None:
            callback(i, x, x0)
    return x


@torch.no_grad()
def dpm_solver_2s(D: Denoiser, x: Tensor, ts: Tensor, *, r: float = 0.5,
                  generator: torch.Generator | None = None, cond: dict[str, Any] | None = None,
                  progress: bool = False, callback: Callback | None = None) -> Tensor:
    """DPM-Solver-2 singlestep (Lu et al. 2022a Alg. 1) in data-prediction form (DPM-Solver++(2S), 2022b Alg. 1).

    Per step: u = (σ_u/σ_t) x_t + α_u ψ_1(rh) x̂_0(x_t) at λ_u = λ_t + r h, then
    x_s = (σ_s/σ_t) x_t + α_s ψ_1(h) [(1 - 1/(2r)) x̂_0(x_t) + 1/(2r) x̂_0(u)]  (r = 1/2: the λ-midpoint value).
    NFE = 2 per step, except the last step into t = 0, which is one denoise: NFE = 2N - 1.
    """
    if not (0.0 < r <= 1.0):
        raise ValueError(f"the intermediate fraction r must lie in (0, 1], got {r!r}")
    grid, sched, cond = check_grid(ts, D.schedule.T), D.schedule, cond or {}
    for i, (t, s) in enumerate(pairs(grid, progress)):
        _, s_t, lam_t = coeffs(sched, t)
        x0 = D(x, full(x, t), **cond)
        if s == 0:
            x = x0
        else:
            a_s, s_s, lam_s = coeffs(sched, s)
            h = lam_s - lam_t
            # the schedule's λ is log_snr = 2·log(α/σ)
            tu = sched.t_from_log_snr(torch.tensor(2 * (lam_t + r * h), dtype=torch.float64)).item()
            a_u, s_u, lam_u = coeffs(sched, tu)
            # use the schedule's own λ(t_u) (equal to λ_t + r·h up to the inversion's rounding)
            u = (s_u / s_t) * x + (a_u * psi(1, lam_u - lam_t)) * x0
            x0_u = D(u, full(x, tu), **cond)
            d = (1 - 1 / (2 * r)) * x0 + (1 / (2 * r)) * x0_u
            x = (s_s / s_t) * x + (a_s * psi(1, h)) * d
        if callback is not None:
            callback(i, x, x0)
    return x
