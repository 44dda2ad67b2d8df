"""The forward-process explorer: Σ_t = α²Σ_0 + σ²I against its closed form, patches, the picture."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from kuosan.data import curves_covariance
from kuosan.paths import make_path
from kuosan.serve.explore import (covariance_at, empirical_cov, forward_png, forward_state, make_explorer, noised,
                                  patches)


@pytest.fixture(scope="module")
def curves():
    return make_explorer("curves", n=512)


@pytest.mark.parametrize("kind", ["discrete_vp", "flow", "ve"])
@pytest.mark.parametrize("u", [0.0, 0.3, 1.0])
def test_eigenvalues_are_the_closed_form(curves, kind, u):
    """eig Σ_t = α² eig Σ_0 + σ² with Σ_0 the curves' covariance, α and σ the path's at t = u·t_max."""
    path = make_path(kind)
    st = forward_state(path, curves, u, seed=0)
    t = torch.tensor(u * path.t_max, dtype=torch.float64)
    a, s = float(path.alpha(t)), float(path.sigma(t))
    assert st["t"] == pytest.approx(u * path.t_max) and st["alpha"] == a and st["sigma"] == s
    lam0 = np.linalg.eigvalsh(curves_covariance(64))[::-1]
    np.testing.assert_allclose(st["eigenvalues"], a * a * lam0 + s * s, rtol=1e-9, atol=1e-12)
    assert st["dim"] == 64 and "closed form" in st["source"]


@pytest.mark.parametrize("u", [0.05, 0.3, 0.9])
def test_noised_examples_have_that_covariance(curves, u):
    """The empirical covariance of 512 noised curves: total variance within 15% of tr Σ_t (sd ≈ 3-4% here)."""
    path = make_path("vp_cosine")
    st = forward_state(path, curves, u, seed=3)
    assert sum(st["empirical_eigenvalues"]) == pytest.approx(sum(st["eigenvalues"]), rel=0.15)
    xt = noised(path, curves.x0, st["t"], seed=3)
    np.testing.assert_allclose(xt.numpy(), st["alpha"] * curves.x0.numpy() + st["sigma"] * torch.randn(
        curves.x0.shape, generator=torch.Generator().manual_seed(3)).numpy(), rtol=1e-5, atol=1e-6)


def test_covariance_at_matches_the_formula():
    path = make_path("flow")
    cov0 = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    got = covariance_at(path, cov0, 0.25)
    want = 0.75**2 * cov0 + 0.25**2 * torch.eye(2, dtype=torch.float64)  # flow: α = 1 − t, σ = t
    assert torch.allclose(got, want, rtol=0, atol=1e-15)


def test_patches_and_empirical_cov():
    x = torch.randn(3, 2, 16, 16)
    p = patches(x)  # 4 patches of 8×8 per image, all channels
    assert p.shape == (12, 2 * 64)
    assert torch.equal(p[1], x[0, :, 0:8, 8:16].reshape(-1))  # image 0, row 0, column 1
    assert torch.equal(p[6], x[1, :, 8:16, 0:8].reshape(-1))  # image 1, row 1, column 0
    assert torch.equal(patches(torch.ones(2, 1, 8, 8)), torch.ones(2, 64))  # small images whole
    v = torch.randn(50, 4, dtype=torch.float64)
    np.testing.assert_allclose(empirical_cov(v).numpy(), np.cov(v.numpy(), rowvar=False), rtol=1e-12)


def test_digits_use_the_empirical_covariance_of_whole_images():
    ex = make_explorer("digits", n=200)
    assert ex.cov0.shape == (64, 64) and "empirical" in ex.source and "200 images" in ex.source
    st = forward_state(make_path("discrete_vp"), ex, 0.0, seed=0)
    np.testing.assert_allclose(st["eigenvalues"], torch.linalg.eigvalsh(ex.cov0).flip(0).numpy(), atol=1e-9)


def test_the_picture_changes_with_t(curves):
    path = make_path("discrete_vp")
    a, b = (Image.open(io.BytesIO(forward_png(path, curves, u, seed=0))) for u in (0.05, 0.8))
    assert a.format == "PNG" and a.size == b.size and a.size[0] > 2 * a.size[1]  # three panels side by side
    assert not np.array_equal(np.asarray(a), np.asarray(b))
