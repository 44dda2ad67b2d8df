"""Multistep consistency sampling (Song et al. 2023 Algorithm 1) on any path, and its noise-level grids.

x̂_0 = D(x_T, t_0); then for each next grid time τ before the final 0: x = α(τ) x̂_0 + σ(τ) z, x̂_0 = D(x, τ).
With a consistency model D = f(·, σ) gives the PF-ODE endpoint, so one step is a sample and each further step
re-noises to a lower level and maps back (Song et al. 2023 re-noise with √(τ² - σ_min²) on VE; σ_min = 0.002
changes that by under 2.5e-6 relative at τ >= 0.9, so the path's own q(x_τ|x̂_0) is used, which also runs on VP and
flow paths). NFE = steps; z comes from the per-sample NoiseSource, so the samples do not depend on the batch size.

Noise levels are VE levels σ̃ = σ/α (the path's σ on VE). The default: one step from σ̃(t_max); two steps
re-noise to σ̃_1 = 1.642·σ_d, iCT's σ = 0.821 for CIFAR-10 (σ_d = 0.5) scaled with the data's spread (the level
sits where SNR = σ_d²/σ̃² = 0.37: enough noise to undo the first step's errors at coarse scale, little enough to
keep its layout); more steps add levels log-spaced down to σ̃_1/10.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..paths import Path, f64
from .common import Callback, coefficient_table, denoise, steps
from .grids import check_grid
from .noise import NoiseSource, noise_like

ICT_LEVEL = 0.821  # iCT's (Song & Dhariwal 2023) second level for 2-step sampling on CIFAR-10, where σ_d = 0.5
ICT_SIGMA_DATA = 0.5


@torch.no_grad()
def consistency(D: Denoiser, x: Tensor, ts: Tensor, *, noise: NoiseSource | None = None,
                cond: dict[str, Any] | None = None, progress: bool = False, callback: Callback | None = None) -> Tensor:
    """Song et al. 2023 Alg. 1 over the grid: step i maps x at t_i to x̂_0, then re-noises it to t_{i+1}
    (x = α x̂_0 + σ z) or, into t = 0, returns x̂_0. A callback's returned tensor replaces x."""
    coef = coefficient_table(D.path)
    for i, (t, s) in enumerate(steps(check_grid(ts, D.path), progress, "consistency")):
        x0 = denoise(D, x, t, cond)
        if s == 0:
            x = x0
        else:
            a, sig, _ = coef(s)
            x = a * x0 + sig * noise_like(noise, x)
        if callback is not None:
            out = callback(i, x, x0)
            if out is not None:
                x = out
    return x


def _top_level(path: Path) -> float:
    """σ̃(t_max) = σ/α (exact on VE: σ_max itself): where sampling starts (∞ where α(t_max) = 0)."""
    t = f64(path.t_max)
    a, s = float(path.alpha(t)), float(path.sigma(t))
    return s / a if a > 0 else math.inf


def default_levels(path: Path, steps: int, sigma_data: float = 0.5) -> list[float]:
    """The default noise levels (σ̃, decreasing) of ``steps`` consistency steps (see the module docstring)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"consistency sampling needs at least one step (NFE >= 1), got {steps!r}")
    top = _top_level(path)
    if steps == 1:
        return [top]
    first = min(ICT_LEVEL * sigma_data / ICT_SIGMA_DATA, 0.5 * top)
    if steps == 2:
        return [top, first]
    rest = torch.logspace(math.log10(first), math.log10(first / 10), steps - 1, dtype=torch.float64)
    return [top, *rest.tolist()]


def levels_grid(path: Path, levels: Sequence[float]) -> Tensor:
    """The time grid (steps + 1,) float64 of a decreasing list of noise levels σ̃ whose first is the path's
    σ̃(t_max) (where x_T ~ N(0, prior_std² I) lives), ending at t = 0; ValueError (one line) otherwise."""
    levels = [float(v) for v in levels]
    if not levels:
        raise ValueError("consistency sampling needs at least one noise level (NFE >= 1)")
    top = _top_level(path)
    if not (levels[0] == top or math.isclose(levels[0], top, rel_tol=1e-9)):
        raise ValueError(f"the first noise level must be the path's largest, σ = {top:g}, where sampling starts; got "
                         f"{levels[0]:g}")
    rest = levels[1:]
    if any(not (math.isfinite(v) and 0 < v) for v in rest):
        raise ValueError(f"noise levels after the first must be finite and > 0, got "
                         f"{', '.join(f'{v:g}' for v in rest)}")
    if any(b >= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"noise levels must be strictly decreasing, got {', '.join(f'{v:g}' for v in levels)}")
    t_rest = path.t_of_log_snr(-2 * torch.tensor(rest, dtype=torch.float64).log()) if rest else f64([])
    ts = torch.cat([f64([path.t_max]), t_rest.reshape(-1), f64([0.0])])
    if bool((ts[1:] >= ts[:-1]).any()):
        raise ValueError(f"noise levels {', '.join(f'{v:g}' for v in levels)} map to times that do not decrease on "
                         f"the {path.kind} path (a level below the path's smallest?)")
    return ts


def default_grid(D: Denoiser, steps: int) -> Tensor:
    """The grid of ``default_levels`` for D (σ_d from its parameterisation, else 0.5)."""
    sigma_data = float(getattr(getattr(D, "param", None), "sigma_data", ICT_SIGMA_DATA))
    return levels_grid(D.path, default_levels(D.path, steps, sigma_data))
