"""The page's inputs and their bounds: a request outside them is refused with HTTP 4xx and a one-line JSON error.

Bounds keep one request's memory and time small (a local page, one model, a few users): at most MAX_STEPS steps,
MAX_BATCH samples of at most MAX_BATCH_ELEMENTS numbers in all, a guidance scale in [0, MAX_GUIDANCE].
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_STEPS = 1000  # sampling steps of one generation
MAX_BATCH = 64  # samples of one generation (the picture is a grid of them)
MAX_BATCH_ELEMENTS = 2**24  # n · numel(sample): 64 MiB of float32 per tensor the sampler holds
MAX_GUIDANCE = 20.0  # classifier-free guidance scale w
MAX_SEED = 2**63 - 1  # the sampler's per-sample streams take 63-bit seeds
MAX_QUEUED = 8  # jobs waiting or running at once; more is HTTP 429
GRIDS = ("uniform", "logsnr", "karras")  # "optimised" needs a fit (kuosan sample --grid optimised), not a click

GridKind = Literal["uniform", "logsnr", "karras"]


class ServeInputError(ValueError):
    """A request the page refuses (HTTP 400 or the given status); the message is one line for the user."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class GenerateRequest(BaseModel):
    """POST /api/generate: what to draw. ``label`` is a class (class-conditional runs only); ``guidance`` the
    classifier-free guidance scale w of kuosan.guidance (1: unguided, 0: unconditional, > 1 guides; needs a label;
    None: the conditional model as it is)."""

    model_config = ConfigDict(extra="forbid")

    sampler: str = Field("ddim", max_length=32)
    steps: int = Field(20, ge=1, le=MAX_STEPS, strict=True)
    grid: GridKind | None = None  # None: the sampler's default grid, else the path's (sampling.default_grid)
    n: int = Field(16, ge=1, le=MAX_BATCH, strict=True)
    seed: int = Field(0, ge=0, le=MAX_SEED, strict=True)
    label: int | None = Field(None, ge=0, strict=True)
    guidance: float | None = Field(None, ge=0.0, le=MAX_GUIDANCE, allow_inf_nan=False)


def limits() -> dict[str, Any]:
    """The bounds, as the page shows them beside its inputs."""
    return {"max_steps": MAX_STEPS, "max_batch": MAX_BATCH, "max_guidance": MAX_GUIDANCE, "max_seed": MAX_SEED,
            "grids": list(GRIDS)}


def validation_message(errors: list[dict[str, Any]]) -> str:
    """pydantic's errors as one line: ``steps: Input should be less than or equal to 1000 (got 5000)``."""
    parts = []
    for e in errors[:3]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path"))
        got = e.get("input")
        shown = ("" if isinstance(got, (dict, list)) or got is None
                 else f" (got {got!r})" if isinstance(got, (int, float)) else f" (got {str(got)[:40]!r})")
        parts.append(f"{loc or 'request'}: {e.get('msg', 'invalid')}{shown}")
    return "; ".join(parts)
