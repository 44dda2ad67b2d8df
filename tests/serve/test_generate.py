"""The page's generation: ``kuosan sample``'s samples bit for bit (its step hook changes nothing), one report per
step, and a hook that raises stops the sampler's loop there."""

from __future__ import annotations

import pytest
import torch

from kuosan.build import load_denoiser
from kuosan.sampling import sample
from kuosan.serve.generate import draw


@pytest.mark.parametrize("sampler", ["ddim", "dpm++2m", "sde", "ddpm"])
def test_draw_equals_sample(curves_run, sampler):
    """Same sampler, steps, grid and seed: the same samples as kuosan.sampling.sample without a hook."""
    D, meta, _ = load_denoiser(curves_run)
    steps: list[int] = []
    got = draw(D, sampler, (5, 64), 6, seed=7, grid="uniform", on_step=lambda i, x, x0: steps.append(i))
    assert steps == list(range(6))
    want = sample(D, sampler, (5, 64), 6, seed=7)
    assert torch.equal(got, want)
    assert not torch.equal(got, draw(D, sampler, (5, 64), 6, seed=8))


def test_one_hook_per_step_and_the_last_state_is_the_result(curves_run):
    D, _, _ = load_denoiser(curves_run)
    seen: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    out = draw(D, "ddim", (3, 64), 7, seed=1, grid="logsnr", on_step=lambda i, x, x0: seen.append((i, x, x0)))
    assert [i for i, _, _ in seen] == list(range(7))
    assert all(x.shape == (3, 64) and x0.shape == (3, 64) for _, x, x0 in seen)
    assert torch.equal(seen[-1][1], out)  # DDIM's last step lands on x̂_0 at t = 0
    assert torch.equal(out, sample(D, "ddim", (3, 64), 7, seed=1, grid="logsnr"))


def test_a_raising_hook_stops_the_loop(curves_run):
    D, _, _ = load_denoiser(curves_run)
    calls: list[int] = []

    class Stop(Exception):
        pass

    def hook(i: int, x: torch.Tensor, x0: torch.Tensor) -> None:
        calls.append(i)
        if i == 2:
            raise Stop

    with pytest.raises(Stop):
        draw(D, "heun", (2, 64), 50, on_step=hook)
    assert calls == [0, 1, 2]
