"""The job manager: accepts jobs, tells watchers what changed, and (as a worker) runs them.

One ``JobManager`` lives on one event loop (the server's, or the worker
command's). Its store calls run on a few threads of their own, so a slow disk
never stalls the loop. It is a front desk for callers: ``submit`` (validated),
``get``, ``list``, ``cancel``, ``retry``, ``rerun``, ``wait`` and ``watch``
(the event stream); unless ``concurrency=0`` it also runs a ``Worker``
(``_worker``) that claims and runs jobs, and it fires the recurring schedules
of its registry (``_schedules``).

Watchers in the same process are woken the moment something changes;
changes made by other processes (workers on a shared PostgreSQL) are seen by
polling every ``poll_s``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from ambidex._job_errors import (
    JobConflictError,
    JobInputError,
    JobNotFoundError,
    JobOptionError,
)
from ambidex._job_model import (
    Attempt,
    Job,
    JobEvent,
    JobStatus,
    QueueState,
    RetryPolicy,
    WorkerInfo,
    attempts_of,
    iso,
    type_names,
)
from ambidex._text import describe_exception
from ambidex.jobs._batch import GroupCommit
from ambidex.jobs._metrics import JobMetrics
from ambidex.jobs._schedules import Schedule, Scheduler
from ambidex.jobs._store import IdempotencyConflict, JobStore, NewJob, Outcome, Page, Submitted
from ambidex.jobs._worker import Worker, worker_name
from ambidex.jobs._workloads import Workload, WorkloadRegistry, check_priority, default_registry

__all__ = ["JobManager"]

T = TypeVar("T")
log = logging.getLogger("ambidex.jobs")

_TERMINAL_KINDS = frozenset({"succeeded", "failed", "cancelled"})
# Waiters re-read a job at least this often even if no wake-up came (a safety net:
# wake-ups come from this process at once and from others by the shared poll).
_SAFETY_POLL_S = 5.0
MAX_DELAY_S = 366 * 86400.0
"""The furthest ahead a job may be delayed or scheduled."""
MAX_KEY_CHARS = 200
_RETRY_OPTIONS = ("retries", "retry_on", "retry_backoff_s", "retry_max_backoff_s")


class JobManager:
    """Accept, run and report jobs over a ``JobStore``.

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
        if not lease_s > 0 or not poll_s > 0:
            raise ValueError("lease_s and poll_s must be positive")
        self._owns_store = not isinstance(store, JobStore)
        self.store = store if isinstance(store, JobStore) else JobStore(store)
        self.registry = registry if registry is not None else default_registry()
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.worker_id = worker_id or worker_name()
        self.retention_s = retention_s
        self.metrics = JobMetrics()
        self._db_threads = ThreadPoolExecutor(8, thread_name_prefix="ambidex-jobs-db")
        self._wake = asyncio.Event()
        # Per-job wake-ups: a change made here wakes that job's waiters at once;
        # changes made by other processes are found by one shared poll.
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._seen_seq: dict[str, int] = {}
        self._submits: GroupCommit[NewJob, Submitted] = GroupCommit(self._submit_batch)
        self._finishes: GroupCommit[Outcome, bool] = GroupCommit(self._finish_batch)
        self._worker: Worker | None = None
        self._tasks: builtins.list[asyncio.Task[None]] = []
        self._scheduler_failure: str | None = None
        self.started_at = time.time()

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start: requeue jobs whose lease lapsed, fire schedules, work (if ``concurrency > 0``).

        Raises:
            ValueError: a schedule names a workload this manager does not have,
                or its input does not fit the workload.
        """
        self._wake = asyncio.Event()
        schedules = self.registry.check_schedules()
        await self._db(self.store.recover_expired)
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
        if self.concurrency > 0:
            self._worker = Worker(
                store=self.store,
                registry=self.registry,
                db=self._db,
                record=self._finishes,
                touch=self._touch,
                wake=self._wake,
                metrics=self.metrics,
                worker_id=self.worker_id,
                concurrency=self.concurrency,
                lease_s=self.lease_s,
                poll_s=self.poll_s,
                retention_s=self.retention_s,
            )
            self._spawn(self._work(self._worker), "ambidex-jobs-worker")

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def _work(self, worker: Worker) -> None:
        await worker.run()
        if worker.failure is not None:  # it stopped on its own: give its jobs back now
            try:
                await self._db(self.store.release, self.worker_id)
            except Exception:
                log.exception("giving back running jobs failed; their leases will lapse")

    async def _run_scheduler(self, scheduler: Scheduler) -> None:
        try:
            await scheduler.run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._scheduler_failure = f"the scheduler stopped: {describe_exception(exc)}"
            log.error("%s", self._scheduler_failure, exc_info=exc)

    async def aclose(self) -> None:
        """Stop: running jobs are cancelled and put back in the queue, unfinished."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await self._finishes.aclose()
        await self._submits.aclose()

        def finish() -> None:
            # Every store call already started (a claim in flight, say) ends
            # before the release, so no job claimed at the last moment is left
            # to wait for its lease to lapse.
            self._db_threads.shutdown(wait=True)
            if self.concurrency > 0:
                try:
                    self.store.release(self.worker_id)
                except Exception:
                    log.exception("giving back running jobs failed; their leases will lapse")
            if self._owns_store:
                self.store.close()

        await asyncio.get_running_loop().run_in_executor(None, finish)

    async def __aenter__(self) -> JobManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def running_here(self) -> int:
        """Jobs this manager is running now."""
        return 0 if self._worker is None else len(self._worker.running)

    @property
    def finished_counts(self) -> dict[str, int]:
        """Jobs this manager finished, by outcome."""
        done = self.metrics.finished_here
        return {s: done.get(s, 0) for s in ("succeeded", "failed", "cancelled")}

    def problems(self) -> builtins.list[str]:
        """What stopped working in this manager (empty while all is well)."""
        found = []
        if self._worker is not None and self._worker.failure is not None:
            found.append(self._worker.failure)
        if self._scheduler_failure is not None:
            found.append(self._scheduler_failure)
        return found

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_threads, functools.partial(fn, *args, **kwargs))

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

    def _running_here(self, job_id: str) -> bool:
        return self._worker is not None and job_id in self._worker.running

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

    async def submit_detailed(self, workload: str, input: Any = None, **options: Any) -> Submitted:
        """``submit``, also telling whether the job was created.

        ``created`` is False when the idempotency key named an existing job.
        Options as for ``submit``.
        """
        wl = self.registry.get(workload)
        data = wl.validate(input)
        new = _new_job(wl, data, options)
        try:
            submitted = await self._submits(new)
        except IdempotencyConflict as exc:
            raise JobConflictError(str(exc), exc.job) from None
        except ValueError as exc:  # what the store refused (the checks above should catch it)
            raise JobInputError(
                workload, [{"loc": [], "msg": str(exc), "type": "value_error"}]
            ) from None
        if submitted.created:
            self._wake.set()
        return submitted

    async def _submit_batch(self, new_jobs: builtins.list[NewJob]) -> builtins.list[Any]:
        return await self._db(self.store.submit_batch, new_jobs)

    async def _finish_batch(self, outcomes: builtins.list[Outcome]) -> builtins.list[bool]:
        return await self._db(self.store.finish_many, outcomes)

    async def get(self, job_id: str) -> Job:
        """The job's current record.

        Raises:
            JobNotFoundError: no such job.
        """
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
        self._wake.set()
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
        new = _new_job(wl, data, options, rerun_of=old.id)
        submitted = await self._submits(new)
        self._wake.set()
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
                if job.status.terminal:
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
            new = _new_job(
                wl,
                data,
                {"priority": schedule.priority or None},
                idempotency_key=f"schedule:{name}:{iso(tick)}",
                origin={"schedule": name, "tick": iso(tick)},
            )
        job = await self._db(self.store.fire_schedule, name, tick, new)
        if job is not None:
            log.info("schedule %s: tick %s started job %s", name, iso(tick), job.id)
            self._wake.set()


def _when(delay_s: float | None, run_at: float | datetime | None) -> float | None:
    """The epoch time a job may start, from ``delay_s`` or ``run_at`` (None: at once)."""
    if delay_s is not None and run_at is not None:
        raise JobOptionError("run_at", "give delay_s or run_at, not both")
    now = time.time()
    if delay_s is not None:
        if not (_is_number(delay_s) and 0 <= delay_s <= MAX_DELAY_S):
            raise JobOptionError(
                "delay_s", f"delay_s must be within 0..{MAX_DELAY_S:g} seconds, got {delay_s!r}"
            )
        return now + float(delay_s)
    if run_at is None:
        return None
    if isinstance(run_at, datetime):
        if run_at.tzinfo is None:
            raise JobOptionError("run_at", "run_at: give a datetime with a time zone (e.g. UTC)")
        run_at = run_at.timestamp()
    if not _is_number(run_at) or not math.isfinite(run_at) or run_at < 0:
        raise JobOptionError("run_at", f"run_at must be a time in epoch seconds, got {run_at!r}")
    if run_at > now + MAX_DELAY_S:
        raise JobOptionError(
            "run_at",
            f"run_at {run_at!r} is more than a year ahead (epoch seconds, not milliseconds?)",
        )
    return float(run_at)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _new_job(
    wl: Workload,
    data: dict[str, Any],
    options: dict[str, Any],
    *,
    rerun_of: str | None = None,
    idempotency_key: str | None = None,
    origin: dict[str, Any] | None = None,
) -> NewJob:
    """The ``NewJob`` for validated input, with the workload's options where none is given.

    Raises:
        JobOptionError: an option out of range, naming it.
    """

    def pick(key: str, default: Any) -> Any:
        value = options.get(key)
        return default if value is None else value

    retry = wl.retry  # checked when the workload was registered
    if any(options.get(k) is not None for k in _RETRY_OPTIONS):
        retry = _retry_policy(
            pick("retries", wl.retry.retries),
            pick("retry_on", wl.retry.on),
            pick("retry_backoff_s", wl.retry.backoff_s),
            pick("retry_max_backoff_s", wl.retry.max_backoff_s),
        )
    try:
        prio = check_priority(pick("priority", wl.priority))
    except ValueError as exc:
        raise JobOptionError("priority", str(exc)) from None
    key = pick("idempotency_key", idempotency_key)
    if key is not None:
        _check_key(key)
    max_attempts = pick("max_attempts", wl.max_attempts)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise JobOptionError(
            "max_attempts", f"max_attempts must be a positive integer, got {max_attempts!r}"
        )
    timeout_s = pick("timeout_s", wl.timeout_s)
    if timeout_s is not None and not (_is_number(timeout_s) and timeout_s > 0):
        raise JobOptionError(
            "timeout_s", f"timeout_s must be a positive number of seconds, got {timeout_s!r}"
        )
    run_at = _when(options.get("delay_s"), options.get("run_at"))
    return NewJob(
        wl.name, data, max_attempts, timeout_s, None, prio, run_at, retry, key, rerun_of, origin
    )


def _retry_policy(retries: Any, retry_on: Any, backoff_s: Any, max_backoff_s: Any) -> RetryPolicy:
    """A ``RetryPolicy`` from a submit's options; a bad one raises naming itself.

    Raises:
        JobOptionError: ``option`` names the option at fault.
    """
    try:
        on = type_names(retry_on)
        RetryPolicy(on=on)
    except ValueError as exc:
        raise JobOptionError("retry_on", str(exc)) from None
    for option, seconds in (("retry_backoff_s", backoff_s), ("retry_max_backoff_s", max_backoff_s)):
        if not (_is_number(seconds) and 0 <= seconds <= 86400):
            raise JobOptionError(
                option, f"{option} must be within 0..86400 seconds, got {seconds!r}"
            )
    try:
        return RetryPolicy(retries, on, float(backoff_s), float(max_backoff_s))
    except ValueError as exc:
        raise JobOptionError("retries", str(exc)) from None


def _check_key(key: Any) -> None:
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_CHARS:
        raise JobOptionError(
            "idempotency_key",
            f"idempotency_key must be a string of 1 to {MAX_KEY_CHARS} characters",
        )
    if any(c == "\x00" or "\ud800" <= c <= "\udfff" for c in key):
        raise JobOptionError(
            "idempotency_key", "idempotency_key must be plain text (no NUL, no lone surrogates)"
        )
