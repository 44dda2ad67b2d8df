"""Reverse-process variances σ²_{t→s} for p(x_s|x_t) = N(μ̃(x_t, x̂_0), σ² I), and improved DDPM's L_vlb tools.

Kinds (all for a general jump t -> s < t, paper indexing, σ²_{t|s} = 1 - ᾱ_t/ᾱ_s, β̃ = σ²_{t|s} σ_s²/σ_t²):

- ``beta_tilde``: β̃, the posterior variance (Ho et al. 2020 §3.2); at s = 0, where β̃ = 0, the decoder takes
  σ²_{t|0} (β_1: Ho et al.'s σ_1², exact for N(0, I) data). Improved DDPM's code clips to β̃_2 there instead,
  which costs 0.16 bits/dim more on N(0, I) (bound gap 0.835 against 0.671 bits/dim).
- ``beta``: σ²_{t|s} (β_t for s = t-1).
- ``learned_range``: Nichol & Dhariwal 2021 Eq. (15), log σ² = v log β + (1-v) log β̃ with the network's
  v in [-1, 1] mapped to [0, 1]; per element, so (B, *D).
- ``analytic``: Bao et al. 2022 (Analytic-DPM) Thm 1 with λ² = β̃ (the DDPM case), for any jump:
  σ*² = β̃ + σ⁴_{t|s}/(σ_t² α²_{t|s}) · (1 - Γ_t), Γ_t = E||ε̂(x_t, t)||²/d.
  Derivation: the expected KL over σ² is minimised at λ² + c² E||x_0 - x̂_0||²/d with c = α_s σ²_{t|s}/σ_t² the
  x_0-coefficient of μ̃, and E||x_0 - x̂_0||² = σ_t²/α_t² E||ε - ε̂||² = σ_t²/α_t² d (1 - Γ_t) since ε̂ = E[ε|x_t].
  For s = t-1 this is the paper's λ² + (sqrt(β̄_n/α_n) - sqrt(β̄_{n-1} - λ²))² (1 - Γ_n).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, get_args

import torch
from torch import Tensor

from .denoiser import Denoiser, eps_of
from .forward import expand, jump_variance, posterior, posterior_variance, q_sample
from .schedules import Schedule, _interp

VarianceKind = Literal["beta_tilde", "beta", "learned_range", "analytic"]
VARIANCE_KINDS: tuple[str, ...] = get_args(VarianceKind)


class AnalyticTable(NamedTuple):
    """Γ_t = E||ε̂(x_t, t)||²/d on an increasing grid of times ts > 0 (both (K,), float64)."""

    ts: Tensor
    gamma: Tensor


def _f64(t: Tensor | float) -> Tensor:
    return torch.as_tensor(t, dtype=torch.float64)


def clipped_log_beta_tilde(schedule: Schedule, t: Tensor, s: Tensor) -> Tensor:
    """log β̃_{t→s} (float64); where β̃ = 0 (s = 0) log σ²_{t|s} (= log β_1 for the DDPM decoder)."""
    t, s = _f64(t), _f64(s)
    bt = posterior_variance(schedule, t, s)
    return torch.where(bt > 0, bt, jump_variance(schedule, t, s)).clamp_min(1e-300).log()


def gamma_at(table: AnalyticTable, t: Tensor) -> Tensor:
    """Γ at times t (B,) by linear interpolation in t over the table's grid; t outside it -> ValueError."""
    ts, g = _f64(table.ts).cpu(), _f64(table.gamma).cpu()
    tq = _f64(t).cpu()
    if ts.ndim != 1 or ts.shape != g.shape or ts.numel() < 1:
        raise ValueError("analytic_table must hold 1-D ts and gamma of equal length")
    order = ts.argsort()
    ts, g = ts[order], g[order]
    if bool((tq < ts[0] - 1e-9).any() or (tq > ts[-1] + 1e-9).any()):
        raise ValueError(f"analytic_table covers t in [{ts[0].item():g}, {ts[-1].item():g}], asked for "
                         f"t in [{tq.min().item():g}, {tq.max().item():g}]")
    if ts.numel() == 1:
        return g.expand_as(tq).clone()
    return _interp(tq, ts, g)


def reverse_variance(kind: VarianceKind, schedule: Schedule, t: Tensor, s: Tensor, *, net_v: Tensor | None = None,
                     analytic_table: AnalyticTable | None = None) -> Tensor:
    """σ² of p(x_s|x_t): (B,) float64, or (B, *D) in net_v's dtype for ``learned_range``."""
    t, s = _f64(t).reshape(-1), _f64(s).reshape(-1)
    if bool((s >= t).any() or (s < 0).any() or (t > schedule.T).any()):
        raise ValueError("reverse_variance needs 0 <= s < t <= T for every sample")
    if kind == "beta_tilde":
        return clipped_log_beta_tilde(schedule, t, s).exp()
    if kind == "beta":
        return jump_variance(schedule, t, s)
    if kind == "learned_range":
        if net_v is None:
            raise ValueError("variance 'learned_range' needs the network output net_v in [-1, 1]")
        log_max = jump_variance(schedule, t, s).log()
        log_min = clipped_log_beta_tilde(schedule, t, s)
        frac = (net_v + 1) / 2  # Eq. (15): v in [-1, 1] -> [0, 1]; not clamped, as in the paper
        lmax, lmin = expand(log_max.to(net_v.device), net_v), expand(log_min.to(net_v.device), net_v)
        return (frac * lmax + (1 - frac) * lmin).exp()
    if kind == "analytic":
        if analytic_table is None:
            raise ValueError("variance 'analytic' needs analytic_table (see estimate_analytic_table)")
        gamma = gamma_at(analytic_table, t).to(t.device)
        la_t, la_s = schedule.log_alpha_bar(t), schedule.log_alpha_bar(s)
        sig2_ts = -torch.expm1(la_t - la_s)  # σ²_{t|s}
        sig2_t = -torch.expm1(la_t)
        # σ⁴_{t|s}/(σ_t² α²_{t|s}) (1 - Γ_t) added to λ² = β̃ (exactly 0 at s = 0: then σ² = E||x_0 - x̂_0||²/d)
        return posterior_variance(schedule, t, s) + sig2_ts**2 / (sig2_t * (la_t - la_s).exp()) * (1 - gamma)
    raise ValueError(f"unknown variance {kind!r}; choose one of {', '.join(VARIANCE_KINDS)}")


def gamma_bounds(schedule: Schedule, ts: Tensor, half_range: float | None = None) -> tuple[Tensor, Tensor]:
    """Bao et al. Thm 2 as bounds on Γ_t: σ*² in [λ², λ² + c²·half_range²] <=> Γ_t in [1 - SNR_t·half_range², 1]."""
    ts = _f64(ts)
    lo = torch.zeros_like(ts)
    if half_range is not None:
        lo = (1 - schedule.snr(ts) * half_range**2).clamp_min(0)
    return lo, torch.ones_like(ts)


@torch.no_grad()
def estimate_analytic_table(D: Denoiser, data_x0: Tensor, schedule: Schedule, ts: Tensor, n_mc: int = 1, *,
                            half_range: float | None = None, batch_size: int = 1024,
                            generator: torch.Generator | None = None) -> AnalyticTable:
    """Analytic-DPM Eq. (8): Γ_t = mean over data x_0 (N, *D) and n_mc noises of ||ε̂(x_t, t)||²/d, clipped to Thm 2.

    ``half_range`` = (b - a)/2 for data in [a, b]^d (1 for images in [-1, 1]) tightens the lower bound; None: Γ >= 0.
    """
    if not isinstance(n_mc, int) or isinstance(n_mc, bool) or n_mc < 1:
        raise ValueError(f"n_mc must be a positive integer, got {n_mc!r}")
    ts = _f64(ts).reshape(-1)
    if ts.numel() < 1 or bool((ts <= 0).any() or (ts > schedule.T).any()):
        raise ValueError("estimate_analytic_table needs grid times 0 < t <= T (ε̂ is undefined at t = 0)")
    ts = ts.sort().values
    d = data_x0[0].numel()
    xs = data_x0.repeat(n_mc, *([1] * (data_x0.ndim - 1)))  # (n_mc·N, *D): each datum with n_mc noises
    gamma = torch.empty_like(ts)
    for k, t in enumerate(ts.tolist()):
        total = 0.0
        for chunk in xs.split(batch_size):
            tt = torch.full((chunk.shape[0],), t, dtype=chunk.dtype, device=chunk.device)
            noise = torch.randn(chunk.shape, generator=generator, dtype=chunk.dtype, device=chunk.device)
            x_t = q_sample(schedule, chunk, tt, noise)
            eps = eps_of(D, x_t, tt, D(x_t, tt))
            total += float(eps.double().pow(2).sum())
        gamma[k] = total / (xs.shape[0] * d)
    lo, hi = gamma_bounds(schedule, ts, half_range)
    return AnalyticTable(ts, torch.minimum(torch.maximum(gamma, lo), hi))


def gaussian_kl(mean1: Tensor, var1: Tensor, mean2: Tensor, var2: Tensor) -> Tensor:
    """Elementwise KL(N(mean1, var1) || N(mean2, var2)) in nats; variances broadcast against the means."""
    return 0.5 * (var1 / var2 - 1 + torch.log(var2) - torch.log(var1) + (mean1 - mean2) ** 2 / var2)


def hybrid_vlb_term(schedule: Schedule, x0: Tensor, x_t: Tensor, t: Tensor, x0_hat: Tensor, net_v: Tensor, *,
                    s: Tensor | None = None, bits: int | None = 8) -> Tensor:
    """Nichol & Dhariwal 2021 §3.1 L_vlb term (B,) in nats/dim for σ² = learned_range(v), mean with stop-gradient.

    s > 0: KL(q(x_s|x_t, x_0) || p(x_s|x_t)); s = 0: decoder NLL -log p(x_0|x_t) (discretised on the 2^bits
    grid, or the Gaussian density for bits=None). The trainer forms L_simple + λ·L_vlb (λ = 0.001).
    """
    from .likelihood import decoder_nll  # deferred: likelihood imports this module

    t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(x_t.shape[0])
    s = t - 1 if s is None else torch.as_tensor(s, device=x_t.device).reshape(-1).expand(x_t.shape[0])
    var = reverse_variance("learned_range", schedule, t, s, net_v=net_v)  # (B, *D), carries v's gradient
    model = posterior(schedule, x0_hat.detach(), x_t, t, s)  # stop-gradient: L_vlb trains the variance only
    true = posterior(schedule, x0, x_t, t, s)
    dims = tuple(range(1, x0.ndim))
    at_data = s <= 0  # (B,): these samples score the decoder instead of a KL
    true_var = torch.where(true.var > 0, true.var, torch.ones_like(true.var))  # β̃ = 0 at s = 0: keep finite
    kl = gaussian_kl(true.mean, expand(true_var, x0), model.mean, var).mean(dims)
    if not bool(at_data.any()):
        return kl
    return torch.where(at_data, decoder_nll(x0, model.mean, var, bits=bits).mean(dims), kl)


class ImportanceTimesteps:
    """Nichol & Dhariwal 2021 §3.3, Eq. (18): sample t in 1..T with p_t ∝ sqrt(E[L_t²]) over the last ``history`` L_t.

    Uniform until every t has ``history`` values. ``uniform_mix`` of the mass stays uniform so no p_t is 0 and
    the importance weights 1/(T p_t) stay bounded. E_t~p[w_t L_t] = (1/T) Σ_t L_t, so the weighted loss is unbiased.
    """

    def __init__(self, T: int, history: int = 10, uniform_mix: float = 1e-3):
        if not isinstance(T, int) or T < 1 or not isinstance(history, int) or history < 1:
            raise ValueError(f"T and history must be positive integers, got T={T!r}, history={history!r}")
        if not 0.0 <= uniform_mix <= 1.0:
            raise ValueError(f"uniform_mix must lie in [0, 1], got {uniform_mix!r}")
        self.T, self.history, self.uniform_mix = T, history, uniform_mix
        self.losses = torch.zeros(T, history, dtype=torch.float64)  # ring buffer of L_t, row t-1
        self.count = torch.zeros(T, dtype=torch.long)

    @property
    def ready(self) -> bool:
        return bool((self.count >= self.history).all())

    def probs(self) -> Tensor:
        """p_t (T,), entry t-1 for timestep t."""
        if not self.ready:
            return torch.full((self.T,), 1.0 / self.T, dtype=torch.float64)
        w = self.losses.pow(2).mean(1).sqrt()
        if float(w.sum()) <= 0 or not math.isfinite(float(w.sum())):
            return torch.full((self.T,), 1.0 / self.T, dtype=torch.float64)
        return (1 - self.uniform_mix) * w / w.sum() + self.uniform_mix / self.T

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n timesteps (n,) long in 1..T and their importance weights 1/(T p_t) (n,) float64."""
        p = self.probs()
        idx = torch.multinomial(p, n, replacement=True, generator=generator)
        return idx + 1, 1.0 / (self.T * p[idx])

    def update(self, t: Tensor, losses: Tensor) -> None:
        """Record per-sample L_t (detached) for timesteps t (integers in 1..T)."""
        for ti, li in zip(torch.as_tensor(t).reshape(-1).tolist(), losses.detach().double().reshape(-1).tolist()):
            ti = int(round(ti))
            if not 1 <= ti <= self.T:
                raise ValueError(f"timestep {ti} outside 1..{self.T}")
            self.losses[ti - 1, self.count[ti - 1] % self.history] = li
            self.count[ti - 1] += 1
