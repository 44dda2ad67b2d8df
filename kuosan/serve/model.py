"""The run a page serves: its trained denoiser (network calls serialised), data description, samplers and classes.

Two tabs may generate at once: each job runs in its own worker thread and every network call takes the run's
lock (:class:`Serialised`), so the jobs interleave step by step and the network never runs twice at once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any, Callable

import torch
from torch import Tensor

from ..denoiser import Denoiser, has_variance
from .schema import MAX_BATCH_ELEMENTS, ServeInputError

HIDDEN_SAMPLERS = frozenset({"bespoke"})  # without a fitted solver it is DPM-Solver++(2M), listed already
CONSISTENCY = "consistency"  # a consistency model takes only the consistency sampler (and only it takes one)


class Serialised:
    """Denoiser → Denoiser that holds ``lock`` during each network call (same path, kind and variance)."""

    def __init__(self, inner: Denoiser, lock: threading.Lock):
        self.inner, self.path, self.lock = inner, inner.path, lock
        self.learns_variance = has_variance(inner)
        kind = getattr(inner, "kind", None)
        if kind is not None:
            self.kind = kind

    def __call__(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        with self.lock:
            return self.inner(x_t, t, **cond)

    def with_variance(self, x_t: Tensor, t: Tensor, **cond: Any) -> tuple[Tensor, Tensor | None]:
        with self.lock:
            return self.inner.with_variance(x_t, t, **cond)  # type: ignore[attr-defined]


@dataclass
class ServedRun:
    """A loaded run: ``root`` is the folder given (readable through the page), ``denoiser`` is serialised."""

    root: FilePath
    denoiser: Denoiser
    meta: dict[str, Any]  # the checkpoint's data description: kind, shape, num_classes, name
    data_name: str  # config data.name: a built-in set or the path the run trained on
    num_classes: int  # classes of a class-conditional run; 0 otherwise
    samplers: list[str]
    lock: threading.Lock = field(default_factory=threading.Lock)
    device: str = "cpu"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.meta["shape"])

    def info(self) -> dict[str, Any]:
        """What the page shows about the run."""
        from ..sampling import SAMPLERS

        return {"run": self.root.name, "path": self.denoiser.path.kind, "data": self.meta.get("name"),
                "kind": self.meta["kind"], "shape": list(self.shape), "num_classes": self.num_classes,
                "guidance": self.num_classes > 0 and cfg_wrapper() is not None,
                "samplers": [{"name": s, "summary": SAMPLERS[s].summary} for s in self.samplers],
                "default_sampler": "ddim" if "ddim" in self.samplers else self.samplers[0]}


def load_run(path: str | FilePath, *, device: str = "cpu", use_ema: bool = True) -> ServedRun:
    """Load a run or checkpoint folder (one-line CheckpointError when it is not one)."""
    from ..build import load_denoiser

    D, meta, cfg = load_denoiser(path, use_ema=use_ema, device=device)
    lock = threading.Lock()
    served = Serialised(D, lock)
    classes = int(meta.get("num_classes") or 0) if cfg.data.class_cond else 0
    return ServedRun(FilePath(path), served, meta, str(cfg.data.name), classes, sampler_choices(served), lock,
                      device)


def sampler_choices(D: Denoiser) -> list[str]:
    """The registered samplers that run on D's path (and suit its kind), in registry order."""
    from ..sampling import SAMPLERS

    consistency = getattr(D, "kind", None) == CONSISTENCY
    return [name for name, spec in SAMPLERS.items()
            if name not in HIDDEN_SAMPLERS and (name == CONSISTENCY) == consistency and spec.supports(D.path) is None]


def cfg_wrapper() -> Callable[..., Denoiser] | None:
    """kuosan.guidance's classifier-free guidance ``classifier_free(D, w, null_label=...)``, when installed."""
    try:
        from ..guidance import classifier_free
    except ImportError:  # pragma: no cover - a kuosan without the guidance package
        return None
    return classifier_free


def check_request(run: ServedRun, sampler: str, n: int, label: int | None, guidance: float | None) -> None:
    """What the schema cannot know: the sampler suits this run, the batch fits, the class exists, guidance applies."""
    if sampler not in run.samplers:
        raise ServeInputError(f"sampler {sampler!r} is not available for this run; choose one of "
                              f"{', '.join(run.samplers)}")
    numel = 1
    for d in run.shape:
        numel *= d
    if n * numel > MAX_BATCH_ELEMENTS:
        raise ServeInputError(f"n: {n} samples of shape {run.shape} exceed the page's limit of "
                              f"{MAX_BATCH_ELEMENTS} numbers; at most {max(1, MAX_BATCH_ELEMENTS // numel)}")
    if label is not None and run.num_classes == 0:
        raise ServeInputError("label: this run is not class-conditional")
    if label is not None and label >= run.num_classes:
        raise ServeInputError(f"label: must be a class in 0..{run.num_classes - 1}, got {label}")
    if guidance is not None and label is None:
        raise ServeInputError("guidance: needs a class (label) to guide towards")
    if guidance is not None and cfg_wrapper() is None:
        raise ServeInputError("guidance: kuosan.guidance is not installed in this kuosan")


def conditioned(run: ServedRun, n: int, label: int | None, guidance: float | None
                ) -> tuple[Denoiser, dict[str, Tensor]]:
    """The denoiser and per-sample cond of a request: class ``label`` as {"y": (n,)}, classifier-free guided with
    scale w = ``guidance`` (Ho & Salimans 2022, kuosan.guidance's convention: 1 unguided) when given."""
    if label is None:
        return run.denoiser, {}
    cond = {"y": torch.full((n,), label, dtype=torch.long)}
    wrap = cfg_wrapper() if guidance is not None else None
    if wrap is None:
        return run.denoiser, cond
    return wrap(run.denoiser, guidance, null_label=run.num_classes), cond  # the null class is num_classes
