"""Straightness of a flow (Liu et al. 2023 Def. 2.4) against closed forms: Gaussian data's 1-rectified flow (linear
velocity, known trajectories), its 2-rectified flow (straight: S = 0), and the exact mixture velocity (S > 0 and
Thm 3.3's E||Z_1 - Z_0||² <= E∫||v||² dt <= E||X_1 - X_0||²)."""

from __future__ import annotations

import math

import pytest
import torch

from kuosan.exact import ExactDenoiser, GaussianMixture, gaussian
from kuosan.families.straightness import independent_cost, integrate, straightness, velocity_field
from kuosan.paths import Linear

C = 2 - math.pi / 2  # S of 1-rectified flow per unit of tr Σ^{1/2} (derived below)


def _gaussian(d: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    return torch.randn(d, generator=g, dtype=torch.float64), A @ A.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def _closed_form(mu, cov, x1):
    """Per-sample S, E∫||v||² dt and endpoint of 1-rectified flow from N(0, I) to N(μ, Σ).

    With Σ = U diag(λ) Uᵀ, z = Uᵀ x_1 and c_k(t) = (1-t)² λ_k + t² = Var of x_t along u_k, the velocity
    E[x_1 - x_0 | x_t] = -μ + U diag(c'/(2c)) Uᵀ (x_t - (1-t)μ) gives x_t = (1-t)μ + U diag(√c(t)) z, so
    x_0 = μ + Σ^{1/2} x_1. ∫_0^1 (d√c/dt)² dt = 1 + λ - (π/2)√λ (the integrand is (1+λ) - λ/c), and with
    x_1 - x_0 = -μ + U diag(1 - √λ) z:
    S = Σ_k z_k² (1 + λ_k - (π/2)√λ_k - (1 - √λ_k)²) = (2 - π/2) Σ_k √λ_k z_k²."""
    lam, U = torch.linalg.eigh(cov)
    z, r = x1 @ U, lam.sqrt()
    S = (C * r * z**2).sum(1)
    mu_u = mu @ U
    kinetic = mu.square().sum() - 2 * (mu_u * (1 - r) * z).sum(1) + ((1 + lam - math.pi / 2 * r) * z**2).sum(1)
    return S, kinetic, mu + z * r @ U.T


def test_gaussian_1rf_matches_closed_form():
    mu, cov = _gaussian()
    v = velocity_field(ExactDenoiser(gaussian(mu, cov), Linear()))  # velocity_of of the exact denoiser
    x1 = torch.randn(2000, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    S, kin, x0_exact = _closed_form(mu, cov, x1)
    est = straightness(v, x1, steps=64, method="heun", batch_size=512)
    assert est.straightness == pytest.approx(float(S.mean()), rel=2e-3)
    assert est.kinetic == pytest.approx(float(kin.mean()), rel=2e-3)
    x0, _, _ = integrate(v, x1, 64, "heun")
    assert (x0 - x0_exact).norm(dim=1).mean() < 1e-3
    assert est.cost == pytest.approx(float((x1 - x0_exact).square().sum(1).mean()), rel=1e-3)
    assert est.nfe == 127 and est.n == 2000
    # the quadrature's error falls at the integrator's order: Heun 2, Euler 1
    err = {(m, n): abs(straightness(v, x1[:500], steps=n, method=m).straightness - float(S[:500].mean()))
           for m in ("euler", "heun") for n in (16, 32)}
    assert 3.2 < err["heun", 16] / err["heun", 32] < 5
    assert 1.6 < err["euler", 16] / err["euler", 32] < 2.4


def test_gaussian_2rf_is_straight():
    """The rectified Gaussian coupling Z_0 = μ + Σ^{1/2} Z_1 is deterministic and linear, so its rectified flow
    v(x, t) = (I - Σ^{1/2}) M_t⁻¹ (x - (1-t)μ) - μ, M_t = (1-t)Σ^{1/2} + t I, moves every point on a line: S = 0
    (and Euler is exact on it), although v is not constant in x or t."""
    mu, cov = _gaussian(seed=3)
    lam, U = torch.linalg.eigh(cov)
    root = U @ torch.diag(lam.sqrt()) @ U.T
    eye = torch.eye(3, dtype=torch.float64)

    def v(x, t):
        M = (1 - t)[:, None, None] * root + t[:, None, None] * eye  # (B, 3, 3)
        y = torch.linalg.solve(M, (x - (1 - t)[:, None] * mu)[..., None])[..., 0]  # M_t⁻¹ (x - (1-t)μ) = z
        return y @ (eye - root).T - mu

    x1 = torch.randn(300, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for method in ("euler", "heun"):
        est = straightness(v, x1, steps=5, method=method)
        assert est.straightness < 1e-20 * est.kinetic and est.kinetic == pytest.approx(est.cost, rel=1e-12)
    x0, _, _ = integrate(v, x1, 3, "euler")
    assert torch.allclose(x0, mu + x1 @ root, atol=1e-12)
    # a 1-rectified flow is not straight: the same estimator on the 1-RF of the same Gaussian
    v1 = velocity_field(ExactDenoiser(gaussian(mu, cov), Linear()))
    assert straightness(v1, x1, steps=16).straightness > 0.5 * C * float(lam.sqrt().sum())


def test_mixture_1rf_thm_3_3():
    """Exact mixture velocity: S > 0, and E||Z_1 - Z_0||² <= E∫||v||² dt <= E||X_1 - X_0||² (independent coupling,
    = D + tr Cov + ||mean||² in closed form)."""
    means = torch.tensor([[2.0, 0.0], [-1.0, 1.5], [-1.0, -1.5]])
    mix = GaussianMixture(means, 0.3**2 * torch.eye(2).expand(3, 2, 2), torch.tensor([0.5, 0.3, 0.2]))
    v = velocity_field(ExactDenoiser(mix, Linear()))
    x1 = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    est = straightness(v, x1, steps=64)
    indep = 2 + float(mix.cov.trace() + mix.mean.square().sum())
    assert est.straightness > 10 * est.straightness_se > 0
    assert est.cost <= est.kinetic <= indep
    assert est.straightness == pytest.approx(est.kinetic - est.cost, rel=1e-9)  # ∫ v dt = x_1 - x_0 exactly
    # the data-average form of the independent cost agrees with the closed form
    data = mix.sample(200_000, torch.Generator().manual_seed(5))
    m, se = independent_cost(data)
    assert abs(m - indep) < 4 * se


@pytest.mark.parametrize("kw, match", [({"steps": 0}, "steps"), ({"method": "rk4"}, "method")])
def test_bad_arguments(kw, match):
    v = lambda x, t: x  # noqa: E731
    with pytest.raises(ValueError, match=match):
        straightness(v, torch.zeros(4, 2), **kw)
    with pytest.raises(ValueError, match="batch"):
        straightness(v, torch.zeros(4))
