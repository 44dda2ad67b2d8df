"""The inpainting picture: each input (known values on a grey background), its mask, and the samples that fill it."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

MAX_FILLS = 16  # fills shown per input


def inpainting_figure(x: Tensor, mask: Tensor, known: Tensor, path: str | Path, first_index: int = 0) -> None:
    """Save a PNG: one row per input k (mask and known (K, *D), 1 = known), showing the masked input, the mask and
    up to MAX_FILLS of the samples x (n, *D) that used it (sample first_index + j uses row (first_index + j) mod K).
    Images are tiled with :func:`kuosan.viz.image_grid`; vectors are drawn as curves with the known values marked."""
    K = mask.shape[0]
    idx = torch.arange(first_index, first_index + x.shape[0]) % K
    fills = [x[idx == k][:MAX_FILLS] for k in range(K)]
    if x.ndim == 4:
        from ..viz import image_grid

        cols = 2 + max(len(f) for f in fills)
        tiles = []
        for k in range(K):
            m = mask[k].expand_as(x[0]).to(x)
            row = [m * known[k].to(x), 2 * m - 1, *fills[k]]  # unknown pixels grey (0), the mask black/white
            row += [torch.zeros_like(x[0])] * (cols - len(row))
            tiles += row
        image_grid(torch.stack(tiles), nrow=cols).save(path)
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(K, 1, figsize=(7, 2.5 * K), squeeze=False)
    for k, ax in enumerate(axes[:, 0]):
        for f in fills[k]:
            ax.plot(f.float().cpu().numpy(), lw=1, alpha=0.7)
        on = mask[k].reshape(-1).bool().cpu()
        ax.plot(on.nonzero().squeeze(1).numpy(), known[k].reshape(-1)[on].float().cpu().numpy(), "ko", ms=4,
                label="known")
        ax.set_title(f"input {k}: {int(on.sum())} of {on.numel()} values known, {len(fills[k])} fills")
        ax.legend(loc="upper right")
    axes[-1, 0].set_xlabel("index")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
