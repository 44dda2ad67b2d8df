"""UniPC (Zhao et al. 2023): multistep predictor UniP-p and corrector UniC, data-prediction form in half-log-SNR.

For a step t -> s with h = half_lam_s - half_lam_t (half_lam = λ/2 = log(α/σ), as in DPM-Solver), earlier outputs
x̂_0^{(m)} at half_lam_m = half_lam_t + r_m h (r_m < 0) and D_m = x̂_0^{(m)} - x̂_0,
predictor and corrector both read
    x_s = (σ_s/σ_t) x_t + α_s [ψ_1(h) x̂_0 + B(h) Σ_m a_m D_m / r_m],
with ψ_k as in :mod:`.dpm_solver`. Taylor expansion gives the order conditions
Σ_m a_m r_m^{k-1} = k! ψ_{k+1}(h) / (h^k B(h)), k = 1..n (UniPC's R_n(h) a = φ_n(h)/B(h)), solved
exactly for n >= 2 and replaced by its h -> 0 limit a_1 = 1/2 for n = 1 (as in the paper), which keeps the order.
UniP-p uses the p-1 previous outputs (order p); UniC adds the output at the predicted point (r = 1), which the
next step reuses, so NFE = N and the corrected state is order p+1.

Out of α(t_max) = 0 (h = ∞) the predictor has no history and is DDIM, x_s = α_s x̂_0 + σ_s ε̂, and the corrector
is skipped (B(h) = h of bh1 is infinite there, and a_1 = 1/2 is a small-h rule); an output at half_lam = -∞ has
r_m = -∞ and weight a_m/r_m -> 0 later, so it is left out of the history. Shapes: x (B, *D).
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from ..denoiser import Denoiser
from .common import Callback, after_step, check_order, denoise, steps
from .dpm_solver import half_lam_table, psi
from .grids import check_grid
from .noise import NoiseSource

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


def _update(base: Tensor, a_s: float, b: float, r: list[float], dm: list[Tensor], h: float) -> Tensor:
    """base + α_s B(h) Σ_m a_m D_m / r_m."""
    out = base
    for a_m, r_m, d_m in zip(uni_coeffs(r, h, b) if r else [], r, dm):
        out = out + (a_s * b * a_m / r_m) * d_m
    return out


@torch.no_grad()
def unipc(D: Denoiser, x: Tensor, ts: Tensor, *, order: Literal[1, 2, 3] = 2, corrector: bool = True,
          variant: Variant = "bh2", noise: NoiseSource | None = None, cond: dict[str, Any] | None = None,
          progress: bool = False, callback: Callback | None = None) -> Tensor:
    """UniPC-p (Zhao et al. 2023, x̂_0 form): UniP-p then UniC-p; NFE = N with or without the corrector.

    Step i predicts with min(order, i+1) outputs (warm-up), evaluates x̂_0 at the prediction and corrects with it.
    The step into t = 0 is x_0 = x̂_0 (the output at the last predicted point); the corrector of the step before
    it is skipped, since that corrected state would not be used (x_0 does not depend on it).
    """
    check_order(order, "UniPC")
    if variant not in VARIANTS:
        raise ValueError(f"unknown UniPC variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if not isinstance(corrector, bool):
        raise ValueError(f"corrector must be True or False, got {corrector!r}")
    path = D.path
    hlc = half_lam_table(path)
    grid = check_grid(ts, path)
    lams: list[float] = []  # half_lam of earlier outputs with finite half_lam, newest last (at most order - 1)
    x0s: list[Tensor] = []  # x̂_0 (B, *D) at those times
    x0 = denoise(D, x, grid[0], cond)  # the output at the current point, reused from the previous step
    for i, (t, s) in enumerate(steps(grid, progress, f"unipc{order}")):
        _, s_t, hl_t = hlc(t)
        x0_now = x0
        if s == 0:
            x = x0  # h = ∞: the order-1 step is the denoise
        else:
            a_s, s_s, hl_s = hlc(s)
            h = hl_s - hl_t
            b = b_of_h(variant, h)
            r = [(lm - hl_t) / h for lm in lams]  # previous outputs, r_m < 0
            dm = [xm - x0_now for xm in x0s]
            lin = (s_s / s_t) * x + (a_s * psi(1, h)) * x0_now
            x_pred = _update(lin, a_s, b, r, dm, h)  # UniP-p
            x0 = denoise(D, x_pred, s, cond)  # reused by the corrector and by the next step
            x = x_pred
            if corrector and grid[i + 2] > 0 and math.isfinite(h):
                x = _update(lin, a_s, b, r + [1.0], dm + [x0 - x0_now], h)  # UniC-p
        if math.isfinite(hl_t) and order > 1:
            lams, x0s = (lams + [hl_t])[1 - order:], (x0s + [x0_now])[1 - order:]
        x = after_step(callback, i, x, x0_now)
    return x
