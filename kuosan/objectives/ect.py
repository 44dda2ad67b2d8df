"""Easy Consistency Tuning's noise-level pairs and weight (Geng et al. 2024, "Consistency models made easy").

ECT trains f(x_t, t) ≈ sg f(x_r, r) on one noise direction (x_t = x_0 + t ε, x_r = x_0 + r ε, VE levels t = σ̃_t,
r = σ̃_r) with r drawn from t by the mapping function

    r/t = 1 - q^{-a} n(t),   n(t) = 1 + k·sigmoid(-b t),   a = ⌊step/d⌋ + 1,

so Δt = t - r shrinks by q every d steps (Δt = t, i.e. plain denoising, is stage 0, the pretrained diffusion model
ECT starts from). This is ``ECMLoss.t_to_r_sigmoid`` of the reference code (github.com/locuslab/ect,
training/loss.py: decay = 1/q^(stage+1), stage = tick // double_ticks), with its defaults q = 2, k = 8, b = 1
(ct_train.py) and 8 stages over a run (run_ecm.sh: 2000 ticks, a stage every 250). The reference clamps r at 0 and
uses x_0 itself as the target there; here r is clamped at σ_min, where the consistency parameterisation's
boundary condition makes f(x_r, σ_min) = x_r = x_0 + σ_min ε (the same target up to σ_min).

The weight is the reference's ``snrplusk_wt``: w(t) = 1/t² + 1/σ_d² (SNR + 1/σ_d² on the VE path), applied to
the distance √(‖f_t - f_r‖² + c²) - c over the whole sample (c = 0 in the reference: the L2 norm).
Levels are float64 (B,).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


def _param(cfg: Any, name: str) -> Any:
    if not hasattr(cfg, name):
        raise ValueError(f"the [consistency] table has no key {name!r} (ECT needs ect_q, ect_k, ect_b, ect_stages "
                         "and sigma_min)")
    return getattr(cfg, name)


def check_ect(cfg: Any) -> None:
    """ValueError (one line) unless the ECT keys of a [consistency] table are usable: q > 1 (Δt shrinks),
    k >= 0, b >= 0, stages a positive integer, sigma_min > 0, all finite."""
    q, k, b, stages, smin = (_param(cfg, n) for n in ("ect_q", "ect_k", "ect_b", "ect_stages", "sigma_min"))
    for name, v in (("ect_q", q), ("ect_k", k), ("ect_b", b), ("sigma_min", smin)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"consistency.{name} must be a finite number, got {v!r}")
    if not q > 1:
        raise ValueError(f"consistency.ect_q must be > 1 (Δt = t - r shrinks by q each stage), got {q}")
    if k < 0 or b < 0:
        raise ValueError(f"consistency.ect_k and ect_b must be >= 0, got k={k}, b={b}")
    if not smin > 0:
        raise ValueError(f"consistency.sigma_min must be > 0, got {smin}")
    if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
        raise ValueError(f"consistency.ect_stages must be a positive integer, got {stages!r}")


def ect_stage(step: int, total_steps: int, stages: int) -> int:
    """a = ⌊step/d⌋ + 1 with d = ⌈total_steps/stages⌉: 1 at the start, ``stages`` in the last d steps."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
    d = -(-total_steps // stages)
    return step // d + 1


def ect_ratio(sigma_t: Tensor, stage: int, q: float, k: float, b: float) -> Tensor:
    """r/t = 1 - q^{-a}·(1 + k·sigmoid(-b t)) (Geng et al. 2024's mapping function; may be negative)."""
    t = torch.as_tensor(sigma_t, dtype=torch.float64)
    return 1 - q ** (-float(stage)) * (1 + k * torch.sigmoid(-b * t))


def ect_levels(sigma_t: Tensor, step: int, total_steps: int, cfg: Any) -> Tensor:
    """σ_r (B,) float64 for σ_t (B,) at training ``step`` of ``total_steps``: t·(r/t) clamped to [σ_min, σ_t].

    ``cfg`` is the [consistency] table (ect_q, ect_k, ect_b, ect_stages, sigma_min) or a Config holding it. σ_t <=
    σ_min gives σ_r = σ_t (a zero loss: f is the identity there by the boundary condition)."""
    cfg = getattr(cfg, "consistency", cfg)
    check_ect(cfg)
    t = torch.as_tensor(sigma_t, dtype=torch.float64)
    if not bool(torch.isfinite(t).all() and (t > 0).all()):
        raise ValueError("ECT levels need finite noise levels sigma_t > 0")
    a = ect_stage(step, total_steps, cfg.ect_stages)
    r = t * ect_ratio(t, a, cfg.ect_q, cfg.ect_k, cfg.ect_b)
    return torch.minimum(r.clamp_min(cfg.sigma_min), t)


def ect_weight(sigma_t: Tensor, sigma_r: Tensor | None = None, sigma_data: float = 0.5) -> Tensor:
    """w(t) = 1/t² + 1/σ_d² = (t² + σ_d²)/(t σ_d)² (the reference's ``snrplusk_wt``; independent of r), (B,)."""
    t = torch.as_tensor(sigma_t, dtype=torch.float64)
    return (t**2 + sigma_data**2) / (t * sigma_data) ** 2
