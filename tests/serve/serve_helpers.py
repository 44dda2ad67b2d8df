"""Shared by the explorer-page tests (a uniquely named module: `conftest` is ambiguous across test folders): tiny
trained runs, an app client, and `kuosan serve` started in a subprocess."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from kuosan.config import Config, apply_overrides

TINY_MLP = {"net.mlp_hidden": 16, "net.mlp_depth": 1, "optim.batch_size": 16, "optim.steps": 6, "optim.warmup": 2,
            "log.log_every": 3, "log.val_every": 6, "log.ckpt_every": 6, "log.n_samples": 4, "log.sample_steps": 2,
            "run.threads": 1, "data.n": 256}
TINY_UNET = {**TINY_MLP, "net.channels": 8, "net.channel_mult": [1, 2], "data.n": 100}


def train_tiny(out: Path, **over: Any) -> Path:
    """A trained run folder at ``out`` (keys "table__key" for "table.key")."""
    from kuosan.train import train

    base = TINY_UNET if over.get("data__name") == "digits" else TINY_MLP
    cfg = apply_overrides(Config(), {**base, **{k.replace("__", "."): v for k, v in over.items()},
                                     "log.out": str(out)}).validate()
    return train(cfg, progress=False)


def make_client(run: Path, out: Path, workers: int = 2):
    """A TestClient of the app serving ``run``, writing into ``out`` (use it as a context manager)."""
    from fastapi.testclient import TestClient

    from kuosan.serve import create_app, load_run

    out.mkdir(parents=True, exist_ok=True)
    return TestClient(create_app(load_run(run), out, workers=workers))


@contextmanager
def serve_cli(run: Path, out: Path, *extra: str, timeout: float = 90.0) -> Iterator[str]:
    """``kuosan serve RUN --port 0`` in a subprocess; yields the page's URL it prints; stopped with SIGINT."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "kuosan.cli", "serve", str(run), "--port", "0", "--out", str(out),
                             "--threads", "1", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        line = ""
        while not line and time.monotonic() < deadline and proc.poll() is None:
            if sel.select(timeout=0.5):
                line = proc.stdout.readline()
        url = re.search(r"http://\S+/", line)
        assert url, f"kuosan serve printed {line!r}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        yield url.group(0)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:  # pragma: no cover - a hung server
                proc.kill()
                proc.wait()
