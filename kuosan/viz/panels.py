"""The training-run panels, from a run's log.csv: the training and validation loss, the learning rate and the
gradient norm (before clipping) against the step."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from .render import pyplot, save_png

PANELS_SIZE = (12.0, 3.6)  # inches: three panels side by side


def read_log(log_csv: str | Path) -> dict[str, np.ndarray]:
    """log.csv's numeric columns as float arrays (one entry per row; NaN where a row leaves a cell empty)."""
    with open(log_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    cols: dict[str, np.ndarray] = {}
    for key in ("step", "loss", "lr", "grad_norm", "val_loss"):
        cols[key] = np.array([_num(r.get(key)) for r in rows], dtype=np.float64)
    return cols


def _num(s: Any) -> float:
    try:
        return float(s)
    except (TypeError, ValueError):
        return math.nan


def plot_loss(log_csv: str | Path, path: str | Path) -> None:
    """Three panels from the run's CSV log: training loss with the validation loss (EMA weights), log scale;
    the learning rate; the gradient norm before clipping, log scale. Nothing is drawn for an empty log."""
    cols = read_log(log_csv)
    if len(cols["step"]) == 0:
        return
    draw_panels(cols, path)


def draw_panels(cols: dict[str, np.ndarray], path: str | Path) -> None:
    """Draw read_log's columns (see plot_loss) to a PNG."""
    plt = pyplot()
    fig, (a, b, c) = plt.subplots(1, 3, figsize=PANELS_SIZE)
    step = cols["step"]
    a.plot(step, cols["loss"], label="train loss")
    val = np.isfinite(cols["val_loss"])
    if val.any():
        a.plot(step[val], cols["val_loss"][val], "o-", ms=3, label="validation loss (EMA)")
    _log_scale(a, cols["loss"])
    a.set(xlabel="step", ylabel="loss", title="loss")
    a.legend()
    b.plot(step, cols["lr"], color="C2")
    b.set(xlabel="step", ylabel="learning rate", title="learning rate")
    b.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    c.plot(step, cols["grad_norm"], color="C3")
    _log_scale(c, cols["grad_norm"])
    c.set(xlabel="step", ylabel="‖g‖ (before clipping)", title="gradient norm")
    fig.tight_layout()
    save_png(fig, path)


def _log_scale(ax: Any, y: np.ndarray) -> None:
    """Log y-axis when every finite value is positive (a loss can be negative, e.g. a VLB term: then linear)."""
    y = y[np.isfinite(y)]
    if len(y) and (y > 0).all():
        ax.set_yscale("log")
