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

from ambidex.jobs._errors import (
    JobCancelledError,
    JobConnectionError,
    JobError,
    JobFailedError,
    JobInputError,
    JobNotFinishedError,
    JobNotFoundError,
    JobServiceError,
    JobWaitTimeoutError,
    UnknownWorkloadError,
)
from ambidex.jobs._manager import JobManager
from ambidex.jobs._model import Job, JobEvent, JobStatus
from ambidex.jobs._store import JobStore, LeaseReport
from ambidex.jobs._workloads import (
    JobContext,
    Workload,
    WorkloadRegistry,
    default_registry,
    load_workloads,
    workload,
)

__all__ = [
    "Job",
    "JobCancelledError",
    "JobConnectionError",
    "JobContext",
    "JobError",
    "JobEvent",
    "JobFailedError",
    "JobInputError",
    "JobManager",
    "JobNotFinishedError",
    "JobNotFoundError",
    "JobServiceError",
    "JobStatus",
    "JobStore",
    "JobWaitTimeoutError",
    "LeaseReport",
    "UnknownWorkloadError",
    "Workload",
    "WorkloadRegistry",
    "default_registry",
    "load_workloads",
    "workload",
]
