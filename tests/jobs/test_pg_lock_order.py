"""PostgreSQL rows are locked in one order whatever the database's collation.

``finish_many`` writes in Python's ``sorted(job_id)`` order (code points) and
``_lock_rows`` (heartbeat, requeue, release) locks ``ORDER BY id COLLATE "C"``
(bytes: the same order). With ``ORDER BY id`` alone the two agreed on a "C"
database (the tests' default) but not on the common ``en_US.UTF-8`` / ICU ones
when job ids (``JobStore.submit(job_id=)``, ``submit_many(job_ids=)``) mix case
or punctuation ("B" < "a" in Python, "a" < "B" in en-US), and a worker's
heartbeat and its batch of outcomes deadlocked.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from ambidex.jobs import JobStatus, JobStore
from ambidex.jobs._store import Outcome

_loops = threading.local()
_opened: list[asyncio.AbstractEventLoop] = []  # closed by the test, after its store


def _call(store: JobStore, on_loop: bool, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, or (``on_loop``) its hot path on this thread's own loop."""
    if not on_loop:
        return fn(*args, **kwargs)
    hot = store.on_loop(fn, args, kwargs)
    assert hot is not None
    loop = getattr(_loops, "loop", None)
    if loop is None:
        loop = _loops.loop = asyncio.new_event_loop()
        _opened.append(loop)
    return loop.run_until_complete(hot())


@pytest.mark.parametrize("hot", ["none", "heartbeat", "finish"])
def test_heartbeat_and_outcomes_never_deadlock_under_an_en_us_collation(
    icu_pg_url: str, hot: str
) -> None:
    # hot: which of the two runs as the job service makes it on PostgreSQL, on a loop
    # (``_pg_hot``: the rows locked in the same order, in the same statement).
    errors: list[str] = []
    stop = time.monotonic() + 4.0
    rng = random.Random(3)
    with JobStore(icu_pg_url) as pg:

        def worker(name: str) -> None:
            beside = ThreadPoolExecutor(1)
            n = 0
            while time.monotonic() < stop:
                n += 1
                # ids whose code-point order differs from en-US order (case, punctuation)
                ids = [f"{name}-{c}{n}" for c in "aBcDeFgHiJkLmNoP"]
                pg.submit_many("echo", [{"value": i} for i in range(len(ids))], job_ids=ids)
                jobs = pg.claim(name, lease_s=30, limit=len(ids))
                outcomes = [Outcome(j.id, name, j.attempts, JobStatus.SUCCEEDED, 1) for j in jobs]
                held = [j.id for j in jobs]

                def beat(held: list[str] = held) -> None:
                    try:
                        for _ in range(3):
                            ids = rng.sample(held, len(held))
                            _call(pg, hot == "heartbeat", pg.heartbeat, name, ids, lease_s=30)
                    except Exception as exc:
                        errors.append(repr(exc)[:200])

                # the worker's renewals run beside its finishes (a thread that keeps its loop)
                beating = beside.submit(beat)
                try:
                    _call(pg, hot == "finish", pg.finish_many, outcomes)
                except Exception as exc:
                    errors.append(repr(exc)[:200])
                beating.result()
            beside.shutdown()

        threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for loop in _opened:  # the store closed their connections
        loop.close()
    _opened.clear()
    assert errors == []
