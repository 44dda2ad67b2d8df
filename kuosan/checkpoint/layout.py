"""Where checkpoints live in a run folder and which names are ours: ``checkpoints/step_NNNNNNN/`` folders, the
``checkpoints/latest`` pointer, and the temporary names of a checkpoint being written (``.tmp-``), deleted
(``.trash-``) or pointed at (``.latest-``). Every path found through the pointer stays inside the run folder.

A step folder appears only by an atomic rename of a complete, flushed temporary folder and disappears only by an
atomic rename to a trash name, so a name ``step_N`` is always a whole checkpoint; the temporary and trash names
are never loaded, and ``clean_temp`` removes those an interrupted process left.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

from .errors import CheckpointError

STEP_RE = re.compile(r"step_([0-9]{7,15})")  # step_0000020 (7 digits, more for steps >= 10^7)
TEMP_PREFIXES = (".tmp-", ".trash-", ".latest-")  # checkpoint being written / deleted / pointer being replaced
MAX_POINTER_BYTES = 256


def step_name(step: int) -> str:
    return f"step_{step:07d}"


def step_of(name: str) -> int | None:
    """The step of a checkpoint folder name (None for any other name)."""
    m = STEP_RE.fullmatch(name)
    return int(m.group(1)) if m else None


def _mode(p: Path) -> int | None:
    try:
        return os.lstat(p).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None


def is_real_dir(p: Path) -> bool:
    """A directory, not a symlink to one."""
    m = _mode(p)
    return m is not None and stat.S_ISDIR(m)


def is_real_file(p: Path) -> bool:
    """A regular file, not a symlink, folder or device."""
    m = _mode(p)
    return m is not None and stat.S_ISREG(m)


def kind_of(p: Path) -> str:
    """'missing', 'file', 'folder', 'symlink' or 'special' (for messages)."""
    m = _mode(p)
    if m is None:
        return "missing"
    return ("symlink" if stat.S_ISLNK(m) else "folder" if stat.S_ISDIR(m) else "file" if stat.S_ISREG(m)
            else "special")


def inside(child: Path, parent: Path) -> bool:
    """Whether child (symlinks resolved) lies in parent (symlinks resolved)."""
    c, p = os.path.realpath(child), os.path.realpath(parent)
    return c == p or c.startswith(p.rstrip(os.sep) + os.sep)


def checkpoints_root(run_dir: Path, *, create: bool = False) -> Path:
    """run_dir/checkpoints: a real folder inside the run (a symlink leading elsewhere is refused: resuming would
    write, and prune, there)."""
    root = run_dir / "checkpoints"
    if create and not os.path.lexists(root):
        root.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(root) and not (is_real_dir(root) and inside(root, run_dir)):
        raise CheckpointError(f"{str(root)!r} is a {kind_of(root)}, not a folder of the run {str(run_dir)!r}")
    return root


def step_dirs(root: Path) -> list[tuple[int, Path]]:
    """The checkpoint folders of ``root`` (step_N, real folders with a state.json), oldest first."""
    try:
        names = os.listdir(root)
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for name in names:
        step = step_of(name)
        if step is not None and is_real_dir(root / name) and os.path.lexists(root / name / "state.json"):
            out.append((step, root / name))
    return sorted(out)


def read_pointer(root: Path) -> str | None:
    """The step folder named by root/latest (None without a pointer); anything but one step_N name is refused."""
    ptr = root / "latest"
    if not os.path.lexists(ptr):
        return None
    if not is_real_file(ptr):
        raise CheckpointError(f"{str(ptr)!r} is a {kind_of(ptr)}, not the pointer file a run writes")
    with open(ptr, "rb") as f:
        raw = f.read(MAX_POINTER_BYTES + 1)
    try:
        name = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        name = repr(raw[:40])
    if len(raw) > MAX_POINTER_BYTES or step_of(name) is None:
        shown = name if len(name) <= 60 else name[:60] + "..."
        raise CheckpointError(f"{str(ptr)!r} must name a step_NNNNNNN folder beside it, got {shown!r}")
    return name


def newest(root: Path) -> Path | None:
    """The checkpoint a run folder continues from: the one ``latest`` names, or a newer complete one (a process
    killed between renaming a new checkpoint into place and updating the pointer), or, when the named one was
    deleted, the newest there is. A pointer naming anything but a real folder (a symlink, a file) is refused."""
    name = read_pointer(root)
    dirs = step_dirs(root)
    if name is None:
        return dirs[-1][1] if dirs else None
    target = root / name
    if not os.path.lexists(target):
        if dirs:
            return dirs[-1][1]
        raise CheckpointError(f"{str(root / 'latest')!r} names {name!r}, which does not exist")
    if not is_real_dir(target) or not inside(target, root):
        raise CheckpointError(f"{str(root / 'latest')!r} names {name!r}, which is a {kind_of(target)}, not a "
                              "checkpoint folder of this run")
    if dirs and dirs[-1][0] > step_of(name):  # type: ignore[operator]
        return dirs[-1][1]
    return target


def resolve(path: str | Path) -> Path:
    """A run folder (its newest checkpoint), its checkpoints/ folder, or a checkpoint folder -> the checkpoint
    folder; a one-line CheckpointError when there is none."""
    p = Path(path)
    if not os.path.lexists(p):
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    if not p.is_dir():
        raise CheckpointError(f"{str(p)!r} is a {kind_of(p)}, not a run or checkpoint folder")
    if os.path.lexists(p / "checkpoints"):
        found = newest(checkpoints_root(p))
        if found is None:
            raise CheckpointError(f"run folder {str(p)!r} has no checkpoint yet")
        return found
    if os.path.lexists(p / "latest"):
        found = newest(p)
        if found is None:
            raise CheckpointError(f"{str(p)!r} has no checkpoint")
        return found
    if not os.path.lexists(p / "state.json") or not os.path.lexists(p / "model.safetensors"):
        raise CheckpointError(f"{str(path)!r} is not a kuosan run or checkpoint (no state.json/model.safetensors)")
    return p


def run_of(ckpt: Path) -> Path | None:
    """The run folder a checkpoint folder belongs to (RUN/checkpoints/step_N), or None for a loose one."""
    if step_of(ckpt.name) is None or ckpt.parent.name != "checkpoints":
        return None
    return ckpt.parent.parent


def remove_atomically(p: Path) -> None:
    """Rename p to a trash name first (a checkpoint is gone at once, never half there), then delete it."""
    trash = p.parent / f".trash-{p.name}-{os.getpid()}"
    if os.path.lexists(trash):
        _remove(trash)
    os.replace(p, trash)
    _remove(trash)


def _remove(p: Path) -> None:
    if is_real_dir(p):
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def prune(root: Path, keep: int, protect: Path) -> None:
    """Delete all but the newest ``keep`` checkpoints (never ``protect``), each atomically."""
    old = [p for _, p in step_dirs(root) if p.name != protect.name]
    for p in old[: max(0, len(old) - (keep - 1))]:
        try:
            remove_atomically(p)
        except OSError:  # e.g. removed by hand meanwhile: nothing partial is left under a step name
            pass


def clean_temp(root: Path) -> list[str]:
    """Remove the temporary and trash entries of earlier processes from root (call it holding the run's lock);
    returns their names."""
    try:
        names = os.listdir(root)
    except (FileNotFoundError, NotADirectoryError):
        return []
    gone = []
    for name in sorted(names):
        if name.startswith(TEMP_PREFIXES):
            _remove(root / name)
            gone.append(name)
    return gone
