"""Σ_t of diffused data: the closed form α_t² Σ_0 + σ_t² I beside the empirical covariance of
x_t = α_t x_0 + σ_t ε, and the eigen-spectrum of the signal (a few large eigenvalues: low rank) against the
noise (flat: full rank).

Since x_0 and ε are independent, Cov[x_t] = α_t² Cov[x_0] + σ_t² I on every Gaussian path (Ho et al. 2020
Eq. (4); with ᾱ_t = α_t² on the VP chain, Σ_t = ᾱ_t Σ_0 + (1 - ᾱ_t) I). For Gaussian x_t with n draws, each
entry of the sample covariance has standard error √((C_ii C_jj + C_ij²)/(n - 1)) (Anderson 2003 §3.4): the test's
yardstick for "within sampling error".
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..paths import Path, f64
from .render import pyplot, save_png
from .sources import describe_path


def sample_cov(x: Tensor) -> Tensor:
    """The unbiased sample covariance (D, D) of rows x (n, D), float64."""
    x = x.to(torch.float64)
    c = x - x.mean(0)
    return c.T @ c / (len(x) - 1)


def closed_form(sigma0: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """Σ_t = α² Σ_0 + σ² I for times (K,): (K, D, D) float64."""
    eye = torch.eye(len(sigma0), dtype=torch.float64)
    return alpha[:, None, None] ** 2 * sigma0[None] + sigma[:, None, None] ** 2 * eye[None]


def spectrum(S: Tensor) -> Tensor:
    """Eigenvalues of a symmetric matrix (…, D, D), largest first."""
    return torch.linalg.eigvalsh(S).flip(-1)


def rank_for(eigs: Tensor, share: float = 0.99) -> int:
    """The number of leading eigen-directions that hold ``share`` of the variance (the effective rank)."""
    e = eigs.clamp_min(0)
    c = torch.cumsum(e, 0) / e.sum()
    return int((c < share - 1e-12).sum()) + 1


def covariance_story(x0: Tensor, sigma0: Tensor, path: Path, u: Sequence[float], seed: int = 0) -> dict[str, Any]:
    """The arrays behind the picture at normalised times u = t/t_max (K,): t, alpha, sigma (K,); sigma0 (D, D);
    closed and empirical (K, D, D), the latter from x_t = α x_0 + σ ε over the n rows of x0 (n, D) with fresh ε;
    eig_signal (D,) of Σ_0, eig_noise (D,) of the white noise I, eig_closed and eig_empirical (K, D); the
    99 %-variance ranks of the signal and the noise."""
    u_t = f64(list(u))
    if u_t.ndim != 1 or len(u_t) == 0 or not bool(((u_t >= 0) & (u_t <= 1)).all()):
        raise ValueError(f"times must be fractions of t_max in [0, 1], got {list(u)}")
    ts = u_t * path.t_max
    a, s = path.alpha(ts), path.sigma(ts)
    x0 = x0.to(torch.float64)
    g = torch.Generator().manual_seed(seed)
    emp = torch.stack([sample_cov(ak * x0 + sk * torch.randn(x0.shape, generator=g, dtype=torch.float64))
                       for ak, sk in zip(a, s)])
    closed = closed_form(sigma0, a, s)
    eig_signal = spectrum(sigma0)
    eig_noise = torch.ones(len(sigma0), dtype=torch.float64)
    return {"u": u_t, "t": ts, "alpha": a, "sigma": s, "sigma0": sigma0, "closed": closed, "empirical": emp,
            "n": len(x0), "eig_signal": eig_signal, "eig_noise": eig_noise, "eig_closed": spectrum(closed),
            "eig_empirical": spectrum(emp), "rank99_signal": rank_for(eig_signal), "rank99_noise": len(sigma0),
            "path": describe_path(path)}


def draw_covariance(data: dict[str, Any], out: Any, title: str = "") -> None:
    """Closed-form Σ_t (top row) above the empirical one (bottom row) at each time, and the eigen-spectra."""
    plt = pyplot()
    K = len(data["t"])
    fig = plt.figure(figsize=(2.4 * K + 4.2, 5.6))
    gs = fig.add_gridspec(2, K + 1, width_ratios=[1] * K + [1.9])
    for k in range(K):
        vmax = float(data["closed"][k].abs().max())
        for r, (key, name) in enumerate((("closed", "α²Σ₀ + σ²I"),
                                         ("empirical", f"empirical, n = {data['n']}"))):
            ax = fig.add_subplot(gs[r, k])
            ax.imshow(data[key][k].numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t/t_max = {float(data['u'][k]):.2f}\nα = {float(data['alpha'][k]):.2f}, "
                             f"σ = {float(data['sigma'][k]) + 0.0:.3g}", fontsize=9)
            if k == 0:
                ax.set_ylabel(name, fontsize=9)
    sp = fig.add_subplot(gs[:, K])
    D = len(data["eig_signal"])
    i = np.arange(1, D + 1)
    sp.semilogy(i, data["eig_signal"].clamp_min(1e-12).numpy(), "o-", ms=2.5, color="C0",
                label=f"signal Σ₀ (99% in {data['rank99_signal']} of {D})")
    sp.semilogy(i, data["eig_noise"].numpy(), "-", color="0.4", lw=2, label=f"noise I (full rank {D})")
    for k in range(K):
        c = plt.cm.viridis(0.15 + 0.7 * k / max(K - 1, 1))
        sp.semilogy(i, data["eig_closed"][k].clamp_min(1e-12).numpy(), "-", color=c, lw=1,
                    label=f"Σ_t, t/t_max = {float(data['u'][k]):.2f}")
        sp.semilogy(i, data["eig_empirical"][k].clamp_min(1e-12).numpy(), ".", color=c, ms=3)
    sp.xaxis.get_major_locator().set_params(integer=True)
    sp.set(xlabel="eigenvalue index", ylabel="eigenvalue", title="eigen-spectra (dots: empirical)")
    sp.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    fig.suptitle(title or f"covariance of diffused data on the {data['path']} path", fontsize=10)
    fig.tight_layout()
    save_png(fig, out)
