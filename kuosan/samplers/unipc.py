"""UniPC (Zhao et al. 2023): multistep predictor UniP-p and corrector UniC, data-prediction form in λ = log(α/σ).

For a step t -> s with h = λ_s - λ_t (λ = log_snr/2, as in DPM-Solver), earlier outputs x̂_0^{(m)} at
λ_m = λ_t + r_m h (r_m < 0) and D_m = x̂_0^{(m)} - x̂_0, predictor and corrector both read (data prediction)
    x_s = (σ_s/σ_t) x_t + α_s [ψ_1(h) x̂_0 + B(h) Σ_m a_m D_m / r_m],
with ψ_k as in :mod:`.dpm_solver`. Taylor expansion gives the order conditions
Σ_m a_m r_m^{k-1} = k! ψ_{k+1}(h) / (h^k B(h)), k = 1..n (UniPC's R_n(h) a = φ_n(h)/B(h)), solved
exactly for n ≥ 2 and replaced by its h -> 0 limit a_1 = 1/2 for n = 1 (as in the paper), which keeps the order.
UniP-p uses the p-1 previous outputs (order p); UniC adds the output at the predicted point (r = 1), which the
next step reuses, so NFE = N and the corrected state is order p+1. Shapes: x (B, *D).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal, get_args

import torch
from torch import Tensor

from ..denoiser import Denoiser
from .dpm_solver import coeffs, psi
from .grids import check_grid, full, pairs

Variant = Literal["bh1", "bh2"]
VARIANTS: tuple[str, ...] = get_args(Variant)


def b_of_h(variant: str, h: float) -> float:
    """B(h): bh1 = h; bh2 = 1 - e^{-h} (the paper's e^{h}-1 at the data-prediction step -h, sign folded in)."""
    return h if variant == "bh1" else -math.expm1(-h)


def uni_coeffs(r: list[float], h: float, b: float) -> list[float]:
    """a solving Σ_m a_m r_m^{k-1} = k! ψ_{k+1}(h)/(h^k B), k = 1..len(r); a = [1/2] for a single r."""
    n = len(r)
    if n == 1:
        return [0.5]
    R = torch.tensor([[rm ** (k - 1) for rm in r] for k in range(1, n + 1)], dtype=torch.float64)  # (n, n)
    rhs = torch.tensor([math.factorial(k) * psi(k + 1, h) / (h**k * b) for k in range(1, n + 1)], dtype=torch.float64)
    return torch.linalg.solve(R, rhs).tolist()


@torch.no_grad()
def unipc(D: Denoiser, x: Tensor, ts: Tensor, *, order: Literal[1, 2, 3] = 2, corrector: bool = True,
          variant: Variant = "bh2", generator: torch.Generator | None = None, cond: dict[str, Any] | None = None,
          progress: bool = False, callback: Callable[[int, Tensor, Tensor], None] | None = None) -> Tensor:
    """UniPC-p (Zhao et al. 2023, x̂_0 form): UniP-p then UniC-p; NFE = N with or without the corrector.

    Step i predicts with min(order, i+1) outputs (warm-up), evaluates x̂_0 at the prediction and corrects with it.
    The step into t = 0 is x_0 = x̂_0 (the output at the last predicted point); the corrector of the step before
    it is skipped, since that corrected state would not be used (x_0 does not depend on it).
    """
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise ValueError(f"UniPC order must be 1, 2 or 3, got {order!r}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown UniPC variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    grid, sched, cond = check_grid(ts, D.schedule.T), D.schedule, cond or {}
    lams: list[float] = []  # λ of stored outputs, newest last (the newest is at the current point)
    x0s: list[Tensor] = []  # x̂_0 (B, *D)
    x0 = D(x, full(x, grid[0]), **cond)
    for i, (t, s) in enumerate(pairs(grid, progress)):
        _, s_t, lam_t = coeffs(sched, t)
        lams, x0s = (lams + [lam_t])[-order:], (x0s + [x0])[-order:]
        if s == 0:
            x_out, x0_now = x0, x0  # h = inf: the order-1 step is the denoise
        else:
            a_s, s_s, lam_s = coeffs(sched, s)
            h = lam_s - lam_t
            b = b_of_h(variant, h)
            r = [(lm - lam_t) / h for lm in lams[:-1]]  # previous outputs, r_m < 0
            dm = [xm - x0 for xm in x0s[:-1]]
            lin = (s_s / s_t) * x + (a_s * psi(1, h)) * x0
            x_pred = lin
            for a_m, r_m, d_m in zip(uni_coeffs(r, h, b) if r else [], r, dm):
                x_pred = x_pred + (a_s * b * a_m / r_m) * d_m  # UniP-p
            x0_now, x0 = x0, D(x_pred, full(x, s), **cond)  # reused by the corrector and by the next step
            x_out = x_pred
            if corrector and grid[i + 2] > 0:
                x_out = lin
                for a_m, r_m, d_m in zip(uni_coeffs(r + [1.0], h, b), r + [1.0], dm + [x0 - x0_now]):
                    x_out = x_out + (a_s * b * a_m / r_m) * d_m  # UniC-p
        x = x_out
        if callback is not None:
            callback(i, x, x0_now)
    return x
