"""Time grids optimised for one denoiser, sampler and NFE budget (direct-error "Align Your Steps").

The N model times t_0 = t_max > t_1 > ... > t_{N-1} are placed by N-1 positive increments of the (full) log-SNR
λ = log(α²/σ²) between λ_lo = λ(t_max) and λ(t_min) (softmax weights, so every candidate is a valid descending
grid); with ``free_end`` one more weight is the slack left between λ(t_{N-1}) and λ(t_min), so the last model time
is free too. The weights minimise RMSE(sampler(D, x_cal, grid), reference) on a small calibration batch with a
derivative-free scipy optimiser (deterministic), started from the best of the uniform (trailing), logSNR and Karras
grids (in the spirit of Sabour et al. 2024 "Align Your Steps", here with a direct error target). Only
deterministic samplers make sense here (the RMSE of a stochastic sampler mixes in its noise).
On a path with λ(t_max) = -∞ (flow, zero terminal SNR) t_0 stays t_max and λ_lo is where the logSNR and Karras
grids start their spacing (grids.spacing_start: σ̃ = 80 projected onto the path), so every other time has a
finite λ.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Literal, get_args

import torch
from torch import Tensor

from ...denoiser import Denoiser
from ...paths import Path, f64
from ..grids import check_grid, check_steps, default_t_min, karras_grid, logsnr_grid, spacing_start, uniform_grid
from .progress import bar

Method = Literal["Nelder-Mead", "Powell"]
METHODS: tuple[str, ...] = get_args(Method)
Sampler = Callable[..., Tensor] | str
class _OutOfTime(Exception):
    """Raised by the objective once the search's time budget is spent."""


_BAD = 1e30  # objective of an invalid grid or a diverged run (finite: keeps line searches well-defined)


def _lam(path: Path, t: float) -> float:
    return float(path.log_snr(f64(float(t))))


def lam_range(path: Path, t_min: float | None = None) -> tuple[float, float]:
    """(λ_lo, λ_hi) of the parameterisation: the logSNR/Karras grids' spacing start (λ(t_max) where finite) and
    λ(t_min) (default: grids.default_t_min)."""
    return spacing_start(path, path.t_max), _lam(path, resolve_t_min(path, t_min))


def resolve_t_min(path: Path, t_min: float | None) -> float:
    """t_min (default: the grids' own, kuosan.sampling.grids.default_t_min), checked to lie in (0, t_max)."""
    t_min = default_t_min(path) if t_min is None else t_min
    if not (0 < t_min < path.t_max):
        raise ValueError(f"t_min must lie in (0, t_max = {path.t_max:g}), got {t_min!r}")
    return float(t_min)


def grid_from_params(path: Path, theta: Tensor, steps: int, t_min: float | None = None) -> Tensor:
    """Grid [t_max, t_1..t_{N-1}, 0] for logits θ: w = softmax([0, θ]), λ_i = λ_lo + (λ_hi - λ_lo) Σ_{j<=i} w_j.

    θ has N-2 entries (fixed end, λ_{N-1} = λ(t_min)) or N-1 (the last weight is the slack below λ(t_min));
    differentiable in θ (the bespoke fit trains it).
    """
    lam_lo, lam_hi = lam_range(path, t_min)
    w = torch.softmax(torch.cat([theta.new_zeros(1), theta.to(torch.float64)]), 0)  # (N-1 [+1 slack],)
    lam = lam_lo + (lam_hi - lam_lo) * torch.cumsum(w[: steps - 1], 0)  # λ_1..λ_{N-1}, increasing
    ts = path.t_of_log_snr(lam)
    return torch.cat([f64(path.t_max).reshape(1), ts, ts.new_zeros(1)])


def params_from_grid(path: Path, ts: Tensor, t_min: float | None = None, free_end: bool = True,
                     min_slack: float = 0.05) -> Tensor:
    """θ whose grid_from_params is ``ts`` (N >= 2 steps).

    With ``free_end`` a zero slack (grid ending at t_min) is raised to ``min_slack`` × the mean increment, so
    the optimiser can move the end; the grid then differs slightly from ``ts``.
    """
    lam_lo, lam_hi = lam_range(path, t_min)
    lam = torch.tensor([lam_lo] + [_lam(path, float(t)) for t in ts[1:-1]], dtype=torch.float64)
    lam = lam.clamp(min=lam_lo, max=lam_hi)
    inc = lam.diff()  # (N-1,)
    if free_end:
        inc = torch.cat([inc, (lam_hi - lam[-1:]).clamp_min(min_slack * float(inc.mean()))])
    inc = inc.clamp_min(1e-6 * float(inc.mean()))
    return (inc.log() - inc[0].log())[1:]


def start_grids(path: Path, steps: int, t_min: float) -> list[Tensor]:
    """The standard grids a fit starts from: uniform (trailing), logSNR and Karras; the uniform trailing grid is
    often the best start for multistep solvers on multimodal data."""
    return [uniform_grid(path, steps, "trailing"), logsnr_grid(path, steps, t_min=t_min),
            karras_grid(path, steps, t_min=t_min)]


def resolve_sampler(sampler: Sampler, options: dict[str, Any]) -> Callable[..., Tensor]:
    """A sampler function from a registered name (deterministic ones only; options checked) or a callable."""
    if callable(sampler):
        return sampler
    from ..registry import SAMPLERS, check_options, get_sampler

    spec = get_sampler(sampler)
    if not spec.deterministic:
        raise ValueError(f"an optimised grid needs a deterministic sampler, not {sampler!r} "
                         f"(choose one of {', '.join(k for k, s in SAMPLERS.items() if s.deterministic)})")
    check_options(spec, options)
    return spec.fn


@torch.no_grad()
def optimise_grid(D: Denoiser, steps: int, x_cal: Tensor, *, sampler: Sampler = "ddim",
                  reference: Tensor | None = None, ref_steps: int = 500, t_min: float | None = None,
                  free_end: bool = True, method: Method = "Nelder-Mead", max_evals: int | None = None,
                  init_step: float = 0.5, cond: dict[str, Any] | None = None, progress: bool = False,
                  init_grids: list[Tensor] | None = None, seconds: float | None = None, **sampler_opts: Any) -> Tensor:
    """The ``steps``-step grid (float64, ending at 0) minimising RMSE(sampler(D, x_cal, grid), reference).

    ``sampler`` is a registered name (``sampler_opts`` checked against its spec) or a sampler function.
    ``reference`` defaults to the same sampler on a ``ref_steps``-step logSNR grid (pass e.g. the ``ode``
    sampler's output for a solver-independent target). The objective costs ``steps`` NFE on x_cal per
    evaluation; ``max_evals`` (default 60 per parameter) bounds the search, shown as a progress bar with
    ``progress``. ``init_step`` is the initial simplex size in logit units. Returns the best of the optimum and
    the uniform/logSNR/Karras starts. On multimodal data the RMSE is dominated by the few trajectories near
    basin boundaries, so a batch of 64 can over-fit them; 128-256 points generalise markedly better (cost is
    linear in B). ``init_grids`` are further starts (e.g. a grid fitted by gradients, cache.grid_for);
    ``seconds`` bounds the search's wall time (the best grid seen so far is returned).
    """
    import numpy as np
    from scipy.optimize import minimize  # scipy only when a grid is fitted (import kuosan stays light)

    check_steps(steps)
    if method not in METHODS:
        raise ValueError(f"unknown optimiser {method!r}; choose one of {', '.join(METHODS)}")
    path = D.path
    t_min = resolve_t_min(path, t_min)
    if max_evals is not None and (not isinstance(max_evals, int) or max_evals < 1):
        raise ValueError(f"max_evals must be a positive integer, got {max_evals!r}")
    fn = resolve_sampler(sampler, sampler_opts)
    cond = cond or {}
    if reference is None:
        reference = fn(D, x_cal, logsnr_grid(path, ref_steps, t_min=t_min), cond=cond, progress=progress,
                       **sampler_opts)
    if reference.shape != x_cal.shape:
        raise ValueError(f"reference shape {tuple(reference.shape)} differs from the calibration batch "
                         f"{tuple(x_cal.shape)}")
    n_par = steps - 2 + int(free_end)
    budget = max_evals or 60 * n_par  # more mostly fits the calibration batch tighter, not held-out data
    starts = start_grids(path, steps, t_min) + [torch.as_tensor(g, dtype=torch.float64) for g in init_grids or ()]
    pbar = bar(progress, total=len(starts) + (budget + 2 if n_par >= 1 else 0), desc=f"optimising a {steps}-step grid")
    best_seen: list[Any] = [math.inf, None]  # RMSE and grid of the best evaluation so far
    searching: list[bool] = []
    t_end = None if seconds is None else time.time() + seconds

    def rmse(ts: Tensor) -> float:
        if t_end is not None and searching and time.time() > t_end:  # the starts are always all evaluated
            raise _OutOfTime
        pbar.update()
        try:
            check_grid(ts, path)
        except ValueError:  # softmax underflow can merge two times; such a grid is simply rejected
            return _BAD
        out = fn(D, x_cal, ts, cond=cond, **sampler_opts)
        err = float((out - reference).double().pow(2).mean().sqrt())
        if err < best_seen[0]:
            best_seen[:] = [err, ts]
            pbar.set_postfix(rmse=f"{err:.3e}", refresh=False)
        return err if math.isfinite(err) else _BAD

    try:
        best = min(starts, key=rmse)
        searching.append(True)
        if n_par < 1:  # one model time (or two with a fixed end): nothing to choose
            return best

        def to_grid(th: Any) -> Tensor:
            return grid_from_params(path, torch.from_numpy(np.asarray(th, dtype=np.float64)), steps, t_min)

        th0 = params_from_grid(path, best, t_min, free_end).numpy()
        eye = np.eye(n_par)
        if method == "Nelder-Mead":
            simplex = np.vstack([th0, th0 + init_step * eye])
            res = minimize(lambda th: rmse(to_grid(th)), th0, method="Nelder-Mead",
                           options={"maxfev": budget, "initial_simplex": simplex, "xatol": 1e-4, "fatol": 1e-9,
                                    "adaptive": n_par > 4})
        else:
            res = minimize(lambda th: rmse(to_grid(th)), th0, method="Powell",
                           options={"maxfev": budget, "xtol": 1e-4, "ftol": 1e-9, "direc": init_step * eye})
        return min([to_grid(res.x), best], key=rmse)
    except _OutOfTime:
        return best_seen[1]
    finally:
        pbar.close()
