"""Class statistics of samples read by the feature classifier: the class histogram and its KL divergence to the
data's label histogram, the classifier's mean confidence, and for class-conditional samples the accuracy of the
classes asked for.

KL(p_samples ‖ p_data) = Σ_c p̂_c log(p̂_c / q_c) in nats; it is finite whenever every class the samples hit exists
in the data, and a class the samples miss adds nothing to it, so ``missing_classes`` is reported beside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class ClassStats:
    histogram: list[float]  # share of samples per predicted class
    data_histogram: list[float]  # share of training labels per class
    kl: float  # KL(histogram ‖ data_histogram), nats
    missing_classes: int  # classes present in the data that no sample was assigned to
    mean_confidence: float  # mean over samples of the classifier's largest probability
    accuracy: float | None  # conditional samples: share classified as the class they were drawn for

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def class_stats(probs: Tensor, data_labels: Tensor, num_classes: int, requested: Tensor | None = None) -> ClassStats:
    """Statistics of classifier probabilities ``probs`` (n, C) against the data's labels (N,).

    ``requested`` (n,): the class each sample was generated for (class-conditional models), or None."""
    if probs.ndim != 2 or probs.shape[1] != num_classes:
        raise ValueError(f"class probabilities must be (n, {num_classes}), got {tuple(probs.shape)}")
    if len(probs) == 0:
        raise ValueError("class statistics need at least one sample")
    pred = probs.argmax(1)
    hist = torch.bincount(pred, minlength=num_classes).double() / len(pred)
    data = torch.bincount(data_labels.long(), minlength=num_classes).double()
    data = data / data.sum()
    hit = hist > 0
    kl = float((hist[hit] * (hist[hit] / data[hit]).log()).sum()) if bool((data[hit] > 0).all()) else float("inf")
    acc = None
    if requested is not None:
        if requested.shape != pred.shape:
            raise ValueError(f"requested classes must be ({len(pred)},), got {tuple(requested.shape)}")
        acc = float((pred == requested.to(pred.device).long()).double().mean())
    return ClassStats(histogram=hist.tolist(), data_histogram=data.tolist(), kl=kl,
                      missing_classes=int(((hist == 0) & (data > 0)).sum()),
                      mean_confidence=float(probs.max(1).values.double().mean()), accuracy=acc)
