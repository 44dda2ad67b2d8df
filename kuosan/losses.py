"""Training losses: L_simple (Ho et al. 2020 Eq. (14)) and its weighted variants, for eps/x0/v targets.

Every weighting is defined on the eps-equivalent error ||ε - ε̂||² and converted to the chosen target,
so "vlb" gives the true variational-bound term whatever the network predicts:
||x̂_0 - x_0||² = ||ε̂ - ε||²/SNR and ||v̂ - v||² = ||ε̂ - ε||²·(1 + SNR)/SNR.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from .forward import expand, q_sample, to_x0, v_target
from .schedules import Schedule
from .variance import hybrid_vlb_term

LossType = Literal["l2", "l1", "huber"]
Weighting = Literal["none", "vlb", "min_snr"]
LOSS_TYPES: tuple[str, ...] = get_args(LossType)
WEIGHTINGS: tuple[str, ...] = get_args(Weighting)


def vlb_weight(sched: Schedule, t: Tensor) -> Tensor:
    """Seed 000 §2.3.4: λ_t = β_t² / (2 β̃_t α_t (1 - ᾱ_t)) = (SNR(t-1)/SNR(t) - 1)/2 for t ≥ 2.

    At t = 1 (β̃_1 = 0) the L_0 term of a Gaussian decoder with variance β_1 gives 1/(2 α_1).
    t: (B,) integer times; returns (B,) float64 weights on ||ε - ε̂||² (nats per dimension).
    """
    t = t.to(torch.float64)
    la_t, la_s = sched.log_alpha_bar(t), sched.log_alpha_bar(t - 1)
    beta = -torch.expm1(la_t - la_s)  # 1 - ᾱ_t/ᾱ_{t-1}
    alpha_t = 1 - beta
    beta_tilde = beta * -torch.expm1(la_s) / -torch.expm1(la_t)
    w = beta**2 / (2 * beta_tilde.clamp_min(1e-300) * alpha_t * -torch.expm1(la_t))
    return torch.where(t <= 1, 1 / (2 * alpha_t), w)


def eps_weight(sched: Schedule, t: Tensor, weighting: str, gamma: float = 5.0) -> Tensor:
    """Weight on the eps-equivalent squared error, (B,) float64."""
    if weighting == "none":
        return torch.ones_like(t, dtype=torch.float64)
    if weighting == "vlb":
        return vlb_weight(sched, t)
    if weighting == "min_snr":  # Hang et al. 2023: min(SNR, γ)/SNR on the eps error
        snr = sched.snr(t.to(torch.float64))
        return snr.clamp(max=gamma) / snr
    raise ValueError(f"unknown weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")


def target_scale(sched: Schedule, t: Tensor, target: str) -> Tensor:
    """How much larger ||ε̂ - ε||² is than the target's own squared error: 1, SNR or SNR/(1+SNR)."""
    snr = sched.snr(t.to(torch.float64))
    return {"eps": torch.ones_like(snr), "x0": snr, "v": snr / (1 + snr)}[target]


def distance(pred: Tensor, target: Tensor, loss_type: str, huber_delta: float = 1.0) -> Tensor:
    """Per-sample mean over data dimensions: (B, *D) -> (B,)."""
    if loss_type == "l2":
        d = (pred - target) ** 2
    elif loss_type == "l1":
        d = (pred - target).abs()
    elif loss_type == "huber":
        d = F.huber_loss(pred, target, reduction="none", delta=huber_delta)
    else:
        raise ValueError(f"unknown loss type {loss_type!r}; choose one of {', '.join(LOSS_TYPES)}")
    return d.flatten(1).mean(1)


class LossTerms(NamedTuple):
    total: Tensor  # (B,) per-sample loss to average and back-propagate
    vlb: Tensor | None  # (B,) the hybrid loss's L_vlb term in nats/dim (detached), None without one


def diffusion_loss(net_fn: Any, sched: Schedule, x0: Tensor, *, target: str = "eps", loss_type: str = "l2",
                   weighting: str = "none", gamma: float = 5.0, t: Tensor | None = None, eps: Tensor | None = None,
                   generator: torch.Generator | None = None, cond: dict[str, Any] | None = None,
                   hybrid_lambda: float = 0.0, bits: int | None = None) -> LossTerms:
    """Ho et al. Algorithm 1 with a weighting: t ~ U{1..T}, x_t = α x_0 + σ ε, loss on the network's target.

    net_fn(x_t, t) returns the raw prediction (B, C, ...), or (B, 2C, ...) with a learned variance v in the
    second half; then ``hybrid_lambda`` > 0 adds λ·L_vlb (Nichol & Dhariwal 2021 §3.1, λ = 0.001), which
    trains v only (the mean is stopped inside the term).
    """
    B, C = x0.shape[0], x0.shape[1]
    if t is None:
        t = torch.randint(1, sched.T + 1, (B,), device=x0.device, generator=generator)
    if eps is None:
        eps = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    x_t = q_sample(sched, x0, t, eps)
    raw = net_fn(x_t, t.to(torch.float32), **(cond or {}))
    pred = raw[:, :C]
    a, s = expand(sched.alpha(t), x0), expand(sched.sigma(t), x0)
    if target == "eps":
        y = eps
    elif target == "x0":
        y = x0
    elif target == "v":
        y = v_target(x0, eps, a, s)
    else:
        raise ValueError(f"unknown target {target!r}; choose eps, x0 or v")
    loss = distance(pred.float(), y.float(), loss_type)
    if weighting != "none":
        loss = loss * (eps_weight(sched, t, weighting, gamma) * target_scale(sched, t, target)).to(loss.dtype)
    if hybrid_lambda <= 0:
        return LossTerms(loss, None)
    if raw.shape[1] != 2 * C:
        raise ValueError("the hybrid loss needs a network with a learned variance (2x output channels)")
    x0_hat = to_x0(pred.float(), target, x_t.float(), a.float(), s.float())
    vlb = hybrid_vlb_term(sched, x0.float(), x_t.float(), t, x0_hat, raw[:, C:].float(), bits=bits)
    return LossTerms(loss + hybrid_lambda * vlb, vlb.detach())
