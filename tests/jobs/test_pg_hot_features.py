"""PostgreSQL's hot path with the queue's features in use: retries.

Outcomes retried later (or one job's outcome twice in a batch) took the
SQLAlchemy path on a thread; they run on the loop now (``_pg_hot``).
"""

from __future__ import annotations

import asyncio

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
