"""Data files: image folders (flat or one sub-folder a class), .npz (paired data for reflow too) and MNIST IDX."""

from __future__ import annotations

import gzip
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import DataError, DataKind, Dataset, _finish, _uint8_images

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def _decode_image(path: Path) -> np.ndarray:
    """One image file -> uint8 (H, W) if grey or (H, W, 3) if colour; alpha is composited onto white."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith("I"):  # 16-bit grey: Pillow's convert("L") would clip, so rescale
                return np.round(np.asarray(im, dtype=np.float64) / 257).clip(0, 255).astype(np.uint8)
            grey = im.mode in ("1", "L", "LA", "La")
            if im.mode == "P":  # a palette may be grey and may carry transparency
                rgb = np.asarray(im.convert("RGB"))
                grey = bool((rgb == rgb[..., :1]).all())
            if "transparency" in im.info or "A" in im.getbands():
                im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA"))
            return np.asarray(im.convert("L" if grey else "RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None


def _image_folder(root: Path) -> tuple[np.ndarray, np.ndarray | None, int]:
    """A folder of images, flat (unlabelled) or in class sub-folders; returns x (N, C, H, W), y, classes."""

    def images(d: Path) -> list[Path]:
        return sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())

    flat = images(root)
    subdirs = (d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith("."))
    groups = [g for g in map(images, subdirs) if g]  # label = index among non-empty class folders
    if flat and groups:
        raise DataError(f"{root} has both images and class sub-folders: use one layout")
    files = flat or [p for g in groups for p in g]
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_EXTS)}) in {root} or its sub-folders")
    y = None if flat else np.concatenate([np.full(len(g), i) for i, g in enumerate(groups)])
    arrays = [_decode_image(p) for p in files]
    for p, a in zip(files, arrays):
        if a.shape[:2] != arrays[0].shape[:2]:
            (h0, w0), (h, w) = arrays[0].shape[:2], a.shape[:2]
            raise DataError(f"images differ in size: {files[0]} is {w0}x{h0} but {p} is {w}x{h}")
    if any(a.ndim == 3 for a in arrays):  # one colour image makes the whole set RGB
        arrays = [a if a.ndim == 3 else np.repeat(a[..., None], 3, -1) for a in arrays]
    x = np.stack([np.atleast_3d(a) for a in arrays]).transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    return x, y, len(groups)


def _npz(path: Path, n: int | None, seed: int) -> Dataset:
    """Arrays ``x`` (or the first non-``y``) and optional ``y``; floats in [0, 1] are mapped to [-1, 1].

    With a ``noise`` array too (paired data: x generated from noise, as reflow writes them), x must be named, be
    floating point like noise and have its shape; both are kept exactly as stored (model samples may leave
    [-1, 1] a little, and rescaling x would break the pairing)."""
    try:
        with np.load(path, allow_pickle=False) as z:  # never unpickle object arrays
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # a corrupt zip raises BadZipFile, object arrays ValueError, ...
        raise DataError(f"cannot read {path}: {e}") from None
    y = arrays.pop("y", None)
    noise = arrays.pop("noise", None)
    if noise is not None:
        return _paired(path, arrays.get("x"), noise, y, n, seed)
    if not arrays:
        raise DataError(f"{path}: holds no data array (expected 'x')")
    x = _nchw(arrays.get("x", next(iter(arrays.values()))))
    kind = _kind_of(path, x)
    if x.dtype.kind not in "biuf":
        raise DataError(f"{path}: x has unsupported dtype {x.dtype}")
    if x.dtype == np.uint8:
        return _finish(_uint8_images(x), y, kind, path.name, 8, n, seed)
    x = x.astype(np.float32)
    if x.size and np.isfinite(x).all():
        lo, hi = float(x.min()), float(x.max())
        if lo >= 0 and hi <= 1:
            x = x * 2 - 1
        elif kind == "image" and not (lo >= -1 and hi <= 1):
            raise DataError(f"{path}: image values span [{lo:g}, {hi:g}]; expected uint8, [0,1] or [-1,1]")
    return _finish(x, y, kind, path.name, None, n, seed)


def _nchw(x: np.ndarray) -> np.ndarray:
    """Image layouts (N, H, W) and (N, H, W, C) as (N, C, H, W); other arrays unchanged."""
    if x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W) -> (N, 1, H, W)
    return x


def _kind_of(path: Path, x: np.ndarray) -> DataKind:
    """"image" for (N, C, H, W) with C 1 or 3, "vector" for (N, D); any other shape is a DataError."""
    if x.ndim not in (2, 4) or (x.ndim == 4 and x.shape[1] not in (1, 3)):
        raise DataError(f"{path}: x has shape {x.shape}; expected (N,H,W), (N,H,W,C), (N,C,H,W) "
                        "with C 1 or 3, or (N,D)")
    return "image" if x.ndim == 4 else "vector"


def _paired(path: Path, x: np.ndarray | None, noise: np.ndarray, y: Any, n: int | None, seed: int) -> Dataset:
    """Paired data (x_i, noise_i): both float, one shape, laid out together; values kept as stored."""
    if x is None:
        raise DataError(f"{path}: has 'noise' but no 'x' array (paired data need both)")
    if x.shape != noise.shape:
        raise DataError(f"{path}: noise has shape {noise.shape} but x has {x.shape} (pairs need equal shapes)")
    for name, a in (("x", x), ("noise", noise)):
        if a.dtype.kind != "f":
            raise DataError(f"{path}: paired data need floating-point arrays, {name} has dtype {a.dtype}")
    x, noise = _nchw(x), _nchw(noise)
    kind = _kind_of(path, x)
    return _finish(x.astype(np.float32), y, kind, path.name, None, n, seed, noise=noise.astype(np.float32))


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (optionally gzipped): 4-byte magic, big-endian dims, data."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    ndim, start = magic & 0xFF, 4 + 4 * (magic & 0xFF)  # magic 0x0000080D: unsigned bytes, D dims
    if int.from_bytes(data[:4], "big") != magic:
        raise DataError(f"{path}: not an IDX file (magic {data[:4].hex()}, expected {magic:08x})")
    if len(data) < start:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))  # big-endian sizes
    if len(data) - start != math.prod(shape):
        raise DataError(f"{path}: IDX header says {shape} but the file holds {len(data) - start} data bytes")
    return np.frombuffer(data, np.uint8, offset=start).reshape(shape)


def _idx(path: Path, n: int | None, seed: int) -> Dataset:
    """MNIST-style images (N, 28, 28) with labels from the sibling ``labels-idx1`` file if present."""
    x = _read_idx(path, 0x803)[:, None]  # (N, 1, H, W)
    base = re.sub(r"images([-.])idx3", r"labels\1idx1", path.name).removesuffix(".gz")
    found = [p for p in (path.with_name(base), path.with_name(base + ".gz")) if p.is_file()]
    y = _read_idx(found[0], 0x801) if found else None
    return _finish(_uint8_images(x), y, "image", path.name, 8, n, seed)
