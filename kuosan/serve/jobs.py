"""Generation jobs keyed by id: a small thread pool runs them, the page polls or streams their progress, and a
job can be cancelled (its step hook raises :class:`Cancelled` at the next step).

Finished samples are written to the outputs folder as ``<id>.png`` (the picture) and ``<id>.npz`` (array ``x``),
each under a hidden temporary name first and then renamed, so a file the page can read is always complete.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from torch import Tensor

from .generate import draw
from .model import ServedRun, check_request, conditioned
from .render import batch_png
from .schema import MAX_QUEUED, GenerateRequest, ServeInputError

JobState = Literal["queued", "running", "done", "cancelled", "error"]
FINISHED = ("done", "cancelled", "error")
KEEP = 64  # finished jobs remembered (their files stay in the outputs folder)
PREVIEWS = 8  # finished jobs whose last x_t and x̂_0 are kept for the preview picture (64 MiB each at most)
log = logging.getLogger("kuosan.serve")


class Cancelled(Exception):
    """Raised inside the sampler loop when its job was cancelled."""


@dataclass
class Job:
    """One generation; ``step`` counts the steps done, ``x``/``x0`` are the newest state and x̂_0 (CPU)."""

    id: str
    request: GenerateRequest
    state: JobState = "queued"
    step: int = 0
    error: str | None = None
    x: Tensor | None = None
    x0: Tensor | None = None
    seconds: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def status(self) -> dict[str, Any]:
        """The JSON the page reads: state, progress, the files once done, the one-line error."""
        done = self.state == "done"
        return {"id": self.id, "state": self.state, "step": self.step, "steps": self.request.steps,
                "error": self.error, "seconds": self.seconds,
                "image": f"/files/out/{self.id}.png" if done else None,
                "array": f"/files/out/{self.id}.npz" if done else None}


class JobManager:
    """Runs jobs of one :class:`ServedRun` on ``workers`` threads, writing results into ``out_dir``."""

    def __init__(self, run: ServedRun, out_dir: Path, workers: int = 2):
        self.run, self.out_dir = run, out_dir
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kuosan-serve")

    def submit(self, req: GenerateRequest) -> Job:
        """Check ``req`` against the run and queue it (ServeInputError 400, or 429 when too many are active)."""
        check_request(self.run, req.sampler, req.n, req.label, req.guidance)
        job = Job(uuid.uuid4().hex, req)
        with self.lock:
            active = sum(j.state not in FINISHED for j in self.jobs.values())
            if active >= MAX_QUEUED:
                raise ServeInputError(f"{active} generations are already queued or running; wait or cancel one",
                                      status=429)
            self.jobs[job.id] = job
            self._forget_old()
        self.pool.submit(self._run, job)
        return job

    def get(self, job_id: str) -> Job:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise ServeInputError(f"no job {job_id!r} (finished jobs are forgotten after {KEEP} newer ones)", 404)
        return job

    def cancel(self, job_id: str) -> Job:
        """Ask the job to stop: a queued job never starts, a running one stops at its next step."""
        job = self.get(job_id)
        job.cancel.set()
        with self.lock:
            if job.state == "queued":
                job.state = "cancelled"
        return job

    def shutdown(self) -> None:
        """Cancel every job and let the workers end (called when the server stops)."""
        with self.lock:
            for job in self.jobs.values():
                job.cancel.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _forget_old(self) -> None:
        finished = [k for k, j in self.jobs.items() if j.state in FINISHED]
        for k in finished[:max(0, len(finished) - PREVIEWS)]:
            self.jobs[k].x = self.jobs[k].x0 = None
        for k in finished[:max(0, len(finished) - KEEP)]:
            del self.jobs[k]

    def _run(self, job: Job) -> None:
        with self.lock:
            if job.cancel.is_set() or job.state != "queued":
                job.state = "cancelled"
                return
            job.state = "running"
        start = time.perf_counter()
        state: JobState = "error"
        try:
            x = self._generate(job)
            self._write(job.id, x)
            state = "done"
        except Cancelled:
            state = "cancelled"
        except (ValueError, RuntimeError, OSError) as e:  # found late, non-finite samples, out of memory, disk full
            job.error = " ".join(str(e).split()) or type(e).__name__
            log.warning("job %s failed: %s", job.id, job.error)
        except Exception as e:  # noqa: BLE001 - a bug: one line on the page, the traceback in the server's log
            job.error = f"internal error ({type(e).__name__}); see the server's log"
            log.exception("job %s failed", job.id)
        job.seconds = round(time.perf_counter() - start, 3)
        job.state = state  # last: whoever sees a finished state sees its step, error and time

    def _generate(self, job: Job) -> Tensor:
        r = job.request
        D, cond = conditioned(self.run, r.n, r.label, r.guidance)

        def on_step(i: int, x: Tensor, x0: Tensor) -> None:
            if job.cancel.is_set():
                raise Cancelled
            job.x, job.x0, job.step = x, x0, i + 1

        return draw(D, r.sampler, (r.n, *self.run.shape), r.steps, grid=r.grid, seed=r.seed, cond=cond,
                    device=self.run.device, on_step=on_step)

    def _write(self, job_id: str, x: Tensor) -> None:
        _atomic(self.out_dir / f"{job_id}.npz", lambda f: np.savez(f, x=x.numpy()))
        png = batch_png(x)
        _atomic(self.out_dir / f"{job_id}.png", lambda f: f.write(png))


def _atomic(path: Path, write: Callable[[Any], None]) -> None:
    """write(file) into a hidden temporary file beside ``path``, then rename it to ``path``."""
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
