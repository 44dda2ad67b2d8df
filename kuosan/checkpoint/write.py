"""Writing a checkpoint: complete or invisible.

The files go to ``checkpoints/.tmp-step_N-<pid>/`` (state.json last, holding the manifest: every file with its
size and SHA-256, hashed from the bytes read back after the write), are flushed, and the folder is renamed to
``step_N``; only then is ``latest`` replaced (os.replace) and older checkpoints pruned, each renamed away before
it is deleted. A failure at any point (a full disk included) removes the temporary folder and leaves the previous
checkpoint and pointer as they were.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor

from .errors import DiskFullError, human_bytes, is_disk_full
from .fields import CONFIG_FORMAT, FORMAT
from .files import sha256_of
from .layout import checkpoints_root, newest, prune, remove_atomically, step_name
from .optim import optim_to_flat

SLACK = 1 << 20  # headers, JSON and file-system blocks beyond the tensors' bytes


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(path: Path, text: str) -> None:
    """path's new content, all or nothing (a temp file beside it, flushed, renamed over it); a full disk is a
    DiskFullError naming path, with no temp file left."""
    tmp = path.parent / f".tmp-{path.name}-{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _unlink(tmp)
        if is_disk_full(e):
            raise DiskFullError(f"no space left on the device to write {str(path)!r} (it needs "
                                f"{human_bytes(len(text.encode()))}; {_free(path.parent)} free)") from None
        raise


def _unlink(p: Path) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def _free(where: Path) -> str:
    try:
        return human_bytes(shutil.disk_usage(where).free)
    except OSError:
        return "unknown space"


def checkpoint_bytes(*parts: dict[str, Tensor] | None) -> int:
    """The space a checkpoint of these tensors needs (their bytes plus SLACK)."""
    return SLACK + sum(v.numel() * v.element_size() for part in parts if part for v in part.values())


def save_checkpoint(run_dir: str | Path, step: int, config: dict[str, Any], state: dict[str, Any],
                    model: dict[str, Tensor], ema: dict[str, Tensor] | None = None,
                    optim: dict[str, Any] | None = None, extra: dict[str, Tensor] | None = None,
                    keep: int = 2) -> Path:
    """Write checkpoints/step_<step> atomically with its manifest, point ``latest`` at it, keep the newest
    ``keep``. Not enough space: DiskFullError naming the folder and the space needed; nothing half-written stays."""
    run_dir = Path(run_dir)
    root = checkpoints_root(run_dir, create=True)
    name = step_name(step)
    tmp, final = root / f".tmp-{name}-{os.getpid()}", root / name
    cpu = lambda sd: {k: v.detach().cpu().contiguous() for k, v in sd.items()}  # noqa: E731
    parts: dict[str, dict[str, Tensor]] = {"model.safetensors": cpu(model)}
    if ema is not None:
        parts["ema.safetensors"] = cpu(ema)
    if extra:
        parts["extra.safetensors"] = cpu(extra)
    state = dict(state, format=FORMAT, config_format=CONFIG_FORMAT, step=step)
    if optim is not None:
        parts["optim.safetensors"], state["optim"] = optim_to_flat(optim)
    needed = checkpoint_bytes(*parts.values())
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        free = None
    if free is not None and free < needed:
        raise DiskFullError(f"not enough space for checkpoint {str(final)!r}: it needs about {human_bytes(needed)}, "
                            f"{human_bytes(free)} free{_kept(root)}")
    try:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for fname, tensors in parts.items():
            save_file(tensors, str(tmp / fname))
        write_json(tmp / "config.json", config)
        state["manifest"] = {f: {"size": (tmp / f).stat().st_size, "sha256": sha256_of(tmp / f)}
                             for f in sorted([*parts, "config.json"])}
        write_json(tmp / "state.json", state)  # written last: its presence marks a complete checkpoint
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(tmp)
        if os.path.lexists(final):  # a checkpoint of this step from before: out of the way in one rename
            remove_atomically(final)
        os.replace(tmp, final)
        fsync_dir(root)
        write_text_atomic(root / "latest", name + "\n")
        fsync_dir(root)
    except BaseException as e:  # a full disk, a failing write, or an interrupt: nothing half-written stays
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(e):
            raise DiskFullError(f"no space left on the device writing checkpoint {str(final)!r} (it needs about "
                                f"{human_bytes(needed)}; {_free(root)} free){_kept(root)}") from None
        if isinstance(e, DiskFullError):
            raise DiskFullError(f"{e}{_kept(root)}") from None
        raise
    prune(root, keep, protect=final)
    return final


def _kept(root: Path) -> str:
    try:
        prev = newest(root)
    except Exception:  # noqa: BLE001 - only decorates a message
        prev = None
    return f"; the latest checkpoint {str(prev)!r} is intact" if prev is not None else "; there is no checkpoint yet"
