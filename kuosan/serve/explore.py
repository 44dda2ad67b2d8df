"""The forward process on the page: the run's data noised to time t, x_t = α(t) x_0 + σ(t) ε, beside its
covariance Σ_t = α(t)² Σ_0 + σ(t)² I (Ho et al. 2020 Eq. (4) on any path) and the eigen-spectrum of both
(the signal is low-rank, the noise full-rank).

Σ_0 is the closed form for the Gaussian-process curves (:func:`kuosan.data.curves_covariance`); otherwise the empirical
covariance of the run's data: of whole vectors, of whole images up to 8×8, or of the non-overlapping 8×8 patches
of larger images (all channels). The slider's value u ∈ [0, 1] is the time t = u·t_max; ε is drawn once per
seed, so moving the slider moves the same points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..forward import q_sample
from ..paths import Path
from .render import figure_png, image_grid, plot_vectors

PATCH = 8  # side of the image patches whose covariance is shown
EXAMPLES = 512  # data examples loaded for the explorer
SHOWN = 16  # images (or curves) drawn in the x_t panel


@dataclass
class Explorer:
    """The run's data for the explorer and Σ_0 of its vectors (or image patches)."""

    x0: Tensor  # (N, *D) float32 data examples
    cov0: Tensor  # (d, d) float64 Σ_0
    source: str  # where Σ_0 comes from, in words


def patches(x: Tensor, p: int = PATCH) -> Tensor:
    """Images (N, C, H, W) -> their non-overlapping p×p patches as vectors (N·K, C·p·p); whole images when
    H, W ≤ p."""
    if x.shape[-1] <= p and x.shape[-2] <= p:
        return x.reshape(x.shape[0], -1)
    cols = torch.nn.functional.unfold(x, kernel_size=p, stride=p)  # (N, C·p·p, K)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def vectors(x: Tensor) -> Tensor:
    """The vectors whose covariance is shown: image patches, or the data's own vectors (N, d)."""
    return patches(x) if x.ndim == 4 else x.reshape(x.shape[0], -1)


def empirical_cov(v: Tensor) -> Tensor:
    """The unbiased sample covariance (d, d), float64, of rows v (M, d)."""
    v = v.to(torch.float64)
    c = v - v.mean(0)
    return c.T @ c / max(v.shape[0] - 1, 1)


def make_explorer(data_name: str, n: int = EXAMPLES) -> Explorer:
    """Load ``n`` examples of the run's data (DataError when it cannot be read) and their Σ_0."""
    from ..data import curves_covariance, load_dataset

    ds = load_dataset(data_name, n=n, seed=0)
    if data_name == "curves":
        cov0 = torch.from_numpy(curves_covariance(ds.x.shape[1]))
        return Explorer(ds.x, cov0, "closed form of the curves' covariance")
    v = vectors(ds.x)
    what = (f"{PATCH}×{PATCH} patches of {len(ds.x)} images" if ds.x.ndim == 4 and v.shape[0] > len(ds.x)
            else f"{len(ds.x)} {'images' if ds.x.ndim == 4 else 'examples'}")
    return Explorer(ds.x, empirical_cov(v), f"empirical, {what}")


def covariance_at(path: Path, cov0: Tensor, t: float) -> Tensor:
    """Σ_t = α(t)² Σ_0 + σ(t)² I (d, d), float64: the covariance of x_t when x_0 has covariance Σ_0."""
    tt = torch.tensor(t, dtype=torch.float64)
    a, s = float(path.alpha(tt)), float(path.sigma(tt))
    return a * a * cov0 + s * s * torch.eye(cov0.shape[0], dtype=torch.float64)


def noised(path: Path, x0: Tensor, t: float, seed: int) -> Tensor:
    """x_t = α x_0 + σ ε with ε ~ N(0, I) drawn from ``seed`` (the same ε for every t)."""
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed), dtype=x0.dtype)
    return q_sample(path, x0, float(t), eps)


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None  # JSON has no infinity: λ is ±∞ at the ends


def forward_state(path: Path, ex: Explorer, u: float, seed: int) -> dict[str, Any]:
    """The numbers behind the picture at u ∈ [0, 1]: t, α, σ, λ, and the eigenvalues (descending) of the closed
    form Σ_t and of the empirical covariance of the noised examples."""
    t = u * path.t_max
    tt = torch.tensor(t, dtype=torch.float64)
    cov = covariance_at(path, ex.cov0, t)
    emp = empirical_cov(vectors(noised(path, ex.x0, t, seed)))
    return {"u": u, "t": t, "alpha": float(path.alpha(tt)), "sigma": float(path.sigma(tt)),
            "log_snr": _finite(float(path.log_snr(tt))), "dim": int(cov.shape[0]), "source": ex.source,
            "eigenvalues": torch.linalg.eigvalsh(cov).flip(0).tolist(),
            "empirical_eigenvalues": torch.linalg.eigvalsh(emp).flip(0).clamp_min(0).tolist()}


def forward_png(path: Path, ex: Explorer, u: float, seed: int) -> bytes:
    """Three panels: x_t of the examples, Σ_t as a heat map, the eigen-spectra of α²Σ_0, σ²I and Σ_t."""
    from matplotlib.figure import Figure

    st = forward_state(path, ex, u, seed)
    xt = noised(path, ex.x0, st["t"], seed)
    fig = Figure(figsize=(10.5, 3.4))
    a1, a2, a3 = fig.subplots(1, 3)
    if xt.ndim == 4:
        a1.imshow(np.asarray(image_grid(xt[:SHOWN])), cmap="gray", vmin=0, vmax=255)
        a1.axis("off")
    else:
        v = xt.reshape(xt.shape[0], -1).numpy()
        plot_vectors(a1, v, limit=float(np.abs(v).max()) * 1.05 + 1e-6, curves=8)
    a1.set_title(f"x_t   t = {st['t']:.3g}   α = {st['alpha']:.3f}   σ = {st['sigma']:.3f}", fontsize=9)
    cov = covariance_at(path, ex.cov0, st["t"]).numpy()
    im = a2.imshow(cov, cmap="viridis")
    fig.colorbar(im, ax=a2, fraction=0.046)
    a2.set_title(f"Σ_t = α²Σ_0 + σ²I  ({st['dim']}×{st['dim']})", fontsize=9)
    k = np.arange(1, st["dim"] + 1)
    signal = st["alpha"] ** 2 * torch.linalg.eigvalsh(ex.cov0).flip(0).clamp_min(1e-12).numpy()
    a3.semilogy(k, signal, label="α² eig Σ_0 (signal)")
    a3.semilogy(k, np.full(len(k), max(st["sigma"] ** 2, 1e-12)), "--", label="σ² (noise)")
    a3.semilogy(k, st["eigenvalues"], lw=2, label="eig Σ_t")
    a3.semilogy(k, np.maximum(st["empirical_eigenvalues"], 1e-12), ".", ms=3, label="eig, noised examples")
    a3.set_ylim(1e-4, None)
    a3.set_xlabel("eigenvalue rank")
    a3.legend(fontsize=7)
    a3.set_title("eigen-spectrum", fontsize=9)
    fig.subplots_adjust(left=0.03, right=0.98, bottom=0.14, top=0.9, wspace=0.3)  # fixed: one draw, not three
    return figure_png(fig)
