"""Every state of a sampler run: x at each grid time and the denoiser's x̂_0 at each step, through the samplers'
``callback(i, x, x̂_0)`` (kuosan.sampling), from the same per-sample noise as ``kuosan.sampling.sample``."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..paths import PathError

# samplers whose options kuosan computes for a model (Analytic-DPM's table, the bespoke coefficients): `kuosan
# sample` fits them; a picture does not
NEEDS_FITTING = {"bespoke": "fitted solver coefficients"}


def sampler_states(D: Denoiser, sampler: str, steps: int, shape: tuple[int, ...], *, seed: int = 0,
                   grid: str | None = None, spacing: str | None = None, options: Mapping[str, Any] | None = None,
                   cond: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Run ``sampler`` on shape[0] samples; returns ts (N+1,) the grid, x (N+1, *shape) the states at ts
    (x[0] = x_T, x[N] the samples) and x0 (N, *shape) the denoiser's x̂_0 at ts[0..N-1] (float32, CPU).
    Sample i starts from the noise stream (seed, i), exactly as ``sample()`` draws it; grid and spacing as
    ``sample()`` takes them."""
    from ..sampling import NoiseSource, check_options, get_sampler, make_grid
    from ..sampling.grids import grid_kind

    spec = get_sampler(sampler)
    if sampler in NEEDS_FITTING:
        raise ValueError(f"sampler {sampler!r} needs {NEEDS_FITTING[sampler]}; draw its samples with kuosan sample")
    if (options or {}).get("variance") == "analytic":
        raise ValueError("--variance analytic needs a table estimated from data; use kuosan sample for it")
    reason = spec.supports(D.path)
    if reason is not None:
        raise PathError(f"sampler {sampler!r} cannot run on this model's {D.path.kind} path: {reason}")
    opts = check_options(spec, dict(options or {}))
    ts = make_grid(D.path, steps, grid_kind(D.path, grid, spacing), spacing or "trailing")
    n = shape[0]
    noise = NoiseSource(seed, 0, n)
    x_T = D.path.prior_std * noise(torch.empty(shape, dtype=torch.float32))
    xs, x0s = [x_T.cpu()], []

    def keep(i: int, x: Tensor, x0: Tensor) -> None:
        xs.append(x.detach().float().cpu().clone())
        x0s.append(x0.detach().float().cpu().clone())

    with torch.no_grad():
        spec.fn(D, x_T, ts, noise=noise, cond=cond or {}, progress=False, callback=keep, **opts)
    if len(x0s) != steps:  # an adaptive solver reports its grid points, not its internal steps
        raise RuntimeError(f"sampler {sampler!r} reported {len(x0s)} steps, expected {steps}")
    return {"ts": ts, "x": torch.stack(xs), "x0": torch.stack(x0s)}
