"""``kuosan serve RUN``: a local explorer page for a trained run (FastAPI + one small HTML/JS page).

Pick a sampler, steps, grid, seed (and class / guidance for class-conditional runs), generate and watch x̂_0
step by step; move a slider for t to see the run's data diffuse, x_t = α x_0 + σ ε, beside Σ_t = α²Σ_0 + σ²I.
Needs the ``serve`` extra (fastapi, uvicorn): nothing is imported here until a name is asked for. Modules:
``schema`` (inputs and bounds), ``model`` (the served run), ``generate`` (one sampler run with per-step hooks),
``jobs`` (queue, progress, cancel), ``explore`` (forward process), ``render`` (PNGs), ``files`` (what may be
read), ``app`` (the routes).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"create_app": "app", "ServedRun": "model", "load_run": "model", "ServeInputError": "schema"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
