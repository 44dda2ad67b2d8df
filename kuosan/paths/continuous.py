"""Continuous-time Gaussian paths in closed form: VP cosine and VP linear-β on t ∈ [0, 1], VE / EDM on
t = σ ∈ [0, σ_max], and the linear interpolant of flow matching / rectified flow on t ∈ [0, 1].

Each gives α, σ, λ = log(α²/σ²), t(λ), dα/dt, dσ/dt exactly (float64); tests check them against finite
differences and against each other.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import TimeLike, f64, spec_fingerprint


def _lam(a: Tensor, s: Tensor) -> Tensor:
    return 2 * (a.log() - s.log())


@dataclass(frozen=True)
class VPCosine:
    """Continuous cosine VP path (Nichol & Dhariwal 2021 Eq. (17) in continuous t): α(t) = cos φ(t)/cos φ(0),
    φ(t) = π/2 (t + s)/(1 + s), σ = √(1 - α²). α(1) = 0 (zero terminal SNR) unless ``t_max`` < 1."""

    s: float = 0.008
    t_max: float = 1.0
    kind: str = "vp_cosine"

    def __post_init__(self) -> None:
        if not (0 < self.t_max <= 1) or not (self.s >= 0):
            raise ValueError(f"vp_cosine needs 0 < t_max <= 1 and s >= 0, got t_max={self.t_max}, s={self.s}")

    @property
    def prior_std(self) -> float:
        return 1.0

    def _phi(self, t: TimeLike) -> Tensor:
        return (f64(t) + self.s) / (1 + self.s) * (math.pi / 2)

    def alpha(self, t: TimeLike) -> Tensor:
        # cos φ(t) written as sin(π/2 (1 - t)/(1 + s)), exactly 0 at t = 1
        c0 = math.cos(self.s / (1 + self.s) * math.pi / 2)
        return (torch.sin((1 - f64(t)) / (1 + self.s) * (math.pi / 2)) / c0).clamp(0, 1)

    def sigma(self, t: TimeLike) -> Tensor:
        return (1 - self.alpha(t) ** 2).clamp_min(0).sqrt()

    def log_snr(self, t: TimeLike) -> Tensor:
        a = self.alpha(t)
        return 2 * a.log() - torch.log(-torch.expm1(2 * a.log()))

    def t_of_log_snr(self, lam: TimeLike) -> Tensor:
        c0 = math.cos(self.s / (1 + self.s) * math.pi / 2)
        a = torch.sigmoid(f64(lam)).sqrt()
        return (torch.arccos((a * c0).clamp(-1, 1)) * (2 * (1 + self.s) / math.pi) - self.s).clamp(0, self.t_max)

    def dalpha_dt(self, t: TimeLike) -> Tensor:
        c0 = math.cos(self.s / (1 + self.s) * math.pi / 2)
        return -torch.sin(self._phi(t)) * (math.pi / (2 * (1 + self.s))) / c0

    def dsigma_dt(self, t: TimeLike) -> Tensor:
        return -self.alpha(t) * self.dalpha_dt(t) / self.sigma(t)

    def net_time(self, t: TimeLike) -> Tensor:
        return 1000.0 * f64(t)

    def spec(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self) -> str:
        return spec_fingerprint(self.spec())


@dataclass(frozen=True)
class VPLinear:
    """Continuous VP SDE of Song et al. 2021 (Eq. (11)) with β(t) = β_min + t(β_max - β_min), t ∈ [0, 1]:
    log α(t) = -¼ t² (β_max - β_min) - ½ t β_min, σ = √(1 - α²)."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    t_max: float = 1.0
    kind: str = "vp_linear"

    def __post_init__(self) -> None:
        if not (0 < self.beta_min <= self.beta_max) or not (0 < self.t_max <= 1):
            raise ValueError(f"vp_linear needs 0 < beta_min <= beta_max and 0 < t_max <= 1, got {self}")

    @property
    def prior_std(self) -> float:
        return 1.0

    def _log_alpha(self, t: TimeLike) -> Tensor:
        t = f64(t)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha(self, t: TimeLike) -> Tensor:
        return self._log_alpha(t).exp()

    def sigma(self, t: TimeLike) -> Tensor:
        return (-torch.expm1(2 * self._log_alpha(t))).clamp_min(0).sqrt()

    def log_snr(self, t: TimeLike) -> Tensor:
        la = 2 * self._log_alpha(t)  # log ᾱ
        return la - torch.log(-torch.expm1(la))

    def t_of_log_snr(self, lam: TimeLike) -> Tensor:
        # log ᾱ = -softplus(-λ) = -(½ t² Δ + t β_min): the positive root of ½Δ t² + β_min t + log ᾱ = 0
        L = -F.softplus(-f64(lam))
        d = self.beta_max - self.beta_min
        if d == 0:
            return (-L / self.beta_min).clamp(0, self.t_max)
        return ((-self.beta_min + (self.beta_min**2 - 2 * d * L).sqrt()) / d).clamp(0, self.t_max)

    def dalpha_dt(self, t: TimeLike) -> Tensor:
        t = f64(t)
        return self.alpha(t) * (-0.5 * t * (self.beta_max - self.beta_min) - 0.5 * self.beta_min)

    def dsigma_dt(self, t: TimeLike) -> Tensor:
        return -self.alpha(t) * self.dalpha_dt(t) / self.sigma(t)

    def net_time(self, t: TimeLike) -> Tensor:
        return 1000.0 * f64(t)

    def spec(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self) -> str:
        return spec_fingerprint(self.spec())


@dataclass(frozen=True)
class VE:
    """Variance-exploding path in EDM's time (Karras et al. 2022 Table 1): α = 1, σ(t) = t, t ∈ [0, σ_max]."""

    sigma_max: float = 80.0
    kind: str = "ve"

    def __post_init__(self) -> None:
        if not (self.sigma_max > 0 and math.isfinite(self.sigma_max)):
            raise ValueError(f"ve needs a finite sigma_max > 0, got {self.sigma_max}")

    @property
    def t_max(self) -> float:
        return float(self.sigma_max)

    @property
    def prior_std(self) -> float:
        return float(self.sigma_max)

    def alpha(self, t: TimeLike) -> Tensor:
        return torch.ones_like(f64(t))

    def sigma(self, t: TimeLike) -> Tensor:
        return f64(t).clone()

    def log_snr(self, t: TimeLike) -> Tensor:
        return -2 * f64(t).log()

    def t_of_log_snr(self, lam: TimeLike) -> Tensor:
        return torch.exp(-0.5 * f64(lam)).clamp(0, self.sigma_max)

    def dalpha_dt(self, t: TimeLike) -> Tensor:
        return torch.zeros_like(f64(t))

    def dsigma_dt(self, t: TimeLike) -> Tensor:
        return torch.ones_like(f64(t))

    def net_time(self, t: TimeLike) -> Tensor:
        """250·ln σ: EDM's c_noise = ¼ ln σ, scaled to the range kuosan's sinusoidal time embedding is built for."""
        return 250.0 * f64(t).log()

    def spec(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self) -> str:
        return spec_fingerprint(self.spec())


@dataclass(frozen=True)
class Linear:
    """The linear interpolant of flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023):
    x_t = (1 - t) x_0 + t ε, α = 1 - t, σ = t on t ∈ [0, 1]; λ(1) = -∞."""

    kind: str = "flow"

    @property
    def t_max(self) -> float:
        return 1.0

    @property
    def prior_std(self) -> float:
        return 1.0

    def alpha(self, t: TimeLike) -> Tensor:
        return 1 - f64(t)

    def sigma(self, t: TimeLike) -> Tensor:
        return f64(t).clone()

    def log_snr(self, t: TimeLike) -> Tensor:
        t = f64(t)
        return 2 * (torch.log1p(-t) - t.log())

    def t_of_log_snr(self, lam: TimeLike) -> Tensor:
        return torch.sigmoid(-0.5 * f64(lam))  # α/σ = e^{λ/2} = (1 - t)/t

    def dalpha_dt(self, t: TimeLike) -> Tensor:
        return -torch.ones_like(f64(t))

    def dsigma_dt(self, t: TimeLike) -> Tensor:
        return torch.ones_like(f64(t))

    def net_time(self, t: TimeLike) -> Tensor:
        return 1000.0 * f64(t)

    def spec(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self) -> str:
        return spec_fingerprint(self.spec())
