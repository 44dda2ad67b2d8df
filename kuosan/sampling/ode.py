"""Probability-flow ODE sampler (Song et al. 2021 Eq. (13)) with an adaptive Runge–Kutta solver per sample.

It integrates THE PF-ODE of :mod:`kuosan.pf_ode`, dy/du = y - x̂_0(α y, t(u)) in y = x/α, u = log σ̃ = -λ/2,
whose right-hand side stays O(1) from σ̃ = 10³ down to σ̃ -> 0 on every path, so few steps are needed at either
end. ``pf_ode.enter`` starts it (one DDIM step first where σ̃(t_0) > 10³, e.g. out of α(t_max) = 0) and
``pf_ode.leave`` returns to the path's x. Each sample has its own step sizes (:mod:`.rk`), so a sample's result
does not depend on the batch it was drawn in.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..paths import coefficients
from ..pf_ode import enter, leave, rhs
from .common import Callback, denoise
from .grids import check_grid
from .noise import NoiseSource
from .rk import METHODS, Method, solve


def _rows(cond: dict[str, Any] | None, rows: Tensor, batch: int) -> dict[str, Any]:
    """The conditioning of a subset of rows (tensors with a batch dimension are indexed; the rest kept)."""
    return {k: v[rows] if isinstance(v, Tensor) and v.ndim and v.shape[0] == batch else v
            for k, v in (cond or {}).items()}


@torch.no_grad()
def ode(D: Denoiser, x: Tensor, ts: Tensor, *, rtol: float = 1e-5, atol: float = 1e-5, method: Method = "dopri5",
        noise: NoiseSource | None = None, cond: dict[str, Any] | None = None, progress: bool = False,
        callback: Callback | None = None) -> Tensor:
    """Song et al. Eq. (13) solved adaptively from t_0 = ts[0] to the last positive time ts[-2], then x_0 = x̂_0.

    Only the grid's ends shape the result: the solver picks its own steps (per sample) between t_0 and ts[-2]
    (fractional t allowed), and the step into t = 0 is a denoise at ts[-2] (σ̃ there is small: logsnr/karras
    grids end at σ̃ ≈ 0.01 on the linear chain). The interior grid points are where
    ``callback(i, x_{t_{i+1}}, x̂_0)`` reports the state (interpolated; x̂_0 is each sample's latest evaluation), once
    per grid step. The NFE is whatever the solver used plus one (plus one in ``enter``): count it with Counting. A
    callback may replace the state (the step hook) only at the last step, or on a grid with nothing to integrate: inside
    the adaptive integration every row is already past a grid time when it is reported, so a replacement there is a
    ValueError (returning the reported tensor itself changes nothing and is allowed).
    """
    if method not in METHODS:
        raise ValueError(f"unknown adaptive ODE method {method!r}; choose one of {', '.join(METHODS)}")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not (tol > 0 and math.isfinite(tol)):
            raise ValueError(f"ODE tolerances must be finite numbers > 0, got {name}={tol!r}")
    path = D.path
    grid = check_grid(ts, path)
    n, t_end = len(grid) - 1, grid[-2]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="ode", leave=False)

    def report(i: int, x_i: Tensor, x0_i: Tensor) -> Tensor | None:
        hooked = callback(i, x_i, x0_i) if callback is not None else None
        if bar is not None:
            bar.update(1)
        return None if hooked is x_i else hooked

    def report_inside(i: int, x_i: Tensor, x0_i: Tensor) -> None:
        if report(i, x_i, x0_i) is not None:
            raise ValueError("the adaptive ode sampler cannot replace its state between grid points (the step hook "
                             "of projections and inpainting): use a fixed-step sampler")

    u_end = -0.5 * coefficients(path, t_end)[2]
    if n > 1 and math.isfinite(u_end):
        y, u0 = enter(D, x, grid[0], cond)
        us = [-0.5 * coefficients(path, t)[2] for t in grid[1:-1]]  # log σ̃ at the interior points
        x_in = leave(path, y, u0)
        first = sum(u >= u0 for u in us)  # interior points inside enter's DDIM jump: report its end state
        for i in range(first):
            report_inside(i, x_in, x_in)
        B, ones = x.shape[0], [1] * (x.ndim - 1)

        def f(tau: Tensor, y_r: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
            # dy/dτ with τ = u0 - u (increasing); u per row (R, 1, ..., 1) float64
            dy_du, x0 = rhs(D, y_r, (u0 - tau).reshape(-1, *ones), _rows(cond, rows, B))
            return -dy_du, x0

        def on_stop(j: int, y_j: Tensor, x0_j: Tensor) -> None:
            report_inside(first + j, leave(path, y_j, us[first + j]), x0_j)

        y = solve(f, y, u0 - u_end, rtol=rtol, atol=atol, method=method, stops=[u0 - u for u in us[first:]],
                  on_stop=on_stop)
        x = leave(path, y, u_end)
    else:  # one step, or a last positive time still at α = 0 (nothing to integrate): the steps before it keep x
        for i in range(n - 1):
            hooked = report(i, x, x)
            if hooked is not None:
                x = hooked
    x0 = denoise(D, x, t_end, cond)
    hooked = report(n - 1, x0, x0)
    if hooked is not None:
        x0 = hooked
    if bar is not None:
        bar.close()
    return x0
