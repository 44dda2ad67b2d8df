"""The page's pictures: an image grid puts image i at row i // cols, column i % cols, enlarged without blending."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from kuosan.serve.render import PIXELS, batch_png, image_grid


def test_image_grid_places_each_image():
    x = torch.stack([torch.full((1, 3, 3), v) for v in (-1.0, 0.0, 1.0, 0.5, -0.5)])  # 5 images: 3 columns, 2 rows
    img = image_grid(x)
    width, height = 3 * (3 + 1) + 1, 2 * (3 + 1) + 1  # tiles of 3 pixels and 1-pixel gaps
    scale = PIXELS // width
    assert img.size == (width * scale, height * scale) and img.mode == "L"
    a = np.asarray(img)[::scale, ::scale]  # back to one pixel per grid cell
    want = {0: 0, 1: 128, 2: 255, 3: 191, 4: 64}  # (v + 1) · 127.5, rounded
    for i, v in want.items():
        r, c = divmod(i, 3)
        assert (a[1 + 4 * r:4 + 4 * r, 1 + 4 * c:4 + 4 * c] == v).all(), i
    assert (a[0] == 0).all() and (a[:, 0] == 0).all()  # gaps are black


def test_rgb_and_vector_batches_are_pngs():
    rgb = Image.open(io.BytesIO(batch_png(torch.rand(4, 3, 5, 5) * 2 - 1)))
    assert rgb.format == "PNG" and rgb.mode == "RGB"
    for x in (torch.randn(50, 2), torch.randn(6, 64)):
        assert Image.open(io.BytesIO(batch_png(x, "x̂_0 after step 3"))).format == "PNG"
