"""How an objective draws its training times t: one small class per distribution, ``make_time_sampler`` by name.

Every sampler returns ``(t, weights)``: t (n,) float64 on the generator's device, and importance weights (n,)
float64 (only the importance sampler has them, else None) with E_t~p[w_t L_t] equal to the uniform average.
Continuous samplers also give their density p(t) on (0, t_max], which the continuous-time VLB weighting divides
by (kuosan.objectives.weighting). The draws consume the generator exactly as the first half's trainer did, so
runs written before this module resume bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

import torch
from torch import Tensor

from ..paths import VE, DiscreteVP, Path, f64, require_discrete
from .weighting import dlog_snr_dt

TimeSampling = Literal["auto", "uniform_discrete", "uniform", "logit_normal", "log_normal", "importance", "t_max"]
TIME_SAMPLINGS: tuple[str, ...] = get_args(TimeSampling)


class TimeSampler(Protocol):
    kind: str
    discrete: bool  # integer times 1..T of a discrete VP chain

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]: ...


def _device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _normal_pdf(z: Tensor, mean: float, std: float) -> Tensor:
    return torch.exp(-0.5 * ((z - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


@dataclass(frozen=True)
class UniformDiscrete:
    """t ~ U{1, ..., T} (Ho et al. 2020 Algorithm 1), drawn as ``torch.randint(1, T + 1, (n,))``."""

    T: int
    kind: str = "uniform_discrete"
    discrete: bool = True

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, None]:
        t = torch.randint(1, self.T + 1, (n,), generator=generator, device=_device(generator))
        return t.to(torch.float64), None


@dataclass(frozen=True)
class Uniform:
    """t ~ U(0, t_max] (Kingma et al. 2021, VDM): t = t_max (1 - u), u ~ U[0, 1), so t = 0 (no noise) never occurs."""

    t_max: float
    kind: str = "uniform"
    discrete: bool = False

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, None]:
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=_device(generator))
        return self.t_max * (1 - u), None

    def density(self, t: Tensor) -> Tensor:
        return torch.full_like(f64(t), 1.0 / self.t_max)


@dataclass(frozen=True)
class Noisiest:
    """t = t_max always: only the first step out of the prior is trained. On a rectified flow's own (noise, sample)
    pairs this is Liu et al. 2023 §2.3's one-step distillation: the velocity at t = 1 maps x_1 to x_0 in one Euler
    step. Draws (and discards) one U[0, 1) a sample, as ``Uniform`` does, so the step's later draws stay in place."""

    t_max: float
    kind: str = "t_max"
    discrete: bool = False

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, None]:
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=_device(generator))
        return torch.full_like(u, self.t_max), None


@dataclass(frozen=True)
class LogitNormal:
    """Esser et al. 2024 (SD3) §3.1: t = t_max·sigmoid(m + s·n), n ~ N(0, 1)."""

    t_max: float
    mean: float = 0.0
    std: float = 1.0
    kind: str = "logit_normal"
    discrete: bool = False

    def __post_init__(self) -> None:
        if not (self.std > 0 and math.isfinite(self.std) and math.isfinite(self.mean)):
            raise ValueError(f"logit_normal needs a finite mean and std > 0, got mean={self.mean}, std={self.std}")

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, None]:
        z = torch.randn(n, generator=generator, dtype=torch.float64, device=_device(generator))
        return self.t_max * torch.sigmoid(self.mean + self.std * z), None

    def density(self, t: Tensor) -> Tensor:
        """p(t) = N(logit u; m, s²)/(u (1 - u) t_max) with u = t/t_max."""
        u = f64(t) / self.t_max
        return _normal_pdf(torch.logit(u), self.mean, self.std) / (u * (1 - u) * self.t_max)


@dataclass(frozen=True)
class LogNormal:
    """Karras et al. 2022 (EDM) Table 1: ln σ̃ ~ N(P_mean, P_std²) for the VE noise level σ̃ = σ/α, mapped to the
    path's time by t = t(λ = -2 ln σ̃) (clamped to [0, t_max] by the path)."""

    path: Path
    p_mean: float = -1.2
    p_std: float = 1.2
    kind: str = "log_normal"
    discrete: bool = False

    def __post_init__(self) -> None:
        if not (self.p_std > 0 and math.isfinite(self.p_std) and math.isfinite(self.p_mean)):
            raise ValueError(f"log_normal needs a finite p_mean and p_std > 0, got {self.p_mean}, {self.p_std}")

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, None]:
        z = torch.randn(n, generator=generator, dtype=torch.float64, device=_device(generator))
        log_ve_sigma = self.p_mean + self.p_std * z
        return self.path.t_of_log_snr(-2 * log_ve_sigma), None

    def density(self, t: Tensor) -> Tensor:
        """p(t) = N(ln σ̃(t); P_mean, P_std²)·|d ln σ̃/dt| with d ln σ̃/dt = -½ dλ/dt."""
        t = f64(t)
        return _normal_pdf(-0.5 * self.path.log_snr(t), self.p_mean, self.p_std) * (-0.5 * dlog_snr_dt(self.path, t))


class Importance:
    """Nichol & Dhariwal 2021 §3.3, Eq. (18):
    t ∈ 1..T with p_t ∝ √E[L_t²] over the last ``history`` values of L_t.

    Uniform until every t has ``history`` values. ``uniform_mix`` of the mass stays uniform so no p_t is 0 and
    the importance weights 1/(T p_t) stay bounded. E_t~p[w_t L_t] = (1/T) Σ_t L_t, so the weighted loss is unbiased.
    """

    kind = "importance"
    discrete = True

    def __init__(self, T: int, history: int = 10, uniform_mix: float = 1e-3):
        if not isinstance(T, int) or T < 1 or not isinstance(history, int) or history < 1:
            raise ValueError(f"T and history must be positive integers, got T={T!r}, history={history!r}")
        if not 0.0 <= uniform_mix <= 1.0:
            raise ValueError(f"uniform_mix must lie in [0, 1], got {uniform_mix!r}")
        self.T, self.history, self.uniform_mix = T, history, uniform_mix
        self.losses = torch.zeros(T, history, dtype=torch.float64)  # ring buffer of L_t, row t-1
        self.count = torch.zeros(T, dtype=torch.long)

    @property
    def ready(self) -> bool:
        return bool((self.count >= self.history).all())

    def probs(self) -> Tensor:
        """p_t (T,), entry t-1 for timestep t."""
        if not self.ready:
            return torch.full((self.T,), 1.0 / self.T, dtype=torch.float64)
        w = self.losses.pow(2).mean(1).sqrt()
        if float(w.sum()) <= 0 or not math.isfinite(float(w.sum())):
            return torch.full((self.T,), 1.0 / self.T, dtype=torch.float64)
        return (1 - self.uniform_mix) * w / w.sum() + self.uniform_mix / self.T

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n timesteps (n,) in 1..T (float64) and their importance weights 1/(T p_t) (n,) float64."""
        p = self.probs().to(_device(generator))
        idx = torch.multinomial(p, n, replacement=True, generator=generator)
        return (idx + 1).to(torch.float64), 1.0 / (self.T * p[idx])

    def update(self, t: Tensor, vlb: Tensor) -> None:
        """Record per-sample L_t (detached) for timesteps t (integers in 1..T)."""
        for ti, li in zip(torch.as_tensor(t).reshape(-1).tolist(), vlb.detach().double().reshape(-1).tolist()):
            ti = int(round(ti))
            if not 1 <= ti <= self.T:
                raise ValueError(f"timestep {ti} outside 1..{self.T}")
            self.losses[ti - 1, self.count[ti - 1] % self.history] = li
            self.count[ti - 1] += 1

    def state_dict(self) -> dict[str, Tensor]:
        """The history, under the keys the first half's checkpoints used (``imp_losses``, ``imp_count``)."""
        return {"imp_losses": self.losses.clone(), "imp_count": self.count.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        losses = torch.as_tensor(state["imp_losses"], dtype=torch.float64)
        count = torch.as_tensor(state["imp_count"], dtype=torch.long)
        if losses.shape != self.losses.shape or count.shape != self.count.shape:
            raise ValueError(f"importance-sampler state of shape {tuple(losses.shape)} does not fit T={self.T}, "
                             f"history={self.history}")
        self.losses, self.count = losses.clone(), count.clone()


_KW = {"uniform_discrete": (), "uniform": (), "logit_normal": ("mean", "std"), "log_normal": ("p_mean", "p_std"),
       "importance": ("history", "uniform_mix"), "t_max": ()}


def make_time_sampler(kind: str, path: Path, **kw: Any) -> TimeSampler:
    """The time sampler ``kind`` for ``path``; 'auto' is uniform_discrete on a discrete VP chain, log_normal on VE
    (EDM's choice) and uniform otherwise. ``kw`` are the sampler's parameters (e.g. mean, std for logit_normal)."""
    if kind == "auto":
        kind = ("uniform_discrete" if isinstance(path, DiscreteVP) else "log_normal" if isinstance(path, VE)
                else "uniform")
    if kind not in _KW:
        raise ValueError(f"unknown time sampling {kind!r}; choose one of {', '.join(TIME_SAMPLINGS)}")
    unknown = sorted(set(kw) - set(_KW[kind]))
    if unknown:
        allowed = ", ".join(_KW[kind]) or "none"
        raise ValueError(f"time sampling {kind!r} takes no option {', '.join(unknown)} (its options: {allowed})")
    if kind == "uniform_discrete":
        return UniformDiscrete(require_discrete(path, "time sampling 'uniform_discrete'").T)
    if kind == "importance":
        return Importance(require_discrete(path, "time sampling 'importance'").T, **kw)
    if kind == "log_normal":
        return LogNormal(path, **kw)
    if kind == "logit_normal":
        return LogitNormal(float(path.t_max), **kw)
    if kind == "t_max":
        return Noisiest(float(path.t_max))
    return Uniform(float(path.t_max))
