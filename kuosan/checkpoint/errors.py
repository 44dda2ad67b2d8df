"""The errors of reading and writing checkpoints; each message is one line naming the file and the problem."""

from __future__ import annotations

import errno


class CheckpointError(ValueError):
    """A missing, incomplete, altered or mismatched checkpoint; the CLI prints it as one line."""


class DiskFullError(OSError):
    """A write ran out of space (or quota); the message names the path and the space needed."""

    def __init__(self, message: str):
        super().__init__(message)  # one argument: str(e) is the message, e.strerror is None


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def is_disk_full(e: BaseException) -> bool:
    """An OSError meaning "no space left" (ENOSPC), "quota exceeded" (EDQUOT) or "file too large" (EFBIG)."""
    return isinstance(e, OSError) and not isinstance(e, DiskFullError) and e.errno in DISK_FULL_ERRNOS


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover
