"""Exact test bed: Gaussian-mixture data, its closed-form denoiser E[x_0|x_t], score and log-density.

For x_0 ~ Σ_k π_k N(μ_k, Σ_k) and x_t = α x_0 + σ ε, the marginal is Σ_k π_k N(α μ_k, α² Σ_k + σ² I)
and E[x_0|x_t] = Σ_k w_k(x_t) [μ_k + α Σ_k (α² Σ_k + σ² I)^{-1} (x_t - α μ_k)], w_k the posterior
component weights. Each Σ_k is eigendecomposed once (Σ_k = U diag(d) Uᵀ), so every (α, σ) costs two
matrix products. Data are vectors (B, D); everything is computed in the dtype of x_t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..broadcast import batch_times
from ..paths import Path


@dataclass(eq=False)
class GaussianMixture:
    """Mixture of K Gaussians in D dimensions: means (K, D), covs (K, D, D), weights (K,)."""

    means: Tensor
    covs: Tensor
    weights: Tensor
    _eig: tuple[Tensor, Tensor] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.means = torch.as_tensor(self.means, dtype=torch.float64)
        self.covs = torch.as_tensor(self.covs, dtype=torch.float64)
        self.weights = torch.as_tensor(self.weights, dtype=torch.float64)
        self.weights = self.weights / self.weights.sum()
        d, U = torch.linalg.eigh(self.covs)  # (K, D), (K, D, D)
        self._eig = (d.clamp_min(0), U)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def mean(self) -> Tensor:
        return self.weights @ self.means

    @property
    def cov(self) -> Tensor:
        """Total covariance Σ_k π_k (Σ_k + μ_k μ_kᵀ) - μ μᵀ."""
        m = self.mean
        second = torch.einsum("k,kij->ij", self.weights, self.covs + self.means[:, :, None] * self.means[:, None, :])
        return second - m[:, None] * m[None, :]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n samples (n, D), float64."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        d, U = self._eig
        z = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        return self.means[k] + torch.einsum("nij,nj->ni", U[k], d[k].sqrt() * z)

    def _moments(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per component: log N(x; α μ_k, α² Σ_k + σ² I) (B, K) and E_k[x_0|x] (B, K, D)."""
        d, U = (u.to(x.dtype).to(x.device) for u in self._eig)
        mu = self.means.to(x.dtype).to(x.device)
        a2, s2 = (alpha**2)[:, None, None], (sigma**2)[:, None, None]  # (B, 1, 1)
        lam = a2 * d[None] + s2  # (B, K, D): eigenvalues of the marginal covariance
        r = x[:, None, :] - alpha[:, None, None] * mu[None]  # (B, K, D)
        ru = torch.einsum("bkd,kde->bke", r, U)  # r in each component's eigenbasis
        logp = -0.5 * ((ru**2 / lam).sum(-1) + lam.log().sum(-1) + self.dim * math.log(2 * math.pi))
        x0 = mu[None] + torch.einsum("bke,kde->bkd", alpha[:, None, None] * d[None] / lam * ru, U)
        return logp, x0, lam

    def log_prob_t(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """log p_t(x) of the noisy marginal (B,); α = 1, σ = 0 gives the data density (non-singular Σ)."""
        logp, _, _ = self._moments(x, alpha, sigma)
        return torch.logsumexp(logp + self.weights.to(x).log(), dim=1)

    def denoise(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """E[x_0 | x_t = x] (B, D) for per-sample α, σ (B,)."""
        logp, x0, _ = self._moments(x, alpha, sigma)
        w = torch.softmax(logp + self.weights.to(x).log(), dim=1)  # (B, K)
        return torch.einsum("bk,bkd->bd", w, x0)


def gaussian(mean: Tensor, cov: Tensor) -> GaussianMixture:
    """A single Gaussian N(mean, cov) as a one-component mixture."""
    mean = torch.as_tensor(mean, dtype=torch.float64)
    return GaussianMixture(mean[None], torch.as_tensor(cov, dtype=torch.float64)[None], torch.ones(1))


def curve_cov(dim: int = 64, scale: float = 0.25, length: float = 8.0, jitter: float = 1e-3) -> Tensor:
    """Seed 001's smooth-curve covariance: scale·exp(-(i-j)²/(2ℓ²)) + jitter·I (low rank + full rank)."""
    i = torch.arange(dim, dtype=torch.float64)
    return (scale * torch.exp(-((i[:, None] - i[None]) ** 2) / (2 * length**2))
            + jitter * torch.eye(dim, dtype=torch.float64))


def ring(k: int = 8, radius: float = 2.0, std: float = 0.05) -> GaussianMixture:
    """k narrow isotropic Gaussians evenly spaced on a circle in 2-D."""
    ang = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    means = radius * torch.stack([ang.cos(), ang.sin()], 1)
    return GaussianMixture(means, (std**2) * torch.eye(2, dtype=torch.float64).expand(k, 2, 2).clone(), torch.ones(k))


class ExactDenoiser:
    """The optimal denoiser D(x_t, t) = E[x_0|x_t] of a GaussianMixture on a path; x_t (B, *D)."""

    def __init__(self, mixture: GaussianMixture, path: Path):
        self.mixture, self.path = mixture, path

    def __call__(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        t = batch_times(t, x_t)
        flat = x_t.reshape(x_t.shape[0], -1)
        a, s = self.path.alpha(t).to(x_t.dtype), self.path.sigma(t).to(x_t.dtype)
        return self.mixture.denoise(flat, a, s).reshape(x_t.shape)


def pf_ode_solve(mixture: GaussianMixture, x: Tensor, ve_sigma_from: float, ve_sigma_to: float = 0.0,
                 rtol: float = 1e-11, atol: float = 1e-12) -> Tensor:
    """Exact probability-flow ODE endpoint (Song et al. 2021 Eq. (13)) between VE noise levels σ̃ = σ/α.

    Integrates kuosan.pf_ode's dy/du = y - D(y) (u = log σ̃, y = x/α) with the mixture's exact denoiser in
    float64 by scipy's DOP853. ``x`` is the VP state x = y/√(1 + σ̃²) (B, D) at σ̃ = ve_sigma_from; returns the
    VP state at ve_sigma_to (σ̃ = 0: data, stopped at 1e-7 where the remaining change is below 1e-10). For another
    path, convert with its α: x_path = α_path · y.
    """
    import numpy as np
    from scipy.integrate import solve_ivp

    from ..paths import VE
    from ..pf_ode import rhs as pf_rhs

    shape = x.shape
    D = ExactDenoiser(mixture, VE(sigma_max=max(ve_sigma_from, ve_sigma_to, 1.0)))  # VE: α = 1, so x = y
    y0 = (x.detach().to(torch.float64).cpu().reshape(shape[0], -1) * math.sqrt(1.0 + ve_sigma_from**2)).numpy()
    u_to = math.log(max(ve_sigma_to, 1e-7))

    def f(u: float, y: np.ndarray) -> np.ndarray:
        return pf_rhs(D, torch.from_numpy(y).reshape(y0.shape), u)[0].numpy().ravel()

    sol = solve_ivp(f, (math.log(ve_sigma_from), u_to), y0.ravel(), method="DOP853", rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"exact ODE solve failed: {sol.message}")
    y = torch.from_numpy(sol.y[:, -1]).reshape(shape)
    return (y / math.sqrt(1.0 + ve_sigma_to**2)).to(x.dtype)
