"""Fit-or-load for a model: an optimised grid or a bespoke solver read from ``grid_dir`` (checked against the
denoiser's path), else fitted on calibration draws x_T ~ N(0, prior_std² I) and saved there."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Any

import torch
from torch import Tensor

from ...denoiser import Denoiser
from .fit import optimise_solver
from .optimise import optimise_grid, resolve_sampler
from .store import load_grid, load_solver, save_grid, save_solver

GRID_CALIB_N = 256  # calibration draws for an optimised grid
BESPOKE_CALIB_N = 512  # calibration draws for fitting a bespoke solver to a model


def grid_file(grid_dir: str | FilePath, sampler: str, steps: int) -> FilePath:
    """Where the grid of ``sampler`` with ``steps`` steps lives ('+' spelled 'p': dpm++2m -> dpmpp2m_10.json)."""
    return FilePath(grid_dir) / f"{sampler.replace('+', 'p')}_{steps}.json"


def calibration_batch(D: Denoiser, n: int, seed: int, shape: tuple[int, ...] | None,
                      device: torch.device | str) -> Tensor:
    """n draws of x_T (shape[1:] each) from seed 10000 + seed (the evaluation x_T never comes from this stream)."""
    if shape is None:
        raise ValueError("fitting a grid or solver needs the sample shape")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"the number of calibration draws must be a positive integer, got {n!r}")
    x = torch.randn((n, *shape[1:]), generator=torch.Generator().manual_seed(10_000 + seed))
    return (D.path.prior_std * x).to(device)


def grid_for(D: Denoiser, sampler: str, steps: int, grid_dir: str | FilePath | None = None, *,
             calib_n: int = GRID_CALIB_N, seed: int = 0, shape: tuple[int, ...] | None = None,
             device: torch.device | str = "cpu", progress: bool = True) -> Tensor:
    """The optimised grid of the registered deterministic ``sampler`` with ``steps`` steps for D.

    Read from ``grid_dir/<sampler>_<steps>.json`` if present (ValueError if it belongs to another path), else
    optimised on ``calib_n`` calibration draws (with a progress bar) and saved there.
    """
    if sampler == "bespoke":
        raise ValueError("the bespoke solver fits its grid together with its coefficients: use bespoke_params")
    resolve_sampler(sampler, {})  # refuses unknown and stochastic samplers before any work
    file = grid_file(grid_dir, sampler, steps) if grid_dir is not None else None
    if file is not None and file.is_file():
        return load_grid(file, D.path)
    x_cal = calibration_batch(D, calib_n, seed, shape, device)
    ts = optimise_grid(D, steps, x_cal, sampler=sampler, progress=progress)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        save_grid(file, ts, D.path, sampler, steps)
    return ts


def bespoke_params(D: Denoiser, steps: int, grid_dir: str | FilePath | None = None, *,
                   calib_n: int = BESPOKE_CALIB_N, seed: int = 0, shape: tuple[int, ...] | None = None,
                   device: torch.device | str = "cpu", progress: bool = True,
                   **fit: Any) -> tuple[Tensor, dict[str, Tensor]]:
    """Times and per-step coefficients of the bespoke solver for D: loaded from ``grid_dir/bespoke_<steps>.json``,
    else fitted (a light fit: 200-step reference, batch ≤ 128, 300 Adam iterations; ``fit`` overrides
    optimise_solver's settings) and saved. Pass them on as ``sample(..., ts=ts, coeffs=coeffs)``."""
    file = grid_file(grid_dir, "bespoke", steps) if grid_dir is not None else None
    if file is not None and file.is_file():
        P = load_solver(file, D.path)
    else:
        x_cal = calibration_batch(D, calib_n, seed, shape, device)
        settings = {"ref_steps": 200, "batch_size": min(128, calib_n), "iters": 300, **fit}
        P = optimise_solver(D, steps, x_cal, progress=progress, **settings)
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            save_solver(file, P, D.path)
    return P.ts, P.coeffs()
