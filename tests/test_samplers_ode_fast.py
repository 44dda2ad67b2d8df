"""Fast ODE samplers (DPM-Solver++, DPM-Solver-2, UniPC, EDM Euler/Heun) against the exact PF-ODE.

Known answers: DPM-Solver++(1) = Euler in VE coordinates = DDIM η = 0 (Lu et al. 2022b, Karras et al. 2022),
UniP-2 without corrector = DPM-Solver++(2M) (Zhao et al. 2023), convergence orders on a Gaussian
(linear ODE) and a 2-D ring mixture with the exact denoiser, NFE, and the exact PF-ODE endpoint at high N.
"""

from __future__ import annotations

import math
from functools import lru_cache

import pytest
import torch

from kuosan.denoiser import CountingDenoiser
from kuosan.exact import ExactDenoiser, curve_cov, gaussian, pf_ode_solve, ring
from kuosan.samplers.ddpm import ddim
from kuosan.samplers.dpm_solver import dpm_solver_2s, dpmpp, psi
from kuosan.samplers.edm import euler, heun
from kuosan.samplers.grids import karras_grid, logsnr_grid, uniform_grid
from kuosan.samplers.unipc import unipc
from kuosan.schedules import make_schedule

SCHED = make_schedule("linear", 1000)
T_MIN = 1.0  # last model time of logsnr_grid / karras_grid before t = 0

# name -> (sampler, its convergence order, NFE as a function of the number of steps N)
SAMPLERS = {
    "dpmpp1": (lambda D, x, ts: dpmpp(D, x, ts, order=1), 1, lambda n: n),
    "dpmpp2": (lambda D, x, ts: dpmpp(D, x, ts, order=2), 2, lambda n: n),
    "dpmpp3": (lambda D, x, ts: dpmpp(D, x, ts, order=3), 3, lambda n: n),
    "dpm2s": (dpm_solver_2s, 2, lambda n: 2 * n - 1),
    # UniPC-p with UniC is order p+1; p = 3 is tested at p only: its warm-up steps (UniC-1, UniC-2) limit it.
    "unipc1": (lambda D, x, ts: unipc(D, x, ts, order=1), 2, lambda n: n),
    "unipc2": (lambda D, x, ts: unipc(D, x, ts, order=2), 3, lambda n: n),
    "unipc3": (lambda D, x, ts: unipc(D, x, ts, order=3), 3, lambda n: n),
    "unipc2_bh1": (lambda D, x, ts: unipc(D, x, ts, order=2, variant="bh1"), 3, lambda n: n),
    "unip2": (lambda D, x, ts: unipc(D, x, ts, order=2, corrector=False), 2, lambda n: n),
    "unip3": (lambda D, x, ts: unipc(D, x, ts, order=3, corrector=False), 3, lambda n: n),
    "euler": (euler, 1, lambda n: n),
    "heun": (heun, 2, lambda n: 2 * n - 1),
}



@lru_cache(maxsize=None)
def problem(name: str) -> tuple:
    """(mixture, x_T (B, dim) float64) for 'gauss' (16-dim curve covariance) or 'ring' (8 modes in 2-D)."""
    mix = gaussian(torch.zeros(16), curve_cov(16)) if name == "gauss" else ring()
    g = torch.Generator().manual_seed(0)
    return mix, torch.randn(16, mix.dim, generator=g, dtype=torch.float64)


@lru_cache(maxsize=None)
def truncated_reference(name: str) -> torch.Tensor:
    """Exact PF-ODE from t = T to the grid's last model time t_min, then the exact denoise there.

    This is what any of the samplers converges to on a grid ending ..., t_min, 0: the last step into t = 0
    is x̂_0 by construction, which differs from the ODE endpoint by O(σ̃(t_min)²) (about 1e-3 here).
    """
    mix, x_T = problem(name)
    sig_min = math.sqrt(1.0 / SCHED.alpha_bar(torch.tensor(T_MIN, dtype=torch.float64)).item() - 1.0)
    x_min = pf_ode_solve(mix, x_T, SCHED.sigma_max(), sig_min)
    return ExactDenoiser(mix, SCHED)(x_min, torch.tensor(T_MIN, dtype=torch.float64))


@lru_cache(maxsize=None)
def full_reference(name: str) -> torch.Tensor:
    mix, x_T = problem(name)
    return pf_ode_solve(mix, x_T, SCHED.sigma_max())


def fine_logsnr_grid(n: int, t_min: float = 1e-3) -> torch.Tensor:
    """Uniform in log-SNR from t = T down to t_min < 1 (below grids.logsnr_grid's reach), then 0."""
    lam = torch.linspace(SCHED.log_snr(torch.tensor(float(SCHED.T), dtype=torch.float64)).item(),
                         SCHED.log_snr(torch.tensor(t_min, dtype=torch.float64)).item(), n, dtype=torch.float64)
    ts = torch.tensor([SCHED.t_from_log_snr(torch.tensor(v, dtype=torch.float64)).item() for v in lam.tolist()], dtype=torch.float64)
    ts[0] = float(SCHED.T)
    return torch.cat([ts, ts.new_zeros(1)])


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).pow(2).mean().sqrt().item()


# --- equivalences ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid", ["trailing", "logsnr", "karras"])
@pytest.mark.parametrize("name", ["dpmpp1", "euler", "unip1"])
def test_first_order_solvers_are_ddim(name: str, grid: str) -> None:
    fn = {"dpmpp1": SAMPLERS["dpmpp1"][0], "euler": euler,
          "unip1": lambda D, x, ts: unipc(D, x, ts, order=1, corrector=False)}[name]
    mix, x_T = problem("ring")
    D = ExactDenoiser(mix, SCHED)
    ts = {"trailing": uniform_grid(SCHED.T, 10, "trailing"), "logsnr": logsnr_grid(SCHED, 10),
          "karras": karras_grid(SCHED, 10)}[grid]
    out, ref = fn(D, x_T, ts), ddim(D, x_T, ts, eta=0.0)
    assert (out - ref).abs().max().item() < 1e-12
    # and the tolerance discriminates: a second-order solver on the same grid is far away
    assert (dpmpp(D, x_T, ts, order=2) - ref).abs().max().item() > 1e-3


@pytest.mark.parametrize("grid", ["logsnr", "karras"])
def test_unip_is_dpmpp_multistep(grid: str) -> None:
    """UniP-2 with B(h) = 1 - e^{-h} and a_1 = 1/2 is DPM-Solver++(2M), Alg. 2 (as Zhao et al. note); UniP-3 solves
    its order conditions exactly, i.e. integrates the same quadratic interpolant as the Newton-form 3M."""
    mix, x_T = problem("ring")
    D = ExactDenoiser(mix, SCHED)
    ts = logsnr_grid(SCHED, 12) if grid == "logsnr" else karras_grid(SCHED, 12)
    out = unipc(D, x_T, ts, order=2, corrector=False, variant="bh2")
    assert (out - dpmpp(D, x_T, ts, order=2)).abs().max().item() < 1e-12
    assert (unipc(D, x_T, ts, order=2, corrector=False, variant="bh1") - out).abs().max().item() > 1e-6
    out3 = unipc(D, x_T, ts, order=3, corrector=False)
    assert (out3 - dpmpp(D, x_T, ts, order=3)).abs().max().item() < 1e-12
    assert (out3 - out).abs().max().item() > 1e-4


# --- convergence orders -------------------------------------------------------------------------------
CASES = [("gauss", "logsnr", n) for n in SAMPLERS] + [("gauss", "karras", n) for n in SAMPLERS] + [
    ("ring", "logsnr", n) for n in ("dpmpp2", "dpmpp3", "dpm2s", "unipc2", "heun")]


@pytest.mark.parametrize("problem_name,grid,name", CASES)
def test_convergence_order(problem_name: str, grid: str, name: str) -> None:
    fn, order, _ = SAMPLERS[name]
    mix, x_T = problem(problem_name)
    D, ref = ExactDenoiser(mix, SCHED), truncated_reference(problem_name)
    # asymptotic regime: Gaussian from N = 20, the ring (narrow modes, std 0.05) from N = 40
    ns = [20, 40, 80, 160] if problem_name == "gauss" else [40, 80, 160, 320]
    make = logsnr_grid if grid == "logsnr" else karras_grid
    errs = [rmse(fn(D, x_T, make(SCHED, n)), ref) for n in ns]
    slope = -torch.linalg.lstsq(torch.tensor([[math.log(n), 1.0] for n in ns]),
                                torch.tensor(errs).log()[:, None]).solution[0, 0].item()
    assert errs[-1] > 1e-10, "errors at the reference's own accuracy: the slope would mean nothing"
    assert slope >= order - 0.3, f"{name} on {problem_name}/{grid}: slope {slope:.2f}, errors {errs}"


def test_unipc_corrector_helps() -> None:
    """Same NFE: UniPC-2 (with UniC) beats UniP-2 (= DPM-Solver++(2M)) by a growing factor."""
    mix, x_T = problem("gauss")
    D, ref = ExactDenoiser(mix, SCHED), truncated_reference("gauss")
    ratios = []
    for n in (20, 80):
        ts = logsnr_grid(SCHED, n)
        ratios.append(rmse(unipc(D, x_T, ts, corrector=False), ref) / rmse(unipc(D, x_T, ts), ref))
    assert ratios[0] > 1.0 and ratios[1] > 3 * ratios[0]


# --- the exact PF-ODE endpoint at high N ------------------------------------------------------------
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_reaches_exact_endpoint(name: str) -> None:
    """N = 200 down to t = 1e-3 (σ̃ ≈ 3e-4, so the final denoise costs ~1e-6): RMSE to the exact ODE end."""
    fn, order, _ = SAMPLERS[name]
    mix, x_T = problem("ring")
    err = rmse(fn(ExactDenoiser(mix, SCHED), x_T, fine_logsnr_grid(200)), full_reference("ring"))
    assert err < (3e-4 if order >= 2 else 5e-3), f"{name}: RMSE {err:.3g}"


# --- NFE, callbacks, dtype ----------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 7])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_nfe_and_callback(name: str, n: int) -> None:
    fn, _, nfe = SAMPLERS[name]
    mix, x_T = problem("ring")
    D = CountingDenoiser(ExactDenoiser(mix, SCHED))
    out = fn(D, x_T.float(), logsnr_grid(SCHED, n))
    assert D.nfe == nfe(n)
    assert out.dtype == torch.float32 and out.shape == x_T.shape and bool(torch.isfinite(out).all())
    if n == 1:  # a single step into t = 0 is the denoise at t = T
        assert torch.allclose(out, D.inner(x_T.float(), torch.tensor(float(SCHED.T))), atol=1e-6)


@pytest.mark.parametrize("name", ["dpmpp3", "dpm2s", "unipc3", "heun"])
def test_callback_sees_every_step(name: str) -> None:
    mix, x_T = problem("ring")
    seen: list[int] = []
    fn = {"dpmpp3": lambda **k: dpmpp(order=3, **k), "dpm2s": dpm_solver_2s,
          "unipc3": lambda **k: unipc(order=3, **k), "heun": heun}[name]
    out = fn(D=ExactDenoiser(mix, SCHED), x=x_T, ts=logsnr_grid(SCHED, 6), callback=lambda i, x, x0: seen.append(i))
    assert seen == list(range(6)) and bool(torch.isfinite(out).all())


# --- helpers ----------------------------------------------------------------------------------------------
def test_psi_matches_quadrature() -> None:
    """ψ_k(h) = ∫_0^h e^{u-h} u^{k-1}/(k-1)! du, across the series / recurrence switch at h = 1."""
    from scipy.integrate import quad

    for k in (1, 2, 3, 4):
        for h in (1e-3, 0.3, 0.999999, 1.0, 2.5, 30.0):
            exact = quad(lambda u: math.exp(u - h) * u ** (k - 1) / math.factorial(k - 1), 0, h,
                         epsabs=0, epsrel=1e-13)[0]
            assert psi(k, h) == pytest.approx(exact, rel=1e-10), (k, h)


@pytest.mark.parametrize("t", [1e-4, 0.37, 1.0, 1.5, 250.0, 999.9])
def test_t_of_log_snr_inverts_below_one(t: float) -> None:
    lam = SCHED.log_snr(torch.tensor(t, dtype=torch.float64)).item()
    assert SCHED.t_from_log_snr(torch.tensor(lam, dtype=torch.float64)).item() == pytest.approx(t, rel=1e-9)


# --- bad input ------------------------------------------------------------------------------------------
def test_bad_input() -> None:
    mix, x_T = problem("ring")
    D, ts = ExactDenoiser(mix, SCHED), logsnr_grid(SCHED, 5)
    for order in (0, 4, 2.5):
        with pytest.raises(ValueError, match="order"):
            dpmpp(D, x_T, ts, order=order)
        with pytest.raises(ValueError, match="order"):
            unipc(D, x_T, ts, order=order)
    with pytest.raises(ValueError, match="variant"):
        unipc(D, x_T, ts, variant="bh3")
    with pytest.raises(ValueError, match="r must"):
        dpm_solver_2s(D, x_T, ts, r=0.0)
    for bad in (ts.flip(0), ts[:-1], torch.tensor([1000.0, 500.0, 500.0, 0.0]), ts[:1]):
        for fn in (dpmpp, dpm_solver_2s, unipc, euler, heun):
            with pytest.raises(ValueError, match="grid"):
                fn(D, x_T, bad)
