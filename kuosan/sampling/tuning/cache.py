"""Fit-or-load for a model: an optimised grid or a bespoke solver read from ``grid_dir`` (checked against the
denoiser's path), else fitted on calibration draws x_T ~ N(0, prior_std² I) and saved there.

Both fits are bounded to about ``FIT_SECONDS`` of wall time on a trained network (the issue: 8-25 minutes before):
the reference is DPM-Solver++(3M) on a ``REF_STEPS``-step logSNR grid, computed once per calibration batch; a
grid's times are first fitted by gradients (Adam through DPM-Solver++(2M), fit.optimise_solver with its
coefficients frozen), then refined for the requested sampler by the derivative-free search of optimise.py with
what is left of the time, started from that grid and the standard ones.
"""

from __future__ import annotations

import time
from pathlib import Path as FilePath
from typing import Any

import torch
from torch import Tensor

from ...denoiser import Denoiser
from .fit import optimise_solver
from .optimise import optimise_grid, resolve_sampler
from .store import load_grid, load_solver, save_grid, save_solver

GRID_CALIB_N = 128  # calibration draws for an optimised grid
BESPOKE_CALIB_N = 256  # calibration draws for fitting a bespoke solver to a model
REF_STEPS = 50  # DPM-Solver++(3M) steps of the reference (digits model: RMSE 0.010 from 500 steps; data RMS 0.85)
FIT_SECONDS = 50.0  # wall-time bound of one fit (reference included)


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


def reference_endpoint(D: Denoiser, x_cal: Tensor, ref_steps: int, progress: bool) -> Tensor:
    """The PF-ODE endpoints of x_cal by DPM-Solver++(3M) on a ``ref_steps``-step logSNR grid (the fits' target)."""
    from ..dpm_solver import dpmpp
    from ..grids import logsnr_grid

    return dpmpp(D, x_cal, logsnr_grid(D.path, ref_steps), order=3, progress=progress)


def grid_for(D: Denoiser, sampler: str, steps: int, grid_dir: str | FilePath | None = None, *,
             calib_n: int = GRID_CALIB_N, seed: int = 0, shape: tuple[int, ...] | None = None,
             device: torch.device | str = "cpu", progress: bool = True, seconds: float = FIT_SECONDS,
             ref_steps: int = REF_STEPS) -> Tensor:
    """The optimised grid of the registered deterministic ``sampler`` with ``steps`` steps for D.

    Read from ``grid_dir/<sampler>_<steps>.json`` if present (ValueError if it belongs to another path), else
    optimised on ``calib_n`` calibration draws in about ``seconds`` (module docstring; with progress bars) and
    saved there.
    """
    if sampler == "bespoke":
        raise ValueError("the bespoke solver fits its grid together with its coefficients: use bespoke_params")
    resolve_sampler(sampler, {})  # refuses unknown and stochastic samplers before any work
    file = grid_file(grid_dir, sampler, steps) if grid_dir is not None else None
    if file is not None and file.is_file():
        return load_grid(file, D.path)
    x_cal = calibration_batch(D, calib_n, seed, shape, device)
    t0 = time.time()
    ref = reference_endpoint(D, x_cal, ref_steps, progress)
    starts: list[Tensor] = []
    if steps >= 3 and calib_n >= 8:  # times by gradients, through DPM-Solver++(2M)
        left = seconds - (time.time() - t0)
        P = optimise_solver(D, steps, x_cal, reference=ref, train_coeffs=False, iters=100, lr=0.05,
                            batch_size=min(64, calib_n), val_frac=0.25, eval_every=5, patience=4, seed=seed,
                            seconds=0.6 * left, progress=progress)
        starts.append(P.ts)
    ts = optimise_grid(D, steps, x_cal, sampler=sampler, reference=ref, init_grids=starts, progress=progress,
                       seconds=max(seconds - (time.time() - t0), 0.0))
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        save_grid(file, ts, D.path, sampler, steps)
    return ts


def bespoke_params(D: Denoiser, steps: int, grid_dir: str | FilePath | None = None, *,
                   calib_n: int = BESPOKE_CALIB_N, seed: int = 0, shape: tuple[int, ...] | None = None,
                   device: torch.device | str = "cpu", progress: bool = True,
                   **fit: Any) -> tuple[Tensor, dict[str, Tensor]]:
    """Times and per-step coefficients of the bespoke solver for D: loaded from ``grid_dir/bespoke_<steps>.json``,
    else fitted (a light fit: REF_STEPS-step reference, batch ≤ 64, ≤ 300 Adam iterations in FIT_SECONDS;
    ``fit`` overrides optimise_solver's settings) and saved. Pass them on as ``sample(..., ts=ts, coeffs=coeffs)``.
    """
    file = grid_file(grid_dir, "bespoke", steps) if grid_dir is not None else None
    if file is not None and file.is_file():
        P = load_solver(file, D.path)
    else:
        x_cal = calibration_batch(D, calib_n, seed, shape, device)
        # lr 0.05 annealed over the iterations or the time bound, no early stopping: on the digits model at 5 NFE
        # FD 1.03x the reference, against 1.31x with lr 0.02 cut short by early stopping on the noisy validation
        settings = {"ref_steps": REF_STEPS, "batch_size": min(64, calib_n), "iters": 300, "lr": 0.05,
                    "seconds": FIT_SECONDS, **fit}
        P = optimise_solver(D, steps, x_cal, progress=progress, **settings)
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            save_solver(file, P, D.path)
    return P.ts, P.coeffs()
