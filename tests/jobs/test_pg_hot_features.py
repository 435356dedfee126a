"""PostgreSQL's hot path with the queue's features in use: concurrency limits, retries.

Claims of capped workloads and outcomes retried later (or one job's outcome
twice in a batch) took the SQLAlchemy path on a thread; they run on the loop
now (``_pg_hot``): a retried outcome's row and events, and a concurrency
limit that holds between two stores claiming at once.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

import psycopg
from test_pg_hot import _rows

from ambidex._job_model import RetryPolicy, iso
from ambidex.jobs import JobStatus, JobStore
from ambidex.jobs._calls import StoreCalls
from ambidex.jobs._store import NewJob, Outcome
from ambidex.testing import FakeClock

POLICY = RetryPolicy(retries=2, on=["ValueError"])


def test_a_retried_outcome_on_the_loop_puts_the_job_back_with_its_delay(pg_url: str) -> None:
    async def main(store: JobStore) -> None:
        db = StoreCalls()
        with FakeClock(autojump=False) as clock:
            start = clock.time()
            (sub,) = await db(store.submit_batch, [NewJob("echo", 1, retry=POLICY, priority=3)])
            (job,) = await db(store.claim, "w", lease_s=5.0, limit=5)
            outcome = Outcome(job.id, "w", 1, JobStatus.FAILED, None, "ValueError: x", "tb", 7.25)
            assert store.on_loop(store.finish_many, ([outcome],), {}) is not None
            assert await db(store.finish_many, [outcome]) == [True]
            back = await db(store.get, job.id)
            assert back is not None
            assert (back.status, back.run_at, back.attempts, back.retried) == (
                JobStatus.QUEUED, start + 7.25, 1, 1
            )  # fmt: skip
            assert (back.error, back.traceback, back.lease_expires_at) == (
                "ValueError: x",
                "tb",
                None,
            )
            assert (back.finished_at, back.priority) == (None, 3)
            (event,) = [e for e in store.events(job.id) if e.kind == "retrying"]
            assert event.data == {
                "status": "queued",
                "delay_s": 7.25,
                "run_at": iso(start + 7.25),
                "attempt": 1,
                "error": "ValueError: x",
                "traceback": "tb",
            }
            assert await db(store.finish_many, [outcome]) == [False]  # not held any more
            clock.advance(7.0)
            assert await db(store.claim, "w", lease_s=5.0, limit=5) == []  # not due yet
            clock.advance(0.25)
            (again,) = await db(store.claim, "w2", lease_s=5.0, limit=5)
            assert (again.id, again.attempts, again.retried) == (job.id, 2, 1)
            store.cancel(job.id)  # someone asks: its failure is written as cancelled instead
            last = Outcome(job.id, "w2", 2, JobStatus.FAILED, None, "ValueError: y", None, 1.0)
            assert await db(store.finish_many, [last, last]) == [True, False]  # once
            done = await db(store.get, job.id)
            assert done is not None
            assert (done.status, done.retried) == (JobStatus.CANCELLED, 1)
            assert done.error == "cancelled by request; its last attempt failed: ValueError: y"
            assert [e.kind for e in store.events(job.id)] == [
                "submitted", "started", "retrying", "started", "cancel_requested", "cancelled"
            ]  # fmt: skip
            assert sub.created

    with JobStore(pg_url) as store:
        asyncio.run(main(store))


def _on_own_loop(work: Any) -> threading.Thread:
    thread = threading.Thread(target=asyncio.run, args=(work,))
    thread.start()
    return thread


class _Capped:
    """Claimers of a capped workload, on loops and on a thread, until every job has ended.

    Each finishes what it claimed after a random moment; ``count`` reads, as
    fast as it can from a connection of its own, how many of the workload's
    jobs run.
    """

    def __init__(self, url: str, limit: int) -> None:
        self.url = url
        self.limits = {"capped": limit}
        self.seen: list[int] = []
        self.errors: list[str] = []
        self.done = threading.Event()

    @staticmethod
    def _hold(rng: random.Random) -> float:
        return rng.choice([0.0, 0.0, 0.001, 0.003])

    async def on_loop(self, store: JobStore, name: str, seed: int) -> None:
        db = StoreCalls()
        rng = random.Random(seed)
        try:
            while not self.done.is_set():
                claimed = await db(
                    store.claim,
                    name,
                    lease_s=60.0,
                    workloads=["capped", "free"],
                    limit=rng.randint(1, 4),
                    limits=self.limits,
                )
                await asyncio.sleep(self._hold(rng))
                ended = [Outcome(j.id, name, j.attempts, JobStatus.SUCCEEDED, 1) for j in claimed]
                if ended:
                    assert all(await db(store.finish_many, ended))
                else:
                    await asyncio.sleep(0.001)
        except Exception as exc:
            self.errors.append(repr(exc)[:300])

    def on_thread(self, store: JobStore, seed: int) -> None:
        rng = random.Random(seed)
        while not self.done.is_set():
            claimed = store.claim("sqla", lease_s=60.0, limit=rng.randint(1, 4), limits=self.limits)
            time.sleep(self._hold(rng))
            store.finish_many(
                [Outcome(j.id, "sqla", j.attempts, JobStatus.SUCCEEDED, 1) for j in claimed]
            )
            if not claimed:
                time.sleep(0.001)

    def count(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.done.is_set():
                ((n, left),) = conn.execute(
                    "SELECT count(*) FILTER (WHERE status = 'running' AND workload = 'capped'), "
                    "count(*) FILTER (WHERE status <> 'succeeded') FROM ambidex_jobs"
                ).fetchall()
                self.seen.append(n)
                if left == 0:
                    self.done.set()


def test_a_concurrency_limit_holds_when_two_stores_claim_at_once(pg_url: str) -> None:
    # Two stores claim a capped workload at once, on loops, and a third claimer
    # through SQLAlchemy's path on a thread (the same advisory locks).
    limit, jobs = 3, 150
    rng = random.Random(7)
    capped = _Capped(pg_url, limit)
    with JobStore(pg_url) as one, JobStore(pg_url) as two:
        one.submit_many("capped", list(range(jobs)))
        one.submit_many("free", list(range(jobs // 3)))
        assert one.on_loop(one.claim, ("w",), {"lease_s": 1.0, "limits": capped.limits})
        threads = [
            _on_own_loop(capped.on_loop(one, "one", rng.randrange(10**9))),
            _on_own_loop(capped.on_loop(two, "two", rng.randrange(10**9))),
            threading.Thread(target=capped.on_thread, args=(two, rng.randrange(10**9))),
            threading.Thread(target=capped.count),
        ]
        threads[2].start()
        threads[3].start()
        for thread in threads:
            thread.join(50)
        capped.done.set()
        assert capped.errors == []
        assert one.counts()[JobStatus.SUCCEEDED] == jobs + jobs // 3
    assert max(capped.seen) == limit  # reached, never passed
    assert len(capped.seen) > 100
    workers = _rows(pg_url, "SELECT worker FROM ambidex_jobs WHERE workload = 'capped'")
    assert {w for (w,) in workers} == {"one", "two", "sqla"}
