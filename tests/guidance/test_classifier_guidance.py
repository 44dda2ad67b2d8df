"""Classifier guidance with the exact classifier p(y | x_t): at s = 1 the guided unconditional denoiser is the
exact conditional one (on every path), and a stochastic sampler with it draws the class-conditional mixture
(component weights, means, covariances within Monte Carlo error); s = 0 is the model bit for bit; rows at α = 0 and
outside the λ interval are left alone; labels are checked."""

from __future__ import annotations

import math

import pytest
import torch

from kuosan.exact import ConditionalExactDenoiser, ExactClassifier, ExactDenoiser, GaussianMixture, LabelledMixture
from kuosan.guidance import classifier_guidance, in_interval
from kuosan.paths import PATH_KINDS, f64, make_path
from kuosan.sampling import sample

F64 = torch.float64
# class 0: one component; class 1: two well separated ones (so nearest-component assignment is exact)
DATA = LabelledMixture(GaussianMixture(torch.tensor([[-2.5, 0.0], [1.5, 2.0], [1.5, -2.0]]),
                                       torch.tensor([[[0.30, 0.12], [0.12, 0.15]], [[0.10, -0.05], [-0.05, 0.25]],
                                                     [[0.20, 0.0], [0.0, 0.05]]]),
                                       torch.tensor([0.5, 0.3, 0.2])), torch.tensor([0, 1, 1]))


def noisy(path, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    t = (0.02 + 0.96 * torch.rand(n, generator=g, dtype=F64)) * path.t_max
    x = path.alpha(t)[:, None] * DATA.mixture.sample(n, g) + path.sigma(t)[:, None] * torch.randn(n, 2, generator=g,
                                                                                                   dtype=F64)
    return x, t, torch.randint(0, 2, (n,), generator=g)


@pytest.mark.parametrize("kind", PATH_KINDS)
def test_scale_one_with_the_exact_classifier_is_the_exact_conditional_denoiser(kind):
    path = make_path(kind)
    G = classifier_guidance(ExactDenoiser(DATA.mixture, path), ExactClassifier(DATA, path), 1.0)
    x, t, y = noisy(path, 64, 1)
    torch.testing.assert_close(G(x, t, y=y), ConditionalExactDenoiser(DATA, path)(x, t, y=y), rtol=1e-8, atol=1e-8)
    # the shift is linear in s: s = 2.5 moves x̂_0 2.5 times as far
    G25 = classifier_guidance(ExactDenoiser(DATA.mixture, path), ExactClassifier(DATA, path), 2.5)
    base = ExactDenoiser(DATA.mixture, path)(x, t)
    torch.testing.assert_close(G25(x, t, y=y) - base, 2.5 * (G(x, t, y=y) - base), rtol=1e-8, atol=1e-8)


def test_scale_zero_alpha_zero_and_interval_rows_are_unguided():
    path = make_path("flow")
    D, clf = ExactDenoiser(DATA.mixture, path), ExactClassifier(DATA, path)
    x, t, y = noisy(path, 40, 2)
    assert torch.equal(classifier_guidance(D, clf, 0.0)(x, t, y=y), D(x, t))
    t1 = t.clone()
    t1[:5] = 1.0  # α = 0: σ²/α is infinite; the rows are left unguided
    out = classifier_guidance(D, clf, 1.0)(x, t1, y=y)
    assert torch.isfinite(out).all() and torch.equal(out[:5], D(x[:5], t1[:5]))
    inter = (-1.0, 3.0)
    inside = in_interval(path, t, inter)
    assert 0 < int(inside.sum()) < 40
    out = classifier_guidance(D, clf, 1.0, interval=inter)(x, t, y=y)
    assert torch.equal(out[~inside], D(x, t)[~inside])
    torch.testing.assert_close(out[inside], ConditionalExactDenoiser(DATA, path)(x, t, y=y)[inside])


def test_a_conditional_model_gets_the_label_and_bad_labels_are_refused():
    path = make_path("ve")
    Dy, clf = ConditionalExactDenoiser(DATA, path), ExactClassifier(DATA, path)
    x, t, y = noisy(path, 16, 3)
    G = classifier_guidance(Dy, clf, 0.0, conditional_model=True)
    assert torch.equal(G(x, t, y=y), Dy(x, t, y=y))
    assert torch.equal(classifier_guidance(Dy, clf, 0.0)(x, t, y=y), Dy(x, t))  # unconditional model: no label
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        classifier_guidance(Dy, clf, 1.0)(x, t, y=torch.full((16,), 2))
    with pytest.raises(ValueError, match="integer labels"):
        classifier_guidance(Dy, clf, 1.0)(x, t)
    with pytest.raises(ValueError, match="finite number >= 0"):
        classifier_guidance(Dy, clf, -0.5)


def z_scores(x: torch.Tensor, mix: GaussianMixture) -> torch.Tensor:
    """Standardised errors of each component's weight, mean and covariance (max-posterior assignment)."""
    L = torch.linalg.cholesky(mix.covs)
    r = x[:, None, :] - mix.means[None]
    w = torch.linalg.solve_triangular(L[None], r[..., None], upper=False).squeeze(-1)
    logp = -0.5 * (w**2).sum(-1) - torch.diagonal(L, dim1=-2, dim2=-1).log().sum(-1) + mix.weights.log()
    k, n, zs = logp.argmax(1), x.shape[0], []
    for j in range(len(mix.weights)):
        pi, S, xj = mix.weights[j].item(), mix.covs[j], x[k == j]
        nj = xj.shape[0]
        zs.append((nj / n - pi) / math.sqrt(pi * (1 - pi) / n))
        zs += ((xj.mean(0) - mix.means[j]) / (torch.diagonal(S) / nj).sqrt()).tolist()
        se = ((torch.diagonal(S)[:, None] * torch.diagonal(S)[None] + S**2) / nj).sqrt()
        zs += ((torch.cov(xj.T) - S) / se)[[0, 0, 1], [0, 1, 1]].tolist()
    return torch.tensor(zs)


@pytest.mark.parametrize("sampler, kind, steps, grid, opts", [
    ("sde", "vp_cosine", 200, "uniform", {}),
    ("ddim", "ve", 150, "logsnr", {"eta": 1.0}),
])
def test_stochastic_sampling_with_the_exact_classifier_draws_the_class_conditional_mixture(sampler, kind, steps,
                                                                                            grid, opts):
    path = make_path(kind)
    G = classifier_guidance(ExactDenoiser(DATA.mixture, path), ExactClassifier(DATA, path), 1.0)
    n = 3000
    x = sample(G, sampler, (n, 2), steps, grid=grid, dtype=F64, batch_size=n, seed=2,
               cond={"y": torch.ones(n, dtype=torch.long)}, **opts)
    target = DATA.given(1)  # components 1 and 2 with weights 0.6, 0.4
    z = z_scores(x, target)
    assert z.abs().max() < 4.0, z.numpy().round(1)
    assert bool((x[:, 0] > -0.5).all())  # nothing from class 0 (at -2.5)
    # and the statistic would see the unguided mixture's samples as wrong
    plain = sample(ExactDenoiser(DATA.mixture, path), sampler, (n, 2), steps, grid=grid, dtype=F64, batch_size=n,
                   seed=2, **opts)
    assert bool((plain[:, 0] < -0.5).float().mean() > 0.4)


def test_times_may_be_scalars():
    path = make_path("vp_cosine")
    G = classifier_guidance(ExactDenoiser(DATA.mixture, path), ExactClassifier(DATA, path), 1.0)
    x = torch.randn(3, 2, dtype=F64)
    y = torch.tensor([0, 1, 1])
    torch.testing.assert_close(G(x, f64(0.4), y=y), ConditionalExactDenoiser(DATA, path)(x, f64(0.4), y=y))


def test_no_guidance_above_the_ve_sigma_cap():
    """A learned classifier's gradient is not O(α) at the noisiest times: rows with σ̃ > 10³ (the cosine chain's
    t = T has σ̃ ≈ 2·10⁴) are left unguided, rows below are guided by exactly s σ²/α ∇log p."""
    import torch

    from kuosan.exact import ExactDenoiser, gaussian
    from kuosan.guidance.classifier import classifier_guidance
    from kuosan.paths import discrete_vp, ve_sigma
    from kuosan.pf_ode import VE_SIGMA_CAP

    class Linear:  # log p(y | x) = y·(w·x) - logsumexp: a constant, not O(α), gradient
        num_classes = 2

        def log_probs(self, x, t):
            z = (x * 0.1).sum(1, keepdim=True)
            return torch.log_softmax(torch.cat([-z, z], 1), 1)

    path = discrete_vp("cosine", 1000)
    D = ExactDenoiser(gaussian(torch.zeros(2), torch.eye(2)), path)
    G = classifier_guidance(D, Linear(), 1.0)
    x = torch.randn(4, 2, dtype=torch.float64)
    y = torch.ones(4, dtype=torch.long)
    t_hi, t_lo = torch.full((4,), 1000.0, dtype=torch.float64), torch.full((4,), 500.0, dtype=torch.float64)
    assert float(ve_sigma(path, t_hi[:1])) > VE_SIGMA_CAP > float(ve_sigma(path, t_lo[:1]))
    assert torch.equal(G(x, t_hi, y=y), D(x, t_hi))
    a, s = path.alpha(t_lo), path.sigma(t_lo)
    grad = (1 - torch.softmax(torch.stack([-(x * 0.1).sum(1), (x * 0.1).sum(1)], 1), 1)[:, 1])[:, None] * 0.2
    assert torch.allclose(G(x, t_lo, y=y), D(x, t_lo) + (s**2 / a)[:, None] * grad, rtol=1e-10, atol=1e-12)
