"""Samplers on any Gaussian path: pure functions of a Denoiser, a registry of their specs, grids and ``sample()``.

A sampler is ``fn(D, x, ts, *, noise=None, cond=None, progress=False, callback=None, **options) -> x_0``: ``x`` is
the state at ts[0] (B, *D), ``ts`` a descending float64 grid from <= D.path.t_max down to exactly 0 (N steps on
N + 1 points, :mod:`.grids`), ``noise`` a :class:`NoiseSource` (per-sample streams; deterministic samplers ignore
it), ``callback(i, x, x̂_0)`` is called once per step; a tensor it returns replaces x (a projection after every
step, :mod:`kuosan.constraints`). Every sampler runs on every path with α(t_max) = 0 included
(each docstring says how it leaves σ̃ = ∞), except ancestral DDPM, which is defined on the discrete chain;
``SAMPLERS[name].supports(path)`` says why a sampler refuses a path. Count evaluations with
:class:`kuosan.denoiser.Counting`. A consistency model (a denoiser with ``kind = "consistency"``) runs only the
``consistency`` sampler (multistep consistency sampling, :mod:`.consistency`).
"""

from __future__ import annotations

from .ddpm import ddim, ddpm
from .dpm_solver import dpm_solver_2s, dpmpp, psi
from .consistency import consistency, default_levels, levels_grid
from .draw import NonFiniteSamplesError, WrongDenoiserError, check_denoiser_kind, sample
from .edm import euler, heun
from .grids import (GRID_KINDS, SPACINGS, check_grid, check_steps, default_grid, default_t_min, karras_grid,
                    logsnr_grid, make_grid, uniform_grid)
from .inversion import ddim_invert
from .noise import NoiseSource, row_seed
from .ode import ode
from .registry import SAMPLERS, SamplerSpec, check_options, get_sampler, register
from .sde import pc, sde
from .unipc import unipc

from . import tuning  # noqa: E402  (last: it registers the bespoke solver with the names above bound)

__all__ = ["GRID_KINDS", "SAMPLERS", "SPACINGS", "NoiseSource", "NonFiniteSamplesError", "SamplerSpec",
           "WrongDenoiserError", "check_denoiser_kind", "check_grid", "check_options", "check_steps", "consistency",
           "ddim", "ddim_invert", "ddpm", "default_grid", "default_levels", "default_t_min", "dpm_solver_2s", "dpmpp",
           "euler", "get_sampler", "heun", "karras_grid", "levels_grid", "logsnr_grid", "make_grid", "ode", "pc",
           "psi", "register", "row_seed", "sample", "sde", "tuning", "uniform_grid", "unipc"]
