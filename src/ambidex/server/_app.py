"""The job service over HTTP (FastAPI): jobs, their events and outcomes, workers, health.

Run, submit, watch, cancel, retry, re-run and list jobs; see the workers; health and metrics.

``create_app`` builds the app around a ``JobManager``; the manager starts and
stops with the app. Every answer is a documented 2xx or 4xx (503 when the
store is down): 400 for a body that is not JSON, 404 for an unknown job or
workload, 409 for a request the job's state does not allow, 422 naming each
bad field, 413 for a body over the size limit, 401 without the bearer token
(when one is set). An error answer never echoes the rejected value back (it
may be something no JSON answer can carry: NaN, a lone surrogate).

The API docs (``/docs``) are served from the assets of ``fastapi-offline``:
they need no internet.
"""

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, cast

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import ambidex
from ambidex import _observe
from ambidex._text import describe_exception, plain_text
from ambidex.jobs import (
    JobBatchError,
    JobConflictError,
    JobEvent,
    JobInputError,
    JobManager,
    JobNotFoundError,
    JobOptionError,
    JobServiceStoppedError,
    JobStatus,
    UnknownWorkloadError,
    WorkloadRegistry,
)
from ambidex.server._auth import BodySizeLimit, require_token
from ambidex.server._fast_route import fast_route
from ambidex.server._schemas import (
    AttemptOut,
    BatchIn,
    BatchOut,
    ErrorOut,
    JobList,
    JobOut,
    ResultOut,
    SubmitIn,
    WorkerList,
    WorkerOut,
    WorkflowNodesOut,
    WorkloadOut,
)

__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app"]

DEFAULT_MAX_BODY_BYTES = 1_048_576
_KEEPALIVE_S = 15.0
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The body is not JSON."},
    401: {"model": ErrorOut, "description": "Missing or wrong bearer token."},
    404: {"model": ErrorOut, "description": "No such job or workload."},
    413: {"model": ErrorOut, "description": "Request body too large."},
    422: {"model": ErrorOut, "description": "Invalid input; detail names each field."},
    503: {"model": ErrorOut, "description": "The job store is unreachable; try again."},
}
_DOCS_PREFIXES = ("/docs", "/static-offline-docs", "/openapi.json")


def _fastapi_telemetry() -> dict[str, Any] | None:
    """FastAPI's own OpenTelemetry spans and metrics: on where OpenTelemetry is configured.

    With them on, every request asks OpenTelemetry for its three providers (~7 µs,
    4% of a submit's server CPU); so they are on only when ambidex's tracing is on
    as the app is made (``ax.instrument()`` or ``AMBIDEX_OTEL``), or the environment
    names an OpenTelemetry setting (any ``OTEL_*`` variable, as
    ``opentelemetry-instrument`` and OTLP exporters are configured). With ambidex's
    tracing on, the request spans go to its provider (the one ``instrument`` was
    given, which need not be the global one), so a submit's ``ambidex.*`` spans and
    the job's stored context are children of the request's SERVER span, whose
    parent is the ``traceparent`` the client sent. None: FastAPI's defaults.
    """
    if _observe.on:
        from ambidex import _otel

        return {"tracer_provider": _otel.provider()}
    if "AMBIDEX_OTEL" in os.environ or any(name.startswith("OTEL_") for name in os.environ):
        return None
    return {"tracing": False, "metrics": False, "logs": False}


_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "The job's state does not allow this."}
}


class _Metrics:
    """The HTTP metrics of one app (the jobs' own are the manager's ``JobMetrics``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Gauge(
            "ambidex_jobs", "Jobs in the store by status.", ["status"], registry=self.registry
        )
        self.jobs_by_workload = Gauge(
            "ambidex_jobs_by_workload",
            "Jobs in the store by workload and status.",
            ["workload", "status"],
            registry=self.registry,
        )
        self.requests = Counter(
            "ambidex_http_requests",
            "HTTP requests answered.",
            ["method", "route", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ambidex_http_request_seconds",
            "Time to answer an HTTP request (streams excluded).",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )


def create_app(
    db: str | Path | None = None,
    *,
    manager: JobManager | None = None,
    registry: WorkloadRegistry | None = None,
    concurrency: int = 32,
    lease_s: float = 15.0,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_wait_s: float = 300.0,
) -> FastAPI:
    """The job service as an ASGI app.

    Args:
        db: the job store (a file, ``sqlite:///FILE`` or ``postgresql://...``;
            default: ``jobs.sqlite`` in the ambidex data directory).
        manager: a ready manager to serve instead (``db``, ``registry``,
            ``concurrency`` and ``lease_s`` are then ignored).
        registry: the workloads offered (default: the default registry).
        concurrency: jobs run at once in this process; 0 to leave running to
            ``ambidex worker`` processes.
        lease_s: see ``JobManager``.
        token: if set, every endpoint but ``/healthz`` needs
            ``Authorization: Bearer <token>``.
        max_body_bytes: larger request bodies are refused with 413.
        max_wait_s: the longest ``wait_s`` a ``/v1/run`` call may ask for.
    """
    jm = manager or JobManager(db, registry, concurrency=concurrency, lease_s=lease_s)
    metrics = _Metrics()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await jm.start()
        try:
            yield
        finally:
            await jm.aclose()

    app = FastAPIOffline(
        title="ambidex job service",
        version=ambidex.__version__,
        description="Durable jobs: run and wait, or submit and come back later.",
        lifespan=lifespan,
        responses=_ERRORS,
        redoc_url=None,
        telemetry=_fastapi_telemetry(),
    )
    app.state.manager = jm
    app.state.token = token
    app.state.metrics = metrics
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    _install_error_handlers(app)
    _install_request_metrics(app, metrics)
    _install_job_routes(app, jm, max_wait_s)
    _install_read_routes(app, jm)
    _install_workflow_routes(app, jm)
    _install_service_routes(app, jm, metrics)

    from ambidex.server._dashboard import router as dashboard

    app.include_router(dashboard)
    # Routes are matched in order: the API first, the docs' pages and assets (which
    # fastapi-offline put first) last.
    docs = [r for r in app.router.routes if getattr(r, "path", "").startswith(_DOCS_PREFIXES)]
    app.router.routes[:] = [r for r in app.router.routes if r not in docs] + docs
    return app


_AUTH = [Depends(require_token)]


def _auth_of(app: FastAPI) -> list[Any]:
    """The routes' auth dependency: none when the app has no token.

    It would let every request through, at ~20 µs of FastAPI's dependency solving each.
    """
    return [] if app.state.token is None else _AUTH


def _location(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


def _install_job_routes(app: FastAPI, jm: JobManager, max_wait_s: float) -> None:
    auth = _auth_of(app)
    default_wait_s = min(30.0, max_wait_s)
    job_location = _location
    key_header = Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="A job submitted with this key before is answered instead of a new one.",
    )

    @app.post(
        "/v1/run/{workload}",
        response_model=JobOut,
        dependencies=auth,
        tags=["jobs"],
        responses={
            202: {"model": JobOut, "description": "Still running after wait_s."},
            **_CONFLICT,
        },
    )
    async def run(
        workload: str,
        response: Response,
        body: dict[str, Any] | None = None,
        wait_s: Annotated[float, Query(ge=0, le=max_wait_s, allow_inf_nan=False)] = default_wait_s,
        idempotency_key: Annotated[str | None, key_header] = None,
    ) -> JobOut:
        """Run a job and wait for it; the body is the workload's input.

        Answers 200 with the finished job (succeeded, failed or cancelled), or
        202 with the job and its ``Location`` if it is still going after ``wait_s``.
        With an ``Idempotency-Key`` header naming an earlier job, that job is
        waited for instead of a new one.
        """
        submitted = await jm.submit_detailed(
            workload, body or {}, idempotency_key=_header_key(idempotency_key)
        )
        done = await jm.wait(submitted.job.id, wait_s)
        if not done.status.terminal:
            response.status_code = 202
            response.headers["Location"] = job_location(done.id)
        return JobOut.of(done)

    @app.post(
        "/v1/jobs",
        status_code=202,
        response_model=JobOut,
        dependencies=auth,
        tags=["jobs"],
        responses={
            200: {"model": JobOut, "description": "The idempotency key named this job."},
            **_CONFLICT,
        },
    )
    async def submit(
        request_body: SubmitIn,
        idempotency_key: Annotated[str | None, key_header] = None,
    ) -> Response:
        """Submit a job; answers 202 at once with its id and ``Location``.

        With an ``idempotency_key`` (in the body, or the ``Idempotency-Key``
        header) that names an earlier job, answers 200 with that job and stores
        nothing; 409 if that job has another workload or input.
        """
        return await submitted(request_body, idempotency_key)

    async def submitted(request_body: SubmitIn, idempotency_key: str | None = None) -> Response:
        options = request_body.options()
        if idempotency_key is not None:
            given = options.setdefault("idempotency_key", _header_key(idempotency_key))
            if given != idempotency_key:
                raise _invalid(
                    ["header", "Idempotency-Key"],
                    "differs from the body's idempotency_key: give one of them",
                )
        done = await jm.submit_detailed(request_body.workload, request_body.input, **options)
        # The answer is built here, not by FastAPI from the return value: its
        # response_model path validates the JobOut a second time (measured on the
        # 2-CPU machine: ~40 µs of a submit's ~300 µs in the app). Serialised by
        # pydantic, as FastAPI does: the same bytes as every other answer (1e-7,
        # not json.dumps's 1e-07).
        return Response(
            JobOut.of(done.job).model_dump_json(),
            status_code=202 if done.created else 200,
            headers={"Location": job_location(done.job.id)},
            media_type="application/json",
        )

    # A submit without the header, whose body FastAPI would take, skips FastAPI's
    # parameter machinery (server/_fast_route.py says why and how).
    fast_route(
        app, "/v1/jobs", "POST", SubmitIn, submitted, headers_read_by_fastapi=["idempotency-key"]
    )

    @app.post(
        "/v1/jobs:batch",
        status_code=202,
        response_model=BatchOut,
        dependencies=auth,
        tags=["jobs"],
        responses={
            200: {"model": BatchOut, "description": "Every job was named by its idempotency key."},
            409: {"model": ErrorOut, "description": "An idempotency key names another job."},
        },
    )
    async def submit_batch(request_body: BatchIn, response: Response) -> BatchOut:
        """Submit up to 1,000 jobs (``MAX_BATCH_JOBS``) in one transaction: all of them, or none.

        Each job is what ``POST /v1/jobs`` takes as its body. Answers 202 with
        the jobs in order (and for each whether it was created), 200 if every
        job's idempotency key named an existing job. If any job is refused,
        nothing is stored: 422 naming each bad field with its job's index
        (``loc`` like ``["body", "jobs", 3, "input", "seconds"]``), 409 if an
        idempotency key names a job of another workload or input.
        """
        items = [
            {"workload": j.workload, "input": j.input, **j.options()} for j in request_body.jobs
        ]
        submitted = await jm.submit_batch(items)
        if not any(s.created for s in submitted):
            response.status_code = 200
        return BatchOut(
            jobs=[JobOut.of(s.job) for s in submitted], created=[s.created for s in submitted]
        )

    @app.delete("/v1/jobs/{job_id}", response_model=JobOut, dependencies=auth, tags=["jobs"])
    async def cancel_job(job_id: str) -> JobOut:
        """Cancel a job: a queued job at once, a running one when its worker sees it.

        Running io work is cancelled, a cpu job's worker process is killed. A
        finished job is unchanged.
        """
        return JobOut.of(await jm.cancel(job_id))

    @app.post(
        "/v1/jobs/{job_id}/retry",
        response_model=JobOut,
        dependencies=auth,
        tags=["jobs"],
        responses=_CONFLICT,
    )
    async def retry_job(job_id: str) -> JobOut:
        """Put a failed or cancelled job back in the queue, as it is (same id); 409 otherwise."""
        return JobOut.of(await jm.retry(job_id))

    @app.post(
        "/v1/jobs/{job_id}/rerun",
        status_code=202,
        response_model=JobOut,
        dependencies=auth,
        tags=["jobs"],
        responses=_CONFLICT,
    )
    async def rerun_job(job_id: str, response: Response) -> JobOut:
        """Run a finished job again: a new job with its workload and input (``rerun_of``).

        409 while the job is queued or running.
        """
        job = await jm.rerun(job_id)
        response.headers["Location"] = job_location(job.id)
        return JobOut.of(job)


def _header_key(key: str | None) -> str | None:
    """An ``Idempotency-Key`` header as given (headers are Latin-1: no surrogates can come)."""
    if key is not None and "\x00" in key:
        raise _invalid(["header", "Idempotency-Key"], "must not hold a NUL character")
    return key


def _install_read_routes(app: FastAPI, jm: JobManager) -> None:
    auth = _auth_of(app)

    @app.get("/v1/jobs", response_model=JobList, dependencies=auth, tags=["jobs"])
    async def list_jobs(
        status: Annotated[
            str | None, Query(description="Comma-separated statuses, e.g. queued,running.")
        ] = None,
        workload: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        id_prefix: Annotated[
            str | None, Query(min_length=1, max_length=64, description="Jobs whose id starts so.")
        ] = None,
    ) -> JobList:
        """Jobs, newest first, a page at a time (``next_cursor`` older, ``prev_cursor`` newer)."""
        wanted = _parse_statuses(status)
        try:
            page = await jm.list(
                status=wanted, workload=workload, limit=limit, cursor=cursor, id_prefix=id_prefix
            )
        except ValueError as exc:
            raise _invalid(["query", "cursor"], str(exc)) from None
        return JobList(
            jobs=[JobOut.of(j) for j in page.jobs],
            next_cursor=page.next_cursor,
            prev_cursor=page.prev_cursor,
        )

    @app.get("/v1/jobs/{job_id}", response_model=JobOut, dependencies=auth, tags=["jobs"])
    async def get_job(job_id: str) -> JobOut:
        """One job."""
        return JobOut.of(await jm.get(job_id))

    @app.get(
        "/v1/jobs/{job_id}/result",
        response_model=ResultOut,
        dependencies=auth,
        tags=["jobs"],
        responses={409: {"model": ErrorOut, "description": "The job has not finished."}},
    )
    async def get_result(job_id: str) -> Any:
        """A finished job's result (or error and traceback); 409 while it is queued or running."""
        job = await jm.get(job_id)
        if not job.status.terminal:
            return JSONResponse(
                {"detail": f"job {job_id} is {job.status.value}; no result yet"},
                status_code=409,
                headers={"Retry-After": "1"},
            )
        return ResultOut(
            id=job.id,
            status=job.status.value,
            result=job.result,
            error=job.error,
            traceback=job.traceback,
        )

    @app.get(
        "/v1/jobs/{job_id}/attempts",
        response_model=list[AttemptOut],
        dependencies=auth,
        tags=["jobs"],
    )
    async def job_attempts(job_id: str) -> list[AttemptOut]:
        """Each start of the job and how it ended, with its error and traceback."""
        return [AttemptOut.of(a) for a in await jm.attempts(job_id)]

    @app.get(
        "/v1/jobs/{job_id}/events",
        dependencies=auth,
        tags=["jobs"],
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "Event stream."},
            204: {"description": "The job has finished and no events follow `after`."},
        },
    )
    async def job_events(
        job_id: str,
        after: Annotated[int, Query(ge=0, description="Send events after this seq.")] = 0,
        last_event_id: Annotated[str | None, Header(max_length=32)] = None,
        follow: Annotated[
            bool, Query(description="false: answer the events so far as JSON, at once.")
        ] = True,
    ) -> Response:
        """Server-sent events of a job (state changes and progress), until it finishes.

        With ``follow=false``: ``{"events": [...]}``, the events so far, as JSON.

        Each event has ``id`` (its seq: reconnect with ``Last-Event-ID``), ``event``
        (its kind) and JSON ``data``.
        """
        job = await jm.get(job_id)
        if last_event_id and last_event_id.isascii() and last_event_id.isdigit():
            after = max(after, int(last_event_id))
        if not follow:
            history = await jm.events(job_id, after)
            return JSONResponse({"events": [e.as_dict() for e in history]})
        if job.status.terminal and not await jm.events(job_id, after):
            # Nothing more will ever come: 204 tells an EventSource to stop reconnecting.
            return Response(status_code=204)
        return StreamingResponse(
            _event_stream(jm, job_id, after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/v1/workloads", response_model=list[WorkloadOut], dependencies=auth, tags=["jobs"])
    async def workloads() -> list[WorkloadOut]:
        """The workloads this server accepts, with their input schemas and job options."""
        return [WorkloadOut.model_validate(w.describe()) for w in jm.registry]


def _install_workflow_routes(app: FastAPI, jm: JobManager) -> None:
    auth = _auth_of(app)

    @app.get(
        "/v1/jobs/{job_id}/nodes",
        response_model=WorkflowNodesOut,
        dependencies=auth,
        tags=["jobs"],
    )
    async def job_nodes(job_id: str) -> WorkflowNodesOut:
        """A workflow job's nodes: status, attempts, times and error of each, in order."""
        job = await jm.get(job_id)
        nodes = await jm.workflow_nodes(job_id)
        shown = {
            "job_id": job.id,
            "status": job.status.value,
            "nodes": [n.as_dict() for n in nodes],
        }
        return WorkflowNodesOut.model_validate(shown)


def _install_service_routes(app: FastAPI, jm: JobManager, metrics: _Metrics) -> None:
    auth = _auth_of(app)

    @app.get("/v1/workers", response_model=WorkerList, dependencies=auth, tags=["service"])
    async def workers() -> WorkerList:
        """The workers sharing the store (live ones, and those silent for under an hour)."""
        state = await jm.queue_state()
        now = time.time()
        return WorkerList(
            workers=[WorkerOut.of(w, now) for w in state.workers],
            alive=state.alive,
            queued=state.queued,
            running=state.running,
            unserved=state.unserved,
        )

    @app.get("/healthz", tags=["service"])
    async def healthz() -> JSONResponse:
        """200 when the store answers and this process's worker works; 503 (saying why) if not."""
        try:
            counts = await asyncio.wait_for(jm.counts(), 5.0)
        except Exception as exc:
            return JSONResponse(
                {
                    "status": "unavailable",
                    "detail": f"job store: {describe_exception(exc)}",
                    "problems": [f"job store: {describe_exception(exc)}", *jm.problems()],
                },
                status_code=503,
            )
        problems = jm.problems()
        return JSONResponse(
            {
                "status": "unavailable" if problems else "ok",
                "problems": problems,
                "version": ambidex.__version__,
                "store": jm.store.dialect,
                "worker": jm.worker_id if jm.concurrency else None,
                "running_here": jm.running_here,
                "queued": counts[JobStatus.QUEUED],
                "running": counts[JobStatus.RUNNING],
            },
            status_code=503 if problems else 200,
        )

    @app.get("/metrics", dependencies=auth, tags=["service"], response_class=Response)
    async def prometheus() -> Response:
        """Prometheus metrics (names in ``ambidex.jobs._metrics``).

        Jobs by status and workload, what ran here (queue waits, run times,
        retries), the runtime's pools and limits, HTTP requests and latency.
        """
        for status, n in (await jm.counts()).items():
            metrics.jobs.labels(status.value).set(n)
        metrics.jobs_by_workload.clear()
        for (workload, status), n in (await jm.counts_by_workload()).items():
            metrics.jobs_by_workload.labels(workload, status.value).set(n)
        body = generate_latest(jm.metrics.registry) + generate_latest(metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def _parse_statuses(raw: str | None) -> list[JobStatus] | None:
    if not raw:
        return None
    wanted: list[JobStatus] = []
    for part in raw.split(","):
        name = part.strip()
        try:
            wanted.append(JobStatus(name))
        except ValueError:
            raise _invalid(
                ["query", "status"],
                f"unknown status {plain_text(name)!r}: expected any of "
                + ", ".join(s.value for s in JobStatus),
            ) from None
    return wanted


def _invalid(loc: list[str], msg: str) -> RequestValidationError:
    return RequestValidationError([{"loc": loc, "msg": msg, "type": "value_error"}])


async def _event_stream(jm: JobManager, job_id: str, after: int) -> AsyncIterator[bytes]:
    """Server-sent events: one per job event, a comment line every 15 s to keep proxies open."""
    events = cast(AsyncGenerator[JobEvent, None], jm.watch(job_id, after))
    next_event: asyncio.Task[Any] | None = None
    try:
        while True:
            if next_event is None:
                next_event = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({next_event}, timeout=_KEEPALIVE_S)
            if not done:
                yield b": keepalive\n\n"
                continue
            try:
                event = next_event.result()
            except (StopAsyncIteration, JobNotFoundError):
                return
            next_event = None
            data = json.dumps(event.as_dict(), separators=(",", ":"))
            yield f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n".encode()
    finally:
        if next_event is not None:
            next_event.cancel()
            with contextlib.suppress(BaseException):
                await next_event
        await events.aclose()


def _safe_errors(errors: Any) -> list[dict[str, Any]]:
    """Validation errors as the API answers them: where and what, never the value itself.

    The rejected value may be what no JSON answer can carry (NaN, infinity, a
    lone surrogate), and so may a key of it that appears in ``loc``.
    """
    safe = []
    for error in errors:
        loc = [p if isinstance(p, int) else plain_text(p) for p in error.get("loc", ())]
        safe.append(
            {
                "loc": loc,
                "msg": plain_text(error.get("msg", "")),
                "type": plain_text(error.get("type", "")),
            }
        )
    return safe


def _batch_refused(exc: JobBatchError) -> JSONResponse:
    """The answer to a refused batch: each bad field, with its job's index in ``loc``.

    422 when a job does not validate; 409 when every job refused has an
    idempotency key naming a job of another workload or input (the keys are
    checked in the store, only once every job validated). A 422's ``detail``
    lists the errors, as every 422's does; a 409's says what conflicts in
    words, as every 409's does, and ``errors`` lists them.
    """
    detail: list[dict[str, Any]] = []
    job_ids: dict[str, str | None] = {}
    for index, error in exc.failures:
        at: list[Any] = ["body", "jobs", index]
        if isinstance(error, JobInputError):
            detail += [{**e, "loc": [*at, "input", *e.get("loc", ())]} for e in error.errors]
        elif isinstance(error, JobOptionError):
            detail.append({"loc": [*at, error.option], "msg": str(error), "type": "value_error"})
        elif isinstance(error, UnknownWorkloadError):
            detail.append({"loc": [*at, "workload"], "msg": str(error), "type": "unknown_workload"})
        else:
            job_ids[str(index)] = getattr(getattr(error, "job", None), "id", None)
            detail.append({"loc": [*at, "idempotency_key"], "msg": str(error), "type": "conflict"})
    if len(job_ids) == len(exc.failures):  # as every 409: ``detail`` says it in words
        conflict = {"detail": plain_text(exc), "errors": _safe_errors(detail), "job_ids": job_ids}
        return JSONResponse(conflict, status_code=409)
    return JSONResponse(
        {"detail": _safe_errors(detail), "message": plain_text(exc)}, status_code=422
    )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(_r: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _safe_errors(exc.errors())}, status_code=422)

    @app.exception_handler(UnknownWorkloadError)
    async def unknown_workload(_r: Request, exc: UnknownWorkloadError) -> JSONResponse:
        return JSONResponse({"detail": plain_text(exc), "known": exc.known}, status_code=404)

    @app.exception_handler(JobNotFoundError)
    async def unknown_job(_r: Request, exc: JobNotFoundError) -> JSONResponse:
        return JSONResponse({"detail": plain_text(exc)}, status_code=404)

    @app.exception_handler(JobConflictError)
    async def conflict(_r: Request, exc: JobConflictError) -> JSONResponse:
        job = getattr(exc, "job", None)
        return JSONResponse(
            {"detail": plain_text(exc), "job_id": getattr(job, "id", None)}, status_code=409
        )

    @app.exception_handler(JobInputError)
    async def bad_input(request: Request, exc: JobInputError) -> JSONResponse:
        prefix = ["body"] if request.url.path.startswith("/v1/run/") else ["body", "input"]
        detail = _safe_errors({**e, "loc": prefix + list(e["loc"])} for e in exc.errors)
        return JSONResponse({"detail": detail, "message": plain_text(exc)}, status_code=422)

    @app.exception_handler(JobBatchError)
    async def bad_batch(_r: Request, exc: JobBatchError) -> JSONResponse:
        return _batch_refused(exc)

    @app.exception_handler(JobOptionError)
    async def bad_option(_r: Request, exc: JobOptionError) -> JSONResponse:
        detail = [{"loc": ["body", exc.option], "msg": plain_text(exc), "type": "value_error"}]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(JobServiceStoppedError)
    async def stopping(_r: Request, exc: JobServiceStoppedError) -> JSONResponse:
        return JSONResponse(
            {"detail": "the job service is shutting down; try again"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    async def store_failed(_r: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": f"the job store failed: {type(exc).__name__}; try again"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    app.add_exception_handler(SQLAlchemyError, store_failed)
    # The store's hot calls use the drivers themselves: sqlite3 on SQLite, psycopg
    # (its async connections) on PostgreSQL, whose errors are not SQLAlchemy's.
    app.add_exception_handler(sqlite3.Error, store_failed)
    with contextlib.suppress(ImportError):  # the postgres extra
        import psycopg

        app.add_exception_handler(psycopg.Error, store_failed)


def _install_request_metrics(app: FastAPI, metrics: _Metrics) -> None:
    app.add_middleware(_RequestMetrics, metrics=metrics)


class _RequestMetrics:
    """ASGI middleware counting answers and timing them (to the response start).

    Plain ASGI rather than ``@app.middleware("http")``: that wrapper runs every
    request through an extra task and memory stream, which costs more than the
    rest of a submit.
    """

    def __init__(self, app: ASGIApp, metrics: _Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # The labelled series, found once each: ``labels()`` costs ~5 µs a call.
        self._latency: dict[tuple[str, str], Any] = {}
        self._requests: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                key = (scope["method"], getattr(scope.get("route"), "path", "unmatched"))
                series = self._latency.get(key)
                if series is None:
                    series = self._latency[key] = self.metrics.latency.labels(*key)
                series.observe(time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            done = (scope["method"], route, status[0])
            counter = self._requests.get(done)
            if counter is None:
                counter = self._requests[done] = self.metrics.requests.labels(
                    scope["method"], route, str(status[0])
                )
            counter.inc()
