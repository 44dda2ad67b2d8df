"""PNG pictures of a batch for the page: an image grid, a 2-D scatter, or line plots of longer vectors.

matplotlib is used through its object API (``Figure`` + the Agg canvas), never pyplot: pyplot keeps global state
and the page draws from several threads at once.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PIXELS = 256  # an image grid is enlarged (nearest neighbour) to about this many pixels a side


def image_grid(x: Tensor, pad: int = 1) -> Image.Image:
    """Images (N, C, H, W) in [-1, 1] (clamped) tiled in a near-square grid, enlarged for viewing."""
    u8 = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    n, c, h, w = u8.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.zeros(c, rows * (h + pad) + pad, cols * (w + pad) + pad, dtype=torch.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, top:top + h, left:left + w] = u8[i]
    arr = grid.permute(1, 2, 0).numpy()  # (H', W', C)
    img = Image.fromarray(arr[:, :, 0] if c == 1 else arr, mode="L" if c == 1 else "RGB")
    scale = max(1, PIXELS // max(img.width, img.height))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def image_grid_png(x: Tensor) -> bytes:
    """:func:`image_grid` as PNG bytes."""
    buf = io.BytesIO()
    image_grid(x).save(buf, format="PNG")
    return buf.getvalue()


def figure_png(fig: "Figure", dpi: int = 80) -> bytes:
    """A matplotlib Figure rendered by the Agg canvas, as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # attaches itself to the figure
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def plot_vectors(ax: "Axes", x: np.ndarray, limit: float | None = None, curves: int = 16) -> None:
    """2-D points as a scatter on equal axes; longer vectors (N, D) as the lines of their first ``curves`` rows."""
    if x.shape[1] == 2:
        ax.scatter(x[:, 0], x[:, 1], s=4, color="C0")
        ax.set_aspect("equal")
        if limit is not None:
            ax.set_xlim(-limit, limit)
            ax.set_ylim(-limit, limit)
    else:
        for row in x[:curves]:
            ax.plot(row, lw=1)
        ax.set_xlabel("index")
        if limit is not None:
            ax.set_ylim(-limit, limit)


def batch_png(x: Tensor, title: str = "") -> bytes:
    """A batch as PNG bytes: images (N, C, H, W) as a grid, vectors (N, D) as a plot; other shapes flattened."""
    if x.ndim == 4:
        return image_grid_png(x)
    from matplotlib.figure import Figure

    v = x.detach().float().cpu().reshape(x.shape[0], -1).numpy()
    fig = Figure(figsize=(4, 4) if v.shape[1] == 2 else (5, 3.5))
    ax = fig.add_subplot()
    finite = v[np.isfinite(v)]
    plot_vectors(ax, v, limit=float(np.abs(finite).max()) * 1.05 + 1e-6 if finite.size else None)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return figure_png(fig)
