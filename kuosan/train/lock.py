"""One training process per run folder: ``RUN/.lock`` held with flock(2) while training runs.

The kernel releases a flock when its holder dies (kill -9 included), so a lock left by a killed process is free
and simply taken over; the file records the holder (PID, host, start time) to name it when a second ``train`` or
``--resume`` is refused. Where the file system has no flock (some network mounts: ENOLCK, EOPNOTSUPP) the file
is created with O_EXCL and a holder is stale when its PID is no longer running on this host; a holder on
another host cannot be checked and is refused with the advice to remove the file if that process is gone.
The holder unlinks the file while still holding it; an acquirer checks that the file it locked is still the
one at the path (else it retries), so two processes never both hold the lock.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

LOCK_NAME = ".lock"
NO_FLOCK = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})
_HELD: set[str] = set()  # lock files this process holds (a PID file naming this PID is ours only if listed)


class RunLockedError(OSError):
    """The run folder is being trained by another process; the CLI prints it as one line."""

    def __init__(self, message: str):
        super().__init__(message)


def _me() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def _holder(fd: int) -> dict[str, Any]:
    try:
        d = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
    except (OSError, ValueError, RecursionError):
        return {}
    return d if isinstance(d, dict) else {}


def _who(h: dict[str, Any]) -> str:
    pid, host, since = h.get("pid"), h.get("host"), h.get("since")
    who = f"PID {pid}" if isinstance(pid, int) else "another process"
    if isinstance(host, str) and host:
        who += f" on {host[:64]}"
    if isinstance(since, str) and since:
        who += f" (since {since[:32]})"
    return who


def _age(p: Path) -> float:
    try:
        return time.time() - os.lstat(p).st_mtime
    except OSError:
        return float("inf")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except (OverflowError, ValueError):
        return False
    return True


class RunLock:
    """``with RunLock(run_dir):`` -> refuse (RunLockedError naming the holder) if another process trains there."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.path = Path(run_dir), Path(run_dir) / LOCK_NAME
        self.fd: int | None = None
        self.previous: dict[str, Any] = {}  # the holder recorded by a dead process whose lock was taken over
        self.flock = True

    def _refuse(self, holder: dict[str, Any], remote: bool = False) -> RunLockedError:
        pid = holder.get("pid")
        if remote:
            then = f"; if that process is gone, delete {str(self.path)!r}"
        else:
            then = f"; wait for it to finish or stop it (kill {pid})" if isinstance(pid, int) else "; wait for it"
        return RunLockedError(f"run folder {str(self.run_dir)!r} is in use by {_who(holder)}, which is training "
                              f"it{then}")

    def acquire(self) -> "RunLock":
        for _ in range(20):
            if os.path.islink(self.path):
                raise RunLockedError(f"{str(self.path)!r} is a symlink, not the lock file a run writes")
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise self._refuse(holder) from None
            except OSError as e:
                os.close(fd)
                if e.errno in NO_FLOCK:
                    return self._acquire_pidfile()
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder unlinked it between our open and flock: lock the new file
                os.close(fd)
                continue
            self.previous = _holder(fd)
            try:
                self._write(fd)
            except OSError:  # a full disk: the flock alone is the lock; the holder just goes unnamed
                pass
            self.fd = fd
            _HELD.add(os.path.realpath(self.path))
            return self
        raise RunLockedError(f"could not lock run folder {str(self.run_dir)!r}: its lock file keeps changing")

    def _write(self, fd: int) -> None:
        data = json.dumps(_me()).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)

    def _acquire_pidfile(self) -> "RunLock":
        """No flock on this file system: an O_EXCL lock file, stale when its PID is gone from this host."""
        self.flock = False
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except FileExistsError:
                try:
                    fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
                except FileNotFoundError:
                    continue
                holder = _holder(fd)
                os.close(fd)
                pid, host = holder.get("pid"), holder.get("host")
                if host not in (None, socket.gethostname()):
                    raise self._refuse(holder, remote=True) from None
                ours = pid == os.getpid() and os.path.realpath(self.path) in _HELD
                if isinstance(pid, int) and (ours or (pid != os.getpid() and pid_alive(pid))):
                    raise self._refuse(holder) from None
                if not isinstance(pid, int) and _age(self.path) < 10.0:  # its creator is still writing it
                    raise self._refuse(holder) from None
                self.previous = holder
                try:
                    os.unlink(self.path)  # stale: its process is gone
                except FileNotFoundError:
                    pass
                continue
            self._write(fd)
            self.fd = fd
            _HELD.add(os.path.realpath(self.path))
            return self
        raise RunLockedError(f"could not lock run folder {str(self.run_dir)!r}: its lock file keeps changing")

    def release(self) -> None:
        if self.fd is None:
            return
        _HELD.discard(os.path.realpath(self.path))
        try:
            os.unlink(self.path)  # while still holding it (see the module's docstring)
        except OSError:
            pass
        if self.flock:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            except OSError:
                pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
