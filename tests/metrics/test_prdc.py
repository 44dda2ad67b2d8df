"""Precision / recall / density / coverage (Naeem et al. 2020) on toy sets whose behaviour the paper states."""

import math

import pytest
import torch

from kuosan.metrics import prdc
from kuosan.metrics.prdc import kth_neighbour_radii


def _gauss(n, seed, shift=0.0, d=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) + shift


def test_disjoint_sets_score_zero():
    r = prdc(_gauss(500, 0), _gauss(500, 1, shift=50.0))
    assert (r.precision, r.recall, r.density, r.coverage) == (0.0, 0.0, 0.0, 0.0)


def test_identical_sets_score_one():
    x = _gauss(500, 0)
    r = prdc(x, x.clone())
    assert (r.precision, r.recall, r.density, r.coverage) == (1.0, 1.0, 1.0, 1.0)


def test_same_distribution_matches_the_papers_expectations():
    # Naeem et al. 2020: E[density] = 1 and E[coverage] = 1 - Π_{i=1..k} (N-i)/(N+M-i) for identical distributions
    n, k = 2000, 5
    r = prdc(_gauss(n, 0), _gauss(n, 1), k=k)
    cov_expected = 1 - math.prod((n - i) / (2 * n - i) for i in range(1, k + 1))
    assert r.coverage == pytest.approx(cov_expected, abs=0.015)
    assert r.density == pytest.approx(1.0, abs=0.06)
    assert r.precision > 0.9 and r.recall > 0.9


def test_outlier_fakes_lower_fidelity_and_dropped_modes_lower_diversity():
    real = torch.cat([_gauss(1000, 0), _gauss(1000, 1, shift=20.0)])  # two modes
    half_bad = torch.cat([_gauss(1000, 2), _gauss(1000, 3, shift=-40.0)])  # half the fakes far from all data
    r = prdc(real, half_bad)
    assert r.precision == pytest.approx(0.5, abs=0.03) and r.density == pytest.approx(0.5, abs=0.06)
    one_mode = _gauss(2000, 4)  # all fakes in the first mode: faithful but half the data uncovered
    r = prdc(real, one_mode)
    assert r.precision > 0.9 and r.recall == pytest.approx(0.5, abs=0.03)
    assert r.coverage == pytest.approx(0.5, abs=0.03)


def test_kth_neighbour_radii_exclude_the_point_itself():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    assert kth_neighbour_radii(x, 1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert kth_neighbour_radii(x, 2).tolist() == [3.0, 2.0, 3.0, 6.0]


def test_bad_input():
    with pytest.raises(ValueError, match="more than k"):
        prdc(torch.zeros(5, 2), torch.zeros(20, 2), k=5)
    with pytest.raises(ValueError, match="matrix"):
        prdc(torch.zeros(5), torch.zeros(20, 2))
