"""The noisy classifier p(y | x_t, t): trained on a labelled 2-D mixture it approaches the exact Bayes classifier
at every noise level, its accuracy falls with the noise towards the largest class share, training is
deterministic, it guides a sampler towards the class asked for; the image network's shapes and input gradient."""

from __future__ import annotations

from functools import cache

import pytest
import torch

from kuosan.exact import ExactClassifier, ExactDenoiser, GaussianMixture, LabelledMixture
from kuosan.guidance import (ClassifierTraining, NoisyClassifier, accuracy_by_noise, classifier_guidance,
                             classifier_times, train_classifier)
from kuosan.guidance.train_classifier import noised
from kuosan.nets.classifier import ClassifierConfig, ClassifierNet
from kuosan.paths import discrete_vp, f64, make_path

DATA = LabelledMixture(GaussianMixture(torch.tensor([[-1.5, 0.0], [1.0, 1.2], [1.0, -1.2]]),
                                       0.1 * torch.eye(2).expand(3, 2, 2).clone(), torch.tensor([0.4, 0.3, 0.3])),
                       torch.tensor([0, 1, 1]))
PATH = make_path("vp_cosine")
SMALL = ClassifierConfig((2,), 2, width=64, depth=2)


def draw(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n labelled examples (x float32 (n, 2), y (n,)), classes in the mixture's proportions."""
    g = torch.Generator().manual_seed(seed)
    y = torch.multinomial(DATA.class_weights, n, replacement=True, generator=g)
    x = torch.empty(n, 2, dtype=torch.float64)
    for c in range(2):
        x[y == c] = DATA.given(c).sample(int((y == c).sum()), g)
    return x.float(), y


@cache
def trained() -> NoisyClassifier:
    x, y = draw(4000, 0)
    clf, info = train_classifier(x, y, 2, PATH, classifier_times("uniform", PATH), SMALL,
                                 ClassifierTraining(steps=200, batch_size=128, lr=3e-3))
    assert info["time_sampling"] == "uniform" and info["final_loss"] > 0
    return clf


def test_accuracy_approaches_bayes_and_falls_with_noise():
    clf = trained()
    x, y = draw(2000, 1)
    acc = accuracy_by_noise(clf, x, y)
    exact = ExactClassifier(DATA, PATH)
    for row in acc:  # the exact Bayes classifier on the same noisy draws (seed + 17, as accuracy_by_noise)
        t = f64(row["t"]).expand(len(x))
        eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(17))
        bayes = float((exact.log_probs(noised(PATH, x.double(), t, eps.double()), t).argmax(1) == y).double().mean())
        assert row["accuracy"] <= bayes + 0.03 and row["accuracy"] >= bayes - 0.05, (row, bayes)
    accs = [r["accuracy"] for r in acc]
    assert accs[0] > 0.97 and accs[0] > accs[-1] + 0.25 and accs == sorted(accs, reverse=True), accs
    assert abs(accs[-1] - 0.6) < 0.1  # t = 0.95 t_max: little more than the largest class share
    assert [r["log_snr"] for r in acc] == sorted((r["log_snr"] for r in acc), reverse=True)


def test_a_trained_classifier_guides_the_sampler_towards_the_class():
    from kuosan.sampling import sample

    G = classifier_guidance(ExactDenoiser(DATA.mixture, PATH), trained(), 2.0)
    x = sample(G, "sde", (600, 2), 100, seed=1, cond={"y": torch.zeros(600, dtype=torch.long)})
    assert float((x[:, 0] < -0.25).float().mean()) > 0.9  # class 0 is at x₁ = -1.5; unguided: 40 % there


def test_training_is_deterministic_and_checks_its_input():
    x, y = draw(300, 2)
    run = lambda: train_classifier(x, y, 2, PATH, classifier_times("uniform", PATH), SMALL,  # noqa: E731
                                   ClassifierTraining(steps=5, batch_size=16))[0]
    a, b = run(), run()
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ValueError, match="built for"):
        train_classifier(x, y, 3, PATH, classifier_times("uniform", PATH), SMALL)
    with pytest.raises(ValueError, match="positive integer"):
        ClassifierTraining(steps=0).validate()
    chain = discrete_vp("cosine", 1000)
    assert classifier_times("importance", chain).kind == "uniform_discrete"


def test_image_classifier_shapes_and_input_gradient():
    net = ClassifierNet(ClassifierConfig((1, 8, 8), 10, width=8, depth=2))
    clf = NoisyClassifier(net, make_path("ve"), 10)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    lp = clf.log_probs(x, f64([0.1, 5.0, 80.0]))
    assert lp.shape == (3, 10) and lp.dtype == torch.float64
    assert torch.allclose(lp.exp().sum(1), torch.ones(3, dtype=torch.float64))
    g = torch.autograd.grad(lp[:, 3].sum(), x)[0]
    assert g.shape == x.shape and bool(torch.isfinite(g).all()) and float(g.abs().sum()) > 0
    with pytest.raises(ValueError, match="shape"):
        ClassifierConfig((8, 8), 10).validate()

