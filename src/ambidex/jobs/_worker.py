"""The worker half of a job manager: claim jobs, run them, keep their leases, record outcomes.

A ``Worker`` claims due jobs (highest priority first) up to its concurrency,
runs each as a task of its own, renews the leases of what it runs, puts back
jobs whose worker died, and writes each outcome once (through the manager's
group commit).

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
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import ambidex
from ambidex._job_model import Job, JobStatus, WorkerInfo
from ambidex._text import describe_exception, format_traceback, plain_text
from ambidex.jobs._contain import EscapedExit, enter_job, leave_job, task_factory_installed
from ambidex.jobs._metrics import JobMetrics
from ambidex.jobs._store import JobStore, Outcome, refused_data
from ambidex.jobs._workloads import JobContext, WorkloadRegistry

__all__ = ["Worker", "worker_name"]

T = TypeVar("T")
log = logging.getLogger("ambidex.jobs")

_PROGRESS_EVERY_S = 0.2
_PRUNE_EVERY_S = 3600.0


def worker_name() -> str:
    """A name no other worker has: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


class _LoopDied(Exception):
    """One of the worker's own loops stopped: the worker stops too."""


@dataclass
class _Ending:
    """How a job's attempt ended, before it is written."""

    status: JobStatus
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    exception: BaseException | None = None
    """What the workload raised (a timeout counts as ``TimeoutError``): retried if the
    job's retry policy names it."""


class _Running:
    __slots__ = (
        "ctx",
        "ended",
        "job",
        "last_progress",
        "recording",
        "reporting",
        "started",
        "stop",
        "task",
    )

    def __init__(self, job: Job, ctx: JobContext) -> None:
        self.job = job
        self.ctx = ctx
        self.task: asyncio.Task[None] | None = None
        self.started = time.monotonic()
        # Why the task was cancelled from outside: "cancel" (a user asked) or
        # "lost" (the lease is gone: write nothing). Shutdown cancels the task
        # group instead; the done-callback of _launch then frees the slot.
        self.stop: str | None = None
        # Set once the job's outcome is being written: from then on the job
        # may leave the running state in the store at any moment, and a
        # heartbeat that no longer finds it there must not call it lost.
        self.recording = False
        self.last_progress: tuple[float | None, str | None] | None = None
        # The progress reporter is writing a report now (it must not be cancelled
        # mid-write, or that report could land after the outcome, and be lost).
        self.reporting = False
        self.ended = False


Db = Callable[..., Awaitable[Any]]


class Worker:
    """Runs jobs of ``registry`` from ``store`` (see the module docstring).

    It borrows from its manager: ``db`` (runs a store call off the loop),
    ``record`` (the group commit of outcomes), ``touch`` (wakes the waiters of
    jobs) and the ``wake`` event (set when a job was submitted or freed a slot).
    """

    def __init__(
        self,
        *,
        store: JobStore,
        registry: WorkloadRegistry,
        db: Db,
        record: Callable[[Outcome], Awaitable[bool]],
        touch: Callable[..., None],
        wake: asyncio.Event,
        metrics: JobMetrics,
        worker_id: str,
        concurrency: int,
        lease_s: float,
        poll_s: float,
        retention_s: float | None,
    ) -> None:
        self.store = store
        self.registry = registry
        self._db = db
        self._record = record
        self._touch = touch
        self._wake = wake
        self.metrics = metrics
        self.worker_id = worker_id
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.retention_s = retention_s
        self.running: dict[str, _Running] = {}
        self.failure: str | None = None
        """Why the worker stopped on its own (None while it works, or after a clean stop)."""
        self.last_heartbeat: float | None = None
        host, pid, _ = (
            worker_id.rsplit(":", 2) if worker_id.count(":") >= 2 else (worker_id, "0", "")
        )
        self._info = WorkerInfo(
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

    # -- the loops -------------------------------------------------------------------

    async def run(self) -> None:
        """Work until cancelled (a clean stop) or until one of the loops dies."""
        try:
            with task_factory_installed(asyncio.get_running_loop()):
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._guard("the claim loop", self._claim_loop(tg)))
                    tg.create_task(self._guard("the lease heartbeat", self._heartbeats()))
                    tg.create_task(self._guard("lease recovery", self._recovery()))
        except BaseExceptionGroup as group:  # a loop died, or (a bug) a job's task raised
            if self.failure is None:
                first = group.exceptions[0]
                self.failure = f"a job's task raised: {describe_exception(first)}"
                log.error("worker %s: %s", self.worker_id, self.failure, exc_info=first)
            log.error("worker %s stopped: %s", self.worker_id, self.failure)

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
            free = self.concurrency - len(self.running)
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
            for job in claimed:
                self._launch(tg, job)
            if claimed:
                self._touch(*(job.id for job in claimed))
            if not claimed or len(self.running) >= self.concurrency:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_s):
                        await self._wake.wait()

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
                        self._stop(running, "cancel")
                    elif job_id not in report.held:
                        log.warning("job %s: lease lost; stopping it without recording", job_id)
                        self._stop(running, "lost")
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
                self._wake.set()
                self._touch(*requeued, *failed)

    # -- one job ---------------------------------------------------------------------

    def _launch(self, tg: asyncio.TaskGroup, job: Job) -> None:
        ctx = JobContext(job.id, job.workload, job.attempts)
        running = _Running(job, ctx)
        previous = self.running.get(job.id)
        if previous is not None:
            # This worker lost that attempt's lease and has now claimed the job again.
            self._stop(previous, "lost")
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

    def _stop(self, running: _Running, why: str) -> None:
        if running.recording:  # its outcome is being written: let the write finish
            return
        if running.stop is None and running.task is not None and not running.task.done():
            running.stop = why
            running.task.cancel()

    def stop_here(self, job_id: str) -> None:
        """Stop a job running here that a user asked to cancel (it ends ``cancelled``)."""
        running = self.running.get(job_id)
        if running is not None:
            self._stop(running, "cancel")

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
        job = running.job
        reporters: builtins.list[asyncio.Task[None]] = []
        self._wire_progress(running, reporters)
        try:
            ending = await self._run_workload(running)
        finally:
            running.ended = True
            for reporter in reporters:
                if not running.reporting:  # waiting or pausing: stop it there
                    reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter  # a report being written is written first
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
        self._touch(job.id)

    async def _write_outcome(self, running: _Running, ending: _Ending) -> None:
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
                _Ending(JobStatus.FAILED, error="its outcome could not be stored"),
                None,
            )
        status = "retrying" if retry_in_s is not None else ending.status.value
        if not recorded:
            log.warning("job %s: lease lost before its outcome could be recorded", job.id)
            return
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
                ending.error,
            )
        elif ending.status is JobStatus.FAILED:
            log.warning(
                "job %s (%s) failed on attempt %d: %s%s",
                job.id,
                job.workload,
                job.attempts,
                ending.error,
                f"\n{ending.traceback.rstrip()}" if ending.traceback else "",
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

    async def _run_workload(self, running: _Running) -> _Ending:
        """Run the job's workload; return how it ended.

        Never raises, but for this worker's own cancellation (shutdown, a lost lease).
        """
        job = running.job
        deadline = asyncio.timeout(job.timeout_s)
        try:
            workload = self.registry.get(job.workload)
            token = enter_job()
            try:
                async with deadline:
                    result = await workload.run(job.input, running.ctx)
            finally:
                leave_job(token)
            return _Ending(JobStatus.SUCCEEDED, result)
        except asyncio.CancelledError as exc:
            if running.stop == "cancel":
                return _Ending(JobStatus.CANCELLED, error="cancelled by request")
            task = asyncio.current_task()
            if running.stop is not None or task is None or task.cancelling():
                raise  # shutdown or a lost lease: nothing is written
            # The workload raised CancelledError itself: that is its failure.
            return self._failed(exc)
        except TimeoutError as exc:
            if deadline.expired():
                error = f"timed out after {job.timeout_s:g} s (the work was stopped)"
                return _Ending(JobStatus.FAILED, None, error, None, TimeoutError(error))
            return self._failed(exc)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt...: the job's, not ours
            return self._failed(exc)

    @staticmethod
    def _failed(exc: BaseException) -> _Ending:
        trace = plain_text(format_traceback(exc))
        if isinstance(exc, EscapedExit):  # judged (and retried) as what the task raised
            return _Ending(JobStatus.FAILED, None, str(exc), trace, exc.exc)
        return _Ending(JobStatus.FAILED, None, describe_exception(exc), trace, exc)

    def _wire_progress(
        self, running: _Running, reporters: builtins.list[asyncio.Task[None]]
    ) -> None:
        """Let ``ctx.progress`` reach the store; the reporter task starts with the first report."""
        changed = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_progress() -> None:  # on the loop
            changed.set()
            if not reporters:
                reporters.append(asyncio.create_task(self._report_progress(running, changed)))

        def notify() -> None:  # from any thread
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to report to
                loop.call_soon_threadsafe(on_progress)

        running.ctx._notify = notify

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
        self._touch(job.id)
