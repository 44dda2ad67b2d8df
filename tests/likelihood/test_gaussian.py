"""kuosan.gaussian: the decoder likelihoods of Ho et al. Eq. (13) against scipy, the Gaussian KL and density
against torch.distributions, and the module's place as a leaf of the import graph."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import kuosan.gaussian as gaussian_module
from kuosan.gaussian import (check_bits, check_unit_range, decoder_nll, discretised_gaussian_log_likelihood,
                             gaussian_kl, gaussian_log_likelihood)


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_discretised_decoder_is_normalised_and_exact(bits):
    from scipy.stats import norm

    grid = torch.linspace(-1, 1, 2**bits, dtype=torch.float64)
    mean = torch.tensor([-1.3, -0.2, 0.05, 0.9, 2.0], dtype=torch.float64)[:, None].expand(5, grid.numel())
    var = torch.tensor([1e-4, 0.01, 0.3, 1e-3, 4.0], dtype=torch.float64)[:, None]
    x = grid[None].expand_as(mean)
    logp = discretised_gaussian_log_likelihood(x, mean, var, bits)
    torch.testing.assert_close(logp.exp().sum(1), torch.ones(5, dtype=torch.float64))
    h = 1 / (2**bits - 1)
    lo = np.where(x.numpy() < -1 + h / 2, -np.inf, x.numpy() - h)
    hi = np.where(x.numpy() > 1 - h / 2, np.inf, x.numpy() + h)
    sd = np.sqrt(var.numpy())
    m = mean.numpy()
    with np.errstate(divide="ignore"):  # right of the mean use survival functions, else cdf(hi) - cdf(lo) cancels
        want = np.log(np.where(x.numpy() > m, norm.sf(lo, m, sd) - norm.sf(hi, m, sd),
                               norm.cdf(hi, m, sd) - norm.cdf(lo, m, sd)))
    ok = want > -600  # where scipy's masses underflow to 0 torch stays finite (checked below)
    np.testing.assert_allclose(logp.numpy()[ok], want[ok], rtol=1e-7, atol=1e-9)
    assert torch.isfinite(logp).all()


def test_discretised_decoder_tends_to_density_times_bin_width():
    x = torch.tensor([[-0.5, 0.0, 0.31]], dtype=torch.float64)
    mean, var = torch.zeros_like(x), torch.tensor(0.04, dtype=torch.float64)
    logp = discretised_gaussian_log_likelihood(x, mean, var, bits=20)
    dens = -decoder_nll(x, mean, var, bits=None)
    torch.testing.assert_close(logp, dens + math.log(2 / (2**20 - 1)), rtol=0, atol=1e-6)
    torch.testing.assert_close(decoder_nll(x, mean, var, bits=20), -logp)


def test_gaussian_kl_and_density_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    m1, m2 = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g, dtype=torch.float64)
    v1 = torch.rand(6, 3, generator=g, dtype=torch.float64) + 0.1
    v2 = torch.rand(6, 1, generator=g, dtype=torch.float64) + 0.1  # broadcasts against the means
    N = torch.distributions.Normal
    want = torch.distributions.kl_divergence(N(m1, v1.sqrt()), N(m2, v2.sqrt().expand_as(m2)))
    torch.testing.assert_close(gaussian_kl(m1, v1, m2, v2), want)
    torch.testing.assert_close(gaussian_kl(m1, v1, m1, v1), torch.zeros_like(m1))
    torch.testing.assert_close(gaussian_log_likelihood(m1, m2, v2), N(m2, v2.sqrt().expand_as(m2)).log_prob(m1))


def test_bad_input():
    for bits in (0, -3, 2.5, True, "8"):
        with pytest.raises(ValueError, match="bits"):
            check_bits(bits)
        with pytest.raises(ValueError, match="bits"):
            discretised_gaussian_log_likelihood(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor(1.0), bits)
    with pytest.raises(ValueError, match=r"data outside \[-1, 1\]"):
        discretised_gaussian_log_likelihood(1.5 * torch.ones(2, 3), torch.zeros(2, 3), torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"data outside \[-1, 1\]"):
        check_unit_range(torch.tensor([-1.01, 0.0]))
    check_unit_range(torch.tensor([-1.0, 1.0 + 1e-7]))  # round-off at the ends is accepted


def test_gaussian_is_a_leaf_module():
    """Only torch and the standard library: this is what breaks the likelihood <-> variance import cycle."""
    tree = ast.parse(Path(gaussian_module.__file__).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {(n.module or "").split(".")[0] or "." for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert names <= {"torch", "math", "typing", "__future__"}, names
