"""Reverse SDE / predictor–corrector / DDPM against an exact 3-component mixture; adaptive PF-ODE; DDIM inversion."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from kuosan.denoiser import CountingDenoiser
from kuosan.exact import ExactDenoiser, GaussianMixture, pf_ode_solve
from kuosan.samplers import ddim, ddpm, logsnr_grid, uniform_grid
from kuosan.samplers.inversion import ddim_invert
from kuosan.samplers.ode import ode
from kuosan.samplers.sde import beta, pc, sde
from kuosan.schedules import make_schedule

SCHED = make_schedule("linear", 1000)
# Well separated (so nearest-component assignment is essentially exact), unequal weights, full covariances.
MIX = GaussianMixture(torch.tensor([[-2.5, 0.0], [1.5, 2.0], [1.5, -2.0]]),
                      torch.tensor([[[0.30, 0.12], [0.12, 0.15]], [[0.10, -0.05], [-0.05, 0.25]],
                                    [[0.20, 0.0], [0.0, 0.05]]]),
                      torch.tensor([0.5, 0.3, 0.2]))
D = ExactDenoiser(MIX, SCHED)
N_SAMPLES, Z_MAX = 4000, 4.0  # 18 statistics: P(max |z| > 4) ≈ 1e-3 for an exact sampler



def z_scores(x: torch.Tensor, mix: GaussianMixture = MIX) -> torch.Tensor:
    """Standardised errors of weights, means and covariances per component (max-posterior assignment)."""
    L = torch.linalg.cholesky(mix.covs)  # (K, 2, 2)
    r = x[:, None, :] - mix.means[None]  # (n, K, 2)
    w = torch.linalg.solve_triangular(L[None], r[..., None], upper=False).squeeze(-1)
    logp = -0.5 * (w**2).sum(-1) - torch.diagonal(L, dim1=-2, dim2=-1).log().sum(-1) + mix.weights.log()
    k, n, zs = logp.argmax(1), x.shape[0], []
    for j in range(len(mix.weights)):
        pi, S, xj = mix.weights[j].item(), mix.covs[j], x[k == j]
        nj = xj.shape[0]
        zs.append(((nj / n - pi) / math.sqrt(pi * (1 - pi) / n)))
        zs += ((xj.mean(0) - mix.means[j]) / (torch.diagonal(S) / nj).sqrt()).tolist()
        se = ((torch.diagonal(S)[:, None] * torch.diagonal(S)[None] + S**2) / nj).sqrt()  # Wishart s.e.
        zs += ((torch.cov(xj.T) - S) / se)[[0, 0, 1], [0, 1, 1]].tolist()
    return torch.tensor(zs)


def test_statistic_detects_wrong_weights_and_covariances():
    g = torch.Generator().manual_seed(0)
    assert z_scores(MIX.sample(N_SAMPLES, g)).abs().max() < Z_MAX
    wrong_w = GaussianMixture(MIX.means, MIX.covs, torch.tensor([0.42, 0.33, 0.25]))
    assert z_scores(wrong_w.sample(N_SAMPLES, g)).abs().max() > Z_MAX
    wrong_cov = GaussianMixture(MIX.means, MIX.covs * 1.25, MIX.weights)
    assert z_scores(wrong_cov.sample(N_SAMPLES, g)).abs().max() > Z_MAX


@pytest.mark.parametrize("name, fn, ts, opts", [
    ("ddpm", ddpm, uniform_grid(1000, 1000), {}),  # Ho et al. Algorithm 2 exactly
    ("sde", sde, uniform_grid(1000, 250), {}),
    ("pc", pc, uniform_grid(1000, 100), {}),
    ("pc-em", pc, uniform_grid(1000, 100), {"predictor": "euler_maruyama", "snr": 0.1}),
])
def test_stochastic_samplers_reproduce_mixture(name, fn, ts, opts):
    g = torch.Generator().manual_seed(1)
    x_T = torch.randn(N_SAMPLES, 2, dtype=torch.float64, generator=g)
    z = z_scores(fn(D, x_T, ts, generator=g, **opts))
    assert z.abs().max() < Z_MAX, f"{name}: z-scores {z.numpy().round(1)}"


def test_sde_on_coarse_grid_is_detectably_biased():
    # Euler–Maruyama is first order in h: 10 steps must fail the same check (the test has power).
    g = torch.Generator().manual_seed(2)
    x = sde(D, torch.randn(N_SAMPLES, 2, dtype=torch.float64, generator=g), uniform_grid(1000, 10), generator=g)
    assert z_scores(x).abs().max() > Z_MAX


def test_beta_is_the_slope_of_log_alpha_bar():
    for k in (1, 2, 500, 1000):
        assert beta(SCHED, float(k)) == pytest.approx(-math.log1p(-SCHED.betas[k - 1].item()), rel=1e-9)
    assert beta(SCHED, 499.5) == beta(SCHED, 500.0)  # constant on (k-1, k]
    assert beta(SCHED, 0.25) == beta(SCHED, 1.0)


def test_nfe_of_sde_and_pc():
    ts = uniform_grid(1000, 20)
    x = torch.randn(8, 2, dtype=torch.float64)
    for fn, opts, nfe in [(sde, {}, 20), (pc, {"corrector_steps": 0}, 20), (pc, {"corrector_steps": 2}, 60)]:
        C = CountingDenoiser(D)
        fn(C, x, ts, **opts)
        assert C.nfe == nfe


def test_pc_is_reproducible_with_generator():
    ts, x = uniform_grid(1000, 10), torch.randn(16, 2, dtype=torch.float64)
    a = pc(D, x, ts, generator=torch.Generator().manual_seed(3))
    b = pc(D, x, ts, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


# --- probability-flow ODE (torchdiffeq) ---------------------------------------------------------------------
def _vp_alpha(sigma_ve: float) -> float:
    return 1.0 / math.sqrt(1.0 + sigma_ve**2)


def test_ode_matches_exact_pf_ode_then_denoise():
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ts = logsnr_grid(SCHED, 10)  # only ts[0] = T and ts[-2] = 1 matter
    s1 = math.exp(-0.5 * SCHED.log_snr(torch.tensor(1.0, dtype=torch.float64)).item())  # σ̃ at t = 1
    exact = D(pf_ode_solve(MIX, x, SCHED.sigma_max(), s1), torch.ones(64, dtype=torch.float64))
    assert (ode(D, x, ts, rtol=1e-8, atol=1e-8) - exact).abs().max() < 1e-6
    assert (ode(D, x, ts) - exact).abs().max() < 3e-3  # default tolerance 1e-5


def test_ode_to_small_t_matches_exact_endpoint_and_counts_nfe():
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    exact = pf_ode_solve(MIX, x, SCHED.sigma_max())  # to σ̃ = 0
    ts = torch.tensor([1000.0, 1e-4, 0.0], dtype=torch.float64)  # fractional t < 1: σ̃ ≈ 1e-4
    nfe, seen = {}, []
    for tol in (1e-3, 1e-7):
        C = CountingDenoiser(D)
        out = ode(C, x, ts, rtol=tol, atol=tol, callback=lambda i, x_t, x0: seen.append(i))
        nfe[tol] = C.nfe
        assert seen[-1] == C.nfe - 1  # every evaluation reported, final denoise included
        seen.clear()
    assert (out - exact).abs().max() < 1e-5
    assert 10 < nfe[1e-3] < nfe[1e-7] < 1000


def test_ode_errors(monkeypatch):
    x, ts = torch.randn(4, 2, dtype=torch.float64), logsnr_grid(SCHED, 5)
    with pytest.raises(ValueError, match="unknown adaptive ODE method"):
        ode(D, x, ts, method="rk45")
    with pytest.raises(ValueError, match="tolerances"):
        ode(D, x, ts, rtol=0.0)
    monkeypatch.setitem(sys.modules, "torchdiffeq", None)  # makes `import torchdiffeq` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'kuosan\[ode\]'"):
        ode(D, x, ts)
    with pytest.raises(ValueError, match="needs torchdiffeq"):
        ode(D, x, ts)


# --- DDIM inversion -----------------------------------------------------------------------------------------
def _round_trip(n_steps: int, fixed_point: int = 0) -> tuple[float, int]:
    x0 = MIX.sample(256, torch.Generator().manual_seed(6))
    ts, C = uniform_grid(1000, n_steps), CountingDenoiser(D)
    back = ddim(D, ddim_invert(C, x0, ts, fixed_point=fixed_point), ts)
    return (back - x0).pow(2).mean().sqrt().item(), C.nfe


def test_ddim_inversion_round_trip_converges():
    errs = {n: _round_trip(n) for n in (10, 50, 200)}
    assert errs[10][0] > errs[50][0] > errs[200][0]
    assert errs[200][0] < 0.03 and errs[200][0] < errs[10][0] / 10
    assert [nfe for _, nfe in errs.values()] == [10, 50, 200]
    err_fp, nfe_fp = _round_trip(200, fixed_point=2)  # implicit step solved by fixed-point iteration
    assert nfe_fp == 600 and err_fp < errs[200][0] / 20


def test_ddim_inversion_of_gaussian_latent_is_gaussian_like():
    # Inverting data should give latents of roughly unit variance (the sampler maps N(0, I) to the data).
    x0 = MIX.sample(2000, torch.Generator().manual_seed(7))
    z = ddim_invert(D, x0, uniform_grid(1000, 100))
    assert z.mean(0).abs().max() < 0.1 and (z.var(0) - 1).abs().max() < 0.1


# --- bad inputs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("opts, match", [
    ({"snr": 0.0}, "snr"), ({"snr": -0.1}, "snr"), ({"snr": float("nan")}, "snr"),
    ({"corrector_steps": -1}, "corrector_steps"), ({"corrector_steps": 1.5}, "corrector_steps"),
    ({"predictor": "heun"}, "unknown predictor"),
])
def test_pc_bad_options(opts, match):
    with pytest.raises(ValueError, match=match):
        pc(D, torch.randn(4, 2, dtype=torch.float64), uniform_grid(1000, 5), **opts)


@pytest.mark.parametrize("ts", [
    torch.tensor([0.0, 500.0, 1000.0], dtype=torch.float64),  # ascending
    torch.tensor([1000.0, 500.0], dtype=torch.float64),  # does not end at 0
    torch.tensor([2000.0, 500.0, 0.0], dtype=torch.float64),  # beyond T
    torch.tensor([1000.0, 500.0, 500.0, 0.0], dtype=torch.float64),  # repeated time
    torch.tensor([0.0], dtype=torch.float64),
])
def test_bad_grids(ts):
    x = torch.randn(4, 2, dtype=torch.float64)
    for fn in (sde, pc, ode):
        with pytest.raises(ValueError, match="time grid"):
            fn(D, x, ts)
    with pytest.raises(ValueError, match="time grid"):
        ddim_invert(D, x, ts)


def test_inversion_bad_fixed_point():
    with pytest.raises(ValueError, match="fixed_point"):
        ddim_invert(D, torch.randn(4, 2, dtype=torch.float64), uniform_grid(1000, 5), fixed_point=-1)
