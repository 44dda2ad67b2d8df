"""DDIM inversion (Song et al. 2021 §4.3 / Eq. (13) run forwards; Dhariwal & Nichol 2021 App. F): x_0 -> x_{t_0}.

A deterministic DDIM step t -> s is x_s = α_s x̂_0 + σ_s ε̂ with (x̂_0, ε̂) taken at (x_t, t). Inverting it
exactly means solving x_t = α_t (x_s - σ_s ε̂(x_t))/α_s + σ_t ε̂(x_t) for x_t (implicit). The standard
approximation uses ε̂ at the current point (x_s, s) instead, an O(h²) error per step, so
ddim(D, ddim_invert(D, x_0, ts), ts) -> x_0 as the grid is refined; ``fixed_point`` iterations of the
implicit equation remove most of it at one extra NFE per iteration and step. Works on any path: the step into
α(t_0) = 0 gives x_{t_0} = σ_{t_0} ε̂ (no division by α_t).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..denoiser import Denoiser
from .common import Callback, after_step, coefficient_table, denoise, eps_hat
from .grids import check_grid


@torch.no_grad()
def ddim_invert(D: Denoiser, x0: Tensor, ts: Tensor, cond: dict[str, Any] | None = None, *, fixed_point: int = 0,
                progress: bool = False, callback: Callback | None = None) -> Tensor:
    """Walk the η = 0 DDIM grid backwards, t_N = 0 -> ... -> t_0, returning x at t_0 (the latent ddim starts from).

    Step s -> t (s < t): x_t = α_t x̂_0 + σ_t e with e = ε̂(x_s, s), x̂_0 = (x_s - σ_s e)/α_s (standard
    approximation); then ``fixed_point`` times e <- ε̂(x_t, t). The first step leaves t = 0, where σ = 0: x̂_0 = x_0
    exactly and ε̂(x, 0) is degenerate (its limit is 0 for a smooth density), so it starts from x_t = α_t x_0 and
    always takes one evaluation e = ε̂(α_t x_0, t), which inverts ddim's last step (x_0 = x̂_0(x_t)) to first order.
    NFE = N·(1 + fixed_point).
    """
    if not isinstance(fixed_point, int) or isinstance(fixed_point, bool) or fixed_point < 0:
        raise ValueError(f"fixed_point must be an integer >= 0, got {fixed_point!r}")
    path = D.path
    coef = coefficient_table(path)
    up = check_grid(ts, path)[::-1]  # 0 = t_N < t_{N-1} < ... < t_0
    pairs = list(zip(up[:-1], up[1:]))
    if progress:
        from tqdm.auto import tqdm

        pairs = tqdm(pairs, desc="ddim inversion", leave=False)
    x = x0
    for i, (s, t) in enumerate(pairs):
        a_s, s_s, _ = coef(s)
        a_t, s_t, _ = coef(t)
        if s == 0:
            x0_hat, x_t = x, a_t * x
            iters = 1 + fixed_point
        else:
            x0_hat = denoise(D, x, s, cond)
            e = eps_hat(x, x0_hat, a_s, s_s)
            x_t = a_t * ((x - s_s * e) / a_s) + s_t * e
            iters = fixed_point
        for _ in range(iters):  # e <- ε̂(x_t, t), x_t <- α_t (x_s - σ_s e)/α_s + σ_t e
            e = eps_hat(x_t, denoise(D, x_t, t, cond), a_t, s_t)
            x0_hat = x if s == 0 else (x - s_s * e) / a_s
            x_t = a_t * x0_hat + s_t * e
        x = x_t
        x = after_step(callback, i, x, x0_hat)
    return x
