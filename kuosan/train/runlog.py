"""What a run writes besides checkpoints: log.csv rows, the progress bar, preview samples, the training panels
(loss and validation loss, learning rate, gradient norm: loss.png) and, with log.tensorboard, a TensorBoard log in
RUN/tb/ (the same scalars as log.csv, through torch.utils.tensorboard; the tensorboard package is the optional
extra ``kuosan[tensorboard]``, checked at start: without it the run does not begin).

None of it is essential: a line or picture that cannot be written (a full disk, a read-only file) is a one-line
warning on stderr (once per kind), never the end of a run. Pictures are written under a temporary name and
renamed, so a half-written PNG never replaces a good one. Plotting (matplotlib, kuosan.viz) and the samplers are
imported only when a picture is drawn.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

FIELDS = ["step", "loss", "lr", "grad_norm", "val_loss", "samples_per_s", "elapsed_s"]
# log.csv column -> TensorBoard tag
TB_TAGS = {"loss": "loss/train", "val_loss": "loss/validation", "lr": "optim/lr", "grad_norm": "optim/grad_norm",
           "samples_per_s": "speed/samples_per_s"}


class TensorBoardUnavailable(ValueError):
    """log.tensorboard asked for a TensorBoard log, but the tensorboard package is not installed."""


def check_tensorboard(wanted: bool) -> None:
    """TensorBoardUnavailable (one line) when ``wanted`` and torch.utils.tensorboard cannot be imported."""
    if not wanted:
        return
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise TensorBoardUnavailable("log.tensorboard = true (--tensorboard) needs the tensorboard package: "
                                     "pip install 'kuosan[tensorboard]'") from None


def open_tensorboard(run_dir: Path, start: int) -> Any:
    """A SummaryWriter on RUN/tb/; on resume from step ``start`` > 0, events a stopped process logged after its
    checkpoint (steps > start) are purged from TensorBoard's view, so the log continues like the run itself."""
    check_tensorboard(True)
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=start + 1 if start > 0 else None)


class RunLog:
    """Averages losses between rows and appends one row to ``log.csv`` every log.log_every steps (main
    process only); a resumed run appends to its log, a fresh one starts it with the header. With ``tensorboard``
    each row also goes to RUN/tb/ (TensorBoardUnavailable at once when the package is missing)."""

    def __init__(self, run_dir: Path, start: int, end: int, batch_size: int, enabled: bool, progress: bool,
                 tensorboard: bool = False):
        check_tensorboard(tensorboard)  # every process: a missing package stops the run before any step
        self.path, self.batch_size, self.enabled = run_dir / "log.csv", batch_size, enabled
        self.acc, self.n, self.gn = 0.0, 0, 0.0
        self.t0 = self.last_t = time.time()
        self.last_step = start
        self.warned: set[str] = set()
        if enabled and (start == 0 or not self.path.exists()):
            self.attempt("log.csv", lambda: self._write("w", FIELDS))
        self.tb = open_tensorboard(run_dir, start) if (enabled and tensorboard) else None
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

        try:
            tqdm.write(msg, file=sys.stderr)
        except OSError:  # stderr gone (a closed terminal): a note is not worth stopping for
            pass

    def attempt(self, what: str, fn: Callable[[], Any]) -> bool:
        """Run fn (a write of ``what``); a failure is a warning (the first of each kind), never the end of a run."""
        try:
            fn()
            return True
        except Exception as e:  # noqa: BLE001 - whatever breaks a log line or a picture, training goes on
            if what not in self.warned:
                self.warned.add(what)
                msg = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.strerror else \
                    " ".join(f"{type(e).__name__}: {e}".split())[:200]
                self.note(f"kuosan: warning: could not write {what} ({msg}); training goes on")
            return False

    def _write(self, mode: str, row: list[Any]) -> None:
        with open(self.path, mode, newline="") as f:
            csv.writer(f).writerow(row)

    def row(self, done: int, lr: float, val: float | None) -> None:
        """Write the row of step ``done`` (averages since the last row)."""
        if not self.enabled:
            return
        now = time.time()
        n = max(self.n, 1)
        rate = (done - self.last_step) * self.batch_size / max(now - self.last_t, 1e-9)
        self.attempt("log.csv", lambda: self._write("a", [
            done, f"{self.acc / n:.6g}", f"{lr:.6g}", f"{self.gn / n:.4g}", "" if val is None else f"{val:.6g}",
            f"{rate:.1f}", f"{now - self.t0:.2f}"]))
        if self.tb is not None:
            values = {"loss": self.acc / n, "lr": lr, "grad_norm": self.gn / n, "val_loss": val, "samples_per_s": rate}
            self.attempt("tb/", lambda: self._tb_row(done, values))
        self.bar.set_postfix(loss=f"{self.acc / n:.4f}", img_s=f"{rate:.0f}")
        self.acc, self.n, self.gn, self.last_t, self.last_step = 0.0, 0, 0.0, now, done

    def _tb_row(self, step: int, values: dict[str, float | None]) -> None:
        for key, v in values.items():
            if v is not None:
                self.tb.add_scalar(TB_TAGS[key], v, step)
        self.tb.flush()

    def close(self) -> None:
        self.bar.close()
        if self.tb is not None:
            self.attempt("tb/", self.tb.close)

    def plot(self, out: Path) -> None:
        """The training panels (kuosan.viz.plot_loss: loss with validation loss, learning rate, gradient norm)."""
        from ..viz import plot_loss

        self.attempt(out.name, lambda: write_picture(out, lambda tmp: plot_loss(self.path, tmp)))


def write_picture(out: Path, draw: Callable[[Path], None]) -> None:
    """draw(tmp) to a temporary .png beside ``out``, then rename it over ``out`` (no temp file is left)."""
    tmp = out.parent / f".tmp-{os.getpid()}-{out.name}"
    try:
        draw(tmp)
        os.replace(tmp, out)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


@torch.no_grad()
def sample_preview(D: Any, shape: list[int], n: int, steps: int, seed: int, device: torch.device) -> Tensor:
    """n samples with DDIM (η = 0) on the path's default grid (``default_grid``: karras on the VE path, trailing
    uniform elsewhere) from a fixed seed; (n, *shape) on the CPU. A consistency model: multistep consistency sampling
    on its default levels, at most 2 steps."""
    from ..sampling import ddim, default_grid, make_grid, sample

    if getattr(D, "kind", None) == "consistency":
        return sample(D, "consistency", (n, *shape), min(2, steps), seed=seed, device=device)
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn((n, *shape), generator=g) * D.path.prior_std).to(device)
    T = getattr(D.path, "T", None)  # a discrete chain has at most T distinct steps
    ts = make_grid(D.path, min(steps, T) if T is not None else steps, default_grid(D.path))
    return ddim(D, x, ts).cpu()


def save_preview(x: Tensor, run_dir: Path, step: int | None, reference: Tensor | None) -> None:
    """samples.png (the latest preview; 2-D data drawn over the data) and, per step, samples/step_N.png."""
    from ..viz import save_samples

    write_picture(run_dir / "samples.png", lambda tmp: save_samples(x, tmp, reference=reference))
    if step is not None:
        (run_dir / "samples").mkdir(exist_ok=True)
        write_picture(run_dir / "samples" / f"step_{step:07d}.png", lambda tmp: save_samples(x, tmp))
