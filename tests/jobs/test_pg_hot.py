"""PostgreSQL's hot path: the job service's hot calls on the loop, through psycopg (``_pg_hot``).

The same rows and event rows as the SQLAlchemy path, byte for byte; the same
fencing; the fake clock's time; connections of each loop of their own, closed
by the store; ``StoreCalls.close`` waiting for the calls running on a loop.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from typing import Any

import psycopg
import pytest

from ambidex._clock import use_clock
from ambidex._job_errors import JobServiceStoppedError
from ambidex._job_model import RetryPolicy, WorkerInfo
from ambidex.jobs import JobStatus, JobStore
from ambidex.jobs._calls import StoreCalls
from ambidex.jobs._store import BatchRefused, NewJob, Outcome
from ambidex.testing import FakeClock


def _rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def _scenario_jobs(prefix: str) -> list[NewJob]:
    return [
        NewJob("echo", {"value": 1, "text": "é\u2028"}, job_id=f"{prefix}-a"),
        NewJob(
            "echo",
            [1, 2.5, None],
            max_attempts=5,
            timeout_s=2.5,
            job_id=f"{prefix}-b",
            priority=3,
            retry=RetryPolicy(retries=2, on=["ValueError"]),
            origin={"via": "test"},
        ),
        NewJob(
            "other",
            "x",
            job_id=f"{prefix}-c",
            run_at=10.0**10,
            rerun_of="someone",
            timeout_s=float("inf"),
        ),
        NewJob("echo", None, job_id=f"{prefix}-d"),
    ]


def _outcomes(prefix: str, worker: str) -> list[Outcome]:
    return [
        Outcome(f"{prefix}-d", worker, 1, JobStatus.SUCCEEDED, {"ok": [1, "\u00e9"]}),
        Outcome(f"{prefix}-a", worker, 1, JobStatus.FAILED, None, "bad\x00 thing", "Trace\n..."),
        Outcome(f"{prefix}-b", worker, 1, JobStatus.SUCCEEDED, float("nan")),  # not storable
    ]


class _StillClock:
    """A clock that moves only when told: both paths of a scenario see the same times."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.25

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)

    async def asleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


def _run_scenario(store: JobStore, prefix: str, hot: bool) -> list[Any]:
    """Submit, claim, renew, finish, read: through ``StoreCalls`` (hot) or directly."""
    worker = f'worker "{prefix}" é'
    info = WorkerInfo(
        id=worker,
        host="h",
        pid=1,
        started_at=1.0,
        heartbeat_at=1.0,
        concurrency=4,
        running=2,
        workloads=["echo"],
        lease_s=30.0,
        version="0",
    )
    answers: list[Any] = []
    clock = _StillClock()

    async def calls() -> None:
        db = StoreCalls()

        async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
            if hot:
                assert store.on_loop(fn, args, kwargs) is not None
                return await db(fn, *args, **kwargs)
            return fn(*args, **kwargs)

        answers.append(await call(store.submit_batch, _scenario_jobs(prefix)))
        clock.now += 1.5
        answers.append(await call(store.claim, worker, lease_s=30.0, limit=10))
        clock.now += 0.25
        ids = [f"{prefix}-b", f"{prefix}-a", f"{prefix}-c"]
        report = await call(store.heartbeat, worker, ids, lease_s=60.0, info=info)
        answers.append((sorted(report.held), sorted(report.cancel_requested)))
        clock.now += 0.125
        answers.append(await call(store.finish_many, _outcomes(prefix, worker)))
        answers.append(await call(store.get, f"{prefix}-a"))
        answers.append(await call(store.get, f"{prefix}-nothing"))

    with use_clock(clock):
        asyncio.run(calls())
    return answers


def _same(value: Any) -> str:
    """``value`` as text, the scenario's prefix and seqs left out."""
    text = repr(value).replace("new", "X").replace("old", "X")
    return re.sub(r"seq=\d+", "seq=N", text)


def test_the_hot_path_writes_the_rows_and_events_the_sqlalchemy_path_writes(pg_url: str) -> None:
    with JobStore(pg_url) as store:
        old = _run_scenario(store, "old", hot=False)
        new = _run_scenario(store, "new", hot=True)
    assert _same(old) == _same(new)
    assert [j.id for j in new[1]] == ["new-b", "new-a", "new-d"]  # priority, then oldest
    assert new[2] == (["new-a", "new-b"], [])
    assert new[3] == [True, True, True]

    def stored(table: str, prefix_column: str) -> list[str]:
        rows = _rows(
            pg_url, f"SELECT * FROM {table} WHERE {prefix_column} LIKE %s ORDER BY seq", "%"
        )
        return [_same(r[1:]) for r in rows if str(r[1]).startswith("new-")], [
            _same(r[1:]) for r in rows if str(r[1]).startswith("old-")
        ]

    new_jobs, old_jobs = stored("ambidex_jobs", "id")
    assert len(new_jobs) == 4
    assert new_jobs == old_jobs  # every value, byte for byte
    new_events, old_events = stored("ambidex_job_events", "job_id")
    assert len(new_events) == 10
    assert new_events == old_events
    workers = _rows(pg_url, "SELECT * FROM ambidex_workers ORDER BY id")
    assert len(workers) == 2
    assert _same(workers[0][1:]) == _same(workers[1][1:])


def test_the_hot_path_honours_the_fake_clock(pg_url: str) -> None:
    async def main(store: JobStore) -> None:
        db = StoreCalls()
        with FakeClock(autojump=False) as clock:
            start = clock.time()
            (submitted,) = await db(store.submit_batch, [NewJob("echo", 1, run_at=start + 60)])
            assert submitted.job.created_at == start
            assert await db(store.claim, "w", lease_s=5.0, limit=5) == []
            clock.advance(60)
            (job,) = await db(store.claim, "w", lease_s=5.0, limit=5)
            assert (job.started_at, job.lease_expires_at) == (start + 60, start + 65)
            clock.advance(10)  # the lease lapsed: another worker recovers the job
            assert store.recover_expired() == ([job.id], [])
            report = await db(store.heartbeat, "w", [job.id], lease_s=5.0)
            assert report.held == set()
            (again,) = await db(store.claim, "w2", lease_s=5.0, workloads=["echo"], limit=5)
            assert (again.attempts, again.lease_expires_at) == (2, start + 75)

    with JobStore(pg_url) as store:
        asyncio.run(main(store))


def test_a_write_on_the_hot_path_names_the_worker_and_the_attempt_it_holds(pg_url: str) -> None:
    async def main(store: JobStore) -> None:
        db = StoreCalls()
        await db(store.submit_all, [NewJob("echo", i) for i in range(3)])
        one, two, three = await db(store.claim, "w", lease_s=30.0, limit=3)
        answers = await db(
            store.finish_many,
            [
                Outcome(one.id, "w", 2, JobStatus.SUCCEEDED, 1),  # not the attempt held
                Outcome(two.id, "other", 1, JobStatus.SUCCEEDED, 1),  # not the worker
                Outcome(three.id, "w", 1, JobStatus.CANCELLED),
            ],
        )
        assert answers == [False, False, True]
        again = await db(store.finish_many, [Outcome(three.id, "w", 1, JobStatus.SUCCEEDED, 1)])
        assert again == [False]  # written once
        report = await db(store.heartbeat, "other", [one.id, two.id, three.id], lease_s=30.0)
        assert report.held == set()
        assert (await db(store.heartbeat, "w", [two.id, three.id], lease_s=30.0)).held == {two.id}
        assert [e.kind for e in store.events(one.id)] == ["submitted", "started"]
        assert [e.kind for e in store.events(three.id)][-1] == "cancelled"
        got = await db(store.get, three.id)
        assert got is not None
        assert got.status is JobStatus.CANCELLED
        assert await db(store.get, "nul\x00id") is None
        with pytest.raises(ValueError, match="terminal"):
            await db(store.finish_many, [Outcome(one.id, "w", 1, JobStatus.RUNNING)])
        with pytest.raises(BatchRefused):
            await db(store.submit_all, [NewJob("echo", 1), NewJob("echo", float("inf"))])
        assert store.counts()[JobStatus.QUEUED] == 0

    with JobStore(pg_url) as store:
        asyncio.run(main(store))


def test_only_the_hot_calls_of_a_postgresql_store_go_on_the_loop(
    pg_url: str, sqlite_store: JobStore
) -> None:
    with JobStore(pg_url) as store:
        keyed = [NewJob("echo", 1, idempotency_key="k")]
        later = [Outcome("j", "w", 1, JobStatus.FAILED, retry_in_s=1.0)]
        twice = [Outcome("j", "w", 1, JobStatus.FAILED)] * 2
        assert store.on_loop(store.get, ("x",), {}) is not None
        assert store.on_loop(store.submit_all, ([NewJob("echo", 1)],), {}) is not None
        # the queue's features too (all took the SQLAlchemy path on a thread before)
        assert store.on_loop(store.submit_all, (keyed,), {}) is not None
        assert store.on_loop(store.submit_batch, (keyed,), {}) is not None
        assert store.on_loop(store.finish_many, (later,), {}) is not None
        assert store.on_loop(store.finish_many, (twice,), {}) is not None
        capped = {"lease_s": 1.0, "limits": {"echo": 2}}
        assert store.on_loop(store.claim, ("w",), capped) is not None
        assert store.on_loop(store.claim, ("w",), {**capped, "workloads": ["x"]}) is not None
        assert store.on_loop(store.claim, ("w", 1.0), {}) is None  # a wrong call: raises there
        assert store.on_loop(store.cancel, ("x",), {}) is None
        assert sqlite_store.on_loop(sqlite_store.get, ("x",), {}) is None


def test_each_loop_has_connections_of_its_own_and_close_closes_them(pg_url: str) -> None:
    store = JobStore(pg_url)
    pg = store._pg
    assert pg is not None
    seen: list[Any] = []

    async def use() -> None:
        db = StoreCalls()
        await asyncio.gather(*(db(store.get, f"job-{i}") for i in range(10)))
        loop = asyncio.get_running_loop()
        seen.append((loop, pg.connections(loop)))

    asyncio.run(use())
    ((first, n_first),) = seen
    assert 1 <= n_first <= 4
    thread = threading.Thread(target=asyncio.run, args=(use(),))
    thread.start()
    thread.join()
    second, n_second = seen[1]
    assert second is not first
    assert 1 <= n_second <= 4
    assert pg.connections(first) == 0  # the first loop is closed: its connections too
    open_now = _rows(
        pg_url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND application_name = ''",
    )
    store.close()  # its loop is gone: closed all the same, without it
    assert pg.connections(second) == 0
    after = _rows(
        pg_url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND application_name = ''",
    )
    assert after[0][0] < open_now[0][0]


def test_close_waits_for_the_calls_running_on_the_loop_and_starts_no_more(pg_url: str) -> None:
    async def main(store: JobStore) -> None:
        db = StoreCalls()
        await db(store.submit_all, [NewJob("echo", i) for i in range(3)])
        with psycopg.connect(pg_url, autocommit=True) as blocker:
            blocker.execute("BEGIN")
            blocker.execute("LOCK TABLE ambidex_job_events IN EXCLUSIVE MODE")
            claim = asyncio.ensure_future(db(store.claim, "w", lease_s=30.0, limit=3))
            await asyncio.sleep(0.2)
            claim.cancel()  # the caller gives up; the claim goes on to its end
            closing = asyncio.ensure_future(asyncio.to_thread(db.close))
            await asyncio.sleep(0.3)
            assert not closing.done()  # waits for the claim, held by the lock
            blocker.execute("COMMIT")
            await asyncio.wait_for(closing, 10)
        with pytest.raises(asyncio.CancelledError):
            await claim
        with pytest.raises(JobServiceStoppedError):
            await db(store.get, "x")
        assert store.counts()[JobStatus.RUNNING] == 3  # the claim was made (and recorded)
        assert len(store.events(store.list().jobs[0].id)) == 2

    with JobStore(pg_url) as store:
        asyncio.run(main(store))


def test_close_on_the_loops_own_thread_does_not_wait_for_its_calls(pg_url: str) -> None:
    async def main(store: JobStore) -> None:
        db = StoreCalls()
        call = asyncio.ensure_future(db(store.get, "x"))
        await asyncio.sleep(0)
        db.close()  # would wait for ever for a call of this loop
        assert await call is None

    with JobStore(pg_url) as store:
        asyncio.run(main(store))


def test_hot_writes_to_several_rows_never_deadlock_with_requeues(pg_url: str) -> None:
    # As test_lanes' test on the SQLAlchemy path: renewals and batches of outcomes
    # (hot, on loops of three threads) against requeues of lapsed leases (SQLAlchemy).
    errors: list[str] = []
    stop = time.monotonic() + 3.0
    rng = random.Random(15)
    with JobStore(pg_url) as pg:

        async def worker(name: str) -> None:
            db = StoreCalls()
            while time.monotonic() < stop:
                await db(pg.submit_all, [NewJob("echo", i) for i in range(30)])
                jobs = await db(pg.claim, name, lease_s=0.05, limit=30)
                ids = [j.id for j in jobs]
                rng.shuffle(ids)
                outcomes = [Outcome(j.id, name, j.attempts, JobStatus.SUCCEEDED, 1) for j in jobs]
                rng.shuffle(outcomes)
                try:
                    for _ in range(5):
                        await db(pg.heartbeat, name, ids, lease_s=0.05)
                    await db(pg.finish_many, outcomes)
                except Exception as exc:
                    errors.append(repr(exc)[:300])

        def recover() -> None:
            while time.monotonic() < stop:
                try:
                    pg.recover_expired()
                except Exception as exc:
                    errors.append(repr(exc)[:300])

        threads = [threading.Thread(target=asyncio.run, args=(worker(f"w{i}"),)) for i in range(3)]
        threads += [threading.Thread(target=recover) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
