"""One generation for the page: :func:`kuosan.sampling.sample` on one batch, reporting (x_t, x̂_0) after every step.

The page's samples are therefore ``kuosan sample RUN --seed S --n N``'s with the same sampler, steps and grid
(sample i depends only on (seed, i)). ``on_step`` may raise (the page's cancel button does) to stop the sampler's
loop at that step; it never changes the state.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..sampling import sample

StepHook = Callable[[int, Tensor, Tensor], None]  # (step index i, x after the step (n, *D), x̂_0 (n, *D)), on the CPU


def draw(D: Denoiser, sampler: str, shape: tuple[int, ...], steps: int, *, grid: str | None = None, seed: int = 0,
         cond: dict[str, Tensor] | None = None, device: str = "cpu", on_step: StepHook | None = None) -> Tensor:
    """Samples (shape[0], *shape[1:]) on the CPU; ``grid`` None is the default (the sampler's, else the path's:
    karras on VE, uniform elsewhere); ``on_step(i, x, x̂_0)`` after step i = 0..steps-1, with CPU copies."""

    def callback(i: int, x: Tensor, x0: Tensor) -> None:
        if on_step is not None:
            on_step(i, x.detach().cpu().clone(), x0.detach().cpu().clone())
        return None  # the state is left as the sampler made it

    with torch.no_grad():
        return sample(D, sampler, shape, steps, seed=seed, batch_size=shape[0], device=device, grid=grid, cond=cond,
                      callback=callback)
