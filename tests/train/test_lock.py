"""One training per run folder: a second train or --resume on a locked folder is refused naming the process that
holds it; a lock left by a killed process is taken over; without flock, a PID file does the same."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import kuosan.train.lock as lock_mod
from kuosan.checkpoint import load_checkpoint
from kuosan.train import RunLockedError, train
from kuosan.train.lock import LOCK_NAME, RunLock

from train_helpers import tiny

HOLD = ("import sys; from kuosan.train.lock import RunLock; l = RunLock(sys.argv[1]).acquire(); "
        "print('held', flush=True); sys.stdin.read()")


@pytest.fixture
def holder(tmp_path):
    """A second process holding the lock of tmp_path/'r' (kuosan.train.lock imports no torch: it starts fast)."""
    run = tmp_path / "r"
    run.mkdir()
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "held"
    yield run, p
    if p.poll() is None:
        p.kill()
        p.wait()


def test_second_training_on_a_locked_folder_is_refused(holder):
    run, p = holder
    with pytest.raises(RunLockedError) as e:
        train(tiny(run, optim__steps=4), progress=False)
    msg = str(e.value)
    assert f"PID {p.pid} on {socket.gethostname()}" in msg and "is in use by" in msg and "\n" not in msg
    assert isinstance(e.value, OSError) and e.value.strerror is None  # the CLI prints str(e) as one line
    assert not (run / "checkpoints").exists()
    p.stdin.close()  # the holder ends: its lock is released
    p.wait()
    train(tiny(run, optim__steps=4), progress=False)
    assert load_checkpoint(run).state["step"] == 4 and not (run / LOCK_NAME).exists()


def test_resume_on_a_locked_folder_is_refused(tmp_path):
    run = tmp_path / "r"
    train(tiny(run, optim__steps=4), stop_at=2, progress=False)
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"in use by PID {p.pid}"):
            train(None, resume=run, progress=False)
        assert load_checkpoint(run).state["step"] == 2
    finally:
        p.kill()
        p.wait()


def test_lock_of_a_killed_process_is_taken_over(holder):
    run, p = holder
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (run / LOCK_NAME).exists()  # the killed holder could not remove it
    lock = RunLock(run).acquire()
    try:
        assert lock.previous["pid"] == p.pid  # recognised as stale (its flock died with it) and taken over
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        lock.release()
    train(tiny(run, optim__steps=2), progress=False)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_hand_written_stale_lock_file_is_taken_over(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    train(tiny(run, optim__steps=2), progress=False)
    assert not (run / LOCK_NAME).exists()


@pytest.fixture
def no_flock(monkeypatch):
    def flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lock_mod.fcntl, "flock", flock)


def test_without_flock_a_pid_file_refuses_live_and_takes_over_dead_holders(tmp_path, no_flock):
    run = tmp_path / "r"
    run.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        with pytest.raises(RunLockedError, match=f"in use by PID {sleeper.pid}"):
            RunLock(run).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    (run / LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
    with RunLock(run) as lock:  # its process is gone: stale
        assert not lock.flock and lock.previous["pid"] == sleeper.pid
        with pytest.raises(RunLockedError, match=f"in use by PID {os.getpid()}"):
            RunLock(run).acquire()  # held (by this process's other lock): the O_EXCL file refuses a second
    assert not (run / LOCK_NAME).exists()
    (run / LOCK_NAME).write_text(json.dumps({"pid": 12345, "host": "elsewhere.example"}))
    with pytest.raises(RunLockedError, match="PID 12345 on elsewhere.example, which is training it; if that process "
                                             "is gone, delete"):
        RunLock(run).acquire()


def test_lock_is_released_when_training_fails_and_a_symlink_is_refused(tmp_path, monkeypatch):
    import kuosan.train.loop as loop_mod

    run = tmp_path / "r"

    def boom(*a, **k):
        raise ValueError("data set exploded")

    monkeypatch.setattr(loop_mod, "load_dataset", boom)
    with pytest.raises(ValueError, match="exploded"):
        train(tiny(run, optim__steps=2), progress=False)
    assert run.is_dir() and not (run / LOCK_NAME).exists()
    os.symlink(tmp_path / "elsewhere", run / LOCK_NAME)
    with pytest.raises(RunLockedError, match="is a symlink"):
        RunLock(run).acquire()


@pytest.mark.slow
def test_two_real_trainings_on_one_folder(tmp_path):
    """A training process runs; a second `train` on its folder is refused naming it, and the first finishes."""
    run = tmp_path / "r"
    code = ("import sys; sys.path.insert(0, sys.argv[2]); from kuosan.train import train; "
            "from train_helpers import tiny; train(tiny(sys.argv[1], optim__steps=400), progress=False)")
    p = subprocess.Popen([sys.executable, "-c", code, str(run), os.path.dirname(__file__)],
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run / "checkpoints").exists() and time.time() < deadline:
            time.sleep(0.2)
        with pytest.raises(RunLockedError, match=f"in use by PID {p.pid}"):
            train(tiny(run, optim__steps=400), progress=False)
        with pytest.raises(RunLockedError, match=f"in use by PID {p.pid}"):
            train(None, resume=run, progress=False)
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert load_checkpoint(run).state["step"] == 400
