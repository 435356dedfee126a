"""Faults a review found in the store's lanes, each a test that failed before its fix."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import weakref
from pathlib import Path

from ambidex.jobs import JobStatus, JobStore
from ambidex.jobs._calls import StoreCalls
from ambidex.jobs._store import NewJob, Outcome


async def test_a_call_after_one_that_rolled_the_turn_back_is_not_told_failure_if_stored(
    tmp_path: Path,
) -> None:
    # SQLITE_FULL (disk full) rolls back the whole transaction, not only the
    # statement. The turn then goes on: the next call's SAVEPOINT opens a fresh
    # transaction that its RELEASE commits at once, and the turn's COMMIT fails
    # ("no transaction is active"), so that call's caller is told its finish
    # failed although the outcome is stored.
    store = JobStore(tmp_path / "jobs.sqlite")
    calls = StoreCalls()
    try:
        job = store.submit("echo", {"value": 1})
        (claimed,) = store.claim("w1", lease_s=60)
        writer = store._raw._write_conn()  # type: ignore[union-attr]
        pages = writer.execute("PRAGMA page_count").fetchone()[0]
        writer.execute(f"PRAGMA max_page_count={pages}")  # the disk is now full
        gate = threading.Event()
        lane = store.lane_of(store.claim)
        assert lane is not None
        held = asyncio.ensure_future(lane.call(gate.wait, 5))  # holds the lane's turn
        await asyncio.sleep(0.05)
        big = asyncio.ensure_future(
            calls(store.submit_batch, [NewJob("echo", {"value": "x" * 200_000})])
        )
        outcome = Outcome(job.id, "w1", claimed.attempts, JobStatus.SUCCEEDED, 7)
        finish = asyncio.ensure_future(calls(store.finish_many, [outcome]))
        await asyncio.sleep(0.05)
        gate.set()
        await held
        answers = await asyncio.gather(big, finish, return_exceptions=True)
        stored = store.get(job.id)
        assert stored is not None
        told = answers[1]
        if isinstance(told, BaseException):  # told failure: then it must not be stored
            assert stored.status is JobStatus.RUNNING, (repr(told), stored.status)
        else:
            assert told == [True]
    finally:
        calls.close()
        store.close()


async def test_a_store_dropped_without_close_is_collected_with_its_threads(
    tmp_path: Path,
) -> None:
    # A store nobody closed is collected, connections and all: its lanes' threads
    # hold it weakly (they held the bound store._turn, and each such store leaked
    # two threads, its sqlite3 connections and their files).
    def lanes() -> int:
        return sum(t.name.startswith("ambidex-jobs-") for t in threading.enumerate())

    threads = lanes()
    fds = len(os.listdir("/proc/self/fd"))
    refs = []
    for i in range(3):
        store = JobStore(tmp_path / f"jobs{i}.sqlite")
        calls = StoreCalls()
        (answer,) = await calls(store.submit_batch, [NewJob("echo", {"value": 1})])
        await calls(store.get, answer.job.id)
        calls.close()
        refs.append(weakref.ref(store))
        del store, calls, answer
    gc.collect()
    await asyncio.sleep(0.1)
    alive = sum(r() is not None for r in refs)
    assert (alive, lanes() - threads) == (0, 0), (
        alive,
        [t.name for t in threading.enumerate()],
        len(os.listdir("/proc/self/fd")) - fds,
    )


async def test_a_call_raising_stopiteration_does_not_leave_its_turn_waiting_forever(
    tmp_path: Path,
) -> None:
    # asyncio refuses StopIteration in Future.set_exception (TypeError), so _settle
    # stops at that call: it and every later call of the turn on that loop are never
    # answered. The runtime's threads (ambidex.runtime._threads._set_future) turn it
    # into a RuntimeError, as the hot calls did before the lanes.
    import time as _time

    from ambidex._clock import use_clock

    class OnceBrokenClock:  # a scripted test clock whose script ran out, once
        broken = True

        def monotonic(self) -> float:
            return _time.monotonic()

        def time(self) -> float:
            if OnceBrokenClock.broken:
                OnceBrokenClock.broken = False
                raise StopIteration
            return _time.time()

        def sleep(self, seconds: float) -> None:
            _time.sleep(seconds)

        async def asleep(self, seconds: float) -> None:
            await asyncio.sleep(seconds)

    store = JobStore(tmp_path / "jobs.sqlite")
    calls = StoreCalls()
    lane = store.lane_of(store.claim)
    assert lane is not None
    gate = threading.Event()
    try:
        with use_clock(OnceBrokenClock()):
            held = asyncio.ensure_future(lane.call(gate.wait, 5))
            await asyncio.sleep(0.05)
            first = asyncio.ensure_future(calls(store.submit_batch, [NewJob("echo", {})]))
            other = asyncio.ensure_future(calls(store.submit_batch, [NewJob("echo", {})]))
            await asyncio.sleep(0.05)
            gate.set()
            await held
            _done, pending = await asyncio.wait([first, other], timeout=3)
            for task in pending:
                task.cancel()
        assert not pending, "callers left waiting forever"
        assert isinstance(first.exception(), RuntimeError)
        assert other.exception() is None
    finally:
        calls.close()
        store.close()


async def test_a_submit_told_failure_after_a_disk_full_in_its_turn_is_not_stored(
    tmp_path: Path,
) -> None:
    # Same cause as above, for a submit: answered "cannot commit - no transaction is
    # active" (HTTP 503, so the client submits again) although its job is stored.
    store = JobStore(tmp_path / "jobs.sqlite")
    calls = StoreCalls()
    try:
        store.submit("echo", {"value": 1})
        writer = store._raw._write_conn()  # type: ignore[union-attr]
        pages = writer.execute("PRAGMA page_count").fetchone()[0]
        writer.execute(f"PRAGMA max_page_count={pages}")  # the disk is now full
        lane = store.lane_of(store.claim)
        assert lane is not None
        gate = threading.Event()
        held = asyncio.ensure_future(lane.call(gate.wait, 5))
        await asyncio.sleep(0.05)
        huge = [NewJob("echo", {"v": "x" * 200_000})]
        big = asyncio.ensure_future(calls(store.submit_batch, huge))
        small = asyncio.ensure_future(calls(store.submit_batch, [NewJob("echo", {"v": 2})]))
        await asyncio.sleep(0.05)
        gate.set()
        await held
        _, told = await asyncio.gather(big, small, return_exceptions=True)
        queued = store.counts()[JobStatus.QUEUED]
        assert queued == (1 if isinstance(told, BaseException) else 2), (repr(told), queued)
    finally:
        calls.close()
        store.close()
