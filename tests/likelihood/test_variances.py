"""Reverse-process variances (kuosan.likelihood.variances) against the printed formulas of Ho et al., Nichol &
Dhariwal and Bao et al. on the discrete chain, and against Gaussian conditioning (Schur complements) on the
continuous paths; the analytic Γ table against its closed form; improved DDPM's hybrid L_vlb term."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from likelihood_oracle import AB, CURVES, EYE8, SCHED, _post, exact_gamma, gen, setup

from kuosan.exact import ExactDenoiser, gaussian
from kuosan.gaussian import discretised_gaussian_log_likelihood, gaussian_kl
from kuosan.likelihood.variances import (AnalyticTable, estimate_analytic_table, gamma_bounds, hybrid_vlb_term,
                                         reverse_variance)
from kuosan.paths import VE, Linear, PathError, VPCosine


def test_reverse_variance_kinds():
    b = SCHED.betas
    t = torch.tensor([1.0, 2.0, 10.0, 500.0, 1000.0], dtype=torch.float64)
    ti = t.long()
    bt = b[ti - 1] * (1 - torch.tensor(AB)[ti - 1]) / (1 - torch.tensor(AB)[ti])
    bt[0] = b[0]  # β̃_1 = 0: the decoder variance is β_1
    torch.testing.assert_close(reverse_variance("beta_tilde", SCHED, t, t - 1), bt)
    torch.testing.assert_close(reverse_variance("beta", SCHED, t, t - 1), b[ti - 1])
    v = torch.tensor([[-1.0, 0.0, 1.0]] * 5, dtype=torch.float64)
    lr = reverse_variance("learned_range", SCHED, t, t - 1, net_v=v)
    torch.testing.assert_close(lr[:, 0], bt)
    torch.testing.assert_close(lr[:, 1], (bt * b[ti - 1]).sqrt())
    torch.testing.assert_close(lr[:, 2], b[ti - 1])
    # Analytic-DPM Thm 1 as printed (s = t-1, its λ_n² = β̃):
    # λ_n² + (sqrt(β̄_n/α_n) - sqrt(β̄_{n-1} - λ_n²))² (1 - Γ_n)
    ts = torch.arange(1, 1001, dtype=torch.float64)
    gam = torch.linspace(0.01, 0.99, 1000, dtype=torch.float64)
    table = AnalyticTable(ts, gam)
    n = torch.tensor([2, 3, 50, 999])
    an = reverse_variance("analytic", SCHED, n.double(), n.double() - 1, analytic_table=table)
    abt = torch.tensor(AB)
    lam2 = b[n - 1] * (1 - abt[n - 1]) / (1 - abt[n])
    paper = lam2 + ((1 - abt[n]) / (1 - b[n - 1])).sqrt().sub((1 - abt[n - 1] - lam2).sqrt()) ** 2 * (1 - gam[n - 1])
    torch.testing.assert_close(an, paper)


def test_analytic_variance_is_exact_reverse_variance_for_identity_data():
    """For N(0, I) data q(x_s|x_t) has variance σ²_{t|s} for any jump: Γ = σ_t² must give exactly that."""
    t = torch.tensor([3.0, 100.0, 700.0, 1000.0, 1.0], dtype=torch.float64)
    s = torch.tensor([1.0, 37.0, 10.0, 0.0, 0.0], dtype=torch.float64)
    ts = torch.arange(1, 1001, dtype=torch.float64)
    table = AnalyticTable(ts, SCHED.sigma(ts) ** 2)
    sig2_ts = 1 - SCHED.alpha_bar(t) / SCHED.alpha_bar(s)
    torch.testing.assert_close(reverse_variance("analytic", SCHED, t, s, analytic_table=table), sig2_ts)


# closed forms of the continuous paths, written out here: (α(t), σ(t))
CONTINUOUS = {
    "vp_cosine": (VPCosine(), lambda t: (np.cos((t + 0.008) / 1.008 * np.pi / 2) / np.cos(0.008 / 1.008 * np.pi / 2),
                                         None)),
    "ve": (VE(sigma_max=80.0), lambda t: (np.ones_like(t), t)),
    "flow": (Linear(), lambda t: (1 - t, t)),
}


def _alpha_sigma(kind: str, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, s = CONTINUOUS[kind][1](t)
    a = np.clip(a, 0, 1)
    return a, (np.sqrt(1 - a**2) if s is None else s)


@pytest.mark.parametrize("kind", sorted(CONTINUOUS))
def test_reverse_variance_on_continuous_paths_matches_gaussian_conditioning(kind):
    """β̃ is Var(x_s | x_t, x_0), the Schur complement σ_s² - Cov(x_s, x_t)²/σ_t² with Cov = (α_t/α_s) σ_s²;
    for N(0, I) data the analytic variance with the exact Γ_t = σ_t²/V_t (V = α² + σ²; at α_t = 0 the exact
    x0_mse = 1) is Var(x_s | x_t) = V_s - (α_t/α_s)² V_s²/V_t, the true reverse variance."""
    path = CONTINUOUS[kind][0]
    tm = path.t_max
    t = np.array([tm, tm, 0.6 * tm, 0.3 * tm, 0.05 * tm, 0.05 * tm])
    s = np.array([0.7 * tm, 0.0, 0.2 * tm, 0.29 * tm, 0.01 * tm, 0.0])
    (a_t, s_t), (a_s, s_s) = _alpha_sigma(kind, t), _alpha_sigma(kind, s)
    cov = (a_t / a_s) * s_s**2
    beta_tilde = s_s**2 - cov**2 / s_t**2
    jump = s_t**2 - (a_t / a_s) ** 2 * s_s**2
    want_bt = np.where(s > 0, beta_tilde, jump)  # s = 0: the decoder takes σ²_{t|0} = σ_t²
    tt, ss = torch.tensor(t), torch.tensor(s)
    np.testing.assert_allclose(reverse_variance("beta_tilde", path, tt, ss).numpy(), want_bt, rtol=1e-9)
    np.testing.assert_allclose(reverse_variance("beta", path, tt, ss).numpy(), jump, rtol=1e-9)
    lr = reverse_variance("learned_range", path, tt, ss, net_v=torch.zeros(6, 2, dtype=torch.float64))
    np.testing.assert_allclose(lr[:, 0].numpy(), np.sqrt(want_bt * jump), rtol=1e-9)
    grid = np.unique(np.concatenate([np.linspace(0.01 * tm, tm, 50), t]))  # the query times are knots
    a_g, s_g = _alpha_sigma(kind, grid)
    V = a_g**2 + s_g**2
    table = AnalyticTable(torch.tensor(grid), torch.tensor(s_g**2 / V), torch.tensor(1 - a_g**2 / V))
    V_t, V_s = a_t**2 + s_t**2, a_s**2 + s_s**2
    want = V_s - (a_t / a_s) ** 2 * V_s**2 / V_t
    got = reverse_variance("analytic", path, tt, ss, analytic_table=table).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_analytic_variance_at_zero_terminal_snr_needs_x0_mse():
    path = Linear()
    t, s = torch.tensor([1.0]), torch.tensor([0.5])
    no_mse = AnalyticTable(torch.tensor([0.5, 1.0]), torch.ones(2))
    with pytest.raises(ValueError, match="x0_mse"):
        reverse_variance("analytic", path, t, s, analytic_table=no_mse)
    # away from t_max the Γ form is used and the table without x0_mse works
    reverse_variance("analytic", path, torch.tensor([0.9]), s, analytic_table=no_mse)


def test_reverse_variance_errors():
    t = torch.tensor([5.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown variance"):
        reverse_variance("fixed", SCHED, t, t - 1)
    with pytest.raises(ValueError, match="net_v"):
        reverse_variance("learned_range", SCHED, t, t - 1)
    with pytest.raises(ValueError, match="analytic_table"):
        reverse_variance("analytic", SCHED, t, t - 1)
    with pytest.raises(ValueError, match="covers"):
        table = AnalyticTable(torch.tensor([10.0, 20.0]), torch.ones(2))
        reverse_variance("analytic", SCHED, t, t - 1, analytic_table=table)
    with pytest.raises(ValueError, match="s < t"):
        reverse_variance("beta", SCHED, t, t)
    with pytest.raises(ValueError, match="t_max"):
        reverse_variance("beta", Linear(), torch.tensor([1.5]), torch.tensor([0.5]))


def test_analytic_table_estimate_matches_closed_form():
    g, D, data = setup(CURVES, 100, 0)
    ts = torch.tensor([1.0, 20.0, 150.0, 400.0, 1000.0], dtype=torch.float64)
    n_mc = 3
    table = estimate_analytic_table(D, data, ts, n_mc, generator=gen(1))
    lams = np.linalg.eigvalsh(CURVES.numpy())
    want = exact_gamma(lams, ts.numpy())
    # std of one ||ε̂||²/d draw: ε̂ ~ N(0, σ² C⁻¹) so Var = 2 Σ_i (σ²/c_i)²/d²
    a2 = AB[ts.long().numpy()]
    sd = np.array([math.sqrt(2 * np.sum(((1 - a) / (a * lams + 1 - a)) ** 2)) / 64 for a in a2])
    err = np.abs(table.gamma.numpy() - want) / (sd / math.sqrt(100 * n_mc))
    assert np.all(err < 4), err
    assert torch.equal(table.ts, ts)


def test_analytic_table_x0_mse_at_zero_terminal_snr():
    """On the flow path x_1 is pure noise: x̂_0 = E[x_0] and x0_mse is the data variance per dimension (here the
    sample's own spread around the true mean, an exact identity of the draws); Γ there is clipped to 1."""
    cov = 0.3 * torch.eye(4, dtype=torch.float64)
    g = gaussian(torch.tensor([0.5, -0.5, 0.0, 1.0]), cov)
    data = g.sample(200, gen(0))
    table = estimate_analytic_table(ExactDenoiser(g, Linear()), data, torch.tensor([0.5, 1.0]), 2,
                                    half_range=2.0, generator=gen(1))
    torch.testing.assert_close(table.x0_mse[1], (data - g.mean).pow(2).mean())
    assert table.gamma[1].item() == 1.0  # Thm 2 at SNR = 0: Γ in [1, 1]
    # at t = 0.5 the two estimates agree: e^{-λ}(1 - Γ) and the measured x0_mse (both ≈ E tr Cov(x_0|x_t)/d)
    lam = Linear().log_snr(torch.tensor(0.5))
    post_var = 0.3 * 0.25 / (0.25 * 0.3 + 0.25)  # Var(x_0|x_t) = Σ σ²/(α² Σ + σ²), α = σ = 1/2
    assert float(torch.exp(-lam) * (1 - table.gamma[0])) == pytest.approx(post_var, rel=0.1)
    assert float(table.x0_mse[0]) == pytest.approx(post_var, rel=0.1)
    var = reverse_variance("analytic", Linear(), torch.tensor([1.0]), torch.tensor([0.0]), analytic_table=table)
    torch.testing.assert_close(var, table.x0_mse[1:])  # s = 0: σ² = E||x_0 - x̂_0||²/d


def test_analytic_table_clipped_to_bounds():
    # x̂_0 = 0 gives ε̂ = x_t/σ, Γ = (α² λ + σ²)/σ² > 1: clipped to Thm 2's upper bound 1
    class Zero:
        path = SCHED

        def __call__(self, x, t):
            return torch.zeros_like(x)

    data = torch.randn(50, 4, dtype=torch.float64, generator=gen(0))
    table = estimate_analytic_table(Zero(), data, torch.tensor([1.0, 10.0, 1000.0]), 2, generator=gen(1))
    assert torch.equal(table.gamma, torch.ones(3, dtype=torch.float64))
    # bounded data [-1/4, 1/4]: Γ >= 1 - SNR_t/16 (x̂_0 = 0 is a valid estimate in range, Γ raw would be far below)
    _, D, _ = setup(EYE8[:4, :4] * 1e-4, 1, 0)
    small = 0.01 * torch.randn(50, 4, dtype=torch.float64, generator=gen(2))
    lo_t = torch.tensor([900.0], dtype=torch.float64)
    raw = estimate_analytic_table(D, small, lo_t, 1, generator=gen(3)).gamma
    clip = estimate_analytic_table(D, small, lo_t, 1, half_range=0.25, generator=gen(3)).gamma
    bound = 1 - SCHED.log_snr(lo_t).exp() / 16
    assert raw.item() < bound.item() and clip.item() == pytest.approx(bound.item())
    torch.testing.assert_close(gamma_bounds(SCHED, lo_t, 0.25)[0], bound)
    with pytest.raises(ValueError, match="0 < t"):
        estimate_analytic_table(D, small, torch.tensor([0.0, 5.0]), 1)
    with pytest.raises(ValueError, match="n_mc"):
        estimate_analytic_table(D, small, lo_t, 0)


def test_hybrid_vlb_term_value_and_gradients():
    _, D, x0 = setup(EYE8, 4096, 14)
    t = torch.full((4096,), 2.0, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=gen(15), dtype=x0.dtype)
    x_t = SCHED.alpha(t)[:, None] * x0 + SCHED.sigma(t)[:, None] * eps
    x0_hat = D(x_t, t).requires_grad_(True)
    v = torch.zeros_like(x0, requires_grad=True)
    term = hybrid_vlb_term(SCHED, x0, x_t, t, x0_hat, v, bits=None)
    # value: the Gaussian KL per dim with σ² = sqrt(β β̃)
    lam2, c, beta, _ = _post(2, 1, np.ones(8))
    var = math.sqrt(lam2 * beta)
    ref = 0.5 * (lam2 / var - 1 - math.log(lam2 / var)) + (c * (x0 - x0_hat.detach())) ** 2 / (2 * var)
    torch.testing.assert_close(term, ref.mean(1))
    term.mean().backward()
    assert x0_hat.grad is None or torch.all(x0_hat.grad == 0)  # stop-gradient on the mean
    # β is the exact reverse variance for N(0, I): the expected loss is stationary at v = 1 and falls towards it
    grads = []
    for val in (-1.0, 1.0):
        vv = torch.full_like(x0, val, requires_grad=True)
        hybrid_vlb_term(SCHED, x0, x_t, t, x0_hat, vv, bits=None).mean().backward()
        grads.append(vv.grad.sum().item())
    assert grads[0] < -0.05 and abs(grads[1]) < 0.1 * abs(grads[0])
    # t = 1 scores the decoder, discretised when bits is set
    one = torch.ones(3, dtype=torch.float64)
    xd = torch.tensor([[-1.0, 0.0, 1.0]] * 3, dtype=torch.float64)
    mean, vz = xd * 0.9, torch.zeros_like(xd)
    got = hybrid_vlb_term(SCHED, xd, xd, one, mean, vz, bits=8)
    var1 = reverse_variance("learned_range", SCHED, one, one - 1, net_v=vz)
    torch.testing.assert_close(got, -discretised_gaussian_log_likelihood(xd, mean, var1, 8).mean(1))
    torch.testing.assert_close(gaussian_kl(xd, var1, xd, var1), torch.zeros_like(xd))


def test_hybrid_vlb_term_on_a_continuous_path_needs_s():
    path = Linear()
    x0 = torch.randn(5, 3, dtype=torch.float64, generator=gen(0))
    t, s = torch.full((5,), 0.5, dtype=torch.float64), torch.full((5,), 0.4, dtype=torch.float64)
    x_t = 0.5 * x0 + 0.5 * torch.randn(5, 3, dtype=torch.float64, generator=gen(1))
    v = torch.full_like(x0, -1.0)  # learned range at v = -1 is β̃: the KL is the mean term only
    with pytest.raises(PathError, match="discrete"):
        hybrid_vlb_term(path, x0, x_t, t, x0, v)
    x0_hat = x0 + 0.1
    got = hybrid_vlb_term(path, x0, x_t, t, x0_hat, v, s=s)
    c = 0.6 * (1 - (0.5 * 0.4 / (0.6 * 0.5)) ** 2)  # α_s(1 - e^{λ_t - λ_s}), e^{λ/2} = α/σ
    bt = 0.4**2 * (1 - (0.5 * 0.4 / (0.6 * 0.5)) ** 2)
    torch.testing.assert_close(got, torch.full((5,), (c * 0.1) ** 2 / (2 * bt), dtype=torch.float64))
