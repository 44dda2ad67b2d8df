"""kuosan.viz.panels: the training panels read log.csv's columns (empty cells as NaN) and draw three panels."""

import math

from PIL import Image

from kuosan.viz.panels import PANELS_SIZE, plot_loss, read_log
from kuosan.viz.render import DPI

HEADER = "step,loss,lr,grad_norm,val_loss,samples_per_s,elapsed_s\n"


def test_read_log_and_draw(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text(HEADER + "2,0.5,0.001,3.0,,100,1\n4,0.25,0.002,2.0,0.3,100,2\n")
    cols = read_log(log)
    assert cols["step"].tolist() == [2, 4] and cols["lr"].tolist() == [0.001, 0.002]
    assert math.isnan(cols["val_loss"][0]) and cols["val_loss"][1] == 0.3
    plot_loss(log, tmp_path / "loss.png")
    with Image.open(tmp_path / "loss.png") as im:
        assert im.size == (round(PANELS_SIZE[0] * DPI), round(PANELS_SIZE[1] * DPI))


def test_an_empty_log_draws_nothing(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text(HEADER)
    plot_loss(log, tmp_path / "loss.png")
    assert not (tmp_path / "loss.png").exists()
