"""What every sampler shares: the callback type, the step loop with its progress bar, a denoiser call at a grid
time, the ε̂ implied by x̂_0, and the checks of common options. Per-step (α, σ, λ) come from
:func:`kuosan.paths.coefficients` (λ is the full log-SNR; solvers that need λ/2 call it ``half_lam``)."""

from __future__ import annotations

import math
from functools import cache, partial
from typing import Any, Callable, Iterable

from torch import Tensor

from ..broadcast import batch_times
from ..denoiser import Denoiser
from ..paths import Path, coefficients

# (step i, state after the step, x̂_0 used by the step) -> None, or a tensor that replaces the state (the step
# hook: projections, inpainting); samplers keep their own model-output history either way
Callback = Callable[[int, Tensor, Tensor], "Tensor | None"]


def after_step(callback: Callback | None, i: int, x: Tensor, x0: Tensor) -> Tensor:
    """The state after step i: what ``callback`` returns in its place (a projection, inpainting), else x."""
    hooked = callback(i, x, x0) if callback is not None else None
    return x if hooked is None else hooked


def steps(grid: list[float], progress: bool = False, desc: str = "sampling") -> Iterable[tuple[float, float]]:
    """Steps (t_i, t_{i+1}) of a grid, in a tqdm bar when ``progress``."""
    pairs = list(zip(grid[:-1], grid[1:]))
    if progress:
        from tqdm.auto import tqdm

        return tqdm(pairs, desc=desc, leave=False)
    return pairs


def denoise(D: Denoiser, x: Tensor, t: float, cond: dict[str, Any] | None) -> Tensor:
    """x̂_0 = D(x, t) with t repeated over the batch as float64 (B,)."""
    return D(x, batch_times(t, x), **(cond or {}))


def eps_hat(x: Tensor, x0: Tensor, a: float, s: float) -> Tensor:
    """ε̂ = (x_t - α x̂_0)/σ at a time with σ > 0 (finite at α = 0, where it is x_t/σ)."""
    return (x - a * x0) / s


def check_clip(clip: float | None) -> None:
    """``clip`` is None or a finite number > 0 (x̂_0 is clamped to [-clip, clip])."""
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float))
                             or not (math.isfinite(clip) and clip > 0)):
        raise ValueError(f"clip must be a finite number > 0 (or None), got {clip!r}")


def check_order(order: int, what: str = "solver") -> None:
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise ValueError(f"{what} order must be 1, 2 or 3, got {order!r}")


def coefficient_table(path: Path) -> Callable[[float], tuple[float, float, float]]:
    """``coefficients(path, ·)`` memoised for one sampler call, so each grid time is evaluated once."""
    return cache(partial(coefficients, path))


def infinite_noise_at(path: Path, t: float) -> bool:
    """Whether σ̃(t) = ∞ (α(t) = 0, λ = -∞): samplers take a first-order step out of such a time."""
    return not math.isfinite(coefficients(path, t)[2])
