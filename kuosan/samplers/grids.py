"""Time-step grids: descending t_0 = start > t_1 > ... > t_N = 0, paper indexing (t = 0 is data).

A sampler with N steps evaluates the denoiser at t_0..t_{N-1} and lands on t_N = 0. Each step goes
from t_i to the grid's own next value, so every spacing has the correct previous timestep (diffusers
computes prev = t - T//N, wrong for ``linspace`` and off the end for ``trailing``).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from torch import Tensor

from ..schedules import Schedule

Spacing = Literal["leading", "trailing", "linspace"]
SPACINGS: tuple[str, ...] = get_args(Spacing)


def check_steps(steps: int, T: int | None = None) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"the number of sampling steps must be a positive integer, got {steps!r}")
    if T is not None and steps > T:
        raise ValueError(f"{steps} sampling steps exceed the schedule's T = {T}")


def check_grid(ts: Tensor, T: int | None = None) -> list[float]:
    """The grid as floats; ValueError unless 1-D, finite, strictly descending, within [0, T], ending at t = 0."""
    ts = torch.as_tensor(ts, dtype=torch.float64)
    if ts.ndim != 1 or ts.numel() < 2:
        raise ValueError(f"the time grid must be 1-D with at least 2 points (1 step), got shape {tuple(ts.shape)}")
    if not bool(torch.isfinite(ts).all()) or ts[-1].item() != 0.0:
        raise ValueError(f"the time grid must be finite and end at t = 0 (data), got last value {ts[-1].item()!r}")
    if not bool((ts[1:] < ts[:-1]).all()):
        raise ValueError("the time grid must be strictly descending (repeated or rising times make a zero step)")
    if T is not None and ts[0].item() > T:
        raise ValueError(f"the time grid starts at t = {ts[0].item():g}, beyond the schedule's T = {T}")
    return ts.tolist()


def pairs(grid: list[float], progress: bool = False, desc: str = "sampling") -> Any:
    """Steps (t_i, t_{i+1}) of a grid, wrapped in a tqdm bar when ``progress``."""
    steps = list(zip(grid[:-1], grid[1:]))
    if progress:
        from tqdm.auto import tqdm

        return tqdm(steps, desc=desc, leave=False)
    return steps


def full(x: Tensor, t: float) -> Tensor:
    """The time t as a (B,) tensor matching x's batch, device and dtype."""
    return torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)


def uniform_grid(T: int, steps: int, spacing: str = "trailing") -> Tensor:
    """Integer grid of ``steps`` model times plus the final 0 (DDIM §4.2; Lin et al. 2024 Table 2).

    leading: 1 + k·⌊T/N⌋ (never reaches T); trailing: round(T - k·T/N) (starts at T);
    linspace: round of N points evenly from T to 1.
    """
    check_steps(steps, T)
    if spacing == "leading":
        ts = (torch.arange(steps, dtype=torch.float64) * (T // steps) + 1).flip(0)
    elif spacing == "trailing":
        ts = torch.round(T - torch.arange(steps, dtype=torch.float64) * (T / steps))
    elif spacing == "linspace":
        ts = torch.round(torch.linspace(T, 1, steps, dtype=torch.float64))
    else:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    return torch.cat([ts, ts.new_zeros(1)])


def logsnr_grid(sched: Schedule, steps: int, t_min: float = 1.0) -> Tensor:
    """Uniform in log-SNR λ between λ(T) and λ(t_min) (DPM-Solver's 'logSNR' order), then 0."""
    check_steps(steps)
    lam = torch.linspace(sched.log_snr(torch.tensor(float(sched.T), dtype=torch.float64)).item(),
                         sched.log_snr(torch.tensor(t_min, dtype=torch.float64)).item(), steps, dtype=torch.float64)
    ts = sched.t_from_log_snr(lam)
    ts[0] = float(sched.T)
    return torch.cat([ts, ts.new_zeros(1)])


def karras_grid(sched: Schedule, steps: int, rho: float = 7.0, t_min: float = 1.0) -> Tensor:
    """Karras et al. 2022 Eq. (5): σ_i = (σ_max^{1/ρ} + i/(N-1)(σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ in VE σ = σ/α."""
    check_steps(steps)
    smax = sched.sigma_max()
    smin = float(torch.exp(-0.5 * sched.log_snr(torch.tensor(t_min, dtype=torch.float64))))
    i = torch.arange(steps, dtype=torch.float64) / max(steps - 1, 1)
    sig = (smax ** (1 / rho) + i * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    ts = sched.t_from_log_snr(-2 * sig.log())
    ts[0] = float(sched.T)
    return torch.cat([ts, ts.new_zeros(1)])
