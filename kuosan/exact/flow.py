"""Exact flow matching on a Gaussian mixture: the velocity u(x, t) = E[x_1 - x_0 | x_t] in closed form and the
straightness of 1-rectified flow (Liu et al. 2023).

On the linear path x_t = (1 - t) x_0 + t x_1 (x_1 = ε ~ N(0, I)) and, given component k, (x_0, ε, x_t) are jointly
Gaussian, so with C_k = α² Σ_k + σ² I = U_k diag(Λ_k) U_kᵀ (Λ_k = α² d_k + σ²) and r_k = x_t - α μ_k:
    E[x_0 | x_t, k] = μ_k + α Σ_k C_k⁻¹ r_k,      E[ε | x_t, k] = σ C_k⁻¹ r_k,
    u_k(x_t) = α' E[x_0|x_t,k] + σ' E[ε|x_t,k] = α' μ_k + U_k diag(½ dlog Λ_k/dt) U_kᵀ r_k,
    u(x_t) = Σ_k w_k(x_t) u_k(x_t),   w_k ∝ π_k N(x_t; α μ_k, C_k)   (Lipman et al. 2023 Eq. (8), mixed over k).
No division by σ or α: u is finite at t = 1 (u = x - E[x_0]) and, for non-singular Σ_k, at t = 0 (u = -x).
On any other path the same formula is the path's PF-ODE velocity dx/dt = α' x̂_0 + σ' ε̂.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..broadcast import batch_times
from ..paths import Linear, Path
from .mixture import GaussianMixture


class ExactVelocity:
    """u(x, t) = E[α' x_0 + σ' ε | x_t = x] of a GaussianMixture on a path (Linear: E[x_1 - x_0 | x_t]); x (B, D)."""

    def __init__(self, mixture: GaussianMixture, path: Path | None = None):
        self.mixture, self.path = mixture, path if path is not None else Linear()
        d, U = torch.linalg.eigh(mixture.covs)  # (K, D), (K, D, D): its own decomposition, not the denoiser's
        self._d, self._U = d.clamp_min(0), U

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        """The velocity (B, D) at states x (B, D) and times t (B,) (float64; a scalar is broadcast)."""
        t = batch_times(t, x)
        p, dt = self.path, x.dtype
        a, s = p.alpha(t).to(dt), p.sigma(t).to(dt)  # (B,)
        da, ds = p.dalpha_dt(t).to(dt), p.dsigma_dt(t).to(dt)
        m = self.mixture
        mu, d, U = (v.to(x.device, dt) for v in (m.means, self._d, self._U))  # (K, D), (K, D), (K, D, D)
        lam = (a**2)[:, None, None] * d[None] + (s**2)[:, None, None]  # (B, K, D): eigenvalues of C_k
        r = x[:, None, :] - a[:, None, None] * mu[None]  # (B, K, D)
        ru = torch.einsum("bkd,kde->bke", r, U)  # r_k in component k's eigenbasis
        logw = -0.5 * ((ru**2 / lam).sum(-1) + lam.log().sum(-1) + m.dim * math.log(2 * math.pi))
        w = torch.softmax(logw + m.weights.to(x.device, dt).log(), dim=1)  # (B, K) posterior component weights
        rate = ((a * da)[:, None, None] * d[None] + (s * ds)[:, None, None]) / lam  # ½ dlog Λ/dt (B, K, D)
        u_k = da[:, None, None] * mu[None] + torch.einsum("bke,kde->bkd", rate * ru, U)  # (B, K, D)
        return torch.einsum("bk,bkd->bd", w, u_k)


@dataclass(frozen=True)
class Straightness:
    """Exact 1-rectified flow of a mixture (Liu et al. 2023): straightness S with its standard error, the kinetic
    energy E∫||u||² dt, the transport costs E||x_1 - x_0||² of the independent and of the rectified coupling, and
    the coupling itself (x0 (n, D) data ends of the noises x1 (n, D))."""

    straightness: float  # E ∫_0^1 ||u(x_t, t) - (x_1 - x_0)||² dt along the ODE trajectories
    straightness_se: float
    kinetic: float  # E ∫_0^1 ||u(x_t, t)||² dt
    independent_cost: float  # E||x_1 - x_0||² with x_0 ~ data, x_1 ~ N(0, I) independent (closed form)
    rectified_cost: float  # E||x_1 - x_0||² of the coupling the ODE makes
    x0: Tensor
    x1: Tensor


def _simpson(f: Tensor, h: float) -> Tensor:
    """Composite Simpson's rule over dim 0 of f (N + 1, ...) with N even and spacing h."""
    return h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum(0) + 2 * f[2:-1:2].sum(0))


def exact_straightness(mixture: GaussianMixture, n: int = 2000, steps: int = 200,
                       generator: torch.Generator | None = None, *, x1: Tensor | None = None) -> Straightness:
    """S = E∫||u(x_t,t) - (x_1 - x_0)||² dt of 1-rectified flow (Liu et al. 2023 Def. 2.4) and its transport costs.

    x_1 ~ N(0, I) (n, D) (or the given noises ``x1`` (n, D)) is carried from t = 1 to t = 0 by dx/dt = u(x, t)
    (ExactVelocity on the linear path) with ``steps`` classical RK4 steps in float64, on s = √t uniform (t = s²,
    dt = 2s ds: steps crowd near the data, where narrow components make u change fast); the integrals over t are
    Simpson's rule on the same nodes.
    Liu et al. 2023 Thm 3.3: E∫||u||² dt <= E||x_1 - x_0||² of the independent coupling; and on exact
    trajectories ∫u dt = x_1 - x_0, so S = E∫||u||² dt - E||x_1 - x_0||²_rectified.
    """
    if x1 is not None:
        n = x1.shape[0] if x1.ndim == 2 and x1.shape[1] == mixture.dim else -1
        if n < 0:
            raise ValueError(f"x1 must have shape (n, {mixture.dim}), got {tuple(x1.shape)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2 or steps % 2:
        raise ValueError(f"steps must be an even integer >= 2 (Simpson's rule), got {steps!r}")
    u = ExactVelocity(mixture, Linear())
    x1 = torch.randn(n, mixture.dim, generator=generator, dtype=torch.float64) if x1 is None else x1.double()
    s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)  # descending s = √t
    h = 1.0 / steps

    def f(x: Tensor, si: float) -> Tensor:  # dx/ds = 2s u(x, s²)  (B, D)
        return 2 * si * u(x, torch.full((n,), si * si, dtype=torch.float64))

    xs, x = [x1], x1
    for i in range(steps):  # RK4 from s_i down to s_{i+1} (step -h)
        si = float(s[i])
        k1 = f(x, si)
        k2 = f(x - 0.5 * h * k1, si - 0.5 * h)
        k3 = f(x - 0.5 * h * k2, si - 0.5 * h)
        k4 = f(x - h * k3, si - h)
        x = x - h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        xs.append(x)
    traj = torch.stack(xs)  # (steps + 1, n, D) at s descending
    x0 = traj[-1]
    vel = torch.stack([u(traj[i], torch.full((n,), float(s[i]) ** 2, dtype=torch.float64)) for i in range(steps + 1)])
    jac = 2 * s[:, None]  # dt/ds at the nodes (steps + 1, 1)
    dev = ((vel - (x1 - x0)[None]) ** 2).sum(-1) * jac  # (steps + 1, n): ||u - (x_1 - x_0)||² dt/ds
    per_sample = _simpson(dev, h)  # node order does not matter for Simpson on a symmetric grid
    kinetic = _simpson(((vel**2).sum(-1) * jac), h)
    m = mixture
    independent = float(torch.trace(m.cov) + m.mean @ m.mean) + m.dim  # E||x_0||² + E||ε||² (independent)
    return Straightness(float(per_sample.mean()), float(per_sample.std() / math.sqrt(n)), float(kinetic.mean()),
                        independent, float(((x1 - x0) ** 2).sum(-1).mean()), x0, x1)
