"""Multistep consistency sampling (Song et al. 2023 Alg. 1): the algorithm step by step, the exact distribution of
its 1- and 2-step samples with the exact consistency function of a Gaussian, its noise-level grids and their bad
inputs, and ``sample()``'s refusal of every other sampler for a consistency model."""

from __future__ import annotations

import math

import pytest
import torch

from kuosan.denoiser import Counting
from kuosan.exact import ExactDenoiser, gaussian
from kuosan.paths import VE, make_path
from kuosan.sampling import (SAMPLERS, NoiseSource, WrongDenoiserError, consistency, default_levels, levels_grid,
                             sample)
from kuosan.sampling.consistency import default_grid

F64 = torch.float64
MU, SIGMA = torch.tensor([0.3, -0.2], dtype=F64), torch.tensor([[0.30, 0.12], [0.12, 0.15]], dtype=F64)
EIG, VEC = torch.linalg.eigh(SIGMA)
SMIN = 0.002


def A(s: float) -> torch.Tensor:
    """f(x, σ) = μ + A(σ)(x - μ) for N(μ, Σ): A = U diag(√((d + σ_min²)/(d + σ²))) Uᵀ
    (see the objective's tests)."""
    return VEC @ torch.diag(((EIG + SMIN**2) / (EIG + s**2)).sqrt()) @ VEC.T


class GaussConsistency:
    """The exact consistency function of N(μ, Σ) on VE, shaped like a consistency model's denoiser."""

    kind = "consistency"

    def __init__(self):
        self.path = VE()

    def __call__(self, x, t, **cond):
        t = t.reshape(-1)
        a = ((EIG + SMIN**2)[None] / (EIG[None] + t[:, None] ** 2)).sqrt().to(x.dtype)
        return MU.to(x) + (((x - MU.to(x)) @ VEC.to(x)) * a) @ VEC.T.to(x)


def test_it_is_algorithm_1_step_by_step():
    """x̂ = f(x_T, T); x = α(τ) x̂ + σ(τ) z; x̂ = f(x, τ) for τ in the grid;
    z from the samples' own streams."""
    D = ExactDenoiser(gaussian(MU, SIGMA), make_path("vp_cosine"))  # any path: α(τ) ≠ 1 here
    ts = torch.tensor([1.0, 0.6, 0.2, 0.0], dtype=F64)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    seen = []
    got = consistency(D, x, ts, noise=NoiseSource(3, 0, 5), callback=lambda i, xi, x0: seen.append(i))
    noise = NoiseSource(3, 0, 5)
    y = D(x, torch.full((5,), 1.0, dtype=F64))
    for tau in (0.6, 0.2):
        tt = torch.full((5,), tau, dtype=F64)
        y = D(D.path.alpha(tt)[:, None] * y + D.path.sigma(tt)[:, None] * noise(y), tt)
    assert torch.equal(got, y) and seen == [0, 1, 2]
    C = Counting(D)
    consistency(C, x, ts, noise=NoiseSource(3, 0, 5))
    assert C.nfe == 3 == SAMPLERS["consistency"].nfe(3)
    assert not SAMPLERS["consistency"].deterministic


def test_a_callback_may_replace_x():
    """The step hook: a tensor the callback returns replaces x (here: projected to 0 after step 0)."""
    D = GaussConsistency()
    ts = levels_grid(D.path, [80.0, 0.8])
    x = 80 * torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    got = consistency(D, x, ts, noise=NoiseSource(0, 0, 4), callback=lambda i, xi, x0: torch.zeros_like(xi) if i == 0
                      else None)
    torch.testing.assert_close(got, D(torch.zeros_like(x), torch.full((4,), 0.8, dtype=F64)))
    calls = []
    out = sample(D, "consistency", (4, 2), 2, seed=0, dtype=F64, callback=lambda i, xi, x0: calls.append(i))
    assert calls == [0, 1] and out.shape == (4, 2)


@pytest.mark.parametrize("levels", [[80.0], [80.0, 0.821]])
def test_samples_of_the_exact_consistency_function_have_the_closed_form_distribution(levels):
    """x_T ~ N(0, 80² I): one step gives μ + A(80)(x_T - μ), mean (I - A_T)μ, covariance 80² A_T²; a second step
    at σ_1 gives μ + A_1(x̂ + σ_1 z - μ), mean μ - A_1 A_T μ, covariance A_1(80² A_T² + σ_1² I)A_1. Both are
    within 0.3% of N(μ, Σ + σ_min² I), the data at σ_min (x_T is not the exact marginal N(μ, Σ + 80² I))."""
    n = 20_000
    x = sample(GaussConsistency(), "consistency", (n, 2), len(levels), seed=2, ts=levels_grid(VE(), levels),
               batch_size=n, dtype=F64)
    At = A(80.0)
    mean, cov = MU - At @ MU, 6400 * At @ At
    if len(levels) == 2:
        A1 = A(levels[1])
        mean, cov = MU - A1 @ At @ MU, A1 @ (cov + levels[1] ** 2 * torch.eye(2, dtype=F64)) @ A1
    se = (torch.diagonal(cov) / n).sqrt()
    assert bool(((x.mean(0) - mean).abs() < 4 * se).all())
    torch.testing.assert_close(torch.cov(x.T), cov, rtol=0.04, atol=0.004)
    torch.testing.assert_close(cov, SIGMA + SMIN**2 * torch.eye(2, dtype=F64), rtol=3e-3, atol=1e-4)


def test_default_levels():
    """One step from σ_max; two re-noise at 1.642 σ_d (iCT's 0.821 at σ_d = 0.5); more go down to a tenth."""
    ve = VE()
    assert default_levels(ve, 1) == [80.0]
    assert default_levels(ve, 2) == pytest.approx([80.0, 0.821])
    assert default_levels(ve, 2, sigma_data=1.0) == pytest.approx([80.0, 1.642])
    four = default_levels(ve, 4)
    assert four == pytest.approx([80.0, 0.821, 0.821 / 10**0.5, 0.0821])
    ts = levels_grid(ve, four)
    assert ts[0].item() == 80.0 and ts[-1].item() == 0.0 and torch.allclose(ts[1:-1], torch.tensor(four[1:], dtype=F64))

    class WithParam(GaussConsistency):
        class param:
            sigma_data = 1.0

    assert default_grid(WithParam(), 2).tolist() == pytest.approx([80.0, 1.642, 0.0])
    stats: dict = {}
    sample(GaussConsistency(), "consistency", (3, 2), 2, stats=stats)  # no grid asked for: the default levels
    assert stats["grid"].tolist() == pytest.approx([80.0, 0.821, 0.0])
    flow = make_path("flow")  # σ̃(t_max) = ∞ on the flow path: the list starts with inf
    assert levels_grid(flow, [math.inf, 1.0]).tolist() == pytest.approx([1.0, 0.5, 0.0])


@pytest.mark.parametrize("levels, msg", [
    ([], "at least one noise level"),
    ([80.0, 0.8, 0.9], "strictly decreasing"),
    ([80.0, 0.8, 0.8], "strictly decreasing"),
    ([40.0, 0.8], "first noise level must be the path's largest, σ = 80"),
    ([80.0, -0.5], "finite and > 0"),
    ([80.0, float("nan")], "finite and > 0"),
])
def test_bad_level_lists_are_one_line_errors(levels, msg):
    with pytest.raises(ValueError, match=msg) as e:
        levels_grid(VE(), levels)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="NFE >= 1"):
        default_levels(VE(), 0)


def test_a_consistency_model_refuses_every_other_sampler():
    D = GaussConsistency()
    for name in SAMPLERS:
        if name == "consistency":
            continue
        with pytest.raises(WrongDenoiserError, match="a consistency model gives the ODE endpoint, not "
                                                     "E\\[x_0\\|x_t\\]; use --sampler consistency"):
            sample(D, name, (2, 2), 3)
    x = sample(D, "consistency", (2, 2), 3, grid="karras")  # an explicit grid is taken as given
    assert x.shape == (2, 2) and bool(torch.isfinite(x).all())
