"""The sampler step hook: ``callback(i, x, x̂_0)`` returning None changes nothing, returning a tensor replaces the
state. For every fixed-step sampler: a hook returning None or an equal copy gives bit-identical samples; a tensor
returned at the last step is the output; a change at step k leaves steps 0..k untouched and reaches the next
evaluation. The adaptive ode sampler honours it at its last step and refuses a replacement inside its integration."""

from __future__ import annotations

import pytest
import torch

from kuosan.exact import ExactDenoiser, GaussianMixture
from kuosan.paths import discrete_vp, make_path
from kuosan.sampling import SAMPLERS, NoiseSource, make_grid, ode

MIX = GaussianMixture(torch.tensor([[-1.0, 0.5], [1.0, -0.5]]), 0.1 * torch.eye(2).expand(2, 2, 2).clone(),
                      torch.tensor([0.6, 0.4]))
HOOKED = [name for name in SAMPLERS if name not in ("ode", "consistency")]  # consistency.py: its owner's hook
STEPS = 5


class Recorder:
    """The exact denoiser, recording every input it is called with."""

    def __init__(self, path):
        self.exact, self.path, self.inputs = ExactDenoiser(MIX, path), path, []

    def __call__(self, x_t, t, **cond):
        self.inputs.append(x_t.clone())
        return self.exact(x_t, t)


def run(name, hook_for):
    """The sampler's output and every denoiser input, with the hook ``hook_for(D)`` (None: no hook)."""
    path = make_path("vp_cosine") if SAMPLERS[name].supports(make_path("vp_cosine")) is None else \
        discrete_vp("linear", 1000)
    D = Recorder(path)
    noise = NoiseSource(0, 0, 4)
    x = noise(torch.empty(4, 2, dtype=torch.float64))
    out = SAMPLERS[name].fn(D, x, make_grid(path, STEPS, "uniform"), noise=noise,
                            callback=None if hook_for is None else hook_for(D))
    return out, D.inputs


@pytest.mark.parametrize("name", HOOKED)
def test_none_and_an_equal_copy_change_nothing(name):
    plain, _ = run(name, None)
    assert torch.equal(run(name, lambda D: lambda i, x, x0: None)[0], plain)
    assert torch.equal(run(name, lambda D: lambda i, x, x0: x.clone())[0], plain)


@pytest.mark.parametrize("name", HOOKED)
def test_a_tensor_at_the_last_step_is_the_output(name):
    c = torch.full((4, 2), 0.125, dtype=torch.float64)
    out, _ = run(name, lambda D: lambda i, x, x0: c if i == STEPS - 1 else None)
    assert torch.equal(out, c)


@pytest.mark.parametrize("name", HOOKED)
def test_a_replacement_reaches_the_next_evaluation_and_nothing_before(name):
    k, fired = 1, []

    def shift(D):
        def hook(i, x, x0):
            if i != k:
                return None
            fired.append(len(D.inputs))  # evaluations made before the hook of step k
            return x + 0.5
        return hook

    base, base_inputs = run(name, None)
    shifted, inputs = run(name, shift)
    m = fired[0]
    assert m >= k + 1 and all(torch.equal(a, b) for a, b in zip(base_inputs[:m], inputs[:m]))
    assert not torch.equal(inputs[m], base_inputs[m])  # the next evaluation sees the replaced state
    assert not torch.equal(shifted, base)


def test_ode_honours_the_last_step_and_refuses_a_replacement_inside():
    path = make_path("vp_cosine")
    D = ExactDenoiser(MIX, path)
    ts = make_grid(path, STEPS, "uniform")
    x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    plain = ode(D, x, ts, rtol=1e-4, atol=1e-4)
    assert torch.equal(ode(D, x, ts, rtol=1e-4, atol=1e-4, callback=lambda i, x_i, x0: x_i), plain)  # itself: fine
    c = torch.zeros(3, 2, dtype=torch.float64)
    last = ode(D, x, ts, rtol=1e-4, atol=1e-4, callback=lambda i, x_i, x0: c if i == STEPS - 1 else None)
    assert torch.equal(last, c)
    with pytest.raises(ValueError, match="cannot replace its state between grid points"):
        ode(D, x, ts, rtol=1e-4, atol=1e-4, callback=lambda i, x_i, x0: x_i + 1 if i == 1 else None)
