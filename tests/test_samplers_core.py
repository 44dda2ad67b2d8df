"""DDPM and DDIM with the exact denoiser of Gaussian data reproduce the data; DDIM η=0 converges."""

import pytest
import torch

from kuosan.denoiser import CountingDenoiser
from kuosan.exact import ExactDenoiser, curve_cov, gaussian, pf_ode_solve
from kuosan.samplers import ddim, ddpm, sample, uniform_grid
from kuosan.schedules import make_schedule

D_DIM = 8
MEAN = torch.linspace(-0.5, 0.5, D_DIM, dtype=torch.float64)
COV = curve_cov(D_DIM, scale=0.5, length=2.0)


def _setup(kind="linear"):
    sched = make_schedule(kind, 1000)
    return ExactDenoiser(gaussian(MEAN, COV), sched)


def _noise(n, seed=0):
    return torch.randn(n, D_DIM, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _check_moments(x, tol_mean=0.03, tol_cov=0.05):
    assert (x.mean(0) - MEAN).abs().max().item() < tol_mean
    assert (torch.cov(x.T) - COV).abs().max().item() < tol_cov


@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_ddpm_reproduces_gaussian_data(variance):
    D = _setup()
    x = ddpm(D, _noise(6000), uniform_grid(1000, 1000, "linspace"), variance=variance,
             generator=torch.Generator().manual_seed(1))
    _check_moments(x)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_ddim_reproduces_gaussian_data(eta, spacing):
    D = _setup("cosine")
    x = ddim(D, _noise(6000), uniform_grid(1000, 100, spacing), eta=eta, generator=torch.Generator().manual_seed(2))
    _check_moments(x, tol_cov=0.06)


def test_ddim_eta0_is_deterministic_and_converges_at_first_order():
    D = _setup()
    xT = _noise(256, 5)
    ref = pf_ode_solve(D.mixture, xT, D.schedule.sigma_max())
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(99)
    a = ddim(D, xT, uniform_grid(1000, 20, "trailing"), generator=g1)
    b = ddim(D, xT, uniform_grid(1000, 20, "trailing"), generator=g2)
    assert torch.equal(a, b)
    errs = []
    for n in (25, 50, 100, 200):
        x = ddim(D, xT, uniform_grid(1000, n, "trailing"))
        errs.append((x - ref).pow(2).mean().sqrt().item())
    assert all(e1 > e2 for e1, e2 in zip(errs, errs[1:])), errs
    # first order: doubling the steps roughly halves the error (slope of log err vs log N near -1)
    slope = (torch.tensor(errs).log().diff() / torch.tensor(2.0).log()).mean().item()
    assert -1.4 < slope < -0.7, (errs, slope)


def test_full_ddpm_grid_is_algorithm_2():
    """The full DDPM grid visits every t = T..1 once and ends on data: NFE = T."""
    D = CountingDenoiser(_setup())
    ts = uniform_grid(1000, 1000, "linspace")
    assert torch.equal(ts, torch.arange(1000, -1, -1, dtype=torch.float64))
    ddpm(D, _noise(4), ts, generator=torch.Generator().manual_seed(0))
    assert D.nfe == 1000


def test_grids_step_to_their_true_previous_time():
    for spacing, first, second_last in [("leading", 981, 1), ("trailing", 1000, 20), ("linspace", 1000, 1)]:
        ts = uniform_grid(1000, 50, spacing)
        assert len(ts) == 51 and ts[0] == first and ts[-2] == second_last and ts[-1] == 0
        assert bool((ts.diff() < 0).all())
    ts = uniform_grid(1000, 7, "linspace")  # 1000/7 is not an integer: gaps differ, prev must follow the grid
    assert len(set(ts.diff().tolist())) > 1
    for bad in (0, -3, 1001, 2.5):
        with pytest.raises(ValueError):
            uniform_grid(1000, bad, "trailing")
    with pytest.raises(ValueError, match="unknown spacing"):
        uniform_grid(1000, 10, "middle")


def test_sample_is_reproducible_and_rejects_unknown_sampler():
    D = _setup()
    a = sample(D, "ddpm", (8, D_DIM), 20, seed=3)
    b = sample(D, "ddpm", (8, D_DIM), 20, seed=3)
    c = sample(D, "ddpm", (8, D_DIM), 20, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="unknown sampler 'euler_a'"):
        sample(D, "euler_a", (8, D_DIM), 20)
    with pytest.raises(ValueError, match="eta"):
        ddim(D, _noise(2), uniform_grid(1000, 5), eta=-1)
