"""``StoreCalls.close`` returns when a loop ended with a hot call pending.

A hot call on PostgreSQL runs as a task of its own, counted until the task's
``finally`` runs. A loop closed without cancelling its tasks (a
``run_until_complete`` whose caller timed out, then ``loop.close()``) drops that
task pending: the count never dropped and ``close`` waited for ever. Calls
counted on a closed loop are not waited for now.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from ambidex.jobs import JobStore
from ambidex.jobs._calls import StoreCalls


def test_close_returns_after_a_loop_ended_with_a_hot_call_pending(pg_url: str) -> None:
    with JobStore(pg_url) as store:
        db = StoreCalls()
        loop = asyncio.new_event_loop()

        async def caller() -> None:
            await asyncio.wait_for(db(store.claim, "w", lease_s=30.0, limit=1), 0.0001)

        with contextlib.suppress(TimeoutError):
            loop.run_until_complete(caller())
        loop.close()
        closing = threading.Thread(target=db.close, daemon=True)
        closing.start()
        closing.join(5)
        assert not closing.is_alive()  # fails on main: close() never returns
