"""Training (Ho et al. 2020 Algorithm 1 on any path and objective): the loop, one step, the EMA, the run log, and
what keeps a run safe: stop signals, the run-folder lock, the divergence guard, thread choice, checks at start.

``train(cfg, resume=..., overrides=..., stop_at=..., progress=...)`` -> run folder. Randomness is a pure function
of (seed, step) (see step.py), so a resumed run continues bit for bit and N DDP processes train the model one
process would. Modules: loop.py, step.py, ema.py, runlog.py, signals.py (SIGINT/SIGTERM/SIGUSR1: finish the step,
checkpoint, exit 130/143/138), lock.py (one process per run folder), guard.py (divergence), resume.py, device.py,
preflight.py (memory and disk before start), threads.py (the automatic thread count).

The names are imported lazily, so ``kuosan.train.signals`` loads without torch (a command installs its stop
handlers before importing torch).
"""

from __future__ import annotations

from typing import Any

from .signals import Interrupted

_LAZY = {"EMA": ".ema", "TrainingError": ".guard", "lr_at": ".step", "step_generator": ".step", "train": ".loop",
         "RunLockedError": ".lock"}

__all__ = ["EMA", "Interrupted", "RunLockedError", "TrainingError", "lr_at", "step_generator", "train"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
