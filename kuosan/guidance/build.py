"""One entry point for the command line and the benchmarks: the guided denoiser of a kind and a scale.

Kinds and their unguided scale: ``cfg`` (classifier-free, :mod:`.cfg`; w = 1), ``auto`` (autoguidance,
:mod:`.autoguidance`; w = 1), ``classifier`` (classifier guidance, :mod:`.classifier`; s = 0).
"""

from __future__ import annotations

from typing import Literal, get_args

from ..denoiser import Denoiser
from .autoguidance import autoguidance
from .cfg import classifier_free
from .classifier import TimeClassifier, classifier_guidance
from .combine import Interval

GuidanceKind = Literal["cfg", "auto", "classifier"]
GUIDANCE_KINDS: tuple[str, ...] = get_args(GuidanceKind)
UNGUIDED_SCALE = {"cfg": 1.0, "auto": 1.0, "classifier": 0.0}


def guide(D: Denoiser, kind: GuidanceKind, scale: float, *, null_label: int | None = None,
          weak: Denoiser | None = None, classifier: TimeClassifier | None = None, conditional_model: bool = False,
          interval: Interval | None = None) -> Denoiser:
    """D guided by ``kind`` at ``scale``: cfg needs a class-conditional D (null_label: its null class), auto a weak
    model ``weak``, classifier a ``classifier`` (``conditional_model``: D also takes the label)."""
    if kind == "cfg":
        return classifier_free(D, scale, null_label=null_label, interval=interval)
    if kind == "auto":
        if weak is None:
            raise ValueError("autoguidance needs a weaker guide model")
        return autoguidance(D, weak, scale, interval=interval)
    if kind == "classifier":
        if classifier is None:
            raise ValueError("classifier guidance needs a classifier")
        return classifier_guidance(D, classifier, scale, conditional_model=conditional_model, interval=interval)
    raise ValueError(f"unknown guidance kind {kind!r}; choose one of {', '.join(GUIDANCE_KINDS)}")
