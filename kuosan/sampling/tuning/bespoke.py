"""Bespoke multistep solver: model times, query noise levels and per-step coefficients fitted to one model.

In the spirit of Shaul et al. 2023 ("Bespoke Solvers", Eq. (6)-(9): a solver's free parameters trained by
backpropagating the endpoint error through the sampler), DPM-Solver-v3's model-specific coefficients and
AMED-Solver's learned evaluation times (Zhou et al. 2024), on top of DPM-Solver++(2M) in data-prediction form
(Lu et al. 2022b Alg. 2; h = ℓ_{i+1} - ℓ_i in half-log-SNR ℓ = λ/2 = log(α/σ),
Δ_k = x̂_0^{(i-k+1)} - x̂_0^{(i-k)}):
    x_{i+1} = (σ_{i+1}/σ_i)(1 + c_i) x_i + α_{i+1} (1 - e^{-h})(1 + g_i) [x̂_0^{(i)} + (h/(2h') + a_{i,1}) Δ_1
                                                                       + Σ_{k=2..K} a_{i,k} Δ_k],
and into t = 0:  x_0 = x̂_0^{(N-1)} + e_0 (x_{N-1}/α_{N-1} - x̂_0^{(N-1)}) + Σ_{k=1..K} e_k Δ_k.
x̂_0^{(i)} = D(x_i α(τ_i)/α(t_i), τ_i) is queried at a noise level shifted by s_i in the full log-SNR λ from the
grid time t_i, kept within [t_{N-1}, t_max]; the state is rescaled to that time's signal scale. Where α(t_0) = 0
(λ(t_max) = -∞: flow, zero terminal SNR) the first query cannot move (x/α is undefined) and s_0 is ignored; h of
the first step is then +∞ and its update the limit x_1 = (σ_1/σ_0)(1 + c_0) x_0 + α_1 (1 + g_0) x̂_0.
c = g = a = e = s = 0 is DPM-Solver++(2M) exactly. Every query stays a function of x_T and earlier outputs, so
NFE = N; with K = N - 1 the family holds every linear multistep method in x̂_0 (UniPC with its corrector included).
The times use optimise.grid_from_params (monotone softmax increments of log-SNR); the fit is in fit.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ...denoiser import Denoiser
from ...paths import f64
from ..common import Callback, after_step
from ..grids import check_grid
from ..noise import NoiseSource

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
    if not isinstance(history, int) or isinstance(history, bool) or history < 1:
        raise ValueError(f"history must be a positive integer, got {history!r}")
    m = max(steps - 1, 0)
    z = lambda *shape: torch.zeros(*shape, dtype=torch.float64)  # noqa: E731
    return {"c": z(m), "g": z(m), "a": z(m, history), "e": z(history + 1), "s": z(steps)}


def check_coeffs(coeffs: dict[str, Tensor], steps: int) -> dict[str, Tensor]:
    """The coefficients as float64 tensors; ValueError for missing keys, wrong shapes or non-finite values."""
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


def query_times(D: Denoiser, tm: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """Query times τ (N,) and state rescales α(τ)/α(t) (N,) for grid times tm (N,) and λ-shifts s (N,), float64.

    λ(t) + s is clamped to [λ(t_max), λ(t_{N-1})]; τ is written as tm + (t(λ + s) - t(λ)) so that s = 0 gives
    tm exactly while the gradient in s stays alive. A first time with α = 0 keeps τ_0 = t_0 (rescale 1).
    """
    path = D.path
    k0 = int(bool(path.alpha(tm[:1]) == 0))  # α(t_0) = 0: the first query is not shifted
    t_rest, s_rest = tm[k0:], s[k0:].to(torch.float64)
    ls = path.log_snr(t_rest)
    lq = torch.minimum(torch.maximum(ls + s_rest, path.log_snr(f64(path.t_max))), path.log_snr(tm[-1]))
    tq = t_rest + (path.t_of_log_snr(lq) - path.t_of_log_snr(ls))
    rescale = path.alpha(tq) / path.alpha(t_rest)
    return torch.cat([tm[:k0], tq]), torch.cat([torch.ones_like(tm[:k0]), rescale])


def solve(D: Denoiser, x: Tensor, ts: Tensor, co: dict[str, Tensor], cond: dict[str, Any],
          callback: Callback | None = None, progress: bool = False) -> Tensor:
    """The solver, differentiable in x, ts (N+1,) float64 and the coefficients; ts must be valid (callers check)."""
    path = D.path
    n = ts.numel() - 1
    tm = ts[:-1].to(torch.float64)  # grid (model) times (N,)
    alpha, sigma = path.alpha(tm), path.sigma(tm)
    half_lam = 0.5 * path.log_snr(tm)  # ℓ = λ/2 = log(α/σ) (N,), -∞ where α = 0
    tq, rescale = query_times(D, tm, co["s"])
    tq = tq.to(x.device)  # the denoiser's time stays float64
    c, g, a, e = (co[k].to(x) for k in ("c", "g", "a", "e"))
    K = a.shape[1]
    alpha, sigma, half_lam, rescale = (u.to(x) for u in (alpha, sigma, half_lam, rescale))
    steps: Any = range(n)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="bespoke", leave=False)
    x0s: list[Tensor] = []
    for i in steps:
        x0 = D(x * rescale[i], tq[i].expand(x.shape[0]), **cond)  # (B, *D)
        x0s.append(x0)
        diffs = [x0s[-k] - x0s[-k - 1] for k in range(1, min(i, K) + 1)]  # Δ_1..Δ_min(i,K)
        if i == n - 1:  # into t = 0: the denoise plus learned corrections
            x = x0 + e[0] * (x / alpha[i] - x0)
            for k, dk in enumerate(diffs, 1):
                x = x + e[k] * dk
        else:
            h = half_lam[i + 1] - half_lam[i]  # +∞ on a first step from α = 0: then 1 - e^{-h} = 1, h/(2h') = 0
            d = x0
            for k, dk in enumerate(diffs, 1):
                w = a[i, k - 1] + (h / (2 * (half_lam[i] - half_lam[i - 1])) if k == 1 else 0)
                d = d + w * dk
            x = (sigma[i + 1] / sigma[i]) * (1 + c[i]) * x + alpha[i + 1] * (-torch.expm1(-h)) * (1 + g[i]) * d
        x = after_step(callback, i, x, x0)
    return x


@torch.no_grad()
def bespoke(D: Denoiser, x: Tensor, ts: Tensor, *, coeffs: dict[str, Tensor] | None = None,
            noise: NoiseSource | None = None, cond: dict[str, Any] | None = None, progress: bool = False,
            callback: Callback | None = None) -> Tensor:
    """Bespoke 2M solver (module docstring) on grid ts with fitted ``coeffs`` (None: DPM-Solver++(2M)); NFE = N.

    Deterministic: ``noise`` is ignored."""
    check_grid(ts, D.path)
    grid = torch.as_tensor(ts, dtype=torch.float64).cpu()
    steps = grid.numel() - 1
    co = check_coeffs(zero_coeffs(steps) if coeffs is None else coeffs, steps)
    return solve(D, x, grid, co, cond or {}, callback=callback, progress=progress)
