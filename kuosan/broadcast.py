"""Broadcasting per-sample coefficients against data: c (B,) or scalar -> (B, 1, ..., 1) in x's dtype."""

from __future__ import annotations

import torch
from torch import Tensor


def expand(c: Tensor | float, like: Tensor) -> Tensor:
    """Reshape a per-sample coefficient (B,) or scalar to broadcast against ``like`` (B, *D), in its dtype."""
    c = torch.as_tensor(c, device=like.device)
    if c.ndim == 0:
        return c.to(like.dtype)
    return c.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def batch_times(t: Tensor | float, like: Tensor) -> Tensor:
    """The time(s) t as a (B,) float64 tensor on like's device: a scalar is repeated over the batch."""
    t = torch.as_tensor(t, dtype=torch.float64, device=like.device)
    return t.expand(like.shape[0]) if t.ndim == 0 else t.reshape(-1).expand(like.shape[0])
