"""The job manager: running, progress, failures, timeouts, cancellation, leases, shutdown.

The workloads live at module level: a cpu worker process imports this module by
name (``test_manager``) to find ``spin``. Each test registers them in a fresh
``WorkloadRegistry``; gates are files, so a test can hold a job mid-run whether
the workload runs on the loop or on a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

import ambidex as ax
from ambidex.jobs import (
    Job,
    JobContext,
    JobInputError,
    JobManager,
    JobStatus,
    JobStore,
    UnknownWorkloadError,
    WorkloadRegistry,
)

LEASE_S = 2.0
POLL_S = 0.05

# -- files as gates and markers (sync helpers: a file check never blocks for long) -----


def exists(path: str | Path) -> bool:
    return Path(path).exists()


def touch(path: str | Path) -> None:
    Path(path).write_text("")


# -- workloads -------------------------------------------------------------------------


async def add(a: int, b: int = 1) -> dict[str, int]:
    return {"sum": a + b}


async def report_and_return(ctx: JobContext) -> str:
    """Report progress and return at once: the report is written while the outcome is."""
    ctx.progress(1.0, "done")
    return "important result"


async def steps(n: int, ctx: JobContext) -> str:
    for i in range(n):
        ctx.progress((i + 1) / n, f"step {i + 1}")
        await asyncio.sleep(0.01)
    return f"{n} steps"


async def gated(gate: str, ctx: JobContext) -> str:
    """Report half way, then wait until the file ``gate`` exists."""
    ctx.progress(0.5, "halfway")
    while not exists(gate):
        await asyncio.sleep(0.01)
    return "opened"


def gated_blocking(gate: str, ctx: JobContext) -> str:
    """``gated`` as a plain function (it runs on an I/O thread)."""
    ctx.progress(0.5, "halfway")
    deadline = time.monotonic() + 10
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return "opened"


async def boom(message: str) -> None:
    raise ValueError(message)


async def hang(marker: str) -> None:
    """Write ``<marker>.started``, sleep, and write ``<marker>.stopped`` however it ends."""
    touch(f"{marker}.started")
    try:
        await asyncio.sleep(30)
    finally:
        touch(f"{marker}.stopped")


@ax.cpu
def spin(pid_path: str) -> int:
    """Write this worker's pid, then keep a CPU busy (up to 30 s)."""
    tmp = f"{pid_path}.tmp"
    Path(tmp).write_text(str(os.getpid()))
    os.replace(tmp, pid_path)
    deadline = time.monotonic() + 30
    n = 0
    while time.monotonic() < deadline:
        n += 1
    return n


@ax.cpu
def cube(n: int) -> int:
    return n**3


async def double(x: float) -> float:
    return x * 2


async def plus_one(x: float) -> float:
    return x + 1


# -- helpers ---------------------------------------------------------------------------


@pytest.fixture
def registry() -> WorkloadRegistry:
    reg = WorkloadRegistry()
    for fn in (add, steps, gated, gated_blocking, boom, hang, spin, cube):
        reg.register(fn)
    wf = ax.Workflow("calc", inputs={"x": float})
    doubled = wf.node("double", double, input={"x": wf.inputs.x})
    wf.node("plus", plus_one, input={"x": doubled.output})
    reg.register_workflow(wf)
    return reg


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "jobs.sqlite"


def manager(store: JobStore | Path | str, registry: WorkloadRegistry, **options: Any) -> JobManager:
    options.setdefault("lease_s", LEASE_S)
    options.setdefault("poll_s", POLL_S)
    return JobManager(store, registry=registry, **options)


async def until(predicate: Callable[[], Any], timeout_s: float = 5.0) -> None:
    """Poll ``predicate`` (sync or async) until it is true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.01)


async def finished(m: JobManager, job_id: str, timeout_s: float = 5.0) -> Job:
    job = await m.wait(job_id, timeout_s=timeout_s)
    assert job.status.terminal, f"job still {job.status.value} after {timeout_s} s"
    return job


async def halfway(m: JobManager, job_id: str, timeout_s: float = 5.0) -> None:
    """Return once the job's 'halfway' progress is stored (its progress event says so)."""
    async with asyncio.timeout(timeout_s), contextlib.aclosing(m.watch(job_id)) as events:
        async for event in events:
            if event.kind == "progress" and event.data.get("message") == "halfway":
                return
    pytest.fail(f"job {job_id} finished without reporting 'halfway'")


def process_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- running ---------------------------------------------------------------------------


async def test_a_job_runs_and_succeeds_with_its_result(
    store: JobStore, registry: WorkloadRegistry
) -> None:
    async with manager(store, registry) as m:
        job = await m.submit("add", {"a": 2, "b": 40})
        assert job.status is JobStatus.QUEUED
        done = await finished(m, job.id)
        assert done.status is JobStatus.SUCCEEDED
        assert done.result == {"sum": 42}
        assert done.input == {"a": 2, "b": 40}
        assert (done.attempts, done.progress, done.error) == (1, 1.0, None)
        assert done.worker == m.worker_id
        assert done.started_at is not None
        assert done.finished_at is not None
        assert done.created_at <= done.started_at <= done.finished_at
        assert m.finished_counts["succeeded"] == 1
        assert m.running_here == 0


async def test_input_defaults_are_filled_in_and_stored(
    db: Path, registry: WorkloadRegistry
) -> None:
    async with manager(db, registry) as m:
        job = await m.submit("add", {"a": 1})
        assert job.input == {"a": 1, "b": 1}
        assert (await finished(m, job.id)).result == {"sum": 2}


async def test_a_cpu_workload_runs_in_a_worker_process(
    db: Path, registry: WorkloadRegistry
) -> None:
    async with manager(db, registry) as m:
        job = await m.submit("cube", {"n": 3})
        done = await finished(m, job.id, timeout_s=10)
        assert (done.status, done.result) == (JobStatus.SUCCEEDED, 27)


async def test_watch_yields_the_events_of_a_job_in_order(
    db: Path, registry: WorkloadRegistry
) -> None:
    async with manager(db, registry) as m:
        job = await m.submit("steps", {"n": 3})
        events = [e async for e in m.watch(job.id)]

    kinds = [e.kind for e in events]
    assert kinds[:2] == ["submitted", "started"]
    assert kinds[-1] == "succeeded"
    assert set(kinds[2:-1]) == {"progress"}
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert events[-2].data == {"progress": 1.0, "message": "step 3"}
    assert events[-1].data["status"] == "succeeded"


async def test_watch_from_a_later_event_and_of_a_finished_job(
    db: Path, registry: WorkloadRegistry
) -> None:
    async with manager(db, registry) as m:
        job = await m.submit("add", {"a": 1})
        await finished(m, job.id)
        everything = [e async for e in m.watch(job.id)]
        rest = [e async for e in m.watch(job.id, after=everything[0].seq)]
    assert [e.kind for e in everything] == ["submitted", "started", "succeeded"]
    assert rest == everything[1:]


@pytest.mark.parametrize("workload", ["gated", "gated_blocking"])
async def test_progress_reaches_the_store_while_the_job_runs(
    db: Path, registry: WorkloadRegistry, tmp_path: Path, workload: str
) -> None:
    gate = tmp_path / "gate"
    async with manager(db, registry) as m:
        job = await m.submit(workload, {"gate": str(gate)})
        await halfway(m, job.id)
        running = await m.get(job.id)
        assert running.progress == 0.5
        touch(gate)
        done = await finished(m, job.id)
        assert (done.status, done.result, done.progress) == (JobStatus.SUCCEEDED, "opened", 1.0)
        progress = [e for e in await m.events(job.id) if e.kind == "progress"]
        assert [e.data for e in progress] == [{"progress": 0.5, "message": "halfway"}]


async def test_a_workflow_runs_as_a_job(db: Path, registry: WorkloadRegistry) -> None:
    async with manager(db, registry) as m:
        job = await m.submit("calc", {"x": 2})
        done = await finished(m, job.id)
        events = await m.events(job.id)

    assert done.status is JobStatus.SUCCEEDED
    assert isinstance(done.result, dict)
    assert done.result["succeeded"] is True
    assert done.result["workflow"] == "calc"
    assert done.result["nodes"]["double"]["output"] == 4.0
    assert done.result["nodes"]["plus"]["output"] == 5.0
    progress = [e.data for e in events if e.kind == "progress"]
    assert progress
    assert progress[-1] == {"progress": 1.0, "message": "plus finished"}


# -- input validation ------------------------------------------------------------------


async def test_input_that_does_not_fit_the_schema_names_the_field(
    db: Path, registry: WorkloadRegistry
) -> None:
    async with manager(db, registry, concurrency=0) as m:
        with pytest.raises(JobInputError, match=r"'add'.*\ba: ") as wrong_type:
            await m.submit("add", {"a": "not a number"})
        assert wrong_type.value.errors[0]["loc"] == ["a"]
        assert isinstance(wrong_type.value, ValueError)

        with pytest.raises(JobInputError, match=r"\ba: Field required"):
            await m.submit("add", {"b": 2})
        with pytest.raises(JobInputError, match=r"\bextra: Extra inputs are not permitted"):
            await m.submit("add", {"a": 1, "extra": True})
        with pytest.raises(JobInputError, match=r"\bx: "):
            await m.submit("calc", {"x": "many"})
        assert sum((await m.counts()).values()) == 0


async def test_an_unknown_workload_lists_the_known_ones(
    db: Path, registry: WorkloadRegistry
) -> None:
    async with manager(db, registry, concurrency=0) as m:
        with pytest.raises(UnknownWorkloadError) as info:
            await m.submit("nope", {})
    message = str(info.value)
    assert message.startswith("unknown workload 'nope'; known workloads: ")
    for name in ("add", "calc", "cube", "gated", "hang", "spin"):
        assert name in message
    assert isinstance(info.value, KeyError)


# -- failures and timeouts -------------------------------------------------------------


async def test_a_workload_that_raises_fails_with_its_error(
    db: Path, registry: WorkloadRegistry
) -> None:
    async with manager(db, registry) as m:
        job = await m.submit("boom", {"message": "the input was odd"})
        done = await finished(m, job.id)
        assert done.status is JobStatus.FAILED
        assert done.error == "ValueError: the input was odd"
        assert done.result is None
        assert done.attempts == 1
        assert (await m.events(job.id))[-1].data["error"] == done.error
        assert m.finished_counts["failed"] == 1


async def test_a_job_past_its_timeout_fails_and_its_work_is_cancelled(
    db: Path, registry: WorkloadRegistry, tmp_path: Path
) -> None:
    marker = tmp_path / "hang"
    async with manager(db, registry) as m:
        job = await m.submit("hang", {"marker": str(marker)}, timeout_s=0.3)
        started = time.monotonic()
        done = await finished(m, job.id)
        elapsed = time.monotonic() - started
    assert done.status is JobStatus.FAILED
    assert done.error is not None
    assert done.error.startswith("timed out after 0.3 s")
    assert 0.25 < elapsed < 2.0
    assert exists(f"{marker}.started")
    assert exists(f"{marker}.stopped")  # the coroutine's finally ran


# -- cancellation ----------------------------------------------------------------------


async def test_cancel_of_a_running_io_job_stops_it_quickly(
    db: Path, registry: WorkloadRegistry, tmp_path: Path
) -> None:
    marker = tmp_path / "hang"
    async with manager(db, registry) as m:
        job = await m.submit("hang", {"marker": str(marker)})
        await until(lambda: exists(f"{marker}.started"))
        started = time.monotonic()
        asked = await m.cancel(job.id)
        assert asked.status is JobStatus.RUNNING
        assert asked.cancel_requested is True
        done = await finished(m, job.id, timeout_s=2)
        assert time.monotonic() - started < 1.5
        kinds = [e.kind for e in await m.events(job.id)]
    assert done.status is JobStatus.CANCELLED
    assert done.error == "cancelled by request"
    assert exists(f"{marker}.stopped")
    assert kinds == ["submitted", "started", "cancel_requested", "cancelled"]


async def test_cancel_of_a_queued_job_is_immediate(db: Path, registry: WorkloadRegistry) -> None:
    async with manager(db, registry, concurrency=0) as m:
        job = await m.submit("add", {"a": 1})
        cancelled = await m.cancel(job.id)
        assert cancelled.status is JobStatus.CANCELLED
        assert (await m.get(job.id)).status is JobStatus.CANCELLED


async def test_cancel_of_a_running_cpu_job_kills_its_worker_process(
    db: Path, registry: WorkloadRegistry, tmp_path: Path
) -> None:
    pid_path = tmp_path / "pid"
    async with manager(db, registry) as m:
        job = await m.submit("spin", {"pid_path": str(pid_path)})
        await until(lambda: exists(pid_path), timeout_s=10)
        pid = int(pid_path.read_text())
        assert psutil.pid_exists(pid)
        assert pid != os.getpid()
        await m.cancel(job.id)
        done = await finished(m, job.id, timeout_s=3)
        assert done.status is JobStatus.CANCELLED
        await until(lambda: process_gone(pid), timeout_s=5)


async def test_cancel_by_another_manager_reaches_the_worker_by_heartbeat(
    db: Path, registry: WorkloadRegistry, tmp_path: Path
) -> None:
    marker = tmp_path / "hang"
    async with (
        manager(db, registry, lease_s=0.6) as worker,
        manager(db, registry, concurrency=0) as desk,
    ):
        job = await desk.submit("hang", {"marker": str(marker)})
        await until(lambda: exists(f"{marker}.started"))
        await desk.cancel(job.id)
        done = await finished(desk, job.id, timeout_s=3)
        assert done.status is JobStatus.CANCELLED
        assert done.worker == worker.worker_id
    assert exists(f"{marker}.stopped")


async def test_cancel_of_an_unknown_job_raises(db: Path, registry: WorkloadRegistry) -> None:
    async with manager(db, registry, concurrency=0) as m:
        with pytest.raises(KeyError, match="no job with id 'missing'"):
            await m.cancel("missing")
        with pytest.raises(KeyError, match="no job with id 'missing'"):
            await m.get("missing")


# -- many managers, shutdown, lost workers ---------------------------------------------


async def test_a_front_desk_only_stores_jobs_and_a_worker_runs_them(
    db: Path, registry: WorkloadRegistry
) -> None:
    async with manager(db, registry, concurrency=0) as desk:
        job = await desk.submit("add", {"a": 5})
        still = await desk.wait(job.id, timeout_s=3 * POLL_S)
        assert still.status is JobStatus.QUEUED
        assert desk.running_here == 0

        async with manager(db, registry, concurrency=2) as worker:
            done = await finished(desk, job.id)
            assert done.status is JobStatus.SUCCEEDED
            assert done.result == {"sum": 6}
            assert done.worker == worker.worker_id


async def test_aclose_puts_a_running_job_back_and_another_manager_finishes_it(
    db: Path, registry: WorkloadRegistry, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    first = manager(db, registry)
    async with first:
        job = await first.submit("gated", {"gate": str(gate)})
        await halfway(first, job.id)

    with JobStore(db) as store:
        back = store.get(job.id)
        assert back is not None
        assert (back.status, back.attempts) == (JobStatus.QUEUED, 0)
        requeued = store.events(job.id)[-1]
        assert requeued.kind == "requeued"
        assert requeued.data["reason"] == f"worker {first.worker_id} shut down"

    touch(gate)
    async with manager(db, registry) as second:
        done = await finished(second, job.id)
    assert (done.status, done.result, done.attempts) == (JobStatus.SUCCEEDED, "opened", 1)
    assert done.worker == second.worker_id


async def test_a_job_whose_lease_lapses_is_requeued_and_finished_by_a_live_manager(
    db: Path, registry: WorkloadRegistry
) -> None:
    with JobStore(db) as store:
        job = store.submit("add", {"a": 1, "b": 2})
        (dead,) = store.claim("dead", lease_s=0.2)
        assert dead.attempts == 1

        async with manager(store, registry, lease_s=0.6) as m:
            done = await finished(m, job.id)
        assert done.status is JobStatus.SUCCEEDED
        assert done.result == {"sum": 3}
        assert done.attempts == 2
        assert done.worker == m.worker_id
        assert [e.kind for e in store.events(job.id)] == [
            "submitted",
            "started",
            "requeued",
            "started",
            "succeeded",
        ]
        # the dead worker, should it wake up, can no longer record anything
        assert not store.finish(job.id, "dead", 1, JobStatus.FAILED, error="late")
        assert store.get(job.id) == done


async def test_aclose_stops_a_worker_that_is_being_woken_at_that_moment(
    db: Path, registry: WorkloadRegistry
) -> None:
    # submit() wakes the idle worker and aclose() cancels it in the same step
    # of the loop: the cancellation must not be lost (asyncio.wait_for on
    # Python 3.11 would swallow it and the worker would poll forever).
    m = manager(db, registry, poll_s=10.0)
    await m.start()
    first = await m.submit("add", {"a": 1})
    await finished(m, first.id)
    assert m.worker is not None
    await m.worker._waiting.wait()  # the worker has settled into its idle wait
    job = await m.submit("add", {"a": 2})
    closing = asyncio.create_task(m.aclose())
    await asyncio.wait([closing], timeout=3)
    assert closing.done(), "aclose() hangs: the worker missed its cancellation"
    await closing

    async with manager(db, registry) as again:
        done = await finished(again, job.id)
    assert (done.status, done.result) == (JobStatus.SUCCEEDED, {"sum": 3})


class _SlowHeartbeatStore(JobStore):
    """A store whose lease renewals take long, so that jobs are claimed and finish meanwhile."""

    def heartbeat(self, worker: str, job_ids: Any, *, lease_s: float) -> Any:
        time.sleep(0.3)
        return super().heartbeat(worker, job_ids, lease_s=lease_s)


async def test_jobs_claimed_or_finished_during_a_heartbeat_are_not_called_lost(
    db: Path, registry: WorkloadRegistry
) -> None:
    store = _SlowHeartbeatStore(db)
    try:
        async with manager(store, registry, concurrency=4, lease_s=0.9) as m:
            jobs = [await m.submit("steps", {"n": 3}) for _ in range(60)]
            done = [await finished(m, j.id, timeout_s=30) for j in jobs]
            assert m.running_here == 0
    finally:
        store.close()
    assert [j.status for j in done] == [JobStatus.SUCCEEDED] * 60
    assert {j.attempts for j in done} == {1}


async def test_finished_jobs_past_the_retention_are_pruned_while_working(
    db: Path, registry: WorkloadRegistry
) -> None:
    async with manager(db, registry, lease_s=0.4, retention_s=0.05) as m:
        job = await m.submit("add", {"a": 1})
        assert (await finished(m, job.id)).status is JobStatus.SUCCEEDED
        await until(lambda: m.store.get(job.id) is None)
        assert m.store.events(job.id) == []


class _FinishFailsOnceStore(JobStore):
    """A store whose first outcome write fails, as during a database failover."""

    failed = False

    def finish_many(self, outcomes: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise RuntimeError("the database went away for a moment")
        return super().finish_many(outcomes)


async def test_a_failed_outcome_write_leaves_the_worker_running_and_the_job_runs_again(
    db: Path, registry: WorkloadRegistry
) -> None:
    store = _FinishFailsOnceStore(db)
    try:
        async with manager(store, registry, lease_s=0.6) as m:
            first = await m.submit("add", {"a": 1})
            again = await finished(m, first.id, timeout_s=10)
            later = await finished(m, (await m.submit("add", {"a": 2})).id)
    finally:
        store.close()
    assert (again.status, again.result, again.attempts) == (JobStatus.SUCCEEDED, {"sum": 2}, 2)
    assert later.status is JobStatus.SUCCEEDED


class _SlowProgressStore(JobStore):
    """A store whose progress writes take a while, so a cancel can land while one is in flight."""

    def report_progress(self, *args: Any) -> bool:
        time.sleep(0.4)
        return super().report_progress(*args)


async def test_a_cancel_while_the_outcome_is_being_written_keeps_the_result(
    db: Path, registry: WorkloadRegistry
) -> None:
    registry.register(report_and_return)
    store = _SlowProgressStore(db)
    try:
        async with manager(store, registry) as m:
            job = await m.submit("report_and_return")
            running = m.worker.running if m.worker else {}
            await until(lambda: job.id in running and running[job.id].recording)
            await m.cancel(job.id)
            done = await finished(m, job.id)
    finally:
        store.close()
    assert (done.status, done.result, done.attempts) == (
        JobStatus.SUCCEEDED,
        "important result",
        1,
    )


async def test_input_that_json_cannot_store_is_refused_and_spoils_no_other_submit(
    db: Path, registry: WorkloadRegistry
) -> None:
    registry.register(double)
    async with manager(db, registry, concurrency=0) as m:
        bad = m.submit("double", {"x": float("nan")})
        good = [m.submit("add", {"a": i}) for i in range(20)]
        results = await asyncio.gather(bad, *good, return_exceptions=True)
    assert isinstance(results[0], JobInputError)
    assert "x: nan is not a JSON number" in str(results[0])
    assert all(isinstance(r, Job) for r in results[1:])
