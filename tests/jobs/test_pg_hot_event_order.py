"""A hot batch of outcomes writes its events in the order the SQLAlchemy path does.

``JobStore.finish_many`` appends the events in Python's ``sorted(job_id)`` order
(code points); the hot path's ``INSERT ... SELECT`` orders by ``id COLLATE "C"``,
the same. With ``ORDER BY o.id`` alone (the database's collation: on an en-US
database "a" < "B", in Python "B" < "a") the ``succeeded`` events got their seqs
in another order than on the SQLAlchemy path.
"""

from __future__ import annotations

import asyncio

from ambidex.jobs import JobStatus, JobStore
from ambidex.jobs._calls import StoreCalls
from ambidex.jobs._store import NewJob, Outcome


def _finished_in_seq_order(store: JobStore, prefix: str, hot: bool) -> list[str]:
    ids = [f"B-{prefix}", f"a-{prefix}"]

    async def main() -> None:
        db = StoreCalls()
        await db(store.submit_all, [NewJob("echo", 1, job_id=i) for i in ids])
        claimed = await db(store.claim, "w", lease_s=30.0, limit=2)
        outcomes = [Outcome(j.id, "w", 1, JobStatus.SUCCEEDED, 1) for j in claimed]
        if hot:
            assert store.on_loop(store.finish_many, (outcomes,), {}) is not None
            assert await db(store.finish_many, outcomes) == [True, True]
        else:
            assert store.finish_many(outcomes) == [True, True]

    asyncio.run(main())
    events = [(e.seq, jid) for jid in ids for e in store.events(jid) if e.kind == "succeeded"]
    return [jid.split("-")[0] for _, jid in sorted(events)]


def test_hot_finish_writes_events_in_the_order_the_sqlalchemy_path_does(icu_pg_url: str) -> None:
    with JobStore(icu_pg_url) as store:
        old = _finished_in_seq_order(store, "old", hot=False)
        new = _finished_in_seq_order(store, "new", hot=True)
    assert old == ["B", "a"]  # Python's sort of the ids
    assert new == old  # fails on main: ['a', 'B'] (en-US collation)
