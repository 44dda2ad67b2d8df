"""DPM-Solver++ (Lu et al. 2022b) multistep orders 1-3 and singlestep DPM-Solver-2, data-prediction form.

DPM-Solver works in half the log-SNR: ``half_lam`` = λ/2 = log(α/σ) (kuosan's λ is the full log(α²/σ²)), so
h = half_lam_s - half_lam_t > 0 is a step "in half-log-SNR" and e^{-h} = α_t σ_s/(σ_t α_s). For a step t -> s < t
the PF-ODE has the exact solution (DPM-Solver++ §3, variation of constants)
    x_s = (σ_s/σ_t) x_t + α_s ∫_0^h e^{u-h} x̂_0(half_lam_t + u) du,
and ∫_0^h e^{u-h} u^k/k! du = ψ_{k+1}(h) = h^{k+1} φ_{k+1}(-h), i.e. ψ_1 = 1 - e^{-h}, ψ_{k+1} = h^k/k! - ψ_k.
Each solver puts a polynomial in half_lam through model outputs x̂_0 in place of x̂_0(·).

The ends: into t = 0 (σ = 0, h = ∞) the order-1 step is exactly x_0 = x̂_0(x_t, t), and higher-order terms grow
like h there, so every solver ends on a plain denoise. Out of α(t_max) = 0 (half_lam = -∞, h = ∞) the order-1
step is (σ_s/σ_t) x_t + α_s x̂_0 = α_s x̂_0 + σ_s ε̂, DDIM; an output at half_lam = -∞ gets weight 0 in every
later multistep formula (its weight ~ h/h_prev -> 0), so it is left out of the history. Shapes: x (B, *D).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..paths import Path, f64
from .common import Callback, after_step, check_order, coefficient_table, denoise, steps
from .grids import check_grid
from .noise import NoiseSource


def half_lam_table(path: Path) -> Callable[[float], tuple[float, float, float]]:
    """t -> (α, σ, half_lam = λ/2 = log(α/σ)), memoised; half_lam = +∞ at t = 0 and -∞ where α = 0."""
    coef = coefficient_table(path)

    def at(t: float) -> tuple[float, float, float]:
        a, s, lam = coef(t)
        return a, s, 0.5 * lam

    return at


def psi(k: int, h: float) -> float:
    """ψ_k(h) = ∫_0^h e^{u-h} u^{k-1}/(k-1)! du = Σ_j (-1)^j h^{k+j}/(k+j)!  (h^k φ_k(-h) of DPM-Solver)."""
    if h < 1.0:  # the recurrence cancels catastrophically for small h (ψ_k ~ h^k/k!); the series does not
        return sum((-1) ** j * h ** (k + j) / math.factorial(k + j) for j in range(25))
    out = -math.expm1(-h)
    for j in range(1, k):
        out = h**j / math.factorial(j) - out
    return out


@torch.no_grad()
def dpmpp(D: Denoiser, x: Tensor, ts: Tensor, *, order: Literal[1, 2, 3] = 2, noise: NoiseSource | None = None,
          cond: dict[str, Any] | None = None, progress: bool = False, callback: Callback | None = None) -> Tensor:
    """DPM-Solver++(order M) multistep (Lu et al. 2022b Alg. 2 for 2M; Newton-form order 3); NFE = N.

    Step i uses min(order, i+1) outputs (warm-up); order 1 is DDIM (η = 0). With r = h'/h, h' the previous step:
    2M: x_s = (σ_s/σ_t) x_t + α_s ψ_1 [(1 + 1/(2r)) x̂_0 - 1/(2r) x̂_0'].
    3M: x̂_0(half_lam) ≈ quadratic through the last three outputs (divided differences d1, d2), integrated exactly:
    x_s = (σ_s/σ_t) x_t + α_s [ψ_1 x̂_0 + ψ_2 (d1 + h' d2) + 2ψ_3 d2]; valid on non-uniform grids.
    """
    check_order(order)
    path = D.path
    hlc = half_lam_table(path)
    lams: list[float] = []  # half_lam of earlier outputs with finite half_lam, newest last (at most order - 1)
    x0s: list[Tensor] = []  # x̂_0 (B, *D) at those times
    for i, (t, s) in enumerate(steps(check_grid(ts, path), progress, f"dpm++{order}m")):
        _, s_t, hl_t = hlc(t)
        x0 = denoise(D, x, t, cond)
        if s == 0:
            x = x0  # h = ∞: σ_s/σ_t = 0, α_s ψ_1 = 1
        else:
            a_s, s_s, hl_s = hlc(s)
            h = hl_s - hl_t  # step in half-log-SNR (∞ out of α_t = 0, where the history is empty)
            x_new = (s_s / s_t) * x + (a_s * psi(1, h)) * x0
            if len(x0s) == 1:
                h1 = hl_t - lams[-1]
                x_new = x_new + (a_s * psi(1, h) * h / (2 * h1)) * (x0 - x0s[-1])  # Alg. 2: ψ_1/(2r) (x̂_0 - x̂_0')
            elif len(x0s) == 2:
                h1, h2 = hl_t - lams[-1], lams[-1] - lams[-2]
                d1 = (x0 - x0s[-1]) / h1
                d2 = (d1 - (x0s[-1] - x0s[-2]) / h2) / (h1 + h2)
                x_new = x_new + a_s * (psi(2, h) * (d1 + h1 * d2) + 2 * psi(3, h) * d2)
            x = x_new
        if math.isfinite(hl_t) and order > 1:
            lams, x0s = (lams + [hl_t])[1 - order:], (x0s + [x0])[1 - order:]
        x = after_step(callback, i, x, x0)
    return x


def check_r(r: float) -> None:
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not (0.0 < r <= 1.0):
        raise ValueError(f"the intermediate fraction r must lie in (0, 1], got {r!r}")


@torch.no_grad()
def dpm_solver_2s(D: Denoiser, x: Tensor, ts: Tensor, *, r: float = 0.5, noise: NoiseSource | None = None,
                  cond: dict[str, Any] | None = None, progress: bool = False,
                  callback: Callback | None = None) -> Tensor:
    """DPM-Solver-2 singlestep (Lu et al. 2022a Alg. 1) in data-prediction form (DPM-Solver++(2S), 2022b Alg. 1).

    Per step: u = (σ_u/σ_t) x_t + α_u ψ_1(rh) x̂_0(x_t) at half_lam_u = half_lam_t + r h, then
    x_s = (σ_s/σ_t) x_t + α_s ψ_1(h) [(1 - 1/(2r)) x̂_0(x_t) + 1/(2r) x̂_0(u)]  (r = 1/2: the midpoint value).
    The step into t = 0 is one denoise; the step out of α_t = 0 is DDIM (the limit half_lam_t -> -∞: u lies at
    half_lam = -∞ too, where x̂_0 is x_t-independent). NFE = 2N - 1, or 2N - 2 when α(t_0) = 0 and N >= 2.
    """
    check_r(r)
    path = D.path
    hlc = half_lam_table(path)
    for i, (t, s) in enumerate(steps(check_grid(ts, path), progress, "dpm2s")):
        _, s_t, hl_t = hlc(t)
        x0 = denoise(D, x, t, cond)
        if s == 0:
            x = x0
        else:
            a_s, s_s, hl_s = hlc(s)
            h = hl_s - hl_t
            d = x0
            if math.isfinite(hl_t):
                tu = float(path.t_of_log_snr(f64(2 * (hl_t + r * h))))
                a_u, s_u, hl_u = hlc(tu)
                # the path's own half_lam(t_u): equal to half_lam_t + r·h up to the inversion's rounding
                u = (s_u / s_t) * x + (a_u * psi(1, hl_u - hl_t)) * x0
                d = (1 - 1 / (2 * r)) * x0 + (1 / (2 * r)) * denoise(D, u, tu, cond)
            x = (s_s / s_t) * x + (a_s * psi(1, h)) * d
        x = after_step(callback, i, x, x0)
    return x
