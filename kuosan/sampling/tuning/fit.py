"""Fitting the bespoke solver (bespoke.py) to one denoiser: Adam on its endpoint error (Shaul et al. 2023 §3)."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor, nn

from ...denoiser import Denoiser
from ..grids import check_grid, check_steps, logsnr_grid
from .bespoke import COEFF_NAMES, SolverParams, solve, zero_coeffs
from .optimise import grid_from_params, params_from_grid, resolve_t_min, start_grids
from .progress import bar


def _trainable_weights(D: Any) -> list[nn.Parameter]:
    """The weights of a network denoiser (through wrappers' ``.inner``) that currently require gradients."""
    while not isinstance(D, nn.Module) and hasattr(D, "inner"):
        D = D.inner
    return [w for w in D.parameters() if w.requires_grad] if isinstance(D, nn.Module) else []


def optimise_solver(D: Denoiser, steps: int, x_cal: Tensor, *, reference: Tensor | None = None, ref_steps: int = 500,
                    iters: int = 2400, lr: float = 0.02, batch_size: int = 4096, history: int = 3,
                    hard_mix: float = 0.5, val_frac: float = 0.125, reg: float = 1e-3, t_min: float | None = None,
                    init_grid: Tensor | None = None, eval_every: int = 10, seed: int = 0,
                    cond: dict[str, Any] | None = None, progress: bool = False, train_coeffs: bool = True,
                    seconds: float | None = None, patience: int | None = None) -> SolverParams:
    """Fit times and coefficients by Adam on MSE(bespoke(D, x_cal), reference) (Shaul et al. 2023 §3).

    x_cal is split into a training part (minibatches of ``batch_size``) and a validation slice (``val_frac``)
    used for early stopping: the returned parameters are those with the lowest validation RMSE seen, the start
    (best of the uniform-trailing/logSNR/Karras grids and ``init_grid``, e.g. an optimise_grid result, with
    DPM-Solver++(2M) coefficients) included. ``history`` is K, the number of x̂_0 differences each step weighs.
    The endpoint error of multimodal data is carried by the few trajectories near basin boundaries, so the fit
    needs thousands of calibration points and many iterations (measured on a 2-D and a 32-dim mixture at 10 NFE:
    with 16k-32k points and batch 4096 the held-out error keeps falling up to ~2400 iterations: on the 32-dim one
    0.058/0.039 (4k points, batch 1024, 300 iterations) -> 0.033 (600) -> 0.027 (1200) -> 0.021 (2400);
    float32 fits as well as float64 in half the time).
    ``reference`` defaults to DPM-Solver++(3M) on a ``ref_steps``-step logSNR grid. ``reg`` weighs an L2
    penalty on the coefficients (relative to the start's MSE) against over-fitting the calibration batch.
    ``hard_mix`` is the share of minibatch draws made in proportion to each point's last error (importance
    sampling, reweighted so the objective is unchanged); 0 draws uniformly. ``progress`` shows a bar over the
    Adam iterations with the best validation RMSE so far. ``train_coeffs=False`` keeps DPM-Solver++(2M)'s
    coefficients and fits the times only (an optimised grid by gradients). ``seconds`` bounds the wall time and
    ``patience`` stops after that many validations without a 0.1% gain (early stopping).
    """
    check_steps(steps)
    if steps < 3:
        raise ValueError(f"a bespoke solver needs at least 3 steps, got {steps}")
    path = D.path
    t_min = resolve_t_min(path, t_min)
    if not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters must be a non-negative integer, got {iters!r}")
    if not (0.0 < val_frac < 1.0):
        raise ValueError(f"val_frac must lie in (0, 1), got {val_frac!r}")
    n_val = round(val_frac * x_cal.shape[0])
    if x_cal.ndim < 2 or n_val < 1 or x_cal.shape[0] - n_val < 1:
        raise ValueError(f"the calibration batch needs a batch axis with room for a validation slice, got "
                         f"shape {tuple(x_cal.shape)}")
    if not (0.0 <= hard_mix < 1.0):
        raise ValueError(f"hard_mix must lie in [0, 1), got {hard_mix!r}")
    if lr <= 0 or reg < 0 or batch_size < 1 or eval_every < 1:
        raise ValueError(f"need lr > 0, reg >= 0, batch_size >= 1 and eval_every >= 1, got {lr!r}, {reg!r}, "
                         f"{batch_size!r}, {eval_every!r}")
    cond = cond or {}
    t0 = time.time()
    if reference is None:
        from ..dpm_solver import dpmpp

        reference = dpmpp(D, x_cal, logsnr_grid(path, ref_steps, t_min=t_min), order=3, cond=cond, progress=progress)
    if reference.shape != x_cal.shape:
        raise ValueError(f"reference shape {tuple(reference.shape)} differs from the calibration batch "
                         f"{tuple(x_cal.shape)}")
    x_tr, r_tr, x_va, r_va = x_cal[n_val:], reference[n_val:], x_cal[:n_val], reference[:n_val]

    def sub(cnd: dict[str, Any], sl: slice | Tensor) -> dict[str, Any]:
        return {k: v[sl] for k, v in cnd.items()}

    c_tr, c_va = sub(cond, slice(n_val, None)), sub(cond, slice(0, n_val))

    @torch.no_grad()
    def val_rmse(ts: Tensor, co: dict[str, Tensor]) -> float:
        try:
            check_grid(ts, path)
        except ValueError:
            return math.inf
        err = float((solve(D, x_va, ts, co, c_va) - r_va).double().pow(2).mean().sqrt())
        return err if math.isfinite(err) else math.inf

    starts = start_grids(path, steps, t_min) + ([torch.as_tensor(init_grid, dtype=torch.float64)]
                                                if init_grid is not None else [])
    zero = zero_coeffs(steps, history)
    best_ts = min(starts, key=lambda g: val_rmse(g, zero))
    theta = params_from_grid(path, best_ts, t_min, free_end=True).clone().requires_grad_(True)
    co = {k: v.clone().requires_grad_(train_coeffs) for k, v in zero.items()}
    best = (val_rmse(grid_from_params(path, theta.detach(), steps, t_min), zero), theta.detach().clone(),
            {k: v.clone() for k, v in zero.items()}, 0)
    start_val = best[0]
    opt = torch.optim.Adam([theta, *(co.values() if train_coeffs else ())], lr=lr)
    g = torch.Generator().manual_seed(seed)
    mse0 = max(start_val, 1e-12) ** 2
    n_tr = x_tr.shape[0]
    # Per-point squared errors of the training part (refreshed as points are drawn): the MSE is dominated by the
    # few trajectories near basin boundaries, so minibatches draw points with p_i = (1-mix)/n + mix·err_i/Σerr
    # and weigh them by 1/(n p_i), an unbiased estimate of the full-batch MSE with far less variance.
    with torch.no_grad():
        err = (solve(D, x_tr, grid_from_params(path, theta.detach(), steps, t_min), zero, c_tr) - r_tr)
        err = err.double().pow(2).flatten(1).mean(1).cpu()  # (n_tr,); draws are made on the CPU generator g
    # only the solver is trained: a network denoiser's own weights are frozen meanwhile (no grads kept for them)
    frozen = _trainable_weights(D)
    for w in frozen:
        w.requires_grad_(False)
    pbar = bar(progress, total=iters, desc=f"fitting a {steps}-step bespoke solver")
    pbar.set_postfix(val_rmse=f"{start_val:.3e}", refresh=False)
    it = gained = 0
    try:
        for it in range(1, iters + 1):
            p = (1 - hard_mix) / n_tr + hard_mix * err / err.sum().clamp_min(1e-300)
            idx = torch.multinomial(p, min(batch_size, n_tr), replacement=True, generator=g)
            ts = grid_from_params(path, theta, steps, t_min)
            idx_x = idx.to(x_tr.device)
            out = solve(D, x_tr[idx_x], ts, co, sub(c_tr, idx_x))
            e_i = (out - r_tr[idx_x]).double().pow(2).flatten(1).mean(1)  # (batch,) on the data's device
            w_i = (n_tr * p[idx]).to(e_i.device)  # importance weights undo the non-uniform draws
            loss = (e_i / w_i).mean() / mse0 + reg * sum(v.pow(2).sum() for v in co.values())
            opt.zero_grad()
            if not bool(torch.isfinite(loss)):
                break  # a diverged step: keep the best parameters so far
            err[idx] = e_i.detach().cpu()
            loss.backward()
            opt.step()
            # cosine decay of the rate over the run: its share of ``iters`` or of ``seconds``, whichever is larger,
            # so a run cut short by the time bound still ends annealed
            done = max(it / max(iters, 1), 0.0 if seconds is None else (time.time() - t0) / max(seconds, 1e-9))
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
            pbar.update()
            out_of_time = seconds is not None and time.time() - t0 > seconds
            if it % eval_every == 0 or it == iters or out_of_time:
                cur = {k: v.detach().clone() for k, v in co.items()}
                v = val_rmse(grid_from_params(path, theta.detach(), steps, t_min), cur)
                if v < (1 - 1e-3) * best[0]:  # a gain of 0.1% resets the patience
                    gained = it
                if v < best[0]:
                    best = (v, theta.detach().clone(), cur, it)
                    pbar.set_postfix(val_rmse=f"{v:.3e}", refresh=False)
                if out_of_time or (patience is not None and it - gained >= patience * eval_every):
                    break
    finally:
        pbar.close()
        for w in frozen:
            w.requires_grad_(True)
    ts = grid_from_params(path, best[1], steps, t_min).detach()
    check_grid(ts, path)
    info = {"val_rmse": best[0], "start_val_rmse": start_val, "best_iter": best[3], "iters_run": it,
            "seconds": time.time() - t0,
            "n_train": int(x_tr.shape[0]), "n_val": n_val}
    return SolverParams(ts, *(best[2][k] for k in COEFF_NAMES), info=info)
