"""`kuosan sample` with a constraint or an inpainting mask, end to end on a tiny digits run: the output satisfies
the constraint exactly, the known pixels are kept, RePaint's re-steps are counted, and bad input is one line."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kuosan.cli import main


def test_box_constraint_holds_exactly(tiny_run, tmp_path, capsys):
    out = tmp_path / "x.npz"
    assert main(["sample", str(tiny_run), "--steps", "5", "--n", "6", "--constraint", "box:-0.5,0.25",
                 "--out", str(out), "--quiet"]) == 0
    x = np.load(out)["x"]
    assert x.shape == (6, 1, 8, 8) and x.min() >= -0.5 and x.max() <= 0.25
    assert np.isclose(x, -0.5).any() or np.isclose(x, 0.25).any()  # the constraint was active, not vacuous


@pytest.mark.parametrize("method", ["replace", "repaint"])
def test_inpainting_keeps_the_known_pixels(tiny_run, tmp_path, capsys, method):
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :4] = 255  # left half known
    known = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
    Image.fromarray(mask).save(tmp_path / "m.png")
    Image.fromarray(known).save(tmp_path / "k.png")
    out = tmp_path / "fill.npz"
    argv = ["sample", str(tiny_run), "--steps", "4", "--n", "3", "--mask", str(tmp_path / "m.png"), "--known",
            str(tmp_path / "k.png"), "--inpaint", method, "--out", str(out), "--quiet"]
    if method == "repaint":
        argv += ["--resample", "3", "--sampler", "ddim"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    x = np.load(out)["x"]
    x = x.reshape(-1, 8, 8)[:3] if x.ndim != 4 else x[:, 0]
    want = known.astype(np.float64) / 127.5 - 1
    assert np.allclose(x[:, :, :4], want[None, :, :4], atol=1e-6)
    if method == "repaint":  # 4 steps, 3 resamplings: (3 - 1) re-steps at each of the 3 inner steps are counted
        assert "network evaluations per sample" in printed


def test_bad_constraints_are_one_line(tiny_run, tmp_path, err):
    err(["sample", str(tiny_run), "--constraint", "box:1,-1", "--out", str(tmp_path / "x.png")])
    Image.fromarray(np.full((4, 4), 255, np.uint8)).save(tmp_path / "small.png")
    err(["sample", str(tiny_run), "--mask", str(tmp_path / "small.png"), "--known", str(tmp_path / "small.png"),
         "--out", str(tmp_path / "x.png")])
