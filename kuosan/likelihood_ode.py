"""Exact-likelihood NLL through the probability-flow ODE (Song et al. 2021 §4.3, App. D.2), in bits/dim.

In VE coordinates y = x/α, σ̃ = σ/α and u = log σ̃ the PF-ODE of any VP schedule reads dy/du = y - x̂_0(α y, t)
(smooth in u even where the discrete schedule's β(t) jumps). The instantaneous change of variables (Chen et al.
2018, Thm 1) gives log p_start(y_0) = log p_end(y_1) + ∫ div_y(dy/du) du with div = d - tr(∂x̂_0/∂y), the trace
exact (autograd, d backward passes) or Hutchinson's z^T J z with Rademacher z fixed along the path. The prior
N(0, I) sits on x_T = α_T y_1, and the start is t with σ(t) = sigma_min, where x = x_0 (the model density there).
Discrete data: uniform dequantisation x_0 + U(0, w)^d, w = 2/2^bits, and -log P(bin) <= E_u[-log p(x_0 + u)] +
d·log(1/w) (Jensen), the bin-width term d·log(2^bits/2) added to the continuous NLL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .denoiser import Denoiser
from .schedules import Schedule, _interp

OdeBackend = Literal["torchdiffeq", "scipy"]


def mean_stderr(x: Tensor) -> tuple[float, float]:
    """Mean and standard error of the mean over the batch (nan for a batch of one)."""
    x = x.detach().double()
    se = float(x.std(unbiased=True) / math.sqrt(x.numel())) if x.numel() > 1 else math.nan
    return float(x.mean()), se


@dataclass(frozen=True)
class ODENLLResult:
    """bpd: batch mean; stderr over the batch (includes the probe noise); probe_var: mean over samples of the
    variance of one probe's bpd across probes (bits²/dim², 0 for the exact trace, nan with one probe)."""

    bpd: float
    stderr: float
    probe_var: float
    per_sample_bpd: Tensor  # (B,), averaged over probes
    per_probe_bpd: Tensor  # (B, probes) or (B, 1) for the exact trace
    nfe: int


def _t_of_log_alpha_bar(sched: Schedule, la: Tensor) -> Tensor:
    """Inverse of log ᾱ(t) on [0, T] (log ᾱ is linear in t between integers, so exact)."""
    steps = torch.arange(sched.T + 1, dtype=torch.float64)
    return _interp(la.to(torch.float64).cpu(), sched.log_alpha_bar(steps).flip(0), steps.flip(0))


def _divergence(x0_hat: Tensor, y: Tensor, probes: Tensor | None) -> Tensor:
    """(B, K) estimates of d - tr(∂x̂_0/∂y): exact (K = 1) or z^T J z per Rademacher probe z (K, B, *D)."""
    B, d = y.shape[0], y[0].numel()
    dims = tuple(range(1, y.ndim))
    if probes is None:
        flat = x0_hat.reshape(B, d)
        tr = torch.zeros(B, dtype=y.dtype, device=y.device)
        for i in range(d):  # rows of the Jacobian; samples are independent, so one sum serves the batch
            g = torch.autograd.grad(flat[:, i].sum(), y, retain_graph=True)[0]
            tr = tr + g.reshape(B, d)[:, i]
        return (d - tr)[:, None]
    out = [d - (torch.autograd.grad((x0_hat * z).sum(), y, retain_graph=True)[0] * z).sum(dims) for z in probes]
    return torch.stack(out, 1)


def ode_nll(D: Denoiser, x0: Tensor, *, probes: int | None = 1, rtol: float = 1e-5, atol: float = 1e-5,
            dequantise_bits: int | None = None, generator: torch.Generator | None = None, sigma_min: float = 1e-3,
            backend: OdeBackend = "torchdiffeq", cond: dict[str, Any] | None = None) -> ODENLLResult:
    """-log p(x_0) under the PF-ODE model in bits/dim, per sample (B,), with mean and standard error.

    probes=None: exact trace (for small d); probes=k: k Rademacher probes integrated side by side (the y path is
    shared), reported as their mean, with their spread in probe_var. D must be differentiable in x (torch ops).
    """
    if probes is not None and (not isinstance(probes, int) or isinstance(probes, bool) or probes < 1):
        raise ValueError(f"probes must be a positive integer or None (exact trace), got {probes!r}")
    if dequantise_bits is not None and (not isinstance(dequantise_bits, int) or isinstance(dequantise_bits, bool)
                                        or dequantise_bits < 1):
        raise ValueError(f"dequantise_bits must be a positive integer or None, got {dequantise_bits!r}")
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be positive, got rtol={rtol!r}, atol={atol!r}")
    if backend not in ("torchdiffeq", "scipy"):
        raise ValueError(f"unknown ODE backend {backend!r}; choose torchdiffeq or scipy")
    sched, cond = D.schedule, cond or {}
    sig2_T = -math.expm1(float(sched.log_alpha_bar(torch.tensor(float(sched.T), dtype=torch.float64))))
    if not 0 < sigma_min**2 < sig2_T:
        raise ValueError(f"sigma_min must lie in (0, σ(T) = {math.sqrt(sig2_T):.4g}), got {sigma_min!r}")
    B, d = x0.shape[0], x0[0].numel()
    dims = tuple(range(1, x0.ndim))
    x = x0.detach()
    bin_nats = 0.0
    if dequantise_bits is not None:
        if float(x.min()) < -1 - 1e-6 or float(x.max()) > 1 + 1e-6:
            raise ValueError(f"data outside [-1, 1] (min {float(x.min()):.4g}, max {float(x.max()):.4g}); "
                             "dequantisation needs data on the 2^bits grid in [-1, 1]")
        w = 2.0 / 2**dequantise_bits
        x = x + w * torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        bin_nats = d * math.log(1 / w)  # -log P(bin) <= continuous NLL + d·log(1/w)
    z = None
    if probes is not None:  # Rademacher ±1, fixed along the trajectory (FFJORD / Song et al.)
        z = torch.randint(0, 2, (probes, *x.shape), generator=generator, device=x.device).to(x.dtype) * 2 - 1
    K = 1 if probes is None else probes

    # u = log σ̃ from the start (σ = sigma_min) to t = T; log ᾱ = log sigmoid(-2u) = -softplus(2u).
    la0 = math.log1p(-sigma_min**2)
    u0 = 0.5 * (math.log(-math.expm1(la0)) - la0)
    u1 = 0.5 * (math.log(sig2_T) - math.log1p(-sig2_T))
    nfe = [0]

    def rhs(u: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        la = -F.softplus(2 * torch.as_tensor(u, dtype=torch.float64))
        t = _t_of_log_alpha_bar(sched, la.reshape(1)).to(y.dtype).to(y.device).expand(B)
        alpha = float((0.5 * la).exp())
        with torch.enable_grad():
            yg = y.detach().requires_grad_(True)
            x0_hat = D(alpha * yg, t, **cond)
            nfe[0] += 1
            div = _divergence(x0_hat, yg, z)
        return (y - x0_hat).detach(), div.detach()

    y0 = x / math.sqrt(1 - sigma_min**2)
    delta0 = torch.zeros(B, K, dtype=x.dtype, device=x.device)
    if backend == "torchdiffeq":
        try:
            from torchdiffeq import odeint
        except ImportError as e:  # optional dependency
            raise ImportError("ode_nll(backend='torchdiffeq') needs torchdiffeq: pip install 'kuosan[ode]', "
                              "or pass backend='scipy'") from e
        span = torch.tensor([u0, u1], dtype=x.dtype, device=x.device)
        ys, deltas = odeint(lambda u, s: rhs(u, s[0]), (y0, delta0), span, rtol=rtol, atol=atol, method="dopri5")
        y1, delta = ys[-1], deltas[-1]
    else:
        from scipy.integrate import solve_ivp

        n_y = y0.numel()

        def f(u: float, v: np.ndarray) -> np.ndarray:
            y = torch.from_numpy(v[:n_y]).reshape(y0.shape).to(x.device, x.dtype)
            dy, dv = rhs(torch.tensor(u, dtype=torch.float64), y)
            return np.concatenate([dy.double().cpu().numpy().ravel(), dv.double().cpu().numpy().ravel()])

        v0 = np.concatenate([y0.double().cpu().numpy().ravel(), np.zeros(B * K)])
        sol = solve_ivp(f, (u0, u1), v0, method="RK45", rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"ODE solve failed: {sol.message}")
        end = torch.from_numpy(sol.y[:, -1]).to(x.device, x.dtype)
        y1, delta = end[:n_y].reshape(y0.shape), end[n_y:].reshape(B, K)

    # log p_x(x_start) = log N(α_T y_1; 0, I) + d log α_T + Δ - d log α_start  (α_start = sqrt(1 - sigma_min²))
    a_T = math.sqrt(1 - sig2_T)
    log_prior = -0.5 * ((a_T * y1) ** 2).sum(dims) - 0.5 * d * math.log(2 * math.pi) + d * math.log(a_T)
    log_p = log_prior[:, None] + delta - 0.5 * d * math.log1p(-sigma_min**2)
    per_probe = (bin_nats - log_p) / (d * math.log(2))  # (B, K) bits/dim
    per_sample = per_probe.mean(1)
    mean, se = mean_stderr(per_sample)
    probe_var = 0.0 if probes is None else (float(per_probe.var(1, unbiased=True).mean()) if K > 1 else math.nan)
    return ODENLLResult(mean, se, probe_var, per_sample, per_probe, nfe[0])
