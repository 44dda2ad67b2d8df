"""kuosan.viz.covariance: the empirical Σ_t of x_t = α x_0 + σ ε is α²Σ_0 + σ²I within sampling error on every
path; signal is low rank and noise full rank; image patches are cut where they should be."""

import pytest
import torch
from PIL import Image

from kuosan.data import curves_covariance
from kuosan.paths import make_path
from kuosan.viz.covariance import closed_form, covariance_story, draw_covariance, rank_for, sample_cov, spectrum
from kuosan.viz.render import DPI
from kuosan.viz.sources import image_patches


def standard_errors(C, n):
    """Standard error of each entry of the sample covariance of n Gaussian draws with covariance C (..., D, D)."""
    d = torch.diagonal(C, dim1=-2, dim2=-1)
    return ((d[..., :, None] * d[..., None, :] + C**2) / (n - 1)).sqrt()


def curves(n, dim=16, seed=0):
    S = torch.as_tensor(curves_covariance(dim), dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(S).T, S


@pytest.mark.parametrize("kind,kw", [("discrete_vp", {"schedule": "cosine"}), ("ve", {}), ("flow", {}),
                                     ("vp_linear", {})])
def test_empirical_covariance_is_the_closed_form_within_sampling_error(kind, kw):
    x0, S = curves(3000)
    path = make_path(kind, **kw)
    d = covariance_story(x0, S, path, [0.0, 0.05, 0.3, 0.7, 1.0], seed=1)
    t = d["u"] * path.t_max
    a, s = path.alpha(t), path.sigma(t)
    want = a[:, None, None] ** 2 * S + s[:, None, None] ** 2 * torch.eye(16, dtype=torch.float64)
    assert torch.allclose(d["closed"], want, rtol=1e-12, atol=1e-12)
    z = (d["empirical"] - d["closed"]) / standard_errors(d["closed"], 3000)
    assert float(z.abs().max()) < 5.0, z.abs().amax((1, 2))
    assert abs(float(z.mean())) < 0.25  # no bias: the mean of 5 x 136 distinct standardised errors


def test_ends_of_the_path():
    x0, S = curves(10)
    d = covariance_story(x0, S, make_path("discrete_vp", schedule="linear", zero_terminal_snr=True), [0.0, 1.0])
    assert torch.allclose(d["closed"][0], S, atol=1e-12)  # t = 0: the data's own covariance
    assert torch.allclose(d["closed"][1], torch.eye(16, dtype=torch.float64), atol=1e-12)  # ᾱ_T = 0: white noise


def test_signal_is_low_rank_noise_full_rank():
    x0, S = curves(10, dim=64)
    d = covariance_story(x0, S, make_path("flow"), [0.5])
    assert d["rank99_signal"] <= 16 and d["rank99_noise"] == 64  # smooth curves: a few directions carry them
    assert torch.allclose(d["eig_signal"], torch.linalg.eigvalsh(S).flip(0))
    lam, U = torch.linalg.eigh(S)  # Σ_t shares Σ_0's eigenvectors: eigenvalues α²λ_i + σ²
    assert torch.allclose(d["eig_closed"][0], (0.25 * lam + 0.25).flip(0), atol=1e-12)
    assert rank_for(torch.tensor([4.0, 1.0, 0.0, 0.0]), 0.99) == 2 and rank_for(torch.ones(5), 0.99) == 5


def test_sample_cov_and_spectrum_conventions():
    x = torch.tensor([[1.0, 2.0], [3.0, 0.0], [5.0, 4.0]], dtype=torch.float64)
    c = x - x.mean(0)
    assert torch.allclose(sample_cov(x), c.T @ c / 2)
    assert spectrum(torch.diag(torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64))).tolist() == [3.0, 2.0, 1.0]
    assert closed_form(torch.eye(2, dtype=torch.float64), torch.tensor([0.5]), torch.tensor([2.0]))[0, 0, 0] == 4.25


def test_image_patches_are_contiguous_squares():
    N, C, H, W = 3, 2, 9, 7
    img = (torch.arange(N)[:, None, None, None] * 1000 + torch.arange(C)[None, :, None, None] * 100
           + torch.arange(H)[None, None, :, None] * 10 + torch.arange(W)[None, None, None, :]).double()
    p = image_patches(img, 3, 50, torch.Generator().manual_seed(0)).reshape(50, C, 3, 3)
    base = p[:, :1, :1, :1]
    offs = (torch.arange(C)[:, None, None] * 100 + torch.arange(3)[None, :, None] * 10 + torch.arange(3)[None, None])
    assert torch.equal(p - base, offs.double().expand(50, C, 3, 3))
    with pytest.raises(ValueError, match="does not fit"):
        image_patches(img, 8, 2, torch.Generator())


def test_picture_size(tmp_path):
    x0, S = curves(200, dim=8)
    d = covariance_story(x0, S, make_path("flow"), [0.0, 1.0])
    draw_covariance(d, tmp_path / "c.png")
    with Image.open(tmp_path / "c.png") as im:
        assert im.size == (round((2.4 * 2 + 4.2) * DPI), round(5.6 * DPI))
