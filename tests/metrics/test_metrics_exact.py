"""Exact metrics: W2, MMD and energy distance against closed forms for Gaussians, NLL of samples against
kuosan.exact's log-density, mode weights, and the built-in data sets whose density kuosan knows."""

import math
import sys

import pytest
import torch

from kuosan import exact
from kuosan.data import load_dataset
from kuosan.metrics import energy_distance, known_mixture, mean_nll, mmd, mode_weights, w2
from kuosan.metrics.exact import log_density


def _normal(n, d, seed, mean=0.0, std=1.0):
    g = torch.Generator().manual_seed(seed)
    return mean + std * torch.randn(n, d, generator=g, dtype=torch.float64)


def _standard(n, d, seed):
    """n points with exactly zero mean and identity covariance (whitened), so that only the shape of the
    empirical distribution, not its moments' sampling noise, separates empirical W2 from the closed form."""
    z = _normal(n, d, seed)
    z = z - z.mean(0)
    return z @ torch.linalg.inv(torch.linalg.cholesky(z.T @ z / n)).T


@pytest.mark.slow  # importing POT alone takes ~4 s on a small CPU
def test_w2_is_the_sorted_coupling_in_one_dimension():
    pytest.importorskip("ot")
    x, y = _normal(300, 1, 0), _normal(300, 1, 1, 0.5, 2.0)
    sorted_w2 = float((x.sort(0).values - y.sort(0).values).square().mean().sqrt())
    assert w2(x, y) == pytest.approx(sorted_w2, rel=1e-9)


@pytest.mark.slow
def test_w2_of_gaussians_against_the_closed_form():
    pytest.importorskip("ot")
    # W2² = (μ₁ - μ₂)² + (s₁ - s₂)² in 1-D; ‖μ₁ - μ₂‖² + d (s₁ - s₂)² between isotropic
    # Gaussians. The empirical W2 of moment-matched samples lies slightly above
    # (finite samples are never exactly Gaussian) and converges.
    got = w2(_standard(1000, 1, 2), 1.0 + 2.0 * _standard(1000, 1, 3))
    assert math.sqrt(2.0) <= got < math.sqrt(2.0) * 1.01
    mu = torch.tensor([1.0, -2.0], dtype=torch.float64)
    true = math.sqrt(5.0 + 2 * (1.5 - 1.0) ** 2)
    errs = [w2(_standard(n, 2, 4), mu + 1.5 * _standard(n, 2, 5)) - true for n in (200, 1200)]
    assert 0 < errs[1] < errs[0] and errs[1] < 0.02 * true


def test_w2_without_pot_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ot", None)  # import ot -> ImportError
    with pytest.raises(ImportError, match=r"kuosan\[eval\]"):
        w2(torch.zeros(3, 1), torch.zeros(3, 1))


def _gauss_kernel_mean(delta, s, h):
    """E exp(-‖Z‖²/2h²) for Z ~ N(δ, S): det(I + S/h²)^(-1/2) exp(-½ δᵀ(S + h²I)⁻¹δ)."""
    eye = torch.eye(len(delta), dtype=torch.float64)
    return float(torch.linalg.det(eye + s / h**2) ** -0.5 * torch.exp(-0.5 * delta @ torch.linalg.solve(s + h**2 * eye,
                                                                                                       delta)))


def test_mmd_of_gaussians_against_the_closed_form():
    d, h = 3, 1.5
    c1, c2 = torch.eye(d, dtype=torch.float64), torch.diag(torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64))
    mu = torch.tensor([0.5, 0.0, -0.5], dtype=torch.float64)
    zero = torch.zeros(d, dtype=torch.float64)
    true = (_gauss_kernel_mean(zero, 2 * c1, h) + _gauss_kernel_mean(zero, 2 * c2, h)
            - 2 * _gauss_kernel_mean(mu, c1 + c2, h))
    reps = 20
    y_of = lambda seed: mu + _normal(500, d, seed) * torch.diag(c2).sqrt()  # noqa: E731 - N(μ, Σ₂), Σ₂ diagonal
    diff = torch.tensor([mmd(_normal(500, d, 100 + i), y_of(200 + i), bandwidth=h)[0] for i in range(reps)])
    same = torch.tensor([mmd(_normal(500, d, 300 + i), _normal(500, d, 400 + i), bandwidth=h)[0] for i in range(reps)])
    # unbiased: the mean over repeats is the closed form (and 0 for one distribution) within 3 standard errors
    assert float(diff.mean()) == pytest.approx(true, abs=3 * float(diff.std()) / math.sqrt(reps))
    assert abs(float(same.mean())) < 3 * float(same.std()) / math.sqrt(reps)
    assert true > 10 * float(diff.std()) / math.sqrt(reps)
    assert mmd(_normal(5, d, 1), _normal(5, d, 2), bandwidth=h)[1] == h


def test_energy_distance_against_the_closed_form_in_one_dimension():
    def e_abs(delta, s):  # E|Z|, Z ~ N(δ, s²): the folded normal's mean
        fold = delta * math.erf(delta / (s * math.sqrt(2)))
        return s * math.sqrt(2 / math.pi) * math.exp(-delta**2 / (2 * s**2)) + fold

    s1, s2, delta = 1.0, 2.0, 1.0
    true = 2 * e_abs(delta, math.hypot(s1, s2)) - e_abs(0, s1 * math.sqrt(2)) - e_abs(0, s2 * math.sqrt(2))
    got = energy_distance(_normal(3000, 1, 9), _normal(3000, 1, 10, delta, s2))
    assert got == pytest.approx(true, abs=0.03)


def test_nll_of_samples_against_the_mixtures_log_density():
    mix = exact.ring()
    x = mix.sample(500, generator=torch.Generator().manual_seed(0))
    ones = torch.ones(len(x), dtype=torch.float64)
    ref = -mix.log_prob_t(x, ones, torch.zeros_like(ones))
    mean, se = mean_nll(x, mix)
    assert mean == pytest.approx(float(ref.mean()), rel=1e-12)
    assert se == pytest.approx(float(ref.std() / math.sqrt(500)), rel=1e-12)
    # a single Gaussian: E[NLL] is the differential entropy ½ log det(2πe Σ)
    cov = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    g = exact.gaussian(torch.zeros(2), cov)
    mean, se = mean_nll(g.sample(20000, generator=torch.Generator().manual_seed(1)), g)
    assert mean == pytest.approx(0.5 * math.log(torch.linalg.det(2 * math.pi * math.e * cov)), abs=4 * se)


def test_mode_weights_recover_the_true_weights_and_count_missing_modes():
    mix = exact.GaussianMixture(exact.ring().means, exact.ring().covs, torch.arange(1.0, 9.0))
    mw = mode_weights(mix.sample(20000, generator=torch.Generator().manual_seed(2)), mix)
    assert mw.total_variation < 0.02 and mw.missing_modes == 0
    assert mw.estimated == pytest.approx(mix.weights.tolist(), abs=0.01)
    one = mix.means[3] + 0.01 * _normal(50, 2, 3)
    mw = mode_weights(one, mix)
    assert mw.missing_modes == 7 and mw.estimated[3] == 1.0
    assert mw.total_variation == pytest.approx(1 - float(mix.weights[3]))


def test_the_built_in_toys_follow_their_known_mixtures():
    for name in ("ring", "curves"):
        mix = known_mixture(name)
        data = load_dataset(name, n=4000, seed=3).x.double()
        fresh = mix.sample(4000, generator=torch.Generator().manual_seed(4))
        (m_data, se_data), (m_mix, se_mix) = mean_nll(data, mix), mean_nll(fresh, mix)
        assert m_data == pytest.approx(m_mix, abs=4 * math.hypot(se_data, se_mix))
    assert mode_weights(load_dataset("ring", n=4000).x, known_mixture("ring")).total_variation < 0.03
    assert known_mixture("moons") is None and known_mixture("digits") is None


def test_bad_input():
    with pytest.raises(ValueError, match="dimension 3 but the mixture has 2"):
        log_density(torch.zeros(4, 3), exact.ring())
    with pytest.raises(ValueError, match="bandwidth"):
        mmd(torch.zeros(4, 2), torch.ones(4, 2), bandwidth=0.0)
    with pytest.raises(ValueError, match="dimensions differ"):
        energy_distance(torch.zeros(4, 2), torch.ones(4, 3))
