"""What a job is: its status, its stored record, and the events of its life."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["TERMINAL", "Job", "JobEvent", "JobStatus", "iso"]


class JobStatus(enum.Enum):
    """Where a job is in its life."""

    QUEUED = "queued"  # accepted and stored; waiting for a worker
    RUNNING = "running"  # claimed by a worker that holds its lease
    SUCCEEDED = "succeeded"  # finished; its result is stored
    FAILED = "failed"  # raised, timed out, or lost its worker max_attempts times
    CANCELLED = "cancelled"  # cancelled before it could finish

    @property
    def terminal(self) -> bool:
        """True for the states a job never leaves."""
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


def iso(ts: float | None) -> str | None:
    """An epoch timestamp as an ISO 8601 UTC string (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
    attempts: int = 0
    """How many times a worker has started the job."""
    max_attempts: int = 3
    timeout_s: float | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    """The worker holding (or that last held) the job's lease."""
    lease_expires_at: float | None = None
    cancel_requested: bool = False
    seq: int = field(default=0, repr=False)

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
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "timeout_s": self.timeout_s,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "worker": self.worker,
            "cancel_requested": self.cancel_requested,
        }


@dataclass(frozen=True)
class JobEvent:
    """One thing that happened to a job.

    ``kind`` is one of ``submitted``, ``started``, ``progress``, ``requeued``,
    ``cancel_requested``, or a terminal status (``succeeded``, ``failed``,
    ``cancelled``).
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
