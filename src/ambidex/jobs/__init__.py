"""Durable jobs: a store (SQLite or PostgreSQL), workloads, and a manager that runs them.

```python
import ambidex as ax

@ax.jobs.workload(timeout_s=600)
async def summarize(url: str, ctx: ax.jobs.JobContext) -> str: ...

async with ax.jobs.JobManager("jobs.sqlite") as manager:   # runs jobs too
    job = await manager.submit("summarize", {"url": "https://example.org"})
    done = await manager.wait(job.id)
```

Over HTTP: ``ambidex serve`` (the service) and ``ax.Client`` / ``ax.AsyncClient``.
"""

from ambidex._job_errors import (
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
    QueueState,
    RetryPolicy,
    WorkerInfo,
)
from ambidex.jobs._manager import JobManager
from ambidex.jobs._schedules import Schedule
from ambidex.jobs._store import JobStore, LeaseReport
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
    "Attempt",
    "Job",
    "JobCancelledError",
    "JobConflictError",
    "JobConnectionError",
    "JobContext",
    "JobError",
    "JobEvent",
    "JobFailedError",
    "JobInputError",
    "JobManager",
    "JobNotFinishedError",
    "JobNotFoundError",
    "JobOptionError",
    "JobServiceError",
    "JobStatus",
    "JobStore",
    "JobWaitTimeoutError",
    "LeaseReport",
    "QueueState",
    "RetryPolicy",
    "Schedule",
    "UnknownWorkloadError",
    "WorkerInfo",
    "Workload",
    "WorkloadOptions",
    "WorkloadRegistry",
    "default_registry",
    "load_workloads",
    "workload",
]
