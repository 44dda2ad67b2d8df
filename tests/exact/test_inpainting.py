"""The exact inpainting answers and what the methods get: the Schur-complement conditional equals the
precision-matrix form, a mixture's conditional density times the known part's marginal is the joint density, and
with the exact denoiser on a correlated Gaussian (the curves' covariance, 8-dim, half known) replacement is
biased far beyond Monte Carlo error while RePaint and DPS reduce the bias (by the factors measured in the
comments; benchmarks/inpainting_exact.py has the full table)."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import MultivariateNormal

from kuosan.exact import GaussianMixture, curve_cov, gaussian
from kuosan.exact import gaussian_conditional, inpainting_error, missing_given_known
from kuosan.paths import discrete_vp

F64 = torch.float64


def test_schur_complement_equals_the_precision_form():
    """x_U | x_K ~ N(μ_U - Λ_UU⁻¹ Λ_UK (y - μ_K), Λ_UU⁻¹) with Λ = Σ⁻¹ (an independent formula)."""
    d = 7
    g = torch.Generator().manual_seed(0)
    B = torch.randn(d, d, generator=g, dtype=F64)
    S, mu = B @ B.T + 0.1 * torch.eye(d, dtype=F64), torch.randn(d, generator=g, dtype=F64)
    mask = torch.tensor([1, 0, 1, 1, 0, 0, 1.0])
    y = torch.randn(d, generator=g, dtype=F64)
    U, K = (mask == 0).nonzero().squeeze(1), (mask == 1).nonzero().squeeze(1)
    L = torch.linalg.inv(S)
    cov = torch.linalg.inv(L[U][:, U])
    mean = mu[U] - cov @ L[U][:, K] @ (y[K] - mu[K])
    m, C = gaussian_conditional(mu, S, mask, y)
    torch.testing.assert_close(m, mean, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(C, cov, rtol=1e-10, atol=1e-10)


def test_mixture_conditional_times_the_known_marginal_is_the_joint():
    """log p(x) = log p(x_U | x_K) + log p(x_K) at random x_U, for a 3-component mixture."""
    d, g = 5, torch.Generator().manual_seed(1)
    means = torch.randn(3, d, generator=g, dtype=F64)
    A = torch.randn(3, d, d, generator=g, dtype=F64) * 0.5
    mix = GaussianMixture(means, A @ A.transpose(1, 2) + 0.1 * torch.eye(d, dtype=F64), torch.tensor([0.2, 0.5, 0.3]))
    mask = torch.tensor([0, 1, 0, 1, 1.0])
    U, K = (mask == 0).nonzero().squeeze(1), (mask == 1).nonzero().squeeze(1)
    y = torch.randn(d, generator=g, dtype=F64)
    cond = missing_given_known(mix, mask, y)
    x = y.repeat(6, 1)
    x[:, U] = torch.randn(6, len(U), generator=g, dtype=F64)
    one, zero = torch.ones(6, dtype=F64), torch.zeros(6, dtype=F64)
    log_joint = mix.log_prob_t(x, one, zero)
    log_known = torch.logsumexp(torch.stack([MultivariateNormal(m[K], S[K][:, K]).log_prob(y[K]) + w.log()
                                             for m, S, w in zip(mix.means, mix.covs, mix.weights)]), 0)
    torch.testing.assert_close(cond.log_prob_t(x[:, U], one, zero) + log_known, log_joint, rtol=1e-10, atol=1e-10)


D_ = 8
MIX = gaussian(torch.zeros(D_), curve_cov(D_, scale=0.25, length=3.0, jitter=1e-2))
MASK = torch.tensor([1.0] * 4 + [0.0] * 4)
KNOWN = MIX.sample(2, generator=torch.Generator().manual_seed(1))[0]  # a typical data point's first half


def errors(method, **kw):
    return inpainting_error(MIX, discrete_vp("cosine", 1000), MASK, KNOWN, method, sampler="ddim",
                            options={"eta": 1.0}, steps=20, n=3000, seed=0, **kw)


@pytest.fixture(scope="module")
def replaced():
    return errors("replace")


def test_replacement_is_biased_far_beyond_monte_carlo_error(replaced):
    # measured: mean error 0.363 (floor 0.012), covariance error 0.40 relative (floor 0.028)
    assert replaced.known_error == 0  # the known values are exact after the final projection
    assert replaced.mean_error > 20 * replaced.mean_floor
    assert replaced.cov_error > 8 * replaced.cov_floor


def test_repaint_reduces_the_bias(replaced):
    e = errors("repaint", resample=10)
    # measured: mean error 0.363 -> 0.180, covariance error 0.40 -> 0.18 (RePaint's re-steps mix at each level)
    assert e.mean_error < 0.7 * replaced.mean_error
    assert e.cov_error < 0.7 * replaced.cov_error
    assert e.nfe == 20 + 9 * 19  # N + (R - 1)(N - 1) denoiser calls


def test_gradient_guidance_reduces_the_bias(replaced):
    e = errors("dps", scale=1.0)
    # measured: mean error 0.363 -> 0.195, covariance error 0.40 -> 0.088
    assert e.mean_error < 0.7 * replaced.mean_error
    assert e.cov_error < 0.5 * replaced.cov_error
