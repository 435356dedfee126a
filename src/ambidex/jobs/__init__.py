"""Durable jobs: a store (SQLite or PostgreSQL), workloads, and a manager that runs them.

```python
import ambidex as ax

@ax.jobs.workload(timeout_s=600)
async def summarize(url: str, ctx: ax.jobs.JobContext) -> str: ...

async with ax.jobs.JobManager("jobs.sqlite") as manager:   # runs jobs too
    job = await manager.submit("summarize", {"url": "https://example.org"})
    done = await manager.wait(job.id)
```

``JobManager`` is a front desk (``JobDesk``: submit, read, cancel, wait) with a
worker beside it (``JobWorker``: claim, run, renew leases, recover); each also
runs alone: a desk as an HTTP front end with no workers, a worker as a process
that only runs jobs (or, in tests, ``run_until_idle``).

Over HTTP: ``ambidex serve`` (the service) and ``ax.Client`` / ``ax.AsyncClient``.
"""

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
    JobServiceStoppedError,
    JobWaitTimeoutError,
    UnknownWorkloadError,
)
from ambidex._job_model import (
    Attempt,
    Job,
    JobEvent,
    JobStatus,
    QueueState,
    RetryPolicy,
    WorkerInfo,
    WorkflowNode,
)
from ambidex.jobs._desk import MAX_BATCH_JOBS, JobDesk
from ambidex.jobs._ending import StopReason
from ambidex.jobs._engines import normalize_url
from ambidex.jobs._manager import JobManager
from ambidex.jobs._progress import JobProgress, ProgressReport
from ambidex.jobs._schedules import Schedule, parse_schedule_option
from ambidex.jobs._store import JobStore, LeaseReport
from ambidex.jobs._worker import JobWorker
from ambidex.jobs._workloads import (
    JobContext,
    Workload,
    WorkloadOptions,
    WorkloadRegistry,
    default_registry,
    load_workloads,
    workload,
)

__all__ = [
    "MAX_BATCH_JOBS",
    "Attempt",
    "Job",
    "JobBatchError",
    "JobCancelledError",
    "JobConflictError",
    "JobConnectionError",
    "JobContext",
    "JobDesk",
    "JobError",
    "JobEvent",
    "JobFailedError",
    "JobInputError",
    "JobManager",
    "JobNotFinishedError",
    "JobNotFoundError",
    "JobOptionError",
    "JobProgress",
    "JobServiceError",
    "JobServiceStoppedError",
    "JobStatus",
    "JobStore",
    "JobWaitTimeoutError",
    "JobWorker",
    "LeaseReport",
    "ProgressReport",
    "QueueState",
    "RetryPolicy",
    "Schedule",
    "StopReason",
    "UnknownWorkloadError",
    "WorkerInfo",
    "WorkflowNode",
    "Workload",
    "WorkloadOptions",
    "WorkloadRegistry",
    "default_registry",
    "load_workloads",
    "normalize_url",
    "parse_schedule_option",
    "workload",
]
