"""The exact Gaussian-mixture oracle: its denoiser and density against independent formulas (torch.distributions,
Tweedie), one x̂_0 at equal λ on every path, and the exact PF-ODE (closed form for Gaussian data, composition,
the path-independent right-hand side and the start from σ̃ = ∞)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from kuosan.exact import ExactDenoiser, GaussianMixture, curve_cov, gaussian, pf_ode_solve, ring
from kuosan.paths import PATH_KINDS, VE, Linear, discrete_vp, f64, make_path
from kuosan.pf_ode import VE_SIGMA_CAP, enter, leave, rhs

F64 = torch.float64
PATHS = {kind: make_path(kind) for kind in PATH_KINDS}
PATHS["discrete_zsnr"] = discrete_vp("linear", 1000, zero_terminal_snr=True)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mixture(dim: int = 3, k: int = 3, seed: int = 0) -> GaussianMixture:
    g = gen(seed)
    means = 2 * torch.randn(k, dim, generator=g, dtype=F64)
    A = torch.randn(k, dim, dim, generator=g, dtype=F64) * 0.4
    covs = A @ A.transpose(1, 2) + 0.05 * torch.eye(dim, dtype=F64)
    return GaussianMixture(means, covs, torch.rand(k, generator=g, dtype=F64) + 0.2)


def reference_denoise(mix: GaussianMixture, x: torch.Tensor, a: float, s: float) -> torch.Tensor:
    """Bayes by torch.distributions: w_k ∝ π_k N(x; α μ_k, C_k), C_k = α² Σ_k + σ² I, and
    E_k[x_0|x] = μ_k + α Σ_k C_k^{-1}(x - α μ_k)."""
    eye = torch.eye(mix.dim, dtype=F64)
    logw, parts = [], []
    for mu, cov, pi in zip(mix.means, mix.covs, mix.weights):
        C = a**2 * cov + s**2 * eye
        logw.append(MultivariateNormal(a * mu, C).log_prob(x) + pi.log())
        parts.append(mu + (a * cov @ torch.linalg.solve(C, (x - a * mu).T)).T)
    w = torch.softmax(torch.stack(logw, 1), 1)
    return torch.einsum("bk,kbd->bd", w, torch.stack(parts))


def test_denoiser_and_density_against_torch_distributions():
    mix = mixture()
    x = torch.randn(16, 3, generator=gen(1), dtype=F64) * 2
    for a, s in ((1.0, 0.3), (0.6, 0.8), (0.05, 1.0), (1.0, 5.0)):
        A, S = torch.full((16,), a, dtype=F64), torch.full((16,), s, dtype=F64)
        torch.testing.assert_close(mix.denoise(x, A, S), reference_denoise(mix, x, a, s), rtol=1e-10, atol=1e-10)
        ref = torch.logsumexp(torch.stack([MultivariateNormal(a * mu, a**2 * c + s**2 * torch.eye(3, dtype=F64))
                                           .log_prob(x) + pi.log() for mu, c, pi in
                                           zip(mix.means, mix.covs, mix.weights)], 1), 1)
        torch.testing.assert_close(mix.log_prob_t(x, A, S), ref, rtol=1e-10, atol=1e-10)


def test_tweedie_links_the_denoiser_to_the_score():
    """E[x_0|x_t] = (x_t + σ² ∇ log p_t(x_t))/α (Efron 2011), ∇ by autograd of the exact log-density."""
    mix = ring()
    x = torch.randn(32, 2, generator=gen(2), dtype=F64).requires_grad_(True)
    a, s = torch.full((32,), 0.8, dtype=F64), torch.full((32,), 0.6, dtype=F64)
    score = torch.autograd.grad(mix.log_prob_t(x, a, s).sum(), x)[0]
    torch.testing.assert_close(mix.denoise(x.detach(), a, s), (x.detach() + 0.36 * score) / 0.8, rtol=1e-10,
                               atol=1e-10)


def test_samples_have_the_mixture_moments():
    mix = mixture(seed=3)
    xs = mix.sample(400_000, gen(4))
    assert (xs.mean(0) - mix.mean).abs().max() < 0.02
    assert (torch.cov(xs.T) - mix.cov).abs().max() < 0.05


@pytest.mark.parametrize("path_name", list(PATHS))
def test_the_same_denoised_x0_at_equal_log_snr_on_every_path(path_name):
    """x_t/α depends only on λ: on path B at t_B = t_B(λ_A(t_A)) with x_B = (α_B/α_A) x_A the optimal denoiser
    returns the same x̂_0 (the basis of every sampler working in λ)."""
    mix = mixture(seed=5)
    ref_path = make_path("vp_linear")
    path = PATHS[path_name]
    t_ref = torch.tensor([0.02, 0.1, 0.3, 0.5, 0.7], dtype=F64)
    lam = ref_path.log_snr(t_ref)
    t = path.t_of_log_snr(lam)
    ok = (path.log_snr(t) - lam).abs() < 1e-8  # inside the path's λ range (VE stops at σ_max, the chain at t = T)
    assert int(ok.sum()) >= 4, path.log_snr(t)
    x_ref = torch.randn(5, 3, generator=gen(6), dtype=F64)
    x = x_ref * (path.alpha(t) / ref_path.alpha(t_ref))[:, None]
    got = ExactDenoiser(mix, path)(x, t)
    want = ExactDenoiser(mix, ref_path)(x_ref, t_ref)
    torch.testing.assert_close(got[ok], want[ok], rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("path_name", ["flow", "vp_cosine", "discrete_zsnr"])
def test_denoiser_where_alpha_is_zero_returns_the_data_mean(path_name):
    mix = mixture(seed=7)
    path = PATHS[path_name]
    x = torch.randn(4, 3, generator=gen(8), dtype=F64)
    out = ExactDenoiser(mix, path)(x, f64(path.t_max))
    torch.testing.assert_close(out, mix.mean.expand(4, 3), rtol=1e-12, atol=1e-12)
    # and at t = 0 (σ = 0) it returns x itself
    torch.testing.assert_close(ExactDenoiser(mix, path)(x, f64(0.0)), x, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------ the exact PF-ODE
def gaussian_flow(mu: torch.Tensor, cov: torch.Tensor, y0: torch.Tensor, s0: float, s1: float) -> torch.Tensor:
    """Closed-form PF-ODE map for N(μ, Σ) data in VE coordinates:
    y(σ̃) = μ + (Σ + σ̃² I)^{1/2}(Σ + σ̃_0² I)^{-1/2}(y_0 - μ)
    (Song et al. 2021 Eq. (13): dy/dσ̃ = σ̃ (Σ + σ̃²I)^{-1}(y - μ), whose matrices commute)."""
    d, U = torch.linalg.eigh(cov)
    M = U @ torch.diag(torch.sqrt((d + s1**2) / (d + s0**2))) @ U.T
    return mu + (y0 - mu) @ M.T


def test_pf_ode_solve_matches_the_gaussian_closed_form():
    cov = curve_cov(8) + 0.05 * torch.eye(8, dtype=F64)
    mu = torch.linspace(-0.5, 0.5, 8, dtype=F64)
    mix = gaussian(mu, cov)
    g = gen(9)
    for s0, s1 in ((80.0, 0.0), (5.0, 0.3), (0.7, 0.05)):
        y0 = mu + math.sqrt(1 + s0**2) * torch.randn(6, 8, generator=g, dtype=F64)
        x0 = y0 / math.sqrt(1 + s0**2)  # pf_ode_solve speaks VP states
        got = pf_ode_solve(mix, x0, s0, s1) * math.sqrt(1 + s1**2)
        want = gaussian_flow(mu, cov, y0, s0, max(s1, 1e-7))
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)


def test_pf_ode_solve_composes():
    """σ̃: 20 -> 1 -> 0.01 equals 20 -> 0.01 on a non-Gaussian (ring) mixture."""
    mix = ring()
    x = torch.randn(16, 2, generator=gen(10), dtype=F64)
    direct = pf_ode_solve(mix, x, 20.0, 0.01)
    two = pf_ode_solve(mix, pf_ode_solve(mix, x, 20.0, 1.0), 1.0, 0.01)
    torch.testing.assert_close(two, direct, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("path_name", list(PATHS))
def test_pf_ode_rhs_is_the_same_on_every_path(path_name):
    """dy/du = y - x̂_0(α y, t(λ = -2u)) does not depend on how the path is timed."""
    mix = mixture(seed=11)
    y = torch.randn(5, 3, generator=gen(12), dtype=F64) * 3
    for u in (-3.0, -0.5, 0.0, 1.5):
        want = rhs(ExactDenoiser(mix, VE(sigma_max=100.0)), y, u)
        path = PATHS[path_name]
        if float(-0.5 * path.log_snr(f64(path.t_max))) < u:  # σ̃ = e^u beyond the path's range (VE σ_max, chain)
            continue
        got = rhs(ExactDenoiser(mix, path), y, u)
        torch.testing.assert_close(got[0], want[0], rtol=1e-8, atol=1e-9)
        torch.testing.assert_close(got[1], want[1], rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("path_name", ["flow", "vp_cosine", "discrete_zsnr"])
def test_enter_from_infinite_ve_sigma_then_solve_matches_the_closed_form(path_name):
    """From t_max with α = 0 (σ̃ = ∞), ``enter`` takes one DDIM step to σ̃ = 1e3; solving on from there to data
    agrees with the Gaussian closed form started at σ̃ = ∞
    (y(σ̃) -> μ + Σ^{1/2}·(lim y/σ̃)) to O(Var/σ̃_cap)."""
    path = PATHS[path_name]
    cov = curve_cov(4, scale=0.5) + 0.05 * torch.eye(4, dtype=F64)
    mu = torch.tensor([0.3, -0.2, 0.1, 0.0], dtype=F64)
    mix = gaussian(mu, cov)
    D = ExactDenoiser(mix, path)
    noise = torch.randn(6, 4, generator=gen(13), dtype=F64)  # x_{t_max} = ε (σ = 1)
    y, u = enter(D, noise, path.t_max)
    assert u == pytest.approx(math.log(VE_SIGMA_CAP))
    torch.testing.assert_close(y, mu + VE_SIGMA_CAP * noise, rtol=1e-12, atol=1e-9)
    # the closed form from σ̃ = ∞: y = μ + (Σ + σ̃²)^{1/2} n with the same n, evaluated at σ̃ = 0
    d, U = torch.linalg.eigh(cov)
    want = mu + noise @ (U @ torch.diag(d.sqrt()) @ U.T).T
    got = pf_ode_solve(mix, y / math.sqrt(1 + VE_SIGMA_CAP**2), VE_SIGMA_CAP, 0.0)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-3)  # the cap's error: about ‖Σ‖/(2 σ̃_cap)
    # leave: x = α y at the time with log σ̃ = u
    t_mid = float(path.t_of_log_snr(f64(0.0)))
    torch.testing.assert_close(leave(path, y, 0.0), float(path.alpha(f64(t_mid))) * y)


def test_enter_is_free_below_the_cap():
    path = Linear()
    calls = []

    def D(x, t, **c):
        calls.append(t)
        return x

    D.path = path
    x = torch.randn(3, 2, generator=gen(14), dtype=F64)
    y, u = enter(D, x, 0.5)
    assert not calls and u == pytest.approx(0.0) and torch.equal(y, x / 0.5)
