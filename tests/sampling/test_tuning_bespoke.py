"""Bespoke solver: DPM-Solver++(2M) at zero coefficients, the 3M equivalence, held-out gain over optimised grids,
save/load, fit-or-load, zero terminal SNR, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from kuosan.denoiser import Counting
from kuosan.exact import ExactDenoiser, GaussianMixture, pf_ode_solve, ring
from kuosan.paths import VE, Linear, discrete_vp, terminal_snr_is_zero
from kuosan.sampling import SAMPLERS, dpmpp, logsnr_grid, uniform_grid
from kuosan.sampling.dpm_solver import psi
from kuosan.sampling.tuning import (bespoke, bespoke_params, load_solver, optimise_grid, optimise_solver, save_grid,
                                    save_solver)
from kuosan.sampling.tuning.bespoke import solve, zero_coeffs
from kuosan.sampling.tuning.optimise import grid_from_params, params_from_grid

PATH = discrete_vp("linear", 1000)


def _aniso() -> GaussianMixture:
    """Three anisotropic 2-D Gaussians (a small mixture unlike the ring)."""
    means = torch.tensor([[-1.5, 0.5], [1.0, 1.2], [0.3, -1.4]], dtype=torch.float64)
    var = torch.tensor([[0.2, 0.01], [0.02, 0.15], [0.05, 0.05]], dtype=torch.float64)
    covs = torch.diag_embed(var)
    return GaussianMixture(means, covs, torch.tensor([0.5, 0.3, 0.2]))


def _rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).pow(2).mean().sqrt().item()


@pytest.mark.parametrize("steps", [3, 7])
def test_zero_coefficients_are_dpm_solver_pp_2m(steps):
    D = ExactDenoiser(ring(), PATH)
    x = torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for ts in (uniform_grid(PATH, steps), logsnr_grid(PATH, steps)):
        torch.testing.assert_close(bespoke(D, x, ts), dpmpp(D, x, ts, order=2), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(bespoke(D, x, ts, coeffs=zero_coeffs(steps)), dpmpp(D, x, ts, order=2))


@pytest.mark.parametrize("path", [Linear(), discrete_vp("linear", 1000, zero_terminal_snr=True), VE(80.0)],
                         ids=["flow", "zero_terminal_snr", "ve"])
def test_zero_coefficients_are_dpm_solver_pp_2m_on_other_paths(path):
    """Where λ(t_max) = -∞ the first step is the exact limit (DDIM out of α = 0), as in dpmpp, and a query shift
    there is ignored (x/α is undefined); on VE (α = 1) the shift moves the first query as usual."""
    D = ExactDenoiser(_aniso(), path)
    x = path.prior_std * torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for ts in (uniform_grid(path, 6), logsnr_grid(path, 6)):
        ref = dpmpp(D, x, ts, order=2)
        assert bool(torch.isfinite(ref).all())
        torch.testing.assert_close(bespoke(D, x, ts), ref, rtol=1e-10, atol=1e-10)
        co = zero_coeffs(6)
        co["s"][0] = 0.7
        shifted = bespoke(D, x, ts, coeffs=co)
        if terminal_snr_is_zero(path):
            torch.testing.assert_close(shifted, ref, rtol=1e-10, atol=1e-10)
        else:
            assert _rmse(shifted, ref) > 1e-8  # measured 2.5e-7: x̂_0 hardly depends on x at σ̃ = 80


def _three_m_coeffs(ts: torch.Tensor) -> dict[str, torch.Tensor]:
    """The history weights a that turn the bespoke update into DPM-Solver++(3M) (dpm_solver.dpmpp, order 3):
    3M adds ψ_2 (d1 + h1 d2) + 2ψ_3 d2 with d1 = Δ1/h1, d2 = (Δ1/h1 - Δ2/h2)/(h1 + h2); bespoke adds
    ψ_1 [(h/(2 h1) + a_1) Δ1 + a_2 Δ2] (steps h in half-log-SNR λ/2)."""
    steps = ts.numel() - 1
    co = zero_coeffs(steps, history=2)
    half_lam = [0.5 * PATH.log_snr(t).item() for t in ts[:-1]]
    for i in range(2, steps - 1):  # step 1 is the 2M warm-up, the last step a plain denoise
        h, h1, h2 = half_lam[i + 1] - half_lam[i], half_lam[i] - half_lam[i - 1], half_lam[i - 1] - half_lam[i - 2]
        p1, p2, p3 = psi(1, h), psi(2, h), psi(3, h)
        q = p2 * h1 + 2 * p3
        co["a"][i, 0] = (p2 / h1 + q / (h1 * (h1 + h2))) / p1 - h / (2 * h1)
        co["a"][i, 1] = -q / (h2 * (h1 + h2) * p1)
    return co


@pytest.mark.parametrize("steps", [4, 8])
def test_history_weights_reproduce_dpm_solver_pp_3m(steps):
    D = ExactDenoiser(_aniso(), PATH)
    x = torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    for ts in (uniform_grid(PATH, steps), logsnr_grid(PATH, steps)):
        ref = dpmpp(D, x, ts, order=3)
        assert _rmse(ref, dpmpp(D, x, ts, order=2)) > 1e-4  # the two orders differ here, so the check has teeth
        torch.testing.assert_close(bespoke(D, x, ts, coeffs=_three_m_coeffs(ts)), ref, rtol=1e-9, atol=1e-9)


def test_query_shift_moves_the_model_time_and_rescales_the_state():
    calls = []
    base = ExactDenoiser(ring(), PATH)

    class Recorder:
        path = PATH

        def __call__(self, x, t):
            calls.append((x.clone(), t.clone()))
            return base(x, t)

    x = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    ts = uniform_grid(PATH, 4)
    co = zero_coeffs(4)
    co["s"][0] = 0.5  # first query 0.5 higher in log-SNR than t = T
    co["s"][1] = -50.0  # below λ(T): clamped to t = T
    bespoke(Recorder(), x, ts, coeffs=co)
    assert all(c[1].dtype == torch.float64 for c in calls)  # times reach the denoiser in float64
    tq = PATH.t_of_log_snr(PATH.log_snr(ts[0]) + 0.5)
    assert calls[0][1][0].item() == pytest.approx(tq.item(), rel=1e-12) and tq.item() < PATH.T
    torch.testing.assert_close(calls[0][0], x * (PATH.alpha(tq) / PATH.alpha(ts[0])), rtol=1e-12, atol=0)
    assert calls[1][1][0].item() == pytest.approx(PATH.T)
    assert [c[1][0].item() for c in calls[2:]] == pytest.approx(ts[2:-1].tolist())


def test_gradients_reach_every_parameter_from_an_integer_grid():
    """Fits start from integer grids (t_0 = T, uniform trailing) where the chain's log ᾱ(t) has kinks: every time
    logit and every query shift still gets a (one-sided) gradient there, s_0 at t = T included, as before the
    redesign (a fit that cannot move s_0 drifts from the first half's figures)."""
    D = ExactDenoiser(_aniso(), PATH)
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    theta = params_from_grid(PATH, uniform_grid(PATH, 5)).requires_grad_(True)
    co = {k: v.requires_grad_(True) for k, v in zero_coeffs(5).items()}
    solve(D, x, grid_from_params(PATH, theta, 5), co, {}).pow(2).sum().backward()
    assert bool((theta.grad != 0).all()) and bool(torch.isfinite(theta.grad).all())
    assert bool((co["s"].grad != 0).all()), co["s"].grad


def test_registered_with_its_nfe_and_callback_per_step():
    spec = SAMPLERS["bespoke"]
    assert spec.deterministic and spec.options == frozenset({"coeffs"})
    C = Counting(ExactDenoiser(ring(), PATH))
    seen = []
    x = torch.randn(4, 2, dtype=torch.float64)
    spec.fn(C, x, uniform_grid(PATH, 6), callback=lambda i, x, x0: seen.append(i))
    assert C.nfe == spec.nfe(6) == 6 and seen == list(range(6))


@pytest.mark.slow
@pytest.mark.parametrize("mix, steps", [(_aniso, 5), (ring, 10)])
def test_bespoke_beats_dpmpp2_on_optimised_grid_on_held_out_batch(mix, steps):
    m = mix()
    D = ExactDenoiser(m, PATH)
    g = torch.Generator().manual_seed(0)
    x_cal = torch.randn(512, 2, dtype=torch.float64, generator=g)
    x_held = torch.randn(512, 2, dtype=torch.float64, generator=g)  # never seen by either optimiser
    ref_cal, exact = pf_ode_solve(m, x_cal, PATH.sigma_max()), pf_ode_solve(m, x_held, PATH.sigma_max())
    ts = optimise_grid(D, steps, x_cal[:128], sampler=dpmpp, reference=ref_cal[:128], max_evals=150)
    # started from the same optimised grid: the fitted coefficients and times must add a held-out gain
    # (measured: 0.36 × (aniso, 5 steps), 0.26 × (ring, 10 steps))
    P = optimise_solver(D, steps, x_cal, reference=ref_cal, iters=150, init_grid=ts)
    assert P.ts.shape == (steps + 1,) and P.ts[0].item() == PATH.T and P.ts[-1].item() == 0.0
    assert P.info["val_rmse"] < P.info["start_val_rmse"]
    base = _rmse(dpmpp(D, x_held, ts), exact)
    ours = _rmse(bespoke(D, x_held, P.ts, coeffs=P.coeffs()), exact)
    assert ours < 0.7 * base, (ours, base)


def test_fit_on_the_flow_path_lowers_the_validation_error(capsys):
    """λ(t_max) = -∞ is supported: times, shifts (except s_0) and coefficients train; progress goes to stderr."""
    flow = Linear()
    m = _aniso()
    D = ExactDenoiser(m, flow)
    x = torch.randn(256, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    # exact endpoint from x_1 = ε: DDIM step to σ̃ = 1e3 (error O(1/σ̃²)), then the ODE
    a = 1 / math.sqrt(1 + 1e6)
    ref = pf_ode_solve(m, a * m.mean + 1e3 * a * x, 1e3)
    P = optimise_solver(D, 4, x, reference=ref, iters=40, batch_size=64, progress=True)
    assert "fitting a 4-step bespoke solver" in capsys.readouterr().err
    assert P.ts[0].item() == 1.0 and P.info["best_iter"] > 0 and P.s[0].item() == 0.0  # s_0 is not trained
    assert P.info["val_rmse"] < 0.8 * P.info["start_val_rmse"], P.info  # measured: 0.49 ×
    assert all(bool(torch.isfinite(v).all()) for v in P.coeffs().values())


def test_times_only_fit_is_an_optimised_dpmpp2m_grid_with_early_stopping():
    """train_coeffs=False: the coefficients stay DPM-Solver++(2M)'s (zero), only the times move, and the returned
    grid lowers DPM-Solver++(2M)'s validation error; patience stops the run once validation stalls."""
    m = _aniso()
    D = ExactDenoiser(m, PATH)
    x = torch.randn(256, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ref = pf_ode_solve(m, x, PATH.sigma_max())
    P = optimise_solver(D, 4, x, reference=ref, iters=60, lr=0.05, batch_size=64, train_coeffs=False)
    assert all(bool((v == 0).all()) for v in P.coeffs().values())
    val = x[: P.info["n_val"]]
    assert _rmse(dpmpp(D, val, P.ts), ref[: len(val)]) == pytest.approx(P.info["val_rmse"], rel=1e-9)
    assert P.info["val_rmse"] < P.info["start_val_rmse"]
    Q = optimise_solver(D, 4, x, reference=ref, iters=400, lr=1e-9, eval_every=1, patience=3, train_coeffs=False)
    assert Q.info["iters_run"] == 3  # at lr 1e-9 no validation gains 0.1%: stops after 3 checks
    R = optimise_solver(D, 4, x, reference=ref, iters=400, seconds=0.0)
    assert R.info["iters_run"] == 1


def test_save_load_round_trip_and_checks(tmp_path):
    D = ExactDenoiser(ring(), PATH)
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    P = optimise_solver(D, 4, x, iters=5, ref_steps=50)
    file = tmp_path / "bespoke_4.json"
    save_solver(file, P, PATH)
    Q = load_solver(file, PATH)
    assert torch.equal(Q.ts, P.ts) and all(torch.equal(Q.coeffs()[k], v) for k, v in P.coeffs().items())
    torch.testing.assert_close(bespoke(D, x, Q.ts, coeffs=Q.coeffs()), bespoke(D, x, P.ts, coeffs=P.coeffs()),
                               rtol=0, atol=0)
    for other in (discrete_vp("cosine", 1000), Linear()):
        with pytest.raises(ValueError, match="another path"):
            load_solver(file, other)
    plain = tmp_path / "grid.json"
    save_grid(plain, P.ts, PATH, "dpm++2m", 4)
    with pytest.raises(ValueError, match="plain time grid"):
        load_solver(plain, PATH)
    doc = json.loads(file.read_text())
    doc["coeffs"]["a"] = doc["coeffs"]["a"][:-1]
    file.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="shape"):
        load_solver(file, PATH)


def test_bespoke_params_fits_once_then_loads(tmp_path):
    C = Counting(ExactDenoiser(ring(), PATH))
    ts, co = bespoke_params(C, 4, tmp_path, calib_n=64, shape=(1, 2), iters=3, ref_steps=20, progress=False)
    assert C.nfe > 0 and (tmp_path / "bespoke_4.json").is_file()
    C.nfe = 0
    ts2, co2 = bespoke_params(C, 4, tmp_path, shape=(1, 2))
    assert C.nfe == 0 and torch.equal(ts2, ts) and all(torch.equal(co2[k], v) for k, v in co.items())
    with pytest.raises(ValueError, match="another path"):
        bespoke_params(ExactDenoiser(ring(), discrete_vp("cosine", 1000)), 4, tmp_path, shape=(1, 2))


def test_bad_input():
    D = ExactDenoiser(ring(), PATH)
    x = torch.randn(16, 2, dtype=torch.float64)
    ts = uniform_grid(PATH, 5)
    with pytest.raises(ValueError, match="shape"):
        bespoke(D, x, ts, coeffs=zero_coeffs(4))
    with pytest.raises(ValueError, match="keys"):
        bespoke(D, x, ts, coeffs={"a": torch.zeros(4)})
    bad = zero_coeffs(5)
    bad["c"][0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        bespoke(D, x, ts, coeffs=bad)
    with pytest.raises(ValueError, match="descending"):
        bespoke(D, x, torch.tensor([1000.0, 200.0, 500.0, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="history"):
        zero_coeffs(5, history=0)
    mixed = zero_coeffs(5, history=2)
    mixed["e"] = torch.zeros(4, dtype=torch.float64)  # K = 2 differences need 3 final-step weights
    with pytest.raises(ValueError, match="'e' must have shape"):
        bespoke(D, x, ts, coeffs=mixed)
    with pytest.raises(ValueError, match="at least 3 steps"):
        optimise_solver(D, 2, x)
    with pytest.raises(ValueError, match="val_frac"):
        optimise_solver(D, 5, x, val_frac=1.0)
    with pytest.raises(ValueError, match="hard_mix"):
        optimise_solver(D, 5, x, hard_mix=1.0)
    with pytest.raises(ValueError, match="validation slice"):
        optimise_solver(D, 5, x[:1])
    with pytest.raises(ValueError, match="reference shape"):
        optimise_solver(D, 5, x, reference=x[:4])
    with pytest.raises(ValueError, match="t_min"):
        optimise_solver(D, 5, x, t_min=1000.0)
    with pytest.raises(ValueError, match="sample shape"):
        bespoke_params(D, 5)
