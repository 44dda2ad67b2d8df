"""Reading a checkpoint's files defensively: JSON of bounded size and depth, safetensors whose header is checked
(dtypes, shapes, offsets against the file's real size) before any tensor is allocated, SHA-256 of a file."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from .errors import CheckpointError
from .layout import is_real_file, kind_of

MAX_JSON_BYTES = 16 * 2**20  # state.json and config.json of any real run are a few KiB
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit
MAX_TENSORS = 100_000
MAX_NDIM = 8
# safetensors dtype -> (torch dtype, bytes per element)
DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8), "I32": (torch.int32, 4), "I16": (torch.int16, 2), "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1), "BOOL": (torch.bool, 1)}


def need_file(p: Path, what: str) -> int:
    """The size of p, which must be a regular file (not a folder, symlink or device)."""
    if not is_real_file(p):
        raise CheckpointError(f"{what} {str(p)!r} is {_a(kind_of(p))}, not a file")
    return os.lstat(p).st_size


def _a(kind: str) -> str:
    return "missing" if kind == "missing" else f"a {kind}"


def sha256_of(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(p: Path, what: str) -> Any:
    """A JSON file of at most MAX_JSON_BYTES; unreadable, too large or too deeply nested -> CheckpointError."""
    size = need_file(p, what)
    if size > MAX_JSON_BYTES:
        raise CheckpointError(f"{what} {str(p)!r} is {size} bytes, more than a checkpoint ever writes")
    try:
        with open(p, "rb") as f:
            return json.loads(f.read(MAX_JSON_BYTES + 1).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        msg = "nested too deeply" if isinstance(e, RecursionError) else " ".join(str(e).split())[:120]
        raise CheckpointError(f"{what} {str(p)!r} is unreadable: {msg}") from None


def tensor_header(p: Path, what: str) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """{name: (dtype, shape)} of a safetensors file, checked against the file's size without loading it: every
    tensor's bytes lie inside the file, so nothing larger than the file is ever allocated."""
    size = need_file(p, what)
    bad = f"{what} {str(p)!r} is not a valid safetensors file"
    if size < 8:
        raise CheckpointError(f"{bad} (only {size} bytes)")
    with open(p, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > min(size - 8, MAX_HEADER_BYTES):
            raise CheckpointError(f"{bad} (its header claims {n} bytes; the file has {size})")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise CheckpointError(f"{bad} (unreadable header)") from None
    if not isinstance(header, dict) or len(header) > MAX_TENSORS + 1:
        raise CheckpointError(f"{bad} (its header is not a table of tensors)")
    data_len, spans, out = size - 8 - n, [], {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or info.get("dtype") not in DTYPES:
            raise CheckpointError(f"{bad} (tensor {name[:60]!r}: unknown dtype "
                                  f"{info.get('dtype') if isinstance(info, dict) else info!r})")
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not (isinstance(shape, list) and len(shape) <= MAX_NDIM and all(_nat(d) for d in shape)
                and isinstance(offsets, list) and len(offsets) == 2 and all(_nat(o) for o in offsets)):
            raise CheckpointError(f"{bad} (tensor {name[:60]!r}: bad shape {shape!r} or offsets {offsets!r})")
        dtype, item = DTYPES[info["dtype"]]
        begin, end = offsets
        if not begin <= end <= data_len or end - begin != math.prod(shape) * item:
            raise CheckpointError(f"{bad} (tensor {name[:60]!r} of shape {shape} declares more data than "
                                  f"the file holds)")
        spans.append((begin, end))
        out[name] = (dtype, tuple(shape))
    pos = 0
    for begin, end in sorted(spans):
        if begin != pos:
            raise CheckpointError(f"{bad} (its tensors overlap or leave gaps)")
        pos = end
    if pos != data_len:
        raise CheckpointError(f"{bad} (trailing bytes after the tensors)")
    return out


def _nat(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def read_tensors(p: Path, what: str) -> dict[str, Tensor]:
    """The tensors of a safetensors file whose header passed ``tensor_header``."""
    tensor_header(p, what)
    try:
        return load_file(str(p))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{what} {str(p)!r} is corrupt: {' '.join(str(e).split())[:120]}") from None
