"""Samplers: plain functions ``sampler(D, x_T, ts, *, generator, cond, progress, **options) -> x_0``.

``ts`` is a descending time grid ending at 0 (see :mod:`kuosan.samplers.grids`); a sampler with N
steps on an (N+1)-point grid. Count network evaluations with :class:`kuosan.denoiser.CountingDenoiser`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import Tensor

from ..denoiser import Denoiser
from .ddpm import ddim, ddpm
from .grids import SPACINGS, karras_grid, logsnr_grid, uniform_grid

SAMPLERS: dict[str, Callable[..., Tensor]] = {"ddpm": ddpm, "ddim": ddim}


def make_grid(D: Denoiser, steps: int, grid: str = "uniform", spacing: str = "trailing") -> Tensor:
    """The time grid named ``grid`` with ``steps`` model times for D's schedule."""
    sched = D.schedule
    if grid == "uniform":
        return uniform_grid(sched.T, steps, spacing)
    if grid == "logsnr":
        return logsnr_grid(sched, steps)
    if grid == "karras":
        return karras_grid(sched, steps)
    raise ValueError(f"unknown grid {grid!r}; choose one of uniform, logsnr, karras")


def sample(D: Denoiser, sampler: str, shape: tuple[int, ...], steps: int, *, seed: int = 0, batch_size: int = 256,
           device: torch.device | str = "cpu", grid: str = "uniform", spacing: str = "trailing",
           ts: Tensor | None = None, cond: dict[str, Any] | None = None, progress: bool = False,
           **opts: Any) -> Tensor:
    """Draw shape[0] samples with a named sampler; x_T comes from ``seed`` so results repeat. Returns CPU."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    fn = SAMPLERS[sampler]
    ts = make_grid(D, steps, grid, spacing) if ts is None else ts
    accepted = inspect.signature(fn).parameters
    opts = {k: v for k, v in opts.items() if k in accepted}  # e.g. eta only reaches DDIM
    device = torch.device(device)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    outs = []
    for i in range(0, shape[0], batch_size):
        c = {k: v[i:i + batch_size] for k, v in cond.items()} if cond else None
        outs.append(fn(D, x_T[i:i + batch_size].to(device), ts, generator=gen, cond=c, progress=progress,
                       **opts).cpu())
    return torch.cat(outs)


__all__ = ["SAMPLERS", "SPACINGS", "ddim", "ddpm", "karras_grid", "logsnr_grid", "make_grid", "sample",
           "uniform_grid"]
