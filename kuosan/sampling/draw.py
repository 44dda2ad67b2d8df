"""``sample()``: many samples with a registered sampler, in batches, reproducible per sample.

Sample i is drawn from its own stream seeded by (seed, first_index + i) (:mod:`.noise`): x_T = prior_std·z first,
then every noise draw of a stochastic sampler, so the result is the same for any batch size and for processes
that each sample a disjoint index range. One progress bar runs over all batches.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..denoiser import Counting, Denoiser
from ..paths import PathError
from .common import Callback
from .grids import check_grid, grid_kind, make_grid
from .noise import NoiseSource, check_seed
from .registry import check_options, get_sampler


class NonFiniteSamplesError(RuntimeError):
    """A sampler returned NaN or ±∞ values (never returned silently)."""


class WrongDenoiserError(ValueError):
    """A sampler asked of a denoiser that does not give what it needs (a consistency model for an ODE sampler)."""


def check_denoiser_kind(D: Denoiser, sampler: str) -> None:
    """A consistency model (``kind = "consistency"``) runs only the consistency sampler: every other sampler
    needs E[x_0|x_t], which it does not give."""
    if getattr(D, "kind", None) == "consistency" and sampler != "consistency":
        raise WrongDenoiserError(f"sampler {sampler!r} needs E[x_0|x_t]: a consistency model gives the ODE endpoint, "
                                 "not E[x_0|x_t]; use --sampler consistency")


def _check_count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def sample(D: Denoiser, sampler: str, shape: tuple[int, ...], steps: int, *, seed: int = 0, batch_size: int = 256,
           device: torch.device | str = "cpu", grid: str | None = None, spacing: str | None = None,
           ts: Tensor | None = None, cond: dict[str, Tensor] | None = None, progress: bool = False,
           stats: dict[str, Any] | None = None, first_index: int = 0, dtype: torch.dtype = torch.float32,
           callback: Callback | None = None, **options: Any) -> Tensor:
    """shape[0] samples (returned on the CPU) with the sampler called ``sampler`` and ``steps`` steps.

    The grid is ``ts`` if given (it must have steps + 1 points), else ``make_grid(D.path, steps, grid, spacing)``
    (spacing default trailing); with no ``grid``, the sampler's own default grid (the consistency sampler's noise
    levels), else uniform if a ``spacing`` is given, else the path's (``default_grid``: karras on VE, else uniform).
    ``cond`` holds per-sample tensors (shape[0], ...), sliced per batch. ``options`` go to the sampler; one it does
    not take is a ValueError (None means "not given"). ``callback(i, x, x̂_0)`` is passed to the sampler (once per
    step; a tensor it returns replaces x). ``stats``, if given, receives ``grid``, ``nfe`` (network evaluations of
    one batch; the largest for adaptive solvers) and ``nfe_per_batch``. A consistency model runs only the
    consistency sampler (WrongDenoiserError).
    """
    spec = get_sampler(sampler)
    check_denoiser_kind(D, sampler)
    reason = spec.supports(D.path)
    if reason is not None:
        raise PathError(f"sampler {sampler!r} cannot run on this path: {reason}")
    opts = check_options(spec, options)
    check_seed(seed)
    check_seed(first_index, "first_index")
    _check_count(batch_size, "batch_size")
    shape = tuple(shape)
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
        raise ValueError(f"shape must be a tuple of positive integers (n, *dims), got {shape!r}")
    n = shape[0]
    if ts is None:
        ts = spec.default_grid(D, steps) if (grid is None and spec.default_grid is not None) else \
            make_grid(D.path, steps, grid_kind(D.path, grid, spacing), spacing or "trailing")
    else:
        ts = torch.as_tensor(ts, dtype=torch.float64)
        if ts.ndim != 1 or ts.numel() != steps + 1:
            raise ValueError(f"the time grid has {ts.numel()} points but steps = {steps} needs {steps + 1}")
    check_grid(ts, D.path)
    for k, v in (cond or {}).items():
        if not isinstance(v, Tensor) or v.ndim < 1 or v.shape[0] != n:
            raise ValueError(f"cond[{k!r}] must be a tensor with one row per sample ({n}), got "
                             f"{tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__}")
    device = torch.device(device)
    counter = Counting(D)
    starts = list(range(0, n, batch_size))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(starts) * steps, desc=f"{sampler}, {n} samples", unit="step")
    step_hook = callback
    if bar is not None:
        def with_bar(i: int, x: Tensor, x0: Tensor) -> Tensor | None:
            bar.update(1)
            return callback(i, x, x0) if callback is not None else None

        step_hook = with_bar
    outs: list[Tensor] = []
    nfes: list[int] = []
    try:
        for start in starts:
            rows = min(batch_size, n - start)
            noise = NoiseSource(seed, first_index + start, rows)
            x_T = D.path.prior_std * noise(torch.empty((rows, *shape[1:]), dtype=dtype, device=device))
            c = {k: v[start:start + rows].to(device) for k, v in (cond or {}).items()}
            before = counter.nfe
            out = spec.fn(counter, x_T, ts, noise=noise, cond=c, progress=False, callback=step_hook, **opts).cpu()
            nfes.append(counter.nfe - before)
            bad = ~torch.isfinite(out.reshape(rows, -1)).all(1)
            if bool(bad.any()):
                first = first_index + start + int(bad.nonzero()[0])
                raise NonFiniteSamplesError(
                    f"sampler {sampler!r} produced non-finite values in {int(bad.sum())} of {rows} samples of a "
                    f"batch (first: sample {first}) on the {D.path.kind} path with {steps} steps")
            outs.append(out)
    finally:
        if bar is not None:
            bar.close()
    if stats is not None:
        stats.update(grid=ts, nfe=max(nfes), nfe_per_batch=nfes)
    return torch.cat(outs)
