"""Sample pictures: image grids (images), scatter plots (2-D vectors) and line plots (longer vectors)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor


def image_grid(x: Tensor, nrow: int | None = None, pad: int = 1, scale: int = 0) -> Image.Image:
    """Tile images (N, C, H, W) in [-1, 1] into one PIL image; small images are enlarged for viewing."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = torch.zeros(c, ncol * (h + pad) + pad, nrow * (w + pad) + pad, dtype=torch.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = x[i]
    arr = grid.permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[:, :, 0] if c == 1 else arr, mode="L" if c == 1 else "RGB")
    scale = scale or max(1, 256 // max(h, w) // 2)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img


def save_samples(x: Tensor, path: str | Path, reference: Tensor | None = None, nrow: int | None = None) -> None:
    """Images -> PNG grid (``nrow`` images a row, default square); 2-D vectors -> scatter; longer vectors -> line
    plot of the first 16 curves."""
    path = Path(path)
    if x.ndim == 4:
        image_grid(x, nrow=nrow).save(path)
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5) if x.shape[1] == 2 else (7, 4))
    x = x.detach().float().cpu()
    if x.shape[1] == 2:
        if reference is not None:
            r = reference.float().cpu()
            ax.scatter(r[:, 0], r[:, 1], s=2, alpha=0.3, color="0.6", label="data")
        ax.scatter(x[:, 0], x[:, 1], s=3, color="C0", label="samples")
        ax.set_aspect("equal")
        ax.legend(loc="upper right")
    else:
        for row in x[:16]:
            ax.plot(row.numpy(), lw=1)
        ax.set_xlabel("index")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
