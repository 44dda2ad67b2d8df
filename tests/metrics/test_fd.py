"""Fréchet distance: the closed form for Gaussians, convergence of the estimate, its O(d/n) upward bias, the
honesty of the bootstrap standard error, and the refusal of too few samples."""

import math
import warnings

import pytest
import torch

from kuosan.metrics import check_sample_count, frechet_distance, frechet_distance_gaussians, gaussian_stats


def _spd(d, g, scale=1.0):
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return scale * (a @ a.T / d + 0.2 * torch.eye(d, dtype=torch.float64))


def _draw(mu, cov, n, g):
    return mu + torch.randn(n, len(mu), generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T


def test_closed_form_one_dimension_and_commuting_covariances():
    # 1-D: FD = (μ₁ - μ₂)² + (s₁ - s₂)²; diagonal covariances: Σ_i (√a_i - √b_i)² plus the mean term
    one = frechet_distance_gaussians(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-0.5]),
                                     torch.tensor([[0.25]]))
    assert one == pytest.approx(1.5**2 + (2 - 0.5) ** 2, rel=1e-12)
    a, b = torch.tensor([1.0, 2.0, 9.0]), torch.tensor([4.0, 0.5, 1.0])
    diag = frechet_distance_gaussians(torch.zeros(3), torch.diag(a), torch.ones(3), torch.diag(b))
    assert diag == pytest.approx(3 + float((a.sqrt() - b.sqrt()).square().sum()), rel=1e-12)


def test_closed_form_general_covariances_matches_sqrtm():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(0)
    for d in (2, 7, 30):
        c1, c2 = _spd(d, g), _spd(d, g, 3.0)
        m1, m2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
        ref = float((m1 - m2).square().sum() + c1.trace() + c2.trace()
                    - 2 * scipy_linalg.sqrtm((c1 @ c2).numpy()).real.trace())
        assert frechet_distance_gaussians(m1, c1, m2, c2) == pytest.approx(ref, rel=1e-9)


def test_singular_covariances_are_exact():
    # a rank-1 covariance (n <= d situations): FD of identical singular Gaussians is 0, of a shift the shift²
    p = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    assert frechet_distance_gaussians(torch.zeros(2), p, torch.zeros(2), p) == pytest.approx(0.0, abs=1e-12)
    assert frechet_distance_gaussians(torch.zeros(2), p, torch.tensor([3.0, 4.0]), p) == pytest.approx(25.0)


def test_estimate_converges_to_the_closed_form():
    g = torch.Generator().manual_seed(1)
    d = 4
    c1, c2 = _spd(d, g), _spd(d, g, 2.0)
    m1, m2 = torch.zeros(d, dtype=torch.float64), torch.full((d,), 0.3, dtype=torch.float64)
    true = frechet_distance_gaussians(m1, c1, m2, c2)
    errs = []
    for n in (300, 3000, 30000):
        r = frechet_distance(_draw(m1, c1, n, g), _draw(m2, c2, n, g), n_boot=20, seed=n)
        errs.append(abs(r.value - true))
        assert abs(r.value - true) < 4 * r.stderr + 0.02 * true  # inside its error bar
    assert errs[2] < errs[0] and errs[2] < 0.03 * true


def test_small_n_bias_is_upward_and_of_order_d_over_n():
    # two samples of one distribution: E[FD] > 0 and halves when n doubles (the documented O(d/n) bias)
    g = torch.Generator().manual_seed(2)
    d, reps = 4, 60
    mu, cov = torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)
    mean = {n: sum(frechet_distance(_draw(mu, cov, n, g), _draw(mu, cov, n, g), n_boot=0).value
                   for _ in range(reps)) / reps for n in (100, 200)}
    assert mean[100] > 0 and mean[200] > 0
    assert mean[100] / mean[200] == pytest.approx(2.0, rel=0.25)
    assert mean[100] > 2 * d / 100  # at least the mean term's own bias tr Σ₁/n + tr Σ₂/n


def test_bootstrap_standard_error_is_honest_over_repeats():
    g = torch.Generator().manual_seed(3)
    d, n, reps = 3, 400, 40
    mu2 = torch.full((d,), 0.5, dtype=torch.float64)
    cov = torch.eye(d, dtype=torch.float64)
    res = [frechet_distance(_draw(torch.zeros(d, dtype=torch.float64), cov, n, g), _draw(mu2, cov, n, g),
                            n_boot=40, seed=i) for i in range(reps)]
    spread = torch.tensor([r.value for r in res]).std()
    claimed = torch.tensor([r.stderr for r in res]).square().mean().sqrt()
    assert float(claimed / spread) == pytest.approx(1.0, abs=0.4)


def test_gaussian_stats_and_bad_input():
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]])
    mu, cov = gaussian_stats(x)
    assert torch.allclose(mu, torch.tensor([2.0, 4.0], dtype=torch.float64))
    assert torch.allclose(cov, torch.from_numpy(__import__("numpy").cov(x.numpy().T)).double())
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(torch.full((5, 2), math.nan), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_stats(torch.zeros(1, 3))


def test_too_few_samples_for_the_feature_dimension():
    with pytest.raises(ValueError, match="more samples than feature dimensions: got 32 for 32"):
        check_sample_count(32, 32)
    with pytest.warns(UserWarning, match="biased upward"):
        check_sample_count(100, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_sample_count(160, 32)
