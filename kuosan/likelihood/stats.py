"""Batch summaries shared by the likelihood estimators."""

from __future__ import annotations

import math

from torch import Tensor


def mean_stderr(x: Tensor) -> tuple[float, float]:
    """Mean and standard error of the mean over the batch (nan for a batch of one)."""
    x = x.detach().double()
    se = float(x.std(unbiased=True) / math.sqrt(x.numel())) if x.numel() > 1 else math.nan
    return float(x.mean()), se


def nats_to_bits_per_dim(d: int) -> float:
    """The factor turning nats per sample into bits per dimension for d dimensions."""
    return 1.0 / (d * math.log(2))
