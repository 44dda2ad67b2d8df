"""The probability-flow ODE (Song et al. 2021 Eq. (13)) in the one form every user in kuosan shares.

In VE coordinates y = x/α and u = log σ̃ = -λ/2 the PF-ODE of *any* Gaussian path reads (Karras et al. 2022
Eq. (3) with dσ̃ = σ̃ du)   dy/du = y - x̂_0(α(λ) y, t(λ)),
whose right-hand side stays O(1) from σ̃_max down to σ̃ -> 0 and does not depend on how the path is timed. The
ODE sampler, the ODE likelihood and the exact mixture solution all integrate this function.

A path with α(t_max) = 0 (zero terminal SNR, flow) starts at σ̃ = ∞, where y is undefined: ``enter`` moves the
state from t_max to the finite σ̃ = VE_SIGMA_CAP with one exact-in-the-limit DDIM step (the error in x is
O(Var[x_0]/σ̃_cap²) there, below 1e-6 for unit-scale data).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .broadcast import batch_times
from .denoiser import Denoiser
from .parameterisation import eps_from_x0
from .paths import Path, f64

VE_SIGMA_CAP = 1e3  # largest σ̃ at which the (y, u) form starts


def alpha_of_lam(lam: Tensor) -> Tensor:
    """α on the VP path with log-SNR λ: √sigmoid(λ) (any path's y = x/α is the same under this rescaling)."""
    return torch.sigmoid(f64(lam)).sqrt()


def rhs(D: Denoiser, y: Tensor, u: float | Tensor, cond: dict[str, Any] | None = None) -> tuple[Tensor, Tensor]:
    """(dy/du, x̂_0) at VE state y (B, *D) and u = log σ̃ (a scalar, or per row shaped (B, 1, ..., 1) for solvers
    with one step size per sample); D is queried at the path time t(λ = -2u)."""
    path = D.path
    lam = -2.0 * f64(u)
    t = path.t_of_log_snr(lam)
    a = path.alpha(t)  # the path's own α at that time (its x = α y)
    x0 = D((a.to(y.dtype) * y), batch_times(t, y), **(cond or {}))
    return y - x0, x0


def enter(D: Denoiser, x: Tensor, t: float, cond: dict[str, Any] | None = None) -> tuple[Tensor, float]:
    """(y, u) at which to start integrating from the path state x at time t.

    If σ̃(t) <= VE_SIGMA_CAP this is (x/α, log σ̃) and costs nothing; otherwise one DDIM step (one evaluation)
    takes x to the time with σ̃ = VE_SIGMA_CAP first."""
    path = D.path
    lam = float(path.log_snr(f64(t)))
    u = -0.5 * lam
    if u <= math.log(VE_SIGMA_CAP):
        return x / float(path.alpha(f64(t))), u
    u_cap = math.log(VE_SIGMA_CAP)
    s = float(path.t_of_log_snr(f64(-2 * u_cap)))
    a_t, s_t = float(path.alpha(f64(t))), float(path.sigma(f64(t)))
    a_s, s_s = float(path.alpha(f64(s))), float(path.sigma(f64(s)))
    x0 = D(x, batch_times(t, x), **(cond or {}))
    x_s = a_s * x0 + s_s * eps_from_x0(x, x0, a_t, s_t)
    # the path may not reach σ̃ = VE_SIGMA_CAP exactly (a zero-terminal-SNR chain jumps from σ̃(T-1) to ∞):
    # start from the time the step actually landed on
    return x_s / a_s, -0.5 * float(path.log_snr(f64(s)))


def leave(path: Path, y: Tensor, u: float) -> Tensor:
    """The path state x = α y at the time with log σ̃ = u."""
    return float(path.alpha(path.t_of_log_snr(f64(-2.0 * u)))) * y
