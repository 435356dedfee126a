"""The job manager: a front desk (``JobDesk``) with a worker (``JobWorker``) beside it.

One ``JobManager`` lives on one event loop (the server's, or the worker
command's). As a desk it takes jobs in and answers for them: ``submit``,
``get``, ``list``, ``cancel``, ``retry``, ``rerun``, ``wait``, ``watch`` (all
of ``JobDesk``, delegated); unless ``concurrency=0`` it also runs a worker
that claims and runs jobs, and the two hear of each other at once (a submit
wakes the worker, a finished job its waiters, a cancel stops a job running
here). ``concurrency=0`` is the desk alone: an HTTP front end whose jobs are
run by ``ambidex worker`` processes sharing the store.
"""

from __future__ import annotations

import builtins
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from ambidex._job_model import JobEvent
from ambidex.jobs._desk import JobDesk
from ambidex.jobs._metrics import JobMetrics
from ambidex.jobs._store import JobStore
from ambidex.jobs._worker import JobWorker, check_timing, worker_name
from ambidex.jobs._workloads import WorkloadRegistry
from ambidex.runtime import to_reserved_thread

__all__ = ["JobManager"]

P = ParamSpec("P")
R = TypeVar("R")


def _at_desk(
    method: Callable[Concatenate[JobDesk, P], Awaitable[R]],
) -> Callable[Concatenate[JobManager, P], Awaitable[R]]:
    """``JobManager.<name>``: ``JobDesk.<name>`` called on the manager's desk.

    Written once rather than as a copy of each method's signature: the
    parameters, docstring and type stay the desk's.
    """
    name = method.__name__

    async def at_desk(self: JobManager, /, *args: P.args, **kwargs: P.kwargs) -> R:
        bound: Callable[P, Awaitable[R]] = getattr(self.desk, name)
        return await bound(*args, **kwargs)

    functools.update_wrapper(at_desk, method)
    return at_desk


class JobManager:
    """Accept, run and report jobs over a ``JobStore``: a desk and (unless 0) a worker.

    Args:
        store: the store, or what ``JobStore`` accepts (None: the default SQLite file).
        registry: the workloads this manager may accept and run, and the
            schedules it fires (default: the default registry, with the
            built-in workloads).
        concurrency: jobs run at once by this manager; 0 makes it a front desk
            only (jobs are run by ``ambidex worker`` processes).
        lease_s: a claimed job is the worker's for this long, renewed every
            ``min(lease_s / 3, 1)`` s; a job whose worker stops renewing it is
            requeued after at most this long.
        poll_s: how often to look for new jobs and for changes made by other
            processes.
        worker_id: the name under which this manager claims jobs.
        retention_s: finished jobs older than this are deleted (checked hourly
            while working); None keeps them forever.

    Use it on one event loop: ``async with JobManager(...) as m: ...``.
    """

    def __init__(
        self,
        store: JobStore | str | Path | None = None,
        registry: WorkloadRegistry | None = None,
        *,
        concurrency: int = 32,
        lease_s: float = 15.0,
        poll_s: float = 0.25,
        worker_id: str | None = None,
        retention_s: float | None = 7 * 24 * 3600.0,
    ) -> None:
        if concurrency < 0:
            raise ValueError(f"concurrency must be >= 0, got {concurrency}")
        check_timing(lease_s, poll_s)
        self._owns_store = not isinstance(store, JobStore)
        self.store = store if isinstance(store, JobStore) else JobStore(store)
        self.desk = JobDesk(self.store, registry, poll_s=poll_s)
        """The front desk (every read and write of jobs goes through it)."""
        self.registry = self.desk.registry
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.worker_id = worker_id or worker_name()
        self.retention_s = retention_s
        self.metrics = JobMetrics()
        self.worker: JobWorker | None = None
        """The worker beside the desk (None with ``concurrency=0``)."""
        if concurrency > 0:
            self.worker = JobWorker(
                self.store,
                self.registry,
                concurrency=concurrency,
                lease_s=lease_s,
                poll_s=poll_s,
                worker_id=self.worker_id,
                retention_s=retention_s,
                metrics=self.metrics,
            )
            self.desk._attach(self.worker)
        self.started_at = time.time()

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start: requeue jobs whose lease lapsed, fire schedules, work (if ``concurrency > 0``).

        Raises:
            ValueError: a schedule names a workload this manager does not have,
                or its input does not fit the workload.
        """
        await self.desk._db(self.store.recover_expired)
        await self.desk.start()
        if self.worker is not None:
            self.worker._start_background()

    async def aclose(self) -> None:
        """Stop: running jobs are cancelled and put back in the queue, unfinished."""
        await self.desk._stop()
        if self.worker is not None:
            await self.worker.aclose()  # gives back its jobs; the store is not the worker's
        # On the reserved lane, as every store call: blocking jobs of users may
        # hold every general I/O thread for hours, and the stop must not wait for them.
        await to_reserved_thread(self._close)

    def _close(self) -> None:
        self.desk._close()
        if self._owns_store:
            self.store.close()

    async def __aenter__(self) -> JobManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def running_here(self) -> int:
        """Jobs this manager is running now."""
        return 0 if self.worker is None else self.worker.running_here

    @property
    def finished_counts(self) -> dict[str, int]:
        """Jobs this manager finished, by outcome."""
        done = self.metrics.finished_here
        return {s: done.get(s, 0) for s in ("succeeded", "failed", "cancelled")}

    def problems(self) -> builtins.list[str]:
        """What stopped working in this manager (empty while all is well)."""
        found = [] if self.worker is None else self.worker.problems()
        return [*found, *self.desk.problems()]

    # -- the front desk: ``JobDesk``'s own methods, each called on ``self.desk`` --

    submit = _at_desk(JobDesk.submit)
    submit_detailed = _at_desk(JobDesk.submit_detailed)
    submit_batch = _at_desk(JobDesk.submit_batch)
    get = _at_desk(JobDesk.get)
    list = _at_desk(JobDesk.list)
    cancel = _at_desk(JobDesk.cancel)
    retry = _at_desk(JobDesk.retry)
    rerun = _at_desk(JobDesk.rerun)
    events = _at_desk(JobDesk.events)
    attempts = _at_desk(JobDesk.attempts)
    workflow_nodes = _at_desk(JobDesk.workflow_nodes)
    counts = _at_desk(JobDesk.counts)
    counts_by_workload = _at_desk(JobDesk.counts_by_workload)
    workloads_seen = _at_desk(JobDesk.workloads_seen)
    workers = _at_desk(JobDesk.workers)
    queue_state = _at_desk(JobDesk.queue_state)
    wait = _at_desk(JobDesk.wait)

    def watch(self, job_id: str, after: int = 0) -> AsyncIterator[JobEvent]:
        """The job's events as they happen, until it has finished (see ``JobDesk.watch``)."""
        return self.desk.watch(job_id, after)
