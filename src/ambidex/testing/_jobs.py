"""A throwaway job store, a job manager over one, and ``drain``: run the queue to empty, here.

A test submits jobs as users do (``manager.submit``, ``ax.Client``), then calls
``drain`` to run them in the test's own process and loop, and reads the
finished jobs back. The store is honest SQLite (the engine of every default
install), in a fresh temporary file that is deleted when the store closes.
"""

from __future__ import annotations

import asyncio
import builtins
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from ambidex._clock import current_clock
from ambidex.jobs import Job, JobManager, JobStatus, JobStore, JobWorker, WorkloadRegistry
from ambidex.runtime import to_thread
from ambidex.testing._clock import FakeClock

__all__ = ["drain", "drain_sync", "open_job_manager", "temporary_store"]

_SHM = Path("/dev/shm")  # RAM-backed on Linux: a throwaway store costs no disk writes there

# drain's leases under a FakeClock: ten years. The worker renews its leases on real time
# (every second at most), while a job's own sleeps (a rate limit, a retry's backoff) jump
# virtual time ahead by any amount in between: a lease of seconds would lapse under a
# job that is running here, its own recovery would requeue it, and the job would run
# again (and again, and fail). drain's worker is in this process: while it runs it is
# alive, so nothing is lost by a lease that jumps cannot outrun.
_FAKE_CLOCK_LEASE_S = 10 * 365 * 86400.0


class _TemporaryStore(JobStore):
    """A ``JobStore`` whose directory is deleted when it closes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            super().__init__(directory / "jobs.sqlite")
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise

    def close(self) -> None:
        """Close the store's connections and delete its files."""
        try:
            super().close()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def temporary_store() -> JobStore:
    """A ``JobStore`` on a fresh SQLite file, deleted when the store is closed.

    The file is in ``/dev/shm`` (memory) where there is one, else in the
    temporary directory. Use it with ``with``, or close it yourself.
    """
    parent = _SHM if _SHM.is_dir() and _writable(_SHM) else None
    return _TemporaryStore(Path(tempfile.mkdtemp(prefix="ambidex-jobs-", dir=parent)))


def _writable(directory: Path) -> bool:
    try:
        tempfile.TemporaryFile(dir=directory).close()
    except OSError:
        return False
    return True


@asynccontextmanager
async def open_job_manager(
    registry: WorkloadRegistry | None = None, **options: Any
) -> AsyncIterator[JobManager]:
    """A started ``JobManager`` over a ``temporary_store``, closed (and the store deleted) after.

    It runs nothing by itself (``concurrency=0`` unless given): the test
    submits, then ``await drain(manager)`` runs the queue. Other ``options``
    go to ``JobManager`` (``lease_s``, ``poll_s``...).
    """
    options.setdefault("concurrency", 0)
    store = await to_thread(temporary_store)
    try:
        async with JobManager(store, registry, **options) as manager:
            yield manager
    finally:
        await to_thread(store.close)


async def drain(
    target: JobManager | JobStore,
    registry: WorkloadRegistry | None = None,
    *,
    concurrency: int = 8,
    lease_s: float = 15.0,
) -> builtins.list[Job]:
    """Run queued jobs in this process until none is due and none is running.

    A ``JobWorker`` claims and runs the jobs, as ``ambidex worker`` would,
    then stops. Jobs whose lease lapsed are requeued first. Under a
    ``FakeClock`` (``autojump`` or not), the clock is then moved forward to the
    next queued job's start (a retry's backoff, a ``delay_s``) and the queue is
    run again, until nothing is left queued that could run here: so in a test,
    retried and delayed jobs finish too, without waiting. Without one, jobs not
    yet due stay queued. Jobs this drain cannot run stay queued either way, and
    move no time: those of workloads the registry lacks, and due ones it did not
    claim (a workload at its concurrency cap with jobs running elsewhere).

    Args:
        target: a ``JobManager`` (its store and registry are used) or a ``JobStore``.
        registry: the workloads to run (default: the manager's, or the default registry).
        concurrency: jobs run at once.
        lease_s: the lease of each claim. Under a ``FakeClock`` the claims are
            held for ten virtual years instead: a job's own sleeps jump virtual
            time by any amount between two (real-time) renewals, and would
            otherwise lapse the lease of a job running here.

    Returns:
        The jobs this drain ran or changed, as they are now, in the order first touched.

    Raises:
        ValueError: ``target`` is a manager that runs jobs itself (``concurrency > 0``).
        RuntimeError: the worker stopped on its own (a bug; the reason is in the message).
    """
    if isinstance(target, JobManager):
        if target.worker is not None:
            raise ValueError(
                "drain runs the queue itself: give it a manager that runs nothing "
                "(concurrency=0, as open_job_manager makes) or the manager's store"
            )
        store, registry = target.store, registry if registry is not None else target.registry
    else:
        store = target
    if isinstance(current_clock(), FakeClock):
        lease_s = max(lease_s, _FAKE_CLOCK_LEASE_S)
    touched: dict[str, None] = {}
    worker = JobWorker(store, registry, concurrency=concurrency, lease_s=lease_s, retention_s=None)
    worker.on_change = lambda *job_ids: touched.update(dict.fromkeys(job_ids))
    names = frozenset(worker.registry.names())
    try:
        while True:
            stopped = await worker.run_until_idle()
            clock = current_clock()
            if not isinstance(clock, FakeClock):
                break
            next_start = await to_thread(_next_start, store, names)
            if next_start is None:
                break
            wait_s = next_start - clock.time()
            if wait_s <= 0 and not stopped:
                break  # due, yet not claimed by a round that ran nothing: time would not help
            clock.advance(max(wait_s, 0.0))
    finally:
        await worker.aclose()
    jobs = await to_thread(lambda: [store.get(job_id) for job_id in touched])
    return [job for job in jobs if job is not None]


def _next_start(store: JobStore, workloads: frozenset[str]) -> float | None:
    """The earliest ``run_at`` of the queued jobs of ``workloads`` (None: none queued)."""
    earliest: float | None = None
    cursor: str | None = None
    while True:
        page = store.list(status=[JobStatus.QUEUED], limit=500, cursor=cursor)
        for job in page.jobs:
            if job.workload not in workloads:
                continue  # nothing here runs it: its start is no reason to move time
            start = job.run_at if job.run_at is not None else job.created_at
            earliest = start if earliest is None else min(earliest, start)
        cursor = page.next_cursor
        if cursor is None:
            return earliest


def drain_sync(
    store: JobStore,
    registry: WorkloadRegistry | None = None,
    *,
    concurrency: int = 8,
    lease_s: float = 15.0,
) -> builtins.list[Job]:
    """``drain`` for sync tests: runs the queue of ``store`` on an event loop of its own.

    Call it from a thread with no running event loop (use ``await drain`` there).

    Raises:
        RuntimeError: called where an event loop is running.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass  # no loop here: run one
    else:  # before making the coroutine, which would only be dropped unawaited
        raise RuntimeError(
            "drain_sync was called inside a running event loop, which it would block: "
            "use `await ambidex.testing.drain(store, registry)` in async code"
        )
    return asyncio.run(drain(store, registry, concurrency=concurrency, lease_s=lease_s))
