"""Stopping on a signal without losing anything: SIGINT (Ctrl-C), SIGTERM (what SLURM, Kubernetes, ``timeout`` and
preemptible cloud machines send before a kill) and SIGUSR1 (SLURM's ``--signal=USR1@SECONDS`` warning ahead of
preemption).

While training steps, a stop signal is recorded and the loop finishes its current step, writes a checkpoint,
and raises :class:`Interrupted` (a KeyboardInterrupt) saying where; its ``exit_code`` is the shell convention
128 + signal number: 130 (SIGINT), 143 (SIGTERM), 138 (SIGUSR1). During start-up (nothing half-written) a signal
raises at once. Inside a critical section (a checkpoint being written) it never interrupts: the write completes
(or fails cleanly) first. A second Ctrl-C (SIGINT) at least FORCE_AFTER seconds after the first, outside a
critical section, raises at once (an impatient user stays in control; checkpoints are atomic, so the folder stays
consistent); repeated SIGTERMs do not (``timeout``, SLURM and process-group kills often deliver one twice).

Handlers are installed only in the main thread (Python delivers signals there) and never over a signal the
process was started ignoring (``nohup``, background jobs). Under DDP every process installs them (torchrun and
a terminal signal every process) and the processes agree on stopping through the step's all-reduce, so all
stop after the same step and process 0 writes the checkpoint. This module imports no torch: a command can call
``raise_on_stop_signals`` at its very start.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from types import FrameType
from typing import Any, Callable, Iterator

STOP_SIGNALS: dict[int, str] = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM", signal.SIGUSR1: "SIGUSR1"}
FORCE_AFTER = 2.0  # seconds between two Ctrl-C for the second to stop at once


def signal_name(signum: int) -> str:
    return STOP_SIGNALS.get(signum) or signal.Signals(signum).name


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal; str(e) is one line saying where it stands; ``exit_code`` = 128 + signum."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message or f"stopped by {signal_name(signum)}")
        self.signum = signum
        self.exit_code = 128 + signum


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class StopSignals:
    """The stop signals' handlers for one training run (a context manager; ``install``/``restore`` by hand)."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the first stop signal received
        self.first_int: float | None = None  # when the first SIGINT came (monotonic seconds)
        self.deferred = False  # False: raise at once (start-up); True: record, the loop stops after its step
        self._critical = 0
        self._old: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal_name(self.signum) if self.signum is not None else "a signal"

    def install(self) -> "StopSignals":
        if not _main_thread():
            return self
        for s in STOP_SIGNALS:
            old = signal.getsignal(s)
            if old is signal.SIG_IGN:  # started ignoring it (nohup, a background job): keep ignoring it
                continue
            self._old[s] = old
            signal.signal(s, self._on_signal)
        return self

    def restore(self) -> None:
        for s, old in self._old.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)
        self._old.clear()

    def __enter__(self) -> "StopSignals":
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.signum is None:
            self.signum = signum
        again = signum == signal.SIGINT and self.first_int is not None and now - self.first_int >= FORCE_AFTER
        if signum == signal.SIGINT and self.first_int is None:
            self.first_int = now
        if self._critical:
            return  # a checkpoint is being written: it completes first, the loop stops after it
        if not self.deferred or again:
            raise Interrupted(signum)

    @contextmanager
    def critical(self) -> Iterator[None]:
        """No signal interrupts the block (a checkpoint write); one received meanwhile stops the run after it."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def raise_on_stop_signals(handler: Callable[[int, FrameType | None], None] = _raise) -> None:
    """Make SIGTERM and SIGUSR1 raise Interrupted (a KeyboardInterrupt, like Ctrl-C's) from now on, so a command
    stopped before training installs its own handlers (e.g. while importing torch) stops with one line and its
    exit code instead of dying silently. Main thread only; ignored signals stay ignored."""
    if not _main_thread():
        return
    for s in (signal.SIGTERM, signal.SIGUSR1):
        if signal.getsignal(s) is not signal.SIG_IGN:
            signal.signal(s, handler)
