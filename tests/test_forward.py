"""The forward process on every path: q(x_t|x_0) moments, Cov(x_t) = α² Σ_0 + σ² I for Gaussian data, and the
posterior q(x_s|x_t, x_0) against Bayes' rule computed independently (a product of two Gaussians)."""

from __future__ import annotations

import math

import pytest
import torch

from kuosan.forward import jump_variance, posterior, posterior_coefficients, posterior_variance, q_sample
from kuosan.paths import PATH_KINDS, discrete_vp, make_path

F64 = torch.float64
PATHS = {kind: make_path(kind) for kind in PATH_KINDS}
PATHS["discrete_cosine"] = discrete_vp("cosine", 1000)
PATHS["discrete_zsnr"] = discrete_vp("linear", 1000, zero_terminal_snr=True)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def at(path, u: float) -> float:
    """The time a fraction u of the way to t_max (an integer on the chain)."""
    t = u * path.t_max
    return float(round(t)) if hasattr(path, "T") else t


@pytest.mark.parametrize("path_name", list(PATHS))
def test_q_sample_moments_match_closed_form(path_name):
    path = PATHS[path_name]
    g = gen(0)
    n = 200_000
    x0 = torch.tensor([1.5, -0.5, 0.25], dtype=F64)
    for u in (0.001, 0.1, 0.7):
        t = at(path, u)
        xs = q_sample(path, x0.expand(n, 3), torch.full((n,), t, dtype=F64),
                      eps=torch.randn(n, 3, generator=g, dtype=F64))
        a, v = float(path.alpha(torch.tensor(t, dtype=F64))), float(path.sigma(torch.tensor(t, dtype=F64))) ** 2
        se_mean = math.sqrt(v / n)
        assert (xs.mean(0) - a * x0).abs().max().item() < 5 * se_mean
        assert (xs.var(0) / v - 1).abs().max().item() < 0.02
    # a scalar t broadcasts, and q_sample is x_t = α x_0 + σ ε exactly
    eps = torch.randn(4, 3, generator=g, dtype=F64)
    t = at(path, 0.3)
    a, s = float(path.alpha(torch.tensor(t, dtype=F64))), float(path.sigma(torch.tensor(t, dtype=F64)))
    torch.testing.assert_close(q_sample(path, x0.expand(4, 3), t, eps), a * x0 + s * eps, rtol=1e-14, atol=0)


@pytest.mark.parametrize("path_name", ["discrete_cosine", "vp_linear", "ve", "flow"])
def test_marginal_covariance_of_gaussian_data(path_name):
    """x_0 ~ N(μ, Σ_0) => Cov(x_t) = α_t² Σ_0 + σ_t² I, mean α_t μ (checked empirically)."""
    path = PATHS[path_name]
    g = gen(1)
    d = 8
    i = torch.arange(d, dtype=F64)
    cov0 = 0.5 * torch.exp(-((i[:, None] - i[None]) ** 2) / 8) + 1e-3 * torch.eye(d, dtype=F64)
    L = torch.linalg.cholesky(cov0)
    n = 100_000
    x0 = 0.3 + torch.randn(n, d, generator=g, dtype=F64) @ L.T
    for u in (0.05, 0.4, 0.9):
        t = at(path, u) if path_name != "ve" else u * 3  # VE: σ up to 2.7 (the tolerance is absolute)
        xt = q_sample(path, x0, torch.full((n,), t, dtype=F64), torch.randn(n, d, generator=g, dtype=F64))
        a, s = float(path.alpha(torch.tensor(t, dtype=F64))), float(path.sigma(torch.tensor(t, dtype=F64)))
        want = a**2 * cov0 + s**2 * torch.eye(d, dtype=F64)
        scale = a**2 * 0.5 + s**2
        assert (torch.cov(xt.T) - want).abs().max().item() < 0.02 * scale
        assert (xt.mean(0) - a * 0.3).abs().max().item() < 0.01 * math.sqrt(scale)


def bayes_posterior(a_ts, var_ts, mean_s, var_s, x_t):
    """Product of Gaussians, independently: q(x_s|x_0) = N(mean_s, var_s), q(x_t|x_s) = N(a_ts x_s, var_ts)."""
    prec = 1 / var_s + a_ts**2 / var_ts
    return (mean_s / var_s + a_ts * x_t / var_ts) / prec, 1 / prec


@pytest.mark.parametrize("t,s_", [(2, 1), (10, 9), (500, 499), (1000, 999), (700, 300), (50, 1)])
def test_posterior_equals_bayes_rule_on_the_chain(t, s_):
    sched = discrete_vp("linear", 1000)
    g = gen(t)
    x0, xt = torch.randn(4, 3, generator=g, dtype=F64), torch.randn(4, 3, generator=g, dtype=F64)
    tt, ss = torch.full((4,), float(t), dtype=F64), torch.full((4,), float(s_), dtype=F64)
    post = posterior(sched, x0, xt, tt, ss)
    ab_t = torch.prod(1 - sched.betas[:t])  # ᾱ by the product, not the path's table
    ab_s = torch.prod(1 - sched.betas[:s_])
    mean, var = bayes_posterior((ab_t / ab_s).sqrt(), 1 - ab_t / ab_s, ab_s.sqrt() * x0, 1 - ab_s, xt)
    torch.testing.assert_close(post.mean, mean, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(post.var, var.expand(4), rtol=1e-9, atol=1e-15)
    if s_ == t - 1:  # Ho et al. Eq. (7): β̃_t = (1-ᾱ_{t-1})/(1-ᾱ_t) β_t
        beta = sched.betas[t - 1]
        torch.testing.assert_close(post.var[0], (1 - ab_s) / (1 - ab_t) * beta, rtol=1e-9, atol=0)
        torch.testing.assert_close(jump_variance(sched, tt, ss)[0], beta, rtol=1e-9, atol=0)
        default = posterior(sched, x0, xt, tt)  # s = t - 1 by default
        torch.testing.assert_close(default.mean, post.mean, rtol=0, atol=0)


@pytest.mark.parametrize("path_name", list(PATHS))
@pytest.mark.parametrize("u_t,u_s", [(0.5, 0.2), (0.9, 0.89), (1.0, 0.5), (0.3, 0.001)])
def test_posterior_equals_bayes_rule_on_every_path(path_name, u_t, u_s):
    """With α_{t|s} = α_t/α_s and σ²_{t|s} = σ_t² - α_{t|s}² σ_s² (Kingma et al. 2021 Eq. (2))."""
    path = PATHS[path_name]
    t, s = at(path, u_t), at(path, u_s)
    g = gen(3)
    x0, xt = torch.randn(5, 3, generator=g, dtype=F64), torch.randn(5, 3, generator=g, dtype=F64)
    post = posterior(path, x0, xt, t, s)
    a_t, s_t = float(path.alpha(torch.tensor(t, dtype=F64))), float(path.sigma(torch.tensor(t, dtype=F64)))
    a_s, s_s = float(path.alpha(torch.tensor(s, dtype=F64))), float(path.sigma(torch.tensor(s, dtype=F64)))
    a_ts = a_t / a_s
    var_ts = s_t**2 - a_ts**2 * s_s**2
    if a_t == 0:  # α_t = 0: x_t carries nothing about x_s, the posterior is q(x_s|x_0)
        mean, var = a_s * x0, s_s**2
    else:
        mean, var = bayes_posterior(a_ts, var_ts, a_s * x0, s_s**2, xt)
    torch.testing.assert_close(post.mean, mean, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(post.var, torch.full((5,), var, dtype=F64), rtol=1e-8, atol=1e-14)
    torch.testing.assert_close(jump_variance(path, torch.tensor(t, dtype=F64), torch.tensor(s, dtype=F64)),
                               torch.tensor(var_ts, dtype=F64), rtol=1e-8, atol=1e-14)
    c_xt, c_x0, bt = posterior_coefficients(path, torch.tensor(t, dtype=F64), torch.tensor(s, dtype=F64))
    torch.testing.assert_close(post.mean, c_xt * xt + c_x0 * x0, rtol=1e-12, atol=1e-14)
    assert float(bt) == float(posterior_variance(path, torch.tensor(t, dtype=F64), torch.tensor(s, dtype=F64)))


@pytest.mark.parametrize("path_name", list(PATHS))
def test_posterior_at_s_equal_0_returns_x0(path_name):
    path = PATHS[path_name]
    x0, xt = torch.randn(2, 5, dtype=F64, generator=gen(4)), torch.randn(2, 5, dtype=F64, generator=gen(5))
    t = at(path, 0.001) if not hasattr(path, "T") else 1.0
    post = posterior(path, x0, xt, torch.full((2,), t, dtype=F64), torch.zeros(2, dtype=F64))
    torch.testing.assert_close(post.mean, x0, rtol=0, atol=0)
    assert bool((post.var == 0).all()) and bool((post.c_xt == 0).all())


def test_jump_variance_keeps_precision_for_nearby_times():
    """σ²_{t|s} = σ_t²(1 - e^{λ_t - λ_s}) for s -> t is linear in (t - s) without cancellation (VP linear-β:
    ≈ β(t)(t - s))."""
    path = make_path("vp_linear")
    t = torch.tensor(0.5, dtype=F64)
    for h in (1e-4, 1e-7, 1e-10):
        got = float(jump_variance(path, t, t - h))
        beta = 0.1 + 0.5 * 19.9
        assert got == pytest.approx(beta * h, rel=1e-3 + 20 * h), h
