"""Per-sample random streams: sample i depends only on (seed, i), whatever the batch size or process split.

Each row of a batch owns a ``torch.Generator`` seeded from (seed, index) by a hash, so x_T of sample i and every
noise draw a stochastic sampler makes for it come from that sample's own stream, in the order the sampler asks
for them. Batching 10 000 samples as 40 × 256, 10 × 1000 or over four processes (``first_index``) then gives
the same samples, bit for bit, given a denoiser whose rows do not interact (diffusers issue 2659 asks for this;
a single generator for the batch ties every sample to its batch position).

Draws are made on the CPU and then moved, so CPU and CUDA runs share x_T and the noise.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor


def row_seed(seed: int, index: int) -> int:
    """The 63-bit generator seed of sample ``index`` under ``seed`` (SHA-256 of both, so nearby pairs decorrelate)."""
    digest = hashlib.sha256(f"kuosan-sample:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def check_seed(seed: int, what: str = "seed") -> int:
    """``seed`` if it is an integer >= 0, else ValueError."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"{what} must be an integer >= 0, got {seed!r}")
    return seed


class NoiseSource:
    """``noise(like)`` -> standard normals shaped like ``like`` (B, *D), row r drawn from sample first_index + r's
    own stream; ``like`` must have ``rows`` rows. The first draw of ``kuosan.sampling.sample`` is x_T.

    Every row asks for the same amounts in the same order (samplers step all rows together), so one read position
    serves all rows: each row's generator fills a block of at least REFILL values at a time, and a call slices
    (B, numel) from the blocks. Which values a row sees depends only on its seed, index, the sequence of requested
    sizes and the precision of the first request (float64 draws for float64 data, float32 draws otherwise: four
    times faster)."""

    REFILL = 256  # values drawn per row and refill, at least (tiny data would otherwise cost B calls per step)

    def __init__(self, seed: int, first_index: int, rows: int):
        check_seed(seed)
        check_seed(first_index, "first_index")
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise ValueError(f"a noise source needs a positive number of rows, got {rows!r}")
        self.seed, self.first_index, self.rows = seed, first_index, rows
        self._gens = [torch.Generator().manual_seed(row_seed(seed, first_index + r)) for r in range(rows)]
        self._buf: Tensor | None = None  # (rows, buffered values), dtype set by the first request
        self._pos = 0

    @property
    def indices(self) -> range:
        """The sample indices of the rows."""
        return range(self.first_index, self.first_index + self.rows)

    def __call__(self, like: Tensor) -> Tensor:
        if like.ndim < 1 or like.shape[0] != self.rows:
            raise ValueError(f"this noise source has {self.rows} rows, asked for a tensor of shape {tuple(like.shape)}")
        m = like[0].numel()
        dtype = like.dtype if like.dtype.is_floating_point else torch.get_default_dtype()
        if self._buf is None:
            self._buf = torch.empty(self.rows, 0, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
        if self._pos + m > self._buf.shape[1]:
            rest = self._buf[:, self._pos:]
            k = max(self.REFILL, m - rest.shape[1])
            new = torch.stack([torch.randn(k, generator=g, dtype=self._buf.dtype) for g in self._gens])
            self._buf, self._pos = torch.cat([rest, new], 1), 0
        z = self._buf[:, self._pos:self._pos + m]
        self._pos += m
        return z.reshape(like.shape).to(device=like.device, dtype=dtype)

    def __repr__(self) -> str:
        return f"NoiseSource(seed={self.seed}, first_index={self.first_index}, rows={self.rows})"


def noise_like(noise: NoiseSource | None, like: Tensor) -> Tensor:
    """noise(like), or torch.randn_like(like) from the global generator when a sampler is called without a source."""
    return torch.randn_like(like) if noise is None else noise(like)
