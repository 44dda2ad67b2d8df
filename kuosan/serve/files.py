"""Which files the page may read: those inside the run folder and the generated-outputs folder, nothing else.

A requested name is resolved (``..`` collapsed, every symbolic link followed) before it is compared with the
resolved roots, so ``../``, an absolute path, an encoded slash and a link pointing out of the folder are all
refused; so are names with NUL bytes, hidden entries (``.tmp-*`` files of an atomic write, ``.trash-*``) and
anything that is not a regular file.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_NAME = 1024  # characters of a requested relative name


def safe_file(root: Path, name: str) -> Path | None:
    """The regular file ``root/name`` if it lies inside ``root`` once every link is followed, else None."""
    if not name or len(name) > MAX_NAME or "\x00" in name or "\\" in name:
        return None
    rel = Path(name)
    if rel.is_absolute() or rel.drive or any(part in ("..", "") or part.startswith(".") for part in rel.parts):
        return None
    try:
        base = root.resolve(strict=True)
        target = (base / rel).resolve(strict=True)  # follows links: a link out of the folder resolves outside it
    except (OSError, RuntimeError):  # missing, unreadable, or a link loop
        return None
    if not target.is_relative_to(base) or not target.is_file() or not os.access(target, os.R_OK):
        return None
    return target
