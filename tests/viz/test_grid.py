"""kuosan.viz.grid: sample grids put each image in its own cell; every kind of sample becomes a PNG."""

import numpy as np
import torch
from PIL import Image

from kuosan.viz import image_grid, save_samples


def test_image_grid_tiles_images_in_order():
    x = torch.stack([torch.full((1, 2, 3), v) for v in (-1.0, 0.0, 1.0)])  # 3 images 2x3, values -1, 0, 1
    g = np.asarray(image_grid(x, nrow=2, pad=1, scale=1))
    assert g.shape == (2 * 3 + 1, 2 * 4 + 1)  # 2 rows of cells (2 + pad), 2 columns (3 + pad), outer pad
    assert (g[1:3, 1:4] == 0).all() and (g[1:3, 5:8] == 128).all() and (g[4:6, 1:4] == 255).all()
    assert (g[4:6, 5:8] == 0).all() and (g[0] == 0).all()  # the empty cell and the padding stay black


def test_save_samples_images_points_and_curves(tmp_path):
    save_samples(torch.rand(4, 3, 8, 8) * 2 - 1, tmp_path / "i.png")
    save_samples(torch.randn(50, 2), tmp_path / "p.png", reference=torch.randn(100, 2))
    save_samples(torch.randn(5, 32), tmp_path / "c.png")
    for name in ("i", "p", "c"):
        with Image.open(tmp_path / f"{name}.png") as im:
            assert im.format == "PNG" and min(im.size) > 10
