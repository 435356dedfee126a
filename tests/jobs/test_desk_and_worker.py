"""The desk and the worker apart: a desk that only takes jobs, a worker that only runs them.

Also why an attempt stopped (``StopReason``), the progress sink job code
reports to (``JobProgress``), and the store calls' orderly stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import ambidex as ax
from _waiting import await_for
from ambidex.jobs import (
    JobContext,
    JobDesk,
    JobManager,
    JobProgress,
    JobStatus,
    JobStore,
    JobWorker,
    StopReason,
    WorkloadRegistry,
)
from ambidex.jobs._calls import StoreCalls

LEASE_S = 2.0
POLL_S = 0.05


async def add(a: int, b: int = 1) -> int:
    return a + b


async def boom() -> None:
    raise ValueError("odd input")


async def stall() -> None:
    await asyncio.Event().wait()  # until stopped


async def three_quarters(ctx: JobContext) -> str:
    """Report through ``ctx.report``, as ambidex library code does with a progress object."""
    ctx.report(ax.ProgressUpdate(done=3, total=4, message="3 of 4 runs"))
    return "reported"


@pytest.fixture
def registry() -> WorkloadRegistry:
    reg = WorkloadRegistry()
    for fn in (add, boom, stall, three_quarters):
        reg.register(fn)
    return reg


def worker(store: JobStore, registry: WorkloadRegistry, **options: Any) -> JobWorker:
    return JobWorker(store, registry, lease_s=LEASE_S, poll_s=POLL_S, **options)


async def test_a_desk_stores_jobs_and_a_worker_runs_them_until_idle(
    sqlite_store: JobStore, registry: WorkloadRegistry
) -> None:
    async with JobDesk(sqlite_store, registry, poll_s=POLL_S) as desk:
        ok = await desk.submit("add", {"a": 41})
        bad = await desk.submit("boom")
        slow = await desk.submit("stall", timeout_s=0.2)
        later = await desk.submit("add", {"a": 1}, delay_s=3600)
        assert (await desk.get(ok.id)).status is JobStatus.QUEUED  # a desk runs nothing

        w = worker(sqlite_store, registry)
        try:
            stopped = await w.run_until_idle()
        finally:
            await w.aclose()

        assert stopped == {
            StopReason.SUCCEEDED: 1,
            StopReason.FAILED: 1,
            StopReason.TIMED_OUT: 1,
        }
        assert (await desk.get(ok.id)).result == 42
        assert (await desk.get(bad.id)).error == "ValueError: odd input"
        timed_out = await desk.get(slow.id)
        assert timed_out.status is JobStatus.FAILED  # stored as it always was
        assert timed_out.error is not None
        assert timed_out.error.startswith("timed out after 0.2 s")
        assert (await desk.get(later.id)).status is JobStatus.QUEUED  # not due: left queued


async def test_run_until_idle_returns_at_once_when_nothing_is_due(
    sqlite_store: JobStore, registry: WorkloadRegistry
) -> None:
    w = worker(sqlite_store, registry)
    try:
        assert await w.run_until_idle() == {}
        sqlite_store.submit("add", {"a": 1, "b": 1})
        assert await w.run_until_idle() == {StopReason.SUCCEEDED: 1}  # it can run again
    finally:
        await w.aclose()


async def test_run_until_idle_refuses_when_the_worker_works_in_the_background(
    sqlite_store: JobStore, registry: WorkloadRegistry
) -> None:
    async with worker(sqlite_store, registry) as w:
        with pytest.raises(RuntimeError, match="works in the background"):
            await w.run_until_idle()


async def test_a_worker_alone_runs_what_a_desk_alone_takes_in(
    sqlite_store: JobStore, registry: WorkloadRegistry
) -> None:
    async with (
        JobDesk(sqlite_store, registry, poll_s=POLL_S) as desk,
        worker(sqlite_store, registry, concurrency=2) as w,
    ):
        job = await desk.submit("add", {"a": 2})
        done = await desk.wait(job.id, timeout_s=10)  # seen by the desk's poll
        assert (done.status, done.result, done.worker) == (JobStatus.SUCCEEDED, 3, w.worker_id)
        assert w.problems() == []


async def test_aclose_of_a_worker_gives_its_running_job_back_unfinished(
    sqlite_store: JobStore, registry: WorkloadRegistry
) -> None:
    async with JobDesk(sqlite_store, registry, poll_s=POLL_S) as desk:
        job = await desk.submit("stall")
        w = worker(sqlite_store, registry)
        await w.start()
        async with contextlib.aclosing(desk.watch(job.id)) as events:
            async for event in events:
                if event.kind == "started":
                    break
        await w.aclose()
        back = await desk.get(job.id)
        assert (back.status, back.attempts) == (JobStatus.QUEUED, 0)
        assert (await desk.events(job.id))[-1].kind == "requeued"


async def test_a_manager_is_a_desk_with_a_worker_beside_it(
    tmp_path: Path, registry: WorkloadRegistry
) -> None:
    async with JobManager(tmp_path / "jobs.sqlite", registry, poll_s=POLL_S) as m:
        assert isinstance(m.desk, JobDesk)
        assert isinstance(m.worker, JobWorker)
        assert m.worker.worker_id == m.worker_id
        job = await m.submit("add", {"a": 1})
        assert (await m.wait(job.id, timeout_s=10)).result == 2
    async with JobManager(tmp_path / "jobs.sqlite", registry, concurrency=0) as desk_only:
        assert desk_only.worker is None
        assert desk_only.running_here == 0


async def test_a_progress_object_reported_to_the_context_reaches_the_store(
    sqlite_store: JobStore, registry: WorkloadRegistry
) -> None:
    job = sqlite_store.submit("three_quarters", {})
    w = worker(sqlite_store, registry)
    try:
        await w.run_until_idle()
    finally:
        await w.aclose()
    progress = [e.data for e in sqlite_store.events(job.id) if e.kind == "progress"]
    assert progress == [{"progress": 0.75, "message": "3 of 4 runs"}]


def test_a_progress_sink_keeps_the_latest_report_and_refuses_a_fraction_out_of_range() -> None:
    sink = JobProgress()
    heard: list[None] = []
    sink._listen(lambda: heard.append(None))
    sink.progress(0.1, "first")
    sink.report(ax.ProgressUpdate(done=5, total=None, message="counting"))  # total unknown
    assert sink._take() == (None, "counting")
    assert sink._take() is None  # taken
    assert len(heard) == 2
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        sink.progress(1.5)


def test_stop_reasons_say_what_is_stored_for_them() -> None:
    assert StopReason.SUCCEEDED.status is JobStatus.SUCCEEDED
    assert StopReason.FAILED.status is JobStatus.FAILED
    assert StopReason.TIMED_OUT.status is JobStatus.FAILED
    assert StopReason.CANCELLED.status is JobStatus.CANCELLED
    assert StopReason.LEASE_LOST.status is None
    assert StopReason.SHUTDOWN.status is None
    assert [str(r) for r in StopReason] == [
        "succeeded",
        "failed",
        "timed_out",
        "cancelled",
        "lease_lost",
        "shutdown",
    ]


async def test_store_calls_close_waits_for_a_running_call_and_refuses_new_ones() -> None:
    calls = StoreCalls()
    entered, release = threading.Event(), threading.Event()

    def slow() -> str:
        entered.set()
        release.wait(10)
        return "done"

    running = asyncio.ensure_future(calls(slow))
    await ax.to_thread(entered.wait, 10)
    closer = threading.Thread(target=calls.close)
    closer.start()
    # close() has begun: from now on it waits for the running call
    assert await await_for(lambda: calls._closed)
    assert closer.is_alive()
    release.set()
    assert await running == "done"
    await ax.to_thread(closer.join, 10)
    assert not closer.is_alive()
    with pytest.raises(RuntimeError, match="store calls are closed"):
        await calls(lambda: None)


def hold(seconds: float) -> str:
    """A blocking job: it occupies one of the runtime's general I/O threads."""
    time.sleep(seconds)
    return "held"


async def test_leases_are_renewed_while_every_io_thread_runs_a_blocking_job(
    sqlite_store: JobStore, registry: WorkloadRegistry
) -> None:
    # Store calls go to the I/O threads' reserved lane: with both general threads
    # held by blocking jobs for longer than a lease, renewals still go out, so a
    # second worker recovering lapsed leases finds none and no job runs twice.
    # (On one shared lane the heartbeat queued behind the jobs and every lease
    # lapsed: the other worker requeued all four.)
    registry.register(hold)
    lease_s = 0.5
    with ax.Runtime(io_threads=2, cpu_workers=1):
        jobs = [sqlite_store.submit("hold", {"seconds": 6 * lease_s}) for _ in range(4)]
        w = JobWorker(sqlite_store, registry, lease_s=lease_s, poll_s=POLL_S, concurrency=4)
        try:
            running = asyncio.create_task(w.run_until_idle())
            await asyncio.sleep(3 * lease_s)  # time passing is what is tested
            assert sqlite_store.recover_expired() == ([], [])  # as another worker would
            stopped = await running
        finally:
            await w.aclose()
    assert stopped == {StopReason.SUCCEEDED: 4}
    for job in jobs:
        done = sqlite_store.get(job.id)
        assert (done.status, done.result, done.attempts) == (JobStatus.SUCCEEDED, "held", 1)


async def test_aclose_does_not_wait_for_blocking_jobs_holding_every_io_thread(
    tmp_path: Path, registry: WorkloadRegistry
) -> None:
    # Ctrl-C on `ambidex serve` while blocking jobs hold every general I/O thread:
    # the manager stops at once and gives the jobs back. (Its last blocking step,
    # closing the desk, went to the general lane and queued behind the jobs, so
    # the server took as long as the longest job to stop.)
    release = threading.Event()
    loop = asyncio.get_running_loop()
    started = asyncio.Queue[None]()

    def held() -> str:
        loop.call_soon_threadsafe(started.put_nowait, None)
        release.wait(30)
        return "held"

    registry.register(held)
    with ax.Runtime(io_threads=2, cpu_workers=1):
        m = JobManager(tmp_path / "jobs.sqlite", registry, lease_s=LEASE_S, poll_s=POLL_S)
        try:
            await m.start()
            jobs = [await m.submit("held") for _ in range(2)]
            for _ in jobs:  # both general threads are held
                await asyncio.wait_for(started.get(), 10)
            t0 = time.monotonic()
            closing = asyncio.ensure_future(m.aclose())
            done, _ = await asyncio.wait({closing}, timeout=10)
            took_s = time.monotonic() - t0
            assert closing in done, "aclose waited for the blocking jobs"
            await closing
        finally:
            release.set()
        store = JobStore(tmp_path / "jobs.sqlite")
        try:
            assert [store.get(j.id).status for j in jobs] == [JobStatus.QUEUED] * 2
        finally:
            store.close()
    assert took_s < 10


class _SlowListStore(JobStore):
    """A store whose ``list`` blocks until let go: a flood of slow desk reads."""

    reads_go = threading.Event()
    read_began = threading.Event()  # a read holds a thread

    def list(self, *args: Any, **kwargs: Any) -> Any:
        self.read_began.set()
        self.reads_go.wait(30)
        return super().list(*args, **kwargs)


async def test_desk_reads_leave_the_worker_a_reserved_thread_for_its_leases(
    tmp_path: Path, registry: WorkloadRegistry
) -> None:
    # A flood of HTTP reads while a worker beside the desk runs jobs: the desk's
    # store calls may hold one of the two reserved I/O threads, never both, so
    # the worker's heartbeat still goes out and no lease lapses. (With every
    # reserved thread held by reads, the heartbeat queued behind them: under
    # `ambidex serve --lease-s 0.5` and 100 clients listing jobs, 20 of 20
    # running jobs were requeued until they failed.)
    store = _SlowListStore(tmp_path / "jobs.sqlite")
    store.reads_go, store.read_began = threading.Event(), threading.Event()
    async with JobManager(store, registry, lease_s=LEASE_S, poll_s=POLL_S) as m:
        assert m.worker is not None
        job = await m.submit("stall")
        async with contextlib.aclosing(m.watch(job.id)) as events:
            async for event in events:
                if event.kind == "started":
                    break
        reads = [asyncio.ensure_future(m.list()) for _ in range(8)]
        try:
            # A read holds a thread; the others, sent in the same turn of the loop,
            # have reached the desk's gate or the threads' queue by now.
            assert await await_for(store.read_began.is_set)
            beat = m.worker.last_heartbeat
            deadline = time.monotonic() + 3 * LEASE_S
            while m.worker.last_heartbeat == beat and time.monotonic() < deadline:
                await asyncio.sleep(POLL_S)
            assert m.worker.last_heartbeat != beat, "no lease renewal while the desk read"
        finally:
            store.reads_go.set()
        assert [len(page.jobs) for page in await asyncio.gather(*reads)] == [1] * len(reads)
        assert job.id in m.worker.running
        assert (await m.get(job.id)).attempts == 1
    store.close()


async def test_a_limited_call_keeps_its_place_until_it_ends_even_if_its_caller_left() -> None:
    # A client that hangs up cancels its request, not the store call running for
    # it: that call still holds a reserved thread, so the next one waits for it.
    calls = StoreCalls(at_once=1)
    loop = asyncio.get_running_loop()
    entered, let_go = asyncio.Event(), threading.Event()
    order: list[str] = []

    def first() -> None:
        loop.call_soon_threadsafe(entered.set)
        let_go.wait(10)
        order.append("first ended")

    def second() -> str:
        order.append("second ran")
        return "second"

    left = asyncio.ensure_future(calls(first))
    await asyncio.wait_for(entered.wait(), 10)
    left.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await left
    given_up = asyncio.ensure_future(calls(second))  # waits at the gate, then is cancelled
    nxt = asyncio.ensure_future(calls(second))
    await asyncio.sleep(0)  # one turn of the loop: both take their first step, to the gate
    given_up.cancel()
    assert order == []  # nothing ran beside the call whose caller left
    let_go.set()
    assert await asyncio.wait_for(nxt, 10) == "second"
    assert order == ["first ended", "second ran"]
    with pytest.raises(ValueError, match="at least 1"):
        StoreCalls(at_once=0)


class _OddReport:
    def __init__(self, done: Any, total: Any, message: Any) -> None:
        self.done, self.total, self.message = done, total, message


def test_a_report_whose_fraction_cannot_be_computed_reports_its_message_only() -> None:
    # Library code reports what it counted; a NaN, an infinity over an infinity,
    # a count too large for a float or a count that is no number is not a reason
    # to fail the job (they raised out of ctx.report, and the job failed with
    # "progress fraction must be within 0..1, got nan").
    sink = JobProgress()
    odd = [
        (float("nan"), 10, "nan done"),
        (1, float("nan"), "nan total"),
        (float("inf"), float("inf"), "infinities"),
        (10**400, 10, "too large for a float"),
        ("3", "10", "strings"),
        (None, 10, "no count"),
    ]
    for done, total, message in odd:
        sink.report(_OddReport(done, total, message))
        assert sink._take() == (None, message)
    sink.report(_OddReport(10**400, 10**400 * 2, 12345))  # large ints divide fine
    assert sink._take() == (0.5, "12345")  # a message is text
    sink.report(_OddReport(-5, 10, ""))
    assert sink._take() == (0.0, None)  # clamped, as before
    with pytest.raises(TypeError, match="progress object"):
        sink.report(0.5)  # type: ignore[arg-type]


async def test_a_worker_never_requeues_a_job_it_is_running_when_virtual_time_jumps(
    sqlite_store: JobStore, registry: WorkloadRegistry
) -> None:
    # Under a FakeClock a job's own sleeps move time past its lease between two
    # renewals (which run on real time); the worker's recovery must not take the
    # job it is running for the job of a dead worker (it requeued it, ran it three
    # times and failed it).
    from ambidex.testing import FakeClock

    runs: list[int] = []

    async def crawl(pages: int) -> int:
        runs.append(pages)
        for _ in range(pages):
            await ax.current_clock().asleep(5)  # a rate-limited call: 5 virtual s
            await asyncio.sleep(0.05)  # real work: the recovery looks meanwhile
        return pages

    registry.register(crawl)
    job = sqlite_store.submit("crawl", {"pages": 40})
    with FakeClock():
        w = JobWorker(sqlite_store, registry, lease_s=2.0, poll_s=POLL_S)
        try:
            stopped = await w.run_until_idle()
        finally:
            await w.aclose()
    done = sqlite_store.get(job.id)
    assert (stopped, done.attempts, runs) == ({StopReason.SUCCEEDED: 1}, 1, [40]), done.error


async def test_a_job_raising_megabytes_of_message_is_stored_and_logged_bounded(
    sqlite_store: JobStore, registry: WorkloadRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    async def huge() -> None:
        raise ValueError("x" * 5_000_000)

    registry.register(huge)
    job = sqlite_store.submit("huge", {}, max_attempts=1)
    w = worker(sqlite_store, registry)
    with caplog.at_level("WARNING", logger="ambidex.jobs"):
        try:
            assert await w.run_until_idle() == {StopReason.FAILED: 1}
        finally:
            await w.aclose()
    done = sqlite_store.get(job.id)
    assert done.error is not None
    assert done.error.startswith("ValueError: xxx")
    assert "characters left out" in done.error
    assert len(done.error) < 10_000
    [line] = [r.getMessage() for r in caplog.records if job.id in r.getMessage()]
    assert "characters left out" in line
    assert len(line) < 100_000  # the error and traceback each bounded as stored


async def test_a_job_whose_outcome_is_queued_leaves_its_slot_to_the_next_claim(
    sqlite_store: JobStore,
) -> None:
    # With one slot: once the first job's outcome is queued in the store's writer
    # lane, the claim of the next goes out at once, queued behind it (one turn for
    # both), instead of after its commit.
    release = asyncio.Event()

    async def held() -> str:
        await release.wait()
        return "done"

    registry = WorkloadRegistry()
    registry.register(held)
    registry.register(add)
    lane = sqlite_store.lane_of(sqlite_store.claim)
    assert lane is not None
    gate = threading.Event()

    def queued() -> list[str]:  # the lane's calls waiting for their turn (renewals aside)
        names = [call.args[0].__name__ for call in lane._pending]
        return [name for name in names if name != "heartbeat"]

    async with JobDesk(sqlite_store, registry, poll_s=POLL_S) as desk:
        first = await desk.submit("held")
        async with worker(sqlite_store, registry, concurrency=1) as w:
            assert await await_for(lambda: w.running_here == 1)
            second = await desk.submit("add", {"a": 2})
            holding = lane.submit(gate.wait, 10)  # the writer, busy
            try:
                # the gate's turn has begun: nothing queued now runs before it ends
                assert await await_for(lambda: all(c.fn != gate.wait for c in lane._pending))
                release.set()
                assert await await_for(lambda: queued() == ["finish_many", "claim"]), queued()
            finally:
                gate.set()
                await holding
            for job, value in ((first, "done"), (second, 3)):
                done = await desk.wait(job.id, timeout_s=10)
                assert (done.status, done.result) == (JobStatus.SUCCEEDED, value)
            assert w.problems() == []
