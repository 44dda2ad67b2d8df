"""Reverse-process variances σ² of p(x_s|x_t) = N(μ̃(x_t, x̂_0), σ² I) on any Gaussian path,
and improved DDPM's L_vlb.

For a jump t -> s < t with Δλ = λ_t - λ_s <= 0 (see kuosan.forward): σ²_{t|s} = σ_t²(1 - e^{Δλ}) (the forward
jump variance, β_t for s = t-1 on the discrete chain) and β̃ = σ²_{t|s} σ_s²/σ_t² = (1 - e^{Δλ}) σ_s² (the
posterior variance). Kinds:

- ``beta_tilde``: β̃ (Ho et al. 2020 §3.2); at s = 0, where β̃ = 0, the decoder takes σ²_{t|0} = σ_t² (β_1:
  Ho et al.'s σ_1², exact for N(0, I) data). Improved DDPM's code clips to β̃_2 there instead, which costs
  0.16 bits/dim more on N(0, I) (bound gap 0.835 against 0.671 bits/dim).
- ``beta``: σ²_{t|s}.
- ``learned_range``: Nichol & Dhariwal 2021 Eq. (15), log σ² = v' log σ²_{t|s} + (1-v') log β̃ with the network's
  v ∈ [-1, 1] mapped to v' = (v+1)/2 ∈ [0, 1]; per element, so (B, *D).
- ``analytic``: Bao et al. 2022 (Analytic-DPM) Thm 1 with the paper's λ_n² = β̃ (the DDPM case; its λ_n is not
  the log-SNR λ), for any jump and path:
  σ*² = β̃ + c² E||x_0 - x̂_0||²/d with c = α_s(1 - e^{Δλ}) the x_0-coefficient of μ̃, and
  E||x_0 - x̂_0||²/d = e^{-λ_t}(1 - Γ_t), Γ_t = E||ε̂(x_t, t)||²/d (ε̂ = E[ε|x_t], so
  E||ε - ε̂||²/d = 1 - Γ_t). For s = t-1 on the chain this is the paper's
  λ_n² + (sqrt(β̄_n/α_n) - sqrt(β̄_{n-1} - λ_n²))² (1 - Γ_n). Where α_t = 0 (λ_t = -∞, zero terminal SNR)
  Γ carries no information (0·∞); there the table's directly measured x0_mse = E||x_0 - x̂_0||²/d is used instead.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

import torch
from torch import Tensor

from ..broadcast import batch_times, expand
from ..denoiser import Denoiser, eps_of
from ..forward import jump_variance, posterior, posterior_variance, q_sample
from ..gaussian import decoder_nll, gaussian_kl
from ..paths import Path, f64, require_discrete
from ..paths.discrete_vp import interp

VarianceKind = Literal["beta_tilde", "beta", "learned_range", "analytic"]
VARIANCE_KINDS: tuple[str, ...] = get_args(VarianceKind)


class AnalyticTable(NamedTuple):
    """Γ_t = E||ε̂(x_t, t)||²/d on an increasing grid of times ts > 0 (each (K,), float64).

    ``x0_mse`` (K,) = E||x_0 - x̂_0||²/d, measured on the same draws; read only where α_t = 0, where Γ says nothing
    (a table without it cannot serve such times)."""

    ts: Tensor
    gamma: Tensor
    x0_mse: Tensor | None = None


def clipped_log_beta_tilde(path: Path, t: Tensor, s: Tensor) -> Tensor:
    """log β̃_{t→s} (float64); where β̃ = 0 (s = 0) log σ²_{t|s} (= log β_1 for the DDPM decoder)."""
    t, s = f64(t), f64(s)
    bt = posterior_variance(path, t, s)
    return torch.where(bt > 0, bt, jump_variance(path, t, s)).clamp_min(1e-300).log()


def _table_at(table: AnalyticTable, values: Tensor, t: Tensor) -> Tensor:
    """Column ``values`` of the table at times t (B,) by linear interpolation in t; t outside the grid -> ValueError."""
    ts, g = f64(table.ts).cpu(), f64(values).cpu()
    tq = f64(t).cpu()
    if ts.ndim != 1 or ts.shape != g.shape or ts.numel() < 1:
        raise ValueError("analytic_table must hold 1-D ts and gamma (and x0_mse) of equal length")
    order = ts.argsort()
    ts, g = ts[order], g[order]
    if bool((tq < ts[0] - 1e-9).any() or (tq > ts[-1] + 1e-9).any()):
        raise ValueError(f"analytic_table covers t in [{ts[0].item():g}, {ts[-1].item():g}], asked for "
                         f"t in [{tq.min().item():g}, {tq.max().item():g}]")
    if ts.numel() == 1:
        return g.expand_as(tq).clone()
    return interp(tq, ts, g)


def gamma_at(table: AnalyticTable, t: Tensor) -> Tensor:
    """Γ at times t (B,) by linear interpolation in t over the table's grid; t outside it -> ValueError."""
    return _table_at(table, table.gamma, t)


def analytic_x0_mse(path: Path, table: AnalyticTable, t: Tensor) -> Tensor:
    """E||x_0 - x̂_0||²/d at times t (B,): e^{-λ_t}(1 - Γ_t), or the table's x0_mse where α_t = 0 (λ_t = -∞)."""
    t = f64(t).cpu()
    lam = path.log_snr(t).cpu()
    from_gamma = torch.exp(-lam.clamp_min(-700.0)) * (1 - gamma_at(table, t))
    at_zero_snr = torch.isneginf(lam)
    if not bool(at_zero_snr.any()):
        return from_gamma
    if table.x0_mse is None:
        raise ValueError("analytic_table has no x0_mse, which the analytic variance needs where α(t) = 0 "
                         "(zero terminal SNR); rebuild it with estimate_analytic_table")
    return torch.where(at_zero_snr, _table_at(table, table.x0_mse, t), from_gamma)


def reverse_variance(kind: VarianceKind, path: Path, t: Tensor, s: Tensor, *, net_v: Tensor | None = None,
                     analytic_table: AnalyticTable | None = None) -> Tensor:
    """σ² of p(x_s|x_t) on any path: (B,) float64, or (B, *D) in net_v's dtype for ``learned_range``."""
    t, s = f64(t).reshape(-1), f64(s).reshape(-1)
    if bool((s >= t).any() or (s < 0).any() or (t > path.t_max).any()):
        raise ValueError(f"reverse_variance needs 0 <= s < t <= t_max = {path.t_max:g} for every sample")
    if kind == "beta_tilde":
        return clipped_log_beta_tilde(path, t, s).exp()
    if kind == "beta":
        return jump_variance(path, t, s)
    if kind == "learned_range":
        if net_v is None:
            raise ValueError("variance 'learned_range' needs the network output net_v in [-1, 1]")
        log_max = jump_variance(path, t, s).log()
        log_min = clipped_log_beta_tilde(path, t, s)
        frac = (net_v + 1) / 2  # Eq. (15): v in [-1, 1] -> [0, 1]; not clamped, as in the paper
        lmax, lmin = expand(log_max.to(net_v.device), net_v), expand(log_min.to(net_v.device), net_v)
        return (frac * lmax + (1 - frac) * lmin).exp()
    if kind == "analytic":
        if analytic_table is None:
            raise ValueError("variance 'analytic' needs analytic_table (see estimate_analytic_table)")
        mse = analytic_x0_mse(path, analytic_table, t).to(t.device)
        c = path.alpha(s) * -torch.expm1(path.log_snr(t) - path.log_snr(s))  # x_0-coefficient of μ̃
        # Bao et al.'s λ_n² = β̃ plus c² E||x_0 - x̂_0||²/d (β̃ = 0 at s = 0: then σ² = E||x_0 - x̂_0||²/d)
        return posterior_variance(path, t, s) + c**2 * mse
    raise ValueError(f"unknown variance {kind!r}; choose one of {', '.join(VARIANCE_KINDS)}")


def gamma_bounds(path: Path, ts: Tensor, half_range: float | None = None) -> tuple[Tensor, Tensor]:
    """Bao et al. Thm 2 as bounds on Γ_t: σ*² in [β̃, β̃ + c²·half_range²] <=> Γ_t in
    [1 - SNR_t·half_range², 1]."""
    ts = f64(ts)
    lo = torch.zeros_like(ts)
    if half_range is not None:
        lo = (1 - path.log_snr(ts).exp() * half_range**2).clamp_min(0)
    return lo, torch.ones_like(ts)


@torch.no_grad()
def estimate_analytic_table(D: Denoiser, data_x0: Tensor, ts: Tensor, n_mc: int = 1, *,
                            half_range: float | None = None, batch_size: int = 1024,
                            generator: torch.Generator | None = None, progress: bool = False) -> AnalyticTable:
    """Analytic-DPM Eq. (8): Γ_t = mean over data x_0 (N, *D) and n_mc noises of ||ε̂(x_t, t)||²/d,
    clipped to Thm 2.

    ``half_range`` = (b - a)/2 for data in [a, b]^d (1 for images in [-1, 1]) tightens the lower bound; None: Γ >= 0.
    The same draws give x0_mse = E||x_0 - x̂_0||²/d (clipped to [0, half_range²]), used where α_t = 0.
    """
    if not isinstance(n_mc, int) or isinstance(n_mc, bool) or n_mc < 1:
        raise ValueError(f"n_mc must be a positive integer, got {n_mc!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    path = D.path
    ts = f64(ts).reshape(-1)
    if ts.numel() < 1 or bool((ts <= 0).any() or (ts > path.t_max).any()):
        raise ValueError(f"estimate_analytic_table needs grid times 0 < t <= t_max = {path.t_max:g} "
                         "(ε̂ is undefined at t = 0)")
    ts = ts.sort().values
    d = data_x0[0].numel()
    xs = data_x0.repeat(n_mc, *([1] * (data_x0.ndim - 1)))  # (n_mc·N, *D): each datum with n_mc noises
    gamma, mse = torch.empty_like(ts), torch.empty_like(ts)
    steps = ts.tolist()
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="analytic variance table", leave=False)
    for k, t in enumerate(steps):
        eps_sq = err_sq = 0.0
        for chunk in xs.split(batch_size):
            tt = batch_times(t, chunk)
            noise = torch.randn(chunk.shape, generator=generator, dtype=chunk.dtype, device=chunk.device)
            x_t = q_sample(path, chunk, tt, noise)
            x0_hat = D(x_t, tt)
            eps_sq += float(eps_of(D, x_t, tt, x0_hat).double().pow(2).sum())
            err_sq += float((chunk - x0_hat).double().pow(2).sum())
        gamma[k], mse[k] = eps_sq / (xs.shape[0] * d), err_sq / (xs.shape[0] * d)
    lo, hi = gamma_bounds(path, ts, half_range)
    mse = mse if half_range is None else mse.clamp(max=half_range**2)
    return AnalyticTable(ts, torch.minimum(torch.maximum(gamma, lo), hi), mse)


def hybrid_vlb_term(path: Path, x0: Tensor, x_t: Tensor, t: Tensor, x0_hat: Tensor, net_v: Tensor, *,
                    s: Tensor | None = None, bits: int | None = 8) -> Tensor:
    """Nichol & Dhariwal 2021 §3.1 L_vlb term (B,) in nats/dim for σ² = learned_range(v), mean with stop-gradient.

    s > 0: KL(q(x_s|x_t, x_0) || p(x_s|x_t)); s = 0: decoder NLL -log p(x_0|x_t) (discretised on the 2^bits
    grid, or the Gaussian density for bits=None). s = None means s = t - 1, the discrete chain's step (PathError
    on a continuous path, which must name s). The trainer forms L_simple + λ·L_vlb (λ = 0.001).
    """
    t = batch_times(t, x_t)
    if s is None:
        require_discrete(path, "hybrid_vlb_term with s = t - 1")
        s = t - 1
    else:
        s = batch_times(s, x_t)
    var = reverse_variance("learned_range", path, t, s, net_v=net_v)  # (B, *D), carries v's gradient
    model = posterior(path, x0_hat.detach(), x_t, t, s)  # stop-gradient: L_vlb trains the variance only
    true = posterior(path, x0, x_t, t, s)
    dims = tuple(range(1, x0.ndim))
    at_data = (s <= 0).to(x0.device)  # (B,): these samples score the decoder instead of a KL
    true_var = torch.where(true.var > 0, true.var, torch.ones_like(true.var))  # β̃ = 0 at s = 0: keep finite
    kl = gaussian_kl(true.mean, expand(true_var, x0), model.mean, var).mean(dims)
    if not bool(at_data.any()):
        return kl
    return torch.where(at_data, decoder_nll(x0, model.mean, var, bits=bits).mean(dims), kl)


__all__ = ["VARIANCE_KINDS", "AnalyticTable", "VarianceKind", "analytic_x0_mse", "clipped_log_beta_tilde",
           "estimate_analytic_table", "gamma_at", "gamma_bounds", "hybrid_vlb_term", "reverse_variance"]
