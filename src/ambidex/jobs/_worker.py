"""The worker: claim jobs, run them, keep their leases, recover lapsed ones, record outcomes.

A ``JobWorker`` claims due jobs (highest priority first) up to its
concurrency, runs each as a task of its own, renews the leases of what it
runs, puts back jobs whose worker died, and writes each outcome once (a group
commit: outcomes that arrive while one is being written go in the next
transaction). It works in the background (``start``/``aclose``, or ``async
with``), or in the foreground until the queue has nothing due
(``run_until_idle``). ``JobManager`` runs one beside its front desk
(``JobDesk``); on its own it is a worker process with no desk.

Whatever a job's code does stays that job's failure: an exception whose
``str()`` raises, ``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``, a
stray ``CancelledError``, a result the database cannot hold. Each ends that
job as ``failed`` with its real reason; the claim loop, the heartbeat and every
other job go on. If one of the worker's own loops still dies (a bug), the
worker stops, gives its running jobs back to the queue, logs why, and says so
in ``failure`` (``/healthz`` answers 503).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import functools
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import ambidex
from ambidex import _observe
from ambidex._contain import EscapedExit, enter_user_code, leave_user_code, task_factory_installed
from ambidex._job_model import Job, JobStatus, WorkerInfo
from ambidex._text import describe_exception, format_traceback, plain_text, shorten
from ambidex.jobs._batch import GroupCommit
from ambidex.jobs._calls import StoreCalls
from ambidex.jobs._ending import Ending, StopReason
from ambidex.jobs._metrics import JobMetrics
from ambidex.jobs._statements import MAX_ERROR_CHARS, MAX_TRACEBACK_CHARS
from ambidex.jobs._store import JobStore, Outcome, refused_data
from ambidex.jobs._wfnodes import JobCheckpoints
from ambidex.jobs._workloads import JobContext, WorkloadRegistry, default_registry
from ambidex.runtime import to_reserved_thread

__all__ = ["JobWorker", "worker_name"]

log = logging.getLogger("ambidex.jobs")

_PROGRESS_EVERY_S = 0.2
_PRUNE_EVERY_S = 3600.0


def _loggable(text: str | None, max_chars: int) -> str:
    """A job's error text for the log, bounded as the store bounds it.

    A job may raise with a message of megabytes: one log line must not carry it whole.
    """
    return shorten(text or "", max_chars)


def worker_name() -> str:
    """A name no other worker has: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


def check_timing(lease_s: float, poll_s: float) -> None:
    """Refuse a lease or poll interval that is not a positive number of seconds."""
    if not lease_s > 0 or not poll_s > 0:
        raise ValueError("lease_s and poll_s must be positive")


class _LoopDied(Exception):
    """One of the worker's own loops stopped: the worker stops too."""


class _Running:
    __slots__ = (
        "ctx",
        "ended",
        "job",
        "last_progress",
        "outcome_queued",
        "recording",
        "reporting",
        "span",
        "started",
        "stop",
        "task",
    )

    def __init__(self, job: Job, ctx: JobContext) -> None:
        self.job = job
        self.ctx = ctx
        self.task: asyncio.Task[None] | None = None
        self.started = time.monotonic()
        # Why the task was cancelled from outside: CANCELLED (a user asked) or
        # LEASE_LOST (write nothing). Shutdown cancels the task group instead;
        # the done-callback of _launch then frees the slot.
        self.stop: StopReason | None = None
        # Set once the job's outcome is being written: from then on the job
        # may leave the running state in the store at any moment, and a
        # heartbeat that no longer finds it there must not call it lost.
        self.recording = False
        # Set once its outcome is queued in the SQLite store's writer lane: its
        # slot is free for the next claim (see JobWorker._free_slots).
        self.outcome_queued = False
        self.last_progress: tuple[float | None, str | None] | None = None
        # The progress reporter is writing a report now (it must not be cancelled
        # mid-write, or that report could land after the outcome, and be lost).
        self.reporting = False
        self.ended = False
        # The attempt's span while tracing is on (``_tracing``); None: untraced.
        self.span: Any = None


def _worker_info(
    worker_id: str, concurrency: int, registry: WorkloadRegistry, lease_s: float
) -> WorkerInfo:
    """How the worker describes itself in its heartbeats (``JobStore.workers``)."""
    host, pid, _ = worker_id.rsplit(":", 2) if worker_id.count(":") >= 2 else (worker_id, "0", "")
    return WorkerInfo(
        id=worker_id,
        host=host or socket.gethostname(),
        pid=int(pid) if pid.isdigit() else os.getpid(),
        started_at=time.time(),
        heartbeat_at=0.0,
        concurrency=concurrency,
        running=0,
        workloads=registry.names(),
        lease_s=lease_s,
        version=ambidex.__version__,
    )


def _nothing_changed(*job_ids: str) -> None:
    """The default ``on_change``: no one in this process waits on jobs."""


class JobWorker:
    """Claims and runs the jobs of ``registry`` from ``store`` (see the module docstring).

    Args:
        store: the store, or what ``JobStore`` accepts (None: the default SQLite file).
        registry: the workloads this worker runs (default: the default registry).
        concurrency: jobs run at once (at least 1).
        lease_s: a claimed job is the worker's for this long, renewed every
            ``min(lease_s / 3, 1)`` s; a job whose worker stops renewing it is
            requeued after at most this long.
        poll_s: how often to look for due jobs when nothing woke the worker.
        worker_id: the name under which it claims jobs (default: ``host:pid:random``).
        retention_s: finished jobs older than this are deleted (checked hourly
            while working); None keeps them forever.
        metrics: where to record what it ran (default: metrics of its own).

    Use it on one event loop: ``async with JobWorker(...) as w: ...`` works in
    the background until the block ends; ``await w.run_until_idle()`` works
    until nothing is due.
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
        metrics: JobMetrics | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"a worker needs a concurrency of at least 1, got {concurrency}")
        check_timing(lease_s, poll_s)
        self._owns_store = not isinstance(store, JobStore)
        self.store = store if isinstance(store, JobStore) else JobStore(store)
        self.registry = registry if registry is not None else default_registry()
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.worker_id = worker_id or worker_name()
        self.retention_s = retention_s
        self.metrics = metrics if metrics is not None else JobMetrics()
        self.on_change: Callable[..., None] = _nothing_changed
        """Called with the ids of jobs this worker changed (a desk wakes their waiters)."""
        self.running: dict[str, _Running] = {}
        self.failure: str | None = None
        """Why the worker stopped on its own (None while it works, or after a clean stop)."""
        self.last_heartbeat: float | None = None
        self._db = StoreCalls()
        self._record: GroupCommit[Outcome, bool] = GroupCommit(self._finish_batch)
        self._wake = asyncio.Event()
        # Set while the claim loop waits for work (nothing due, or every slot taken).
        self._waiting = asyncio.Event()
        self._background: asyncio.Task[None] | None = None
        self._until_idle = False
        self._stopped: Counter[StopReason] = Counter()
        self._info = _worker_info(self.worker_id, concurrency, self.registry, lease_s)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Requeue jobs whose lease lapsed, then work in the background until ``aclose``."""
        await self._db(self.store.recover_expired)
        self._start_background()

    def _start_background(self) -> None:
        """Work in the background (``JobManager`` recovers lapsed leases itself first)."""
        if self._background is not None:
            raise RuntimeError("this worker is already working")
        self._wake = asyncio.Event()
        self._background = asyncio.create_task(self._work(), name="ambidex-jobs-worker")

    async def _work(self) -> None:
        await self.run()
        if self.failure is not None:  # it stopped on its own: give its jobs back now
            try:
                await self._db(self.store.release, self.worker_id)
            except Exception:
                log.exception("giving back running jobs failed; their leases will lapse")

    async def aclose(self) -> None:
        """Stop: running jobs are cancelled and put back in the queue, unfinished."""
        background, self._background = self._background, None
        if background is not None:
            background.cancel()
            await asyncio.wait({background})
        await self._record.aclose()

        def finish() -> None:
            # Every store call already started (a claim in flight, say) ends
            # before the release, so no job claimed at the last moment is left
            # to wait for its lease to lapse.
            self._db.close()
            try:
                self.store.release(self.worker_id)
            except Exception:
                log.exception("giving back running jobs failed; their leases will lapse")
            if self._owns_store:
                self.store.close()

        await to_reserved_thread(finish)

    async def __aenter__(self) -> JobWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def wake(self) -> None:
        """Look for due jobs now (a job was submitted in this process, or freed)."""
        self._wake.set()

    @property
    def running_here(self) -> int:
        """Jobs this worker is running now."""
        return len(self.running)

    async def _finish_batch(self, outcomes: builtins.list[Outcome]) -> builtins.list[bool]:
        queued = self._db.queue(self.store.finish_many, outcomes)
        if queued is None:  # not a lane: the jobs keep their slots until written
            return await self._db(self.store.finish_many, outcomes)
        # In the store's writer lane now: a claim made from here on is written after
        # these outcomes (same turn or a later one), so their slots are free already.
        for outcome in outcomes:
            running = self.running.get(outcome.job_id)
            if running is not None and running.job.attempts == outcome.attempt:
                running.outcome_queued = True
        self._wake.set()
        return await queued

    # -- the loops -------------------------------------------------------------------

    async def run(self) -> None:
        """Work until cancelled (a clean stop) or until one of the loops dies.

        Working until idle (``run_until_idle``), also until the claim loop finds
        nothing due and nothing running.
        """
        try:
            with task_factory_installed(asyncio.get_running_loop()):
                async with asyncio.TaskGroup() as tg:
                    claims = tg.create_task(self._guard("the claim loop", self._claim_loop(tg)))
                    loops = [
                        tg.create_task(self._guard("the lease heartbeat", self._heartbeats())),
                        tg.create_task(self._guard("lease recovery", self._recovery())),
                    ]
                    if self._until_idle:
                        await asyncio.wait({claims})  # its error, if any, is the group's
                        for loop in loops:
                            loop.cancel()
        except BaseExceptionGroup as group:  # a loop died, or (a bug) a job's task raised
            if self.failure is None:
                first = group.exceptions[0]
                self.failure = f"a job's task raised: {describe_exception(first)}"
                log.error("worker %s: %s", self.worker_id, self.failure, exc_info=first)
            log.error("worker %s stopped: %s", self.worker_id, self.failure)

    async def run_until_idle(self) -> dict[StopReason, int]:
        """Claim and run jobs until none is due and none is running; return how they stopped.

        Works in the foreground, on this task, with the heartbeat and lease
        recovery running meanwhile; a job its retry policy sends back to the
        queue runs again here once its wait is over, if the queue is not idle
        by then. Jobs delayed into the future are left queued. A worker working
        in the background cannot also work in the foreground.

        Returns:
            How many attempts ended here, by ``StopReason``.

        Raises:
            RuntimeError: the worker works in the background, or one of its own
                loops died (the reason is in ``failure``).
        """
        if self._background is not None:
            raise RuntimeError("this worker works in the background (start): it cannot also drain")
        self._stopped = Counter()
        self._until_idle = True
        try:
            await self._db(self.store.recover_expired)
            await self.run()
        finally:
            self._until_idle = False
        if self.failure is not None:
            await self._db(self.store.release, self.worker_id)
            raise RuntimeError(f"the worker stopped: {self.failure}")
        return dict(self._stopped)

    def problems(self) -> builtins.list[str]:
        """What stopped working in this worker (empty while all is well)."""
        return [] if self.failure is None else [self.failure]

    async def _guard(self, what: str, loop: Coroutine[Any, Any, None]) -> None:
        try:
            await loop
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.failure = f"{what} stopped: {describe_exception(exc)}"
            log.error("worker %s: %s", self.worker_id, self.failure, exc_info=exc)
            raise _LoopDied(self.failure) from None

    async def _claim_loop(self, tg: asyncio.TaskGroup) -> None:
        names = self.registry.names()
        limits = self.registry.limits()
        while True:
            self._wake.clear()
            free = self._free_slots()
            claimed: builtins.list[Job] = []
            if free > 0:
                try:
                    claimed = await self._db(
                        self.store.claim,
                        self.worker_id,
                        lease_s=self.lease_s,
                        workloads=names,
                        limit=free,
                        limits=limits,
                    )
                except Exception:
                    log.exception("claiming jobs failed; retrying in %.2f s", self.poll_s)
                else:
                    if not claimed and not self.running and self._until_idle:
                        return  # nothing due, nothing running: idle
            for job in claimed:
                self._launch(tg, job)
            if claimed:
                self.on_change(*(job.id for job in claimed))
            if not claimed or self._free_slots() <= 0:
                self._waiting.set()  # for tests that must catch it waiting
                try:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.poll_s):
                            await self._wake.wait()
                finally:
                    self._waiting.clear()

    def _free_slots(self) -> int:
        """Slots for new jobs: ``concurrency`` less the jobs running their workload.

        A job whose outcome is queued in the SQLite store's writer lane holds no
        slot (it runs nothing of the user's any more): the next claim goes out
        at once, queued after that outcome, and shares its turn. With the slot
        held until the commit, each round of short jobs cost two turns one
        after the other, claim then outcomes (measured, 4,000 ``echo`` jobs, 8
        slots: 1,000 writer turns against 500, 1.8-4.3 k against 3.7-5.3 k
        jobs/s). Elsewhere (PostgreSQL) the slot is held until the write ends,
        so a job retried at once is queued again before the next claim reads.
        """
        # Counted from the entries themselves: an attempt whose outcome is queued may
        # have been replaced already by a new attempt at the same job (a lapsed lease,
        # the job requeued and claimed here again), which runs a body of its own.
        return self.concurrency - sum(not r.outcome_queued for r in self.running.values())

    async def _heartbeats(self) -> None:
        every_s = min(self.lease_s / 3, 1.0)
        while True:
            # Only the jobs running here before the call are judged by its answer:
            # a job claimed during the call, or finishing during it, is not lost.
            snapshot = {
                job_id: running for job_id, running in self.running.items() if not running.recording
            }
            info = dataclasses.replace(self._info, running=len(self.running))
            try:
                report = await self._db(
                    self.store.heartbeat,
                    self.worker_id,
                    list(snapshot),
                    lease_s=self.lease_s,
                    info=info,
                )
            except Exception:
                log.exception("renewing leases failed")
            else:
                self.last_heartbeat = time.time()
                for job_id, running in snapshot.items():
                    if running.recording or self.running.get(job_id) is not running:
                        continue
                    if job_id in report.cancel_requested:
                        self._stop(running, StopReason.CANCELLED)
                    elif job_id not in report.held:
                        log.warning("job %s: lease lost; stopping it without recording", job_id)
                        self._stop(running, StopReason.LEASE_LOST)
            await asyncio.sleep(every_s)

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
                # Never the jobs running here: alive whatever their lease says (under
                # a FakeClock a job's sleeps jump time past it between two renewals).
                requeued, failed = await self._db(
                    self.store.recover_expired, spare=list(self.running)
                )
            except Exception:
                log.exception("recovering lapsed leases failed")
                continue
            if requeued or failed:
                log.warning(
                    "requeued %d job(s) and failed %d whose worker stopped",
                    len(requeued),
                    len(failed),
                )
                self._wake.set()
                self.on_change(*requeued, *failed)

    # -- one job ---------------------------------------------------------------------

    def _launch(self, tg: asyncio.TaskGroup, job: Job) -> None:
        ctx = JobContext(job.id, job.workload, job.attempts)
        # A workflow job checkpoints its nodes in the store, fenced by this attempt.
        ctx._checkpoints = functools.partial(
            JobCheckpoints, self.store, self._db, job.id, self.worker_id, job.attempts
        )
        running = _Running(job, ctx)
        previous = self.running.get(job.id)
        if previous is not None:
            # This worker lost that attempt's lease and has now claimed the job again.
            self._stop(previous, StopReason.LEASE_LOST)
        self.running[job.id] = running
        due = job.run_at if job.run_at is not None else job.created_at
        waited_s = max((job.started_at or due) - due, 0.0)
        self.metrics.record_start(job.workload, waited_s, len(self.running))
        task = tg.create_task(self._execute(running), name=f"ambidex-job-{job.id}")
        running.task = task

        def gone(_task: asyncio.Task[None]) -> None:
            # Also when the task was cancelled before it ever ran (its body,
            # and so its own cleanup, never started): the slot must be freed.
            if self.running.get(job.id) is running:
                del self.running[job.id]
            self.metrics.running_here = len(self.running)
            self._wake.set()

        task.add_done_callback(gone)

    def _stop(self, running: _Running, why: StopReason) -> None:
        if running.recording:  # its outcome is being written: let the write finish
            return
        if running.stop is None and running.task is not None and not running.task.done():
            running.stop = why
            running.task.cancel()

    def stop_here(self, job_id: str) -> None:
        """Stop a job running here that a user asked to cancel (it ends ``cancelled``)."""
        running = self.running.get(job_id)
        if running is not None:
            self._stop(running, StopReason.CANCELLED)

    async def _execute(self, running: _Running) -> None:
        try:
            await self._execute_job(running)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug of ours: the job's lease lapses and it runs again
            log.error(
                "job %s: the worker failed running it: %s",
                running.job.id,
                describe_exception(exc),
                exc_info=exc,
            )

    async def _execute_job(self, running: _Running) -> None:
        if not _observe.on:
            await self._attempt(running)
            return
        from ambidex.jobs import _tracing

        with _tracing.attempt_span(running.job, self.worker_id) as span:
            running.span = span
            try:
                await self._attempt(running)
            except asyncio.CancelledError:
                _tracing.stopped(span, running.stop)
                raise

    async def _attempt(self, running: _Running) -> None:
        job = running.job
        reporters: builtins.list[asyncio.Task[None]] = []
        self._wire_progress(running, reporters)
        try:
            ending = await self._run_workload(running)
        except asyncio.CancelledError:  # nothing is written: the lease is gone, or we stop
            self._stopped[running.stop or StopReason.SHUTDOWN] += 1
            raise
        finally:
            running.ended = True
            for reporter in reporters:
                if not running.reporting:  # waiting or pausing: stop it there
                    reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter  # a report being written is written first
        self._stopped[ending.reason] += 1
        try:
            running.recording = True
            await self._flush_progress(running)
            await self._write_outcome(running, ending)
        except Exception:  # a bug of ours: the job's lease lapses and it runs again
            log.exception("job %s: recording its outcome failed unexpectedly", job.id)
        finally:
            if self.running.get(job.id) is running:
                del self.running[job.id]
            self._wake.set()
        self.on_change(job.id)

    async def _write_outcome(self, running: _Running, ending: Ending) -> None:
        job = running.job
        retry_in_s = None
        if (
            ending.status is JobStatus.FAILED
            and ending.exception is not None
            and job.retried < job.retry.retries
            and job.retry.matches(ending.exception)
        ):
            retry_in_s = job.retry.delay_s(job.retried + 1)
        outcome = Outcome(
            job.id,
            self.worker_id,
            job.attempts,
            ending.status,
            ending.result,
            ending.error,
            ending.traceback,
            retry_in_s,
        )
        recorded: bool | None
        try:
            recorded = await self._record(outcome)
        except Exception as exc:
            if not refused_data(exc):  # the store failed: the lease lapses, the job runs again
                log.exception(
                    "job %s: recording its outcome failed; it runs again once its lease lapses",
                    job.id,
                )
                return
            recorded = await self._record_instead(running, exc)
            if recorded is None:
                return
            ending, retry_in_s = (
                Ending(StopReason.FAILED, error="its outcome could not be stored"),
                None,
            )
        status = "retrying" if retry_in_s is not None else ending.status.value
        if not recorded:
            if running.span is not None:
                from ambidex.jobs import _tracing

                _tracing.lease_lost(running.span)
            log.warning("job %s: lease lost before its outcome could be recorded", job.id)
            return
        if running.span is not None:
            from ambidex.jobs import _tracing

            _tracing.ended(running.span, ending, retry_in_s, job.retried + 1)
        run_s = time.monotonic() - running.started
        self.metrics.record_end(job.workload, status, run_s, final=retry_in_s is None)
        if retry_in_s is not None:
            log.info(
                "job %s (%s) attempt %d failed; retry %d of %d in %.1f s: %s",
                job.id,
                job.workload,
                job.attempts,
                job.retried + 1,
                job.retry.retries,
                retry_in_s,
                _loggable(ending.error, MAX_ERROR_CHARS),
            )
        elif ending.status is JobStatus.FAILED:
            log.warning(
                "job %s (%s) failed on attempt %d: %s%s",
                job.id,
                job.workload,
                job.attempts,
                _loggable(ending.error, MAX_ERROR_CHARS),
                f"\n{_loggable(ending.traceback.rstrip(), MAX_TRACEBACK_CHARS)}"
                if ending.traceback
                else "",
            )

    async def _record_instead(self, running: _Running, exc: Exception) -> bool | None:
        """The database refused the outcome: record a failure that says why instead.

        Returns whether the replacement was recorded, or None when the store
        failed again (the job's lease lapses and it runs again).
        """
        job = running.job
        reason = f"its outcome could not be stored: {describe_exception(exc)}"
        log.warning("job %s: %s; recording the failure instead", job.id, reason)
        try:
            return await self._record(
                Outcome(job.id, self.worker_id, job.attempts, JobStatus.FAILED, error=reason)
            )
        except Exception:
            log.exception(
                "job %s: recording its outcome failed; it runs again once its lease lapses", job.id
            )
            return None

    async def _run_workload(self, running: _Running) -> Ending:
        """Run the job's workload; return how it ended.

        Never raises, but for this worker's own cancellation (shutdown, a lost lease).
        """
        job = running.job
        deadline = asyncio.timeout(job.timeout_s)
        try:
            workload = self.registry.get(job.workload)
            token = enter_user_code()
            try:
                async with deadline:
                    result = await workload.run(job.input, running.ctx)
            finally:
                leave_user_code(token)
            return Ending(StopReason.SUCCEEDED, result)
        except asyncio.CancelledError as exc:
            if running.stop is StopReason.CANCELLED:
                return Ending(StopReason.CANCELLED, error="cancelled by request")
            task = asyncio.current_task()
            if running.stop is not None or task is None or task.cancelling():
                raise  # shutdown or a lost lease: nothing is written
            # The workload raised CancelledError itself: that is its failure.
            return self._failed(exc)
        except TimeoutError as exc:
            if deadline.expired():
                error = f"timed out after {job.timeout_s:g} s (the work was stopped)"
                return Ending(StopReason.TIMED_OUT, None, error, None, TimeoutError(error))
            return self._failed(exc)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt...: the job's, not ours
            return self._failed(exc)

    @staticmethod
    def _failed(exc: BaseException) -> Ending:
        trace = plain_text(format_traceback(exc))
        if isinstance(exc, EscapedExit):  # judged (and retried) as what the task raised
            return Ending(StopReason.FAILED, None, str(exc), trace, exc.exc)
        return Ending(StopReason.FAILED, None, describe_exception(exc), trace, exc)

    def _wire_progress(
        self, running: _Running, reporters: builtins.list[asyncio.Task[None]]
    ) -> None:
        """Let ``ctx.progress`` reach the store; the reporter task starts with the first report."""
        changed = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_progress() -> None:  # on the loop
            changed.set()
            # A report that arrives after the attempt ended (from a thread of the job's,
            # queued meanwhile) starts no reporter: the final flush writes it, and a
            # reporter started then could be left pending when the loop closes.
            if not reporters and not running.ended:
                reporters.append(asyncio.create_task(self._report_progress(running, changed)))

        def notify() -> None:  # from any thread
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to report to
                loop.call_soon_threadsafe(on_progress)

        running.ctx._listen(notify)

    async def _report_progress(self, running: _Running, changed: asyncio.Event) -> None:
        while True:
            await changed.wait()
            changed.clear()
            running.reporting = True
            try:
                await self._flush_progress(running)
            finally:
                running.reporting = False
            if running.ended:
                return
            await asyncio.sleep(_PROGRESS_EVERY_S)

    async def _flush_progress(self, running: _Running) -> None:
        latest = running.ctx._take()
        if latest is None or latest == running.last_progress:
            return  # nothing new: no event repeats what the last one said
        job = running.job
        try:
            await self._db(
                self.store.report_progress, job.id, self.worker_id, job.attempts, *latest
            )
        except Exception:
            log.exception("job %s: storing its progress failed", job.id)
            return
        running.last_progress = latest
        self.on_change(job.id)
