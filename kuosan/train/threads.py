"""How many intra-op threads a run uses (run.threads = 0: chosen here, once, at the start).

Oversubscribed OpenMP threads spin-wait for each other: on a machine whose cores are already busy, torch's default
(one thread per core) trains many times slower than one thread (benchmarks/train_threads.py: on 2 cores beside
one busy process, 2 threads ran at a fraction of 1 thread's speed). So the automatic count is the CPUs this
process may use (affinity, and a cgroup CPU quota) times the share of the machine's CPUs the load leaves idle,
rounded, between 1 and torch's default. The load is the number of runnable tasks right now (sampled for ~0.1 s:
a competitor that started seconds ago shows at once, one that ended does not). An explicit
OMP_NUM_THREADS is the user's choice and kept.

The count changes the order of floating-point reductions, hence the trained weights (at round-off first, then
chaotically), so a run records the count it used and a resume uses it again (unless this machine has fewer CPUs):
resume stays exact whatever the load is then.
"""

from __future__ import annotations

import math
import os
import time

import torch

TORCH_DEFAULT = torch.get_num_threads()  # torch's own default (physical cores, or OMP_NUM_THREADS), at import


def _cgroup_cpus() -> float | None:
    """The CPU quota of this process's cgroup in CPUs (docker --cpus, Kubernetes limits), or None."""
    for quota_file, period_file in (("/sys/fs/cgroup/cpu.max", None),
                                    ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")):
        try:
            with open(quota_file) as f:
                parts = f.read().split()
            if period_file is not None:
                with open(period_file) as f:
                    parts = [parts[0], f.read().strip()]
            if parts[0] in ("max", "-1"):
                return None
            return max(float(parts[0]) / float(parts[1]), 1.0)
        except (OSError, ValueError, IndexError, ZeroDivisionError):
            continue
    return None


def available_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    quota = _cgroup_cpus()
    return max(1, min(n, math.ceil(quota))) if quota is not None else n


def current_load(samples: int = 20, interval: float = 0.005) -> float:
    """Runnable tasks now (minus this one), averaged over ~0.1 s, machine-wide; the 1-minute load average only
    where /proc/loadavg cannot be read (it lags: a job that ended a minute ago still counts, and took a thread
    from the next run on an idle machine, 913 against 1233 img/s)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - no load average
        load = 0.0
    now = []
    for _ in range(samples):
        try:
            with open("/proc/loadavg") as f:
                now.append(int(f.read().split()[3].split("/")[0]) - 1)  # "running/total"; the reader is running
        except (OSError, ValueError, IndexError):
            break
        time.sleep(interval)
    return sum(now) / len(now) if now else load


def auto_threads() -> int:
    """torch's default on an idle machine, fewer (at least 1) as other processes keep the CPUs busy."""
    if os.environ.get("OMP_NUM_THREADS") or TORCH_DEFAULT <= 1:
        return max(1, TORCH_DEFAULT)
    mine, machine = available_cpus(), os.cpu_count() or 1
    idle = mine * max(0.0, 1.0 - current_load() / machine)
    return max(1, min(TORCH_DEFAULT, mine, int(idle + 0.5)))


def pick_threads(requested: int, recorded: int | None) -> tuple[int, str]:
    """(threads, why): run.threads when set, else the count the resumed checkpoint recorded (unless this machine
    has fewer CPUs: then it cannot be the same machine anyway), else auto."""
    if requested > 0:
        return requested, "run.threads"
    if recorded is not None and recorded <= available_cpus():
        return recorded, "as recorded by the checkpoint it resumes"
    return auto_threads(), "auto"
