"""Noise schedules of the discrete-time VP diffusion (DDPM), seen as functions of a continuous t.

Paper indexing throughout (Ho et al. 2020): ``betas[0]`` is β_1, t = 0 is clean data (ᾱ_0 = 1) and t = T
is the most noisy step. Every quantity is also defined for fractional t in [0, T] by linear
interpolation of log ᾱ between integers (the DPM-Solver convention for discrete models), so
continuous-time samplers (DPM-Solver, UniPC, EDM Heun, ODE solvers) use the same schedule.

Naming (Kingma et al. 2021, VDM): ``alpha(t) = sqrt(alpha_bar(t))`` is the signal scale,
``sigma(t) = sqrt(1 - alpha_bar(t))`` the noise scale and ``log_snr(t) = log(alpha² / sigma²)``,
so x_t = alpha(t)·x_0 + sigma(t)·eps.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
from torch import Tensor

ScheduleKind = Literal["linear", "cosine", "sigmoid"]
SCHEDULE_KINDS: tuple[str, ...] = get_args(ScheduleKind)


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """np.interp for torch: piecewise-linear f(x) through (xp, fp); xp increasing, x clamped to its range."""
    x = x.clamp(xp[0], xp[-1])
    i = torch.searchsorted(xp, x.contiguous(), right=True).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    w = (x - x0) / (x1 - x0)
    return f0 + w * (f1 - f0)


@dataclass(frozen=True, eq=False)
class Schedule:
    """A discrete β schedule β_1..β_T (float64) with ᾱ, α, σ and log-SNR at any t in [0, T]."""

    betas: Tensor
    kind: str = "custom"
    _log_ab: Tensor = field(init=False, repr=False)  # (T+1,) log ᾱ_t, t = 0..T, log ᾱ_0 = 0
    _log_snr: Tensor = field(init=False, repr=False)  # (T+1,) with log_snr[0] = +inf

    def __post_init__(self) -> None:
        b = torch.as_tensor(self.betas, dtype=torch.float64).flatten().cpu()
        if b.numel() < 1:
            raise ValueError("a schedule needs at least one step (T >= 1)")
        if not bool(((b > 0) & (b < 1)).all()):
            raise ValueError(f"every beta must lie in (0, 1); got min {b.min().item():.3g}, max {b.max().item():.3g}")
        log_ab = torch.cat([b.new_zeros(1), torch.cumsum(torch.log1p(-b), 0)])  # ᾱ_t = Π_{s<=t} (1-β_s)
        object.__setattr__(self, "betas", b)
        object.__setattr__(self, "_log_ab", log_ab)
        # log SNR = log ᾱ - log(1-ᾱ); expm1 keeps precision where ᾱ is close to 1.
        object.__setattr__(self, "_log_snr", log_ab - torch.log(-torch.expm1(log_ab)))

    @property
    def T(self) -> int:
        return self.betas.numel()

    def _table(self, table: Tensor, t: Tensor | float | int) -> Tensor:
        t = torch.as_tensor(t)
        out_dtype = t.dtype if t.is_floating_point() else torch.float32
        steps = torch.arange(self.T + 1, dtype=torch.float64, device=t.device)
        v = _interp(t.to(torch.float64), steps, table.to(t.device))
        return v.to(out_dtype)

    # --- Eq. (4) of Ho et al.: q(x_t|x_0) = N(sqrt(ᾱ_t) x_0, (1-ᾱ_t) I) ---
    def log_alpha_bar(self, t: Tensor | float | int) -> Tensor:
        """log ᾱ(t), linear in t between integer steps."""
        return self._table(self._log_ab, t)

    def alpha_bar(self, t: Tensor | float | int) -> Tensor:
        """ᾱ(t) = Π_{s<=t} (1 - β_s)."""
        return self.log_alpha_bar(t).exp()

    def alpha(self, t: Tensor | float | int) -> Tensor:
        """Signal scale α(t) = sqrt(ᾱ(t))."""
        return (0.5 * self.log_alpha_bar(t)).exp()

    def sigma(self, t: Tensor | float | int) -> Tensor:
        """Noise scale σ(t) = sqrt(1 - ᾱ(t))."""
        return (-torch.expm1(self.log_alpha_bar(t))).clamp_min(0).sqrt()

    def log_snr(self, t: Tensor | float | int) -> Tensor:
        """λ(t) = log(α²/σ²); +inf at t = 0."""
        t = torch.as_tensor(t)
        out_dtype = t.dtype if t.is_floating_point() else torch.float32
        la = self.log_alpha_bar(t.to(torch.float64))
        return (la - torch.log(-torch.expm1(la))).to(out_dtype)

    def snr(self, t: Tensor | float | int) -> Tensor:
        """SNR(t) = ᾱ / (1 - ᾱ)."""
        return self.log_snr(t).exp()

    def t_from_log_snr(self, lam: Tensor | float) -> Tensor:
        """Inverse of log_snr on [0, T] (λ is strictly decreasing in t), exact at integer t."""
        lam = torch.as_tensor(lam)
        out_dtype = lam.dtype if lam.is_floating_point() else torch.float32
        # Between integers log ᾱ is linear in t, so invert through log ᾱ = log sigmoid(λ) on the whole
        # grid t = 0..T (reversed so that log ᾱ increases); λ = +inf maps to t = 0.
        t_grid = torch.arange(self.T, -1, -1, dtype=torch.float64, device=lam.device)
        la_grid = self._log_ab.flip(0).to(lam.device)
        la = -torch.nn.functional.softplus(-lam.to(torch.float64))
        return _interp(la, la_grid, t_grid).to(out_dtype)

    def sigma_max(self) -> float:
        """VE-equivalent noise level σ/α at t = T (EDM's σ_max for this schedule)."""
        return math.exp(-0.5 * self._log_snr[-1].item())

    def fingerprint(self) -> str:
        """A short hash of the β values: tells whether a saved time grid belongs to this schedule."""
        return hashlib.sha1(self.betas.numpy().tobytes()).hexdigest()[:16]


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """Ho et al. 2020 §4: β linear from 1e-4 to 0.02 for T = 1000 (scaled by 1000/T for other T)."""
    scale = 1000.0 / T
    return torch.linspace(beta_start * scale, min(beta_end * scale, 0.999), T, dtype=torch.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal 2021 Eq. (17): ᾱ(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s)·π/2), β clipped."""
    t = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    ab = f / f[0]
    return (1 - ab[1:] / ab[:-1]).clamp(min=1e-12, max=max_beta)


def sigmoid_betas(T: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0, max_beta: float = 0.999) -> Tensor:
    """Jabri et al. 2022 / Chen 2023: ᾱ(t) from a shifted sigmoid of t/T, β clipped like cosine."""
    t = torch.arange(T + 1, dtype=torch.float64) / T
    v_start, v_end = torch.sigmoid(torch.tensor(start / tau)), torch.sigmoid(torch.tensor(end / tau))
    ab = (v_end - torch.sigmoid((t * (end - start) + start) / tau)) / (v_end - v_start)
    ab = ab.clamp(min=1e-12)
    return (1 - ab[1:] / ab[:-1]).clamp(min=1e-12, max=max_beta)


BETA_FNS = {"linear": linear_betas, "cosine": cosine_betas, "sigmoid": sigmoid_betas}


def make_schedule(kind: str = "linear", T: int = 1000, **kw: float) -> Schedule:
    """Build a named schedule; ``kw`` goes to the β function (e.g. beta_start, beta_end for linear)."""
    if kind not in BETA_FNS:
        raise ValueError(f"unknown schedule {kind!r}; choose one of {', '.join(BETA_FNS)}")
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"the number of diffusion steps T must be a positive integer, got {T!r}")
    return Schedule(BETA_FNS[kind](T, **kw), kind=kind)
