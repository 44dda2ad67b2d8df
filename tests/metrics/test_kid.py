"""KID: the unbiased MMD² with the cubic polynomial kernel; E = 0 for one distribution, and its standard error
(the exact U-statistic variance, estimated without bias) honest over repeats."""

import itertools
import math

import pytest
import torch

from kuosan.metrics import kid
from kuosan.metrics.kid import polynomial_kernel, u_statistic


def test_u_statistic_matches_brute_force_over_index_tuples():
    g = torch.Generator().manual_seed(0)
    m = 7
    a = torch.randn(m, m, generator=g, dtype=torch.float64)
    h = a + a.T
    pairs = [(i, j) for i, j in itertools.permutations(range(m), 2)]
    triples = list(itertools.permutations(range(m), 3))
    quads = list(itertools.permutations(range(m), 4))
    theta = sum(h[i, j] for i, j in pairs) / len(pairs)
    e13 = sum(h[i, j] * h[i, k] for i, j, k in triples) / len(triples)
    e2 = sum(h[i, j] ** 2 for i, j in pairs) / len(pairs)
    th2 = sum(h[i, j] * h[k, l] for i, j, k, l in quads) / len(quads)
    var = 4 * (m - 2) / (m * (m - 1)) * (e13 - th2) + 2 / (m * (m - 1)) * (e2 - th2)
    got = u_statistic(h)
    assert got[0] == pytest.approx(float(theta), rel=1e-12)
    assert got[1] == pytest.approx(float(var), rel=1e-9)
    z1, z2 = float(e13 - th2), float(e2 - th2)
    assert got[2] == pytest.approx(4 * (m - 2) / (m * (m - 1)) * max(z1, 0) + 2 / (m * (m - 1)) * max(z2, 0))


def test_kid_is_the_u_statistic_form_of_the_unbiased_mmd():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(50, 3, generator=g, dtype=torch.float64), torch.randn(80, 3, generator=g, dtype=torch.float64)
    r = kid(x, y[:50])
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y[:50], y[:50]), polynomial_kernel(x, y[:50])
    off = lambda k: (k.sum() - k.diagonal().sum()) / (50 * 49)  # noqa: E731
    assert r.value == pytest.approx(float(off(kxx) + off(kyy) - 2 * off(kxy)), rel=1e-12)
    assert kid(x, y).m == 50  # the larger set is subsampled to the smaller's size


def _honesty(shift, reps=300, m=100, d=4):
    """Over independent repeats: mean KID, its empirical variance, the mean unbiased variance estimate, and the
    root-mean-square reported standard error."""
    g = torch.Generator().manual_seed(int(10 * shift) + 7)
    res = [kid(torch.randn(m, d, generator=g, dtype=torch.float64),
               torch.randn(m, d, generator=g, dtype=torch.float64) + shift, seed=i) for i in range(reps)]
    vals = torch.tensor([r.value for r in res])
    return (float(vals.mean()), float(vals.var()), float(torch.tensor([r.variance for r in res]).mean()),
            float(torch.tensor([r.stderr for r in res]).square().mean().sqrt()))


@pytest.mark.parametrize("shift", [0.0, 0.5])
def test_expectation_and_honest_standard_error(shift):
    mean, var, var_est, se = _honesty(shift)
    if shift == 0:
        assert abs(mean) < 3 * math.sqrt(var / 300)  # E[KID] = 0 for one distribution
    else:
        assert mean > 10 * math.sqrt(var / 300)
    # the unbiased variance estimate averages to the true variance (its spread over 300 repeats: ~10%); at the
    # null the second-order term carries all of it. The reported (clamped) error is honest too, slightly high.
    assert var_est / var == pytest.approx(1.0, abs=0.25)
    assert se / math.sqrt(var) == pytest.approx(1.0, abs=0.2)


def test_bad_input():
    with pytest.raises(ValueError, match="at least 4"):
        kid(torch.zeros(3, 2), torch.zeros(10, 2))
    with pytest.raises(ValueError, match="dimensions differ"):
        kid(torch.zeros(10, 2), torch.zeros(10, 3))
