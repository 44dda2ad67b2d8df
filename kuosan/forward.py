"""The forward process q(x_t|x_0), its posterior q(x_s|x_t,x_0), and conversions between eps, x0 and v.

Shapes: x0, x_t, eps are (B, *D); t and s are (B,) or scalars; per-sample coefficients are broadcast
over the data dimensions with :func:`expand`.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

import torch
from torch import Tensor

from .schedules import Schedule

Prediction = Literal["eps", "x0", "v"]
PREDICTIONS: tuple[str, ...] = get_args(Prediction)


def expand(c: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample coefficient (B,) or scalar to broadcast against ``like`` (B, *D)."""
    c = torch.as_tensor(c, device=like.device)
    if c.ndim == 0:
        return c.to(like.dtype)
    return c.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def q_sample(sched: Schedule, x0: Tensor, t: Tensor, eps: Tensor | None = None) -> Tensor:
    """Ho et al. Eq. (4), reparameterised: x_t = sqrt(ᾱ_t) x_0 + sqrt(1-ᾱ_t) eps."""
    eps = torch.randn_like(x0) if eps is None else eps
    return expand(sched.alpha(t), x0) * x0 + expand(sched.sigma(t), x0) * eps


class Posterior(NamedTuple):
    mean: Tensor  # (B, *D)
    var: Tensor  # (B,) per-sample variance β̃ (isotropic)
    log_var_clipped: Tensor  # (B,) log β̃, with t = 1 (β̃ = 0) replaced by the next step's value


def posterior(sched: Schedule, x0: Tensor, x_t: Tensor, t: Tensor, s: Tensor | None = None) -> Posterior:
    """q(x_s|x_t,x_0) for any s < t (Ho et al. Eqs. (6)-(7) when s = t-1; seed 000 Thm 2.1).

    With α_{t|s} = α_t/α_s and σ²_{t|s} = σ_t² - α_{t|s}² σ_s²:
    mean = α_{t|s} σ_s²/σ_t² · x_t + α_s σ²_{t|s}/σ_t² · x_0,   var = σ²_{t|s} σ_s²/σ_t².
    """
    t = torch.as_tensor(t, device=x_t.device)
    s = t - 1 if s is None else torch.as_tensor(s, device=x_t.device)
    f64 = lambda u: u.to(torch.float64)  # noqa: E731 - coefficients in float64, cast once at the end
    la_t, la_s = sched.log_alpha_bar(f64(t)), sched.log_alpha_bar(f64(s))
    sig2_t, sig2_s = -torch.expm1(la_t), -torch.expm1(la_s)
    a_ts2 = (la_t - la_s).exp()  # α_{t|s}² = ᾱ_t/ᾱ_s
    sig2_ts = -torch.expm1(la_t - la_s)  # σ²_{t|s} = 1 - ᾱ_t/ᾱ_s (using σ_t² = 1 - ᾱ_t)
    c_xt = a_ts2.sqrt() * sig2_s / sig2_t
    c_x0 = (0.5 * la_s).exp() * sig2_ts / sig2_t
    var = sig2_ts * sig2_s / sig2_t
    mean = expand(c_xt, x_t) * x_t + expand(c_x0, x_t) * x0
    # Nichol & Dhariwal: β̃_1 = 0 (log = -inf), so the clipped log-variance takes the next jump's β̃ there.
    nxt = posterior_variance(sched, t + (t - s), t)
    log_var = torch.where(var > 0, var.clamp_min(1e-300).log(), nxt.clamp_min(1e-300).log())
    return Posterior(mean, var.to(x_t.dtype), log_var.to(x_t.dtype))


def posterior_variance(sched: Schedule, t: Tensor, s: Tensor) -> Tensor:
    """β̃ for the jump t -> s: (1 - ᾱ_t/ᾱ_s)(1 - ᾱ_s)/(1 - ᾱ_t), float64."""
    la_t, la_s = sched.log_alpha_bar(t.to(torch.float64)), sched.log_alpha_bar(s.to(torch.float64))
    return -torch.expm1(la_t - la_s) * -torch.expm1(la_s) / -torch.expm1(la_t)


def jump_variance(sched: Schedule, t: Tensor, s: Tensor) -> Tensor:
    """σ²_{t|s} = 1 - ᾱ_t/ᾱ_s, the forward variance of the jump s -> t (β_t when s = t-1), float64."""
    return -torch.expm1(sched.log_alpha_bar(t.to(torch.float64)) - sched.log_alpha_bar(s.to(torch.float64)))


# --- conversions between parameterisations; α, σ broadcastable against x (VP: α² + σ² = 1) -------------
def eps_to_x0(x_t: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """x̂_0 = (x_t - σ ε̂)/α."""
    return (x_t - sigma * eps) / alpha


def x0_to_eps(x_t: Tensor, x0: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """ε̂ = (x_t - α x̂_0)/σ."""
    return (x_t - alpha * x0) / sigma


def v_to_x0(x_t: Tensor, v: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """Salimans & Ho 2022: v = α ε - σ x_0, so x̂_0 = α x_t - σ v̂ (VP only)."""
    return alpha * x_t - sigma * v


def v_target(x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """v = α ε - σ x_0."""
    return alpha * eps - sigma * x0


def to_x0(pred: Tensor, kind: str, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """Turn a network output of parameterisation ``kind`` into x̂_0."""
    if kind == "eps":
        return eps_to_x0(x_t, pred, alpha, sigma)
    if kind == "x0":
        return pred
    if kind == "v":
        return v_to_x0(x_t, pred, alpha, sigma)
    raise ValueError(f"unknown prediction {kind!r}; choose one of {', '.join(PREDICTIONS)}")
