"""The client's I/O-free half: what to send, how to read the answer, which error to raise.

``Client`` and ``AsyncClient`` (in ``_client``) are thin drivers over httpx:
they send the ``Call`` built here, hand the status and body back to it, and
feed the lines of an event stream to an ``EventFollower`` (in ``_stream``).
Everything that
decides something (paths, error mapping, timestamps, the SSE format,
reconnecting after a dropped stream, when a wait has run out) lives here
once, so the sync and the async face cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeGuard, TypeVar
from urllib.parse import quote

import httpx

from ambidex._job_errors import (
    JobBatchError,
    JobCancelledError,
    JobConflictError,
    JobConnectionError,
    JobError,
    JobFailedError,
    JobInputError,
    JobNotFinishedError,
    JobNotFoundError,
    JobOptionError,
    JobServiceError,
    JobWaitTimeoutError,
    UnknownWorkloadError,
)
from ambidex._job_model import (
    Attempt,
    Job,
    JobEvent,
    JobStatus,
    RetryPolicy,
    WorkerInfo,
    type_names,
)
from ambidex._urls import checked_http_url

__all__ = [
    "DEFAULT_URL",
    "Call",
    "JobConnectionError",
    "JobPage",
    "ProgressCallback",
    "SubmitOptions",
    "attempts_call",
    "batch_call",
    "cancel_call",
    "check_url",
    "client_headers",
    "get_call",
    "health_call",
    "list_call",
    "outcome",
    "parse_event",
    "parse_job",
    "progress_of",
    "rerun_call",
    "retry_call",
    "run_call",
    "submit_call",
    "unreachable",
    "waited",
    "workers_call",
    "workloads_call",
]

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8000"
STREAM_IDLE_S = 25.0
"""A stream silent this long is dead: the server sends a keepalive comment every 15 s."""
REOPEN_SLACK_S = 1.0
"""Reopen a stream when its read timeout would overshoot the wait's deadline by more."""
RECONNECT_BACKOFF_S = (0.1, 0.25, 0.5, 1.0, 2.0)
"""Pauses before each reconnect in a row; one more failure than this gives up."""
_TERMINAL_KINDS = frozenset(s.value for s in JobStatus if s.terminal)


class ProgressCallback(Protocol):
    """Called with a job's progress: ``fraction`` in 0..1 (or None) and a message (or None)."""

    def __call__(self, fraction: float | None, message: str | None, /) -> object: ...


@dataclass(frozen=True)
class JobPage:
    """One page of ``list``: jobs newest first, and the cursors of the pages around it."""

    jobs: list[Job]
    next_cursor: str | None
    """Pass as ``cursor=`` for the next (older) page; None on the last page."""
    prev_cursor: str | None = None
    """Pass as ``cursor=`` for the previous (newer) page; None on the newest page."""


@dataclass(frozen=True)
class SubmitOptions:
    """The options of a submit (see ``Client.submit``); None leaves the workload's value."""

    max_attempts: int | None = None
    timeout_s: float | None = None
    priority: int | None = None
    delay_s: float | None = None
    run_at: float | datetime | None = None
    idempotency_key: str | None = None
    retries: int | None = None
    retry_on: Any = None
    retry_backoff_s: float | None = None
    retry_max_backoff_s: float | None = None

    def body(self) -> dict[str, Any]:
        """The options as fields of a ``POST /v1/jobs`` body.

        Raises:
            ValueError: ``retry_on`` holds something that is not an exception type or name.
        """
        fields: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "retry_on":
                value = list(type_names(value) or ())
            elif name == "run_at":
                value = _run_at(value)
            fields[name] = value
        return fields


def _run_at(value: float | datetime) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("run_at: give a datetime with a time zone (e.g. UTC)")
        return value.isoformat()
    return datetime.fromtimestamp(float(value), UTC).isoformat()


# -- configuration ---------------------------------------------------------------------


def check_url(url: str) -> str:
    """The service's base URL without a trailing ``/``.

    Raises:
        ValueError: not an absolute http(s) URL with a host.
    """
    return checked_http_url(
        url, f"job service URL {url!r}", f"expected e.g. {DEFAULT_URL!r}", ValueError
    )


def client_headers(token: str | None) -> dict[str, str]:
    """The headers of every request: JSON, who is asking, and the bearer token if any."""
    import ambidex  # late: the package imports this module's package lazily

    headers = {"Accept": "application/json", "User-Agent": f"ambidex/{ambidex.__version__}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def unreachable(url: str, exc: httpx.RequestError) -> JobConnectionError:
    """The error for a request that got no answer (refused, reset, timed out)."""
    if isinstance(exc, httpx.TimeoutException):
        kind = {
            httpx.ConnectTimeout: "connecting",
            httpx.ReadTimeout: "waiting for the answer",
            httpx.WriteTimeout: "sending the request",
            httpx.PoolTimeout: "waiting for a free connection",
        }.get(type(exc), "the request")
        return JobConnectionError(url, f"timed out {kind}")
    reason = str(exc) or type(exc).__name__
    return JobConnectionError(url, reason)


# -- requests and answers --------------------------------------------------------------


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request to the service, and how to turn its answer into a value or an error."""

    method: str
    path: str
    read: Callable[[Any], T]
    """Makes the value from the decoded JSON of a 2xx answer."""
    params: Mapping[str, str | int | float] | None = None
    json: Any = None
    headers: Mapping[str, str] | None = None
    timeout_s: float | None = None
    """Overrides the client's timeout for this request (None: the client's)."""
    job_id: str | None = None
    """The job the request is about: a 404 then means it does not exist."""
    workload: str | None = None
    """The workload the request names: a 404 lists the known ones, a 422 names bad fields."""
    input_loc: tuple[str, ...] = ()
    """Where the server puts the input in a 422's ``loc`` (removed from each error)."""
    batch: tuple[str, ...] | None = None
    """Each job's workload, for a batch submit: a 409 or 422 naming jobs is a ``JobBatchError``."""

    @property
    def route(self) -> str:
        """The route template of the request (``/v1/jobs/{job_id}``): a low-cardinality name."""
        path = self.path
        if self.job_id is not None:
            path = path.replace(_job_path(self.job_id), "/v1/jobs/{job_id}", 1)
        if self.workload is not None and path.startswith("/v1/run/"):
            path = "/v1/run/{workload}"
        return path

    def request_options(self) -> dict[str, Any]:
        """Keyword arguments of ``httpx.Client.build_request`` (and the async one)."""
        options: dict[str, Any] = {"method": self.method, "url": self.path}
        if self.params:
            options["params"] = dict(self.params)
        if self.json is not None:
            options["json"] = self.json
        if self.headers:
            options["headers"] = dict(self.headers)
        if self.timeout_s is not None:
            options["timeout"] = self.timeout_s
        return options

    def answer(self, status: int, content: bytes) -> T:
        """The value of a 2xx answer.

        Raises:
            JobError: the job error the answer stands for (see ``error_for``).
        """
        data = _decode(content)
        if status >= 400:
            raise self.error_for(status, data)
        try:
            return self.read(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise JobServiceError(
                status, f"unexpected answer to {self.method} {self.path}: {exc!r}"
            ) from None

    def error_for(self, status: int, data: Any) -> JobError:
        """The error an HTTP error answer stands for.

        404 naming known workloads: ``UnknownWorkloadError``; 404 about a job:
        ``JobNotFoundError``; 409: ``JobConflictError``; 422 about the input of
        a run or submit: ``JobInputError`` (``loc`` relative to the input), about
        one of its options: ``JobOptionError``; anything else: ``JobServiceError``
        with the server's detail.
        """
        detail = data.get("detail") if isinstance(data, dict) else data
        known = data.get("known") if isinstance(data, dict) else None
        if self.batch is not None and status in (409, 422):
            errors = data.get("errors", detail) if isinstance(data, dict) else detail
            refused = _batch_error(self.batch, errors)
            if refused is not None:
                return refused
        if status == 404 and self.workload is not None and isinstance(known, list):
            return UnknownWorkloadError(self.workload, [str(k) for k in known])
        if status == 404 and self.job_id is not None and detail not in (None, "", "Not Found"):
            return JobNotFoundError(self.job_id)
        if status == 409:
            return JobConflictError(_describe(detail), None)
        if status == 422 and self.workload is not None and _body_errors(detail):
            option = _option_error(detail, self.input_loc)
            if option is not None:
                return option
            return JobInputError(self.workload, [self._input_error(e) for e in detail])
        return JobServiceError(status, f"{_describe(detail)} ({self.method} {self.path})")

    def _input_error(self, error: dict[str, Any]) -> dict[str, Any]:
        loc = list(error.get("loc", []))
        for part in self.input_loc:
            if not loc or loc[0] != part:
                break
            loc = loc[1:]
        return {"loc": loc, "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))}


def _batch_error(workloads: tuple[str, ...], detail: Any) -> JobBatchError | None:
    """The ``JobBatchError`` of a refused batch: each job's own error, by its index.

    None when an error is not about one job (the batch as a whole, say too many jobs).
    """
    if not isinstance(detail, list) or not detail:
        return None
    by_index: dict[int, list[tuple[list[Any], str, str]]] = {}
    for error in detail:
        loc = list(error.get("loc", [])) if isinstance(error, dict) else []
        index = loc[2] if len(loc) >= 4 and loc[:2] == ["body", "jobs"] else None
        if not isinstance(index, int) or not 0 <= index < len(workloads):
            return None
        assert isinstance(error, dict)
        by_index.setdefault(index, []).append(
            (loc[3:], str(error.get("msg", "")), str(error.get("type", "")))
        )
    failures: list[tuple[int, JobError]] = []
    for index in sorted(by_index):
        errors = by_index[index]
        workload = workloads[index]
        inputs = [
            {"loc": loc[1:], "msg": m, "type": t} for loc, m, t in errors if loc[0] == "input"
        ]
        where, msg, kind = errors[0]
        if kind == "conflict":
            failures.append((index, JobConflictError(msg, None)))
        elif kind == "unknown_workload":
            failures.append((index, UnknownWorkloadError(workload)))
        elif inputs:
            failures.append((index, JobInputError(workload, inputs)))
        else:
            failures.append((index, JobOptionError(str(where[0]), f"{where[0]}: {msg}")))
    return JobBatchError(failures)


def _decode(content: bytes) -> Any:
    if not content:
        return None
    try:
        return json.loads(content)
    except ValueError:
        text = content.decode("utf-8", "replace").strip()
        return text if len(text) <= 300 else text[:300] + "..."


def _body_errors(detail: Any) -> TypeGuard[list[dict[str, Any]]]:
    """True for validation errors that are all about the request body (the input)."""
    return (
        isinstance(detail, list)
        and bool(detail)
        and all(isinstance(e, dict) and list(e.get("loc", []))[:1] == ["body"] for e in detail)
    )


def _option_error(
    errors: list[dict[str, Any]], input_loc: tuple[str, ...]
) -> JobOptionError | None:
    """A ``JobOptionError`` when the 422 is about a submit's option rather than its input."""
    for error in errors:
        loc = [str(p) for p in error.get("loc", [])]
        if len(input_loc) > 1 and len(loc) >= 2 and loc[:2] != list(input_loc[:2]):
            return JobOptionError(loc[1], f"{loc[1]}: {error.get('msg', '')}")
    return None


def _describe(detail: Any) -> str:
    if isinstance(detail, list):
        parts = []
        for e in detail:
            if isinstance(e, dict):
                loc = ".".join(str(p) for p in e.get("loc", []))
                parts.append(f"{loc}: {e.get('msg', '')}" if loc else str(e.get("msg", "")))
            else:
                parts.append(str(e))
        return "; ".join(parts) or "invalid request"
    if detail is None or detail == "":
        return "no detail given"
    return str(detail)


def _timestamp(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value)).timestamp()


def parse_job(data: Any) -> Job:
    """A ``Job`` from the API's JSON (ISO timestamps back to epoch seconds, ms precision)."""
    return Job(
        id=str(data["id"]),
        workload=str(data["workload"]),
        input=data.get("input"),
        status=JobStatus(data["status"]),
        progress=data.get("progress"),
        message=data.get("message"),
        result=data.get("result"),
        error=data.get("error"),
        traceback=data.get("traceback"),
        attempts=int(data.get("attempts", 0)),
        max_attempts=int(data.get("max_attempts", 0)),
        lost=int(data.get("lost", 0)),
        timeout_s=data.get("timeout_s"),
        retry=RetryPolicy.from_dict(data),
        retried=int(data.get("retried", 0)),
        priority=int(data.get("priority", 0)),
        run_at=_timestamp(data.get("run_at")),
        idempotency_key=data.get("idempotency_key"),
        rerun_of=data.get("rerun_of"),
        created_at=_timestamp(data.get("created_at")) or 0.0,
        started_at=_timestamp(data.get("started_at")),
        finished_at=_timestamp(data.get("finished_at")),
        worker=data.get("worker"),
        cancel_requested=bool(data.get("cancel_requested", False)),
    )


def parse_event(data: Any) -> JobEvent:
    """A ``JobEvent`` from the JSON data of a server-sent event."""
    fields = dict(data)
    seq = int(fields.pop("seq"))
    job_id = str(fields.pop("job_id"))
    kind = str(fields.pop("kind"))
    at = _timestamp(fields.pop("at", None)) or 0.0
    return JobEvent(seq=seq, job_id=job_id, kind=kind, at=at, data=fields)


def _none(_data: Any) -> None:
    return None


def _job_path(job_id: str) -> str:
    return f"/v1/jobs/{quote(job_id, safe='')}"


def _page(data: Any) -> JobPage:
    return JobPage(
        [parse_job(j) for j in data["jobs"]], data.get("next_cursor"), data.get("prev_cursor")
    )


def parse_attempt(data: Any) -> Attempt:
    """An ``Attempt`` from the API's JSON."""
    return Attempt(
        number=int(data["number"]),
        worker=data.get("worker"),
        started_at=_timestamp(data.get("started_at")) or 0.0,
        ended_at=_timestamp(data.get("ended_at")),
        outcome=data.get("outcome"),
        error=data.get("error"),
        traceback=data.get("traceback"),
    )


def parse_worker(data: Any) -> WorkerInfo:
    """A ``WorkerInfo`` from the API's JSON."""
    return WorkerInfo(
        id=str(data["id"]),
        host=str(data["host"]),
        pid=int(data["pid"]),
        started_at=_timestamp(data.get("started_at")) or 0.0,
        heartbeat_at=_timestamp(data.get("heartbeat_at")) or 0.0,
        concurrency=int(data["concurrency"]),
        running=int(data["running"]),
        workloads=[str(w) for w in data.get("workloads", [])],
        lease_s=float(data["lease_s"]),
        version=str(data.get("version", "")),
    )


def _statuses(status: JobStatus | str | Iterable[JobStatus | str] | None) -> str | None:
    if status is None:
        return None
    items = [status] if isinstance(status, JobStatus | str) else list(status)
    names: list[str] = []
    for item in items:
        for name in item.split(",") if isinstance(item, str) else [item.value]:
            try:
                names.append(JobStatus(name.strip()).value)
            except ValueError:
                known = ", ".join(s.value for s in JobStatus)
                raise ValueError(f"unknown job status {name!r}: expected any of {known}") from None
    return ",".join(names) or None


def submit_call(workload: str, input: Any, options: SubmitOptions) -> Call[Job]:
    """``POST /v1/jobs``: store a job, answered 202 at once.

    The answer is 200 when the idempotency key named an existing job.

    Raises:
        ValueError: an option that cannot be sent (see ``SubmitOptions.body``).
    """
    body: dict[str, Any] = {"workload": workload, "input": {} if input is None else input}
    body.update(options.body())
    return Call(
        "POST", "/v1/jobs", parse_job, json=body, workload=workload, input_loc=("body", "input")
    )


_BATCH_KEYS = frozenset({"workload", "input", *SubmitOptions.__dataclass_fields__})


def batch_call(jobs: Sequence[Mapping[str, Any]]) -> Call[list[Job]]:
    """``POST /v1/jobs:batch``: store several jobs in one transaction, all or none.

    Each job is a mapping of ``workload``, ``input`` and ``submit``'s options.

    Raises:
        TypeError: ``jobs`` is not a sequence of mappings each naming a workload.
        ValueError: a job with an option ``submit`` does not have, or one that
            cannot be sent (see ``SubmitOptions.body``).
    """
    if isinstance(jobs, str | bytes | Mapping) or not isinstance(jobs, Sequence):
        raise TypeError("jobs must be a list of mappings (workload, input, options)")
    bodies: list[dict[str, Any]] = []
    for index, job in enumerate(jobs):
        if not isinstance(job, Mapping) or not isinstance(job.get("workload"), str):
            raise TypeError(f"job {index} of the batch: a mapping with a workload name")
        unknown = sorted(str(k) for k in job if k not in _BATCH_KEYS)
        if unknown:
            raise ValueError(f"job {index} of the batch: unknown option {unknown[0][:80]!r}")
        options = SubmitOptions(**{k: v for k, v in job.items() if k not in ("workload", "input")})
        value = job.get("input")
        bodies.append(
            {"workload": job["workload"], "input": {} if value is None else value, **options.body()}
        )
    return Call(
        "POST",
        "/v1/jobs:batch",
        _batch_jobs,
        json={"jobs": bodies},
        batch=tuple(str(b["workload"]) for b in bodies),
    )


def _batch_jobs(data: Any) -> list[Job]:
    return [parse_job(j) for j in data["jobs"]]


def run_call(
    workload: str,
    input: Any,
    wait_s: float,
    client_timeout_s: float,
    idempotency_key: str | None = None,
) -> Call[Job]:
    """``POST /v1/run/{workload}``: run and wait up to ``wait_s`` (200 done, 202 not yet)."""
    if not wait_s >= 0:
        raise ValueError(f"wait_s must be >= 0, got {wait_s!r}")
    return Call(
        "POST",
        f"/v1/run/{quote(workload, safe='')}",
        parse_job,
        params={"wait_s": wait_s},
        json={} if input is None else input,
        headers=None if idempotency_key is None else {"Idempotency-Key": idempotency_key},
        # the server holds the answer up to wait_s: the read timeout starts after that
        timeout_s=wait_s + client_timeout_s,
        workload=workload,
        input_loc=("body",),
    )


def get_call(job_id: str) -> Call[Job]:
    """``GET /v1/jobs/{id}``."""
    return Call("GET", _job_path(job_id), parse_job, job_id=job_id)


def cancel_call(job_id: str) -> Call[Job]:
    """``DELETE /v1/jobs/{id}``: the job as it is after the request."""
    return Call("DELETE", _job_path(job_id), parse_job, job_id=job_id)


def retry_call(job_id: str) -> Call[Job]:
    """``POST /v1/jobs/{id}/retry``: a failed or cancelled job back in the queue (409 if not)."""
    return Call("POST", _job_path(job_id) + "/retry", parse_job, job_id=job_id)


def rerun_call(job_id: str) -> Call[Job]:
    """``POST /v1/jobs/{id}/rerun``: a new job with a finished job's input (409 if running)."""
    return Call("POST", _job_path(job_id) + "/rerun", parse_job, job_id=job_id)


def attempts_call(job_id: str) -> Call[list[Attempt]]:
    """``GET /v1/jobs/{id}/attempts``: each start of the job and how it ended."""
    return Call(
        "GET",
        _job_path(job_id) + "/attempts",
        lambda data: [parse_attempt(a) for a in data],
        job_id=job_id,
    )


def workers_call() -> Call[dict[str, Any]]:
    """``GET /v1/workers``: ``{"workers": [WorkerInfo...], "alive", "queued", "running"}``."""

    def read(data: Any) -> dict[str, Any]:
        return {**data, "workers": [parse_worker(w) for w in data["workers"]]}

    return Call("GET", "/v1/workers", read)


def list_call(
    status: JobStatus | str | Iterable[JobStatus | str] | None,
    workload: str | None,
    limit: int,
    cursor: str | None,
    id_prefix: str | None = None,
) -> Call[JobPage]:
    """``GET /v1/jobs``: one page, newest first.

    Raises:
        ValueError: a status that is not a ``JobStatus`` value.
    """
    params: dict[str, str | int | float] = {"limit": limit}
    wanted = _statuses(status)
    if wanted:
        params["status"] = wanted
    if workload:
        params["workload"] = workload
    if cursor:
        params["cursor"] = cursor
    if id_prefix:
        params["id_prefix"] = id_prefix
    return Call("GET", "/v1/jobs", _page, params=params)


def history_call(job_id: str, after: int) -> Call[list[JobEvent]]:
    """``GET /v1/jobs/{id}/events?follow=false``: the events so far, at once."""
    return Call(
        "GET",
        _job_path(job_id) + "/events",
        lambda data: [parse_event(e) for e in data["events"]],
        params={"follow": "false", "after": after},
        job_id=job_id,
    )


def workloads_call() -> Call[list[dict[str, Any]]]:
    """``GET /v1/workloads``."""
    return Call("GET", "/v1/workloads", lambda data: [dict(w) for w in data])


def health_call() -> Call[dict[str, Any]]:
    """``GET /healthz`` (a 503 raises ``JobServiceError`` naming the store's problem)."""
    return Call("GET", "/healthz", dict)


# -- outcomes --------------------------------------------------------------------------


def _name(job: Job) -> str:
    return f"job {job.id} ({job.workload})"


def outcome(job: Job) -> Any:
    """The result of a finished job.

    Raises:
        JobFailedError: the job failed (``.job.error`` says why).
        JobCancelledError: the job was cancelled.
        JobNotFinishedError: the job is still queued or running.
    """
    if job.status is JobStatus.SUCCEEDED:
        return job.result
    if job.status is JobStatus.FAILED:
        raise JobFailedError(f"{_name(job)} failed: {job.error}", job)
    if job.status is JobStatus.CANCELLED:
        raise JobCancelledError(f"{_name(job)} was cancelled", job)
    raise JobNotFinishedError(f"{_name(job)} is {job.status.value}; it has no result yet", job)


def waited(job: Job, timeout_s: float | None) -> Job:
    """``job`` if it has finished.

    Raises:
        JobWaitTimeoutError: it has not (the job goes on running).
    """
    if job.status.terminal:
        return job
    within = "" if timeout_s is None else f" within {timeout_s:g} s"
    raise JobWaitTimeoutError(
        f"{_name(job)} did not finish{within}: it is still {job.status.value} (and carries on)",
        job,
    )


def progress_of(event: JobEvent) -> tuple[float | None, str | None] | None:
    """``(fraction, message)`` of a progress event; None for other events."""
    if event.kind != "progress":
        return None
    fraction = event.data.get("progress")
    message = event.data.get("message")
    return (
        None if fraction is None else float(fraction),
        None if message is None else str(message),
    )
