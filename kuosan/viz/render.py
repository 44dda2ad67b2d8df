"""Turning figures into files: matplotlib on its file-only Agg backend, PNGs of a known pixel size, animated GIFs.

Every picture kuosan draws has a fixed size in inches at DPI dots per inch (no tight bounding box), so its pixel
size is known in advance; PNGs and GIF frames are reduced to an adaptive 256-colour palette by Pillow, which keeps
plots sharp and the files small (the README's pictures are tens of kilobytes).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import numpy as np
from PIL import Image

DPI = 100


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_image(fig: Any, close: bool = True) -> Image.Image:
    """The figure as an RGB PIL image of fig.get_size_inches() * DPI pixels."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    if close:
        plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def palette(img: Image.Image) -> Image.Image:
    """The image in an adaptive 256-colour palette (lossless for plots with few colours)."""
    return img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


def save_png(fig: Any, path: str | Path | BinaryIO) -> None:
    """Write the figure as a palette PNG to a path or a binary file object (a page serving pictures passes a
    BytesIO); the figure is closed."""
    palette(figure_image(fig)).save(path, format="PNG", optimize=True)


def save_gif(frames: Sequence[Image.Image], path: str | Path, fps: float = 8.0, hold_last: int = 4) -> None:
    """An endlessly looping GIF of the frames at ``fps`` frames per second; the last frame is held
    ``hold_last`` frame times so the end state can be seen before the loop starts again."""
    if not frames:
        raise ValueError("a GIF needs at least one frame")
    ms = max(20, int(round(1000 / fps)))
    durations = [ms] * (len(frames) - 1) + [ms * (1 + hold_last)]
    # one palette for all frames (from a sample of them), so colours do not flicker between frames
    strip = Image.fromarray(np.concatenate([np.asarray(f.convert("RGB")) for f in frames[:: max(1, len(frames) // 8)]]))
    pal = palette(strip)
    quant = [f.convert("RGB").quantize(palette=pal, dither=Image.Dither.NONE) for f in frames]
    quant[0].save(path, format="GIF", save_all=True, append_images=quant[1:], duration=durations, loop=0,
                  optimize=False, disposal=1)


def save_npz(path: str | Path, arrays: dict[str, Any]) -> None:
    """The arrays behind a picture (numpy or torch; strings kept as numpy strings) in one .npz."""
    out = {}
    for k, v in arrays.items():
        if hasattr(v, "detach"):
            v = v.detach().cpu().numpy()
        out[k] = np.asarray(v)
    np.savez(path, **out)
