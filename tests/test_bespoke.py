"""Bespoke solver: DPM-Solver++(2M) at zero coefficients, held-out gain over optimised grids, save/load, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from kuosan.exact import ExactDenoiser, GaussianMixture, pf_ode_solve, ring
from kuosan.samplers.bespoke import (
    bespoke,
    load_solver,
    optimise_solver,
    save_solver,
    zero_coeffs,
)
from kuosan.samplers.dpm_solver import dpmpp, psi
from kuosan.samplers.grids import logsnr_grid, uniform_grid
from kuosan.samplers.optimise import optimise_grid, save_grid
from kuosan.schedules import make_schedule

SCHED = make_schedule("linear", 1000)


def _aniso() -> GaussianMixture:
    """Three anisotropic 2-D Gaussians (a small mixture unlike the ring)."""
    means = torch.tensor([[-1.5, 0.5], [1.0, 1.2], [0.3, -1.4]], dtype=torch.float64)
    var = torch.tensor([[0.2, 0.01], [0.02, 0.15], [0.05, 0.05]], dtype=torch.float64)
    covs = torch.diag_embed(var)
    return GaussianMixture(means, covs, torch.tensor([0.5, 0.3, 0.2]))


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).pow(2).mean().sqrt().item()


@pytest.mark.parametrize("steps", [3, 7])
def test_zero_coefficients_are_dpm_solver_pp_2m(steps):
    D = ExactDenoiser(ring(), SCHED)
    x = torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for ts in (uniform_grid(SCHED.T, steps), logsnr_grid(SCHED, steps)):
        torch.testing.assert_close(bespoke(D, x, ts), dpmpp(D, x, ts, order=2), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(bespoke(D, x, ts, coeffs=zero_coeffs(steps)), dpmpp(D, x, ts, order=2))


def _three_m_coeffs(ts: torch.Tensor) -> dict[str, torch.Tensor]:
    """The history weights a that turn the bespoke update into DPM-Solver++(3M) (dpm_solver.dpmpp, order 3):
    3M adds ψ_2 (d1 + h1 d2) + 2ψ_3 d2 with d1 = Δ1/h1, d2 = (Δ1/h1 - Δ2/h2)/(h1 + h2); bespoke adds
    ψ_1 [(h/(2 h1) + a_1) Δ1 + a_2 Δ2]."""
    steps = ts.numel() - 1
    co = zero_coeffs(steps, history=2)
    lam = [0.5 * SCHED.log_snr(t).item() for t in ts[:-1]]
    for i in range(2, steps - 1):  # step 1 is the 2M warm-up, the last step a plain denoise
        h, h1, h2 = lam[i + 1] - lam[i], lam[i] - lam[i - 1], lam[i - 1] - lam[i - 2]
        p1, p2, p3 = psi(1, h), psi(2, h), psi(3, h)
        q = p2 * h1 + 2 * p3
        co["a"][i, 0] = (p2 / h1 + q / (h1 * (h1 + h2))) / p1 - h / (2 * h1)
        co["a"][i, 1] = -q / (h2 * (h1 + h2) * p1)
    return co


@pytest.mark.parametrize("steps", [4, 8])
def test_history_weights_reproduce_dpm_solver_pp_3m(steps):
    D = ExactDenoiser(_aniso(), SCHED)
    x = torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    for ts in (uniform_grid(SCHED.T, steps), logsnr_grid(SCHED, steps)):
        ref = dpmpp(D, x, ts, order=3)
        assert _rmse(ref, dpmpp(D, x, ts, order=2)) > 1e-4  # the two orders differ here, so the check has teeth
        torch.testing.assert_close(bespoke(D, x, ts, coeffs=_three_m_coeffs(ts)), ref, rtol=1e-9, atol=1e-9)


def test_query_shift_moves_the_model_time_and_rescales_the_state():
    calls = []
    base = ExactDenoiser(ring(), SCHED)

    class Recorder:
        schedule = SCHED

        def __call__(self, x, t):
            calls.append((x.clone(), t.clone()))
            return base(x, t)

    x = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    ts = uniform_grid(SCHED.T, 4)
    co = zero_coeffs(4)
    co["s"][0] = 0.5  # first query 0.5 higher in log-SNR than t = T
    co["s"][1] = -50.0  # below λ(T): clamped to t = T
    bespoke(Recorder(), x, ts, coeffs=co)
    tq = SCHED.t_from_log_snr(SCHED.log_snr(ts[0]) + 0.5)
    assert calls[0][1][0].item() == pytest.approx(tq.item(), rel=1e-12) and tq.item() < SCHED.T
    torch.testing.assert_close(calls[0][0], x * (SCHED.alpha(tq) / SCHED.alpha(ts[0])), rtol=1e-12, atol=0)
    assert calls[1][1][0].item() == pytest.approx(SCHED.T)
    assert [c[1][0].item() for c in calls[2:]] == pytest.approx(ts[2:-1].tolist())


@pytest.mark.parametrize("mix, steps", [(_aniso, 5), (ring, 10)])
def test_bespoke_beats_dpmpp2_on_optimised_grid_on_held_out_batch(mix, steps):
    m = mix()
    D = ExactDenoiser(m, SCHED)
    g = torch.Generator().manual_seed(0)
    x_cal = torch.randn(512, 2, dtype=torch.float64, generator=g)
    x_held = torch.randn(512, 2, dtype=torch.float64, generator=g)  # never seen by either optimiser
    ref_cal, exact = pf_ode_solve(m, x_cal, SCHED.sigma_max()), pf_ode_solve(m, x_held, SCHED.sigma_max())
    ts = optimise_grid(D, steps, x_cal[:128], sampler=dpmpp, reference=ref_cal[:128], max_evals=150)
    # started from the same optimised grid: the fitted coefficients and times must add a held-out gain
    # (measured: 0.36 × (aniso, 5 steps), 0.26 × (ring, 10 steps))
    P = optimise_solver(D, steps, x_cal, reference=ref_cal, iters=150, init_grid=ts)
    assert P.ts.shape == (steps + 1,) and P.ts[0].item() == SCHED.T and P.ts[-1].item() == 0.0
    assert P.info["val_rmse"] < P.info["start_val_rmse"]
    base = _rmse(dpmpp(D, x_held, ts), exact)
    ours = _rmse(bespoke(D, x_held, P.ts, coeffs=P.coeffs()), exact)
    assert ours < 0.7 * base, (ours, base)


def test_save_load_round_trip_and_checks(tmp_path):
    D = ExactDenoiser(ring(), SCHED)
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    P = optimise_solver(D, 4, x, iters=5, ref_steps=50)
    path = tmp_path / "bespoke_4.json"
    save_solver(path, P, SCHED)
    Q = load_solver(path, SCHED)
    assert torch.equal(Q.ts, P.ts) and all(torch.equal(Q.coeffs()[k], v) for k, v in P.coeffs().items())
    torch.testing.assert_close(bespoke(D, x, Q.ts, coeffs=Q.coeffs()), bespoke(D, x, P.ts, coeffs=P.coeffs()),
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="another schedule"):
        load_solver(path, make_schedule("cosine", 1000))
    plain = tmp_path / "grid.json"
    save_grid(plain, P.ts, SCHED, "dpm++2m", 4)
    with pytest.raises(ValueError, match="plain time grid"):
        load_solver(plain, SCHED)
    doc = json.loads(path.read_text())
    doc["coeffs"]["a"] = doc["coeffs"]["a"][:-1]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="shape"):
        load_solver(path, SCHED)


def test_bad_input():
    D = ExactDenoiser(ring(), SCHED)
    x = torch.randn(16, 2, dtype=torch.float64)
    ts = uniform_grid(SCHED.T, 5)
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
