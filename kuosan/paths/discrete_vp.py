"""The discrete-time VP chain of DDPM (Ho et al. 2020) as a path on t ∈ [0, T].

Paper indexing: ``betas[0]`` is β_1, t = 0 is clean data (ᾱ_0 = 1), t = T the noisiest step. Fractional t
interpolates log ᾱ linearly between integers (the DPM-Solver convention for discrete models), so samplers in
continuous time use the same chain. With ``zero_terminal_snr`` (Lin et al. 2024, Algorithm 1) √ᾱ is shifted and
rescaled so that ᾱ_T = 0 (β_T = 1, λ(T) = -∞); log ᾱ is then -∞ on the whole last interval (T-1, T].

β tables: ``linear`` (Ho et al. §4), ``scaled_linear`` (Stable Diffusion: √β linear), ``cosine`` (Nichol &
Dhariwal 2021 Eq. (17)) and ``sigmoid`` (Jabri et al. 2022 / Chen 2023: ᾱ from a shifted sigmoid of t/T). Note
that diffusers' ``sigmoid`` β schedule is a different one (β itself follows a sigmoid between its endpoints).
"""

from __future__ import annotations

import hashlib
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from .base import TimeLike, f64, spec_fingerprint

BetaKind = Literal["linear", "scaled_linear", "cosine", "sigmoid"]
BETA_KINDS: tuple[str, ...] = get_args(BetaKind)


def interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """np.interp for torch: piecewise-linear f(x) through (xp, fp); xp increasing, x clamped to its range.

    An end value of -∞ in fp is kept exactly at its own knot (no 0·∞ = nan); elsewhere gradients flow as usual."""
    x = x.clamp(xp[0], xp[-1])
    i = torch.searchsorted(xp, x.contiguous(), right=True).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    w = (x - x0) / (x1 - x0)
    out = f0 + w * (f1 - f0)
    # only the 0·∞ of a -∞ knot is replaced (a where() on w itself would cut gradients at the knots)
    return torch.where(torch.isnan(out), torch.where(w <= 0, f0, f1), out)


@dataclass(frozen=True, eq=False)
class DiscreteVP:
    """β_1..β_T (float64) with α, σ, λ at any t ∈ [0, T]; ``schedule`` names the β table it came from and
    ``params`` the keyword arguments its β function was called with (none for a custom table)."""

    betas: Tensor
    schedule: str = "custom"
    zero_terminal_snr: bool = False
    params: tuple[tuple[str, float], ...] = ()
    kind: str = field(default="discrete_vp", init=False)
    _log_ab: Tensor = field(init=False, repr=False)  # (T+1,) log ᾱ_t, t = 0..T
    _steps: Tensor = field(init=False, repr=False)  # (T+1,) 0..T as float64 (the interpolation knots)

    def __post_init__(self) -> None:
        b = torch.as_tensor(self.betas, dtype=torch.float64).flatten().cpu()
        if b.numel() < 1:
            raise ValueError("a discrete VP chain needs at least one step (T >= 1)")
        inner = b[:-1] if self.zero_terminal_snr else b
        if not bool(((inner > 0) & (inner < 1)).all()) or not bool(b[-1] > 0 and b[-1] <= 1):
            raise ValueError(f"every beta must lie in (0, 1); got min {b.min().item():.3g}, max {b.max().item():.3g}")
        if b[-1] == 1 and not self.zero_terminal_snr:
            raise ValueError("beta_T = 1 (zero terminal SNR) needs zero_terminal_snr = true")
        log_ab = torch.cat([b.new_zeros(1), torch.cumsum(torch.log1p(-b), 0)])  # ᾱ_t = Π_{s<=t} (1-β_s)
        object.__setattr__(self, "betas", b)
        object.__setattr__(self, "_log_ab", log_ab)
        object.__setattr__(self, "_steps", torch.arange(b.numel() + 1, dtype=torch.float64))

    # --- the Path protocol -----------------------------------------------------------------------------
    @property
    def T(self) -> int:
        return self.betas.numel()

    @property
    def t_max(self) -> float:
        return float(self.T)

    @property
    def prior_std(self) -> float:
        return 1.0

    def log_alpha_bar(self, t: TimeLike) -> Tensor:
        """log ᾱ(t), linear in t between integer steps (float64)."""
        t = f64(t)
        return interp(t, self._steps.to(t.device), self._log_ab.to(t.device))

    def alpha_bar(self, t: TimeLike) -> Tensor:
        return self.log_alpha_bar(t).exp()

    def alpha(self, t: TimeLike) -> Tensor:
        """α(t) = √ᾱ(t)."""
        return (0.5 * self.log_alpha_bar(t)).exp()

    def sigma(self, t: TimeLike) -> Tensor:
        """σ(t) = √(1 - ᾱ(t))."""
        return (-torch.expm1(self.log_alpha_bar(t))).clamp_min(0).sqrt()

    def log_snr(self, t: TimeLike) -> Tensor:
        """λ(t) = log ᾱ - log(1 - ᾱ); expm1 keeps precision where ᾱ is close to 1. +∞ at t = 0."""
        la = self.log_alpha_bar(t)
        return la - torch.log(-torch.expm1(la))

    def t_of_log_snr(self, lam: TimeLike) -> Tensor:
        """Inverse of λ(t), exact at integer t (log ᾱ = log sigmoid(λ) is linear in t between integers).

        λ = +∞ gives 0, λ = -∞ gives T; with zero terminal SNR a finite λ below λ(T-1) gives T-1."""
        lam = f64(lam)
        la = -torch.nn.functional.softplus(-lam)  # log ᾱ = log sigmoid(λ)
        grid = self._log_ab.flip(0).to(lam.device)  # increasing, maybe -∞ first
        t_grid = torch.arange(self.T, -1, -1, dtype=torch.float64, device=lam.device)
        finite = torch.isfinite(grid)
        t = interp(la, grid[finite], t_grid[finite])
        return torch.where(la == -math.inf, torch.full_like(t, float(self.T)), t)

    def dlog_alpha_bar_dt(self, t: TimeLike) -> Tensor:
        """Slope of log ᾱ on the interval (k-1, k] holding t (the interval a reverse step enters);
        t = 0 uses (0, 1]."""
        t = f64(t)
        k = t.ceil().clamp(1, self.T).long()
        la = self._log_ab.to(t.device)
        return la[k] - la[k - 1]

    def dalpha_dt(self, t: TimeLike) -> Tensor:
        # α ≡ 0 on the last interval with zero terminal SNR (slope -∞ there): its derivative is 0, not 0·∞
        a = self.alpha(t)
        return torch.where(a > 0, 0.5 * a * self.dlog_alpha_bar_dt(t), torch.zeros_like(a))

    def dsigma_dt(self, t: TimeLike) -> Tensor:
        ab = self.alpha_bar(t)
        return torch.where(ab > 0, -0.5 * ab * self.dlog_alpha_bar_dt(t) / self.sigma(t), torch.zeros_like(ab))

    def net_time(self, t: TimeLike) -> Tensor:
        """t·1000/T: a network's time embedding sees the same scale for any T."""
        return f64(t) * (1000.0 / self.T)

    def spec(self) -> dict[str, Any]:
        return {"kind": "discrete_vp", "schedule": self.schedule, "T": self.T,
                "zero_terminal_snr": self.zero_terminal_snr, "params": dict(self.params),
                "fingerprint": self.fingerprint()}

    def fingerprint(self) -> str:
        """A short hash of the chain's definition: a named table's (schedule, T, zero_terminal_snr, params), which
        every machine agrees on, or a custom table's β values (as given, so exact). Hashing a named table's
        computed values was not portable: torch's vectorised cos differs in the last bit between builds and CPUs,
        so a run trained on one machine was refused on another (``values_fingerprint`` keeps that hash)."""
        if self.schedule == "custom":
            return self.values_fingerprint()
        return spec_fingerprint({"schedule": self.schedule, "T": self.T, "zero_terminal_snr": self.zero_terminal_snr,
                                 "params": dict(self.params)})

    def values_fingerprint(self) -> str:
        """A short hash of the β values' bytes: what runs and grids saved before 2026-11-24 20:00 recorded."""
        return hashlib.sha1(self.betas.numpy().tobytes()).hexdigest()[:16]

    def fingerprint_matches(self, recorded: str | None) -> bool:
        """``recorded`` (from a checkpoint or a saved grid) names this chain: by its definition or, as older
        files recorded it, by the β values computed on this machine."""
        return recorded in (self.fingerprint(), self.values_fingerprint())

    def sigma_max(self) -> float:
        """σ̃ = σ/α at t = T, the VE-equivalent noise level where sampling starts (+∞ with zero terminal SNR)."""
        return math.exp(-0.5 * float(self.log_snr(f64(self.T))))


# --- β tables ---------------------------------------------------------------------------------------------
def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """Ho et al. 2020 §4: β linear from 1e-4 to 0.02 for T = 1000 (scaled by 1000/T for other T)."""
    scale = 1000.0 / T
    return torch.linspace(beta_start * scale, min(beta_end * scale, 0.999), T, dtype=torch.float64)


def scaled_linear_betas(T: int, beta_start: float = 0.00085, beta_end: float = 0.012) -> Tensor:
    """Rombach et al. 2022 (Stable Diffusion): √β linear from √β_start to √β_end (no 1000/T rescaling)."""
    return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2


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


BETA_FNS = {"linear": linear_betas, "scaled_linear": scaled_linear_betas, "cosine": cosine_betas,
            "sigmoid": sigmoid_betas}


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Lin et al. 2024 Algorithm 1: shift √ᾱ so √ᾱ_T = 0 and scale so √ᾱ_1 is unchanged; returns β
    (β_T = 1)."""
    sab = torch.cumprod(1 - betas.to(torch.float64), 0).sqrt()
    first, last = sab[0].clone(), sab[-1].clone()
    sab = (sab - last) * first / (first - last)
    ab = sab**2
    return torch.cat([ab[:1], ab[1:] / ab[:-1]]).neg().add(1)


def discrete_vp(kind: str = "linear", T: int = 1000, *, zero_terminal_snr: bool = False, **kw: float) -> DiscreteVP:
    """A named β table as a path; ``kw`` goes to the β function (e.g. beta_start, beta_end for linear)."""
    if kind not in BETA_FNS:
        raise ValueError(f"unknown schedule {kind!r}; choose one of {', '.join(BETA_FNS)}")
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ValueError(f"the number of diffusion steps T must be a positive integer, got {T!r}")
    betas = BETA_FNS[kind](T, **kw)
    if zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    # every argument of the β function, defaults included: one chain, one fingerprint, however it was spelled
    defaults = {k: v.default for k, v in inspect.signature(BETA_FNS[kind]).parameters.items() if k != "T"}
    params = tuple(sorted((k, float(v)) for k, v in {**defaults, **kw}.items()))
    return DiscreteVP(betas, schedule=kind, zero_terminal_snr=zero_terminal_snr, params=params)
