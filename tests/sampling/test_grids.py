"""Time grids on every path: integer spacings of the discrete chain, logSNR and Karras grids including paths
with λ(t_max) = -∞ (flow, VP cosine, zero terminal SNR), and the grid checks every sampler shares."""

from __future__ import annotations

import math

import pytest
import torch

from kuosan.exact import ExactDenoiser, pf_ode_solve, ring
from kuosan.paths import PathError, discrete_vp, f64, make_path
from kuosan.sampling import (SAMPLERS, check_grid, ddim, default_grid, default_t_min, karras_grid, logsnr_grid,
                             make_grid, sample, uniform_grid)
from kuosan.sampling.grids import VE_SIGMA_END, VE_SIGMA_START, spacing_start

PATHS = {
    "linear": lambda: discrete_vp("linear", 1000),
    "cosine": lambda: discrete_vp("cosine", 1000),
    "ztsnr": lambda: discrete_vp("linear", 1000, zero_terminal_snr=True),
    "ztsnr_T10": lambda: discrete_vp("scaled_linear", 10, zero_terminal_snr=True),
    "vp_cosine": lambda: make_path("vp_cosine"),
    "vp_linear": lambda: make_path("vp_linear"),
    "ve": lambda: make_path("ve"),
    "flow": lambda: make_path("flow"),
}


def lam(path, t) -> float:
    return float(path.log_snr(f64(float(t))))


def test_grids_step_to_their_true_previous_time():
    path = discrete_vp("linear", 1000)
    for spacing, first, second_last in [("leading", 981, 1), ("trailing", 1000, 20), ("linspace", 1000, 1)]:
        ts = uniform_grid(path, 50, spacing)
        assert len(ts) == 51 and ts[0] == first and ts[-2] == second_last and ts[-1] == 0
        assert bool((ts.diff() < 0).all())
    ts = uniform_grid(path, 7, "linspace")  # 1000/7 is not an integer: gaps differ, prev must follow the grid
    assert len(set(ts.diff().tolist())) > 1
    assert torch.equal(uniform_grid(path, 1000, "linspace"), torch.arange(1000, -1, -1, dtype=torch.float64))
    for bad in (0, -3, 1001, 2.5):
        with pytest.raises(ValueError):
            uniform_grid(path, bad, "trailing")
    with pytest.raises(ValueError, match="unknown spacing"):
        uniform_grid(path, 10, "middle")


@pytest.mark.parametrize("kind", ["vp_cosine", "vp_linear", "ve", "flow"])
def test_uniform_grid_on_continuous_paths(kind):
    path = PATHS[kind]()
    ts = uniform_grid(path, 8, "trailing")
    expected = path.t_max * (1 - torch.arange(8, dtype=torch.float64) / 8)
    assert torch.allclose(ts[:-1], expected, rtol=0, atol=1e-15) and ts[0] == path.t_max and ts[-1] == 0
    for spacing in ("leading", "linspace"):  # integer steps of the chain only
        with pytest.raises(PathError, match="discrete"):
            uniform_grid(path, 8, spacing)


@pytest.mark.parametrize("kind", list(PATHS))
@pytest.mark.parametrize("steps", [1, 2, 10])
def test_logsnr_grid_on_every_path(kind, steps):
    path = PATHS[kind]()
    ts = logsnr_grid(path, steps)
    check_grid(ts, path)
    assert len(ts) == steps + 1 and ts[0] == path.t_max and ts[-1] == 0
    if steps == 1:
        return
    t_min = default_t_min(path)
    assert ts[-2].item() == pytest.approx(t_min, rel=1e-9)
    # the interior is uniform in λ, continuing from the spacing start (finite even where λ(t_max) = -∞)
    lams = [spacing_start(path, path.t_max)] + [lam(path, t) for t in ts[1:-1]]
    assert all(math.isfinite(v) for v in lams)
    d = torch.tensor(lams, dtype=torch.float64).diff()
    assert torch.allclose(d, d.mean().expand_as(d), rtol=1e-7), d
    if not math.isfinite(lam(path, path.t_max)):
        assert lams[0] >= -2 * math.log(VE_SIGMA_START) - 1e-9  # σ̃ = 80, or where the path can start


@pytest.mark.parametrize("kind", list(PATHS))
def test_karras_grid_on_every_path(kind):
    path, rho, n = PATHS[kind](), 7.0, 10
    ts = karras_grid(path, n, rho=rho)
    check_grid(ts, path)
    assert ts[0] == path.t_max and ts[-1] == 0
    sig = [math.exp(-0.5 * spacing_start(path, path.t_max))] + [math.exp(-0.5 * lam(path, t)) for t in ts[1:-1]]
    r = torch.tensor(sig, dtype=torch.float64) ** (1 / rho)  # Eq. (5): σ̃^{1/ρ} linear in i
    d = r.diff()
    assert torch.allclose(d, d.mean().expand_as(d), rtol=1e-7), d
    assert sig[-1] == pytest.approx(math.exp(-0.5 * lam(path, default_t_min(path))), rel=1e-9)


def test_spacing_start_where_alpha_is_zero():
    flow, zt = make_path("flow"), discrete_vp("linear", 1000, zero_terminal_snr=True)
    assert spacing_start(flow, 1.0) == pytest.approx(-2 * math.log(VE_SIGMA_START), rel=1e-12)
    assert spacing_start(zt, 1000.0) == pytest.approx(-2 * math.log(VE_SIGMA_START), rel=1e-9)
    # a short zero-terminal-SNR chain reaches only σ̃(T-1) < 80: the start is projected onto the path there
    short = PATHS["ztsnr_T10"]()
    assert math.exp(-0.5 * lam(short, 9)) < VE_SIGMA_START
    assert spacing_start(short, 10.0) == pytest.approx(lam(short, 9), rel=1e-9)
    # a finite λ(t_max) is used as it is (today's grids on the discrete chain)
    lin = discrete_vp("linear", 1000)
    assert spacing_start(lin, 1000.0) == lam(lin, 1000)


def test_default_end_of_continuous_grids_is_karras_sigma_min():
    for kind in ("vp_cosine", "vp_linear", "ve", "flow"):
        path = PATHS[kind]()
        assert math.exp(-0.5 * lam(path, default_t_min(path))) == pytest.approx(VE_SIGMA_END, rel=1e-6)
    assert default_t_min(discrete_vp("cosine", 1000)) == 1.0


@pytest.mark.parametrize("t", [1e-4, 0.37, 1.0, 1.5, 250.0, 999.9])
def test_t_of_log_snr_inverts_below_one(t):
    path = discrete_vp("linear", 1000)
    assert float(path.t_of_log_snr(f64(lam(path, t)))) == pytest.approx(t, rel=1e-9)


def test_make_grid_and_bad_arguments():
    path = discrete_vp("linear", 1000)
    assert torch.equal(make_grid(path, 10, "uniform", "leading"), uniform_grid(path, 10, "leading"))
    assert torch.equal(make_grid(path, 10, "logsnr"), logsnr_grid(path, 10))
    assert torch.equal(make_grid(path, 10, "karras"), karras_grid(path, 10))
    with pytest.raises(ValueError, match="unknown grid 'optimised'.*tuning"):
        make_grid(path, 10, "optimised")
    with pytest.raises(ValueError, match="t_min"):
        logsnr_grid(path, 10, t_min=2000.0)
    with pytest.raises(ValueError, match="rho"):
        karras_grid(path, 10, rho=0.0)
    short = logsnr_grid(path, 5, t_start=500.0)  # a grid may start below t_max (SDEdit-style)
    assert short[0] == 500.0 and len(short) == 6


BAD_GRIDS = [
    (torch.tensor([0.0, 500.0, 1000.0]), "strictly descending|end at t = 0"),  # ascending
    (torch.tensor([1000.0, 500.0]), "end at t = 0"),
    (torch.tensor([2000.0, 500.0, 0.0]), "beyond the path's t_max"),
    (torch.tensor([1000.0, 500.0, 500.0, 0.0]), "strictly descending"),
    (torch.tensor([0.0]), "at least 2 points"),
    (torch.tensor([1000.0, float("nan"), 0.0]), "finite"),
]


def test_a_grid_with_two_times_at_zero_alpha_is_refused():
    """On the zero-terminal-SNR chain α = 0 on all of (T-1, T]: a step inside it would divide 0 by 0."""
    zt = discrete_vp("linear", 1000, zero_terminal_snr=True)
    with pytest.raises(ValueError, match="two times with α = 0"):
        check_grid(torch.tensor([1000.0, 999.5, 500.0, 0.0], dtype=torch.float64), zt)
    check_grid(torch.tensor([1000.0, 999.0, 0.0], dtype=torch.float64), zt)  # α(999) > 0


@pytest.mark.parametrize("ts, match", BAD_GRIDS)
def test_every_sampler_refuses_bad_grids(ts, match):
    from kuosan.exact import ExactDenoiser, ring
    from kuosan.sampling import ddim_invert

    path = discrete_vp("linear", 1000)
    D, x = ExactDenoiser(ring(), path), torch.randn(4, 2, dtype=torch.float64)
    for name, spec in SAMPLERS.items():
        with pytest.raises(ValueError, match=match):
            spec.fn(D, x, ts.double())
    with pytest.raises(ValueError, match=match):
        ddim_invert(D, x, ts.double())


@pytest.mark.parametrize("kind", list(PATHS))
def test_default_grid_is_karras_on_ve_and_uniform_elsewhere(kind):
    assert default_grid(PATHS[kind]()) == ("karras" if kind == "ve" else "uniform")


@pytest.mark.parametrize("kind", ["ve", "cosine", "flow"])
def test_sample_without_a_grid_uses_the_paths_default(kind):
    path, stats = PATHS[kind](), {}
    sample(ExactDenoiser(ring(), path), "ddim", (4, 2), 10, stats=stats)
    assert torch.equal(stats["grid"], make_grid(path, 10, default_grid(path)))


def test_a_spacing_without_a_grid_means_the_uniform_grid_never_the_default():
    path, stats = make_path("ve"), {}
    D = ExactDenoiser(ring(), path)
    sample(D, "ddim", (4, 2), 10, spacing="trailing", stats=stats)
    assert torch.equal(stats["grid"], uniform_grid(path, 10))
    with pytest.raises(PathError, match="discrete"):  # refused, not dropped for the Karras grid
        sample(D, "ddim", (4, 2), 10, spacing="leading")


def test_the_ve_default_grid_reaches_the_exact_endpoint_where_uniform_steps_do_not():
    """Exact ring mixture on the VE path, 10 DDIM steps from σ̃ = 80: uniform steps in σ̃ end with one denoise at
    σ̃ = 8 (RMSE ~1.2 to the exact PF-ODE endpoint, whose RMS is 1.4); the Karras grid gets within ~0.05."""
    mix, path = ring(), make_path("ve")
    x_T = path.prior_std * torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = pf_ode_solve(mix, x_T / math.sqrt(1 + path.t_max**2), path.t_max)
    D = ExactDenoiser(mix, path)
    err = {g: (ddim(D, x_T, make_grid(path, 10, g)) - ref).pow(2).mean().sqrt().item() for g in ("uniform", "karras")}
    assert err["karras"] < 0.1 < 1.0 < err["uniform"], err
