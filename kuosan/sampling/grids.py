"""Time grids: descending t_0 <= t_max > t_1 > ... > t_N = 0 on any path (t = 0 is data).

A sampler with N steps evaluates the denoiser at t_0..t_{N-1} and lands on t_N = 0; each step goes from t_i to
the grid's own next value, so every spacing has the correct previous time (diffusers computes prev = t - T//N,
wrong for ``linspace`` and off the end for ``trailing``).

Kinds (``make_grid``):
- ``uniform``: the integer spacings of DDIM §4.2 / Lin et al. 2024 Table 2 on the discrete chain; ``leading``
  and ``linspace`` are defined on its integer steps only, ``trailing`` on any path (uniform in t from t_max).
- ``logsnr``: uniform in λ = log(α²/σ²) (DPM-Solver's "logSNR" order, Lu et al. 2022a §3.3);
- ``karras``: Karras et al. 2022 Eq. (5), ρ = 7 in the VE noise level σ̃ = σ/α.
Both of the last two start at t_max (or a given t_start) and space their interior points between a finite start
and an end t_min. The start is λ(t_max) where that is finite; where α(t_max) = 0 (λ = -∞: flow, VP cosine to
t = 1, zero terminal SNR) it is σ̃ = VE_SIGMA_START = 80 (Karras et al.'s σ_max), projected onto the path (a short
zero-terminal-SNR chain reaches only σ̃(T-1)), and the first step, t_max -> t_1, leaves σ̃ = ∞ (each sampler's
docstring says how; the error this costs is about Var[x_0]^{3/2}/(2·80²), far below 10-NFE discretisation error,
while spacing from σ̃ = 10³ would spend steps on noise). The default end t_min is step 1 on the discrete chain (as
in the first half of kuosan) and the time where σ̃ = 0.002 (Karras et al.'s σ_min) on continuous paths.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from ..paths import Path, f64, require_discrete

Spacing = Literal["leading", "trailing", "linspace"]
SPACINGS: tuple[str, ...] = get_args(Spacing)
GridKind = Literal["uniform", "logsnr", "karras"]
GRID_KINDS: tuple[str, ...] = get_args(GridKind)
VE_SIGMA_START = 80.0  # finite start of logsnr/karras spacing where σ̃(t_max) = ∞ (Karras et al. 2022 σ_max)
VE_SIGMA_END = 0.002  # default end σ̃ on continuous paths (Karras et al. 2022 σ_min)


def check_steps(steps: int, T: int | None = None) -> None:
    """ValueError unless ``steps`` is a positive integer (at most T on the discrete chain's integer grids)."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"the number of sampling steps must be a positive integer, got {steps!r}")
    if T is not None and steps > T:
        raise ValueError(f"{steps} sampling steps exceed the schedule's T = {T}")


def check_grid(ts: Tensor, path: Path) -> list[float]:
    """The grid as floats; ValueError unless 1-D, finite, strictly descending, within [0, t_max], ending at 0."""
    ts = torch.as_tensor(ts, dtype=torch.float64)
    if ts.ndim != 1 or ts.numel() < 2:
        raise ValueError(f"the time grid must be 1-D with at least 2 points (1 step), got shape {tuple(ts.shape)}")
    if not bool(torch.isfinite(ts).all()) or ts[-1].item() != 0.0:
        raise ValueError(f"the time grid must be finite and end at t = 0 (data), got last value {ts[-1].item()!r}")
    if not bool((ts[1:] < ts[:-1]).all()):
        raise ValueError("the time grid must be strictly descending (repeated or rising times make a zero step)")
    if ts[0].item() > path.t_max:
        raise ValueError(f"the time grid starts at t = {ts[0].item():g}, beyond the path's t_max = {path.t_max:g}")
    if _lam(path, ts[1].item()) == -math.inf:
        raise ValueError(f"the time grid has two times with α = 0 (σ̃ = ∞), t = {ts[0].item():g} and "
                         f"{ts[1].item():g}, between which nothing changes: start the grid at one of them")
    return ts.tolist()


def default_t_min(path: Path) -> float:
    """Last model time of logsnr/karras grids: step 1 on the discrete chain, σ̃ = 0.002 on continuous paths."""
    if getattr(path, "T", None) is not None:
        return 1.0
    return float(path.t_of_log_snr(f64(-2 * math.log(VE_SIGMA_END))))


def _lam(path: Path, t: float) -> float:
    return float(path.log_snr(f64(t)))


def spacing_start(path: Path, t_start: float) -> float:
    """λ where logsnr/karras spacing starts: λ(t_start) if finite, else σ̃ = VE_SIGMA_START on the path."""
    lam = _lam(path, t_start)
    if math.isfinite(lam):
        return lam
    # project onto the path: t(λ) clamps where the path cannot reach that λ (zero-terminal-SNR chain: T - 1)
    return _lam(path, float(path.t_of_log_snr(f64(-2 * math.log(VE_SIGMA_START)))))


def _finish(path: Path, ts: Tensor, t_start: float) -> Tensor:
    ts[0] = t_start
    out = torch.cat([ts, ts.new_zeros(1)])
    check_grid(out, path)
    return out


def _check_ends(path: Path, t_start: float | None, t_min: float | None) -> tuple[float, float]:
    t_start = path.t_max if t_start is None else float(t_start)
    t_min = default_t_min(path) if t_min is None else float(t_min)
    if not (0 < t_min < t_start <= path.t_max):
        raise ValueError(f"a grid needs 0 < t_min < t_start <= t_max = {path.t_max:g}, got t_min={t_min:g}, "
                         f"t_start={t_start:g}")
    return t_start, t_min


def uniform_grid(path: Path, steps: int, spacing: Spacing = "trailing") -> Tensor:
    """``steps`` model times plus the final 0 (DDIM §4.2; Lin et al. 2024 Table 2).

    Discrete chain (integers): leading 1 + k·⌊T/N⌋ (never reaches T); trailing round(T - k·T/N) (starts at T);
    linspace round of N points evenly from T to 1. Continuous paths: trailing only, t_max·(1 - k/N).
    """
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    if spacing != "trailing":
        require_discrete(path, f"the {spacing!r} spacing (integer steps of the chain)")
    T = getattr(path, "T", None)
    check_steps(steps, T)
    k = torch.arange(steps, dtype=torch.float64)
    if T is None:
        ts = path.t_max * (1 - k / steps)
    elif spacing == "leading":
        ts = (k * (T // steps) + 1).flip(0)
    elif spacing == "trailing":
        ts = torch.round(T - k * (T / steps))
    else:
        ts = torch.round(torch.linspace(T, 1, steps, dtype=torch.float64))
    return torch.cat([ts, ts.new_zeros(1)])


def logsnr_grid(path: Path, steps: int, *, t_min: float | None = None, t_start: float | None = None) -> Tensor:
    """t_start (default t_max), then uniform in λ from the spacing start (module docstring) to λ(t_min), then 0."""
    check_steps(steps)
    t_start, t_min = _check_ends(path, t_start, t_min)
    lam = torch.linspace(spacing_start(path, t_start), _lam(path, t_min), steps, dtype=torch.float64)
    return _finish(path, path.t_of_log_snr(lam), t_start)


def karras_grid(path: Path, steps: int, *, rho: float = 7.0, t_min: float | None = None,
                t_start: float | None = None) -> Tensor:
    """Karras et al. 2022 Eq. (5), σ̃_i = (σ̃_max^{1/ρ} + i/(N-1)(σ̃_min^{1/ρ} - σ̃_max^{1/ρ}))^ρ,
    after t_start."""
    check_steps(steps)
    if not (rho > 0 and math.isfinite(rho)):
        raise ValueError(f"rho must be a finite number > 0, got {rho!r}")
    t_start, t_min = _check_ends(path, t_start, t_min)
    smax = math.exp(-0.5 * spacing_start(path, t_start))
    smin = math.exp(-0.5 * _lam(path, t_min))
    i = torch.arange(steps, dtype=torch.float64) / max(steps - 1, 1)
    sig = (smax ** (1 / rho) + i * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    return _finish(path, path.t_of_log_snr(-2 * sig.log()), t_start)


def default_grid(path: Path) -> GridKind:
    """The grid kind used where none is asked for: ``karras`` on the VE path (Karras et al. 2022 Eq. (5)), uniform
    (trailing) on every other path.

    Uniform steps in t = σ̃ from σ_max = 80 spend the budget at large σ̃ and end with one denoise at σ̃ = 80/N:
    on an EDM-trained digits model 10 DDIM steps gave FD 22.9 there against 0.98 on the Karras grid; on the
    cosine chain, the flow path and the continuous VP paths the uniform grid was the best fixed grid or tied with
    it at 3 to 20 steps (README, "Default grids")."""
    return "karras" if path.kind == "ve" else "uniform"


def grid_kind(path: Path, grid: str | None, spacing: str | None) -> str:
    """The grid a caller asked for: ``grid``, else uniform where a ``spacing`` was given (it spaces the uniform
    grid; never dropped in favour of another grid), else the path's ``default_grid``."""
    return grid or ("uniform" if spacing is not None else default_grid(path))


def make_grid(path: Path, steps: int, kind: str = "uniform", spacing: str = "trailing", **kw: Any) -> Tensor:
    """The grid called ``kind`` (one of GRID_KINDS) with ``steps`` model times; ``spacing`` for uniform grids.

    Optimised grids are fitted per model and sampler: see :mod:`kuosan.sampling.tuning`."""
    if kind == "uniform":
        return uniform_grid(path, steps, spacing)  # type: ignore[arg-type]
    if kind == "logsnr":
        return logsnr_grid(path, steps, **kw)
    if kind == "karras":
        return karras_grid(path, steps, **kw)
    raise ValueError(f"unknown grid {kind!r}; choose one of {', '.join(GRID_KINDS)} (optimised grids: "
                     "kuosan.sampling.tuning)")
