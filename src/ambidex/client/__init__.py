"""A client of the job service: ``Client`` for sync code, ``AsyncClient`` for async code.

```python
import ambidex as ax

with ax.Client("http://127.0.0.1:8000", token=None) as client:
    job = client.submit("sleep", {"seconds": 3})             # stored: it will run
    done = client.wait(job.id, on_progress=print)            # follows the event stream
    print(client.result(job.id))                              # or raises JobFailedError
```

Errors are the job service's own (``ambidex.jobs``): ``JobNotFoundError``,
``UnknownWorkloadError``, ``JobInputError`` (naming each bad field),
``JobFailedError``, ``JobCancelledError``, ``JobNotFinishedError``,
``JobWaitTimeoutError``, ``JobBatchError`` (a ``submit_batch`` refused, naming each
job by its index), ``JobServiceError`` for any other error answer, and
its subclass ``JobConnectionError`` when the service cannot be reached.
"""

from ambidex.client._client import AsyncClient, Client
from ambidex.client._protocol import JobConnectionError, JobPage, ProgressCallback

__all__ = ["AsyncClient", "Client", "JobConnectionError", "JobPage", "ProgressCallback"]
