"""What the pictures are drawn from, read with one-line errors: a 1-D signal, vectors, a covariance matrix, a
run's config, path, denoiser and data, and image patches.

Every bad input raises :class:`VizInputError` (a ValueError: the CLI prints it as one line, exit code 2).
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Any

import numpy as np
import torch
from torch import Tensor

MAX_VALUES = 50_000_000  # a larger array is almost certainly the wrong file


class VizInputError(ValueError):
    """An input a picture cannot be drawn from; the message says which and why."""


def _read_array(path: str | FilePath, what: str) -> np.ndarray:
    """A numeric array from .npy (no pickles) or .csv / .txt (comma or whitespace separated), finite."""
    p = FilePath(path)
    if not p.is_file():
        raise VizInputError(f"{what} {str(p)!r} is not a file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            a = np.load(p, allow_pickle=False)
        elif suffix in (".csv", ".txt"):
            text = p.read_text()
            a = np.loadtxt(text.splitlines(), delimiter="," if "," in text else None, ndmin=1)
        else:
            raise VizInputError(f"{what} {str(p)!r} must be a .npy or .csv file")
    except VizInputError:
        raise
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise VizInputError(f"{what} {str(p)!r} cannot be read: {' '.join(str(e).split())[:160]}") from None
    if a.dtype.kind not in "iuf" or a.size == 0:
        raise VizInputError(f"{what} {str(p)!r} must hold numbers, got an array of dtype {a.dtype} and size {a.size}")
    if a.size > MAX_VALUES:
        raise VizInputError(f"{what} {str(p)!r} holds {a.size} values; at most {MAX_VALUES}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise VizInputError(f"{what} {str(p)!r} contains NaN or infinite values")
    return a


def load_signal(path: str | FilePath, min_length: int = 8, max_length: int = 20_000) -> Tensor:
    """A 1-D signal (L,) float64 from .npy or .csv: one row or one column of ``min_length`` to ``max_length``
    numbers."""
    a = _read_array(path, "signal")
    if a.ndim == 2 and 1 in a.shape:
        a = a.ravel()
    if a.ndim != 1:
        raise VizInputError(f"signal {str(path)!r} must be 1-D (one row or one column), got shape {a.shape}")
    if not min_length <= len(a) <= max_length:
        raise VizInputError(f"signal {str(path)!r} has {len(a)} values; {min_length} to {max_length} are needed")
    return torch.from_numpy(a)


def load_vectors(path: str | FilePath) -> Tensor:
    """Vectors (N, D) float64 from .npy or .csv, N >= 2 rows and 2 <= D <= 4096 columns."""
    a = _read_array(path, "vectors")
    if a.ndim != 2 or a.shape[0] < 2 or not 2 <= a.shape[1] <= 4096:
        raise VizInputError(f"vectors {str(path)!r} must be an (N, D) array with N >= 2 and 2 <= D <= 4096, got "
                            f"shape {a.shape}")
    return torch.from_numpy(a)


def load_covariance(path: str | FilePath) -> Tensor:
    """A covariance (D, D) float64 from .npy or .csv: square, symmetric, positive semi-definite."""
    a = torch.from_numpy(_read_array(path, "covariance"))
    if a.ndim != 2 or a.shape[0] != a.shape[1] or not 2 <= a.shape[0] <= 4096:
        raise VizInputError(f"covariance {str(path)!r} must be a square (D, D) matrix with 2 <= D <= 4096, got "
                            f"shape {tuple(a.shape)}")
    check_covariance(a, f"covariance {str(path)!r}")
    return a


def check_covariance(S: Tensor, what: str) -> None:
    """VizInputError unless S is symmetric and positive semi-definite (to round-off)."""
    scale = float(S.abs().max()) or 1.0
    if float((S - S.T).abs().max()) > 1e-8 * scale:
        raise VizInputError(f"{what} is not symmetric (largest |S - Sᵀ| = {float((S - S.T).abs().max()):.3g})")
    low = float(torch.linalg.eigvalsh(S)[0])
    if low < -1e-10 * scale * len(S):
        raise VizInputError(f"{what} is not positive semi-definite (smallest eigenvalue {low:.3g})")


def load_run(run: str | FilePath, *, weights: bool = True) -> dict[str, Any]:
    """A run or checkpoint: {"cfg", "path", "meta"} and, with ``weights``, "D" (the EMA denoiser, eval mode)."""
    from ..build import load_denoiser, make_path_from
    from ..checkpoint import load_checkpoint
    from ..config import from_dict

    if weights:
        D, meta, cfg = load_denoiser(run)
        return {"cfg": cfg, "path": D.path, "meta": meta, "D": D}
    ckpt = load_checkpoint(run, with_optim=False)
    cfg = from_dict(ckpt.config, where=f"checkpoint {str(ckpt.path)!r}").validate()
    return {"cfg": cfg, "path": make_path_from(cfg), "meta": ckpt.state.get("data") or {}}


def load_data(name: str, n: int | None, seed: int) -> Any:
    """A kuosan data set by name or path (a seeded subset of n examples when n is given), as kuosan.data loads it."""
    from ..data import load_dataset

    return load_dataset(name, n=n, seed=seed)


def image_patches(images: Tensor, size: int, n: int, generator: torch.Generator) -> Tensor:
    """n random size×size patches of images (N, C, H, W) flattened to (n, C·size²), float64 (C-major)."""
    N, C, H, W = images.shape
    if not 1 <= size <= min(H, W):
        raise VizInputError(f"--patch {size} does not fit images of {H}x{W} pixels (1 to {min(H, W)})")
    k = torch.randint(N, (n,), generator=generator)
    i = torch.randint(H - size + 1, (n,), generator=generator)
    j = torch.randint(W - size + 1, (n,), generator=generator)
    rows = torch.arange(size)
    # (n, C, size, size) by advanced indexing: image k, rows i.., columns j..
    p = images[k[:, None, None, None], torch.arange(C)[None, :, None, None],
               (i[:, None] + rows)[:, None, :, None], (j[:, None] + rows)[:, None, None, :]]
    return p.reshape(n, -1).to(torch.float64)


def covariance_data(spec: str, n: int, patch: int | None, seed: int) -> tuple[Tensor, Tensor, str]:
    """(x_0 (n, D) float64, Σ_0 (D, D), a description) for a covariance picture. ``curves``: draws of the
    Gaussian-process curves and their exact covariance; vectors (.npy/.csv or a vector data set): a seeded subset of n
    rows and the covariance of all rows; images: n random patch×patch patches (default 4) and their covariance."""
    from .covariance import sample_cov  # (covariance.py imports this module)

    g = torch.Generator().manual_seed(seed)
    if spec == "curves":
        from ..data import curves_covariance

        if patch is not None:
            raise VizInputError("--patch applies to image data; curves are vectors")
        S = torch.as_tensor(curves_covariance(), dtype=torch.float64)
        x0 = torch.randn(n, len(S), generator=g, dtype=torch.float64) @ torch.linalg.cholesky(S).T  # z Lᵀ ~ N(0, Σ)
        return x0, S, "the curves data (exact Σ₀)"
    if spec.lower().endswith((".npy", ".csv")):
        x, kind = load_vectors(spec), "vector"
    else:
        ds = load_data(spec, None, seed)
        x, kind = ds.x.to(torch.float64), ds.kind
    if kind == "image":
        p = patch or 4
        x0 = image_patches(x, p, n, g)
        return x0, sample_cov(x0), f"{p}x{p} patches of {spec}"
    if patch is not None:
        raise VizInputError(f"--patch applies to image data; {spec!r} holds vectors")
    x = x.reshape(len(x), -1)
    if x.shape[1] > 1024:
        raise VizInputError(f"{spec!r}: vectors of dimension {x.shape[1]}; at most 1024 for a covariance picture")
    rows = torch.randperm(len(x), generator=g)[:n].sort().values if n < len(x) else torch.arange(len(x))
    return x[rows], sample_cov(x), spec


def describe_path(path: Any) -> str:
    """A path in words for titles: "discrete_vp cosine", "discrete_vp linear, zero terminal SNR", "ve", "flow"."""
    if getattr(path, "T", None) is None:
        return str(path.kind)
    zero = ", zero terminal SNR" if getattr(path, "zero_terminal_snr", False) else ""
    return f"discrete_vp {getattr(path, 'schedule', '')}{zero}"
