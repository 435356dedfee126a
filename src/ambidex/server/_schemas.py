"""The shapes of the HTTP API's requests and answers (they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ambidex.jobs import Job, JobEvent

__all__ = ["ErrorOut", "EventOut", "JobList", "JobOut", "ResultOut", "SubmitIn", "WorkloadOut"]

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class SubmitIn(BaseModel):
    """A job to run later."""

    model_config = ConfigDict(extra="forbid")

    workload: str = Field(min_length=1, max_length=200, description="A registered workload name.")
    input: dict[str, Any] = Field(
        default_factory=dict, description="The workload's input (see GET /v1/workloads)."
    )
    max_attempts: int | None = Field(
        default=None, ge=1, le=100, description="Starts allowed before a lost worker fails it."
    )
    timeout_s: float | None = Field(
        default=None, gt=0, le=7 * 24 * 3600, description="Stop the job after this long."
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
    attempts: int
    max_attempts: int
    timeout_s: float | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    worker: str | None
    cancel_requested: bool

    @classmethod
    def of(cls, job: Job) -> JobOut:
        """The API form of a stored job."""
        return cls.model_validate(job.as_dict())


class JobList(BaseModel):
    """A page of jobs, newest first."""

    jobs: list[JobOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null: last.")


class ResultOut(BaseModel):
    """A finished job's outcome."""

    id: str
    status: Status
    result: Any
    error: str | None


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


class WorkloadOut(BaseModel):
    """A workload the server can run."""

    name: str
    kind: str
    description: str
    max_attempts: int
    timeout_s: float | None
    input_schema: dict[str, Any]


class ErrorOut(BaseModel):
    """An error answer."""

    detail: Any
