"""The store's lanes: calls run in turns on a thread of the store's own, answered after the turn.

``Lane`` alone (turns, errors, cancellation, context, close), then the SQLite
writer lane on a real store: a turn's writes share one transaction, one
call's error undoes its own writes alone, a failed commit fails every call of
the turn, and ``get`` is read on the loop when SQLite answers at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ambidex.jobs import JobDesk, JobStatus, JobStore, _sqlite_hot
from ambidex.jobs._calls import StoreCalls
from ambidex.jobs._lanes import Lane
from ambidex.jobs._store import BatchRefused, NewJob, Outcome

_who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


async def test_calls_pending_together_share_a_turn_and_are_answered_in_order() -> None:
    lane = Lane("test-lane")
    gate = threading.Event()
    try:
        first = asyncio.ensure_future(lane.call(gate.wait, 5))
        await asyncio.sleep(0.05)  # the first turn is under way, held by the gate
        rest = [asyncio.ensure_future(lane.call(lambda i=i: i * i)) for i in range(5)]
        await asyncio.sleep(0.05)
        gate.set()
        assert await first is True
        assert await asyncio.gather(*rest) == [0, 1, 4, 9, 16]
        assert (lane.turns, lane.calls) == (2, 6)
    finally:
        lane.close()


async def test_one_calls_error_is_raised_to_that_caller_alone() -> None:
    lane = Lane("test-lane")

    def boom() -> None:
        raise ZeroDivisionError("only mine")

    try:
        answers = await asyncio.gather(
            lane.call(int, "1"), lane.call(boom), lane.call(int, "3"), return_exceptions=True
        )
    finally:
        lane.close()
    assert answers[0] == 1
    assert answers[2] == 3
    assert isinstance(answers[1], ZeroDivisionError)


async def test_a_turn_that_fails_to_end_fails_every_call_of_it() -> None:
    # The writer's turn ends with COMMIT: if that fails, nothing of the turn was stored
    # and no caller may be told otherwise.
    @contextlib.contextmanager
    def failing_commit() -> Iterator[None]:
        yield
        raise sqlite3.OperationalError("disk I/O error")

    lane = Lane("test-lane", failing_commit)
    try:
        answers = await asyncio.gather(
            lane.call(int, "1"), lane.call(int, "2"), return_exceptions=True
        )
    finally:
        lane.close()
    assert all(isinstance(a, sqlite3.OperationalError) for a in answers), answers


async def test_a_call_whose_caller_gave_up_before_its_turn_never_runs() -> None:
    lane = Lane("test-lane")
    gate = threading.Event()
    ran: list[str] = []
    try:
        holder = asyncio.ensure_future(lane.call(gate.wait, 5))
        await asyncio.sleep(0.05)
        late = asyncio.ensure_future(lane.call(ran.append, "late"))
        await asyncio.sleep(0.01)
        late.cancel()
        with pytest.raises(asyncio.CancelledError):
            await late
        gate.set()
        await holder
        assert await lane.call(ran.append, "next") is None
    finally:
        lane.close()
    assert ran == ["next"]


async def test_each_call_runs_in_its_callers_context() -> None:
    lane = Lane("test-lane")

    async def as_(name: str) -> str:
        _who.set(name)
        return await lane.call(_who.get)

    try:
        assert await asyncio.gather(as_("a"), as_("b")) == ["a", "b"]
    finally:
        lane.close()


async def test_close_ends_the_turn_under_way_and_fails_the_calls_still_waiting() -> None:
    lane = Lane("test-lane")
    gate = threading.Event()
    holder = asyncio.ensure_future(lane.call(gate.wait, 5))
    await asyncio.sleep(0.05)
    waiting = asyncio.ensure_future(lane.call(int, "7"))
    await asyncio.sleep(0.01)
    closer = asyncio.get_running_loop().run_in_executor(None, lane.close)
    await asyncio.sleep(0.05)
    gate.set()
    await closer
    assert await holder is True
    with pytest.raises(RuntimeError, match="closed"):
        await waiting
    with pytest.raises(RuntimeError, match="closed"):
        await lane.call(int, "8")
    assert lane.thread is not None
    assert not lane.thread.is_alive()


async def test_calls_from_two_loops_are_each_answered_on_their_own_loop() -> None:
    lane = Lane("test-lane")

    def other_loop() -> int:
        return asyncio.run(lane.call(int, "2"))

    try:
        other = asyncio.get_running_loop().run_in_executor(None, other_loop)
        mine = await lane.call(int, "1")
        assert (mine, await other) == (1, 2)
    finally:
        lane.close()


# -- the SQLite writer lane --------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    with JobStore(tmp_path / "jobs.sqlite") as s:
        yield s


def test_a_refused_call_in_a_turn_undoes_its_own_writes_and_the_rest_commit(
    store: JobStore,
) -> None:
    with store._turn():
        (kept,) = store.submit_batch([NewJob("echo", {"value": 1})])
        with pytest.raises(BatchRefused):  # its first job is inserted, then the batch refused
            store.submit_all(
                [
                    NewJob("echo", {"value": 2}, idempotency_key="k"),
                    NewJob("echo", {"value": 3}, idempotency_key="k"),
                ]
            )
    assert not isinstance(kept, ValueError)
    got = store.get(kept.job.id)
    assert got is not None
    assert got.status is JobStatus.QUEUED
    assert store.counts()[JobStatus.QUEUED] == 1
    assert [e.kind for e in store.events(kept.job.id)] == ["submitted"]


def test_a_turn_that_fails_stores_none_of_its_calls(store: JobStore) -> None:
    stored: list[str] = []

    def turn_that_fails() -> None:
        with store._turn():
            (a,) = store.submit_batch([NewJob("echo", {"value": 1})])
            stored.append(a.job.id)
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        turn_that_fails()
    assert store.get(stored[0]) is None
    assert sum(store.counts().values()) == 0


def test_a_sqlalchemy_write_on_the_writer_lane_is_refused_not_a_deadlock(
    store: JobStore,
) -> None:
    async def main() -> None:
        job = store.submit("echo", {"value": 1})
        lane = store.lane_of(store.claim)
        assert lane is not None
        with pytest.raises(RuntimeError, match="writer lane"):
            await lane.call(store.cancel, job.id)  # a cold path: SQLAlchemy

    asyncio.run(main())


async def test_the_hot_calls_of_a_sqlite_store_go_through_its_lanes(store: JobStore) -> None:
    calls = StoreCalls()
    assert store.lane_of(store.claim) is store.lane_of(store.finish_many)
    assert store.lane_of(store.get) is not store.lane_of(store.claim)
    assert store.lane_of(store.cancel) is None
    assert store.lane_of(JobStore.claim) is None  # only this store's bound methods

    submitted = await asyncio.gather(
        *(calls(store.submit_batch, [NewJob("echo", {"value": i})]) for i in range(20))
    )
    claimed = await calls(store.claim, "w1", lease_s=30, limit=20)
    assert len(claimed) == 20
    outcomes = [
        Outcome(j.id, "w1", j.attempts, JobStatus.SUCCEEDED, {"value": 0}, None, None, None)
        for j in claimed
    ]
    assert await calls(store.finish_many, outcomes) == [True] * 20
    for (answer,) in submitted:
        got = await calls(store.get, answer.job.id)
        assert got is not None
        assert got.status is JobStatus.SUCCEEDED
    writer = store.lane_of(store.claim)
    assert writer is not None
    assert writer.turns < writer.calls
    calls.close()


def test_get_now_reads_sqlite_on_the_callers_thread(store: JobStore) -> None:
    job = store.submit("echo", {"value": 1})
    assert store.get_now(job.id) == (True, store.get(job.id))
    assert store.get_now("no-such-job") == (True, None)
    assert store.get_now("a\x00b") == (True, None)


def test_a_desk_reads_through_its_lane_when_sqlite_is_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @contextlib.contextmanager
    def busy(self: object) -> Iterator[sqlite3.Connection]:
        raise sqlite3.OperationalError("database is locked")
        yield  # pragma: no cover

    async def main() -> None:
        async with JobDesk(tmp_path / "jobs.sqlite") as desk:
            job = await desk.submit("echo", {"value": 1})
            store = desk.store
            assert store.get_now(job.id) == (False, None)
            reader = store.lane_of(store.get)
            assert reader is not None
            before = reader.calls
            assert (await desk.get(job.id)).id == job.id
            assert reader.calls == before + 1

    monkeypatch.setattr(_sqlite_hot.RawSqlite, "read_now", busy)
    asyncio.run(main())


def test_get_now_on_postgresql_leaves_the_read_to_a_thread(pg_url: str) -> None:
    with JobStore(pg_url) as pg:
        job = pg.submit("echo", {"value": 1})
        assert pg.get_now(job.id) == (False, None)
        assert pg.lane_of(pg.claim) is None


def test_writes_to_several_rows_on_postgresql_never_deadlock(pg_url: str) -> None:
    # Heartbeats, batches of outcomes (in shuffled order) and requeues of lapsed
    # leases, from several threads at once: each locks its rows in id order, so none
    # waits for another in a cycle. Before, this saw a DeadlockDetected every 1-2 s.
    errors: list[str] = []
    stop = time.monotonic() + 4.0
    rng = random.Random(15)
    with JobStore(pg_url) as pg:

        def worker(name: str) -> None:
            while time.monotonic() < stop:
                pg.submit_many("echo", [{"value": i} for i in range(30)])
                jobs = pg.claim(name, lease_s=0.05, limit=30)
                ids = [j.id for j in jobs]
                rng.shuffle(ids)
                outcomes = [
                    Outcome(j.id, name, j.attempts, JobStatus.SUCCEEDED, 1, None, None, None)
                    for j in jobs
                ]
                rng.shuffle(outcomes)
                try:
                    for _ in range(5):
                        pg.heartbeat(name, ids, lease_s=0.05)
                    pg.finish_many(outcomes)
                except Exception as exc:
                    errors.append(repr(exc)[:300])

        def recover() -> None:
            while time.monotonic() < stop:
                try:
                    pg.recover_expired()
                except Exception as exc:
                    errors.append(repr(exc)[:300])

        threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(3)]
        threads += [threading.Thread(target=recover) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
