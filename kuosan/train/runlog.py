"""What a run writes besides checkpoints: log.csv rows, the progress bar, preview samples, the loss plot.

Plotting (matplotlib, kuosan.viz) and the samplers are imported only when a picture is drawn.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

FIELDS = ["step", "loss", "lr", "grad_norm", "val_loss", "samples_per_s", "elapsed_s"]


class RunLog:
    """Averages losses between rows and appends one row to ``log.csv`` every log.log_every steps (main
    process only); a resumed run appends to its log, a fresh one starts it with the header."""

    def __init__(self, run_dir: Path, start: int, end: int, batch_size: int, enabled: bool, progress: bool):
        self.path, self.batch_size, self.enabled = run_dir / "log.csv", batch_size, enabled
        self.acc, self.n, self.gn = 0.0, 0, 0.0
        self.t0 = self.last_t = time.time()
        self.last_step = start
        if enabled and (start == 0 or not self.path.exists()):
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(FIELDS)
        from tqdm.auto import tqdm

        self.bar = tqdm(total=end, initial=start, disable=not (progress and enabled), desc="training",
                        dynamic_ncols=True)

    def add(self, loss: float, grad_norm: float) -> None:
        self.acc, self.n, self.gn = self.acc + loss, self.n + 1, self.gn + grad_norm
        self.bar.update(1)

    def skip(self) -> None:
        self.bar.update(1)

    def note(self, msg: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(msg)

    def row(self, done: int, lr: float, val: float | None) -> None:
        """Write the row of step ``done`` (averages since the last row)."""
        if not self.enabled:
            return
        now = time.time()
        n = max(self.n, 1)
        rate = (done - self.last_step) * self.batch_size / max(now - self.last_t, 1e-9)
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([done, f"{self.acc / n:.6g}", f"{lr:.6g}", f"{self.gn / n:.4g}",
                                    "" if val is None else f"{val:.6g}", f"{rate:.1f}", f"{now - self.t0:.2f}"])
        self.bar.set_postfix(loss=f"{self.acc / n:.4f}", img_s=f"{rate:.0f}")
        self.acc, self.n, self.gn, self.last_t, self.last_step = 0.0, 0, 0.0, now, done

    def close(self) -> None:
        self.bar.close()

    def plot(self, out: Path) -> None:
        from ..viz import plot_loss

        plot_loss(self.path, out)


@torch.no_grad()
def sample_preview(D: Any, shape: list[int], n: int, steps: int, seed: int, device: torch.device) -> Tensor:
    """n samples with DDIM (η = 0) on the trailing uniform grid from a fixed seed; (n, *shape) on the CPU."""
    from ..sampling import ddim, uniform_grid

    g = torch.Generator().manual_seed(seed)
    x = (torch.randn((n, *shape), generator=g) * D.path.prior_std).to(device)
    T = getattr(D.path, "T", None)  # a discrete chain has at most T distinct steps
    ts = uniform_grid(D.path, min(steps, T) if T is not None else steps, "trailing")
    return ddim(D, x, ts).cpu()


def save_preview(x: Tensor, run_dir: Path, step: int | None, reference: Tensor | None) -> None:
    """samples.png (the latest preview; 2-D data drawn over the data) and, per step, samples/step_N.png."""
    from ..viz import save_samples

    save_samples(x, run_dir / "samples.png", reference=reference)
    if step is not None:
        (run_dir / "samples").mkdir(exist_ok=True)
        save_samples(x, run_dir / "samples" / f"step_{step:07d}.png")
