"""Time grids optimised for one model, sampler and NFE budget, and their save/load as JSON.

The N model times t_0 = T > t_1 > ... > t_{N-1} are placed by N-1 positive increments of log-SNR λ
between λ(T) and λ(t_min) (softmax weights, so every candidate is a valid descending grid); with
``free_end`` one more weight is the slack left between λ(t_{N-1}) and λ(t_min), so the last model time
is free too. The weights minimise RMSE(sampler(D, x_cal, grid), reference) on a small calibration batch
with a derivative-free scipy optimiser (deterministic), started from the best of the uniform (trailing),
logSNR and Karras grids (in the spirit of Sabour et al. 2024 "Align Your Steps", here with a direct error target).
Only deterministic samplers make sense here (the RMSE of a stochastic sampler mixes in its noise).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Literal, get_args

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from ..denoiser import Denoiser
from ..schedules import Schedule
from .ddpm import ddim
from .grids import check_grid, check_steps, karras_grid, logsnr_grid, uniform_grid

Method = Literal["Nelder-Mead", "Powell"]
METHODS: tuple[str, ...] = get_args(Method)
GRID_FORMAT = "kuosan-time-grid"
_BAD = 1e30  # objective of an invalid grid or a diverged run (finite: keeps line searches well-defined)


def _lam(sched: Schedule, t: float) -> float:
    return float(sched.log_snr(torch.tensor(float(t), dtype=torch.float64)))


def grid_from_params(sched: Schedule, theta: Tensor, steps: int, t_min: float = 1.0) -> Tensor:
    """Grid [T, t_1..t_{N-1}, 0] for logits θ: w = softmax([0, θ]), λ_i = λ(T) + (λ(t_min) - λ(T)) Σ_{j<=i} w_j.

    θ has N-2 entries (fixed end, λ_{N-1} = λ(t_min)) or N-1 (the last weight is the slack below λ(t_min)).
    """
    lam_T, lam_hi = _lam(sched, sched.T), _lam(sched, t_min)
    w = torch.softmax(torch.cat([theta.new_zeros(1), theta.to(torch.float64)]), 0)  # (N-1 [+1 slack],)
    lam = lam_T + (lam_hi - lam_T) * torch.cumsum(w[: steps - 1], 0)  # λ_1..λ_{N-1}, increasing
    ts = sched.t_from_log_snr(lam)
    return torch.cat([torch.tensor([float(sched.T)], dtype=torch.float64), ts, ts.new_zeros(1)])


def params_from_grid(sched: Schedule, ts: Tensor, t_min: float = 1.0, free_end: bool = True,
                     min_slack: float = 0.05) -> Tensor:
    """θ whose grid_from_params is ``ts`` (N >= 2 steps).

    With ``free_end`` a zero slack (grid ending at t_min) is raised to ``min_slack`` × the mean increment, so
    the optimiser can move the end; the grid then differs slightly from ``ts``.
    """
    lam_T, lam_hi = _lam(sched, sched.T), _lam(sched, t_min)
    lam = torch.tensor([lam_T] + [_lam(sched, float(t)) for t in ts[1:-1]], dtype=torch.float64).clamp(max=lam_hi)
    inc = lam.diff()  # (N-1,)
    if free_end:
        inc = torch.cat([inc, (lam_hi - lam[-1:]).clamp_min(min_slack * float(inc.mean()))])
    inc = inc.clamp_min(1e-6 * float(inc.mean()))
    return (inc.log() - inc[0].log())[1:]


@torch.no_grad()
def optimise_grid(D: Denoiser, steps: int, x_cal: Tensor, *, sampler: Callable[..., Tensor] = ddim,
                  reference: Tensor | None = None, ref_steps: int = 500, t_min: float = 1.0, free_end: bool = True,
                  method: Method = "Nelder-Mead", max_evals: int | None = None, init_step: float = 0.5,
                  cond: dict[str, Any] | None = None, **sampler_opts: Any) -> Tensor:
    """The ``steps``-step grid (float64, ending at 0) minimising RMSE(sampler(D, x_cal, grid), reference).

    ``reference`` defaults to the same sampler on a ``ref_steps``-step logSNR grid (pass e.g. the ``ode``
    sampler's output for a solver-independent target). The objective costs ``steps`` NFE on x_cal per
    evaluation; ``max_evals`` (default 60 per parameter) bounds the search. ``init_step`` is the initial
    simplex size in logit units. Returns the best of the optimum and the uniform/logSNR/Karras starts.
    On multimodal data the RMSE is dominated by the few trajectories near basin boundaries, so a
    batch of 64 can over-fit them; 128-256 points generalise markedly better (cost is linear in B).
    """
    check_steps(steps)
    if method not in METHODS:
        raise ValueError(f"unknown optimiser {method!r}; choose one of {', '.join(METHODS)}")
    sched = D.schedule
    if not (0 < t_min < sched.T):
        raise ValueError(f"t_min must lie in (0, T = {sched.T}), got {t_min!r}")
    if max_evals is not None and (not isinstance(max_evals, int) or max_evals < 1):
        raise ValueError(f"max_evals must be a positive integer, got {max_evals!r}")
    cond = cond or {}
    if reference is None:
        reference = sampler(D, x_cal, logsnr_grid(sched, ref_steps, t_min), cond=cond, **sampler_opts)
    if reference.shape != x_cal.shape:
        raise ValueError(f"reference shape {tuple(reference.shape)} differs from the calibration batch "
                         f"{tuple(x_cal.shape)}")

    def rmse(ts: Tensor) -> float:
        try:
            check_grid(ts, sched.T)
        except ValueError:  # softmax underflow can merge two times; such a grid is simply rejected
            return _BAD
        out = sampler(D, x_cal, ts, cond=cond, **sampler_opts)
        err = float((out - reference).double().pow(2).mean().sqrt())
        return err if math.isfinite(err) else _BAD

    # the uniform trailing grid is often the best start for multistep solvers on multimodal data
    starts = [uniform_grid(sched.T, steps, "trailing"), logsnr_grid(sched, steps, t_min),
              karras_grid(sched, steps, t_min=t_min)]
    best = min(starts, key=rmse)
    n_par = steps - 2 + int(free_end)
    if n_par < 1:  # one model time (or two with a fixed end): nothing to choose
        return best

    def to_grid(th: np.ndarray) -> Tensor:
        return grid_from_params(sched, torch.from_numpy(np.asarray(th, dtype=np.float64)), steps, t_min)

    th0 = params_from_grid(sched, best, t_min, free_end).numpy()
    budget = max_evals or 60 * n_par  # more mostly fits the calibration batch tighter, not held-out data
    if method == "Nelder-Mead":
        simplex = np.vstack([th0, th0 + init_step * np.eye(n_par)])
        res = minimize(lambda th: rmse(to_grid(th)), th0, method="Nelder-Mead",
                       options={"maxfev": budget, "initial_simplex": simplex, "xatol": 1e-4, "fatol": 1e-9,
                                "adaptive": n_par > 4})
    else:
        res = minimize(lambda th: rmse(to_grid(th)), th0, method="Powell",
                       options={"maxfev": budget, "xtol": 1e-4, "ftol": 1e-9, "direc": init_step * np.eye(n_par)})
    return min([to_grid(res.x), best], key=rmse)


def save_grid(path: str | Path, grid: Tensor, schedule: Schedule, sampler_name: str, nfe: int,
              coeffs: dict[str, Any] | None = None) -> None:
    """Write an optimised grid as JSON with the schedule's fingerprint (floats round-trip exactly).

    ``coeffs`` (e.g. a bespoke solver's per-step coefficients) are stored alongside under "coeffs".
    """
    check_grid(grid, schedule.T)
    doc = {"format": GRID_FORMAT, "version": 1, "schedule": schedule.fingerprint(), "schedule_kind": schedule.kind,
           "T": schedule.T, "sampler": str(sampler_name), "nfe": int(nfe),
           "grid": [float(t) for t in grid.to(torch.float64)]}
    if coeffs is not None:
        doc["coeffs"] = {str(k): torch.as_tensor(v, dtype=torch.float64).tolist() for k, v in coeffs.items()}
    Path(path).write_text(json.dumps(doc, indent=1))


def load_grid(path: str | Path, schedule: Schedule) -> Tensor:
    """Read a grid written by save_grid; ValueError if it was made for another schedule or is malformed."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read an optimised grid from {str(path)!r}: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != GRID_FORMAT or not isinstance(doc.get("grid"), list):
        raise ValueError(f"{str(path)!r} is not a kuosan optimised-grid file")
    if doc.get("schedule") != schedule.fingerprint():
        raise ValueError(f"optimised grid was made for another schedule ({doc.get('schedule_kind')}, "
                         f"T = {doc.get('T')}, fingerprint {doc.get('schedule')}); this schedule is "
                         f"{schedule.kind}, T = {schedule.T}, fingerprint {schedule.fingerprint()}")
    grid = torch.tensor(doc["grid"], dtype=torch.float64)
    check_grid(grid, schedule.T)
    return grid
