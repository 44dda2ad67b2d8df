"""The labelled mixture against independent formulas: p(y | x_t) by Bayes on the per-class sub-mixtures, the
conditional denoiser as the sub-mixture's own denoiser, and the classifier-guidance identity
E[x_0 | x_t, y] = E[x_0 | x_t] + (σ²/α) ∇ log p(y | x_t) (Tweedie applied to p_t(x|y) = p_t(x) p(y|x)/p(y))."""

from __future__ import annotations

import pytest
import torch

from kuosan.exact import ConditionalExactDenoiser, ExactClassifier, ExactDenoiser, GaussianMixture, LabelledMixture
from kuosan.paths import PATH_KINDS, f64, make_path

F64 = torch.float64


def labelled(seed: int = 0, dim: int = 2) -> LabelledMixture:
    """5 components in 3 classes (class 1 has two components, class 2 two), full covariances."""
    g = torch.Generator().manual_seed(seed)
    means = 2 * torch.randn(5, dim, generator=g, dtype=F64)
    A = 0.4 * torch.randn(5, dim, dim, generator=g, dtype=F64)
    covs = A @ A.transpose(1, 2) + 0.05 * torch.eye(dim, dtype=F64)
    return LabelledMixture(GaussianMixture(means, covs, torch.rand(5, generator=g, dtype=F64) + 0.2),
                           torch.tensor([0, 1, 2, 1, 2]))


def ab(a: float, s: float, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.full((n,), a, dtype=F64), torch.full((n,), s, dtype=F64)


def test_class_posterior_is_bayes_on_the_sub_mixtures():
    data = labelled()
    x = 2 * torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    for a, s in ((1.0, 0.2), (0.7, 0.7), (0.1, 1.0), (1.0, 4.0)):
        A, S = ab(a, s, 64)
        log_py = data.class_weights.log()
        joint = torch.stack([log_py[c] + data.given(c).log_prob_t(x, A, S) for c in range(3)], 1)
        want = joint - data.mixture.log_prob_t(x, A, S)[:, None]
        torch.testing.assert_close(data.class_log_probs(x, A, S), want, rtol=1e-10, atol=1e-10)
        assert torch.allclose(data.class_log_probs(x, A, S).exp().sum(1), torch.ones(64, dtype=F64))


def test_conditional_denoiser_is_the_class_sub_mixture_denoiser_and_null_is_unconditional():
    data = labelled(2)
    x = torch.randn(30, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    A, S = ab(0.8, 0.6, 30)
    y = torch.arange(30) % 4  # 3 = the null label
    got = data.denoise(x, A, S, y)
    for c in range(3):
        rows = y == c
        torch.testing.assert_close(got[rows], data.given(c).denoise(x[rows], A[rows], S[rows]), rtol=1e-10,
                                   atol=1e-10)
    torch.testing.assert_close(got[y == 3], data.mixture.denoise(x[y == 3], A[y == 3], S[y == 3]))
    torch.testing.assert_close(data.denoise(x, A, S), data.mixture.denoise(x, A, S))  # no label at all


@pytest.mark.parametrize("kind", PATH_KINDS)
def test_classifier_guidance_identity_on_every_path(kind):
    """(σ²/α) ∇_x log p(y|x_t) is exactly the shift from E[x_0|x_t] to E[x_0|x_t, y], on every path kind."""
    path = make_path(kind)
    data = labelled(4)
    D, Dy, clf = ExactDenoiser(data.mixture, path), ConditionalExactDenoiser(data, path), ExactClassifier(data, path)
    g = torch.Generator().manual_seed(5)
    t = torch.rand(40, generator=g, dtype=F64) * 0.9 * path.t_max + 0.05 * path.t_max
    a, s = path.alpha(t)[:, None], path.sigma(t)[:, None]
    x = a * data.mixture.sample(40, g) + s * torch.randn(40, 2, generator=g, dtype=F64)
    y = torch.randint(0, 3, (40,), generator=g)
    xr = x.clone().requires_grad_(True)
    grad = torch.autograd.grad(clf.log_probs(xr, t).gather(1, y[:, None]).sum(), xr)[0]
    torch.testing.assert_close(Dy(x, t, y=y), D(x, t) + s**2 / a * grad, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(Dy(x, t), D(x, t))


def test_at_pure_noise_the_classifier_returns_the_prior_and_stays_finite():
    path = make_path("flow")  # α(1) = 0
    data = labelled(6)
    clf = ExactClassifier(data, path)
    x = torch.randn(8, 2, dtype=F64)
    torch.testing.assert_close(clf.log_probs(x, f64(1.0)), data.class_weights.log().expand(8, 3))
    assert torch.isfinite(ConditionalExactDenoiser(data, path)(x, f64(1.0), y=torch.zeros(8, dtype=torch.long))).all()


def test_bad_labels_are_refused():
    data = labelled()
    with pytest.raises(ValueError, match="every class needs a component"):
        LabelledMixture(data.mixture, torch.tensor([0, 2, 2, 2, 2]))
    with pytest.raises(ValueError, match="one per component"):
        LabelledMixture(data.mixture, torch.tensor([0, 1]))
    A, S = ab(1.0, 0.5, 2)
    with pytest.raises(ValueError, match="labels must be in"):
        data.denoise(torch.zeros(2, 2, dtype=F64), A, S, torch.tensor([0, 4]))
