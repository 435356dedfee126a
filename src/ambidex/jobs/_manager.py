"""The job manager: accepts jobs, runs them with leases, tells watchers what changed.

One ``JobManager`` lives on one event loop (the server's, or the worker
command's). Its store calls run on a few threads of their own, so a slow disk
never stalls the loop. It is two things at once:

* a front desk for callers: ``submit`` (validated), ``get``, ``list``,
  ``cancel``, ``wait`` and ``watch`` (the event stream);
* a worker (unless ``concurrency=0``): it claims queued jobs under a lease,
  runs up to ``concurrency`` at once, renews the leases of what it runs,
  requeues jobs whose worker died, and records each outcome once.

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
import os
import socket
import time
import traceback
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ambidex.jobs._batch import GroupCommit
from ambidex.jobs._errors import JobNotFoundError
from ambidex.jobs._model import Job, JobEvent, JobStatus
from ambidex.jobs._store import JobStore, NewJob, Outcome
from ambidex.jobs._workloads import JobContext, WorkloadRegistry, default_registry

__all__ = ["JobManager"]

T = TypeVar("T")
log = logging.getLogger("ambidex.jobs")

_TERMINAL_KINDS = frozenset({"succeeded", "failed", "cancelled"})
_PROGRESS_EVERY_S = 0.2
_PRUNE_EVERY_S = 3600.0
# Waiters re-read a job at least this often even if no wake-up came (a safety net:
# wake-ups come from this process at once and from others by the shared poll).
_SAFETY_POLL_S = 5.0


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


class _Running:
    __slots__ = ("ctx", "job", "outcome", "recording", "task")

    def __init__(self, job: Job, ctx: JobContext) -> None:
        self.job = job
        self.ctx = ctx
        self.task: asyncio.Task[None] | None = None
        # Why the task was cancelled from outside: "cancel" (a user asked) or
        # "lost" (the lease is gone: write nothing). Shutdown cancels the task
        # group instead; the done-callback of _launch then frees the slot.
        self.outcome: str | None = None
        # Set once the job's outcome is being written: from then on the job
        # may leave the running state in the store at any moment, and a
        # heartbeat that no longer finds it there must not call it lost.
        self.recording = False


class JobManager:
    """Accept, run and report jobs over a ``JobStore``.

    Args:
        store: the store, or what ``JobStore`` accepts (None: the default SQLite file).
        registry: the workloads this manager may accept and run (default: the
            default registry, with the built-in workloads).
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
        if lease_s <= 0 or poll_s <= 0:
            raise ValueError("lease_s and poll_s must be positive")
        self._owns_store = not isinstance(store, JobStore)
        self.store = store if isinstance(store, JobStore) else JobStore(store)
        self.registry = registry if registry is not None else default_registry()
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.worker_id = worker_id or _worker_name()
        self.retention_s = retention_s
        self._db_threads = ThreadPoolExecutor(8, thread_name_prefix="ambidex-jobs-db")
        self._running: dict[str, _Running] = {}
        self._wake: asyncio.Event | None = None
        # Per-job wake-ups: a change made here wakes that job's waiters at once;
        # changes made by other processes are found by one shared poll.
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._seen_seq: dict[str, int] = {}
        self._poller: asyncio.Task[None] | None = None
        self._submits: GroupCommit[NewJob, Job] = GroupCommit(self._submit_batch)
        self._finishes: GroupCommit[Outcome, bool] = GroupCommit(self._finish_batch)
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False
        self.started_at = time.time()
        self.finished_counts: dict[str, int] = {s: 0 for s in ("succeeded", "failed", "cancelled")}

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start working (if ``concurrency > 0``); requeue jobs whose lease lapsed."""
        self._wake = asyncio.Event()
        await self._db(self.store.recover_expired)
        self._poller = asyncio.create_task(self._poll_watched(), name="ambidex-jobs-poller")
        if self.concurrency > 0:
            self._runner = asyncio.create_task(self._work(), name="ambidex-jobs-worker")

    async def aclose(self) -> None:
        """Stop: running jobs are cancelled and put back in the queue, unfinished."""
        self._stopping = True
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.wait({self._poller})
            self._poller = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            runner.cancel()
            await asyncio.wait({runner})
            if not runner.cancelled() and runner.exception() is not None:
                log.error("the worker loop had failed", exc_info=runner.exception())

        await self._finishes.aclose()
        await self._submits.aclose()

        def finish() -> None:
            # Every store call already started (a claim in flight, say) ends
            # before the release, so no job claimed at the last moment is left
            # to wait for its lease to lapse.
            self._db_threads.shutdown(wait=True)
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
        return len(self._running)

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

    async def _poll_watched(self) -> None:
        """Find changes other processes made to watched jobs: one query per ``poll_s``."""
        while True:
            await asyncio.sleep(self.poll_s)
            # Jobs running here report their own changes at once.
            ids = [job_id for job_id in self._watchers if job_id not in self._running]
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
    ) -> Job:
        """Validate and store a job; it is durable once this returns.

        Raises:
            UnknownWorkloadError: no such workload is registered here.
            JobInputError: the input does not fit the workload's schema.
        """
        wl = self.registry.get(workload)
        data = wl.validate(input)
        job = await self._submits(
            NewJob(
                workload,
                data,
                max_attempts or wl.max_attempts,
                timeout_s if timeout_s is not None else wl.timeout_s,
            )
        )
        if self._wake is not None:
            self._wake.set()
        return job

    async def _submit_batch(self, new_jobs: builtins.list[NewJob]) -> builtins.list[Job]:
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
    ) -> tuple[builtins.list[Job], str | None]:
        """A page of jobs, newest first, and the next page's cursor."""
        return await self._db(
            self.store.list, status=status, workload=workload, limit=limit, cursor=cursor
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
        here = self._running.get(job_id)
        if here is not None and job.status is JobStatus.RUNNING:
            self._stop(here, "cancel")
        self._touch(job_id)
        return job

    async def events(self, job_id: str, after: int = 0) -> builtins.list[JobEvent]:
        """The job's events after ``after`` (a ``JobEvent.seq``)."""
        return await self._db(self.store.events, job_id, after=after)

    async def counts(self) -> dict[JobStatus, int]:
        """How many jobs are in each state."""
        return await self._db(self.store.counts)

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
                if job_id not in self._running:  # running here: only its end is news
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

    # -- the worker ------------------------------------------------------------------

    async def _work(self) -> None:
        assert self._wake is not None
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._heartbeats(), name="ambidex-jobs-heartbeat")
            tg.create_task(self._recovery(), name="ambidex-jobs-recovery")
            names = self.registry.names()
            while True:
                self._wake.clear()
                free = self.concurrency - len(self._running)
                claimed: list[Job] = []
                if free > 0:
                    try:
                        claimed = await self._db(
                            self.store.claim,
                            self.worker_id,
                            lease_s=self.lease_s,
                            workloads=names,
                            limit=free,
                        )
                    except Exception:
                        log.exception("claiming jobs failed; retrying in %.2f s", self.poll_s)
                for job in claimed:
                    self._launch(tg, job)
                if claimed:
                    self._touch(*(job.id for job in claimed))
                if not claimed or len(self._running) >= self.concurrency:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.poll_s):
                            await self._wake.wait()

    def _launch(self, tg: asyncio.TaskGroup, job: Job) -> None:
        ctx = JobContext(job.id, job.workload, job.attempts)
        running = _Running(job, ctx)
        previous = self._running.get(job.id)
        if previous is not None:
            # This worker lost that attempt's lease and has now claimed the job again.
            self._stop(previous, "lost")
        self._running[job.id] = running
        task = tg.create_task(self._execute(running), name=f"ambidex-job-{job.id}")
        running.task = task

        def gone(_task: asyncio.Task[None]) -> None:
            # Also when the task was cancelled before it ever ran (its body,
            # and so its own cleanup, never started): the slot must be freed.
            if self._running.get(job.id) is running:
                del self._running[job.id]
            if self._wake is not None:
                self._wake.set()

        task.add_done_callback(gone)

    def _stop(self, running: _Running, outcome: str) -> None:
        if running.recording:  # its outcome is being written: let the write finish
            return
        if running.outcome is None and running.task is not None and not running.task.done():
            running.outcome = outcome
            running.task.cancel()

    async def _execute(self, running: _Running) -> None:
        job, ctx = running.job, running.ctx
        assert self._wake is not None
        reporters: builtins.list[asyncio.Task[None]] = []
        self._wire_progress(job, ctx, reporters)
        try:
            status, result, error, detail = await self._run_workload(running)
        finally:
            for reporter in reporters:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
        try:
            running.recording = True
            await self._flush_progress(job, ctx)
            try:
                recorded = await self._finishes(
                    Outcome(job.id, self.worker_id, job.attempts, status, result, error)
                )
            except Exception:
                log.exception(
                    "job %s: recording its outcome failed; it runs again once its lease lapses",
                    job.id,
                )
                return
            if recorded:
                self.finished_counts[status.value] += 1
                if detail:
                    log.info("job %s (%s) failed: %s", job.id, job.workload, detail)
            else:
                log.warning("job %s: lease lost before its outcome could be recorded", job.id)
        finally:
            self._forget(running)
            self._wake.set()
        self._touch(job.id)

    def _forget(self, running: _Running) -> None:
        if self._running.get(running.job.id) is running:
            del self._running[running.job.id]

    def _wire_progress(
        self, job: Job, ctx: JobContext, reporters: builtins.list[asyncio.Task[None]]
    ) -> None:
        """Let ``ctx.progress`` reach the store; the reporter task starts with the first report."""
        changed = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_progress() -> None:  # on the loop
            changed.set()
            if not reporters:
                reporters.append(asyncio.create_task(self._report_progress(job, ctx, changed)))

        def notify() -> None:  # from any thread
            loop.call_soon_threadsafe(on_progress)

        ctx._notify = notify

    async def _run_workload(
        self, running: _Running
    ) -> tuple[JobStatus, Any, str | None, str | None]:
        """Run the job's workload: (status, result, error, traceback)."""
        job = running.job
        deadline = asyncio.timeout(job.timeout_s)
        try:
            workload = self.registry.get(job.workload)
            if job.timeout_s is None:
                result = await workload.run(job.input, running.ctx)
            else:
                async with deadline:
                    result = await workload.run(job.input, running.ctx)
            return JobStatus.SUCCEEDED, result, None, None
        except asyncio.CancelledError:
            if running.outcome != "cancel":
                raise
            return JobStatus.CANCELLED, None, "cancelled by request", None
        except TimeoutError as exc:
            if deadline.expired():
                error = f"timed out after {job.timeout_s:g} s (the work was stopped)"
            else:
                error = f"{type(exc).__name__}: {exc}"
            return JobStatus.FAILED, None, error, traceback.format_exc()
        except Exception as exc:
            return JobStatus.FAILED, None, f"{type(exc).__name__}: {exc}", traceback.format_exc()

    async def _report_progress(self, job: Job, ctx: JobContext, changed: asyncio.Event) -> None:
        while True:
            await changed.wait()
            changed.clear()
            await self._flush_progress(job, ctx)
            await asyncio.sleep(_PROGRESS_EVERY_S)

    async def _flush_progress(self, job: Job, ctx: JobContext) -> None:
        latest = ctx._take()
        if latest is None:
            return
        with contextlib.suppress(Exception):
            await self._db(
                self.store.report_progress, job.id, self.worker_id, job.attempts, *latest
            )
            self._touch(job.id)

    async def _heartbeats(self) -> None:
        every_s = min(self.lease_s / 3, 1.0)
        while True:
            await asyncio.sleep(every_s)
            # Only the jobs running here before the call are judged by its answer:
            # a job claimed during the call, or finishing during it, is not lost.
            snapshot = {
                job_id: running
                for job_id, running in self._running.items()
                if not running.recording
            }
            if not snapshot:
                continue
            try:
                report = await self._db(
                    self.store.heartbeat, self.worker_id, list(snapshot), lease_s=self.lease_s
                )
            except Exception:
                log.exception("renewing leases failed")
                continue
            for job_id, running in snapshot.items():
                if running.recording or self._running.get(job_id) is not running:
                    continue
                if job_id in report.cancel_requested:
                    self._stop(running, "cancel")
                elif job_id not in report.held:
                    log.warning("job %s: lease lost; stopping it without recording", job_id)
                    self._stop(running, "lost")

    async def _recovery(self) -> None:
        every_s = max(min(self.lease_s / 2, 5.0), 0.1)
        next_prune = time.monotonic()
        while True:
            await asyncio.sleep(every_s)
            if self.retention_s is not None and time.monotonic() >= next_prune:
                next_prune = time.monotonic() + _PRUNE_EVERY_S
                try:
                    pruned = await self._db(self.store.prune, self.retention_s)
                except Exception:
                    log.exception("pruning finished jobs failed")
                else:
                    if pruned:
                        log.info(
                            "pruned %d job(s) finished over %g s ago", pruned, self.retention_s
                        )
            try:
                requeued, failed = await self._db(self.store.recover_expired)
            except Exception:
                log.exception("recovering lapsed leases failed")
                continue
            if requeued or failed:
                log.warning(
                    "requeued %d job(s) and failed %d whose worker stopped",
                    len(requeued),
                    len(failed),
                )
                assert self._wake is not None
                self._wake.set()
                self._touch(*requeued, *failed)
