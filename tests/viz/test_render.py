"""kuosan.viz.render: PNGs of the figure's pixel size, looping GIFs with every frame, .npz of the arrays."""

import numpy as np
import torch
from PIL import Image

from kuosan.viz.render import DPI, figure_image, pyplot, save_gif, save_npz, save_png


def test_png_has_the_figures_pixel_size_and_a_palette(tmp_path):
    fig, ax = pyplot().subplots(figsize=(3.0, 2.0))
    ax.plot([0, 1], [1, 0])
    save_png(fig, tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as im:
        assert im.format == "PNG" and im.size == (3 * DPI, 2 * DPI) and im.mode == "P"


def test_gif_keeps_every_frame_and_loops(tmp_path):
    plt = pyplot()
    frames = []
    for k in range(5):
        fig, ax = plt.subplots(figsize=(2.0, 1.5))
        ax.plot([0, 1], [0, k])
        frames.append(figure_image(fig))
    save_gif(frames, tmp_path / "a.gif", fps=10)
    with Image.open(tmp_path / "a.gif") as im:
        assert im.format == "GIF" and im.n_frames == 5 and im.size == (2 * DPI, round(1.5 * DPI))
        assert im.info.get("loop") == 0


def test_npz_holds_numpy_and_torch_arrays(tmp_path):
    save_npz(tmp_path / "a.npz", {"t": torch.arange(3.0), "n": 4, "kind": "flow", "x": np.eye(2)})
    with np.load(tmp_path / "a.npz") as z:
        assert z["t"].tolist() == [0.0, 1.0, 2.0] and int(z["n"]) == 4 and str(z["kind"]) == "flow"
        assert np.array_equal(z["x"], np.eye(2))
