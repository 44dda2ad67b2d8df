"""The exact flow-matching velocity of a Gaussian mixture against three independent answers (the exact denoiser's
velocity, a Monte Carlo posterior mean, the time derivative of exact PF-ODE trajectories), and the exact
straightness of 1-rectified flow against the closed form for Gaussian data and Liu et al. 2023's inequality."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad

from kuosan.denoiser import velocity_of
from kuosan.exact import ExactDenoiser, ExactVelocity, GaussianMixture, exact_straightness, gaussian, pf_ode_solve, ring
from kuosan.paths import VE, Linear, VPCosine

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mixture(dim: int = 2, k: int = 3, seed: int = 0, scale: float = 0.4) -> GaussianMixture:
    g = gen(seed)
    means = 1.5 * torch.randn(k, dim, generator=g, dtype=F64)
    A = torch.randn(k, dim, dim, generator=g, dtype=F64) * scale
    covs = A @ A.transpose(1, 2) + 0.05 * torch.eye(dim, dtype=F64)
    return GaussianMixture(means, covs, torch.rand(k, generator=g, dtype=F64) + 0.2)


@pytest.mark.parametrize("path", [Linear(), VPCosine(), VE(sigma_max=80.0)], ids=lambda p: p.kind)
def test_equals_the_exact_denoisers_velocity(path):
    """u = dα/dt x̂_0 + dσ/dt ε̂ with x̂_0 from ExactDenoiser (kuosan.denoiser.velocity_of) on every path."""
    mix = mixture(dim=3)
    x = 2 * torch.randn(64, 3, generator=gen(1), dtype=F64)
    t = (0.02 + 0.96 * torch.rand(64, generator=gen(2), dtype=F64)) * path.t_max
    D = ExactDenoiser(mix, path)
    torch.testing.assert_close(ExactVelocity(mix, path)(x, t), velocity_of(D, x, t, D(x, t)), rtol=1e-9, atol=1e-9)


def test_ends_of_the_linear_path():
    """t = 0: u = E[ε] - x_0 = -x; t = 1: u = x_1 - E[x_0] (no division by σ or α anywhere)."""
    mix = mixture(dim=2)
    x = torch.randn(16, 2, generator=gen(3), dtype=F64)
    u = ExactVelocity(mix)
    torch.testing.assert_close(u(x, torch.zeros(16, dtype=F64)), -x, rtol=0, atol=1e-12)
    torch.testing.assert_close(u(x, 1.0), x - mix.mean, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dim", [1, 2])
def test_monte_carlo_posterior_mean(dim):
    """E[x_1 - x_0 | x_t] by self-normalised importance sampling: x_0 ~ data, weights N(x_t; α x_0, σ² I), and
    x_1 = (x_t - α x_0)/σ; within 4.5 standard errors of the closed form."""
    mix = mixture(dim=dim, k=3, seed=dim)
    u = ExactVelocity(mix)
    x0 = mix.sample(400_000, gen(10 + dim))
    g = gen(20 + dim)
    for t in (0.25, 0.5, 0.8):
        xt = (1 - t) * mix.sample(4, g) + t * torch.randn(4, dim, generator=g, dtype=F64)  # typical x_t
        for x in xt:
            logw = -0.5 * (((x - (1 - t) * x0) / t) ** 2).sum(1)
            w = torch.softmax(logw, 0)  # (M,)
            f = (x - (1 - t) * x0) / t - x0  # x_1 - x_0 per draw (M, D)
            est = w @ f
            se = ((w[:, None] ** 2) * (f - est) ** 2).sum(0).sqrt()  # delta-method SE of a ratio estimator
            exact = u(x[None], torch.tensor([t], dtype=F64))[0]
            assert bool(((est - exact).abs() <= 4.5 * se + 1e-9).all()), (t, est, exact, se)
            assert float(se.max()) < 0.05  # the estimate is informative (enough effective samples)


def test_derivative_of_exact_pf_ode_trajectories():
    """(x(t+h) - x(t-h))/2h along exact_mixture.pf_ode_solve trajectories equals u(x(t), t) (error O(h²)).

    pf_ode_solve works in VE levels σ̃ = σ/α with the VP state x_vp = y/√(1 + σ̃²); on the linear path
    σ̃ = t/(1 - t) and x_path = α y = (1 - t) y."""
    mix = mixture(dim=2, seed=4, scale=0.5)
    u = ExactVelocity(mix)
    x = 1.5 * torch.randn(6, 2, generator=gen(5), dtype=F64)

    def vst(t: float) -> float:
        return t / (1 - t)

    def move(x_path: torch.Tensor, t: float, to: float) -> torch.Tensor:
        y = x_path / (1 - t)
        x_vp = pf_ode_solve(mix, y / math.sqrt(1 + vst(t) ** 2), vst(t), vst(to))
        return (1 - to) * x_vp * math.sqrt(1 + vst(to) ** 2)

    h = 1e-3
    for t in (0.2, 0.5, 0.85):
        fd = (move(x, t, t + h) - move(x, t, t - h)) / (2 * h)
        torch.testing.assert_close(fd, u(x, t), rtol=0, atol=2e-5)


def _gaussian_straightness(mean: torch.Tensor, stds: torch.Tensor) -> tuple[float, float]:
    """(S, E∫||u||² dt) of 1-rectified flow for data N(μ, diag(s²)): per coordinate x_t = (1-t)μ + √Λ(t) z with
    Λ = (1-t)² s² + t², x_1 = z, x_0 = μ + s z, so u - (x_1 - x_0) = ((√Λ)' - (1 - s)) z (by quadrature)."""
    S, K = 0.0, float(mean @ mean)
    for s in stds.tolist():
        def dsqrt(t: float, s: float = s) -> float:
            return (t - (1 - t) * s**2) / math.sqrt((1 - t) ** 2 * s**2 + t**2)

        S += quad(lambda t: (dsqrt(t) - (1 - s)) ** 2, 0, 1, epsabs=1e-13)[0]
        K += quad(lambda t: dsqrt(t) ** 2, 0, 1, epsabs=1e-13)[0]
    return S, K


def test_straightness_of_gaussian_data_is_closed_form():
    mean, stds = torch.tensor([1.0, -2.0], dtype=F64), torch.tensor([0.3, 1.5], dtype=F64)
    r = exact_straightness(gaussian(mean, torch.diag(stds**2)), n=4000, steps=100, generator=gen(6))
    S, K = _gaussian_straightness(mean, stds)
    # E over z ~ N(0, I) of c·||z||²-type terms: Monte Carlo error only (the ODE is solved to ~1e-9)
    assert abs(r.straightness - S) < 4 * r.straightness_se, (r.straightness, S, r.straightness_se)
    assert abs(r.kinetic - K) < 0.05 * K
    # exact coupling x_0 = μ + s ⊙ x_1: the ODE map of a Gaussian is affine
    torch.testing.assert_close(r.x0, mean + stds * r.x1, rtol=0, atol=1e-7)
    assert r.independent_cost == pytest.approx(float(mean @ mean + (stds**2).sum()) + 2, rel=1e-12)


def test_straightness_of_a_mixture():
    """S = E∫||u||² - E||x_1 - x_0||²_rectified on exact trajectories; Liu et al. 2023 Thm 3.3: the rectified
    coupling's cost and the kinetic energy stay below the independent coupling's cost; the data ends are the exact
    PF-ODE endpoints (pf_ode_solve from σ̃ = 10³, reached from t = 1 by the exact-in-the-limit DDIM step)."""
    mix = ring(k=4, radius=1.5, std=0.2)
    r = exact_straightness(mix, n=300, steps=100, generator=gen(7))
    assert r.straightness > 0.1  # a mixture's 1-rectified flow is curved
    assert r.straightness == pytest.approx(r.kinetic - r.rectified_cost, abs=1e-6)
    assert r.rectified_cost <= r.kinetic <= r.independent_cost
    cap = 1e3
    t_c = cap / (1 + cap)  # σ̃(t_c) = cap on the linear path
    x_tc = (1 - t_c) * mix.mean + t_c * r.x1[:8]  # one DDIM step from t = 1, where x̂_0 = E[x_0]
    ref = pf_ode_solve(mix, x_tc / (1 - t_c) / math.sqrt(1 + cap**2), cap, 0.0)
    torch.testing.assert_close(r.x0[:8], ref, rtol=0, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="even"):
        exact_straightness(ring(), n=10, steps=3)
    with pytest.raises(ValueError, match="n must be"):
        exact_straightness(ring(), n=1, steps=4)
    with pytest.raises(ValueError, match="x1 must have shape"):
        exact_straightness(ring(), steps=4, x1=torch.zeros(5, 3))


def test_given_noises_are_carried():
    """x1 given: the same coupling as drawing those noises from the generator."""
    g = gen(8)
    x1 = torch.randn(6, 2, generator=g, dtype=F64)
    a = exact_straightness(ring(), n=6, steps=20, generator=gen(8))
    b = exact_straightness(ring(), steps=20, x1=x1)
    assert torch.equal(a.x1, b.x1) and torch.equal(a.x0, b.x0)
