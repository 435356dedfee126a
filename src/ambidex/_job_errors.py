"""Errors of the job service (all are ``AmbidexError``s), raised by it and by its clients.

Like the wire types (``ambidex._job_model``) they sit below every package, so the
client raises them without importing the service; ``ambidex.jobs`` re-exports them.

::

    JobError                       base of every job-service error
    ├── UnknownWorkloadError       (also a KeyError) no workload of that name is registered
    ├── JobInputError              (also a ValueError) the input does not fit the workload's schema
    ├── JobOptionError             (also a ValueError) an option of a submit is out of range
    ├── JobNotFoundError           (also a KeyError) no job with that id
    ├── JobFailedError             the job failed; ``.job`` holds its record and error
    ├── JobCancelledError          the job was cancelled
    ├── JobNotFinishedError        a result was asked of a job that has not finished
    ├── JobBatchError              a batch submit refused some of its jobs, so stored none;
    │                              ``failures`` names each (its index and its own error)
    ├── JobConflictError           the job's state does not allow the request (a retry of a
    │                              running job, an idempotency key reused with another input)
    ├── JobWaitTimeoutError        (also a TimeoutError) waiting for a job took too long
    └── JobServiceError            the server answered with an error (``.status_code``)
        └── JobConnectionError     no answer at all: the service is down or timed out
"""

from __future__ import annotations

from typing import Any

from ambidex.exceptions import AmbidexError

__all__ = [
    "JobBatchError",
    "JobCancelledError",
    "JobConflictError",
    "JobConnectionError",
    "JobError",
    "JobFailedError",
    "JobInputError",
    "JobNotFinishedError",
    "JobNotFoundError",
    "JobOptionError",
    "JobServiceError",
    "JobServiceStoppedError",
    "JobWaitTimeoutError",
    "UnknownWorkloadError",
]


class JobError(AmbidexError):
    """Base class of the job service's errors."""


def _clipped(text: str, max_chars: int = 80) -> str:
    """``text`` for a message: cut to ``max_chars`` (an error never carries a huge value)."""
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


class UnknownWorkloadError(JobError, KeyError):
    """No workload of this name is registered where the job was submitted."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        self.name = name
        self.known = known or []
        hint = f"; known workloads: {', '.join(sorted(self.known))}" if self.known else ""
        super().__init__(f"unknown workload {_clipped(name)!r}{hint}")

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.known))


class JobInputError(JobError, ValueError):
    """The input does not fit the workload's schema; ``errors`` names each field."""

    def __init__(self, workload: str, errors: list[dict[str, Any]]) -> None:
        self.workload = workload
        self.errors = errors
        lines = [f"{_loc(e.get('loc', ()))}: {e.get('msg', '')}" for e in errors]
        super().__init__(f"invalid input for workload {workload!r}: " + "; ".join(lines))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.workload, self.errors))


class JobOptionError(JobError, ValueError):
    """An option of a submit (``priority``, ``delay_s``, ``retries``...) is out of range.

    ``option`` names it; the message says what was expected.
    """

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.option, self.args[0]))


def _loc(loc: Any) -> str:
    parts = [str(p) for p in loc] if isinstance(loc, list | tuple) else [str(loc)]
    return ".".join(parts) or "(input)"


class JobNotFoundError(JobError, KeyError):
    """There is no job with this id (it never existed, or was pruned)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {_clipped(job_id)!r}")

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.job_id,))


class _JobOutcomeError(JobError):
    def __init__(self, message: str, job: Any = None) -> None:
        self.job = job
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.args[0], self.job))


class JobFailedError(_JobOutcomeError):
    """The job failed; ``job`` is its record (``job.error`` says why)."""


class JobCancelledError(_JobOutcomeError):
    """The job was cancelled before it finished."""


class JobNotFinishedError(_JobOutcomeError):
    """The job is still queued or running."""


class JobConflictError(_JobOutcomeError):
    """The job is not in a state that allows the request; ``job`` is its record.

    Raised for a retry of a job that has not failed, a re-run of a job that
    has not finished, and an idempotency key that names a job of another
    workload or input (HTTP 409).
    """


class JobBatchError(JobError):
    """A batch submit refused some of its jobs, so it stored none of them.

    ``failures`` lists ``(index, error)`` for each job refused, in the batch's
    order: ``index`` is the job's place in the batch (from 0), ``error`` the
    error a submit of that job alone raises (``UnknownWorkloadError``,
    ``JobInputError``, ``JobOptionError``, ``JobConflictError``). ``index`` and
    ``error`` are the first of them.
    """

    def __init__(self, failures: list[tuple[int, JobError]]) -> None:
        if not failures:
            raise ValueError("a JobBatchError names at least one job")
        self.failures = failures
        self.index, self.error = failures[0]
        shown = "; ".join(f"job {i}: {e}" for i, e in failures[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(f"{len(failures)} job(s) of the batch refused, none stored: {shown}{more}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.failures,))


class JobWaitTimeoutError(_JobOutcomeError, TimeoutError):
    """The job did not finish within the wait; it goes on running."""


class JobServiceStoppedError(JobError, RuntimeError):
    """The job service in this process is stopping: it takes no more store calls.

    A request that arrives while ``ambidex serve`` shuts down gets 503 (try
    another server, or again once this one is back), never a 500.
    """


class JobServiceError(JobError):
    """The job server answered with an error status."""

    def __init__(self, status_code: int, message: str) -> None:
        self.status_code = status_code
        self.message = message
        super().__init__(f"HTTP {status_code}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status_code, self.message))


class JobConnectionError(JobServiceError):
    """The job service could not be reached, or did not answer in time.

    No HTTP answer came back, so ``status_code`` is 0; ``url`` is the
    service's address and ``reason`` what httpx reported.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(0, f"cannot reach the job service at {url}: {reason}")
        self.args = (self.message,)  # no "HTTP 0:" in reprs and tracebacks

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.url, self.reason))
