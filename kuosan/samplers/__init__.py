"""Samplers: plain functions ``sampler(D, x_T, ts, *, generator, cond, progress, **options) -> x_0``.

``ts`` is a descending time grid ending at 0 (see :mod:`kuosan.samplers.grids`); a sampler with N
steps on an (N+1)-point grid. Count network evaluations with :class:`kuosan.denoiser.CountingDenoiser`.
"""

from __future__ import annotations

import inspect
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ..denoiser import CountingDenoiser, Denoiser
from .ddpm import ddim, ddpm
from .bespoke import bespoke, load_solver, optimise_solver, save_solver
from .dpm_solver import dpm_solver_2s, dpmpp
from .edm import euler, heun
from .grids import SPACINGS, karras_grid, logsnr_grid, uniform_grid
from .inversion import ddim_invert
from .ode import ode
from .optimise import load_grid, optimise_grid, save_grid
from .sde import pc, sde
from .unipc import unipc

SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": ddpm, "ddim": ddim, "dpm++2m": partial(dpmpp, order=2), "dpm++3m": partial(dpmpp, order=3),
    "dpm2s": dpm_solver_2s, "unipc": partial(unipc, order=2), "unipc3": partial(unipc, order=3), "heun": heun,
    "euler": euler, "ode": ode, "sde": sde, "pc": pc, "bespoke": bespoke,
}
GRIDS = ("uniform", "logsnr", "karras", "optimised")
BESPOKE_CALIB_N = 512  # calibration draws for fitting a bespoke solver to a model
DETERMINISTIC = ("ddim", "dpm++2m", "dpm++3m", "dpm2s", "unipc", "unipc3", "heun", "euler")  # can be optimised


def make_grid(D: Denoiser, steps: int, grid: str = "uniform", spacing: str = "trailing", *,
              sampler: str = "ddim", grid_dir: str | Path | None = None, calib_n: int = 256, seed: int = 0,
              shape: tuple[int, ...] | None = None, device: torch.device | str = "cpu") -> Tensor:
    """The time grid named ``grid`` with ``steps`` model times for D's schedule.

    ``optimised``: read ``grid_dir/<sampler>_<steps>.json`` if present (checked against the schedule), else
    optimise one for this denoiser, sampler and budget on ``calib_n`` calibration draws and save it there.
    """
    sched = D.schedule
    if grid == "optimised" and sampler == "bespoke":
        raise ValueError("the bespoke solver fits its grid together with its coefficients: use bespoke_params")
    if grid == "optimised":
        if sampler not in DETERMINISTIC:
            raise ValueError(f"an optimised grid needs a deterministic sampler ({', '.join(DETERMINISTIC)}), "
                             f"not {sampler!r}")
        path = Path(grid_dir) / f"{sampler.replace('+', 'p')}_{steps}.json" if grid_dir is not None else None
        if path is not None and path.is_file():
            return load_grid(path, sched)
        if shape is None:
            raise ValueError("optimising a grid needs the sample shape")
        x_cal = torch.randn((calib_n, *shape[1:]), generator=torch.Generator().manual_seed(10_000 + seed))
        ts = optimise_grid(D, steps, x_cal.to(device), sampler=SAMPLERS[sampler])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_grid(path, ts, sched, sampler, steps)
        return ts
    if grid == "uniform":
        return uniform_grid(sched.T, steps, spacing)
    if grid == "logsnr":
        return logsnr_grid(sched, steps)
    if grid == "karras":
        return karras_grid(sched, steps)
    raise ValueError(f"unknown grid {grid!r}; choose one of {', '.join(GRIDS)}")


def bespoke_params(D: Denoiser, steps: int, grid_dir: str | Path | None, calib_n: int, seed: int,
                    shape: tuple[int, ...] | None, device: torch.device | str) -> tuple[Tensor, dict[str, Tensor]]:
    """Times and per-step coefficients of the bespoke solver for D: loaded from grid_dir, else fitted and saved."""
    path = Path(grid_dir) / f"bespoke_{steps}.json" if grid_dir is not None else None
    if path is not None and path.is_file():
        P = load_solver(path, D.schedule)
    else:
        if shape is None:
            raise ValueError("fitting a bespoke solver needs the sample shape")
        x_cal = torch.randn((calib_n, *shape[1:]), generator=torch.Generator().manual_seed(10_000 + seed))
        P = optimise_solver(D, steps, x_cal.to(device), ref_steps=200, batch_size=min(128, calib_n), iters=300)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_solver(path, P, D.schedule)
    return P.ts, P.coeffs()


def sample(D: Denoiser, sampler: str, shape: tuple[int, ...], steps: int, *, seed: int = 0, batch_size: int = 256,
           device: torch.device | str = "cpu", grid: str = "uniform", spacing: str = "trailing",
           ts: Tensor | None = None, cond: dict[str, Any] | None = None, progress: bool = False,
           grid_dir: str | Path | None = None, stats: dict[str, Any] | None = None, **opts: Any) -> Tensor:
    """Draw shape[0] samples with a named sampler; x_T comes from ``seed`` so results repeat. Returns CPU.

    ``stats``, if given, receives the grid used and the NFE per batch.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    fn = SAMPLERS[sampler]
    if sampler == "bespoke" and grid == "optimised" and ts is None and "coeffs" not in opts:
        ts, opts["coeffs"] = bespoke_params(D, steps, grid_dir, BESPOKE_CALIB_N, seed, shape, device)
    if ts is None:
        ts = make_grid(D, steps, grid, spacing, sampler=sampler, grid_dir=grid_dir, seed=seed, shape=shape,
                       device=device)
    counter = CountingDenoiser(D)
    accepted = inspect.signature(fn).parameters
    opts = {k: v for k, v in opts.items() if k in accepted}  # e.g. eta only reaches DDIM
    device = torch.device(device)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    outs = []
    for i in range(0, shape[0], batch_size):
        c = {k: v[i:i + batch_size] for k, v in cond.items()} if cond else None
        outs.append(fn(counter, x_T[i:i + batch_size].to(device), ts, generator=gen, cond=c, progress=progress,
                       **opts).cpu())
    if stats is not None:
        stats.update(grid=ts, nfe=counter.nfe // max(1, len(outs)))
    return torch.cat(outs)


__all__ = ["GRIDS", "SAMPLERS", "SPACINGS", "bespoke", "bespoke_params", "ddim", "ddim_invert", "ddpm",
           "dpm_solver_2s", "dpmpp", "euler", "heun", "karras_grid", "load_grid", "load_solver", "logsnr_grid",
           "make_grid", "ode", "optimise_grid", "optimise_solver", "pc", "sample", "save_grid", "save_solver", "sde",
           "uniform_grid", "unipc"]
