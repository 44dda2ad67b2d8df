"""What a network predicts, as one object per kind: ε, x_0, v, flow velocity, EDM's preconditioned F, and a
consistency function (whose output is an ODE endpoint, not a regression target).

Each owns (Karras et al. 2022 Table 1 / Eq. (7), written for any path x_t = α x_0 + σ ε):
  c_in(t)        the scale applied to x_t before the network (1 except EDM),
  c_noise(t)     the time value the network is given (the path's ``net_time`` except EDM),
  to_x0(out)     network output -> x̂_0 (also ε̂ = (x_t - α x̂_0)/σ, score = -ε̂/σ, velocity: see below),
  target(x0, ε)  the training target for the network output,
  eps_factor(t)  k(t) with ||ε̂ - ε||² = k(t)·||out - target||², so a weighting written as w(λ) on the ε-MSE
                 (Kingma & Gao 2023) becomes w·k on the network's own squared error.
Coefficients are computed in float64 from the path and cast to x's dtype; t is (B,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

import torch
from torch import Tensor

from .broadcast import expand
from .paths import Path, PathError, f64, terminal_snr_is_zero

Prediction = Literal["eps", "x0", "v", "velocity", "edm", "consistency"]
ALL_PREDICTIONS: tuple[str, ...] = get_args(Prediction)  # the config's objective.prediction choices
# the kinds the diffusion loss regresses (each has a target and k(t)); a consistency model has neither
PREDICTIONS: tuple[str, ...] = tuple(p for p in ALL_PREDICTIONS if p != "consistency")


class Parameterisation(Protocol):
    name: str

    def check_path(self, path: Path) -> None: ...
    def c_in(self, path: Path, t: Tensor) -> Tensor: ...
    def c_noise(self, path: Path, t: Tensor) -> Tensor: ...
    def to_x0(self, out: Tensor, x_t: Tensor, path: Path, t: Tensor) -> Tensor: ...
    def target(self, x0: Tensor, eps: Tensor, path: Path, t: Tensor) -> Tensor: ...
    def eps_factor(self, path: Path, t: Tensor) -> Tensor: ...


def _as(path: Path, t: Tensor) -> tuple[Tensor, Tensor]:
    t = f64(t)
    return path.alpha(t), path.sigma(t)


def eps_from_x0(x_t: Tensor, x0: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """ε̂ = (x_t - α x̂_0)/σ (α, σ broadcastable against x)."""
    return (x_t - alpha * x0) / sigma


def x0_from_eps(x_t: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """x̂_0 = (x_t - σ ε̂)/α."""
    return (x_t - sigma * eps) / alpha


class _Plain:
    """Shared defaults of the unpreconditioned kinds: no input scaling, the path's own network time."""

    def check_path(self, path: Path) -> None:
        return None

    def c_in(self, path: Path, t: Tensor) -> Tensor:
        return torch.ones_like(f64(t))

    def c_noise(self, path: Path, t: Tensor) -> Tensor:
        return path.net_time(t)


@dataclass(frozen=True)
class Eps(_Plain):
    """ε-prediction (Ho et al. 2020 Eq. (11)): x̂_0 = (x_t - σ ε̂)/α; k = 1."""

    name: str = "eps"

    def check_path(self, path: Path) -> None:
        if terminal_snr_is_zero(path):
            raise PathError(f"ε-prediction cannot recover x_0 where α = 0, and the {path.kind} path has zero SNR at "
                            "t_max (Lin et al. 2024): use v, x0, velocity or edm prediction")

    def to_x0(self, out: Tensor, x_t: Tensor, path: Path, t: Tensor) -> Tensor:
        a, s = _as(path, t)
        return x0_from_eps(x_t, out, expand(a, x_t), expand(s, x_t))

    def target(self, x0: Tensor, eps: Tensor, path: Path, t: Tensor) -> Tensor:
        return eps

    def eps_factor(self, path: Path, t: Tensor) -> Tensor:
        return torch.ones_like(f64(t))


@dataclass(frozen=True)
class X0(_Plain):
    """x_0-prediction: x̂_0 = out; ε̂ - ε = -(α/σ)(x̂_0 - x_0), so k = α²/σ² = SNR."""

    name: str = "x0"

    def to_x0(self, out: Tensor, x_t: Tensor, path: Path, t: Tensor) -> Tensor:
        return out

    def target(self, x0: Tensor, eps: Tensor, path: Path, t: Tensor) -> Tensor:
        return x0

    def eps_factor(self, path: Path, t: Tensor) -> Tensor:
        return path.log_snr(f64(t)).exp()


@dataclass(frozen=True)
class V(_Plain):
    """v-prediction (Salimans & Ho 2022): v = α ε - σ x_0, so x̂_0 = (α x_t - σ v̂)/(α² + σ²) on any path
    (α x_t - σ v = (α² + σ²) x_0); ε̂ - ε = α/(α² + σ²)·(v̂ - v), k = α²/(α² + σ²)²
    (SNR/(1 + SNR) on VP)."""

    name: str = "v"

    def to_x0(self, out: Tensor, x_t: Tensor, path: Path, t: Tensor) -> Tensor:
        a, s = _as(path, t)
        n = a**2 + s**2
        return expand(a / n, x_t) * x_t - expand(s / n, x_t) * out

    def target(self, x0: Tensor, eps: Tensor, path: Path, t: Tensor) -> Tensor:
        a, s = _as(path, t)
        return expand(a, x0) * eps - expand(s, x0) * x0

    def eps_factor(self, path: Path, t: Tensor) -> Tensor:
        a, s = _as(path, t)
        return a**2 / (a**2 + s**2) ** 2


@dataclass(frozen=True)
class Velocity(_Plain):
    """Flow-matching velocity (Lipman et al. 2023): u = dα/dt x_0 + dσ/dt ε (ε - x_0 on the linear path).

    With Δ = α dσ/dt - σ dα/dt: x̂_0 = (dσ/dt x_t - σ û)/Δ and ε̂ - ε = (α/Δ)(û - u),
    so k = α²/Δ²."""

    name: str = "velocity"

    def check_path(self, path: Path) -> None:
        if getattr(path, "zero_terminal_snr", False):
            raise PathError("velocity prediction is undefined on a zero-terminal-SNR chain: α ≡ 0 on its last "
                            "interval, so u = 0 there and x̂_0 cannot be read off it; use v or x0 prediction")

    def _d(self, path: Path, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        t = f64(t)
        a, s, da, ds = path.alpha(t), path.sigma(t), path.dalpha_dt(t), path.dsigma_dt(t)
        return a, s, da, ds, a * ds - s * da

    def to_x0(self, out: Tensor, x_t: Tensor, path: Path, t: Tensor) -> Tensor:
        _, s, _, ds, det = self._d(path, t)
        return expand(ds / det, x_t) * x_t - expand(s / det, x_t) * out

    def target(self, x0: Tensor, eps: Tensor, path: Path, t: Tensor) -> Tensor:
        _, _, da, ds, _ = self._d(path, t)
        return expand(da, x0) * x0 + expand(ds, x0) * eps

    def eps_factor(self, path: Path, t: Tensor) -> Tensor:
        a, _, _, _, det = self._d(path, t)
        return (a / det) ** 2


@dataclass(frozen=True)
class EDM:
    """Karras et al. 2022 preconditioning (Table 1, Eq. (7)) in the VE coordinates y = x/α, σ̃ = σ/α of any path:
    D(y) = c_skip y + c_out F(c_in y; c_noise), c_skip = σ_d²/(σ̃² + σ_d²),
    c_out = σ̃ σ_d/√(σ̃² + σ_d²), c_in = 1/√(σ̃² + σ_d²), c_noise = ¼ ln σ̃
    (here ×1000, the scale of kuosan's time embedding).
    Written on x_t with σ̃ = σ/α multiplied through, every coefficient stays finite where α = 0."""

    sigma_data: float = 0.5
    name: str = "edm"

    def check_path(self, path: Path) -> None:
        if not (self.sigma_data > 0 and math.isfinite(self.sigma_data)):
            raise PathError(f"edm needs a finite sigma_data > 0, got {self.sigma_data}")

    def _c(self, path: Path, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(c_skip on x_t, c_out, c_in on x_t), float64."""
        a, s = _as(path, t)
        sd2 = self.sigma_data**2
        n = (s**2 + a**2 * sd2).sqrt()  # α √(σ̃² + σ_d²)
        return sd2 * a / n**2, s * self.sigma_data / n, 1 / n

    def c_in(self, path: Path, t: Tensor) -> Tensor:
        return self._c(path, t)[2]

    def c_noise(self, path: Path, t: Tensor) -> Tensor:
        return -125.0 * path.log_snr(f64(t))  # 1000·¼ ln σ̃ with ln σ̃ = -λ/2

    def to_x0(self, out: Tensor, x_t: Tensor, path: Path, t: Tensor) -> Tensor:
        skip, c_out, _ = self._c(path, t)
        return expand(skip, x_t) * x_t + expand(c_out, x_t) * out

    def target(self, x0: Tensor, eps: Tensor, path: Path, t: Tensor) -> Tensor:
        # F's target (x_0 - c_skip x_t)/c_out with x_t = α x_0 + σ ε
        a, s = _as(path, t)
        skip, c_out, _ = self._c(path, t)
        x_t = expand(a, x0) * x0 + expand(s, x0) * eps
        return (x0 - expand(skip, x0) * x_t) / expand(c_out, x0)

    def eps_factor(self, path: Path, t: Tensor) -> Tensor:
        a, s = _as(path, t)
        return (a * self._c(path, t)[1] / s) ** 2


class NoRegressionTarget(ValueError):
    """A consistency model asked for a diffusion-loss quantity (a target, k(t)) it does not have."""


@dataclass(frozen=True)
class Consistency:
    """A consistency function f(x, σ) on the VE path (Song et al. 2023 App. C; Song & Dhariwal 2023 §3):
    f = c_skip(σ) x + c_out(σ) F(c_in x; c_noise) with c_skip = σ_d²/((σ - σ_min)² + σ_d²),
    c_out = σ_d (σ - σ_min)/√(σ_d² + σ²), c_in = 1/√(σ² + σ_d²), c_noise = ¼ ln σ (×1000, as EDM).
    At σ = σ_min, c_skip = 1 and c_out = 0 exactly, so f(x, σ_min) = x (the boundary condition) for any F.

    ``to_x0`` returns f, the PF-ODE endpoint at σ_min, not E[x_0|x_t]; it is trained by the consistency
    objective (kuosan.objectives.consistency): ``target`` and ``eps_factor`` refuse (NoRegressionTarget)."""

    sigma_data: float = 0.5
    sigma_min: float = 0.002
    name: str = "consistency"

    def check_path(self, path: Path) -> None:
        if path.kind != "ve":
            raise PathError(f"a consistency model lives on the ve path (σ = t), not {path.kind!r}")
        for k in ("sigma_data", "sigma_min"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
                raise PathError(f"consistency needs a finite {k} > 0, got {v!r}")
        if self.sigma_min >= path.t_max:
            raise PathError(f"consistency sigma_min {self.sigma_min:g} must lie below the path's σ_max {path.t_max:g}")

    def _c(self, path: Path, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in) at σ = σ(t) (B,), float64."""
        s = path.sigma(f64(t))
        sd = self.sigma_data
        d = s - self.sigma_min
        return sd**2 / (d**2 + sd**2), sd * d / (sd**2 + s**2).sqrt(), 1 / (s**2 + sd**2).sqrt()

    def c_in(self, path: Path, t: Tensor) -> Tensor:
        return self._c(path, t)[2]

    def c_noise(self, path: Path, t: Tensor) -> Tensor:
        return -125.0 * path.log_snr(f64(t))  # 1000·¼ ln σ, as EDM

    def to_x0(self, out: Tensor, x_t: Tensor, path: Path, t: Tensor) -> Tensor:
        skip, c_out, _ = self._c(path, t)
        return expand(skip, x_t) * x_t + expand(c_out, x_t) * out

    def target(self, x0: Tensor, eps: Tensor, path: Path, t: Tensor) -> Tensor:
        raise NoRegressionTarget("a consistency model has no regression target: f_θ(x_t, σ) is the PF-ODE endpoint, "
                                 "trained against its own value at a lower noise level by the consistency objective "
                                 "(kuosan.objectives.consistency), not by the diffusion loss")

    def eps_factor(self, path: Path, t: Tensor) -> Tensor:
        raise NoRegressionTarget("a consistency model has no ε-prediction weight k(t): the diffusion loss's "
                                 "weightings do not apply to it (use the consistency objective)")


def make_parameterisation(name: str, *, sigma_data: float = 0.5, sigma_min: float = 0.002) -> Parameterisation:
    """The parameterisation called ``name`` (one of ALL_PREDICTIONS); ``sigma_min`` is the consistency model's."""
    if name == "edm":
        return EDM(sigma_data=sigma_data)
    if name == "consistency":
        return Consistency(sigma_data=sigma_data, sigma_min=sigma_min)
    kinds = {"eps": Eps, "x0": X0, "v": V, "velocity": Velocity}
    if name not in kinds:
        raise ValueError(f"unknown prediction {name!r}; choose one of {', '.join(ALL_PREDICTIONS)}")
    return kinds[name]()
