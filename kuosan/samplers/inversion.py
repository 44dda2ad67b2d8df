"""DDIM inversion (Song et al. 2021 §4.3 / Eq. (13) run forwards; Dhariwal & Nichol 2021 App. F): x_0 -> x_T.

A deterministic DDIM step t -> s is x_s = α_s x̂_0 + σ_s ε̂ with (x̂_0, ε̂) taken at (x_t, t). Inverting it
exactly means solving x_t = α_t/α_s (x_s - σ_s ε̂(x_t)) + σ_t ε̂(x_t) for x_t (implicit). The standard
approximation uses ε̂ at the current point (x_s, s) instead, an O(h²) error per step, so
ddim(D, ddim_invert(D, x_0, ts), ts) -> x_0 as the grid is refined; ``fixed_point`` iterations of the
implicit equation remove most of it at one extra NFE per iteration and step.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..forward import x0_to_eps
from .grids import check_grid


@torch.no_grad()
def ddim_invert(D: Denoiser, x0: Tensor, ts: Tensor, cond: dict[str, Any] | None = None, *, fixed_point: int = 0,
                progress: bool = False, callback: Callable[[int, Tensor, Tensor], None] | None = None) -> Tensor:
    """Walk the η = 0 DDIM grid backwards, t_N = 0 -> ... -> t_0, returning x at t_0 (the latent ddim starts from).

    Step s -> t (s < t): x_t = α_t/α_s (x_s - σ_s e) + σ_t e, e = ε̂(x_s, s) (standard approximation); then
    ``fixed_point`` times e <- ε̂(x_t, t). The first step leaves t = 0, where σ = 0: x̂_0 = x_0 exactly and
    ε̂(x, 0) is degenerate (its limit is 0 for a smooth density), so it starts from x_t = α_t x_0 and always
    takes one evaluation e = ε̂(α_t x_0, t), which inverts ddim's last step (x_0 = x̂_0(x_t)) to first order.
    NFE = N·(1 + fixed_point).
    """
    if not isinstance(fixed_point, int) or isinstance(fixed_point, bool) or fixed_point < 0:
        raise ValueError(f"fixed_point must be an integer >= 0, got {fixed_point!r}")
    sched, cond = D.schedule, cond or {}
    check_grid(ts, sched.T)
    B, dt = x0.shape[0], x0.dtype

    def coef(t: float) -> tuple[float, float]:  # (α, σ) at t, float64 schedule
        t64 = torch.tensor(t, dtype=torch.float64)
        return float(sched.alpha(t64)), float(sched.sigma(t64))

    up = ts.flip(0).tolist()  # 0 = t_N < t_{N-1} < ... < t_0
    pairs = list(zip(up[:-1], up[1:]))
    if progress:
        from tqdm.auto import tqdm

        pairs = tqdm(pairs, desc="ddim inversion", leave=False)
    x = x0
    for i, (s, t) in enumerate(pairs):
        (a_s, s_s), (a_t, s_t) = coef(s), coef(t)
        if s == 0:
            x0_hat, x_t = x, a_t * x
            iters = 1 + fixed_point
        else:
            x0_hat = D(x, torch.full((B,), s, dtype=dt, device=x.device), **cond)
            e = x0_to_eps(x, x0_hat, a_s, s_s)
            x_t = a_t / a_s * (x - s_s * e) + s_t * e
            iters = fixed_point
        for _ in range(iters):  # e <- ε̂(x_t, t), x_t <- α_t/α_s (x_s - σ_s e) + σ_t e
            x0_t = D(x_t, torch.full((B,), t, dtype=dt, device=x.device), **cond)
            e = x0_to_eps(x_t, x0_t, a_t, s_t)
            x0_hat = x if s == 0 else (x - s_s * e) / a_s
            x_t = a_t * x0_hat + s_t * e
        x = x_t
        if callback is not None:
            callback(i, x, x0_hat)
    return x
