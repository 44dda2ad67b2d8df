"""Exact-likelihood NLL through the probability-flow ODE (Song et al. 2021 §4.3, App. D.2), in bits/dim, on any path.

The ODE is kuosan.pf_ode's dy/du = y - x̂_0 in VE coordinates y = x/α, u = log σ̃ (σ̃ = σ/α = e^{-λ/2}), the
same function the ODE sampler integrates. The instantaneous change of variables (Chen et al. 2018, Thm 1) gives
log p_{u_0}(y_0) = log p_{u_1}(y_1) + ∫ div_y(dy/du) du with div = d - tr(∂x̂_0/∂y), the trace exact (autograd,
d backward passes) or Hutchinson's z^T J z with Rademacher z fixed along the path.

Start: y_0 = x_0 at σ̃ = ``ve_sigma_min``, i.e. the NLL of x_0 under the model's density of y = x_0 + σ̃_min·ε,
which is the same for every path (y = x/α removes the path's scaling) and tends to the data density as
σ̃_min -> 0 (O(σ̃_min²)). For the discrete VP chain the first half's ``sigma_min`` (the VP σ) is
σ̃_min/√(1+σ̃_min²), the same to 1e-6 relative at the default 1e-3.

End, prior x_{t_max} ~ N(0, prior_std² I) (exact when λ(t_max) = -∞: x_{t_max} is then independent of x_0):
- σ̃(t_max) <= pf_ode.VE_SIGMA_CAP: the ODE runs to u_1 = log σ̃(t_max), and p(y_1) = N(α y_1; 0,
  prior_std²) α^d.
- otherwise (α(t_max) = 0 included) the model reaches y_cap at σ̃ = VE_SIGMA_CAP from x_T by pf_ode.enter's one
  DDIM step y_cap = k x_T + c x̂_0(x_T) with k = σ̃_cap/σ(t_max). The ODE runs to u_1 = log σ̃_cap, x_T is
  recovered from y_cap by fixed-point iteration, and log p(y_cap) = log N(x_T; 0, prior_std²) - log|det M| with
  M = ∂y_cap/∂x_T = k I + c J, log|det M| = d log k + tr(cJ)/k + O(‖cJ/k‖²_F) (the trace by the same estimator;
  the neglected term is below 1e-6·‖J‖²_F nats; the exact denoiser at α = 0 has J = 0).
Discrete data: uniform dequantisation x_0 + U(0, w)^d, w = 2/2^bits, and -log P(bin) <= E_u[-log p(x_0 + u)] +
d·log(1/w) (Jensen), the bin-width term d·log(2^bits/2) added to the continuous NLL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..pf_ode import VE_SIGMA_CAP, enter, rhs
from ..paths import Path, f64
from .stats import mean_stderr, nats_to_bits_per_dim

OdeBackend = Literal["torchdiffeq", "scipy"]
_MAX_INVERT_ITERS = 20  # fixed-point steps to invert the entry step; each contracts the error by ‖cJ‖/k


@dataclass(frozen=True)
class ODENLLResult:
    """bpd: batch mean; stderr over the batch (includes the probe noise); probe_var: mean over samples of the
    variance of one probe's bpd across probes (bits²/dim², 0 for the exact trace, nan with one probe)."""

    bpd: float
    stderr: float
    probe_var: float
    per_sample_bpd: Tensor  # (B,), averaged over probes
    per_probe_bpd: Tensor  # (B, probes) or (B, 1) for the exact trace
    nfe: int  # denoiser evaluations, the entry-step inversion included


def _trace(out: Tensor, inp: Tensor, probes: Tensor | None) -> Tensor:
    """(B, K) estimates of tr(∂out/∂inp) per sample: exact (K = 1) or z^T J z per Rademacher probe z (K, B, *D)."""
    B, d = inp.shape[0], inp[0].numel()
    dims = tuple(range(1, inp.ndim))
    if probes is None:
        flat = out.reshape(B, d)
        tr = torch.zeros(B, dtype=inp.dtype, device=inp.device)
        for i in range(d):  # rows of the Jacobian; samples are independent, so one sum serves the batch
            g = torch.autograd.grad(flat[:, i].sum(), inp, retain_graph=True)[0]
            tr = tr + g.reshape(B, d)[:, i]
        return tr[:, None]
    out_ = [(torch.autograd.grad((out * z).sum(), inp, retain_graph=True)[0] * z).sum(dims) for z in probes]
    return torch.stack(out_, 1)


def _log_normal(x: Tensor, std: float) -> Tensor:
    """log N(x; 0, std² I) per sample (B,)."""
    d = x[0].numel()
    return -0.5 * (x / std).pow(2).reshape(x.shape[0], -1).sum(1) - d * (math.log(std) + 0.5 * math.log(2 * math.pi))


def _end_point(path: Path) -> tuple[float, float | None]:
    """(u_1, k): where the ODE meets the prior, and k = σ̃(s)/σ(t_max) when pf_ode.enter's DDIM step from t_max
    to its landing time s = t(λ = -2 log VE_SIGMA_CAP) is taken (None when σ̃(t_max) <= VE_SIGMA_CAP: no step).
    u_1 = log σ̃(s) is log VE_SIGMA_CAP except on a zero-terminal-SNR chain whose λ(T-1) is above the cap."""
    u_T = -0.5 * float(path.log_snr(f64(path.t_max)))  # log σ̃(t_max), +∞ where α(t_max) = 0
    if u_T <= math.log(VE_SIGMA_CAP):
        return u_T, None
    s = path.t_of_log_snr(f64(-2 * math.log(VE_SIGMA_CAP)))
    u_s = -0.5 * float(path.log_snr(s))
    return u_s, math.exp(u_s) / float(path.sigma(f64(path.t_max)))


def _entered_prior(D: Denoiser, y_cap: Tensor, k: float, probes: Tensor | None, cond: dict[str, Any],
                   count: Callable[[], None]) -> Tensor:
    """log p(y_cap) (B, K) for y_cap = enter(x_T), x_T ~ N(0, prior_std² I): invert, then change variables.

    k: the x_T-coefficient of the entry step (∂y_cap/∂x_T = k I + c J), see _end_point."""
    path = D.path
    t_max, d = path.t_max, y_cap[0].numel()
    tol = 1e3 * torch.finfo(y_cap.dtype).eps * (1 + float(y_cap.abs().max()))
    x = y_cap / k
    for _ in range(_MAX_INVERT_ITERS):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            y_hat = enter(D, xg, t_max, cond)[0]
        count()
        r = (y_cap - y_hat).detach()
        if float(r.abs().max()) <= tol:
            with torch.enable_grad():
                tr_cj = _trace(y_hat - k * xg, xg, probes).detach()  # tr(cJ): no cancellation against k·d
            log_det = d * math.log(k) + tr_cj / k
            return _log_normal(x, path.prior_std)[:, None] - log_det
        x = x + r / k
    raise RuntimeError("could not invert pf_ode.enter's first step at t_max (the denoiser varies too fast there)")


def ode_nll(D: Denoiser, x0: Tensor, *, probes: int | None = 1, rtol: float = 1e-5, atol: float = 1e-5,
            dequantise_bits: int | None = None, generator: torch.Generator | None = None,
            ve_sigma_min: float = 1e-3, backend: OdeBackend = "torchdiffeq", cond: dict[str, Any] | None = None,
            progress: bool = False) -> ODENLLResult:
    """-log p(x_0) under the PF-ODE model in bits/dim, per sample (B,), with mean and standard error, on any path.

    probes=None: exact trace (for small d); probes=k: k Rademacher probes integrated side by side (the y path is
    shared), reported as their mean, with their spread in probe_var. D must be differentiable in x (torch ops).
    ``progress`` shows a bar over u = log σ̃ from log ve_sigma_min to the prior.
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
    path, cond = D.path, cond or {}
    u1, k_enter = _end_point(path)
    if not (ve_sigma_min > 0 and math.log(ve_sigma_min) < u1):
        raise ValueError(f"ve_sigma_min must lie in (0, {math.exp(u1):.4g}) (σ̃ where the prior is reached), "
                         f"got {ve_sigma_min!r}")
    u0 = math.log(ve_sigma_min)
    B, d = x0.shape[0], x0[0].numel()
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
    nfe = [0]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=round(u1 - u0, 3), desc="ode nll (log σ̃)", leave=False)

    def count() -> None:
        nfe[0] += 1

    def f(u: Tensor | float, y: Tensor) -> tuple[Tensor, Tensor]:
        """(dy/du, div) with div = d - tr(∂x̂_0/∂y) (B, K)."""
        with torch.enable_grad():
            yg = y.detach().requires_grad_(True)
            dy, x0_hat = rhs(D, yg, u, cond)
            count()
            div = d - _trace(x0_hat, yg, z)
        if bar is not None:
            bar.update(max(0.0, round(float(u) - u0, 3) - bar.n))
        return dy.detach(), div.detach()

    y0 = x  # y = x/α at σ̃_min where x = x_0: see the module docstring
    delta0 = torch.zeros(B, K, dtype=x.dtype, device=x.device)
    try:
        if backend == "torchdiffeq":
            try:
                from torchdiffeq import odeint
            except ImportError as e:  # optional dependency
                raise ImportError("ode_nll(backend='torchdiffeq') needs torchdiffeq: pip install 'kuosan[ode]', "
                                  "or pass backend='scipy'") from e
            span = torch.tensor([u0, u1], dtype=x.dtype, device=x.device)
            ys, deltas = odeint(lambda u, s: f(u, s[0]), (y0, delta0), span, rtol=rtol, atol=atol, method="dopri5")
            y1, delta = ys[-1], deltas[-1]
        else:
            from scipy.integrate import solve_ivp

            n_y = y0.numel()

            def f_np(u: float, v: np.ndarray) -> np.ndarray:
                y = torch.from_numpy(v[:n_y]).reshape(y0.shape).to(x.device, x.dtype)
                dy, dv = f(u, y)
                return np.concatenate([dy.double().cpu().numpy().ravel(), dv.double().cpu().numpy().ravel()])

            v0 = np.concatenate([y0.double().cpu().numpy().ravel(), np.zeros(B * K)])
            sol = solve_ivp(f_np, (u0, u1), v0, method="RK45", rtol=rtol, atol=atol)
            if not sol.success:
                raise RuntimeError(f"ODE solve failed: {sol.message}")
            end = torch.from_numpy(sol.y[:, -1]).to(x.device, x.dtype)
            y1, delta = end[:n_y].reshape(y0.shape), end[n_y:].reshape(B, K)
    finally:
        if bar is not None:
            bar.close()

    if k_enter is not None:
        log_p_end = _entered_prior(D, y1, k_enter, z, cond, count)  # (B, K)
    else:  # p_y(y_1) = p_x(α y_1) α^d at t_max
        a = float(path.alpha(f64(path.t_max)))
        log_p_end = (_log_normal(a * y1, path.prior_std) + d * math.log(a))[:, None]
    log_p = log_p_end + delta
    per_probe = (bin_nats - log_p) * nats_to_bits_per_dim(d)  # (B, K) bits/dim
    per_sample = per_probe.mean(1)
    mean, se = mean_stderr(per_sample)
    probe_var = 0.0 if probes is None else (float(per_probe.var(1, unbiased=True).mean()) if K > 1 else math.nan)
    return ODENLLResult(mean, se, probe_var, per_sample, per_probe, nfe[0])


__all__ = ["ODENLLResult", "OdeBackend", "ode_nll"]
