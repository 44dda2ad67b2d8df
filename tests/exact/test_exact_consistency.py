"""The exact consistency function of a mixture: the boundary condition, the closed form for Gaussian data, and
self-consistency along one exact PF-ODE trajectory (Song et al. 2023 Def. 1)."""

from __future__ import annotations

import math

import pytest
import torch

from kuosan.exact import ExactConsistency, GaussianMixture, gaussian, pf_ode_solve, ring

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_boundary_condition_holds_exactly():
    f = ExactConsistency(ring(), sigma_min=0.002)
    x = torch.randn(8, 2, generator=gen(0), dtype=F64)
    assert torch.equal(f(x, torch.full((8,), 0.002, dtype=F64)), x)
    t = torch.tensor([0.002, 0.5] * 4, dtype=F64)  # mixed rows: only the σ_min rows stay put
    out = f(x, t)
    assert torch.equal(out[::2], x[::2]) and not torch.allclose(out[1::2], x[1::2])


def test_gaussian_data_closed_form():
    """N(μ, Σ = U diag(d) Uᵀ) on VE: the PF-ODE scales each eigendirection by √(d + σ̃²), so
    f(x, σ̃) = μ + U diag(√((d + σ_min²)/(d + σ̃²))) Uᵀ (x - μ)."""
    A = torch.tensor([[1.0, 0.4], [-0.3, 0.6]], dtype=F64)
    mu, cov = torch.tensor([0.5, -1.0], dtype=F64), A @ A.T
    f = ExactConsistency(gaussian(mu, cov), sigma_min=0.002)
    d, U = torch.linalg.eigh(cov)
    x = 3 * torch.randn(6, 2, generator=gen(1), dtype=F64)
    for s in (0.01, 0.7, 12.0, 80.0):
        scale = ((d + 0.002**2) / (d + s**2)).sqrt()
        ref = mu + ((x - mu) @ U) * scale @ U.T
        torch.testing.assert_close(f(x, torch.full((6,), s, dtype=F64)), ref, rtol=0, atol=1e-8)


def test_self_consistency_along_one_trajectory():
    """f(x_σ, σ) = f(x_s, s) for points of one exact trajectory (x_s = the ODE solution from x_σ), with a
    per-row time tensor holding several levels at once."""
    mix = ring(k=5, radius=1.5, std=0.1)
    f = ExactConsistency(mix, sigma_min=0.002)
    g = gen(2)
    x_T = 10.0 * torch.randn(4, 2, generator=g, dtype=F64)
    levels = (10.0, 2.0, 0.3, 0.02)
    pts = [x_T]
    for a, b in zip(levels[:-1], levels[1:]):  # one trajectory through every level (VE state = VP·√(1+σ̃²))
        vp = pf_ode_solve(mix, pts[-1] / math.sqrt(1 + a**2), a, b)
        pts.append(vp * math.sqrt(1 + b**2))
    x = torch.cat(pts)  # (16, 2): 4 trajectories at 4 levels
    t = torch.tensor(levels, dtype=F64).repeat_interleave(4)
    out = f(x, t).reshape(4, 4, 2)
    for k in range(1, 4):
        torch.testing.assert_close(out[k], out[0], rtol=0, atol=1e-7)
    # the endpoint lies on the data: near a ring mode (radius 1.5 ± a few std)
    assert bool(((out[0].norm(dim=1) - 1.5).abs() < 0.5).all())


def test_image_shaped_input_and_bad_times():
    mix = GaussianMixture(torch.zeros(1, 4, dtype=F64), torch.eye(4, dtype=F64)[None], torch.ones(1))
    f = ExactConsistency(mix, sigma_min=0.002)
    x = torch.randn(3, 1, 2, 2, generator=gen(3), dtype=F64)
    out = f(x, 1.0)
    assert out.shape == x.shape
    torch.testing.assert_close(out, x * math.sqrt((1 + 0.002**2) / 2), rtol=0, atol=1e-8)
    with pytest.raises(ValueError, match="consistency times"):
        f(x, 0.001)
    with pytest.raises(ValueError, match="sigma_min"):
        ExactConsistency(mix, sigma_min=0.0)
