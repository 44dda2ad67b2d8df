"""kuosan.viz.trajectory: straightness of known curves, the exact ODE paths against the closed-form Gaussian flow,
a converged sampler landing on them, and the PNG / GIF."""

import math

import pytest
import torch
from PIL import Image

from kuosan.exact import ExactDenoiser, gaussian, ring
from kuosan.paths import make_path, ve_sigma
from kuosan.viz.render import DPI, save_gif
from kuosan.viz.steps import sampler_states
from kuosan.viz.trajectory import (draw_trajectories, exact_paths, reference_points, straightness, trajectory_frames,
                                   trajectory_story)


def test_straightness_of_a_line_and_a_quarter_circle():
    u = torch.linspace(1, 0, 2001, dtype=torch.float64)  # descending, like a sampler's grid on t_max = 1
    line = torch.stack([3 * u, -u], -1)[:, None]  # (N+1, 1, 2) constant speed
    assert straightness(line, u, 1.0) < 1e-20
    arc = torch.stack([torch.cos(math.pi / 2 * u), torch.sin(math.pi / 2 * u)], -1)[:, None]
    # ∫‖x'‖² du - ‖x(1) - x(0)‖² = π²/4 - 2 for the unit quarter circle at constant angular speed
    assert abs(straightness(arc, u, 1.0) - (math.pi**2 / 4 - 2)) < 1e-5


@pytest.mark.parametrize("kind", ["flow", "discrete_vp", "ve"])
def test_exact_paths_follow_the_gaussian_flow_in_closed_form(kind):
    """For x_0 ~ N(μ, s² I) the PF-ODE in y = x/α is
    y(σ̃) = μ + (y_0 - μ) √(s² + σ̃²)/√(s² + σ̃_0²)."""
    mu, s = torch.tensor([1.0, -0.5], dtype=torch.float64), 0.3
    path = make_path(kind)
    ts = torch.tensor([path.t_max, 0.6 * path.t_max, 0.1 * path.t_max, 0.0], dtype=torch.float64)
    x_T = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * path.prior_std
    ex, fine = exact_paths(gaussian(mu, s**2 * torch.eye(2, dtype=torch.float64)), path, x_T, ts, refine=2)
    assert ex.shape == (7, 5, 2) and torch.equal(fine[::2], ts)
    a, sig = path.alpha(fine), ve_sigma(path, fine)
    if float(a[0]) == 0:  # starts at σ̃ = ∞: (y - μ)/√(s² + σ̃²) -> x_T / σ(t_max)
        start = x_T / path.sigma(fine[0])
    else:
        start = (x_T / a[0] - mu) / math.sqrt(s**2 + float(sig[0]) ** 2)
    root = (a**2 * s**2 + path.sigma(fine) ** 2).sqrt()  # α √(s² + σ̃²), finite where α = 0
    want = a[:, None, None] * mu + root[:, None, None] * start
    assert torch.allclose(ex, want, atol=2e-4 * path.prior_std), (ex - want).abs().max()


def test_heun_converges_to_the_exact_paths_at_second_order(tmp_path):
    mix, path = ring(k=4, std=0.3), make_path("flow")
    errs = []
    for steps in (20, 40):
        st = sampler_states(ExactDenoiser(mix, path), "heun", steps, (12, 2), seed=1)
        d = trajectory_story(st, path, mix, refine=1)
        assert d["exact"].shape == d["x"].shape and torch.equal(d["exact"][0], d["x"][0].double())
        errs.append(float((d["exact"] - d["x"]).abs().max()))  # over every grid time
    assert errs[0] < 0.02 and errs[1] < errs[0] / 3, errs  # halving h quarters the error (3.7x measured)
    assert abs(d["straightness"] - d["exact_straightness"]) < 0.05 * d["exact_straightness"]
    ref = reference_points(mix, None, n=50)
    draw_trajectories([d, d], ["a", "b"], tmp_path / "t.png", ref)
    with Image.open(tmp_path / "t.png") as im:
        assert im.size == (round(2 * 4.8 * DPI), round(5.4 * DPI))


def test_animation_has_a_frame_per_step(tmp_path):
    path = make_path("ve")
    st = sampler_states(ExactDenoiser(ring(), path), "euler", 3, (5, 2), grid="karras")
    d = trajectory_story(st, path)
    assert "exact" not in d and float(d["scale"][0]) > 70  # VE states drawn as x/√(1 + σ²)
    save_gif(trajectory_frames([d], ["ve"]), tmp_path / "t.gif")
    with Image.open(tmp_path / "t.gif") as im:
        assert im.n_frames == 4


def test_only_2d_models():
    st = {"ts": torch.tensor([1.0, 0.0]), "x": torch.zeros(2, 3, 4), "x0": torch.zeros(1, 3, 4)}
    with pytest.raises(ValueError, match="2-D data"):
        trajectory_story(st, make_path("flow"))
