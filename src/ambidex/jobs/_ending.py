"""Why a job's attempt stopped (``StopReason``), and how it ended, before it is written."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from ambidex._job_model import JobStatus

__all__ = ["Ending", "StopReason"]


class StopReason(enum.StrEnum):
    """Why an attempt of a job stopped running on a worker.

    The first four end the attempt in the store, as ``status``: ``succeeded``,
    ``failed`` (the workload raised), ``timed_out`` (stored as ``failed``, with
    the error ``timed out after … s``) and ``cancelled``. A failed or timed-out
    attempt whose retry policy names its error is stored as ``retrying`` and
    runs again. The last two write nothing: the attempt is no longer this
    worker's to end.
    """

    SUCCEEDED = "succeeded"
    """The workload returned."""
    FAILED = "failed"
    """The workload raised (``SystemExit`` and the like included)."""
    TIMED_OUT = "timed_out"
    """It ran past its ``timeout_s`` and was stopped."""
    CANCELLED = "cancelled"
    """A user asked (``cancel``), here or through another process."""
    LEASE_LOST = "lease_lost"
    """The worker's lease on the job lapsed: whoever claimed it since decides."""
    SHUTDOWN = "shutdown"
    """The worker stopped; the job went back to the queue, unfinished."""

    @property
    def status(self) -> JobStatus | None:
        """The status the attempt is stored with (None: nothing is stored)."""
        return _STATUS.get(self)


_STATUS = {
    StopReason.SUCCEEDED: JobStatus.SUCCEEDED,
    StopReason.FAILED: JobStatus.FAILED,
    StopReason.TIMED_OUT: JobStatus.FAILED,
    StopReason.CANCELLED: JobStatus.CANCELLED,
}


@dataclass
class Ending:
    """How a job's attempt ended, before it is written."""

    reason: StopReason
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    exception: BaseException | None = None
    """What the workload raised (a timeout counts as ``TimeoutError``): retried if the
    job's retry policy names it."""

    @property
    def status(self) -> JobStatus:
        """The status written for it (every ``Ending`` is one that is written)."""
        status = self.reason.status
        assert status is not None, f"an attempt stopped as {self.reason} writes nothing"
        return status
