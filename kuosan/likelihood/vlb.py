"""The DDPM variational bound (Ho et al. 2020 Eq. (5)) term by term, in bits/dim, on the discrete VP chain.

L = L_T + Σ_{t=2}^T L_{t-1} + L_0 with L_T = KL(q(x_T|x_0) || N(0, I)), L_{t-1} = KL(q(x_{t-1}|x_t, x_0) ||
p_θ(x_{t-1}|x_t)) and L_0 = -log p_θ(x_0|x_1), the discretised Gaussian decoder of Eq. (13) (or the Gaussian
density for continuous data). The bound is a sum over the chain's T steps, so it is defined on a discrete path
only (a continuous path raises PathError; its likelihood is kuosan.likelihood.ode_nll).
Shapes: x0 (B, *D); per-sample results (B,); d = numel of one sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..broadcast import expand
from ..denoiser import Denoiser, has_variance
from ..forward import posterior, q_sample
from ..gaussian import check_bits, check_unit_range, decoder_nll, gaussian_kl
from ..paths import f64, require_discrete
from .stats import mean_stderr, nats_to_bits_per_dim
from .variances import VARIANCE_KINDS, AnalyticTable, VarianceKind, reverse_variance


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


def _step_nats(D: Denoiser, x0: Tensor, t: Tensor, variance: VarianceKind, bits: int | None,
               generator: torch.Generator | None, analytic_table: AnalyticTable | None,
               cond: dict[str, Any]) -> Tensor:
    """One-noise-draw estimate (M,) in nats of L_{t-1} (t >= 2: Gaussian KL) or L_0 (t = 1: decoder), rows of x0."""
    path, dims = D.path, tuple(range(1, x0.ndim))
    t = f64(t, x0.device)
    s = t - 1
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    x_t = q_sample(path, x0, t, noise)
    if variance == "learned_range":  # improved DDPM: the same network call gives x̂_0 and v
        x0_hat, net_v = D.with_variance(x_t, t, **cond)  # type: ignore[attr-defined]
    else:
        x0_hat, net_v = D(x_t, t, **cond), None
    var = reverse_variance(variance, path, t, s, net_v=net_v, analytic_table=analytic_table)
    var = var.to(x0.dtype).to(x0.device)
    var = var if var.ndim == x0.ndim else expand(var, x0)
    model_mean = posterior(path, x0_hat, x_t, t, s).mean  # μ̃(x_t, x̂_0); at s = 0 this is x̂_0
    at_data = s <= 0
    if bool(at_data.all()):
        return decoder_nll(x0, model_mean, var, bits).sum(dims)
    true = posterior(path, x0, x_t, t, s)
    true_var = torch.where(true.var > 0, true.var, torch.ones_like(true.var))  # s = 0 rows are replaced below
    kl = gaussian_kl(true.mean, expand(true_var, x0), model_mean, var).sum(dims)
    if bool(at_data.any()):
        kl = torch.where(at_data, decoder_nll(x0, model_mean, var, bits).sum(dims), kl)
    return kl


def _check_args(D: Denoiser, x0: Tensor, variance: str, bits: int | None, t_samples: int | None,
                analytic_table: AnalyticTable | None, max_batch: int | None) -> None:
    if variance not in VARIANCE_KINDS:
        raise ValueError(f"unknown variance {variance!r}; choose one of {', '.join(VARIANCE_KINDS)}")
    if variance == "learned_range" and not (has_variance(D) and hasattr(D, "with_variance")):
        raise ValueError("variance 'learned_range' needs a denoiser with a learned variance (with_variance, "
                         "learns_variance = True)")
    if variance == "analytic" and analytic_table is None:
        raise ValueError("variance 'analytic' needs analytic_table (see kuosan.likelihood.estimate_analytic_table)")
    if bits is not None:
        check_bits(bits)
        check_unit_range(x0)
    if t_samples is not None and (not isinstance(t_samples, int) or isinstance(t_samples, bool) or t_samples < 1):
        raise ValueError(f"t_samples must be a positive integer or None, got {t_samples!r}")
    if max_batch is not None and (not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1):
        raise ValueError(f"max_batch must be a positive integer or None, got {max_batch!r}")


@torch.no_grad()
def vlb(D: Denoiser, x0: Tensor, *, variance: VarianceKind = "beta_tilde", bits: int | None = 8,
        t_samples: int | None = None, generator: torch.Generator | None = None,
        analytic_table: AnalyticTable | None = None, max_batch: int | None = None,
        cond: dict[str, Any] | None = None, progress: bool = False) -> VLBResult:
    """Ho et al. Eq. (5) per sample in bits/dim: L_T + Σ_{t=2}^T L_{t-1} + L_0, one x_t draw per term.

    t_samples=None sums all T-1 KL terms. t_samples=k draws k timesteps uniformly from 2..T (with replacement)
    per sample and uses (T-1)·mean_j L_{t_j - 1}: unbiased for the sum, with extra variance that shows in stderr.
    max_batch bounds the rows per denoiser call (several timesteps share a call); default: one timestep per call.
    variance='learned_range' reads v from ``D.with_variance``. ``progress`` shows a bar over the denoiser calls.
    """
    path = require_discrete(D.path, "the discrete variational bound")
    _check_args(D, x0, variance, bits, t_samples, analytic_table, max_batch)
    cond = cond or {}
    T, B, d = path.T, x0.shape[0], x0[0].numel()
    dims, to_bpd = tuple(range(1, x0.ndim)), nats_to_bits_per_dim(d)

    def step(xs: Tensor, ts: Tensor, n: int) -> Tensor:
        return _step_nats(D, xs, ts, variance, bits, generator, analytic_table, _rep(cond, n))

    def rep(n: int) -> Tensor:
        return x0.repeat(n, *([1] * (x0.ndim - 1)))

    # L_T: KL(N(α_T x_0, σ_T² I) || N(0, I)), closed form per sample.
    tT = torch.full((B,), float(T), dtype=torch.float64)
    a, s2 = path.alpha(tT), path.sigma(tT) ** 2
    prior = 0.5 * (expand(s2, x0) + expand(a**2, x0) * x0**2 - 1 - expand(s2.log(), x0)).sum(dims)

    decoder = step(x0, torch.ones(B, dtype=torch.float64), 1)  # L_0

    rows = max(1, (max_batch or B) // B)  # timesteps per denoiser call
    terms = None
    if T < 2:
        diffusion = torch.zeros_like(prior)
    elif t_samples is None:
        chunks = list(torch.arange(2, T + 1, dtype=torch.float64).split(rows))
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc="variational bound", leave=False)
        per_t = []
        for chunk in chunks:  # (n,) timesteps -> rows ordered (n, B)
            n = chunk.numel()
            per_t.append(step(rep(n), chunk.repeat_interleave(B), n).reshape(n, B))
        kl = torch.cat(per_t)  # (T-1, B)
        diffusion = kl.sum(0)
        terms = torch.cat([decoder.mean()[None], kl.mean(1)]) * to_bpd
    else:
        t = torch.randint(2, T + 1, (t_samples, B), generator=generator, device=x0.device).to(torch.float64)
        chunks = list(t.split(rows))
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc="variational bound", leave=False)
        draws = [step(rep(tc.shape[0]), tc.reshape(-1), tc.shape[0]).reshape(tc.shape[0], B) for tc in chunks]
        diffusion = (T - 1) * torch.cat(draws).mean(0)

    total = (prior + diffusion + decoder) * to_bpd
    mean, se = mean_stderr(total)
    return VLBResult(mean, se, float(prior.mean()) * to_bpd, float(diffusion.mean()) * to_bpd,
                     float(decoder.mean()) * to_bpd, total, terms, t_samples)


__all__ = ["VLBResult", "vlb"]
