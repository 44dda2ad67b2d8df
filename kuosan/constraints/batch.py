"""What per-step hooks need to know of the batch a sampler is drawing, and the plan that ties hooks, wrappers and
the final projection together.

A sampler calls ``callback(i, x, x̂_0)`` (the step hook of :mod:`kuosan.sampling`) without saying which samples the
batch holds, but fixed values come from a per-sample table and fresh noise must come from per-sample streams (sample
i depends only on (seed, i), whatever the batch size). So the sample indices travel in ``cond["row"]`` (B,) —
:func:`kuosan.sampling.sample` slices cond per batch — and :class:`Batch`'s denoiser wrapper pops them (the network
never sees them), records them and the rest of cond (re-steps call the denoiser with it). Without ``row`` the
batch is samples 0..B-1. This wrapper must be the outermost one given to the sampler (inside Counting).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..sampling.common import Callback
from ..sampling.noise import NoiseSource, check_seed
from .project import Constraint

ROW_KEY = "row"


def stream_seed(seed: int) -> int:
    """The seed of the hooks' per-sample streams: derived from ``seed`` but distinct from the sampler's own streams
    (kuosan.sampling.noise.row_seed), so replacement noise is independent of x_T and the sampler's noise."""
    return int.from_bytes(hashlib.sha256(f"kuosan-constraints:{seed}".encode()).digest()[:8], "little") >> 1


class Batch:
    """The sample indices of the batch being sampled, its cond, and per-sample noise for hooks."""

    def __init__(self, seed: int = 0):
        self.seed = check_seed(seed)
        self.rows: Tensor | None = None  # (B,) int64 sample indices, recorded at each denoiser call
        self.cond: dict[str, Any] = {}
        self._noise: list[NoiseSource] = []

    def record(self, x: Tensor, cond: dict[str, Any]) -> dict[str, Any]:
        """Pop and record cond["row"] (default 0..B-1); returns the rest of cond."""
        rest = {k: v for k, v in cond.items() if k != ROW_KEY}
        rows = cond.get(ROW_KEY)
        rows = torch.arange(x.shape[0]) if rows is None else torch.as_tensor(rows).reshape(-1).to(torch.long).cpu()
        if rows.numel() != x.shape[0]:
            raise ValueError(f"cond['row'] has {rows.numel()} entries for a batch of {x.shape[0]}")
        self.rows, self.cond = rows, rest
        return rest

    def rows_of(self, x: Tensor) -> Tensor:
        """The recorded indices if they fit x (B, *D), else 0..B-1 (a sampler called without the wrapper)."""
        if self.rows is None or self.rows.numel() != x.shape[0]:
            return torch.arange(x.shape[0])
        return self.rows

    def begin(self, x: Tensor) -> None:
        """Fresh per-sample streams for the batch x (called at the first step of every sampler run)."""
        rows = self.rows_of(x).tolist()
        s = stream_seed(self.seed)
        if rows == list(range(rows[0], rows[0] + len(rows))):
            self._noise = [NoiseSource(s, rows[0], len(rows))]
        else:
            self._noise = [NoiseSource(s, r, 1) for r in rows]

    def noise(self, like: Tensor) -> Tensor:
        """Standard normals shaped like ``like`` (B, *D), row r from sample rows[r]'s stream."""
        if not self._noise:
            self.begin(like)
        if len(self._noise) == 1:
            return self._noise[0](like)
        return torch.cat([src(like[r:r + 1]) for r, src in enumerate(self._noise)])

    def denoiser(self, D: Denoiser) -> "Recording":
        return Recording(D, self)


class Recording:
    """Denoiser -> Denoiser: records the batch's sample indices (popped from cond) and cond, then calls D."""

    def __init__(self, inner: Denoiser, batch: Batch):
        self.inner, self.batch, self.path = inner, batch, inner.path

    def __call__(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        return self.inner(x_t, t, **self.batch.record(x_t, cond))


@dataclass
class Plan:
    """How to sample under constraints: give ``denoiser`` and ``callback`` to any sampler with ``cond(n)`` added
    to its cond, then ``finish`` the result (the final projection: the output lies in C to float precision)."""

    denoiser: Denoiser
    callback: Callback | None
    constraint: Constraint  # C: what the output satisfies
    batch: Batch

    def finish(self, x: Tensor, rows: Tensor | None = None) -> Tensor:
        """Π_C(x) for samples x (n, *D) with indices ``rows`` (default 0..n-1)."""
        return self.constraint.project(x, rows)

    @staticmethod
    def cond(n: int, first_index: int = 0) -> dict[str, Tensor]:
        """cond["row"] for samples first_index .. first_index + n - 1."""
        return {ROW_KEY: torch.arange(first_index, first_index + n)}


def begin_each_run(batch: Batch, hook: Callback) -> Callback:
    """The hook, with fresh per-sample streams at the first step of each sampler run."""

    def callback(i: int, x: Tensor, x0: Tensor) -> Tensor | None:
        if i == 0:
            batch.begin(x)
        return hook(i, x, x0)

    return callback
