"""Samplers: plain functions ``sampler(D, x_T, ts, *, generator, cond, progress, **options) -> x_0``.

``ts`` is a descending time grid ending at 0 (see :mod:`kuosan.samplers.grids`); a sampler with N
steps on an (N+1)-point grid. Count network evaluations with :class:`kuosan.denoiser.CountingDenoiser`.
"""

from .ddpm import ddim, ddpm
from .grids import SPACINGS, karras_grid, logsnr_grid, uniform_grid

SAMPLERS = {"ddpm": ddpm, "ddim": ddim}

__all__ = ["SAMPLERS", "SPACINGS", "ddim", "ddpm", "karras_grid", "logsnr_grid", "uniform_grid"]
