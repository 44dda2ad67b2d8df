"""Autoguidance (Karras et al. 2024, Eq. (2)): guide a model with a weaker version of itself, not with its
unconditional half:   D_w(x_t; y) = D_weak(x_t; y) + w (D(x_t; y) - D_weak(x_t; y)),
w = 1 the model unguided. The weak model (fewer training steps or fewer parameters, trained on the same data, path
and conditioning) makes errors of the same kind but larger, so extrapolating away from it removes them without
CFG's loss of diversity; it works for unconditional models too (then cond carries no label). Same scale convention
and λ interval as :mod:`.cfg`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..denoiser import Denoiser
from .combine import Guided, Interval


class GuideMismatchError(ValueError):
    """The guiding model cannot guide this one (another path or data)."""


def check_same_path(D: Denoiser, weak: Denoiser, what: str = "the guide model") -> None:
    """Both denoisers live on the same path (equal fingerprints), else GuideMismatchError."""
    fp = getattr(D.path, "fingerprint", None)
    if fp is None or fp() != weak.path.fingerprint():
        raise GuideMismatchError(f"{what} is on another path ({weak.path.kind}, fingerprint "
                                 f"{weak.path.fingerprint()}) than the model ({D.path.kind}, "
                                 f"{D.path.fingerprint()}); a guide must share the model's path")


def autoguidance(D: Denoiser, weak: Denoiser, scale: float, *, interval: Interval | None = None) -> Guided:
    """Karras et al. 2024 Eq. (2) with w = ``scale``; both models get the same cond. NFE: two per guided step."""
    check_same_path(D, weak)

    def bad(x_t: Tensor, t: Tensor, cond: dict[str, Any]) -> Tensor:
        return weak(x_t, t, **cond)

    return Guided(D, bad, scale, interval, name="auto")
