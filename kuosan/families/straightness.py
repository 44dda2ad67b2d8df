"""Straightness of a flow (Liu et al. 2023, "Flow straight and fast", Def. 2.4):
S(v) = E ∫_0^1 ||v(Z_t, t) - (Z_1 - Z_0)||² dt along the flow's own ODE trajectories dZ_t/dt = v(Z_t, t).

Conventions: the Linear path (α = 1 - t, σ = t), t = 1 is noise, Z_1 = x_1 ~ N(0, prior_std² I), Z_0 the ODE
endpoint at t = 0, v = dx/dt (kuosan.denoiser.velocity_of of a denoiser). The integral is estimated along an
N-step Euler or Heun integration from t = 1 to t = 0 on the uniform grid, with the quadrature the integrator itself
uses: weights w_j ≥ 0 (Σ w_j = 1) on the slopes v_j it evaluates, so x_1 - x_0 = Σ w_j v_j holds exactly and
S = Σ_j w_j ||v_j - Σ_k w_k v_k||² (a weighted variance, ≥ 0, accumulated by West's stable update).
Also E∫||v||² dt (kinetic energy) and E||Z_1 - Z_0||² (the flow's transport cost); on exact trajectories
S = E∫||v||² dt - E||Z_1 - Z_0||². Liu et al. 2023 Thm 3.3: for the rectified flow of a coupling
(X_0, X_1), E∫||v||² dt <= E||X_1 - X_0||² (``independent_cost``: X_0 ~ data, X_1 ~ N(0, I) independent, for
1-rectified flow; ``coupling_cost`` of the pairs for k-rectified flow).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor

from ..denoiser import Denoiser, velocity_of

Velocity = Callable[[Tensor, Tensor], Tensor]  # v(x (B, *D), t (B,) float64) -> dx/dt (B, *D)
Method = Literal["euler", "heun"]


@dataclass(frozen=True)
class StraightnessEstimate:
    """S, E∫||v||² dt and E||Z_1 - Z_0||² over n trajectories, each with its standard error over samples."""

    straightness: float  # E ∫_0^1 ||v(Z_t, t) - (Z_1 - Z_0)||² dt
    straightness_se: float
    kinetic: float  # E ∫_0^1 ||v(Z_t, t)||² dt
    kinetic_se: float
    cost: float  # E ||Z_1 - Z_0||² of the flow's own (deterministic) coupling
    cost_se: float
    n: int
    steps: int
    method: str
    nfe: int  # velocity evaluations per trajectory

    def as_dict(self) -> dict[str, float | int | str]:
        return dict(self.__dict__)


def velocity_field(D: Denoiser, **cond: Tensor) -> Velocity:
    """The PF-ODE velocity v(x, t) = dα/dt x̂_0 + dσ/dt ε̂ of a denoiser (flow matching's u on the Linear path)."""

    def v(x: Tensor, t: Tensor) -> Tensor:
        return velocity_of(D, x, t, D(x, t, **cond))

    return v


def _nodes(steps: int, method: Method) -> list[tuple[float, float, bool]]:
    """(t, s, corrected) per step of the uniform grid 1 -> 0; Heun has no correction into t = 0, where the velocity
    of a denoiser divides by σ = 0 (Karras et al. 2022 Alg. 1 likewise)."""
    ts = [1.0 - i / steps for i in range(steps)] + [0.0]
    return [(t, s, method == "heun" and s > 0) for t, s in zip(ts[:-1], ts[1:])]


@torch.no_grad()
def integrate(v: Velocity, x1: Tensor, steps: int, method: Method = "heun") -> tuple[Tensor, Tensor, Tensor]:
    """Carry x_1 (B, *D) from t = 1 to t = 0; returns (x_0, ∫||v||² dt, S) per sample, the integrals (B,) float64
    by the integrator's own quadrature (see the module docstring)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if method not in ("euler", "heun"):
        raise ValueError(f"method must be 'euler' or 'heun', got {method!r}")
    B = x1.shape[0]
    x = x1
    W = torch.zeros(B, dtype=torch.float64, device=x1.device)  # weight so far
    mean = torch.zeros((B, x1[0].numel()), dtype=torch.float64, device=x1.device)  # Σ w v / W
    m2 = torch.zeros(B, dtype=torch.float64, device=x1.device)  # Σ w ||v - mean||²
    kin = torch.zeros(B, dtype=torch.float64, device=x1.device)  # Σ w ||v||²

    def add(w: float, vj: Tensor) -> None:
        nonlocal W, mean, m2, kin
        f = vj.reshape(B, -1).double()
        W = W + w
        delta = f - mean
        mean = mean + (w / W)[:, None] * delta
        m2 = m2 + w * (delta * (f - mean)).sum(1)
        kin = kin + w * f.square().sum(1)

    for t, s, corrected in _nodes(steps, method):
        h = s - t  # < 0: time runs backwards
        v1 = v(x, torch.full((B,), t, dtype=torch.float64, device=x.device))
        x_e = x + h * v1
        if not corrected:
            add(-h, v1)
            x = x_e
            continue
        v2 = v(x_e, torch.full((B,), s, dtype=torch.float64, device=x.device))
        add(-h / 2, v1)
        add(-h / 2, v2)
        x = x + (h / 2) * (v1 + v2)
    return x, kin, m2


def _mean_se(a: Tensor) -> tuple[float, float]:
    n = a.numel()
    return float(a.mean()), (float(a.std()) / math.sqrt(n) if n > 1 else float("nan"))


def straightness(v: Velocity, x1: Tensor, *, steps: int = 64, method: Method = "heun",
                 batch_size: int = 1024) -> StraightnessEstimate:
    """S, E∫||v||² dt and E||Z_1 - Z_0||² of the flow v from the noises x1 (n, *D) (Liu et al. 2023 Def. 2.4)."""
    if x1.ndim < 2 or x1.shape[0] < 1:
        raise ValueError(f"x1 must be a batch (n, *D) of noises, got shape {tuple(x1.shape)}")
    kins, ss, costs = [], [], []
    for start in range(0, x1.shape[0], batch_size):
        xb = x1[start:start + batch_size]
        x0, kin, s = integrate(v, xb, steps, method)
        kins.append(kin)
        ss.append(s)
        costs.append((xb - x0).reshape(len(xb), -1).double().square().sum(1))
    S, K, C = (torch.cat(a).cpu() for a in (ss, kins, costs))
    nfe = steps if method == "euler" else 2 * steps - 1
    return StraightnessEstimate(*_mean_se(S), *_mean_se(K), *_mean_se(C), n=x1.shape[0], steps=steps, method=method,
                                nfe=nfe)


def coupling_cost(x0: Tensor, x1: Tensor) -> tuple[float, float]:
    """E||x_1 - x_0||² of given pairs (n, *D), with its standard error."""
    return _mean_se((x1 - x0).reshape(len(x0), -1).double().square().sum(1))


def independent_cost(data: Tensor, prior_std: float = 1.0) -> tuple[float, float]:
    """E||X_1 - X_0||² for X_0 ~ data (n, *D) and X_1 ~ N(0, prior_std² I) independent: D·prior_std² + E||X_0||²
    (the cross term vanishes: E X_1 = 0), with the standard error of the data average."""
    d = data[0].numel()
    m, se = _mean_se(data.reshape(len(data), -1).double().square().sum(1))
    return d * prior_std**2 + m, se
