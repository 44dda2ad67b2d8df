"""Fixtures of the training tests: a hook at a chosen step, and uninterrupted reference runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

import kuosan.checkpoint.read as read_mod
import kuosan.checkpoint.write as write_mod
import kuosan.train.loop as loop_mod
from train_helpers import tiny

# what tests replace to inject signals and faults; the reference runs use the real ones
REAL = [(loop_mod, "train_step", loop_mod.train_step), (loop_mod, "load_dataset", loop_mod.load_dataset),
        (write_mod, "save_file", write_mod.save_file), (read_mod, "read_tensors", read_mod.read_tensors)]


@pytest.fixture
def at_step(monkeypatch):
    """at_step(k, fn): call fn() just before training step k (0-based) runs, in the main thread."""

    def install(k: int, fn: Callable[[], None]) -> None:
        real = loop_mod.train_step

        def step(cfg, net, net_fn, obj, batch, opt, i, *a, **kw):
            if i == k:
                fn()
            return real(cfg, net, net_fn, obj, batch, opt, i, *a, **kw)

        monkeypatch.setattr(loop_mod, "train_step", step)

    return install


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Callable[..., Path]:
    """straight(steps=20, **over): an uninterrupted tiny run of that many steps (cached per module)."""
    from kuosan.train import train

    cache: dict[tuple, Path] = {}

    def get(steps: int = 20, **over: Any) -> Path:
        key = (steps, tuple(sorted(over.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp("straight") / "run"
            with pytest.MonkeyPatch.context() as mp:
                for mod, name, real in REAL:
                    mp.setattr(mod, name, real)
                train(tiny(out, optim__steps=steps, **over), progress=False)
            cache[key] = out
        return cache[key]

    return get
