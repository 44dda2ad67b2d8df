"""The Gaussian path protocol x_t = α(t)·x_0 + σ(t)·ε (Kingma et al. 2021, VDM §2), and helpers every path shares.

Time runs from t = 0 (data: α = 1, σ = 0) to ``t_max`` (noise); the prior is x_{t_max} ~ N(0, prior_std² I).
λ(t) = log(α²/σ²) is the full log signal-to-noise ratio everywhere in kuosan (+∞ at t = 0, -∞ where α = 0).
The VE noise level σ̃ = σ/α = exp(-λ/2) (Karras et al. 2022's σ) is always called ``ve_sigma``, never σ.
Every quantity is evaluated in float64, whatever the dtype of t; callers cast once (see broadcast.expand).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

TimeLike = Tensor | float | int


class PathError(ValueError):
    """A path that cannot do what was asked (a discrete-only algorithm on a continuous path, ...)."""


@runtime_checkable
class Path(Protocol):
    """α(t), σ(t), λ(t), its inverse t(λ), dα/dt, dσ/dt on t ∈ [0, t_max]; all float64 tensors."""

    kind: str
    t_max: float  # the noisiest time, where sampling starts
    prior_std: float  # x_{t_max} ~ N(0, prior_std² I): 1 for VP and flow paths, σ_max for VE

    def alpha(self, t: TimeLike) -> Tensor: ...
    def sigma(self, t: TimeLike) -> Tensor: ...
    def log_snr(self, t: TimeLike) -> Tensor: ...
    def t_of_log_snr(self, lam: TimeLike) -> Tensor: ...
    def dalpha_dt(self, t: TimeLike) -> Tensor: ...
    def dsigma_dt(self, t: TimeLike) -> Tensor: ...
    def net_time(self, t: TimeLike) -> Tensor: ...  # the time value a network is given (about 0..1000)
    def spec(self) -> dict[str, Any]: ...  # JSON-able description (saved beside fitted grids)
    def fingerprint(self) -> str: ...  # a short hash: tells whether saved grids belong to this path


def spec_fingerprint(spec: dict[str, Any]) -> str:
    """A short hash of a JSON-able description: what ``Path.fingerprint`` returns for paths defined by parameters."""
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint_matches(path: Path, recorded: str | None) -> bool:
    """``recorded`` (a checkpoint's or saved grid's path fingerprint) names ``path``; a path may also accept the
    older form of its own fingerprint (DiscreteVP: the hash of its β values)."""
    own = getattr(path, "fingerprint_matches", None)
    return bool(own(recorded)) if own is not None else recorded == path.fingerprint()


def f64(t: TimeLike, device: torch.device | None = None) -> Tensor:
    """t as a float64 tensor (on ``device`` when given)."""
    return torch.as_tensor(t, dtype=torch.float64, device=device)


def coefficients(path: Path, t: float) -> tuple[float, float, float]:
    """(α, σ, λ) at one time t as Python floats: the one helper samplers use per step."""
    tt = f64(float(t))
    return float(path.alpha(tt)), float(path.sigma(tt)), float(path.log_snr(tt))


def ve_sigma(path: Path, t: TimeLike) -> Tensor:
    """σ̃(t) = σ/α = exp(-λ/2), Karras et al.'s noise level of the equivalent VE process (+∞ where α = 0)."""
    return torch.exp(-0.5 * path.log_snr(t))


def sde_coefficients(path: Path, t: TimeLike) -> tuple[Tensor, Tensor]:
    """(f, g²) of the forward SDE dx = f x dt + g dw with the path's marginals (Kingma et al. 2021 App. A;
    Karras et al. 2022 Eq. (34)): f = dlog α/dt, g² = dσ²/dt - 2 f σ²."""
    a, s = path.alpha(t), path.sigma(t)
    f = path.dalpha_dt(t) / a
    return f, 2 * s * path.dsigma_dt(t) - 2 * f * s**2


def log_snr_from_alpha_sigma(a: Tensor, s: Tensor) -> Tensor:
    """λ = 2 log α - 2 log σ (float64), ±∞ at the ends."""
    return 2 * (a.log() - s.log())


def require_discrete(path: Path, what: str) -> Any:
    """The path's discrete VP chain, or PathError: ``what`` is defined on the β table only."""
    if getattr(path, "T", None) is None:
        raise PathError(f"{what} is defined on a discrete VP chain (β table); this path is {path.kind!r}")
    return path


def terminal_snr_is_zero(path: Path) -> bool:
    """True when α(t_max) = 0 (λ = -∞): ε-prediction cannot recover x_0 there (Lin et al. 2024)."""
    return not math.isfinite(float(path.log_snr(f64(path.t_max))))
