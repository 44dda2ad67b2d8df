"""For an image model: x_t and the denoiser's x̂_0 across the steps of a sampler, one pair of rows per sample.

Column i shows the state entering step i, x_{t_i}, above x̂_0 = D(x_{t_i}, t_i), the prediction the step moves
towards (Ho et al. 2020 Fig. 6 shows the same pair for DDPM); the last column is the sample. States are drawn as
x_t/√(α_t² + σ_t²) (x_t itself on VP paths) clipped to the data range [-1, 1].
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from ..paths import Path
from .render import pyplot, save_png


def pick_steps(steps: int, columns: int) -> list[int]:
    """``columns`` step indices spread evenly over 0..steps-1, first and last included (all when fewer)."""
    if columns >= steps:
        return list(range(steps))
    return sorted({round(k * (steps - 1) / (columns - 1)) for k in range(columns)})


def denoise_story(states: dict[str, Tensor], path: Path, columns: int = 8) -> dict[str, Any]:
    """The arrays behind the picture: steps (K,) the chosen step indices, t (K,) their times, xt and x0
    (K, n, C, H, W) the state entering each (divided by √(α² + σ²)) and its x̂_0, sample (n, C, H, W)."""
    x = states["x"]
    if x.ndim != 5:
        raise ValueError(f"denoise needs an image model (samples (C, H, W)), got samples of shape "
                         f"{tuple(x.shape[2:])}; for 2-D data see kuosan viz trajectory")
    N = len(states["ts"]) - 1
    ks = pick_steps(N, columns)
    t = states["ts"][ks]
    scale = (path.alpha(t) ** 2 + path.sigma(t) ** 2).sqrt().float()
    return {"steps": np.array(ks), "t": t, "xt": x[ks] / scale[:, None, None, None, None], "x0": states["x0"][ks],
            "sample": x[-1], "path": path.kind}


def _img(a: Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W) or (H, W, 3) in [0, 1]."""
    a = ((a.clamp(-1, 1) + 1) / 2).numpy()
    return a[0] if a.shape[0] == 1 else np.transpose(a[:3], (1, 2, 0))


def draw_denoise(data: dict[str, Any], out: Any, title: str = "") -> None:
    """Rows x_t / x̂_0 for each sample, columns the chosen steps, then the sample."""
    plt = pyplot()
    K, n = data["xt"].shape[:2]
    cell = 1.0
    fig, axes = plt.subplots(2 * n, K + 1, figsize=(cell * (K + 1) + 0.6, cell * 2 * n + 0.9), squeeze=False)
    gray = dict(cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    for j in range(n):
        for k in range(K):
            axes[2 * j, k].imshow(_img(data["xt"][k, j]), **gray)
            axes[2 * j + 1, k].imshow(_img(data["x0"][k, j]), **gray)
        axes[2 * j, K].imshow(_img(data["sample"][j]), **gray)
        axes[2 * j + 1, K].axis("off")
        axes[2 * j, 0].set_ylabel("x_t", fontsize=8)
        axes[2 * j + 1, 0].set_ylabel("x̂_0", fontsize=8)
    for k in range(K):
        axes[0, k].set_title(f"step {int(data['steps'][k])}\nt = {float(data['t'][k]):.4g}", fontsize=7)
    axes[0, K].set_title("sample", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"x_t and x̂_0 across the sampling steps ({data['path']} path)", fontsize=9)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 1 - 0.3 / fig.get_size_inches()[1]))
    save_png(fig, out)
