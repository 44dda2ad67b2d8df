"""Closed forms of the forward process: ᾱ_t, q(x_t|x_0), the posterior (seed 000 Thm 2.1), seed 001's Σ_t."""

import math

import pytest
import torch

from kuosan.forward import eps_to_x0, jump_variance, posterior, posterior_variance, q_sample, to_x0, v_target
from kuosan.schedules import Schedule, make_schedule


@pytest.mark.parametrize("kind", ["linear", "cosine", "sigmoid"])
@pytest.mark.parametrize("T", [1, 10, 1000, 4000])
def test_alpha_bar_is_the_product_of_one_minus_beta(kind, T):
    s = make_schedule(kind, T)
    prod, ab = 1.0, []
    for b in s.betas.tolist():  # the step-by-step product, in plain Python floats
        prod *= 1 - b
        ab.append(prod)
    t = torch.arange(1, T + 1, dtype=torch.float64)
    torch.testing.assert_close(s.alpha_bar(t), torch.tensor(ab, dtype=torch.float64), rtol=1e-12, atol=1e-15)
    assert s.alpha_bar(torch.tensor(0.0, dtype=torch.float64)) == 1
    assert bool(((s.betas > 0) & (s.betas < 1)).all())
    assert bool((s.log_snr(t[1:]) < s.log_snr(t[:-1])).all())  # SNR strictly decreasing


def test_schedule_quantities_are_consistent():
    s = make_schedule("cosine", 1000)
    t = torch.tensor([0.5, 1.0, 17.25, 500.0, 999.9], dtype=torch.float64)
    torch.testing.assert_close(s.alpha(t) ** 2 + s.sigma(t) ** 2, torch.ones_like(t))
    torch.testing.assert_close(s.log_snr(t), torch.log(s.alpha(t) ** 2 / s.sigma(t) ** 2))
    torch.testing.assert_close(s.t_from_log_snr(s.log_snr(t)), t, rtol=1e-9, atol=1e-9)
    # the cosine schedule's closed form (Nichol & Dhariwal Eq. 17) at integer t
    f = lambda u: math.cos((u / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert abs(s.alpha_bar(torch.tensor(500.0, dtype=torch.float64)).item() - f(500) / f(0)) < 1e-12


def test_linear_schedule_matches_ho_et_al():
    s = make_schedule("linear", 1000)
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    assert s.alpha_bar(torch.tensor(1000.0, dtype=torch.float64)).item() == pytest.approx(4.0358e-5, rel=1e-3)


@pytest.mark.parametrize("bad", [[0.1, 1.0], [0.0, 0.1], [-0.1], [float("nan")], []])
def test_betas_outside_unit_interval_are_refused(bad):
    with pytest.raises(ValueError, match="beta|at least one"):
        Schedule(torch.tensor(bad, dtype=torch.float64))


def test_unknown_schedule_and_bad_T():
    with pytest.raises(ValueError, match="unknown schedule 'cosin'"):
        make_schedule("cosin", 100)
    with pytest.raises(ValueError, match="positive integer"):
        make_schedule("linear", 0)


def test_q_sample_moments_match_closed_form():
    s = make_schedule("linear", 1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([1.5, -0.5, 0.25], dtype=torch.float64)
    for t in (1, 100, 700):
        xs = q_sample(s, x0.expand(200_000, 3), torch.full((200_000,), t), eps=torch.randn(200_000, 3, generator=g,
                                                                                           dtype=torch.float64))
        a, v = s.alpha_bar(torch.tensor(float(t), dtype=torch.float64)), 1 - s.alpha_bar(torch.tensor(float(t), dtype=torch.float64))
        se_mean = (v / 200_000).sqrt().item()
        assert (xs.mean(0) - a.sqrt() * x0).abs().max().item() < 5 * se_mean
        assert (xs.var(0) / v - 1).abs().max().item() < 0.02


def test_marginal_covariance_of_gaussian_data_is_seed_001s_formula():
    """x_0 ~ N(μ, Σ_0) => Cov(x_t) = ᾱ_t Σ_0 + (1 - ᾱ_t) I (checked empirically)."""
    s = make_schedule("cosine", 1000)
    g = torch.Generator().manual_seed(1)
    d = 8
    i = torch.arange(d, dtype=torch.float64)
    cov0 = 0.5 * torch.exp(-((i[:, None] - i[None]) ** 2) / 8) + 1e-3 * torch.eye(d, dtype=torch.float64)
    L = torch.linalg.cholesky(cov0)
    n = 100_000
    x0 = 0.3 + torch.randn(n, d, generator=g, dtype=torch.float64) @ L.T
    for t in (50.0, 400.0, 900.0):
        xt = q_sample(s, x0, torch.full((n,), t, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64))
        ab = s.alpha_bar(torch.tensor(t, dtype=torch.float64))
        want = ab * cov0 + (1 - ab) * torch.eye(d, dtype=torch.float64)
        assert (torch.cov(xt.T) - want).abs().max().item() < 0.02
        assert (xt.mean(0) - ab.sqrt() * 0.3).abs().max().item() < 0.01


def _bayes_posterior(a_ts, var_ts, mean_s, var_s, x_t):
    """Product of Gaussians, independently: q(x_s|x_0) = N(mean_s, var_s), q(x_t|x_s) = N(a_ts x_s, var_ts)."""
    prec = 1 / var_s + a_ts**2 / var_ts
    return (mean_s / var_s + a_ts * x_t / var_ts) / prec, 1 / prec


@pytest.mark.parametrize("t,s_", [(2, 1), (10, 9), (500, 499), (1000, 999), (700, 300), (50, 1)])
def test_posterior_equals_bayes_rule(t, s_):
    sched = make_schedule("linear", 1000)
    g = torch.Generator().manual_seed(t)
    x0, xt = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    tt, ss = torch.full((4,), float(t), dtype=torch.float64), torch.full((4,), float(s_), dtype=torch.float64)
    post = posterior(sched, x0, xt, tt, ss)
    ab_t = torch.prod(1 - sched.betas[:t])  # ᾱ by the product, not the schedule's table
    ab_s = torch.prod(1 - sched.betas[:s_])
    mean, var = _bayes_posterior((ab_t / ab_s).sqrt(), 1 - ab_t / ab_s, ab_s.sqrt() * x0, 1 - ab_s, xt)
    torch.testing.assert_close(post.mean, mean, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(post.var, var.expand(4), rtol=1e-9, atol=1e-15)
    if s_ == t - 1:  # Ho et al. Eq. (7): β̃_t = (1-ᾱ_{t-1})/(1-ᾱ_t) β_t
        beta = sched.betas[t - 1]
        torch.testing.assert_close(post.var[0], (1 - ab_s) / (1 - ab_t) * beta, rtol=1e-9, atol=0)
        torch.testing.assert_close(jump_variance(sched, tt, ss)[0], beta, rtol=1e-9, atol=0)


def test_posterior_at_t1_returns_x0_and_clipped_log_variance():
    sched = make_schedule("linear", 1000)
    x0, xt = torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    post = posterior(sched, x0, xt, torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(post.mean, x0)
    assert (post.var == 0).all()
    want = posterior_variance(sched, torch.tensor([2.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)).log()
    torch.testing.assert_close(post.log_var_clipped, want.expand(2))


def test_prediction_conversions_round_trip():
    sched = make_schedule("cosine", 1000)
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([1.0, 10, 100, 500, 900, 1000], dtype=torch.float64)
    xt = q_sample(sched, x0, t, eps)
    a, s = sched.alpha(t)[:, None], sched.sigma(t)[:, None]
    torch.testing.assert_close(eps_to_x0(xt, eps, a, s), x0, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(to_x0(v_target(x0, eps, a, s), "v", xt, a, s), x0)
    torch.testing.assert_close(to_x0(x0, "x0", xt, a, s), x0)
    with pytest.raises(ValueError, match="unknown prediction"):
        to_x0(x0, "score", xt, a, s)
