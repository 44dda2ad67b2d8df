"""Bespoke multistep solver: model times, query noise levels and per-step coefficients fitted to one model.

In the spirit of Shaul et al. 2023 ("Bespoke Solvers", Eq. (6)-(9): a solver's free parameters trained by
backpropagating the endpoint error through the sampler), DPM-Solver-v3's model-specific coefficients and
AMED-Solver's learned evaluation times (Zhou et al. 2024), on top of DPM-Solver++(2M) in data-prediction form
(Lu et al. 2022b Alg. 2; λ = log(α/σ), h = λ_{i+1} - λ_i, Δ_k = x̂_0^{(i-k+1)} - x̂_0^{(i-k)}):
    x_{i+1} = (σ_{i+1}/σ_i)(1 + c_i) x_i + α_{i+1} (1 - e^{-h})(1 + g_i) [x̂_0^{(i)} + (h/(2h') + a_{i,1}) Δ_1
                                                                       + Σ_{k=2..K} a_{i,k} Δ_k],
and into t = 0:  x_0 = x̂_0^{(N-1)} + e_0 (x_{N-1}/α_{N-1} - x̂_0^{(N-1)}) + Σ_{k=1..K} e_k Δ_k.
x̂_0^{(i)} = D(x_i α(τ_i)/α(t_i), τ_i) is queried at a noise level shifted by s_i in log-SNR (log(α²/σ²)) from
the grid time t_i, kept within [t_{N-1}, T]; the state is rescaled to that time's signal scale. c = g = a = e = s = 0
is DPM-Solver++(2M) exactly. Every query stays a function of x_T and earlier outputs, so NFE = N; with K = N - 1
the family holds every linear multistep method in x̂_0 (UniPC with its corrector included).
The times use optimise.grid_from_params (monotone softmax increments of log-SNR).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..schedules import Schedule
from .dpm_solver import dpmpp
from .grids import check_grid, check_steps, karras_grid, logsnr_grid, uniform_grid
from .optimise import grid_from_params, load_grid, params_from_grid, save_grid

# per-step state scale c and output scale g (N-1,); difference weights a (N-1, K); final step e (K+1,);
# query log-SNR shifts s (N,)
COEFF_NAMES = ("c", "g", "a", "e", "s")


@dataclass(frozen=True)
class SolverParams:
    """A fitted bespoke solver: grid ts (N+1,) float64 ending at 0, coefficients (COEFF_NAMES); fit diagnostics."""

    ts: Tensor
    c: Tensor
    g: Tensor
    a: Tensor
    e: Tensor
    s: Tensor
    info: dict[str, Any]

    def coeffs(self) -> dict[str, Tensor]:
        return {k: getattr(self, k) for k in COEFF_NAMES}


def zero_coeffs(steps: int, history: int = 3) -> dict[str, Tensor]:
    """Coefficients (K = ``history`` differences) that make the bespoke solver DPM-Solver++(2M)."""
    if not isinstance(history, int) or history < 1:
        raise ValueError(f"history must be a positive integer, got {history!r}")
    z = lambda *shape: torch.zeros(*shape, dtype=torch.float64)
    m = max(steps - 1, 0)
    return {"c": z(m), "g": z(m), "a": z(m, history), "e": z(history + 1), "s": z(steps)}


def _check_coeffs(coeffs: dict[str, Tensor], steps: int) -> dict[str, Tensor]:
    if not isinstance(coeffs, dict) or set(coeffs) != set(COEFF_NAMES):
        raise ValueError(f"bespoke coefficients must be a dict with keys {COEFF_NAMES}, got {coeffs!r:.80}")
    out = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in coeffs.items()}
    a = out["a"]
    K = a.shape[1] if a.ndim == 2 else 0
    for k, v in out.items():
        want = {"a": (steps - 1, max(K, 1)), "e": (K + 1,), "s": (steps,)}.get(k, (steps - 1,))
        if tuple(v.shape) != want:
            raise ValueError(f"bespoke coefficient {k!r} must have shape {want} for {steps} steps, "
                             f"got {tuple(v.shape)}")
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"bespoke coefficient {k!r} has non-finite values")
    return out


def _solve(D: Denoiser, x: Tensor, ts: Tensor, co: dict[str, Tensor], cond: dict[str, Any]) -> Tensor:
    """The solver, differentiable in x, ts (N+1,) and the coefficients; ts must be valid (checked by callers)."""
    sched: Schedule = D.schedule
    n = ts.numel() - 1
    tm = ts[:-1].to(torch.float64)  # grid (model) times (N,)
    la = sched.log_alpha_bar(tm)
    alpha, sigma = (0.5 * la).exp(), (-torch.expm1(la)).sqrt()
    lam = alpha.log() - sigma.log()  # λ = log(α/σ) (N,)
    # query times: log-SNR shifted by s, clamped to [λ(T), λ(t_{N-1})]; written as tm + (τ(ℓ+s) - τ(ℓ)) so that
    # s = 0 gives tm exactly while the gradient in s stays alive
    ls = sched.log_snr(tm)
    lq = torch.minimum(torch.maximum(ls + co["s"], sched.log_snr(tm.new_tensor(float(sched.T)))), ls[-1])
    tq = tm + (sched.t_from_log_snr(lq) - sched.t_from_log_snr(ls))
    rescale = (0.5 * (sched.log_alpha_bar(tq) - la)).exp()  # α(τ_i)/α(t_i) (N,)
    c, g, a, e = (co[k].to(x) for k in ("c", "g", "a", "e"))
    K = a.shape[1]
    alpha, sigma, lam, tq, rescale = (u.to(x) for u in (alpha, sigma, lam, tq, rescale))
    x0s: list[Tensor] = []
    for i in range(n):
        x0 = D(x * rescale[i], tq[i].expand(x.shape[0]), **cond)  # (B, *D)
        x0s.append(x0)
        diffs = [x0s[-k] - x0s[-k - 1] for k in range(1, min(i, K) + 1)]  # Δ_1..Δ_min(i,K)
        if i == n - 1:  # into t = 0: the denoise plus learned corrections
            out = x0 + e[0] * (x / alpha[i] - x0)
            for k, dk in enumerate(diffs, 1):
                out = out + e[k] * dk
            return out
        h = lam[i + 1] - lam[i]
        d = x0
        for k, dk in enumerate(diffs, 1):
            w = a[i, k - 1] + (h / (2 * (lam[i] - lam[i - 1])) if k == 1 else 0)
            d = d + w * dk
        x = (sigma[i + 1] / sigma[i]) * (1 + c[i]) * x + alpha[i + 1] * (-torch.expm1(-h)) * (1 + g[i]) * d
    raise AssertionError("unreachable")


@torch.no_grad()
def bespoke(D: Denoiser, x: Tensor, ts: Tensor, *, coeffs: dict[str, Tensor] | None = None,
            generator: torch.Generator | None = None, cond: dict[str, Any] | None = None, progress: bool = False,
            callback: Callable[[int, Tensor, Tensor], None] | None = None) -> Tensor:
    """Bespoke 2M solver (module docstring) on grid ts with fitted ``coeffs`` (None: DPM-Solver++(2M)); NFE = N."""
    grid = check_grid(ts, D.schedule.T)
    steps = len(grid) - 1
    co = _check_coeffs(zero_coeffs(steps) if coeffs is None else coeffs, steps)
    out = _solve(D, x, torch.tensor(grid, dtype=torch.float64), co, cond or {})
    if callback is not None:
        callback(steps - 1, out, out)
    return out


def _start_grids(sched: Schedule, steps: int, t_min: float) -> list[Tensor]:
    return [uniform_grid(sched.T, steps, "trailing"), logsnr_grid(sched, steps, t_min),
            karras_grid(sched, steps, t_min=t_min)]


def optimise_solver(D: Denoiser, steps: int, x_cal: Tensor, *, reference: Tensor | None = None, ref_steps: int = 500,
                    iters: int = 2400, lr: float = 0.02, batch_size: int = 4096, history: int = 3,
                    hard_mix: float = 0.5, val_frac: float = 0.125,
                    reg: float = 1e-3, t_min: float = 1.0, init_grid: Tensor | None = None, eval_every: int = 10,
                    seed: int = 0, cond: dict[str, Any] | None = None) -> SolverParams:
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
    sampling, reweighted so the objective is unchanged); 0 draws uniformly.
    """
    check_steps(steps)
    if steps < 3:
        raise ValueError(f"a bespoke solver needs at least 3 steps, got {steps}")
    sched = D.schedule
    if not (0 < t_min < sched.T):
        raise ValueError(f"t_min must lie in (0, T = {sched.T}), got {t_min!r}")
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
    if lr <= 0 or reg < 0 or batch_size < 1:
        raise ValueError(f"need lr > 0, reg >= 0 and batch_size >= 1, got {lr!r}, {reg!r}, {batch_size!r}")
    cond = cond or {}
    t0 = time.time()
    if reference is None:
        reference = dpmpp(D, x_cal, logsnr_grid(sched, ref_steps, t_min), order=3, cond=cond)
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
            check_grid(ts, sched.T)
        except ValueError:
            return math.inf
        err = float((_solve(D, x_va, ts, co, c_va) - r_va).double().pow(2).mean().sqrt())
        return err if math.isfinite(err) else math.inf

    starts = _start_grids(sched, steps, t_min) + ([torch.as_tensor(init_grid, dtype=torch.float64)]
                                                  if init_grid is not None else [])
    zero = zero_coeffs(steps, history)
    best_ts = min(starts, key=lambda g: val_rmse(g, zero))
    theta = params_from_grid(sched, best_ts, t_min, free_end=True).clone().requires_grad_(True)
    co = {k: v.clone().requires_grad_(True) for k, v in zero.items()}
    best = (val_rmse(grid_from_params(sched, theta.detach(), steps, t_min), zero), theta.detach().clone(),
            {k: v.clone() for k, v in zero.items()}, 0)
    start_val = best[0]
    opt = torch.optim.Adam([theta, *co.values()], lr=lr)
    sched_lr = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(iters, 1))
    g = torch.Generator().manual_seed(seed)
    mse0 = max(start_val, 1e-12) ** 2
    n_tr = x_tr.shape[0]
    # Per-point squared errors of the training part (refreshed as points are drawn): the MSE is dominated by the
    # few trajectories near basin boundaries, so minibatches draw points with p_i = (1-mix)/n + mix·err_i/Σerr
    # and weigh them by 1/(n p_i), an unbiased estimate of the full-batch MSE with far less variance.
    with torch.no_grad():
        err = (_solve(D, x_tr, grid_from_params(sched, theta.detach(), steps, t_min), zero, c_tr) - r_tr)
        err = err.double().pow(2).flatten(1).mean(1)  # (n_tr,)
    # only the solver is trained: a network denoiser's own weights are frozen meanwhile (no grads kept for them)
    frozen = [w for w in (D.parameters() if hasattr(D, "parameters") else []) if w.requires_grad]
    for w in frozen:
        w.requires_grad_(False)
    try:
        for it in range(1, iters + 1):
            p = (1 - hard_mix) / n_tr + hard_mix * err / err.sum().clamp_min(1e-300)
            idx = torch.multinomial(p, min(batch_size, n_tr), replacement=True, generator=g)
            ts = grid_from_params(sched, theta, steps, t_min)
            out = _solve(D, x_tr[idx], ts, co, sub(c_tr, idx))
            e_i = (out - r_tr[idx]).double().pow(2).flatten(1).mean(1)  # (batch,)
            loss = (e_i / (n_tr * p[idx])).mean() / mse0 + reg * sum(v.pow(2).sum() for v in co.values())
            opt.zero_grad()
            if not bool(torch.isfinite(loss)):
                break  # a diverged step: keep the best parameters so far
            err[idx] = e_i.detach()
            loss.backward()
            opt.step()
            sched_lr.step()
            if it % eval_every == 0 or it == iters:
                cur = {k: v.detach().clone() for k, v in co.items()}
                v = val_rmse(grid_from_params(sched, theta.detach(), steps, t_min), cur)
                if v < best[0]:
                    best = (v, theta.detach().clone(), cur, it)
    finally:
        for w in frozen:
            w.requires_grad_(True)
    ts = grid_from_params(sched, best[1], steps, t_min).detach()
    check_grid(ts, sched.T)
    info = {"val_rmse": best[0], "start_val_rmse": start_val, "best_iter": best[3], "seconds": time.time() - t0,
            "n_train": int(x_tr.shape[0]), "n_val": n_val}
    return SolverParams(ts, *(best[2][k] for k in COEFF_NAMES), info=info)


def save_solver(path: str | Path, params: SolverParams, schedule: Schedule, nfe: int | None = None) -> None:
    """Write grid and coefficients as one JSON (optimise.save_grid's format, with a 'coeffs' entry)."""
    steps = params.ts.numel() - 1
    co = _check_coeffs(params.coeffs(), steps)
    save_grid(path, params.ts, schedule, "bespoke", steps if nfe is None else nfe,
              coeffs={k: v.tolist() for k, v in co.items()})


def load_solver(path: str | Path, schedule: Schedule) -> SolverParams:
    """Read a solver written by save_solver; ValueError for another schedule, a plain grid or bad coefficients."""
    ts = load_grid(path, schedule)
    doc = json.loads(Path(path).read_text())
    if doc.get("sampler") != "bespoke" or not isinstance(doc.get("coeffs"), dict):
        raise ValueError(f"{str(path)!r} holds a plain time grid, not a bespoke solver's coefficients")
    try:
        co = _check_coeffs({k: torch.tensor(v, dtype=torch.float64) for k, v in doc["coeffs"].items()}, ts.numel() - 1)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{str(path)!r}: {e}") from e
    return SolverParams(ts, *(co[k] for k in COEFF_NAMES), info={"path": str(path)})
