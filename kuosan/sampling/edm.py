"""Karras et al. 2022 (EDM) deterministic Euler and Heun samplers (Algorithm 1), on any path.

Every Gaussian path becomes VE under y = x/α, σ̃ = σ/α = exp(-λ/2): the PF-ODE reads
dy/dσ̃ = (y - x̂_0)/σ̃ = ε̂ (Karras et al. §2 with s = 1), where x̂_0 = D(α y, t) is the path's denoiser at
the matching t. The steps are written back on x = α y so that nothing divides by α:
  Euler  y_s = y_t + (σ̃_s - σ̃_t) ε̂
         <=>  x_s = α_s x̂_0 + σ_s ε̂  (DDIM η = 0, Song et al. 2021 Eq. (14));
  Heun   y_s = y_t + (σ̃_s - σ̃_t)(ε̂ + ε̂')/2
         <=>  x_s = x_s^{Euler} + ½ α_s (σ̃_s - σ̃_t)(ε̂' - ε̂),
ε̂' the slope at the Euler point. The step out of σ̃ = ∞ (α(t_max) = 0) is the Euler step, which is finite there;
Heun's correction is not (σ̃_s - σ̃_t = -∞), and the step into σ̃ = 0 has none (Alg. 1: "if σ_{i+1} ≠ 0").
Shapes: x (B, *D).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..denoiser import Denoiser
from .common import Callback, after_step, coefficient_table, denoise, eps_hat, steps
from .grids import check_grid
from .noise import NoiseSource


# Heun's trapezoid in σ̃ spans the whole step: out of σ̃_t = 2·10⁴ (the discrete cosine chain's t = T) into
# σ̃_s ~ 1 its correction ½(σ̃_s - σ̃_t)(ε̂' - ε̂) is 10⁴ times an O(1) difference, and 8 steps gave
# samples of norm ~300 with the exact denoiser. Above this σ̃ the step is Euler's, as out of σ̃ = ∞ (where Euler
# is exact in the limit); Karras et al.'s own grids start at σ̃ = 80 and are unaffected
# (the same cap as kuosan.pf_ode's start).
HEUN_SIGMA_MAX = 1e3


@torch.no_grad()
def euler(D: Denoiser, x: Tensor, ts: Tensor, *, noise: NoiseSource | None = None, cond: dict[str, Any] | None = None,
          progress: bool = False, callback: Callback | None = None) -> Tensor:
    """Karras Alg. 1 without the correction: y_s = y_t + (σ̃_s - σ̃_t) ε̂, on x; NFE = N."""
    path = D.path
    coef = coefficient_table(path)
    for i, (t, s) in enumerate(steps(check_grid(ts, path), progress, "euler")):
        a_t, s_t, _ = coef(t)
        x0 = denoise(D, x, t, cond)
        if s == 0:
            x = x0  # σ̃_s = 0: the Euler step lands exactly on x̂_0
        else:
            a_s, s_s, _ = coef(s)
            x = a_s * x0 + s_s * eps_hat(x, x0, a_t, s_t)
        x = after_step(callback, i, x, x0)
    return x


@torch.no_grad()
def heun(D: Denoiser, x: Tensor, ts: Tensor, *, noise: NoiseSource | None = None, cond: dict[str, Any] | None = None,
         progress: bool = False, callback: Callback | None = None) -> Tensor:
    """Karras Alg. 1 (deterministic Heun, 2nd order): Euler, then the trapezoidal correction except into σ̃ = 0
    and out of σ̃ > HEUN_SIGMA_MAX (σ̃ = ∞ included). NFE = 2N - 1, or 2N - 2 when σ̃(t_0) > HEUN_SIGMA_MAX and
    N >= 2."""
    path = D.path
    coef = coefficient_table(path)
    for i, (t, s) in enumerate(steps(check_grid(ts, path), progress, "heun")):
        a_t, s_t, _ = coef(t)
        x0 = denoise(D, x, t, cond)
        if s == 0:
            x = x0
        else:
            a_s, s_s, _ = coef(s)
            e = eps_hat(x, x0, a_t, s_t)  # dy/dσ̃ at (y_t, σ̃_t)
            x_e = a_s * x0 + s_s * e  # the Euler point, on x
            if a_t > 0 and s_t <= HEUN_SIGMA_MAX * a_t:  # σ̃_t <= the cap: see HEUN_SIGMA_MAX
                e_e = eps_hat(x_e, denoise(D, x_e, s, cond), a_s, s_s)  # dy/dσ̃ there
                x_e = x_e + (0.5 * a_s * (s_s / a_s - s_t / a_t)) * (e_e - e)
            x = x_e
        x = after_step(callback, i, x, x0)
    return x

