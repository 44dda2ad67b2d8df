"""What classifier-free guidance samples, computed exactly on a 1-D two-class mixture (Bradley & Nakkiran 2024).

The CFG probability-flow ODE's output distribution is computed without Monte Carlo: the 1-D flow is monotone, so
pushing the prior's quantiles Φ⁻¹((i + ½)/N) through an accurate ODE solve (scipy DOP853 on kuosan.pf_ode's
right-hand side with the guided exact denoiser) gives the output's quantiles. The tilted density
p(x|y)^w p(x)^{1-w} / Z is integrated by quadrature. The same machinery reproduces p(x|y) at w = 1 to ~1e-4;
at w = 3 the CFG output differs from the tilted density by far more than that, and the reverse SDE with the same
guided denoiser draws a third distribution (guidance is no diffusion of any one density; B&N §4).
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
import torch

from kuosan.exact import ConditionalExactDenoiser, GaussianMixture, LabelledMixture
from kuosan.guidance import classifier_free
from kuosan.paths import make_path
from kuosan.pf_ode import rhs
from kuosan.sampling import sample

scipy_stats = pytest.importorskip("scipy.stats")
from scipy.integrate import cumulative_trapezoid, solve_ivp, trapezoid  # noqa: E402

# class 0: N(-1, 0.5²), class 1: N(1, 0.5²), equal weights: overlapping, so guidance has work to do
DATA = LabelledMixture(GaussianMixture(torch.tensor([[-1.0], [1.0]]), torch.full((2, 1, 1), 0.25),
                                       torch.tensor([0.5, 0.5])), torch.tensor([0, 1]))
SIGMA_T, SIGMA_0, N = 1e4, 1e-5, 1000  # start (prior error ~ |μ|/σ̃_T) and end of the flow, quantile count


@cache
def cfg_ode_quantiles(w: float) -> np.ndarray:
    """The CFG PF-ODE's output at the prior's quantile midpoints (N,), sorted (the 1-D flow is monotone)."""
    path = make_path("ve", sigma_max=SIGMA_T)
    G = classifier_free(ConditionalExactDenoiser(DATA, path), w, null_label=2)
    z = scipy_stats.norm.ppf((np.arange(N) + 0.5) / N)
    cond = {"y": torch.zeros(N, dtype=torch.long)}

    def f(u: float, y: np.ndarray) -> np.ndarray:
        return rhs(G, torch.from_numpy(y)[:, None], u, cond)[0][:, 0].numpy()

    sol = solve_ivp(f, (math.log(SIGMA_T), math.log(SIGMA_0)), SIGMA_T * z, method="DOP853", rtol=1e-10,
                    atol=1e-10)
    assert sol.success
    out = sol.y[:, -1]
    assert np.all(np.diff(out) > 0)  # monotone: these are the output's quantiles
    return out


def tilted(w: float, grid: np.ndarray) -> np.ndarray:
    """p(x|0)^w p(x)^{1-w} on ``grid``, normalised by quadrature."""
    x = torch.from_numpy(grid)[:, None].double()
    one, zero = torch.ones(len(grid), dtype=torch.float64), torch.zeros(len(grid), dtype=torch.float64)
    log_c = DATA.given(0).log_prob_t(x, one, zero)
    log_u = DATA.mixture.log_prob_t(x, one, zero)
    p = torch.exp(w * log_c + (1 - w) * log_u).numpy()
    return p / trapezoid(p, grid)


def moments_and_ks(q: np.ndarray, grid: np.ndarray, dens: np.ndarray) -> tuple[float, float, float]:
    """(mean error, variance error, Kolmogorov–Smirnov distance) of quantiles q against the density on grid."""
    mean = trapezoid(grid * dens, grid)
    var = trapezoid((grid - mean) ** 2 * dens, grid)
    cdf = np.interp(q, grid, cumulative_trapezoid(dens, grid, initial=0.0))
    ks = np.max(np.abs(cdf - (np.arange(N) + 0.5) / N))
    return q.mean() - mean, q.var() - var, ks


def test_cfg_does_not_sample_the_tilted_density():
    grid = np.linspace(-8, 8, 40001)
    # control: w = 1 is the conditional model, and the machinery reproduces p(x|y=0) = N(-1, 0.25)
    q1 = cfg_ode_quantiles(1.0)
    dm1, dv1, ks1 = moments_and_ks(q1, grid, tilted(1.0, grid))
    assert abs(dm1) < 2e-3 and abs(dv1) < 2e-3 and ks1 < 1e-3, (dm1, dv1, ks1)
    # w = 3: the tilted density p(x|0)³ p(x)⁻² and the CFG ODE's output are different distributions
    q3 = cfg_ode_quantiles(3.0)
    dens3 = tilted(3.0, grid)
    dm3, dv3, ks3 = moments_and_ks(q3, grid, dens3)
    assert ks3 > 30 * ks1 and ks3 > 0.02, (ks1, ks3)
    assert abs(dm3) > 10 * abs(dm1) + 0.02 or abs(dv3) > 10 * abs(dv1) + 0.02, (dm3, dv3)
    # what CFG does instead: both sharpen class 0 (variance below p(x|0)'s 0.25, mean pushed away from class 1),
    # by different amounts
    mean_t = trapezoid(grid * dens3, grid)
    assert q3.mean() < -1.0 and mean_t < -1.0 and q3.var() < 0.25
    print(f"w = 3: CFG ODE mean {q3.mean():.4f} var {q3.var():.4f}; tilted mean {mean_t:.4f} "
          f"var {trapezoid((grid - mean_t) ** 2 * dens3, grid):.4f}; KS {ks3:.4f} (control KS {ks1:.1e})")


def test_the_sde_with_cfg_draws_yet_another_distribution():
    """Monte Carlo with the reverse SDE (4000 samples, 200 steps): at w = 1 p(x|0) within 4 standard errors; at
    w = 3 a mean far (> 8 s.e.) from both the CFG ODE's and the tilted density's."""
    path = make_path("ve")
    y = {"y": torch.zeros(4000, dtype=torch.long)}
    n = 4000

    def draw(w: float) -> torch.Tensor:
        G = classifier_free(ConditionalExactDenoiser(DATA, path), w, null_label=2)
        return sample(G, "sde", (n, 1), 200, grid="logsnr", dtype=torch.float64, batch_size=n, seed=3, cond=y)[:, 0]

    x1 = draw(1.0)
    assert abs(float(x1.mean()) + 1.0) < 4 * math.sqrt(0.25 / n)
    assert abs(float(x1.var()) - 0.25) < 4 * 0.25 * math.sqrt(2 / n)
    x3 = draw(3.0)
    se = math.sqrt(float(x3.var()) / n)
    grid = np.linspace(-8, 8, 40001)
    mean_tilted = trapezoid(grid * tilted(3.0, grid), grid)
    mean_ode = cfg_ode_quantiles(3.0).mean()
    assert abs(float(x3.mean()) - mean_tilted) > 8 * se and abs(float(x3.mean()) - mean_ode) > 8 * se, (
        float(x3.mean()), mean_tilted, mean_ode, se)
