"""The explorer page's web application (FastAPI): the page, its JSON API, progress events and the readable files.

Routes: ``/`` the page; ``/api/info``; ``POST /api/generate`` -> a job; ``/api/jobs/{id}`` (status),
``/api/jobs/{id}/events`` (server-sent events, one ``step`` event per sampler step, then ``done``, ``cancelled``
or ``error``), ``/api/jobs/{id}/preview.png`` (the newest x̂_0 or x_t), ``POST /api/jobs/{id}/cancel``;
``/api/forward`` and ``/api/forward.png`` (the forward process at slider value u); ``/files/run/NAME`` and
``/files/out/NAME`` (files of the run folder and of the generated outputs, nothing else). Every error is a
JSON object ``{"error": "one line"}`` with a 4xx status (5xx only for a bug), never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Literal

from fastapi import FastAPI, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .explore import Explorer, forward_png, forward_state, make_explorer
from .files import safe_file
from .jobs import FINISHED, Job, JobManager
from .model import ServedRun
from .render import batch_png
from .schema import MAX_SEED, GenerateRequest, ServeInputError, limits, validation_message

STATIC = Path(__file__).with_name("static")
JOB_ID = PathParam(pattern="^[0-9a-f]{32}$", description="a job id")
POLL = 0.05  # seconds between looks at a job's progress while streaming its events
PNG_HEADERS = {"Cache-Control": "no-store"}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class _Data:
    """The explorer's data, loaded on first use (once; its failure is remembered and reported)."""

    def __init__(self, run: ServedRun):
        self.run, self.lock = run, threading.Lock()
        self.value: Explorer | None = None
        self.failure: str | None = None

    def get(self) -> Explorer:
        with self.lock:
            if self.value is None and self.failure is None:
                try:
                    self.value = make_explorer(self.run.data_name)
                except (ValueError, OSError) as e:  # DataError: the run's data moved or cannot be read
                    self.failure = f"the run's data {self.run.data_name!r} cannot be read: {' '.join(str(e).split())}"
            if self.value is None:
                raise ServeInputError(self.failure or "no data", status=409)
            return self.value

    def warm(self) -> None:
        """Load the data and draw one picture ahead of the first request (matplotlib's first figure is slow)."""
        try:
            forward_png(self.run.denoiser.path, self.get(), 0.0, 0)
        except ServeInputError:  # reported when the page asks
            pass


def create_app(run: ServedRun, out_dir: Path, *, workers: int = 2, hosts: list[str] | None = None) -> FastAPI:
    """The application serving ``run``; generated files go to ``out_dir`` (an existing, writable folder).

    ``hosts``: the Host header values accepted (others get HTTP 400), so that a web page elsewhere cannot reach a
    page bound to 127.0.0.1 by pointing a name of its own at it (DNS rebinding); None accepts any."""
    manager = JobManager(run, out_dir, workers)
    data = _Data(run)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=data.warm, name="kuosan-serve-warm", daemon=True).start()  # the first slider move
        yield
        manager.shutdown()

    app = FastAPI(title="kuosan explorer", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.manager = manager
    if hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, validation_message(list(exc.errors())))

    @app.exception_handler(ServeInputError)
    async def _refused(request: Request, exc: ServeInputError) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error ({type(exc).__name__}); see the server's log")

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return {**run.info(), "limits": limits(), "pictures": [n for n in ("samples.png", "loss.png")
                                                               if safe_file(run.root, n) is not None]}

    @app.post("/api/generate", status_code=202)
    def generate(req: GenerateRequest) -> dict[str, Any]:
        return manager.submit(req).status()

    @app.get("/api/jobs/{job_id}")
    def status(job_id: str = JOB_ID) -> dict[str, Any]:
        return manager.get(job_id).status()

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: str = JOB_ID) -> dict[str, Any]:
        return manager.cancel(job_id).status()

    @app.get("/api/jobs/{job_id}/events")
    def events(job_id: str = JOB_ID) -> StreamingResponse:
        return StreamingResponse(_events(manager.get(job_id)), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/api/jobs/{job_id}/preview.png")
    def preview(job_id: str = JOB_ID, what: Literal["x0", "x"] = "x0") -> Response:
        job = manager.get(job_id)
        x, step = (job.x0 if what == "x0" else job.x), job.step
        if x is None:
            raise ServeInputError("no preview: no step has finished yet, or the job is an old one", status=404)
        return Response(batch_png(x, f"{'x̂_0' if what == 'x0' else 'x_t'} after step {step}"),
                        media_type="image/png", headers=PNG_HEADERS)

    @app.get("/api/forward")
    def forward(u: float = Query(0.5, ge=0.0, le=1.0, allow_inf_nan=False),
                seed: int = Query(0, ge=0, le=MAX_SEED)) -> dict[str, Any]:
        return forward_state(run.denoiser.path, data.get(), u, seed)

    @app.get("/api/forward.png")
    def forward_picture(u: float = Query(0.5, ge=0.0, le=1.0, allow_inf_nan=False),
                        seed: int = Query(0, ge=0, le=MAX_SEED)) -> Response:
        return Response(forward_png(run.denoiser.path, data.get(), u, seed), media_type="image/png",
                        headers=PNG_HEADERS)

    @app.get("/files/{where}/{name:path}")
    def files(where: Literal["run", "out"], name: str) -> FileResponse:
        found = safe_file(run.root if where == "run" else out_dir, name)
        if found is None:  # outside the folder, a link out of it, hidden, missing: all the same answer
            raise ServeInputError(f"no such file in the {'run' if where == 'run' else 'outputs'} folder", 404)
        return FileResponse(found)

    return app


async def _events(job: Job) -> AsyncIterator[str]:
    """Server-sent events: ``step`` for each finished step (1..steps), then one final event named by the state."""
    sent = 0
    while True:
        state = job.state  # read before the step: once finished, job.step is final
        step = job.step
        while sent < step:
            sent += 1
            yield f"event: step\ndata: {json.dumps({'step': sent, 'steps': job.request.steps})}\n\n"
        if state in FINISHED:
            yield f"event: {state}\ndata: {json.dumps(job.status())}\n\n"
            return
        await asyncio.sleep(POLL)
