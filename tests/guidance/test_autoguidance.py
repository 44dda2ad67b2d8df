"""Autoguidance (Karras et al. 2024 Eq. (2)): D_weak + w (D - D_weak) in closed form with exact denoisers of two
mixtures, for unconditional and class-conditional models; a guide equal to the model changes nothing at any w; a
guide on another path is refused."""

from __future__ import annotations

import pytest
import torch

from kuosan.denoiser import eps_of
from kuosan.exact import ConditionalExactDenoiser, ExactDenoiser, GaussianMixture, LabelledMixture, ring
from kuosan.guidance import GuideMismatchError, autoguidance
from kuosan.paths import make_path

F64 = torch.float64
GOOD = ring(4, std=0.1)
WEAK = GaussianMixture(GOOD.means * 0.9, GOOD.covs * 3.0, GOOD.weights)  # blurrier: what a weak model learns


def noisy(path, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    t = (0.05 + 0.9 * torch.rand(n, generator=g, dtype=F64)) * path.t_max
    return path.alpha(t)[:, None] * GOOD.sample(n, g) + path.sigma(t)[:, None] * torch.randn(n, 2, generator=g,
                                                                                              dtype=F64), t


@pytest.mark.parametrize("kind", ["vp_cosine", "ve", "flow"])
def test_autoguidance_is_the_closed_form_extrapolation(kind):
    path = make_path(kind)
    D, Dw = ExactDenoiser(GOOD, path), ExactDenoiser(WEAK, path)
    x, t = noisy(path, 40, 1)
    G = autoguidance(D, Dw, 2.5)
    torch.testing.assert_close(G(x, t), Dw(x, t) + 2.5 * (D(x, t) - Dw(x, t)), rtol=1e-12, atol=1e-12)
    e, ew = eps_of(D, x, t, D(x, t)), eps_of(D, x, t, Dw(x, t))  # the same extrapolation of ε̂
    torch.testing.assert_close(eps_of(G, x, t, G(x, t)), ew + 2.5 * (e - ew), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(autoguidance(D, D, 7.0)(x, t), D(x, t), rtol=1e-12, atol=1e-12)
    assert torch.equal(autoguidance(D, Dw, 1.0)(x, t), D(x, t))


def test_class_conditional_models_pass_the_label_to_both():
    path = make_path("vp_cosine")
    labels = torch.tensor([0, 0, 1, 1])
    D = ConditionalExactDenoiser(LabelledMixture(GOOD, labels), path)
    Dw = ConditionalExactDenoiser(LabelledMixture(WEAK, labels), path)
    x, t = noisy(path, 30, 2)
    y = torch.arange(30) % 2
    want = Dw(x, t, y=y) + 3.0 * (D(x, t, y=y) - Dw(x, t, y=y))
    torch.testing.assert_close(autoguidance(D, Dw, 3.0)(x, t, y=y), want, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(want, autoguidance(D, Dw, 3.0)(x, t, y=1 - y))  # the label matters


def test_a_guide_on_another_path_is_refused():
    D = ExactDenoiser(GOOD, make_path("vp_cosine"))
    with pytest.raises(GuideMismatchError, match="another path"):
        autoguidance(D, ExactDenoiser(WEAK, make_path("ve")), 2.0)
    with pytest.raises(GuideMismatchError, match="another path"):
        autoguidance(D, ExactDenoiser(WEAK, make_path("vp_cosine", s=0.02)), 2.0)
