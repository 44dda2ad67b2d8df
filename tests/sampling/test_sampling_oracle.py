"""Deterministic samplers against the exact PF-ODE (kuosan.exact) on every path kind.

Known answers: DPM-Solver++(1) = Euler in VE coordinates = DDIM η = 0 (Lu et al. 2022b, Karras et al. 2022),
UniP-2 without corrector = DPM-Solver++(2M) (Zhao et al. 2023), convergence orders on a Gaussian (linear ODE) and
a 2-D ring mixture with the exact denoiser, NFE, the exact PF-ODE endpoint at high N, and — from α(t_max) = 0
(flow, zero terminal SNR) — the closed-form flow of Gaussian data x_0 = μ + C^{1/2} ε.
"""

from __future__ import annotations

import math
from functools import lru_cache, partial

import pytest
import torch

from kuosan.denoiser import Counting
from kuosan.exact import ExactDenoiser, curve_cov, gaussian, pf_ode_solve, ring
from kuosan.paths import coefficients, discrete_vp, f64, make_path
from kuosan.sampling import ddim, dpm_solver_2s, dpmpp, euler, heun, karras_grid, logsnr_grid, psi, uniform_grid, unipc

PATH = discrete_vp("linear", 1000)
T_MIN = 1.0  # last model time of logsnr_grid / karras_grid on the discrete chain before t = 0

# name -> (sampler, its convergence order, NFE as a function of the number of steps N)
SAMPLERS = {
    "dpmpp1": (partial(dpmpp, order=1), 1, lambda n: n),
    "dpmpp2": (partial(dpmpp, order=2), 2, lambda n: n),
    "dpmpp3": (partial(dpmpp, order=3), 3, lambda n: n),
    "dpm2s": (dpm_solver_2s, 2, lambda n: 2 * n - 1),
    # UniPC-p with UniC is order p+1; p = 3 is tested at p only: its warm-up steps (UniC-1, UniC-2) limit it.
    "unipc1": (partial(unipc, order=1), 2, lambda n: n),
    "unipc2": (partial(unipc, order=2), 3, lambda n: n),
    "unipc3": (partial(unipc, order=3), 3, lambda n: n),
    "unipc2_bh1": (partial(unipc, order=2, variant="bh1"), 3, lambda n: n),
    "unip2": (partial(unipc, order=2, corrector=False), 2, lambda n: n),
    "unip3": (partial(unipc, order=3, corrector=False), 3, lambda n: n),
    "euler": (euler, 1, lambda n: n),
    "heun": (heun, 2, lambda n: 2 * n - 1),
}


@lru_cache(maxsize=None)
def problem(name: str) -> tuple:
    """(mixture, x_T (B, dim) float64) for 'gauss' (16-dim curve covariance) or 'ring' (8 modes in 2-D)."""
    mix = gaussian(torch.zeros(16), curve_cov(16)) if name == "gauss" else ring()
    g = torch.Generator().manual_seed(0)
    return mix, torch.randn(16, mix.dim, generator=g, dtype=torch.float64)


def ve_sigma_at(path, t: float) -> float:
    return math.exp(-0.5 * coefficients(path, t)[2])


def exact_ode(mix, path, x: torch.Tensor, t_from: float, t_to: float) -> torch.Tensor:
    """The exact PF-ODE on ``path`` from state x at t_from to t_to (> 0), through the VE state y = x/α."""
    s_from, s_to = ve_sigma_at(path, t_from), ve_sigma_at(path, t_to)
    x_vp = x / coefficients(path, t_from)[0] / math.sqrt(1 + s_from**2)  # pf_ode_solve's VP scaling of y
    y = pf_ode_solve(mix, x_vp, s_from, s_to) * math.sqrt(1 + s_to**2)
    return coefficients(path, t_to)[0] * y


def truncated_reference(mix, path, x_T, t_from: float, t_min: float) -> torch.Tensor:
    """Exact PF-ODE from t_from to the grid's last model time t_min, then the exact denoise there: what any of
    the samplers converges to on a grid ending ..., t_min, 0 (the last step into t = 0 is x̂_0 by construction,
    O(σ̃(t_min)²) from the ODE endpoint)."""
    return ExactDenoiser(mix, path)(exact_ode(mix, path, x_T, t_from, t_min), f64(t_min))


@lru_cache(maxsize=None)
def discrete_reference(name: str) -> torch.Tensor:
    mix, x_T = problem(name)
    return truncated_reference(mix, PATH, x_T, PATH.t_max, T_MIN)


@lru_cache(maxsize=None)
def full_reference(name: str) -> torch.Tensor:
    mix, x_T = problem(name)
    return pf_ode_solve(mix, x_T, PATH.sigma_max())


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).pow(2).mean().sqrt().item()


def slope_of(ns, errs) -> float:
    return -torch.linalg.lstsq(torch.tensor([[math.log(n), 1.0] for n in ns]),
                               torch.tensor(errs).log()[:, None]).solution[0, 0].item()


# --- equivalences ---------------------------------------------------------------------------------------
EQUIV_PATHS = {"linear": lambda: PATH, "flow": lambda: make_path("flow"), "ve": lambda: make_path("ve"),
               "ztsnr": lambda: discrete_vp("linear", 1000, zero_terminal_snr=True)}


@pytest.mark.parametrize("pk", list(EQUIV_PATHS))
@pytest.mark.parametrize("grid", ["trailing", "logsnr", "karras"])
@pytest.mark.parametrize("name", ["dpmpp1", "euler", "unip1"])
def test_first_order_solvers_are_ddim(name: str, grid: str, pk: str) -> None:
    fn = {"dpmpp1": SAMPLERS["dpmpp1"][0], "euler": euler, "unip1": partial(unipc, order=1, corrector=False)}[name]
    path = EQUIV_PATHS[pk]()
    mix, x_T = problem("ring")
    D = ExactDenoiser(mix, path)
    x_T = x_T * path.prior_std
    ts = {"trailing": uniform_grid(path, 10, "trailing"), "logsnr": logsnr_grid(path, 10),
          "karras": karras_grid(path, 10)}[grid]
    out, ref = fn(D, x_T, ts), ddim(D, x_T, ts, eta=0.0)
    assert (out - ref).abs().max().item() < 1e-12
    # and the tolerance discriminates: a second-order solver on the same grid is far away
    assert (dpmpp(D, x_T, ts, order=2) - ref).abs().max().item() > 1e-3


@pytest.mark.parametrize("pk", ["linear", "flow"])
@pytest.mark.parametrize("grid", ["logsnr", "karras"])
def test_unip_is_dpmpp_multistep(grid: str, pk: str) -> None:
    """UniP-2 with B(h) = 1 - e^{-h} and a_1 = 1/2 is DPM-Solver++(2M), Alg. 2 (as Zhao et al. note); UniP-3 solves
    its order conditions exactly, i.e. integrates the same quadratic interpolant as the Newton-form 3M. On flow the
    first step leaves α = 0 and both drop that output from their history in the same way."""
    path = EQUIV_PATHS[pk]()
    mix, x_T = problem("ring")
    D = ExactDenoiser(mix, path)
    ts = logsnr_grid(path, 12) if grid == "logsnr" else karras_grid(path, 12)
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
    D, ref = ExactDenoiser(mix, PATH), discrete_reference(problem_name)
    # asymptotic regime: Gaussian from N = 20, the ring (narrow modes, std 0.05) from N = 40
    ns = [20, 40, 80, 160] if problem_name == "gauss" else [40, 80, 160, 320]
    make = logsnr_grid if grid == "logsnr" else karras_grid
    errs = [rmse(fn(D, x_T, make(PATH, n)), ref) for n in ns]
    slope = slope_of(ns, errs)
    assert errs[-1] > 1e-10, "errors at the reference's own accuracy: the slope would mean nothing"
    assert slope >= order - 0.3, f"{name} on {problem_name}/{grid}: slope {slope:.2f}, errors {errs}"


ORDER_PATHS = {"flow": lambda: make_path("flow"), "ve": lambda: make_path("ve"),
               "vp_cosine": lambda: make_path("vp_cosine"),
               "ztsnr": lambda: discrete_vp("linear", 1000, zero_terminal_snr=True)}


@pytest.mark.parametrize("pk", list(ORDER_PATHS))
@pytest.mark.parametrize("name", ["dpmpp2", "unipc2", "heun", "dpm2s", "euler"])
def test_convergence_order_on_other_paths(name: str, pk: str) -> None:
    """The same orders on flow, VE, continuous VP and the zero-terminal-SNR chain, from the time where σ̃ = 80
    (the state there converted to the VE state y = x/α for the exact solve, with ve_sigma_from = σ̃(t_0))."""
    fn, order, _ = SAMPLERS[name]
    path = ORDER_PATHS[pk]()
    mix, x_vp = problem("gauss")
    t0 = min(path.t_max, float(path.t_of_log_snr(f64(-2 * math.log(80.0)))))
    t_min = float(path.t_of_log_snr(f64(-2 * math.log(0.01))))  # σ̃ = 0.01 at the last model time
    x0_state = coefficients(path, t0)[0] * x_vp * math.sqrt(1 + ve_sigma_at(path, t0) ** 2)  # α y, y ~ √(1+σ̃²) N
    ref = truncated_reference(mix, path, x0_state, t0, t_min)
    ns = [20, 40, 80, 160]
    D = ExactDenoiser(mix, path)
    errs = [rmse(fn(D, x0_state, logsnr_grid(path, n, t_min=t_min, t_start=t0)), ref) for n in ns]
    slope = slope_of(ns, errs)
    assert errs[-1] > 1e-10
    assert slope >= order - 0.3, f"{name} on {pk}: slope {slope:.2f}, errors {errs}"


def test_unipc_corrector_helps() -> None:
    """Same NFE: UniPC-2 (with UniC) beats UniP-2 (= DPM-Solver++(2M)) by a growing factor."""
    mix, x_T = problem("gauss")
    D, ref = ExactDenoiser(mix, PATH), discrete_reference("gauss")
    ratios = []
    for n in (20, 80):
        ts = logsnr_grid(PATH, n)
        ratios.append(rmse(unipc(D, x_T, ts, corrector=False), ref) / rmse(unipc(D, x_T, ts), ref))
    assert ratios[0] > 1.0 and ratios[1] > 3 * ratios[0]


def test_ddim_eta0_is_deterministic_and_converges_at_first_order():
    mean = torch.linspace(-0.5, 0.5, 8, dtype=torch.float64)
    mix = gaussian(mean, curve_cov(8, scale=0.5, length=2.0))
    D = ExactDenoiser(mix, PATH)
    x_T = torch.randn(256, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ref = pf_ode_solve(mix, x_T, PATH.sigma_max())
    from kuosan.sampling import NoiseSource

    a = ddim(D, x_T, uniform_grid(PATH, 20), noise=NoiseSource(0, 0, 256))
    b = ddim(D, x_T, uniform_grid(PATH, 20), noise=NoiseSource(99, 0, 256))
    assert torch.equal(a, b)
    errs = [rmse(ddim(D, x_T, uniform_grid(PATH, n, "trailing")), ref) for n in (25, 50, 100, 200)]
    assert all(e1 > e2 for e1, e2 in zip(errs, errs[1:])), errs
    # first order: doubling the steps roughly halves the error (slope of log err vs log N near -1)
    slope = (torch.tensor(errs).log().diff() / torch.tensor(2.0).log()).mean().item()
    assert -1.4 < slope < -0.7, (errs, slope)


# --- the exact PF-ODE endpoint at high N ------------------------------------------------------------
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_reaches_exact_endpoint(name: str) -> None:
    """N = 200 down to t = 1e-3 (σ̃ ≈ 3e-4, so the final denoise costs ~1e-6): RMSE to the exact ODE end."""
    fn, order, _ = SAMPLERS[name]
    mix, x_T = problem("ring")
    err = rmse(fn(ExactDenoiser(mix, PATH), x_T, logsnr_grid(PATH, 200, t_min=1e-3)), full_reference("ring"))
    assert err < (3e-4 if order >= 2 else 5e-3), f"{name}: RMSE {err:.3g}"


ZERO_SNR = {"ztsnr": lambda: discrete_vp("linear", 1000, zero_terminal_snr=True), "flow": lambda: make_path("flow"),
            "vp_cosine": lambda: make_path("vp_cosine")}
GAUSS_MEAN, GAUSS_COV = torch.linspace(-0.5, 0.5, 16, dtype=torch.float64), curve_cov(16)


def gaussian_flow_from_infinity(eps: torch.Tensor, s1: float | None, s_min: float = 0.0) -> torch.Tensor:
    """Closed forms for Gaussian data N(μ, C), whose PF-ODE in VE coordinates is y(σ̃) - μ = (C + σ̃²)^{1/2}
    (C + σ̃'²)^{-1/2} (y(σ̃') - μ): started at α = 0 from x_T = ε (so y/σ̃ -> ε), with s1 = None it is the
    exact flow to σ̃ = 0, x_0 = μ + C^{1/2} ε; with s1 it is a DDIM step to σ̃ = s1 (y_1 = μ + s1 ε), the exact
    flow to s_min and the exact denoise there, x̂_0 = μ + C (C + s_min²)^{-1} (y - μ)."""
    d, U = torch.linalg.eigh(GAUSS_COV)
    e = eps @ U  # ε in C's eigenbasis
    if s1 is None:
        return GAUSS_MEAN + (e * d.sqrt()) @ U.T
    y = e * s1 * ((d + s_min**2) / (d + s1**2)).sqrt()
    return GAUSS_MEAN + (y * d / (d + s_min**2)) @ U.T


@pytest.mark.parametrize("pk", list(ZERO_SNR))
@pytest.mark.parametrize("name", ["dpmpp2", "dpmpp3", "unipc2", "unipc3", "heun", "dpm2s", "euler"])
def test_zero_terminal_snr_first_step_is_ddim_then_the_order_holds(name: str, pk: str) -> None:
    """Out of α(t_max) = 0 every solver takes the DDIM step to σ̃_1 = σ̃(t_1) (y_1 = μ + σ̃_1 ε, finite) and
    then converges at its order to the exact flow from there (closed form for Gaussian data)."""
    fn, order, _ = SAMPLERS[name]
    path = ZERO_SNR[pk]()
    mix, eps = gaussian(GAUSS_MEAN, GAUSS_COV), problem("gauss")[1]
    t_min = float(path.t_of_log_snr(f64(-2 * math.log(1e-2))))
    ns, errs = [20, 40, 80, 160], []
    D = ExactDenoiser(mix, path)
    for n in ns:
        ts = logsnr_grid(path, n, t_min=t_min)
        ref = gaussian_flow_from_infinity(eps, ve_sigma_at(path, float(ts[1])), ve_sigma_at(path, t_min))
        errs.append(rmse(fn(D, eps, ts), ref))
    slope = slope_of(ns, errs)
    assert errs[-1] > 1e-10
    assert slope >= order - 0.3, f"{name} on {pk}: slope {slope:.2f}, errors {errs}"


@pytest.mark.parametrize("pk", list(ZERO_SNR))
def test_zero_terminal_snr_sampling_reaches_the_exact_gaussian_flow(pk: str) -> None:
    """End to end from α = 0 (x_T = ε) on the exact denoiser: x_0 = μ + C^{1/2} ε up to the floor of the first
    DDIM step to σ̃_1 ≈ 80, C ε/(2σ̃_1) in y contracted by C^{1/2}/σ̃_1
    (about 1e-4 here; 3e-2 from σ̃ = 8)."""
    path = ZERO_SNR[pk]()
    mix, eps = gaussian(GAUSS_MEAN, GAUSS_COV), problem("gauss")[1]
    exact = gaussian_flow_from_infinity(eps, None)
    floor = rmse(gaussian_flow_from_infinity(eps, 80.0), exact)
    assert 1e-5 < floor < 2e-4 and rmse(gaussian_flow_from_infinity(eps, 8.0), exact) > 1e-2
    t_min = float(path.t_of_log_snr(f64(-2 * math.log(1e-3))))
    C = Counting(ExactDenoiser(mix, path))
    out = dpmpp(C, eps, logsnr_grid(path, 400, t_min=t_min), order=3)
    assert C.nfe == 400 and rmse(out, exact) < 1.2 * floor + 2e-5, (rmse(out, exact), floor)
    assert rmse(unipc(ExactDenoiser(mix, path), eps, logsnr_grid(path, 50)), exact) < 3e-3  # default grid, 50 NFE


# --- NFE, callbacks, dtype ----------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 7])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_nfe_and_callback(name: str, n: int) -> None:
    fn, _, nfe = SAMPLERS[name]
    mix, x_T = problem("ring")
    D = Counting(ExactDenoiser(mix, PATH))
    out = fn(D, x_T.float(), logsnr_grid(PATH, n))
    assert D.nfe == nfe(n)
    assert out.dtype == torch.float32 and out.shape == x_T.shape and bool(torch.isfinite(out).all())
    if n == 1:  # a single step into t = 0 is the denoise at t = T
        assert torch.allclose(out, D.inner(x_T.float(), torch.tensor(float(PATH.T))), atol=1e-6)


@pytest.mark.parametrize("name", ["dpmpp3", "dpm2s", "unipc3", "heun"])
def test_callback_sees_every_step(name: str) -> None:
    mix, x_T = problem("ring")
    seen: list[int] = []
    fn = {"dpmpp3": partial(dpmpp, order=3), "dpm2s": dpm_solver_2s, "unipc3": partial(unipc, order=3),
          "heun": heun}[name]
    out = fn(D=ExactDenoiser(mix, PATH), x=x_T, ts=logsnr_grid(PATH, 6), callback=lambda i, x, x0: seen.append(i))
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
    assert psi(1, math.inf) == 1.0  # the step out of α = 0


# --- bad input ------------------------------------------------------------------------------------------
def test_bad_input() -> None:
    mix, x_T = problem("ring")
    D, ts = ExactDenoiser(mix, PATH), logsnr_grid(PATH, 5)
    for order in (0, 4, 2.5, True):
        with pytest.raises(ValueError, match="order"):
            dpmpp(D, x_T, ts, order=order)
        with pytest.raises(ValueError, match="order"):
            unipc(D, x_T, ts, order=order)
    with pytest.raises(ValueError, match="variant"):
        unipc(D, x_T, ts, variant="bh3")
    with pytest.raises(ValueError, match="corrector"):
        unipc(D, x_T, ts, corrector="yes")
    for r in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="r must"):
            dpm_solver_2s(D, x_T, ts, r=r)
    for bad in (ts.flip(0), ts[:-1], torch.tensor([1000.0, 500.0, 500.0, 0.0]), ts[:1]):
        for fn in (dpmpp, dpm_solver_2s, unipc, euler, heun):
            with pytest.raises(ValueError, match="grid"):
                fn(D, x_T, bad)
