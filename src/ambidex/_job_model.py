"""What a job is: its status, retry policy, stored record, and the events of its life.

These are the job service's wire types: the server sends them and ``ax.Client``
reads them back. They live here, below every package and beside nothing but the
standard library, so that ``import ambidex.client`` loads neither SQLAlchemy nor
the job store nor pydantic. ``ambidex.jobs`` re-exports the public ones.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ambidex._backoff import Backoff, retry_cannot_help

__all__ = [
    "NO_RETRY",
    "TERMINAL",
    "Attempt",
    "Job",
    "JobEvent",
    "JobStatus",
    "QueueState",
    "RetryPolicy",
    "WorkerInfo",
    "WorkflowNode",
    "iso",
]


class JobStatus(enum.Enum):
    """Where a job is in its life."""

    QUEUED = "queued"  # accepted and stored; waiting for a worker (and for its run_at)
    RUNNING = "running"  # claimed by a worker that holds its lease
    SUCCEEDED = "succeeded"  # finished; its result is stored
    FAILED = "failed"  # raised (retries used up), timed out, or lost its worker max_attempts times
    CANCELLED = "cancelled"  # cancelled before it could finish

    @property
    def terminal(self) -> bool:
        """True for the states a job never leaves (unless retried by request)."""
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


def _span(start: float | None, end: float | None) -> float | None:
    """Seconds from ``start`` to ``end``, never negative; None if either is None."""
    if start is None or end is None:
        return None
    return max(end - start, 0.0)


def iso(ts: float | None) -> str | None:
    """An epoch timestamp as an ISO 8601 UTC string (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_TYPE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
MAX_RETRIES = 1000
MAX_RETRY_NAMES = 32


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed job runs again, and after how long.

    A job whose workload raises an exception that ``on`` names (any
    ``Exception`` when ``on`` is None; a timeout counts as ``TimeoutError``)
    goes back to the queue up to ``retries`` times, each time after an
    exponential backoff with jitter: retry ``n`` waits between half and all of
    ``min(max_backoff_s, backoff_s * 2**(n - 1))``. Cancellation is never
    retried, nor is an error whose ``retryable`` attribute is False (an LLM
    client's configuration error: see ``ambidex._backoff.retry_cannot_help``).
    These retries are apart from ``max_attempts``, which bounds how
    often a job whose worker died is started again.

    Names in ``on`` are matched against the exception's class and its bases,
    by plain name (``ConnectionError``) or by qualified name
    (``httpx.ConnectError``).
    """

    retries: int = 0
    on: tuple[str, ...] | None = None
    backoff_s: float = 1.0
    max_backoff_s: float = 300.0

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int):
            raise ValueError(f"retries must be an integer, got {self.retries!r}")
        if not 0 <= self.retries <= MAX_RETRIES:
            raise ValueError(f"retries must be within 0..{MAX_RETRIES}, got {self.retries}")
        Backoff(self.backoff_s, self.max_backoff_s)  # checks both
        if self.backoff_s > 86400 or self.max_backoff_s > 86400:
            raise ValueError("retry backoff times must be at most a day (86400 s)")
        if self.on is not None:
            if len(self.on) > MAX_RETRY_NAMES:
                raise ValueError(f"retry_on names at most {MAX_RETRY_NAMES} exception types")
            for name in self.on:
                if not isinstance(name, str) or len(name) > 200 or not _TYPE_NAME.match(name):
                    raise ValueError(
                        f"retry_on: {name!r} is not an exception type name "
                        "(e.g. 'ConnectionError' or 'httpx.ConnectError')"
                    )

    @classmethod
    def of(
        cls,
        retries: int = 0,
        retry_on: Any = None,
        backoff_s: float = 1.0,
        max_backoff_s: float = 300.0,
    ) -> RetryPolicy:
        """A policy from what users pass: ``retry_on`` as types, names, or one of either.

        Raises:
            ValueError: a value out of range, or ``retry_on`` naming no exception type.
        """
        return cls(retries, type_names(retry_on), backoff_s, max_backoff_s)

    def matches(self, exc: BaseException) -> bool:
        """True when ``exc`` is of a type this policy retries.

        Never for an error that says another attempt cannot succeed (its
        ``retryable`` is False: an LLM client's configuration error, say).
        """
        if retry_cannot_help(exc):
            return False
        if self.on is None:
            return isinstance(exc, Exception)
        wanted = set(self.on)
        for klass in type(exc).__mro__:
            if klass.__name__ in wanted or f"{klass.__module__}.{klass.__qualname__}" in wanted:
                return True
        return False

    def delay_s(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1-based), with equal jitter."""
        return Backoff(self.backoff_s, self.max_backoff_s, jitter="equal").delay_s(retry)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (stored with the job, and the API's ``retry_*`` fields)."""
        return {
            "retries": self.retries,
            "retry_on": None if self.on is None else list(self.on),
            "retry_backoff_s": self.backoff_s,
            "retry_max_backoff_s": self.max_backoff_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RetryPolicy:
        """The policy ``as_dict`` wrote (an empty or missing one: no retries)."""
        if not data:
            return NO_RETRY
        on = data.get("retry_on")
        return cls(
            int(data.get("retries", 0)),
            None if on is None else tuple(on),
            float(data.get("retry_backoff_s", 1.0)),
            float(data.get("retry_max_backoff_s", 300.0)),
        )


NO_RETRY = RetryPolicy()
"""The policy of a job without retries (shared: a policy is immutable)."""


def type_names(value: Any) -> tuple[str, ...] | None:
    """Exception type names from types, names, or a sequence of either (None stays None).

    Raises:
        ValueError: something that is neither an exception type nor a name.
    """
    if value is None:
        return None
    items = [value] if isinstance(value, str | type) else list(value)
    names = []
    for item in items:
        if isinstance(item, type) and issubclass(item, BaseException):
            module = item.__module__
            names.append(
                item.__qualname__ if module == "builtins" else f"{module}.{item.__qualname__}"
            )
        elif isinstance(item, str):
            names.append(item)
        else:
            raise ValueError(f"retry_on: expected exception types or their names, got {item!r}")
    return tuple(names)


@dataclass(frozen=True)
class Job:
    """A job as stored. Timestamps are seconds since the epoch."""

    id: str
    workload: str
    input: Any
    status: JobStatus
    progress: float | None = None
    """Fraction done, 0..1, as last reported by the workload (None: never reported)."""
    message: str | None = None
    """The workload's last progress message."""
    result: Any = None
    error: str | None = None
    """Why the job failed (``"Type: message"``), or why its last attempt failed while it waits
    for a retry."""
    traceback: str | None = None
    """The traceback of the failure ``error`` describes (None for failures without one)."""
    attempts: int = 0
    """How many times a worker has started the job (retries after a failure included)."""
    max_attempts: int = 3
    """Starts whose worker died (``lost``) allowed before the job fails."""
    lost: int = 0
    """How many of its starts ended because their worker stopped renewing the lease."""
    timeout_s: float | None = None
    retry: RetryPolicy = field(default_factory=lambda: NO_RETRY)
    retried: int = 0
    """How many times the job was put back in the queue after a failure."""
    priority: int = 0
    """Higher runs first; equal priorities run oldest first."""
    run_at: float | None = None
    """Not started before this time (a delay, a scheduled time, or a retry's backoff)."""
    idempotency_key: str | None = None
    rerun_of: str | None = None
    """The job this one re-runs (same workload and input)."""
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    """The worker holding (or that last held) the job's lease."""
    lease_expires_at: float | None = None
    cancel_requested: bool = False
    seq: int = field(default=0, repr=False)
    trace_context: str | None = field(default=None, repr=False, compare=False)
    """The W3C trace context of the submit that made the job (JSON of its ``traceparent``
    and ``tracestate``), stored when tracing was on: each attempt's span continues that
    trace. Not part of the HTTP answer."""

    @property
    def duration_s(self) -> float | None:
        """How long the job's last attempt ran; None until the job has finished."""
        return _span(self.started_at, self.finished_at)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form the HTTP API returns."""
        return {
            "id": self.id,
            "workload": self.workload,
            "status": self.status.value,
            "progress": self.progress,
            "message": self.message,
            "input": self.input,
            "result": self.result,
            "error": self.error,
            "traceback": self.traceback,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "lost": self.lost,
            "timeout_s": self.timeout_s,
            **self.retry.as_dict(),
            "retried": self.retried,
            "priority": self.priority,
            "run_at": iso(self.run_at),
            "idempotency_key": self.idempotency_key,
            "rerun_of": self.rerun_of,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration_s": self.duration_s,
            "worker": self.worker,
            "cancel_requested": self.cancel_requested,
        }


@dataclass(frozen=True)
class JobEvent:
    """One thing that happened to a job.

    ``kind`` is one of ``submitted``, ``started``, ``progress``, ``retrying``
    (an attempt failed and the job waits for its next one), ``requeued`` (its
    worker stopped), ``cancel_requested``, ``retried`` (put back in the queue
    by request), or a terminal status (``succeeded``, ``failed``, ``cancelled``).
    """

    seq: int
    job_id: str
    kind: str
    at: float
    data: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """JSON form (the data of a server-sent event)."""
        return {
            "seq": self.seq,
            "job_id": self.job_id,
            "kind": self.kind,
            "at": iso(self.at),
            **self.data,
        }


@dataclass(frozen=True)
class Attempt:
    """One start of a job, and how it ended (read from its events)."""

    number: int
    worker: str | None
    started_at: float
    ended_at: float | None = None
    outcome: str | None = None
    """``succeeded``, ``failed``, ``cancelled``, ``retrying`` (failed, runs again),
    ``requeued`` (its worker stopped), or None while it runs."""
    error: str | None = None
    traceback: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form (``GET /v1/jobs/{id}/attempts``)."""
        return {
            "number": self.number,
            "worker": self.worker,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "duration_s": None if self.ended_at is None else self.ended_at - self.started_at,
            "outcome": self.outcome,
            "error": self.error,
            "traceback": self.traceback,
        }


_ENDINGS = frozenset({"succeeded", "failed", "cancelled", "retrying", "requeued"})


def attempts_of(events: list[JobEvent]) -> list[Attempt]:
    """Each start of a job and how it ended, from its events (oldest first)."""
    attempts: list[Attempt] = []
    open_: dict[str, Any] | None = None
    for event in events:
        if event.kind == "started":
            if open_ is not None:  # a start without an end: its worker vanished
                attempts.append(Attempt(**open_))
            open_ = {
                "number": int(event.data.get("attempt", len(attempts) + 1)),
                "worker": event.data.get("worker"),
                "started_at": event.at,
            }
        elif event.kind in _ENDINGS and open_ is not None:
            open_.update(
                ended_at=event.at,
                outcome=event.kind,
                error=event.data.get("error") or event.data.get("reason"),
                traceback=event.data.get("traceback"),
            )
            attempts.append(Attempt(**open_))
            open_ = None
    if open_ is not None:
        attempts.append(Attempt(**open_))
    return attempts


@dataclass(frozen=True)
class WorkerInfo:
    """A worker process as it last reported itself (``JobStore.workers``)."""

    id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    concurrency: int
    running: int
    """Jobs it was running at its last heartbeat."""
    workloads: list[str]
    lease_s: float
    version: str

    def alive(self, now: float) -> bool:
        """True while its last heartbeat is younger than its lease."""
        return now - self.heartbeat_at <= self.lease_s

    def as_dict(self, now: float) -> dict[str, Any]:
        """JSON form (``GET /v1/workers``)."""
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "started_at": iso(self.started_at),
            "heartbeat_at": iso(self.heartbeat_at),
            "heartbeat_age_s": max(now - self.heartbeat_at, 0.0),
            "alive": self.alive(now),
            "concurrency": self.concurrency,
            "running": self.running,
            "workloads": self.workloads,
            "lease_s": self.lease_s,
            "version": self.version,
        }


@dataclass(frozen=True)
class QueueState:
    """Whether anything consumes the queue: the workers against the jobs waiting for them."""

    workers: list[WorkerInfo]
    """Every worker that reported itself in the last hour, most recent heartbeat first."""
    alive: int
    """Workers whose heartbeat is younger than their lease."""
    queued: int
    running: int
    unserved: dict[str, int]
    """Queued jobs of each workload that no live worker takes (all of them when none is alive)."""

    @classmethod
    def of(
        cls, workers: list[WorkerInfo], counts: dict[tuple[str, JobStatus], int], now: float
    ) -> QueueState:
        """The state from the workers and the store's counts by workload and status."""
        alive = [w for w in workers if w.alive(now)]
        taken = {name for w in alive for name in w.workloads}
        queued = {wl: n for (wl, st), n in counts.items() if st is JobStatus.QUEUED and n}
        running = sum(n for (_, st), n in counts.items() if st is JobStatus.RUNNING)
        unserved = {wl: queued[wl] for wl in sorted(queued) if wl not in taken}
        return cls(workers, len(alive), sum(queued.values()), running, unserved)


@dataclass(frozen=True)
class WorkflowNode:
    """One node of a workflow job, as its workers recorded it (``GET /v1/jobs/{id}/nodes``).

    ``status`` is what the node's last row says: ``running`` (started, not
    finished), ``succeeded``, ``failed``, ``skipped``; or, for a node that has
    no row, ``pending`` while the job may still run it and ``cancelled`` once the
    job has ended; or ``interrupted``: it was running when its attempt of the job
    stopped (the worker died or lost its lease, or shut down), and runs again
    if the job does.
    """

    node: str
    status: str
    after: list[str] = field(default_factory=list)
    """The nodes it waits for (empty when the workflow is not registered where asked)."""
    attempts: int = 0
    """The node's own attempts (its retries) in the run that wrote the row."""
    job_attempt: int | None = None
    """The start of the job that wrote the row (a restored node keeps the first one's)."""
    worker: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None

    @property
    def duration_s(self) -> float | None:
        """How long the node ran (all its attempts), once it has finished."""
        return _span(self.started_at, self.finished_at)

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "node": self.node,
            "status": self.status,
            "after": self.after,
            "attempts": self.attempts,
            "job_attempt": self.job_attempt,
            "worker": self.worker,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration_s": self.duration_s,
            "error": self.error,
        }
