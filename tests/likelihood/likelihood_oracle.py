"""Closed forms for the likelihood tests, derived independently of the package (numpy, Σ's eigenvalues λ_i).

Gaussian data x_0 ~ N(0, Σ) with its exact denoiser make everything closed form. With x_t = α x_0 + σ ε,
Cov(x_0|x_t) has trace Σ_i λ_i σ²/(α² λ_i + σ²), and for p(x_s|x_t) = N(μ̃(x_t, x̂_0), v I)
E KL(q(x_s|x_t, x_0) || p) = d/2 (β̃/v - 1 - log(β̃/v)) + c² tr Cov(x_0|x_t)/(2v), c = α_s σ²_{t|s}/σ_t².
The chain is Ho et al.'s T = 1000 linear β table, rebuilt here from its endpoints.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kuosan.exact import ExactDenoiser, curve_cov, gaussian
from kuosan.paths import discrete_vp

LN2 = math.log(2)
SCHED = discrete_vp("linear", 1000)
BETAS = np.linspace(1e-4, 0.02, 1000)  # Ho et al. §4, independent of kuosan's table
AB = np.concatenate([[1.0], np.cumprod(1 - BETAS)])  # ᾱ_t, t = 0..T
EYE8 = torch.eye(8, dtype=torch.float64)
CURVES = curve_cov(64)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _post(t: int, s: int, lams: np.ndarray):
    """β̃, c (x_0 coefficient of μ̃), σ²_{t|s} and tr Cov(x_0|x_t) for the jump t -> s."""
    a2, sig2, sig2_s = AB[t], 1 - AB[t], 1 - AB[s]
    sig2_ts = 1 - AB[t] / AB[s]
    covtr = float(np.sum(lams * sig2 / (a2 * lams + sig2)))
    return sig2_ts * sig2_s / sig2, math.sqrt(AB[s]) * sig2_ts / sig2, sig2_ts, covtr


def _var(kind: str, t: int, lams: np.ndarray) -> float:
    lam2, c, sig2_ts, covtr = _post(t, t - 1, lams)
    if kind == "beta":
        return sig2_ts
    if kind == "beta_tilde":
        return lam2 if t > 1 else sig2_ts  # β̃_1 = 0: the decoder takes β_1
    return lam2 + c**2 * covtr / len(lams)  # optimal isotropic: minimiser of the expected KL over v


def expected_bound(lams: np.ndarray, kind: str) -> dict[str, float]:
    """E_x0 of every VLB term in bits/dim for N(0, diag λ) data and its exact denoiser; continuous decoder."""
    d, T = len(lams), len(AB) - 1
    bpd = 1 / (d * LN2)
    prior = 0.5 * np.sum((1 - AB[T]) + AB[T] * lams - 1 - np.log(1 - AB[T]))
    terms = []
    for t in range(2, T + 1):
        lam2, c, _, covtr = _post(t, t - 1, lams)
        v = _var(kind, t, lams)
        terms.append(0.5 * d * (lam2 / v - 1 - math.log(lam2 / v)) + c**2 * covtr / (2 * v))
    v1, covtr1 = _var(kind, 1, lams), _post(1, 0, lams)[3]
    decoder = 0.5 * (d * math.log(2 * math.pi * v1) + covtr1 / v1)
    true = 0.5 * np.sum(np.log(2 * math.pi * math.e * lams))
    total = prior + sum(terms) + decoder
    return dict(total=total * bpd, true=true * bpd, gap=(total - true) * bpd, prior=prior * bpd,
                diffusion=sum(terms) * bpd, decoder=decoder * bpd, terms=np.array([decoder] + terms) * bpd)


def exact_gamma(lams: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Γ_t = E||ε̂||²/d = mean_i σ²/(α² λ_i + σ²) (ε̂ = σ C⁻¹ x_t, C = α² Σ + σ² I)."""
    a2 = np.exp(np.interp(ts, np.arange(len(AB)), np.log(AB)))
    return np.array([np.mean((1 - a) / (a * lams + 1 - a)) for a in a2])


def true_nll_bpd(x: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    mvn = torch.distributions.MultivariateNormal(torch.zeros(cov.shape[0], dtype=torch.float64), cov)
    return -mvn.log_prob(x) / (x.shape[1] * LN2)


def setup(cov: torch.Tensor, n: int, seed: int, path=SCHED):
    """N(0, cov), its exact denoiser on ``path`` and n samples."""
    g = gaussian(torch.zeros(cov.shape[0]), cov)
    return g, ExactDenoiser(g, path), g.sample(n, gen(seed))
