"""PF-ODE NLL (kuosan.likelihood.ode_nll) against exact log-densities of Gaussians and Gaussian mixtures on
every path kind, the Hutchinson estimator against the exact trace, and the Jacobian of pf_ode.enter's first step."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from likelihood_oracle import EYE8, LN2, gen, setup, true_nll_bpd

from kuosan.exact import ExactDenoiser, GaussianMixture, curve_cov
from kuosan.likelihood import ode_nll
from kuosan.paths import VE, Linear, VPCosine, discrete_vp
from kuosan.pf_ode import VE_SIGMA_CAP


@pytest.mark.parametrize("backend", ["torchdiffeq", "scipy"])
def test_ode_nll_exact_trace_matches_true_nll(backend):
    """T = 1000 linear β: within 1e-4 bits/dim of the true NLL (7.3e-5 measured; most of it is the prior
    N(0, I) standing in for q(x_T), ᾱ_T = 4e-5, the rest the σ̃_min = 1e-3 smoothing)."""
    cov = curve_cov(8) + 0.05 * EYE8
    _, D, x = setup(cov, 12, 16)
    r = ode_nll(D, x, probes=None, rtol=1e-7, atol=1e-7, backend=backend)
    err = (r.per_sample_bpd - true_nll_bpd(x, cov)).abs()
    assert float(err.max()) < 0.005 and float(err.max()) < 1e-4, err
    assert r.probe_var == 0.0 and r.nfe > 10


MIXTURE = GaussianMixture(torch.tensor([[0.5, -0.3, 0.2], [-0.6, 0.4, 0.1]]),
                          torch.stack([0.05 * torch.eye(3), torch.tensor([[0.08, 0.02, 0.0], [0.02, 0.04, 0.01],
                                                                          [0.0, 0.01, 0.06]])]),
                          torch.tensor([0.3, 0.7]))
PATHS = [VPCosine(), Linear(), discrete_vp("cosine", 1000, zero_terminal_snr=True), VE(), VE(sigma_max=5000.0),
         discrete_vp("linear", 1000)]


def exact_flow(y: torch.Tensor, ve_sigma_from: float, ve_sigma_to: float) -> torch.Tensor:
    """The mixture's PF-ODE in VE form, dy/dσ̃ = (y - E[x_0|y])/σ̃ (Karras et al. Eq. (3)), by scipy's DOP853 on the
    closed-form denoiser (independent of kuosan.pf_ode); y (B, D) from σ̃ = ve_sigma_from to ve_sigma_to."""
    from scipy.integrate import solve_ivp

    def f(u: float, v: np.ndarray) -> np.ndarray:
        yy = torch.from_numpy(v).reshape(y.shape)
        sig = torch.full((y.shape[0],), math.exp(u), dtype=torch.float64)
        return (yy - MIXTURE.denoise(yy, torch.ones_like(sig), sig)).numpy().ravel()

    sol = solve_ivp(f, (math.log(ve_sigma_from), math.log(ve_sigma_to)), y.numpy().ravel(), method="DOP853",
                    rtol=1e-11, atol=1e-12)
    assert sol.success
    return torch.from_numpy(sol.y[:, -1]).reshape(y.shape)


def log_normal(y: torch.Tensor, mean: torch.Tensor | float, std: float) -> torch.Tensor:
    d = y.shape[1]
    return -0.5 * (((y - mean) / std) ** 2).sum(1) - d * math.log(std) - 0.5 * d * math.log(2 * math.pi)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"{p.kind}-{p.t_max:g}")
def test_ode_nll_equals_exact_mixture_density_on_every_path(path):
    """The model's density at σ̃_min is the data smoothed to y = x_0 + σ̃_min ε, the same on every path, moved by
    the exact flow to the end point y_1 at σ̃_1, where the model puts its own density instead of the true p_1:
    log p_model(x_0) = log p_{σ̃_min}(x_0) + log p_end(y_1) - log p_1(y_1). p_end is N(α y; 0, prior_std²) α^d
    when σ̃(t_max) <= VE_SIGMA_CAP (VE σ_max = 80, the linear chain), else the image of the prior under
    pf_ode.enter's DDIM step y_1 = k x_T + c x̂_0 with x̂_0 = E[x_0] = μ at t_max: N(y_1; c μ, (k prior_std)²),
    exact where α(t_max) = 0 (vp_cosine, flow, the zero-terminal-SNR chain, landing at T-1 with σ̃ = 663 < cap)."""
    x, B, d = MIXTURE.sample(10, gen(1)), 10, 3
    ones = torch.ones(B, dtype=torch.float64)
    tm = torch.tensor(path.t_max, dtype=torch.float64)
    ve_sigma_T = math.exp(-0.5 * float(path.log_snr(tm)))
    if ve_sigma_T <= VE_SIGMA_CAP:
        ve_sigma_1 = ve_sigma_T
        y_1 = exact_flow(x, 1e-3, ve_sigma_1)
        a = float(path.alpha(tm))
        log_end = log_normal(a * y_1, 0.0, path.prior_std) + d * math.log(a)
    else:  # the step's landing time s and its σ̃(s), as pf_ode.enter takes it
        s = path.t_of_log_snr(torch.tensor(-2 * math.log(VE_SIGMA_CAP), dtype=torch.float64))
        ve_sigma_1 = math.exp(-0.5 * float(path.log_snr(s)))
        y_1 = exact_flow(x, 1e-3, ve_sigma_1)
        c = 1 - ve_sigma_1 / ve_sigma_T
        k = ve_sigma_1 / float(path.sigma(tm))  # ∂y_1/∂x_T (x̂_0 is constant at t_max to O(1/σ̃(t_max)²))
        log_end = log_normal(y_1, c * MIXTURE.mean, k * path.prior_std)
    log_p = MIXTURE.log_prob_t(x, ones, 1e-3 * ones) + log_end - MIXTURE.log_prob_t(y_1, ones, ve_sigma_1 * ones)
    model = -log_p / (d * LN2)
    r = ode_nll(ExactDenoiser(MIXTURE, path), x, probes=None, rtol=1e-7, atol=1e-7, backend="scipy")
    assert float((r.per_sample_bpd - model).abs().max()) < 2e-6
    if math.isinf(ve_sigma_T):  # the exact prior: the model density is the data density smoothed by σ̃_min
        true = -MIXTURE.log_prob_t(x, ones, torch.zeros(B, dtype=torch.float64)) / (d * LN2)
        assert float((r.per_sample_bpd - true).abs().max()) < 3e-5  # O(σ̃_min²)


class BentAtPrior:
    """The exact denoiser plus a·tanh(x) at t = t_max only: pf_ode.enter's step becomes y = k x + μ + a tanh(x)
    (c = 1 where α(t_max) = 0), a non-trivial Jacobian k + a sech²(x) per dimension; the ODE below is untouched."""

    def __init__(self, D, a: float):
        self.D, self.path, self.a = D, D.path, a

    def __call__(self, x, t, **cond):
        at_prior = (torch.as_tensor(t) >= self.path.t_max).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return self.D(x, t) + at_prior * self.a * torch.tanh(x)


def test_entry_step_jacobian_is_included():
    """With the bent entry step the model density of y_cap changes by exactly log N(x_1; 0, I) - Σ log(k + a
    sech² x_1) against log N(x_0; 0, I) - d log k (x_i the prior points of y_cap under each map; flow: σ(1) = 1,
    k = σ̃_cap). Neglecting the Jacobian would be off by the whole effect (> 1e-3 bits/dim)."""
    x = MIXTURE.sample(6, gen(2))
    D, a, d, k = ExactDenoiser(MIXTURE, Linear()), 5.0, 3, VE_SIGMA_CAP
    r0 = ode_nll(D, x, probes=None, rtol=1e-8, atol=1e-8, backend="scipy")
    r1 = ode_nll(BentAtPrior(D, a), x, probes=None, rtol=1e-8, atol=1e-8, backend="scipy")
    got = (r1.per_sample_bpd - r0.per_sample_bpd).numpy()
    # y_cap from the exact PF-ODE of the mixture (VP state in, VP state out), then both prior points
    y_cap = exact_flow(x, 1e-3, VE_SIGMA_CAP).numpy() - MIXTURE.mean.numpy()
    x0 = y_cap / k
    x1 = x0.copy()
    for _ in range(50):  # solve k x + a tanh x = y_cap elementwise (Newton)
        x1 -= (k * x1 + a * np.tanh(x1) - y_cap) / (k + a / np.cosh(x1) ** 2)
    log_p0 = -0.5 * (x0**2).sum(1) - d * math.log(k)
    log_p1 = -0.5 * (x1**2).sum(1) - np.log(k + a / np.cosh(x1) ** 2).sum(1)
    want = (log_p0 - log_p1) / (d * LN2)
    assert np.abs(want).max() > 1e-3  # the entry Jacobian matters at this size
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-5)  # first order in a/k: (a/k)²/2 per dim remains


def test_ode_nll_hutchinson_is_unbiased():
    cov = curve_cov(8) + 0.05 * EYE8  # correlated: Rademacher probes are exact only for diagonal Jacobians
    _, D, x = setup(cov, 48, 17)
    exact = ode_nll(D, x, probes=None, rtol=1e-6, atol=1e-6, backend="scipy")
    hutch = ode_nll(D, x, probes=4, rtol=1e-6, atol=1e-6, backend="scipy", generator=gen(18))
    diff = hutch.per_probe_bpd - exact.per_sample_bpd[:, None]  # (B, 4): probe noise only
    se = float(diff.std() / math.sqrt(diff.numel()))
    assert abs(float(diff.mean())) < 3 * se and hutch.probe_var > 1e-6
    assert hutch.probe_var == pytest.approx(float(diff.var(1).mean()), rel=1e-6)
    assert hutch.stderr > 0 and hutch.per_probe_bpd.shape == (48, 4)


def test_ode_nll_dequantised_discrete_data():
    """8-bit data: dequantised NLL + d·log2(2^8/2) bits matches -log P(bin) under the data distribution."""
    from scipy.stats import norm

    var = 0.05
    _, D, x = setup(var * torch.eye(4, dtype=torch.float64), 32, 19)
    x = torch.round((x.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1
    r = ode_nll(D, x, probes=None, dequantise_bits=8, rtol=1e-6, atol=1e-6, backend="scipy", generator=gen(20))
    w, sd = 2 / 256, math.sqrt(var)
    mass = norm.cdf(x.numpy() + w, 0, sd) - norm.cdf(x.numpy(), 0, sd)  # the bins [x, x + w) dequantised into
    want = -np.log(mass).sum(1) / (4 * LN2)
    diff = r.per_sample_bpd.numpy() - want
    assert abs(diff.mean()) < 0.01 and diff.mean() > -3 * diff.std() / math.sqrt(32), diff
    assert r.bpd > 5  # the +7 bits/dim bin-width term is included


def test_bad_input():
    _, D, x = setup(EYE8, 4, 0)
    for bits in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="dequantise_bits"):
            ode_nll(D, x.clamp(-1, 1), dequantise_bits=bits)
    with pytest.raises(ValueError, match=r"data outside \[-1, 1\]"):
        ode_nll(D, 3 * x, dequantise_bits=8)
    for probes in (-1, 0, 1.5):
        with pytest.raises(ValueError, match="probes"):
            ode_nll(D, x, probes=probes)
    for v in (0.0, -1e-3, 1e4):  # σ̃(T) ≈ 156 on the linear chain
        with pytest.raises(ValueError, match="ve_sigma_min"):
            ode_nll(D, x, ve_sigma_min=v)
    with pytest.raises(ValueError, match="backend"):
        ode_nll(D, x, backend="rk4")
    with pytest.raises(ValueError, match="rtol"):
        ode_nll(D, x, rtol=0.0)


def test_progress_bar_leaves_results_unchanged(capsys):
    x = MIXTURE.sample(4, gen(3))
    D = ExactDenoiser(MIXTURE, Linear())
    quiet = ode_nll(D, x, probes=2, generator=gen(4), backend="scipy")
    shown = ode_nll(D, x, probes=2, generator=gen(4), backend="scipy", progress=True)
    assert torch.equal(quiet.per_probe_bpd, shown.per_probe_bpd) and quiet.nfe == shown.nfe
    assert "ode nll" in capsys.readouterr().err
