"""A worker never runs more than ``concurrency`` workload bodies at once.

A job whose outcome is queued in the writer lane frees its slot for the next
claim. That claim can return *the same job* again (its lease lapsed and another
worker's ``recover_expired`` requeued it: the case ``_launch`` handles as "this
worker lost that attempt's lease and has now claimed the job again"): ``_launch``
replaces the old entry. A count of queued outcomes kept apart from the entries
then freed one slot too many; the slots are now counted from the entries.
"""

from __future__ import annotations

import asyncio
import threading

from _waiting import await_for
from ambidex.jobs import JobContext, JobDesk, JobStore, JobWorker, WorkloadRegistry


async def test_a_job_reclaimed_while_its_old_outcome_is_queued_does_not_free_an_extra_slot(
    sqlite_store: JobStore,
) -> None:
    release_first = asyncio.Event()
    forever = asyncio.Event()
    bodies = [0, 0]  # now, most at once

    async def held(ctx: JobContext) -> str:
        bodies[0] += 1
        bodies[1] = max(bodies)
        try:
            await (release_first if ctx.attempt == 1 else forever).wait()
        finally:
            bodies[0] -= 1
        return "done"

    async def other() -> None:
        bodies[0] += 1
        bodies[1] = max(bodies)
        try:
            await forever.wait()
        finally:
            bodies[0] -= 1

    registry = WorkloadRegistry()
    registry.register(held)
    registry.register(other)
    store = sqlite_store
    lane = store.lane_of(store.claim)
    assert lane is not None
    gate, started = threading.Event(), threading.Event()

    def queued() -> list[str]:
        names = [call.args[0].__name__ for call in lane._pending]
        return [name for name in names if name != "heartbeat"]

    async with JobDesk(store, registry, poll_s=5.0) as desk:
        first = await desk.submit("held", priority=10)
        w = JobWorker(store, registry, concurrency=2, lease_s=30.0, poll_s=5.0)
        async with w:
            assert await await_for(lambda: w.running_here == 1)
            assert await await_for(lambda: w._waiting.is_set())

            def lapse_then_hold() -> None:
                # Another worker's recover_expired, after this one's lease lapsed
                # (its heartbeats failed for lease_s): the job is queued again.
                assert store._raw is not None
                with store._raw.write() as conn:
                    conn.execute(
                        "UPDATE ambidex_jobs SET status = 'queued', lease_expires_at = NULL, "
                        "lost = lost + 1 WHERE id = ?",
                        (first.id,),
                    )
                started.set()
                gate.wait(10)

            holding = lane.submit(lapse_then_hold)
            try:
                assert await await_for(started.is_set)
                submits = [asyncio.create_task(desk.submit("other")) for _ in range(2)]
                w.wake()  # the claim loop's claim (limit 1): queued before the outcome
                assert await await_for(lambda: "claim" in queued()), queued()
                release_first.set()  # attempt 1 ends: its outcome is queued after the claim
                assert await await_for(lambda: queued()[-1:] == ["finish_many"]), queued()
            finally:
                gate.set()
                await holding
            await asyncio.gather(*submits)
            # The claim returns the job again (attempt 2, higher priority); the
            # old attempt's outcome is refused (lease lost). Concurrency is 2.
            await await_for(lambda: bodies[0] >= 3, timeout_s=2.0)
            assert bodies[1] <= 2, f"{bodies[1]} workload bodies at once with concurrency=2"
            forever.set()
