"""Likelihood of a diffusion model: the DDPM variational bound (Ho et al. 2020 Eq. (5)) term by term, in bits/dim.

L = L_T + Σ_{t=2}^T L_{t-1} + L_0 with L_T = KL(q(x_T|x_0) || N(0, I)), L_{t-1} = KL(q(x_{t-1}|x_t, x_0) ||
p_θ(x_{t-1}|x_t)) and L_0 = -log p_θ(x_0|x_1), the discretised Gaussian decoder of Eq. (13) (or the Gaussian
density for continuous data). The probability-flow ODE NLL lives in :mod:`kuosan.likelihood_ode` (re-exported).
Shapes: x0 (B, *D); per-sample results (B,); d = numel of one sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from .denoiser import Denoiser
from .forward import expand, posterior, q_sample
from .likelihood_ode import ODENLLResult, mean_stderr, ode_nll
from .variance import VARIANCE_KINDS, AnalyticTable, VarianceKind, gaussian_kl, reverse_variance

__all__ = ["ODENLLResult", "VLBResult", "check_bits", "decoder_nll", "discretised_gaussian_log_likelihood",
           "gaussian_log_likelihood", "ode_nll", "vlb"]

NetVariance = Callable[[Tensor, Tensor], Tensor]  # (x_t, t) -> v in [-1, 1], (B, *D): learned-range output


def check_bits(bits: Any) -> None:
    if not isinstance(bits, int) or isinstance(bits, bool) or bits < 1:
        raise ValueError(f"bits must be a positive integer (bit depth of the data), got {bits!r}")


def check_unit_range(x: Tensor) -> None:
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 - 1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"data outside [-1, 1] (min {lo:.4g}, max {hi:.4g}); discrete data must lie on the "
                         "2^bits grid in [-1, 1]")


def _log_normal_mass(a: Tensor, b: Tensor) -> Tensor:
    """log(Φ(b) - Φ(a)) for a < b, stable in both tails (use the mirrored interval when it lies right of 0)."""
    right = (a + b) > 0
    a, b = torch.where(right, -b, a), torch.where(right, -a, b)
    lb, la = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return lb + torch.log1p(-torch.exp(la - lb).clamp(max=1 - 1e-16))


def discretised_gaussian_log_likelihood(x: Tensor, mean: Tensor, var: Tensor, bits: int = 8) -> Tensor:
    """Ho et al. Eq. (13): log ∫_{δ-(x)}^{δ+(x)} N(u; mean, var) du per element (nats), bins of the 2^bits grid.

    The grid is -1 + 2k/(2^bits - 1), k = 0..2^bits-1; a bin spans ±1/(2^bits - 1) around its point, and the
    end bins extend to ∓inf so the masses over the grid sum to 1. ``var`` broadcasts against x.
    """
    check_bits(bits)
    check_unit_range(x)
    half = 1.0 / (2**bits - 1)
    std = torch.as_tensor(var, dtype=mean.dtype, device=mean.device).sqrt()
    inf = torch.full_like(x, math.inf)
    lo = torch.where(x < -1 + half, -inf, (x - half - mean) / std)  # lowest bin: (-inf, -1 + half]
    hi = torch.where(x > 1 - half, inf, (x + half - mean) / std)  # highest bin: [1 - half, inf)
    return _log_normal_mass(lo, hi)


def gaussian_log_likelihood(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """log N(x; mean, var) per element (nats)."""
    var = torch.as_tensor(var, dtype=mean.dtype, device=mean.device)
    return -0.5 * (math.log(2 * math.pi) + var.log() + (x - mean) ** 2 / var)


def decoder_nll(x0: Tensor, mean: Tensor, var: Tensor, bits: int | None = 8) -> Tensor:
    """-log p(x_0|x_1) per element (nats): discretised (bits) or continuous Gaussian density (bits=None)."""
    if bits is None:
        return -gaussian_log_likelihood(x0, mean, var)
    return -discretised_gaussian_log_likelihood(x0, mean, var, bits)


@dataclass(frozen=True)
class VLBResult:
    """The bound in bits/dim. Means over the batch; stderr is the standard error of total_bpd over the batch
    (it includes the noise of the x_t draws and, with t_samples, of the timestep sampling)."""

    total_bpd: float
    stderr: float
    prior_bpd: float  # L_T
    diffusion_bpd: float  # Σ_{t=2}^T L_{t-1}
    decoder_bpd: float  # L_0
    per_sample_bpd: Tensor  # (B,) total per sample
    terms_bpd: Tensor | None  # (T,) batch means, entry j = L_j (L_0 decoder); None with t_samples
    t_samples: int | None = None


def _rep(cond: dict[str, Any], n: int) -> dict[str, Any]:
    """Repeat per-sample conditioning tensors n times along the batch (rows ordered (n, B))."""
    return {k: v.repeat(n, *([1] * (v.ndim - 1))) if isinstance(v, Tensor) and v.ndim > 0 else v
            for k, v in cond.items()}


def _step_nats(D: Denoiser, x0: Tensor, t: Tensor, variance: str, bits: int | None, generator, analytic_table,
               net_variance: NetVariance | None, cond: dict[str, Any]) -> Tensor:
    """One-noise-draw estimate (M,) in nats of L_{t-1} (t >= 2: Gaussian KL) or L_0 (t = 1: decoder), rows of x0."""
    sched, dims = D.schedule, tuple(range(1, x0.ndim))
    s = t - 1
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    x_t = q_sample(sched, x0, t, noise)
    x0_hat = D(x_t, t, **cond)
    net_v = net_variance(x_t, t) if variance == "learned_range" else None
    var = reverse_variance(variance, sched, t, s, net_v=net_v, analytic_table=analytic_table)
    var = var.to(x0.dtype).to(x0.device)
    var = var if var.ndim == x0.ndim else expand(var, x0)
    model_mean = posterior(sched, x0_hat, x_t, t, s).mean  # μ̃(x_t, x̂_0); at s = 0 this is x̂_0
    at_data = s <= 0
    if bool(at_data.all()):
        return decoder_nll(x0, model_mean, var, bits).sum(dims)
    true = posterior(sched, x0, x_t, t, s)
    true_var = torch.where(true.var > 0, true.var, torch.ones_like(true.var))  # s = 0 rows are replaced below
    kl = gaussian_kl(true.mean, expand(true_var, x0), model_mean, var).sum(dims)
    if bool(at_data.any()):
        kl = torch.where(at_data, decoder_nll(x0, model_mean, var, bits).sum(dims), kl)
    return kl


@torch.no_grad()
def vlb(D: Denoiser, x0: Tensor, *, variance: VarianceKind = "beta_tilde", bits: int | None = 8,
        t_samples: int | None = None, generator: torch.Generator | None = None,
        analytic_table: AnalyticTable | None = None, net_variance: NetVariance | None = None,
        max_batch: int | None = None, cond: dict[str, Any] | None = None) -> VLBResult:
    """Ho et al. Eq. (5) per sample in bits/dim: L_T + Σ_{t=2}^T L_{t-1} + L_0, one x_t draw per term.

    t_samples=None sums all T-1 KL terms. t_samples=k draws k timesteps uniformly from 2..T (with replacement)
    per sample and uses (T-1)·mean_j L_{t_j - 1}: unbiased for the sum, with extra variance that shows in stderr.
    max_batch bounds the rows per denoiser call (several timesteps share a call); default: one timestep per call.
    """
    if variance not in VARIANCE_KINDS:
        raise ValueError(f"unknown variance {variance!r}; choose one of {', '.join(VARIANCE_KINDS)}")
    if variance == "learned_range" and net_variance is None:
        raise ValueError("variance 'learned_range' needs net_variance(x_t, t) -> v in [-1, 1]")
    if variance == "analytic" and analytic_table is None:
        raise ValueError("variance 'analytic' needs analytic_table (see kuosan.variance.estimate_analytic_table)")
    if bits is not None:
        check_bits(bits)
        check_unit_range(x0)
    if t_samples is not None and (not isinstance(t_samples, int) or isinstance(t_samples, bool) or t_samples < 1):
        raise ValueError(f"t_samples must be a positive integer or None, got {t_samples!r}")
    if max_batch is not None and (not isinstance(max_batch, int) or max_batch < 1):
        raise ValueError(f"max_batch must be a positive integer or None, got {max_batch!r}")
    sched, cond = D.schedule, cond or {}
    T, B, d = sched.T, x0.shape[0], x0[0].numel()
    dims, nats_to_bpd = tuple(range(1, x0.ndim)), 1.0 / (d * math.log(2))
    step = lambda xs, ts, n: _step_nats(D, xs, ts, variance, bits, generator, analytic_table,  # noqa: E731
                                        net_variance, _rep(cond, n))

    # L_T: KL(N(α_T x_0, σ_T² I) || N(0, I)), closed form per sample.
    tT = torch.full((B,), float(T), dtype=torch.float64)
    a2, s2 = sched.alpha_bar(tT).to(x0), (-torch.expm1(sched.log_alpha_bar(tT))).to(x0)
    prior = 0.5 * (expand(s2, x0) + expand(a2, x0) * x0**2 - 1 - expand(s2.log(), x0)).sum(dims)

    decoder = step(x0, torch.ones(B, dtype=x0.dtype, device=x0.device), 1)  # L_0

    rows = max(1, (max_batch or B) // B)  # timesteps per denoiser call
    terms = None
    if T < 2:
        diffusion = torch.zeros_like(prior)
    elif t_samples is None:
        ts_all = torch.arange(2, T + 1, dtype=x0.dtype, device=x0.device)
        per_t = []
        for chunk in ts_all.split(rows):  # (n,) timesteps -> rows ordered (n, B)
            n = chunk.numel()
            per_t.append(step(x0.repeat(n, *([1] * (x0.ndim - 1))), chunk.repeat_interleave(B), n).reshape(n, B))
        kl = torch.cat(per_t)  # (T-1, B)
        diffusion = kl.sum(0)
        terms = torch.cat([decoder.mean()[None], kl.mean(1)]) * nats_to_bpd
    else:
        t = torch.randint(2, T + 1, (t_samples, B), generator=generator, device=x0.device).to(x0.dtype)
        draws = [step(x0.repeat(n, *([1] * (x0.ndim - 1))), tc.reshape(-1), n).reshape(n, B)
                 for tc in t.split(rows) for n in [tc.shape[0]]]
        diffusion = (T - 1) * torch.cat(draws).mean(0)

    total = (prior + diffusion + decoder) * nats_to_bpd
    mean, se = mean_stderr(total)
    return VLBResult(mean, se, float(prior.mean()) * nats_to_bpd, float(diffusion.mean()) * nats_to_bpd,
                     float(decoder.mean()) * nats_to_bpd, total, terms, t_samples)
