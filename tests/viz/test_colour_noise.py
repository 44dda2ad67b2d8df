"""kuosan.viz.colour_noise: both factors square to the target; the coloured noise's covariance goes to the target
within sampling error, at rate n^-1/2; a singular target has an eigen factor but no Cholesky factor."""

import math

import pytest
import torch
from PIL import Image

from kuosan.data import curves_covariance
from kuosan.viz.colour_noise import (NotPositiveDefinite, cholesky_factor, colour_noise_story, draw_colour_noise,
                                     eigen_factor)
from kuosan.viz.render import DPI


def target(dim=12):
    return torch.as_tensor(curves_covariance(dim), dtype=torch.float64)


def test_factors_square_to_the_target():
    S = target()
    A, L = eigen_factor(S), cholesky_factor(S)
    assert torch.allclose(A @ A.T, S, atol=1e-12) and torch.allclose(A, A.T, atol=1e-12)  # the symmetric root
    assert torch.allclose(L @ L.T, S, atol=1e-12) and torch.equal(L, L.tril())


def test_coloured_covariances_reach_the_target_within_sampling_error():
    S, n = target(), 6000
    d = colour_noise_story(S, n, seed=3)
    diag = torch.diagonal(S)
    se = ((diag[:, None] * diag[None] + S**2) / (n - 1)).sqrt()  # Gaussian sample-covariance standard errors
    for key in ("cov_eigen", "cov_cholesky"):
        assert float(((d[key] - S) / se).abs().max()) < 5.0, key
    eye = torch.eye(len(S), dtype=torch.float64)
    assert float(((d["cov_white"] - eye) / ((1 + eye) / (n - 1)).sqrt()).abs().max()) < 5.0
    assert torch.allclose(d["eigen"], d["white"] @ d["factor_eigen"].T)  # the same z coloured twice
    assert torch.allclose(d["cholesky"], d["white"] @ d["factor_cholesky"].T)
    assert not torch.allclose(d["eigen"], d["cholesky"])  # different draws, one distribution
    for key in ("err_eigen", "err_cholesky"):  # the error falls like n^-1/2: ~24x from 10 to 6000 draws
        err, ns = d[key], d["ns"]
        assert err[-1] < err[0] * 4 * math.sqrt(ns[0] / ns[-1]) and err[-1] < 0.08


def test_singular_target_eigen_yes_cholesky_no():
    u = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    S = u @ u.T  # rank 2
    A = eigen_factor(S)
    assert torch.allclose(A @ A.T, S, atol=1e-10)
    with pytest.raises(NotPositiveDefinite, match="not positive definite"):
        cholesky_factor(S)


def test_picture_size(tmp_path):
    d = colour_noise_story(target(8), 50)
    draw_colour_noise(d, tmp_path / "n.png")
    with Image.open(tmp_path / "n.png") as im:
        assert im.size == (13 * DPI, 6 * DPI)
