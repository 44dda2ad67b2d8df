"""White noise reshaped to a target covariance Σ: by its eigen-decomposition and by its Cholesky factor, side by side.

Any A with A Aᵀ = Σ colours white noise: z ~ N(0, I) gives x = A z ~ N(0, A Aᵀ) = N(0, Σ). Two such factors:
- eigen: Σ = U Λ Uᵀ, A = U Λ^{1/2} Uᵀ, the symmetric square root (works for any positive semi-definite Σ);
- Cholesky: Σ = L Lᵀ, A = L lower-triangular (x_i depends on z_1..z_i only; needs Σ positive definite).
Both colour the same z here, so their samples differ while their covariances agree: the sample covariance of n
coloured draws goes to Σ with a relative Frobenius error of order n^{-1/2}.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .covariance import sample_cov
from .render import pyplot, save_png


class NotPositiveDefinite(ValueError):
    """A covariance without a Cholesky factor (a zero or negative eigenvalue)."""


def eigen_factor(S: Tensor) -> Tensor:
    """Σ^{1/2} = U Λ^{1/2} Uᵀ (D, D) float64 from Σ = U Λ Uᵀ (negative round-off eigenvalues set to 0)."""
    lam, U = torch.linalg.eigh(S.to(torch.float64))
    return (U * lam.clamp_min(0).sqrt()) @ U.T


def cholesky_factor(S: Tensor) -> Tensor:
    """L (D, D) lower-triangular with L Lᵀ = Σ; NotPositiveDefinite when Σ has none."""
    L, info = torch.linalg.cholesky_ex(S.to(torch.float64))
    if int(info) != 0:
        low = float(torch.linalg.eigvalsh(S.to(torch.float64))[0])
        raise NotPositiveDefinite(f"the target covariance is not positive definite (smallest eigenvalue {low:.3g}): "
                                  "it has no Cholesky factor (the eigen-decomposition still colours noise to it; "
                                  "add a small multiple of I for Cholesky)")
    return L


def error_curve(x: Tensor, target: Tensor, ns: np.ndarray) -> np.ndarray:
    """‖Cov(x[:n]) - Σ‖_F / ‖Σ‖_F for each n in ns."""
    norm = float(torch.linalg.matrix_norm(target))
    return np.array([float(torch.linalg.matrix_norm(sample_cov(x[:n]) - target)) / norm for n in ns])


def colour_noise_story(target: Tensor, n: int = 4000, seed: int = 0, show: int = 3) -> dict[str, Any]:
    """The arrays behind the picture: target (D, D); factor_eigen, factor_cholesky (D, D); cov_white, cov_eigen,
    cov_cholesky (D, D) the sample covariances of n white and coloured draws (the same z for both); white,
    eigen, cholesky (show, D) a few of the draws; ns and err_eigen, err_cholesky: the relative Frobenius error
    of the sample covariance after the first n draws."""
    if n < 2:
        raise ValueError(f"--n must be at least 2 draws, got {n}")
    target = target.to(torch.float64)
    A, L = eigen_factor(target), cholesky_factor(target)
    z = torch.randn(n, len(target), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)  # (n, D)
    x_eig, x_chol = z @ A.T, z @ L.T  # rows x = A z
    ns = np.unique(np.geomspace(min(10, n), n, 12).astype(int))
    return {"target": target, "factor_eigen": A, "factor_cholesky": L, "n": n,
            "cov_white": sample_cov(z), "cov_eigen": sample_cov(x_eig), "cov_cholesky": sample_cov(x_chol),
            "white": z[:show], "eigen": x_eig[:show], "cholesky": x_chol[:show], "ns": ns,
            "err_eigen": error_curve(x_eig, target, ns), "err_cholesky": error_curve(x_chol, target, ns)}


def draw_colour_noise(data: dict[str, Any], out: Any) -> None:
    """Top: white draws, the same draws coloured by Σ^{1/2} and by L, the error against n; bottom: Σ and the
    sample covariances of the white and coloured draws."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 4, figsize=(13.0, 6.0))
    for ax, key, name in zip(axes[0], ("white", "eigen", "cholesky"),
                             ("white noise z ~ N(0, I)", "eigen: x = U Λ^½ Uᵀ z", "Cholesky: x = L z")):
        for r, row in enumerate(data[key].numpy()):
            ax.plot(row, lw=1, color=f"C{r}")
        ax.set(title=name, xlabel="index")
    e = axes[0, 3]
    ns = data["ns"]
    e.loglog(ns, data["err_eigen"], "o-", ms=3, label="eigen")
    e.loglog(ns, data["err_cholesky"], "s--", ms=3, label="Cholesky")
    e.loglog(ns, data["err_eigen"][0] * np.sqrt(ns[0] / ns), ":", color="0.5", label="∝ n^-½")
    e.set(title="‖Cov - Σ‖_F / ‖Σ‖_F", xlabel="draws n")
    e.legend(fontsize=8)
    vmax = float(data["target"].abs().max())
    for ax, key, name in zip(axes[1], ("target", "cov_white", "cov_eigen", "cov_cholesky"),
                             ("target Σ", "Cov(z) ≈ I", "Cov(eigen) ≈ Σ", "Cov(Cholesky) ≈ Σ")):
        v = max(vmax, 1.0) if key == "cov_white" else vmax
        ax.imshow(data[key].numpy(), cmap="RdBu_r", vmin=-v, vmax=v, interpolation="nearest")
        ax.set(title=f"{name}" + ("" if key == "target" else f" (n = {data['n']})"), xticks=[], yticks=[])
    fig.suptitle("colouring white noise to a covariance Σ (the same z for both factors)", fontsize=10)
    fig.tight_layout()
    save_png(fig, out)
