"""Guidance as extrapolation from a worse denoiser towards a better one, in x̂_0, optionally only on a λ interval.

    x̃_0 = x̂_bad + w (x̂_good - x̂_bad)      (Ho & Salimans 2022 Eq. (6); Karras et al. 2024 Eq. (2))

with w = 1 the good model unchanged and w = 0 the bad one. Combining in x̂_0 is the same as combining ε̂, the score
or the flow velocity: each is an affine function a(t) x_t + b(t) x̂_0 of x̂_0 with coefficients that do not depend on
the model, and the weights (1 - w, w) sum to one. The guidance interval (Kynkäänniemi et al. 2024) applies the
extrapolation only where λ(t) = log(α²/σ²) ∈ [lo, hi] and returns x̂_good elsewhere.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from ..broadcast import batch_times
from ..denoiser import Denoiser, has_variance
from ..paths import Path

Interval = tuple[float, float]  # [lo, hi] in λ = log(α²/σ²); ±inf allowed
BadFn = Callable[[Tensor, Tensor, dict[str, Any]], Tensor]  # (x_t (b, *D), t (b,), cond sliced to b rows) -> x̂_0


def check_scale(w: float, what: str = "guidance scale") -> float:
    """A finite number >= 0, else ValueError naming ``what``."""
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and w >= 0):
        raise ValueError(f"the {what} must be a finite number >= 0, got {w!r}")
    return float(w)


def check_interval(interval: Interval | None) -> Interval | None:
    """None (guide everywhere) or (lo, hi) with lo <= hi, neither NaN."""
    if interval is None:
        return None
    lo, hi = (float(v) for v in interval)
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise ValueError(f"the guidance interval must be LO,HI in λ with LO <= HI, got {interval!r}")
    return lo, hi


def in_interval(path: Path, t: Tensor, interval: Interval | None) -> Tensor:
    """(B,) bool: whether λ(t) ∈ [lo, hi] (everywhere when interval is None)."""
    if interval is None:
        return torch.ones(t.shape, dtype=torch.bool, device=t.device)
    lam = path.log_snr(t)
    return (lam >= interval[0]) & (lam <= interval[1])


def rows(cond: dict[str, Any], keep: Tensor) -> dict[str, Any]:
    """cond restricted to the rows ``keep`` (per-sample tensors are sliced, anything else passed as is)."""
    return {k: v[keep] if isinstance(v, Tensor) and v.ndim >= 1 and v.shape[0] == keep.shape[0] else v
            for k, v in cond.items()}


class Guided:
    """Denoiser -> Denoiser: x̂_bad + w (x̂_good - x̂_bad) where λ(t) is in the interval, x̂_good elsewhere.

    x̂_good is always one call of ``good`` on the whole batch with the caller's cond, so w = 1 and rows outside the
    interval return exactly what ``good`` returns (bit for bit); ``bad`` is called only on the rows being guided.
    A learned variance (improved DDPM) is read from the good model."""

    def __init__(self, good: Denoiser, bad: BadFn, scale: float, interval: Interval | None = None,
                 name: str = "guided"):
        self.good, self.bad, self.path, self.name = good, bad, good.path, name
        self.scale, self.interval = check_scale(scale), check_interval(interval)
        self.learns_variance = has_variance(good)
        if hasattr(good, "kind"):  # a consistency model stays one (sample() reads D.kind)
            self.kind = good.kind

    def _guide(self, x_good: Tensor, x_t: Tensor, t: Tensor, cond: dict[str, Any]) -> Tensor:
        if self.scale == 1.0:
            return x_good
        t = batch_times(t, x_t)
        keep = in_interval(self.path, t, self.interval)
        if not bool(keep.any()):
            return x_good
        if bool(keep.all()):
            x_bad = self.bad(x_t, t, cond)
            return x_bad + self.scale * (x_good - x_bad)
        x_bad = self.bad(x_t[keep], t[keep], rows(cond, keep))
        out = x_good.clone()
        out[keep] = x_bad + self.scale * (x_good[keep] - x_bad)
        return out

    def __call__(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        return self._guide(self.good(x_t, t, **cond), x_t, t, cond)

    def with_variance(self, x_t: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor | None]:
        x_good, v = self.good.with_variance(x_t, t, **cond)  # type: ignore[attr-defined]
        return self._guide(x_good, x_t, t, cond), v
