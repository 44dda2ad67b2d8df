"""kuosan.viz.steps: the states a sampler reports are those of sample(): same start, same end, one per step."""

import pytest
import torch

from kuosan.exact import ExactDenoiser, ring
from kuosan.paths import make_path
from kuosan.sampling import make_grid, sample
from kuosan.viz.steps import sampler_states


@pytest.mark.parametrize("sampler,opts", [("ddim", {"eta": 1.0}), ("heun", {}), ("dpm++2m", {})])
def test_states_end_where_sample_does(sampler, opts):
    D = ExactDenoiser(ring(), make_path("vp_cosine"))
    st = sampler_states(D, sampler, 6, (10, 2), seed=4, options=opts)
    assert st["x"].shape == (7, 10, 2) and st["x0"].shape == (6, 10, 2)
    assert torch.equal(st["ts"], make_grid(D.path, 6))
    assert torch.equal(st["x"][-1], sample(D, sampler, (10, 2), 6, seed=4, **opts))  # bit for bit


def test_refusals():
    D = ExactDenoiser(ring(), make_path("flow"))
    with pytest.raises(ValueError, match="cannot run on this model's flow path"):
        sampler_states(D, "ddpm", 4, (2, 2))
    with pytest.raises(ValueError, match="does not take option 'eta'"):
        sampler_states(D, "heun", 4, (2, 2), options={"eta": 0.5})
    with pytest.raises(ValueError, match="kuosan sample"):
        sampler_states(D, "bespoke", 4, (2, 2))
