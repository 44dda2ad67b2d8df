"""The adaptive PF-ODE sampler (against kuosan.exact's solution on several paths), its per-sample Runge–Kutta
integrator (closed-form ODEs, batch independence, dense output), and DDIM inversion."""

from __future__ import annotations

import math

import pytest
import torch

from kuosan.denoiser import Counting
from kuosan.exact import ExactDenoiser, GaussianMixture, curve_cov, gaussian, pf_ode_solve
from kuosan.paths import coefficients, discrete_vp, make_path
from kuosan.pf_ode import VE_SIGMA_CAP
from kuosan.sampling import ddim, ddim_invert, logsnr_grid, ode, uniform_grid
from kuosan.sampling.rk import METHODS, solve

LINEAR = discrete_vp("linear", 1000)
MIX = GaussianMixture(torch.tensor([[-2.5, 0.0], [1.5, 2.0], [1.5, -2.0]]),
                      torch.tensor([[[0.30, 0.12], [0.12, 0.15]], [[0.10, -0.05], [-0.05, 0.25]],
                                    [[0.20, 0.0], [0.0, 0.05]]]),
                      torch.tensor([0.5, 0.3, 0.2]))
D = ExactDenoiser(MIX, LINEAR)


def ve_sigma(path, t: float) -> float:
    return math.exp(-0.5 * coefficients(path, t)[2])


# --- probability-flow ODE sampler --------------------------------------------------------------------------
def test_ode_matches_exact_pf_ode_then_denoise():
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ts = logsnr_grid(LINEAR, 10)  # only ts[0] = T and ts[-2] = 1 shape the result
    exact = D(pf_ode_solve(MIX, x, LINEAR.sigma_max(), ve_sigma(LINEAR, 1.0)), torch.ones(64, dtype=torch.float64))
    assert (ode(D, x, ts, rtol=1e-8, atol=1e-8) - exact).abs().max() < 1e-6
    assert (ode(D, x, ts) - exact).abs().max() < 3e-3  # default tolerance 1e-5
    # the interior of the grid only decides where the callback reports
    assert torch.equal(ode(D, x, ts), ode(D, x, logsnr_grid(LINEAR, 3)))


def test_ode_to_small_t_matches_exact_endpoint_and_counts_nfe():
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    exact = pf_ode_solve(MIX, x, LINEAR.sigma_max())  # to σ̃ = 0
    ts = torch.tensor([1000.0, 1e-4, 0.0], dtype=torch.float64)  # fractional t < 1: σ̃ ≈ 1e-4
    nfe = {}
    for tol in (1e-3, 1e-7):
        C, seen = Counting(D), []
        out = ode(C, x, ts, rtol=tol, atol=tol, callback=lambda i, x_t, x0: seen.append(i))
        nfe[tol] = C.nfe
        assert seen == [0, 1]  # once per grid step: the ODE segment, then the final denoise
    assert (out - exact).abs().max() < 1e-5
    assert 10 < nfe[1e-3] < nfe[1e-7] < 1000


def test_ode_callback_reports_the_state_at_each_grid_time():
    x = torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    ts = logsnr_grid(LINEAR, 5)
    states = {}
    ode(D, x, ts, rtol=1e-9, atol=1e-9, callback=lambda i, x_t, x0: states.setdefault(i, x_t))
    assert sorted(states) == list(range(5))
    for i in (0, 2):  # x at t_{i+1} (interpolated) against the exact solution there
        t = float(ts[i + 1])
        y = pf_ode_solve(MIX, x, LINEAR.sigma_max(), ve_sigma(LINEAR, t))  # VP-scaled = this path's x
        assert (states[i] - y).abs().max() < 1e-3


@pytest.mark.parametrize("pk", ["flow", "ve", "vp_cosine", "ztsnr"])
def test_ode_on_other_paths(pk):
    """Gaussian data: from σ̃_0 the exact flow is y(σ̃) - μ = (C + σ̃²)^{1/2} (C + σ̃_0²)^{-1/2} (y_0 - μ).
    From α = 0 the sampler enters at σ̃ = 10³ by a DDIM step (y = μ + 10³ ε), then integrates;
    the final denoise sits at t_min."""
    path = {"flow": make_path("flow"), "ve": make_path("ve"), "vp_cosine": make_path("vp_cosine"),
            "ztsnr": discrete_vp("linear", 1000, zero_terminal_snr=True)}[pk]
    mean, cov = torch.linspace(-0.5, 0.5, 6, dtype=torch.float64), curve_cov(6, scale=0.5, length=2.0)
    Dg = ExactDenoiser(gaussian(mean, cov), path)
    eps = torch.randn(16, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    ts = logsnr_grid(path, 8)
    s0, s_min = ve_sigma(path, float(ts[0])), ve_sigma(path, float(ts[-2]))
    d, U = torch.linalg.eigh(cov)
    if math.isinf(s0):
        x, y0 = eps, mean + VE_SIGMA_CAP * eps  # x_T = σ ε with σ = 1
        s0 = VE_SIGMA_CAP
    else:
        x = path.prior_std * eps
        y0 = x / coefficients(path, float(ts[0]))[0]
    e = (y0 - mean) @ U
    y = e * ((d + s_min**2) / (d + s0**2)).sqrt()  # exact flow to σ̃_min, in the eigenbasis
    exact = mean + (y * d / (d + s_min**2)) @ U.T  # then the exact denoise E[x_0|y]
    out = ode(Dg, x, ts, rtol=1e-8, atol=1e-8)
    assert (out - exact).abs().max() < 1e-5, (out - exact).abs().max()


def test_ode_errors():
    x, ts = torch.randn(4, 2, dtype=torch.float64), logsnr_grid(LINEAR, 5)
    with pytest.raises(ValueError, match="unknown adaptive ODE method"):
        ode(D, x, ts, method="rk45")
    for bad in ({"rtol": 0.0}, {"atol": -1.0}, {"rtol": float("nan")}):
        with pytest.raises(ValueError, match="tolerances"):
            ode(D, x, ts, **bad)


# --- the per-sample Runge–Kutta integrator -----------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_rk_solves_each_row_to_tolerance_and_independently(method):
    """dy/dτ = -k y with a different k per row: y = y_0 e^{-kτ}; a row's result is bitwise the same alone."""
    k = torch.tensor([0.1, 1.0, 5.0, 30.0], dtype=torch.float64)
    y0 = torch.tensor([[1.0, -2.0], [0.5, 3.0], [1.0, 1.0], [2.0, -1.0]], dtype=torch.float64)

    def f(tau, y, rows):
        return -k[rows][:, None] * y, y

    y = solve(f, y0, 2.0, rtol=1e-7, atol=1e-9, method=method)
    assert torch.allclose(y, y0 * torch.exp(-2.0 * k)[:, None], rtol=1e-5, atol=1e-8)
    for r in range(4):
        alone = solve(lambda tau, yy, rows: (-k[r] * yy, yy), y0[r:r + 1], 2.0, rtol=1e-7, atol=1e-9, method=method)
        assert torch.equal(alone, y[r:r + 1])


def test_rk_time_dependent_rows_and_dense_output():
    """dy/dτ = cos(τ + φ_r) per row: y = y_0 + sin(τ + φ) - sin φ; stops are reported in order, each once."""
    phi = torch.tensor([0.0, 1.0, 2.5], dtype=torch.float64)
    y0 = torch.zeros(3, 1, dtype=torch.float64)
    stops, seen = [0.5, 1.7, 3.0], []

    def f(tau, y, rows):
        return torch.cos(tau + phi[rows])[:, None], y

    y = solve(f, y0, 3.0, rtol=1e-10, atol=1e-12, stops=stops, on_stop=lambda j, yj, aux: seen.append((j, yj.clone())))
    assert torch.allclose(y[:, 0], torch.sin(3.0 + phi) - torch.sin(phi), atol=1e-9)
    assert [j for j, _ in seen] == [0, 1, 2]
    for j, yj in seen:  # cubic Hermite between accepted steps
        assert torch.allclose(yj[:, 0], torch.sin(stops[j] + phi) - torch.sin(phi), atol=1e-6)


def test_rk_failures_are_errors():
    with pytest.raises(RuntimeError, match="not finite at the start"):
        solve(lambda tau, y, rows: (torch.full_like(y, float("nan")), y), torch.ones(2, 1), 1.0, rtol=1e-5, atol=1e-5)

    def blows_up(tau, y, rows):  # finite at τ = 0, NaN beyond τ = 0.5: every step is rejected until h underflows
        return torch.where(tau[:, None] > 0.5, torch.full_like(y, float("nan")), -y), y

    with pytest.raises(RuntimeError, match="underflow"):
        solve(blows_up, torch.ones(2, 1), 1.0, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="did not finish"):
        solve(lambda tau, y, rows: (torch.cos(50 * tau)[:, None] * torch.ones_like(y), y), torch.zeros(1, 1), 100.0,
              rtol=1e-9, atol=1e-9, max_steps=5)


# --- DDIM inversion -----------------------------------------------------------------------------------------
def _round_trip(path, n_steps: int, fixed_point: int = 0) -> tuple[float, int]:
    Dp = ExactDenoiser(MIX, path)
    x0 = MIX.sample(256, torch.Generator().manual_seed(6))
    ts, C = (uniform_grid(path, n_steps) if path is LINEAR else logsnr_grid(path, n_steps)), Counting(Dp)
    back = ddim(Dp, ddim_invert(C, x0, ts, fixed_point=fixed_point), ts)
    return (back - x0).pow(2).mean().sqrt().item(), C.nfe


def test_ddim_inversion_round_trip_converges():
    errs = {n: _round_trip(LINEAR, n) for n in (10, 50, 200)}
    assert errs[10][0] > errs[50][0] > errs[200][0]
    assert errs[200][0] < 0.03 and errs[200][0] < errs[10][0] / 10
    assert [nfe for _, nfe in errs.values()] == [10, 50, 200]
    err_fp, nfe_fp = _round_trip(LINEAR, 200, fixed_point=2)  # implicit step solved by fixed-point iteration
    assert nfe_fp == 600 and err_fp < errs[200][0] / 20


def test_ddim_inversion_into_zero_snr_round_trip_converges():
    """Inverting to α(t_max) = 0 keeps only ε̂ there, and DDIM back starts from x̂_0 = E[x_0]: the first step's
    error is O(α(t_1)), which vanishes as the grid is refined."""
    flow = make_path("flow")
    errs = [_round_trip(flow, n)[0] for n in (20, 80, 320)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 0.05, errs


def test_ddim_inversion_of_gaussian_latent_is_gaussian_like():
    # Inverting data should give latents of roughly unit variance (the sampler maps N(0, I) to the data).
    x0 = MIX.sample(2000, torch.Generator().manual_seed(7))
    z = ddim_invert(D, x0, uniform_grid(LINEAR, 100))
    assert z.mean(0).abs().max() < 0.1 and (z.var(0) - 1).abs().max() < 0.1


def test_inversion_bad_fixed_point():
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="fixed_point"):
            ddim_invert(D, torch.randn(4, 2, dtype=torch.float64), uniform_grid(LINEAR, 5), fixed_point=bad)


def test_inversion_reports_each_step():
    seen = []
    ddim_invert(D, MIX.sample(8, torch.Generator().manual_seed(1)), uniform_grid(LINEAR, 7),
                callback=lambda i, x, x0: seen.append(i))
    assert seen == list(range(7))
