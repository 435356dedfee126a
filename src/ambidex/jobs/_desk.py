"""The front desk of the job service: submit, read, cancel, wait, watch; and fire schedules.

A ``JobDesk`` takes jobs in (validated, durable once ``submit`` returns),
answers what the store holds, cancels, retries, re-runs, and tells watchers
what changed. It runs no job: a ``JobWorker`` does, in this process beside it
(``JobManager`` is the two together) or in others sharing the store (``ambidex
worker``). A desk alone is an HTTP front end with no workers (``ambidex serve
--concurrency 0``). It also fires the recurring schedules of its registry
(``_schedules``): a tick becomes a job, once across every desk sharing the store.

Watchers in the same process are woken the moment something changes here (a
worker beside the desk tells it through ``on_change``); changes made by other
processes (workers on a shared PostgreSQL) are seen by polling every ``poll_s``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ambidex._job_errors import (
    JobBatchError,
    JobConflictError,
    JobError,
    JobInputError,
    JobNotFoundError,
    JobOptionError,
    UnknownWorkloadError,
)
from ambidex._job_model import (
    Attempt,
    Job,
    JobEvent,
    JobStatus,
    QueueState,
    WorkerInfo,
    WorkflowNode,
    attempts_of,
    iso,
)
from ambidex._text import describe_exception
from ambidex.jobs._batch import GroupCommit
from ambidex.jobs._calls import StoreCalls
from ambidex.jobs._options import new_job
from ambidex.jobs._schedules import Schedule, Scheduler
from ambidex.jobs._store import (
    BatchRefused,
    IdempotencyConflict,
    JobStore,
    NewJob,
    Page,
    Submitted,
)
from ambidex.jobs._wfnodes import node_table
from ambidex.jobs._workloads import WorkloadRegistry, default_registry
from ambidex.runtime import to_reserved_thread

if TYPE_CHECKING:
    from ambidex.jobs._worker import JobWorker

__all__ = ["MAX_BATCH_JOBS", "JobDesk"]

log = logging.getLogger("ambidex.jobs")

MAX_BATCH_JOBS = 1000
"""The most jobs one ``submit_batch`` (and one ``POST /v1/jobs:batch``) may hold."""
_BATCH_OPTIONS = frozenset(
    {
        "max_attempts",
        "timeout_s",
        "priority",
        "delay_s",
        "run_at",
        "idempotency_key",
        "retries",
        "retry_on",
        "retry_backoff_s",
        "retry_max_backoff_s",
    }
)
_TERMINAL_KINDS = frozenset({"succeeded", "failed", "cancelled"})
# Waiters re-read a job at least this often even if no wake-up came (a safety net:
# wake-ups come from this process at once and from others by the shared poll).
_SAFETY_POLL_S = 5.0


def _refusal(workload: str, exc: ValueError) -> JobError:
    """The error a submit of one job raises for what the store refused of it."""
    if isinstance(exc, IdempotencyConflict):
        return JobConflictError(str(exc), None if exc.earlier is not None else exc.job)
    return JobInputError(workload, [{"loc": [], "msg": str(exc), "type": "value_error"}])


class JobDesk:
    """The front desk over a ``JobStore``: accept, read, cancel and follow jobs.

    Args:
        store: the store, or what ``JobStore`` accepts (None: the default SQLite file).
        registry: the workloads this desk accepts, and the schedules it fires
            (default: the default registry, with the built-in workloads).
        poll_s: how often to look for changes other processes made to the jobs
            someone here waits on or watches.

    Use it on one event loop: ``async with JobDesk(...) as desk: ...``. Jobs it
    accepts are run by workers sharing the store (``JobWorker``, ``ambidex
    worker``); ``JobManager`` is a desk with a worker beside it.
    """

    def __init__(
        self,
        store: JobStore | str | Path | None = None,
        registry: WorkloadRegistry | None = None,
        *,
        poll_s: float = 0.25,
    ) -> None:
        if not poll_s > 0:
            raise ValueError("poll_s must be positive")
        self._owns_store = not isinstance(store, JobStore)
        self.store = store if isinstance(store, JobStore) else JobStore(store)
        self.registry = registry if registry is not None else default_registry()
        self.poll_s = poll_s
        # One call on the reserved lane at a time: a flood of reads never holds
        # both of its threads, so a worker beside the desk renews its leases.
        self._db = StoreCalls(at_once=1)
        # Per-job wake-ups: a change made here wakes that job's waiters at once;
        # changes made by other processes are found by one shared poll.
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._seen_seq: dict[str, int] = {}
        self._submits: GroupCommit[NewJob, Submitted] = GroupCommit(self._submit_batch)
        self._worker: JobWorker | None = None
        self._tasks: builtins.list[asyncio.Task[None]] = []
        self._scheduler_failure: str | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start following watched jobs and firing schedules.

        Raises:
            ValueError: a schedule names a workload this desk does not have,
                or its input does not fit the workload.
        """
        schedules = self.registry.check_schedules()
        self._spawn(self._poll_watched(), "ambidex-jobs-poller")
        if schedules:
            now = time.time()
            last = {
                s.name or "": await self._db(
                    self.store.register_schedule,
                    s.name,
                    s.workload,
                    s.cron,
                    dict(s.input),
                    s.latest_tick(now),
                )
                for s in schedules
            }
            self._spawn(
                self._run_scheduler(Scheduler(schedules, last, self._fire)),
                "ambidex-jobs-scheduler",
            )

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def _run_scheduler(self, scheduler: Scheduler) -> None:
        try:
            await scheduler.run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._scheduler_failure = f"the scheduler stopped: {describe_exception(exc)}"
            log.error("%s", self._scheduler_failure, exc_info=exc)

    async def aclose(self) -> None:
        """Stop following jobs and firing schedules; submits in flight are stored first."""
        await self._stop()
        # The reserved lane (as every store call): not behind users' blocking jobs.
        await to_reserved_thread(self._close)

    async def _stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await self._submits.aclose()

    def _close(self) -> None:
        """Blocking: let the store calls running end, start no more; close an owned store."""
        self._db.close()
        if self._owns_store:
            self.store.close()

    async def __aenter__(self) -> JobDesk:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def problems(self) -> builtins.list[str]:
        """What stopped working in this desk (empty while all is well)."""
        return [] if self._scheduler_failure is None else [self._scheduler_failure]

    # -- a worker beside it ----------------------------------------------------------

    def _attach(self, worker: JobWorker) -> None:
        """Work with a worker in this process: it hears of new jobs, the desk of its changes."""
        self._worker = worker
        worker.on_change = self._touch

    def _new_work(self) -> None:
        """A job may be due now: tell the worker beside the desk, if there is one."""
        if self._worker is not None:
            self._worker.wake()

    def _running_here(self, job_id: str) -> bool:
        return self._worker is not None and job_id in self._worker.running

    # -- watching --------------------------------------------------------------------

    def _touch(self, *job_ids: str) -> None:
        """Wake whoever waits on these jobs."""
        for job_id in job_ids:
            for event in self._watchers.get(job_id, ()):
                event.set()

    @contextlib.contextmanager
    def _watching(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the job changes, for as long as the block lasts.

        Register first, then read the job, then wait: a change between the
        read and the wait is not missed.
        """
        event = asyncio.Event()
        self._watchers.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._watchers.get(job_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._watchers[job_id]

    @staticmethod
    async def _sleep_on(event: asyncio.Event, timeout_s: float) -> None:
        """Wait for ``event`` at most ``timeout_s``, then clear it."""
        if timeout_s > 0:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a
            # cancellation that arrives as the awaited thing completes.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await event.wait()
        event.clear()

    async def _poll_watched(self) -> None:
        """Find changes other processes made to watched jobs: one query per ``poll_s``."""
        while True:
            await asyncio.sleep(self.poll_s)
            # Jobs running here report their own changes at once.
            ids = [job_id for job_id in self._watchers if not self._running_here(job_id)]
            if not ids:
                continue
            try:
                latest = await self._db(self.store.last_event_seqs, ids)
            except Exception:
                log.exception("polling watched jobs failed")
                continue
            for job_id, seq in latest.items():
                # A job seen for the first time is woken too: it may have changed
                # between its waiter's last read and this poll.
                if self._seen_seq.get(job_id) != seq:
                    self._seen_seq[job_id] = seq
                    self._touch(job_id)
            for job_id in [j for j in self._seen_seq if j not in self._watchers]:
                del self._seen_seq[job_id]

    # -- the front desk --------------------------------------------------------------

    async def submit(
        self,
        workload: str,
        input: Any = None,
        *,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        priority: int | None = None,
        delay_s: float | None = None,
        run_at: float | datetime | None = None,
        idempotency_key: str | None = None,
        retries: int | None = None,
        retry_on: Any = None,
        retry_backoff_s: float | None = None,
        retry_max_backoff_s: float | None = None,
    ) -> Job:
        """Validate and store a job; it is durable once this returns.

        Every option left out takes the workload's value (see ``WorkloadOptions``).

        Args:
            workload: a registered workload.
            input: its input (validated against the workload's schema).
            max_attempts: starts allowed before a job whose worker keeps dying fails.
            timeout_s: stop the job after this long.
            priority: higher starts first (within ±1,000,000).
            delay_s: start no sooner than this many seconds from now.
            run_at: start no sooner than this time (epoch seconds or an aware
                ``datetime``); not with ``delay_s``.
            idempotency_key: a job submitted with this key before (and not yet
                pruned) is returned instead of storing a new one.
            retries: how many times a failure is retried.
            retry_on: the exception types (or names) retried (default: any).
            retry_backoff_s: the first retry's wait (see ``RetryPolicy``).
            retry_max_backoff_s: the cap of one retry's wait.

        Raises:
            UnknownWorkloadError: no such workload is registered here.
            JobInputError: the input does not fit the workload's schema.
            JobOptionError: an option is out of range (naming it).
            JobConflictError: the idempotency key names a job of another
                workload or input.
        """
        submitted = await self.submit_detailed(
            workload,
            input,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            priority=priority,
            delay_s=delay_s,
            run_at=run_at,
            idempotency_key=idempotency_key,
            retries=retries,
            retry_on=retry_on,
            retry_backoff_s=retry_backoff_s,
            retry_max_backoff_s=retry_max_backoff_s,
        )
        return submitted.job

    async def submit_detailed(
        self, /, workload: str, input: Any = None, **options: Any
    ) -> Submitted:
        """``submit``, also telling whether the job was created.

        ``created`` is False when the idempotency key named an existing job.
        Options as for ``submit``.
        """
        wl = self.registry.get(workload)
        data = wl.validate(input)
        new = new_job(wl, data, options)
        try:
            submitted = await self._submits(new)
        except IdempotencyConflict as exc:
            raise JobConflictError(str(exc), exc.job) from None
        except ValueError as exc:  # what the store refused (the checks above should catch it)
            raise JobInputError(
                workload, [{"loc": [], "msg": str(exc), "type": "value_error"}]
            ) from None
        if submitted.created:
            self._new_work()
        return submitted

    async def submit_batch(self, jobs: Sequence[Mapping[str, Any]]) -> builtins.list[Submitted]:
        """Validate and store several jobs in one transaction: all of them, or none.

        Each job is a mapping with ``workload``, ``input`` (optional) and any of
        ``submit``'s options, e.g. ``{"workload": "sleep", "input": {"seconds":
        1}, "priority": 5}``. Every job is checked first, as ``submit`` checks
        one; if any is refused, nothing is stored and ``JobBatchError`` names
        each job refused (its index in ``jobs``) with the error its own submit
        would raise. The jobs are durable once this returns, one ``Submitted``
        per job, in order.

        An idempotency key acts as in jobs submitted one after another: a key
        naming a stored job, or an earlier job of the same batch, answers that
        job (``created`` False) if its workload and input are the same, and
        refuses the batch (``JobConflictError`` for that index) if not.

        Raises:
            JobBatchError: a job was refused (unknown workload, input not
                fitting the workload's schema, an option out of range, an
                idempotency key conflict); nothing was stored.
            ValueError: more than ``MAX_BATCH_JOBS`` jobs.
            TypeError: ``jobs`` is not a sequence of mappings.
        """
        if isinstance(jobs, str | bytes | Mapping) or not isinstance(jobs, Sequence):
            raise TypeError("jobs must be a list of mappings (workload, input, options)")
        if len(jobs) > MAX_BATCH_JOBS:
            raise ValueError(f"a batch holds at most {MAX_BATCH_JOBS} jobs, got {len(jobs)}")
        new_jobs: builtins.list[NewJob] = []
        failures: builtins.list[tuple[int, JobError]] = []
        for index, item in enumerate(jobs):
            try:
                new_jobs.append(self._batch_job(item))
            except (UnknownWorkloadError, JobInputError, JobOptionError) as exc:
                failures.append((index, exc))
        if failures:
            raise JobBatchError(failures)
        if not new_jobs:
            return []
        try:
            submitted = await self._db(self.store.submit_all, new_jobs)
        except BatchRefused as refused:
            raise JobBatchError(
                [(i, _refusal(new_jobs[i].workload, e)) for i, e in refused.failures]
            ) from None
        if any(s.created for s in submitted):
            self._new_work()
        return submitted

    def _batch_job(self, item: Any) -> NewJob:
        """One job of a batch, validated as ``submit`` validates it."""
        if not isinstance(item, Mapping):
            raise JobOptionError("workload", "each job of a batch is a mapping with a workload")
        unknown = sorted(str(k) for k in item if k not in _BATCH_OPTIONS | {"workload", "input"})
        if unknown:
            raise JobOptionError(unknown[0], f"unknown option {unknown[0][:80]!r}")
        workload = item.get("workload")
        if not isinstance(workload, str):
            raise JobOptionError("workload", "workload must be the name of a workload")
        wl = self.registry.get(workload)
        data = wl.validate(item.get("input"))
        return new_job(wl, data, {k: v for k, v in item.items() if k in _BATCH_OPTIONS})

    async def _submit_batch(self, new_jobs: builtins.list[NewJob]) -> builtins.list[Any]:
        return await self._db(self.store.submit_batch, new_jobs)

    async def get(self, job_id: str) -> Job:
        """The job's current record.

        Raises:
            JobNotFoundError: no such job.
        """
        answered, job = (False, None) if self._db.closed else self.store.get_now(job_id)
        if not answered:
            job = await self._db(self.store.get, job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        return job

    async def list(
        self,
        *,
        status: Collection[JobStatus] | None = None,
        workload: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        id_prefix: str | None = None,
    ) -> Page:
        """A page of jobs, newest first, and the cursors of the pages around it.

        Raises:
            ValueError: a cursor that no page returned.
        """
        return await self._db(
            self.store.list,
            status=status,
            workload=workload,
            limit=limit,
            cursor=cursor,
            id_prefix=id_prefix,
        )

    async def cancel(self, job_id: str) -> Job:
        """Cancel a job: a queued one at once; a running one is stopped by its worker.

        A running io job is cancelled, a cpu job's worker process is killed.
        Cancelling a finished job changes nothing.

        Raises:
            JobNotFoundError: no such job.
        """
        job = await self._db(self.store.cancel, job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        if self._worker is not None and job.status is JobStatus.RUNNING:
            self._worker.stop_here(job_id)
        self._touch(job_id)
        return job

    async def retry(self, job_id: str) -> Job:
        """Put a failed or cancelled job back in the queue as it is (same id and input).

        Raises:
            JobNotFoundError: no such job.
            JobConflictError: the job has not failed and was not cancelled.
        """
        found = await self._db(self.store.retry, job_id)
        if found is None:
            raise JobNotFoundError(job_id)
        job, done = found
        if not done:
            raise JobConflictError(
                f"job {job.id} is {job.status.value}: only a failed or cancelled job can be "
                "retried (re-run a succeeded one)",
                job,
            )
        self._new_work()
        self._touch(job_id)
        return job

    async def rerun(self, job_id: str) -> Job:
        """A new job with a finished job's workload and input, linked to it (``rerun_of``).

        The job's own options (``max_attempts``, ``timeout_s``, ``priority``, its
        retry policy) carry over; its input is checked against the workload's
        current schema.

        Raises:
            JobNotFoundError: no such job.
            JobConflictError: the job has not finished.
            UnknownWorkloadError: its workload is not registered here.
            JobInputError: its input no longer fits the workload.
        """
        old = await self.get(job_id)
        if not old.status.terminal:
            raise JobConflictError(
                f"job {old.id} is {old.status.value}: only a finished job can be re-run", old
            )
        wl = self.registry.get(old.workload)
        data = wl.validate(old.input)
        options = {
            "max_attempts": old.max_attempts,
            "timeout_s": old.timeout_s,
            "priority": old.priority,
            "retries": old.retry.retries,
            "retry_on": old.retry.on,
            "retry_backoff_s": old.retry.backoff_s,
            "retry_max_backoff_s": old.retry.max_backoff_s,
        }
        new = new_job(wl, data, options, rerun_of=old.id)
        submitted = await self._submits(new)
        self._new_work()
        return submitted.job

    async def events(self, job_id: str, after: int = 0) -> builtins.list[JobEvent]:
        """The job's events after ``after`` (a ``JobEvent.seq``)."""
        return await self._db(self.store.events, job_id, after=after)

    async def attempts(self, job_id: str) -> builtins.list[Attempt]:
        """Each start of the job and how it ended (error and traceback included), oldest first.

        Raises:
            JobNotFoundError: no such job.
        """
        await self.get(job_id)
        return attempts_of(await self._db(self.store.events, job_id, limit=100_000))

    async def workflow_nodes(self, job_id: str) -> builtins.list[WorkflowNode]:
        """The nodes of a workflow job: each with its status, attempts, times and error.

        In the workflow's order with what each node waits for, when its
        workload is registered here; otherwise the nodes its workers recorded,
        by start. Empty for a job that is not a workflow's.

        Raises:
            JobNotFoundError: no such job.
        """
        job = await self.get(job_id)
        rows = await self._db(self.store.workflow_nodes, job_id)
        wf = self.registry.get(job.workload).workflow if job.workload in self.registry else None
        return node_table(job, rows, wf)

    async def counts(self) -> dict[JobStatus, int]:
        """How many jobs are in each state."""
        return await self._db(self.store.counts)

    async def counts_by_workload(self) -> dict[tuple[str, JobStatus], int]:
        """How many jobs of each workload are in each state."""
        return await self._db(self.store.counts_by_workload)

    async def workloads_seen(self) -> builtins.list[str]:
        """The workloads of the stored jobs (registered here or not), sorted."""
        return await self._db(self.store.workloads_seen)

    async def workers(self) -> builtins.list[WorkerInfo]:
        """The workers sharing the store (see ``JobStore.workers``)."""
        return await self._db(self.store.workers)

    async def queue_state(self) -> QueueState:
        """The workers against the queued jobs: whether anything consumes the queue."""
        workers = await self.workers()
        return QueueState.of(workers, await self.counts_by_workload(), time.time())

    async def wait(self, job_id: str, timeout_s: float | None = None) -> Job:
        """Wait until the job has finished, or ``timeout_s`` has passed; return its record.

        Returns the record as it is then, finished or not.

        Raises:
            JobNotFoundError: no such job.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._watching(job_id) as changed:
            job = await self.get(job_id)
            while True:
                # A job this process runs has ended once its worker is done with it
                # (its outcome counted), not as soon as the store says so: the
                # read may land between the outcome's commit and that.
                if job.status.terminal and not self._running_here(job_id):
                    return job
                left = _SAFETY_POLL_S
                if deadline is not None:
                    left = min(left, deadline - time.monotonic())
                if left <= 0:
                    return job
                await self._sleep_on(changed, left)
                if not self._running_here(job_id):  # running here: only its end is news
                    job = await self.get(job_id)

    async def watch(self, job_id: str, after: int = 0) -> AsyncIterator[JobEvent]:
        """Yield the job's events as they happen, from ``after`` on, until it has finished.

        Raises:
            JobNotFoundError: no such job.
        """
        await self.get(job_id)
        with self._watching(job_id) as changed:
            while True:
                events = await self.events(job_id, after)
                for event in events:
                    after = event.seq
                    yield event
                if events and events[-1].kind in _TERMINAL_KINDS:
                    return
                if not events and (await self.get(job_id)).status.terminal:
                    return
                await self._sleep_on(changed, _SAFETY_POLL_S)

    # -- schedules -------------------------------------------------------------------

    async def _fire(self, schedule: Schedule, tick: float, run: bool) -> None:
        name = schedule.name or ""
        new = None
        if run:
            wl = self.registry.get(str(schedule.workload))
            data = wl.validate(dict(schedule.input))
            new = new_job(
                wl,
                data,
                {"priority": schedule.priority or None},
                idempotency_key=f"schedule:{name}:{iso(tick)}",
                origin={"schedule": name, "tick": iso(tick)},
                traced=False,  # no request submits it: a trace of its own per attempt
            )
        job = await self._db(self.store.fire_schedule, name, tick, new)
        if job is not None:
            log.info("schedule %s: tick %s started job %s", name, iso(tick), job.id)
            self._new_work()
