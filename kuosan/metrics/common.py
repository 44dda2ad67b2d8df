"""What the metric modules share: feature matrices checked and cast to float64 on the CPU."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def as_features(x: Any, name: str) -> Tensor:
    """A set of feature vectors (or samples) as a float64 CPU tensor (n, d); a ValueError names what is wrong."""
    x = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a matrix (n, d), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return x


def check_same_dim(x: Tensor, y: Tensor) -> None:
    """Two sets compared must live in one space."""
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"dimensions differ: real {x.shape[1]}, fake {y.shape[1]}")
