"""kuosan.viz.curve: the step-by-step chain has the path's marginals and Markov covariances; the picture's values
end at N(0, 1) on every path; the PNG and GIF have their sizes and frames."""

import math

import pytest
import torch
from PIL import Image

from kuosan.paths import make_path
from kuosan.viz.curve import (HIST_BINS, curve_gif_frames, curve_story, diffuse_steps, draw_curve, frame_times,
                              smooth_curve, standardise)
from kuosan.viz.render import DPI, save_gif

PATHS = [("discrete_vp", {"schedule": "cosine"}), ("discrete_vp", {"schedule": "linear", "zero_terminal_snr": True}),
         ("vp_linear", {}), ("ve", {}), ("flow", {})]


@pytest.mark.parametrize("kind,kw", PATHS)
def test_the_chain_of_jumps_has_the_marginals_and_the_markov_covariance(kind, kw):
    """x_t = α_t x_0 + σ_t ε in law at every frame, and Cov[x_s, x_t] = (α_t/α_s) σ_s² for s < t."""
    path = make_path(kind, **kw)
    x0 = torch.linspace(-1, 1, 8, dtype=torch.float64)
    B = 20000
    ts = frame_times(path, 5)
    x = diffuse_steps(path, x0.expand(B, 8), ts, torch.Generator().manual_seed(0))  # (5, B, 8)
    a, s = path.alpha(ts), path.sigma(ts)
    m = B * 8
    for k in range(5):
        dev = x[k] - a[k] * x0
        assert dev.mean(0).abs().max() <= 5 * float(s[k]) / math.sqrt(B) + 1e-12
        assert abs(float((dev**2).mean()) - float(s[k]) ** 2) <= 6 * float(s[k]) ** 2 * math.sqrt(2 / m) + 1e-12
    for j, k in [(1, 2), (1, 4), (2, 3)]:
        cov = float(((x[j] - a[j] * x0) * (x[k] - a[k] * x0)).mean())
        want = float(a[k] / a[j] * s[j] ** 2)
        assert abs(cov - want) <= 6 * float(s[j] * s[k]) / math.sqrt(m), (j, k, cov, want)


@pytest.mark.parametrize("kind", ["discrete_vp", "ve", "flow"])
def test_story_values_end_at_a_standard_normal_and_arrays_match_the_path(kind):
    path = make_path(kind)
    x0 = 0.5 * torch.randn(4096, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    d = curve_story(x0, path, frames=6, seed=2)
    assert torch.equal(d["alpha"], path.alpha(d["t"])) and torch.equal(d["sigma"], path.sigma(d["t"]))
    assert torch.allclose(d["u"], torch.linspace(0, 1, 6, dtype=torch.float64))
    assert torch.equal(d["x"][0], d["x0"])  # frame 0 is the data itself
    z = d["z"][-1]  # at t_max: x/√(α² + σ²) is white noise (4096 draws)
    assert abs(float(z.mean())) < 5 / 64 and abs(float(z.std()) - 1) < 5 * math.sqrt(0.5 / 4096)
    assert d["hist"].shape == (6, HIST_BINS)
    width = d["hist_edges"][1] - d["hist_edges"][0]
    assert abs(d["hist"][-1].sum() * width - 1) < 1e-3  # a density: about all of N(0, 1) lies in [-4, 4]


def test_standardise_and_a_constant_signal():
    y = standardise(torch.arange(10.0, dtype=torch.float64) * 7 + 3)
    assert abs(float(y.mean())) < 1e-12 and abs(float(y.std()) - 0.5) < 1e-12
    with pytest.raises(ValueError, match="constant"):
        standardise(torch.ones(10, dtype=torch.float64))


def test_picture_and_animation_sizes(tmp_path):
    d = curve_story(smooth_curve(64), make_path("flow"), frames=3)
    draw_curve(d, tmp_path / "c.png", columns=3)
    save_gif(curve_gif_frames(d), tmp_path / "c.gif")
    with Image.open(tmp_path / "c.png") as im:
        assert im.size == (round(2.6 * 3 * DPI), round(4.6 * DPI))
    with Image.open(tmp_path / "c.gif") as im:
        assert im.n_frames == 3 and im.size == (9 * DPI, round(3.4 * DPI))
