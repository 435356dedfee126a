"""The shapes of the HTTP API's requests and answers (they make the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ambidex.jobs import MAX_BATCH_JOBS, Attempt, Job, JobEvent, WorkerInfo, WorkflowNode

__all__ = [
    "AttemptOut",
    "BatchIn",
    "BatchOut",
    "ErrorOut",
    "EventOut",
    "JobList",
    "JobOut",
    "ResultOut",
    "SubmitIn",
    "WorkerList",
    "WorkerOut",
    "WorkflowNodeOut",
    "WorkflowNodesOut",
    "WorkloadOut",
]

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
_TYPE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"


# No NUL (a lone surrogate never gets this far: pydantic refuses it as a string).
_NO_NUL = r"^[^\x00]*$"


class SubmitIn(BaseModel):
    """A job to run later; every option left out takes the workload's value."""

    model_config = ConfigDict(extra="forbid")

    workload: str = Field(
        min_length=1, max_length=200, pattern=_NO_NUL, description="A registered workload name."
    )
    input: dict[str, Any] = Field(
        default_factory=dict, description="The workload's input (see GET /v1/workloads)."
    )
    max_attempts: int | None = Field(
        default=None,
        ge=1,
        le=100,
        strict=True,
        description="Starts allowed before a lost worker fails it.",
    )
    timeout_s: float | None = Field(
        default=None,
        gt=0,
        le=7 * 24 * 3600,
        allow_inf_nan=False,
        description="Stop the job after this long.",
    )
    priority: int | None = Field(
        default=None, ge=-1_000_000, le=1_000_000, strict=True, description="Higher starts first."
    )
    delay_s: float | None = Field(
        default=None,
        ge=0,
        le=366 * 86400,
        allow_inf_nan=False,
        description="Start no sooner than this from now.",
    )
    run_at: datetime | None = Field(
        default=None,
        description="Start no sooner than this time (ISO 8601 with a zone, or epoch seconds).",
    )
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=_NO_NUL,
        description="A job submitted with this key before is answered (200) instead of a new one.",
    )
    retries: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        strict=True,
        description="Failures retried before the job fails.",
    )
    retry_on: list[str] | None = Field(
        default=None,
        max_length=32,
        description="Exception type names retried (default: any), e.g. ['ConnectionError'].",
    )
    retry_backoff_s: float | None = Field(
        default=None,
        ge=0,
        le=86400,
        allow_inf_nan=False,
        description="The first retry's wait (then doubling).",
    )
    retry_max_backoff_s: float | None = Field(
        default=None,
        ge=0,
        le=86400,
        allow_inf_nan=False,
        description="The cap of one retry's wait.",
    )

    @field_validator("retry_on")
    @classmethod
    def _type_names(cls, value: list[str] | None) -> list[str] | None:
        import re

        for name in value or []:
            if len(name) > 200 or not re.match(_TYPE_NAME, name):
                raise ValueError(
                    "retry_on holds exception type names, e.g. 'ConnectionError' or "
                    "'httpx.ConnectError'"
                )
        return value

    @field_validator("run_at", mode="before")
    @classmethod
    def _epoch_seconds(cls, value: Any) -> Any:
        # pydantic reads a number above 2e10 as milliseconds: epoch seconds are asked for
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 2e10:
            raise ValueError("run_at is epoch seconds (this looks like milliseconds)")
        return value

    @field_validator("run_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("run_at needs a time zone, e.g. 2030-01-01T12:00:00Z")
        return value

    def options(self) -> dict[str, Any]:
        """The job options given, as ``JobManager.submit`` takes them."""
        return self.model_dump(exclude={"workload", "input"}, exclude_none=True)


class BatchIn(BaseModel):
    """Jobs to store together: all of them, or none."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[SubmitIn] = Field(
        max_length=MAX_BATCH_JOBS,
        description=f"Up to {MAX_BATCH_JOBS:,} jobs, each as the body of POST /v1/jobs.",
    )


class JobOut(BaseModel):
    """A job as stored."""

    id: str
    workload: str
    status: Status
    progress: float | None
    message: str | None
    input: Any
    result: Any
    error: str | None
    traceback: str | None
    attempts: int
    max_attempts: int
    lost: int
    timeout_s: float | None
    retries: int
    retry_on: list[str] | None
    retry_backoff_s: float
    retry_max_backoff_s: float
    retried: int
    priority: int
    run_at: str | None
    idempotency_key: str | None
    rerun_of: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    duration_s: float | None
    worker: str | None
    cancel_requested: bool

    @classmethod
    def of(cls, job: Job) -> JobOut:
        """The API form of a stored job."""
        return cls.model_validate(job.as_dict())


class BatchOut(BaseModel):
    """The jobs of a batch, in its order."""

    jobs: list[JobOut]
    created: list[bool] = Field(
        description="For each job: false when its idempotency key named an existing job."
    )


class JobList(BaseModel):
    """A page of jobs, newest first."""

    jobs: list[JobOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for older jobs; null: last page.")
    prev_cursor: str | None = Field(
        default=None, description="Pass as ?cursor= for newer jobs; null: the newest page."
    )


class ResultOut(BaseModel):
    """A finished job's outcome."""

    id: str
    status: Status
    result: Any
    error: str | None
    traceback: str | None = None


class AttemptOut(BaseModel):
    """One start of a job, and how it ended."""

    number: int
    worker: str | None
    started_at: str | None
    ended_at: str | None
    duration_s: float | None
    outcome: str | None
    error: str | None
    traceback: str | None

    @classmethod
    def of(cls, attempt: Attempt) -> AttemptOut:
        """The API form of an attempt."""
        return cls.model_validate(attempt.as_dict())


class WorkflowNodeOut(BaseModel):
    """One node of a workflow job, as its workers recorded it."""

    node: str
    status: str = Field(
        description="pending, running, succeeded, failed, skipped; interrupted (running when "
        "its attempt of the job stopped: it runs again); cancelled (the job ended first)."
    )
    after: list[str] = Field(description="The nodes it waits for.")
    attempts: int = Field(description="The node's own attempts (its retries).")
    job_attempt: int | None = Field(description="The start of the job that recorded it.")
    worker: str | None
    started_at: str | None
    finished_at: str | None
    duration_s: float | None
    error: str | None

    @classmethod
    def of(cls, node: WorkflowNode) -> WorkflowNodeOut:
        """The API form of a node."""
        return cls.model_validate(node.as_dict())


class WorkflowNodesOut(BaseModel):
    """The nodes of a workflow job (empty for a job that is not a workflow's)."""

    job_id: str
    status: Status = Field(description="The job's status.")
    nodes: list[WorkflowNodeOut]


class EventOut(BaseModel):
    """One event of a job (the data of a server-sent event)."""

    seq: int
    job_id: str
    kind: str
    at: str | None

    @classmethod
    def payload(cls, event: JobEvent) -> dict[str, Any]:
        """The JSON sent for an event."""
        return event.as_dict()


class WorkerOut(BaseModel):
    """A worker process, as its last heartbeat described it."""

    id: str
    host: str
    pid: int
    started_at: str | None
    heartbeat_at: str | None
    heartbeat_age_s: float
    alive: bool
    concurrency: int
    running: int
    workloads: list[str]
    lease_s: float
    version: str

    @classmethod
    def of(cls, info: WorkerInfo, now: float) -> WorkerOut:
        """The API form of a worker."""
        return cls.model_validate(info.as_dict(now))


class WorkerList(BaseModel):
    """The workers of the store, and whether anything consumes the queue."""

    workers: list[WorkerOut]
    alive: int = Field(description="Workers whose heartbeat is younger than their lease.")
    queued: int
    running: int
    unserved: dict[str, int] = Field(
        description="Queued jobs of each workload no live worker takes (all when none is alive)."
    )


class WorkloadOut(BaseModel):
    """A workload the server can run."""

    name: str
    kind: str
    description: str
    max_attempts: int
    timeout_s: float | None
    retries: int
    retry_on: list[str] | None
    retry_backoff_s: float
    retry_max_backoff_s: float
    priority: int
    concurrency: int | None
    schedules: list[dict[str, str]]
    input_schema: dict[str, Any]


class ErrorOut(BaseModel):
    """An error answer."""

    detail: Any
