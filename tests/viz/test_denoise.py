"""kuosan.viz.denoise: the columns hold x_t entering each chosen step and the denoiser's x̂_0 there."""

import pytest
import torch
from PIL import Image

from kuosan.exact import ExactDenoiser, GaussianMixture
from kuosan.paths import make_path
from kuosan.viz.denoise import denoise_story, draw_denoise, pick_steps
from kuosan.viz.render import DPI
from kuosan.viz.steps import sampler_states


def test_pick_steps():
    assert pick_steps(10, 4) == [0, 3, 6, 9] and pick_steps(3, 8) == [0, 1, 2] and pick_steps(2, 2) == [0, 1]


def test_columns_are_x_t_and_its_x0_hat(tmp_path):
    g = torch.Generator().manual_seed(0)
    mix = GaussianMixture(torch.randn(3, 16, generator=g, dtype=torch.float64) * 0.5,
                          0.05 * torch.eye(16, dtype=torch.float64).expand(3, 16, 16), torch.ones(3))
    path = make_path("ve")  # x_t far outside [-1, 1]: drawn divided by √(1 + σ²)
    D = ExactDenoiser(mix, path)  # images (B, 1, 4, 4) are flattened to the mixture's 16 dimensions
    st = sampler_states(D, "dpm++2m", 7, (2, 1, 4, 4), seed=3)
    d = denoise_story(st, path, columns=4)
    assert d["steps"].tolist() == [0, 2, 4, 6] and d["xt"].shape == (4, 2, 1, 4, 4)
    for c, i in enumerate(d["steps"]):
        t = st["ts"][i]
        scale = float((path.alpha(t) ** 2 + path.sigma(t) ** 2).sqrt())
        assert torch.allclose(d["xt"][c] * scale, st["x"][i], rtol=1e-6)
        assert torch.allclose(d["x0"][c], D(st["x"][i], t.expand(2)).float(), atol=1e-5)
    assert torch.equal(d["sample"], st["x"][-1])
    draw_denoise(d, tmp_path / "d.png")
    with Image.open(tmp_path / "d.png") as im:
        assert im.size == (round(5 * 1.0 * DPI + 0.6 * DPI), round(4 * 1.0 * DPI + 0.9 * DPI))


def test_only_image_models():
    st = {"ts": torch.tensor([1.0, 0.0]), "x": torch.zeros(2, 3, 2), "x0": torch.zeros(1, 3, 2)}
    with pytest.raises(ValueError, match="image model"):
        denoise_story(st, make_path("flow"))
