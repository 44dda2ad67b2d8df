"""Reverse-time SDE samplers on any path: Euler–Maruyama (Song et al. 2021 Eq. (6)) and predictor–corrector
(Song et al. 2021 Algorithm 5).

The forward SDE dx = f(t) x dt + g(t) dw with f = dlog α/dt and g² = dσ²/dt - 2fσ² (``paths.sde_coefficients``;
Kingma et al. 2021 App. A) has exactly the path's marginals. On the discrete chain log ᾱ is linear between
integers, so f = -½β(t), g² = β(t) with β(t) = -dlog ᾱ/dt = -log(1 - β_k) on (k-1, k]: the VP SDE of the first
half of kuosan, unchanged. Its reverse is dx = [f x - g² ∇log p_t(x)] dt + g dw̄ (Eq. (6)),
score ∇log p_t = -ε̂/σ.

Out of α(t) = 0 (zero terminal SNR, flow: f = -∞, g² = ∞) an Euler–Maruyama or reverse-diffusion step is
undefined; that step is the posterior step q(x_s|x_t, x̂_0) = N(α_s x̂_0, σ_s² I) there (DDIM η = 1, the exact
solution of the reverse SDE over the step when x̂_0 is held fixed: Lu et al. 2022b's SDE-DPM-Solver-1), and the
corrector does nothing there (its step size carries the factor α_i = 0; p_t is exactly N(0, σ² I)).
Shapes: x (B, *D).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal, get_args

import torch
from torch import Tensor

from ..broadcast import batch_times
from ..denoiser import Denoiser
from ..forward import jump_variance, posterior
from ..paths import Path, coefficients, f64, sde_coefficients
from .common import Callback, after_step, coefficient_table, denoise, steps
from .grids import check_grid
from .noise import NoiseSource, noise_like

Predictor = Literal["reverse_diffusion", "euler_maruyama"]
PREDICTORS: tuple[str, ...] = get_args(Predictor)
CORRECTOR_DT_STEPS = 1000  # Δ of the corrector's α_i on continuous paths: one step of a 1000-step discretisation


Coef = Callable[[float], "tuple[float, float, float]"]  # t -> (α, σ, λ), memoised per sampler call


def rates(path: Path, t: float) -> tuple[float, float]:
    """(f, g²) of the forward SDE at t as floats; (-∞, ∞) where α(t) = 0."""
    if coefficients(path, t)[0] == 0:
        return -math.inf, math.inf
    f, g2 = sde_coefficients(path, f64(t))
    return float(f), float(g2)


def _score(D: Denoiser, x: Tensor, t: float, coef: Coef, cond: dict[str, Any] | None) -> tuple[Tensor, Tensor]:
    """(x̂_0, score = -ε̂/σ = -(x - α x̂_0)/σ²) at (x, t); both (B, *D)."""
    a, s, _ = coef(t)
    x0 = denoise(D, x, t, cond)
    return x0, -(x - a * x0) / s**2


def posterior_step(path: Path, x: Tensor, x0: Tensor, t: float, s: float, z: Tensor) -> Tensor:
    """x_s ~ q(x_s|x_t, x̂_0) (Ho et al. Eqs. (6)-(7) for any jump), with standard normal z."""
    p = posterior(path, x0, x, batch_times(t, x), batch_times(s, x))
    return p.mean + p.var.sqrt().to(x).reshape(-1, *([1] * (x.ndim - 1))) * z


def em_step(path: Path, coef: Coef, x: Tensor, score: Tensor, t: float, s: float, z: Tensor) -> Tensor:
    """One Euler–Maruyama step of Eq. (6) backwards from t to s: x + h(-f x + g² ∇log p) + √(g² h) z."""
    f, g2 = rates(path, t)
    h = t - s
    return x + h * (-f * x + g2 * score) + math.sqrt(g2 * h) * z


def reverse_diffusion_step(path: Path, coef: Coef, x: Tensor, score: Tensor, t: float, s: float,
                           z: Tensor) -> Tensor:
    """Song et al. Eq. (46) for the forward jump x_t = a x_s + √b z, a = α_t/α_s, b = σ²_{t|s}:
    x_s = (2 - a) x_t + b ∇log p + √b z (b = 1 - a² on a VP path, σ_t² - σ_s² on VE)."""
    a = coef(t)[0] / coef(s)[0]
    b = float(jump_variance(path, f64(t), f64(s)))
    return (2 - a) * x + b * score + math.sqrt(b) * z


_PREDICT: dict[str, Callable[[Path, Coef, Tensor, Tensor, float, float, Tensor], Tensor]] = {
    "reverse_diffusion": reverse_diffusion_step, "euler_maruyama": em_step}


def _step(path: Path, coef: Coef, predictor: str, x: Tensor, x0: Tensor, score: Tensor, t: float, s: float,
          noise: NoiseSource | None) -> Tensor:
    """The predictor step t -> s: x̂_0 into s = 0, the posterior step out of α_t = 0, else ``predictor``."""
    if s == 0:
        return x0
    z = noise_like(noise, x)
    if coef(t)[0] == 0:
        return posterior_step(path, x, x0, t, s, z)
    return _PREDICT[predictor](path, coef, x, score, t, s, z)


@torch.no_grad()
def sde(D: Denoiser, x: Tensor, ts: Tensor, *, noise: NoiseSource | None = None, cond: dict[str, Any] | None = None,
        progress: bool = False, callback: Callback | None = None) -> Tensor:
    """Euler–Maruyama on Song et al. Eq. (6) over the grid ((f, g²) at the step's start); last step x_0 = x̂_0."""
    path = D.path
    coef = coefficient_table(path)
    for i, (t, s) in enumerate(steps(check_grid(ts, path), progress, "sde")):
        x0, score = _score(D, x, t, coef, cond)
        x = _step(path, coef, "euler_maruyama", x, x0, score, t, s, noise)
        x = after_step(callback, i, x, x0)
    return x


def corrector_alpha(path: Path, t: float) -> float:
    """α_i of Algorithm 5: the path's own one-step decay α(t_i)²/α(t_i - Δ)² = exp(2 f(t_i) Δ) in [0, 1] (0 where
    α = 0), Δ one chain step (so α_i = 1 - β_i exactly) or t_max/1000 on continuous paths."""
    f, _ = rates(path, t)
    dt = 1.0 if getattr(path, "T", None) is not None else path.t_max / CORRECTOR_DT_STEPS
    return math.exp(2 * f * dt)


def _check_pc(snr: float, corrector_steps: int, predictor: str) -> None:
    if isinstance(snr, bool) or not isinstance(snr, (int, float)) or not (math.isfinite(snr) and snr > 0):
        raise ValueError(f"the corrector's target signal-to-noise ratio snr must be a finite number > 0, got {snr!r}")
    if not isinstance(corrector_steps, int) or isinstance(corrector_steps, bool) or corrector_steps < 0:
        raise ValueError(f"corrector_steps must be an integer >= 0, got {corrector_steps!r}")
    if predictor not in PREDICTORS:
        raise ValueError(f"unknown predictor {predictor!r}; choose one of {', '.join(PREDICTORS)}")


@torch.no_grad()
def pc(D: Denoiser, x: Tensor, ts: Tensor, *, snr: float = 0.16, corrector_steps: int = 1,
       predictor: Predictor = "reverse_diffusion", noise: NoiseSource | None = None,
       cond: dict[str, Any] | None = None, progress: bool = False, callback: Callback | None = None) -> Tensor:
    """Song et al. Algorithm 5: at each t_i, M Langevin corrector steps, then a predictor step to t_{i+1}.

    Corrector: x <- x + ε g + √(2ε) z, g = -ε̂/σ, ε = 2 α_i (r ‖z‖/‖g‖)² with r = ``snr`` and α_i
    from :func:`corrector_alpha` (always in [0, 1]: the first half used 1 - β(t) with the rate β(t), negative for
    β_k > 0.63, which gave NaN on the cosine chain). ‖z‖² is replaced by its mean d and ‖g‖² by d/σ_t², the
    upper bound of E‖∇log p_t‖² = E‖ε̂‖²/σ² (so ε = 2 α_i (r σ_t)², the σ²-proportional step of
    Song & Ermon 2019 Alg. 1): a per-sample ‖g‖ near a mode gives unbounded steps, and the batch mean of Song et
    al.'s code would tie each sample to its batch. The last step into t = 0 is a denoise. NFE = N·(M + 1), M fewer when
    α(t_0) = 0 (no corrector there).
    """
    _check_pc(snr, corrector_steps, predictor)
    path = D.path
    coef = coefficient_table(path)
    for i, (t, s) in enumerate(steps(check_grid(ts, path), progress, "pc")):
        if coef(t)[0] > 0:
            eps = 2 * corrector_alpha(path, t) * (snr * coef(t)[1]) ** 2  # Langevin step size ε
            for _ in range(corrector_steps):  # Langevin MCMC targeting p_t
                _, g = _score(D, x, t, coef, cond)
                x = x + eps * g + math.sqrt(2 * eps) * noise_like(noise, x)
        x0, score = _score(D, x, t, coef, cond)
        x = _step(path, coef, predictor, x, x0, score, t, s, noise)
        x = after_step(callback, i, x, x0)
    return x
