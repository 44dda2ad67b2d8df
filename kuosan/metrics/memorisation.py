"""Memorisation: how close each sample lies to its nearest training example, relative to how close genuinely new
data (the held-out split) lies to the training set.

For a sample s, ratio(s) = ‖s - NN_train(s)‖ / median_h ‖h - NN_train(h)‖, distances in data space (pixels or
coordinates, flattened), the median over the held-out examples h. A held-out example scores about 1 by
construction; a copy of a training example scores 0. A sample with ratio < 1/3 counts as a near-copy: it sits three
times closer to a training example than new data typically does (the factor 1/3 follows Carlini et al. 2023,
"Extracting training data from diffusion models", who call a generation memorised when its ℓ2 distance to a
training image is below a third of that to its other neighbours). The held-out examples' own near-copy fraction is
the baseline (duplicates in the data set show up there too).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

NEAR_COPY_RATIO = 1 / 3


def nearest(queries: Tensor, reference: Tensor, chunk: int = 512) -> tuple[Tensor, Tensor]:
    """Euclidean distance (n,) from each flattened query to its nearest reference row, and that row's index (n,)."""
    q = queries.detach().to("cpu", torch.float64).flatten(1)
    r = reference.detach().to("cpu", torch.float64).flatten(1)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} values per example but the reference has {r.shape[1]}")
    if len(r) == 0:
        raise ValueError("the reference set is empty")
    dist, idx = torch.empty(len(q), dtype=torch.float64), torch.empty(len(q), dtype=torch.int64)
    for s in range(0, len(q), chunk):
        d = torch.cdist(q[s:s + chunk], r)  # (chunk, N_ref)
        dist[s:s + chunk], idx[s:s + chunk] = d.min(1)
    return dist, idx


@dataclass
class Memorisation:
    """Per-sample ratios and neighbours, the held-out scale, and the near-copy fractions (samples and baseline)."""

    ratio: Tensor  # (n,) sample NN distance / scale
    neighbour: Tensor  # (n,) index of each sample's nearest training example
    scale: float  # median held-out NN distance to the training set
    near_copy_fraction: float
    baseline_near_copy_fraction: float  # the held-out examples' own fraction
    threshold: float = NEAR_COPY_RATIO
    heldout_ratio: Tensor = field(default_factory=lambda: torch.zeros(0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no per-sample arrays)."""
        d = asdict(self)
        for k in ("ratio", "neighbour", "heldout_ratio"):
            d.pop(k)
        d["median_ratio"] = float(self.ratio.median())
        d["min_ratio"] = float(self.ratio.min())
        d["baseline_median_ratio"] = float(self.heldout_ratio.median())
        return d

    def worst(self, k: int) -> Tensor:
        """Indices of the k samples closest (relatively) to a training example, closest first."""
        return self.ratio.argsort()[:k]


def memorisation(samples: Tensor, train: Tensor, heldout: Tensor, *, threshold: float = NEAR_COPY_RATIO
                 ) -> Memorisation:
    """Nearest-training-example ratios of ``samples`` (n, *D) against ``train`` (N, *D), scaled by ``heldout``."""
    if len(heldout) == 0:
        raise ValueError("memorisation needs held-out examples for its scale; the held-out split is empty")
    if not 0 < threshold:
        raise ValueError(f"the near-copy threshold must be > 0, got {threshold}")
    d_held, _ = nearest(heldout, train)
    scale = float(d_held.median())
    if not scale > 0:
        raise ValueError("the held-out examples are copies of training examples (median distance 0): "
                         "the data set holds duplicates across the split")
    d, idx = nearest(samples, train)
    ratio, held_ratio = d / scale, d_held / scale
    return Memorisation(ratio=ratio, neighbour=idx, scale=scale,
                        near_copy_fraction=float((ratio < threshold).double().mean()),
                        baseline_near_copy_fraction=float((held_ratio < threshold).double().mean()),
                        threshold=threshold, heldout_ratio=held_ratio)


def save_worst_png(mem: Memorisation, samples: Tensor, train: Tensor, path: str | Path, k: int = 16) -> None:
    """A PNG of the k most copy-like image samples (top row) above their nearest training examples (bottom row)."""
    if samples.ndim != 4:
        raise ValueError(f"the memorisation picture needs images (N, C, H, W), got samples of shape "
                         f"{tuple(samples.shape)}")
    from ..viz import image_grid  # Pillow, imported only when a picture is asked for

    i = mem.worst(min(k, len(samples)))
    pairs = torch.cat([samples[i].detach().cpu().float(), train[mem.neighbour[i]].detach().cpu().float()])
    image_grid(pairs, nrow=len(i)).save(Path(path))
