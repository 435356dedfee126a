"""PostgreSQL's hot path with the queue's features in use: idempotency keys, limits, retries.

Keyed submits, claims of capped workloads and outcomes retried later (or one
job's outcome twice in a batch) took the SQLAlchemy path on a thread; they run
on the loop now (``_pg_hot``). The same rows and event rows as the SQLAlchemy
path, byte for byte; one job per key however many transactions race with it;
a concurrency limit that holds between two stores claiming at once.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter, defaultdict
from typing import Any

import psycopg
import pytest
from test_pg_hot import _rows, _same, _StillClock

from ambidex._clock import use_clock
from ambidex._job_model import RetryPolicy, iso
from ambidex.jobs import JobStatus, JobStore
from ambidex.jobs import _pg_hot as pg_hot
from ambidex.jobs._calls import StoreCalls
from ambidex.jobs._store import BatchRefused, IdempotencyConflict, NewJob, Outcome, Submitted
from ambidex.testing import FakeClock

POLICY = RetryPolicy(retries=2, on=["ValueError"])


def _hot_call(store: JobStore, db: StoreCalls, hot: bool) -> Any:
    """A caller of store methods: through ``StoreCalls`` on the loop (hot), or directly."""

    async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        if hot:
            assert store.on_loop(fn, args, kwargs) is not None  # None on the old code
            return await db(fn, *args, **kwargs)
        return fn(*args, **kwargs)

    return call


def _caught(answer: Any) -> Any:
    """An answer, or the error raised instead with what it names."""
    if isinstance(answer, BatchRefused):
        return (
            "refused",
            str(answer),
            [(i, repr(e), getattr(e, "earlier", None)) for i, e in answer.failures],
        )
    return answer


def _features_scenario(store: JobStore, p: str, hot: bool) -> list[Any]:
    """Keyed submits, capped claims, retried and doubled outcomes: hot or on SQLAlchemy's path."""
    worker, capped = f"w-{p}", f"{p}-capped"
    answers: list[Any] = []
    clock = _StillClock()
    limits = {capped: 2, "unrelated": 1}

    async def calls() -> None:
        db = StoreCalls()
        call = _hot_call(store, db, hot)

        async def refused_or(fn: Any, *args: Any) -> Any:
            try:
                return await call(fn, *args)
            except BatchRefused as exc:
                return _caught(exc)

        held = NewJob("echo", {"v": 0}, job_id=f"{p}-held", idempotency_key=f"{p}-k0")
        answers.append(await call(store.submit_batch, [held]))
        clock.now += 0.5
        # keys in another byte order than the batch's ("B" < "a"): stored in the batch's order
        answers.append(
            await call(
                store.submit_batch,
                [
                    NewJob("echo", 1, job_id=f"{p}-p1"),
                    NewJob(capped, 1, job_id=f"{p}-c1", idempotency_key=f"{p}-ka", retry=POLICY),
                    NewJob("echo", {"v": 0}, job_id=f"{p}-again", idempotency_key=f"{p}-k0"),
                    NewJob("echo", {"v": 9}, job_id=f"{p}-clash", idempotency_key=f"{p}-k0"),
                    NewJob(capped, 2, job_id=f"{p}-c2", idempotency_key=f"{p}-kB", priority=2),
                    NewJob(capped, 1, job_id=f"{p}-dup", idempotency_key=f"{p}-ka", retry=POLICY),
                    NewJob(capped, 9, job_id=f"{p}-dup2", idempotency_key=f"{p}-ka"),
                    NewJob("echo", float("nan")),
                    NewJob(capped, 3, job_id=f"{p}-c3", idempotency_key=f"{p}-k-", retry=POLICY),
                    NewJob("echo", 2, job_id=f"{p}-p2", run_at=clock.now + 100.0),
                    NewJob(capped, 4, job_id=f"{p}-c4", idempotency_key=f"{p}-kC"),
                ],
            )
        )
        clock.now += 0.25
        ok = [
            NewJob("echo", 3, job_id=f"{p}-p3", origin={"via": "all"}),
            NewJob("echo", {"v": 0}, job_id=f"{p}-again2", idempotency_key=f"{p}-k0"),
            NewJob(capped, 5, job_id=f"{p}-c5", idempotency_key=f"{p}-kZ", timeout_s=float("inf")),
            NewJob(capped, 5, job_id=f"{p}-c5b", idempotency_key=f"{p}-kZ"),
        ]
        answers.append(await refused_or(store.submit_all, ok))
        clash = [NewJob("echo", 4, job_id=f"{p}-p4"), NewJob("echo", 5, idempotency_key=f"{p}-k0")]
        answers.append(await refused_or(store.submit_all, clash))
        inner = [
            NewJob("echo", 6, job_id=f"{p}-i1", idempotency_key=f"{p}-k6"),
            NewJob("echo", 7, job_id=f"{p}-i2", idempotency_key=f"{p}-k6"),
        ]
        answers.append(await refused_or(store.submit_all, inner))
        clock.now += 1.5
        first = await call(
            store.claim, worker, lease_s=30.0, workloads=["echo", capped], limit=10, limits=limits
        )
        answers.append(first)
        answers.append(await call(store.claim, worker, lease_s=30.0, limit=10, limits=limits))
        running = {j.id: j for j in first}
        c1, c2 = running[f"{p}-c1"], running[f"{p}-c2"]
        store.cancel(c2.id)  # asked to cancel: its failure is not retried
        clock.now += 0.125
        outcomes = [
            Outcome(c1.id, worker, 1, JobStatus.FAILED, None, "ValueError: no", "Trace", 2.5),
            Outcome(c2.id, worker, 1, JobStatus.FAILED, None, "ValueError: no", None, 1.0),
            Outcome(f"{p}-p1", worker, 2, JobStatus.SUCCEEDED, 1),  # not the attempt held
            Outcome(f"{p}-p1", worker, 1, JobStatus.SUCCEEDED, {"ok": True}),
            Outcome(f"{p}-held", worker, 1, JobStatus.FAILED, None, "boom\x00", "T"),
            Outcome(f"{p}-held", worker, 1, JobStatus.SUCCEEDED, 1),  # written once: the first
            Outcome(f"{p}-p3", worker, 1, JobStatus.SUCCEEDED, 3, retry_in_s=1.0),  # not failed
            Outcome(f"{p}-c4", "someone", 1, JobStatus.FAILED, retry_in_s=1.0),  # not held
        ]
        answers.append(await call(store.finish_many, outcomes))
        clock.now += 1.0  # nothing due of the other workloads (p2 waits)
        answers.append(await call(store.claim, worker, lease_s=30.0, workloads=["echo"], limit=10))
        clock.now += 2.0  # c1's retry is due: it and c3 fill the limit
        again = await call(store.claim, worker, lease_s=30.0, limit=10, limits=limits)
        answers.append(again)
        answers.append(
            await call(
                store.finish_many,
                [
                    Outcome(j.id, worker, j.attempts, JobStatus.FAILED, None, "E", None, 0.5)
                    for j in again
                ],
            )
        )
        clock.now += 1.0
        for job in await call(store.claim, worker, lease_s=30.0, limit=10):
            answers.append(job)
        for jid in ("held", "p1", "c1", "c2", "c3", "c4", "c5", "p3", "p4", "i1"):
            answers.append(await call(store.get, f"{p}-{jid}"))

    with use_clock(clock):
        asyncio.run(calls())
    return answers


def _stored(url: str, table: str, column: str, prefix: str) -> list[str]:
    rows = _rows(url, f"SELECT * FROM {table} WHERE {column} LIKE %s ORDER BY seq", f"{prefix}-%")
    return [_same(r[1:]) for r in rows]  # every value but the seq, in seq order


def test_the_features_write_on_the_loop_the_rows_and_events_sqlalchemy_writes(pg_url: str) -> None:
    with JobStore(pg_url) as store:
        old = _features_scenario(store, "old", hot=False)
        new = _features_scenario(store, "new", hot=True)
    assert _same(old) == _same(new)
    submitted = new[1]
    assert [type(a).__name__ for a in submitted] == [
        "Submitted",
        "Submitted",
        "Submitted",
        "IdempotencyConflict",
        "Submitted",
        "Submitted",
        "IdempotencyConflict",
        "ValueError",
        "Submitted",
        "Submitted",
        "Submitted",
    ]
    assert [a.created for a in submitted if isinstance(a, Submitted)] == [
        True, True, False, True, False, True, True, True
    ]  # fmt: skip
    assert submitted[2].job.id == "new-held"
    assert submitted[5].job.id == "new-c1"  # a key given twice in a batch: the first's job
    assert [a.job.id for a in new[2]] == ["new-p3", "new-held", "new-c5", "new-c5"]
    assert new[3][0] == "refused"
    assert new[4][0] == "refused"
    assert new[4][2][0][2] == 0  # the earlier job of the batch with that key
    claimed = [j.id for j in new[5]]
    assert claimed[:2] == ["new-c2", "new-held"]  # priority first, then oldest
    assert sum(1 for j in new[5] if j.workload == "new-capped") == 2  # the limit
    assert new[6] == []
    assert new[7] == [True, True, False, True, True, False, True, False]
    # the retried job: queued again 2.5 s later, then claimed at its second attempt
    assert [j.id for j in new[8]] == []
    assert [(j.id, j.attempts, j.retried) for j in new[9]] == [("new-c1", 2, 1), ("new-c3", 1, 0)]

    stored = {}
    for table, column in (("ambidex_jobs", "id"), ("ambidex_job_events", "job_id")):
        stored[table] = _stored(pg_url, table, column, "new")
        assert stored[table] == _stored(pg_url, table, column, "old")  # byte for byte
    assert len(stored["ambidex_jobs"]) == 9
    assert not _rows(
        pg_url, "SELECT id FROM ambidex_jobs WHERE id = ANY(%s)", ["new-p4", "new-i1", "new-i2"]
    )
    kinds = Counter(
        r[0]
        for r in _rows(pg_url, "SELECT kind FROM ambidex_job_events WHERE job_id LIKE %s", "new-%")
    )
    assert kinds["retrying"] == 3
    assert kinds["cancelled"] == 1


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


def _insert_uncommitted(conn: psycopg.Connection[Any], job_id: str, key: str, value: Any) -> None:
    """Another transaction's submit of ``key``, left open (its row, as ``new_job_row`` makes it)."""
    conn.execute("BEGIN")
    conn.execute(
        "INSERT INTO ambidex_jobs (id, workload, input, status, attempts, max_attempts, "
        "created_at, cancel_requested, priority, run_at, retried, lost, released, "
        "idempotency_key) VALUES (%s, 'echo', %s, 'queued', 0, 3, 1.0, false, 0, 1.0, 0, 0, 0, %s)",
        (job_id, value, key),
    )


@pytest.mark.parametrize("ending", ["COMMIT", "ROLLBACK"])
def test_a_keyed_submit_racing_another_transaction_makes_one_job(pg_url: str, ending: str) -> None:
    # The other transaction stores the key first and commits while the hot insert
    # waits for it: the insert's snapshot is older than that job, which the holder
    # read (a statement of its own, after the insert) must find.
    async def main(store: JobStore) -> list[Any]:
        db = StoreCalls()
        with psycopg.connect(pg_url, autocommit=True) as other:
            _insert_uncommitted(other, "theirs", "k", "1")
            batch = [
                NewJob("echo", 0, job_id="plain"),
                NewJob("echo", 1, job_id="mine", idempotency_key="k"),
            ]
            assert store.on_loop(store.submit_batch, (batch,), {}) is not None
            submit = asyncio.ensure_future(db(store.submit_batch, batch))
            await asyncio.sleep(0.3)
            assert not submit.done()  # waits for the other transaction's key
            other.execute(ending)
            return await asyncio.wait_for(submit, 10)

    with JobStore(pg_url) as store:
        plain, keyed = asyncio.run(main(store))
        ids = [
            r[0] for r in _rows(pg_url, "SELECT id FROM ambidex_jobs WHERE idempotency_key = 'k'")
        ]
        assert plain.created
        assert store.get("plain") is not None
        if ending == "COMMIT":
            assert (keyed.job.id, keyed.created, ids) == ("theirs", False, ["theirs"])
            assert [e.job_id for e in store.events("mine")] == []
        else:
            assert (keyed.job.id, keyed.created, ids) == ("mine", True, ["mine"])
            assert [e.kind for e in store.events("mine")] == ["submitted"]


def test_keys_are_inserted_in_byte_order_so_two_batches_never_wait_in_a_cycle(
    pg_url: str,
) -> None:
    # The other transaction inserts "key-a", then "key-b" (byte order); the hot
    # batch names them "key-b", "key-a". Inserted in the batch's order, the batch
    # would hold "key-b" while waiting for "key-a", and the other transaction
    # would wait for "key-b": a deadlock, one of the two failing after a second.
    async def main(store: JobStore) -> list[Any]:
        db = StoreCalls()
        with psycopg.connect(pg_url, autocommit=True) as other:
            _insert_uncommitted(other, "theirs-a", "key-a", "1")
            batch = [NewJob("echo", 1, idempotency_key=k) for k in ("key-b", "key-a")]
            assert store.on_loop(store.submit_batch, (batch,), {}) is not None
            submit = asyncio.ensure_future(db(store.submit_batch, batch))
            await asyncio.sleep(0.3)
            assert not submit.done()  # waits for "key-a"
            await asyncio.to_thread(
                other.execute,
                "INSERT INTO ambidex_jobs (id, workload, input, status, attempts, max_attempts, "
                "created_at, cancel_requested, priority, run_at, retried, lost, released, "
                "idempotency_key) VALUES ('theirs-b', 'echo', '1', 'queued', 0, 3, 1.0, false, "
                "0, 1.0, 0, 0, 0, 'key-b')",
            )
            other.execute("COMMIT")
            answers: list[Any] = await asyncio.wait_for(submit, 10)
            return answers

    with JobStore(pg_url) as store:
        answers = asyncio.run(main(store))
    assert [(a.job.id, a.created) for a in answers] == [("theirs-b", False), ("theirs-a", False)]


def test_an_all_or_nothing_batch_racing_a_conflicting_key_stores_nothing(pg_url: str) -> None:
    async def main(store: JobStore) -> None:
        db = StoreCalls()
        with psycopg.connect(pg_url, autocommit=True) as other:
            _insert_uncommitted(other, "theirs", "k", '"another input"')
            batch = [NewJob("echo", 0, job_id="plain"), NewJob("echo", 1, idempotency_key="k")]
            assert store.on_loop(store.submit_all, (batch,), {}) is not None
            submit = asyncio.ensure_future(db(store.submit_all, batch))
            await asyncio.sleep(0.3)
            assert not submit.done()
            other.execute("COMMIT")
            with pytest.raises(BatchRefused) as refused:
                await asyncio.wait_for(submit, 10)
        ((index, error),) = refused.value.failures
        assert index == 1
        assert isinstance(error, IdempotencyConflict)
        assert error.job.id == "theirs"
        # the transaction was rolled back, and its connection is fine for the next call
        ok = await db(store.submit_all, [NewJob("echo", 0, job_id="plain")])
        assert [s.created for s in ok] == [True]

    with JobStore(pg_url) as store:
        asyncio.run(main(store))
        assert [r[0] for r in _rows(pg_url, "SELECT id FROM ambidex_jobs ORDER BY seq")] == [
            "theirs",
            "plain",
        ]
        assert len(store.events("plain")) == 1


def test_a_holder_pruned_before_it_is_read_makes_another_round(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The insert finds the key taken; the holder is pruned before the read that
    # follows: the job is inserted by another round (as the SQLAlchemy path
    # inserts it by another statement).
    real = pg_hot.KeyedInserts.insert
    rounds: list[int] = []

    async def pruned_between(self: Any, rows: Any, *args: Any) -> Any:
        stored, holders = await real(self, rows, *args)
        rounds.append(len(rows))
        if len(rounds) == 1:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute("DELETE FROM ambidex_jobs WHERE id = 'old'")
            holders = [h for h in holders if h[1] != "old"]
        return stored, holders

    monkeypatch.setattr(pg_hot.KeyedInserts, "insert", pruned_between)

    async def main(store: JobStore) -> list[Any]:
        db = StoreCalls()
        batch = [
            NewJob("echo", 1, job_id="plain"),
            NewJob("echo", 1, job_id="new", idempotency_key="k"),
            NewJob("echo", 1, job_id="new2", idempotency_key="k"),
            NewJob("echo", 1, job_id="other", idempotency_key="k2"),
        ]
        answers: list[Any] = await db(store.submit_batch, batch)
        return answers

    with JobStore(pg_url) as store:
        store.submit("echo", 1, job_id="old", idempotency_key="k")
        answers = asyncio.run(main(store))
        assert [(a.job.id, a.created) for a in answers] == [
            ("plain", True), ("new", True), ("new", False), ("other", True)
        ]  # fmt: skip
        assert rounds == [4, 2]  # the two jobs of the key pruned, again
        assert [r[0] for r in _rows(pg_url, "SELECT id FROM ambidex_jobs ORDER BY seq")] == [
            "plain",
            "other",
            "new",
        ]
        assert [len(store.events(j)) for j in ("plain", "new", "new2", "other")] == [1, 1, 0, 1]


def _on_own_loop(work: Any) -> threading.Thread:
    thread = threading.Thread(target=asyncio.run, args=(work,))
    thread.start()
    return thread


def test_keys_submitted_at_once_by_two_stores_make_one_job_each(pg_url: str) -> None:
    # Two stores (two workers' connections), two loops each: batches of the same
    # keys in random orders (a batch inserting two keys in the opposite order of
    # another's would wait for it in a cycle were they inserted in batch order).
    rng = random.Random(20240611)
    keys = [f"key-{c}" for c in "aBcDeFgHiJkLmNoP"]
    answers: list[tuple[str, str, bool]] = []
    errors: list[str] = []
    stop = time.monotonic() + 2.0

    async def submitter(store: JobStore, seed: int) -> None:
        db = StoreCalls()
        mine = random.Random(seed)
        while time.monotonic() < stop:
            chosen = mine.sample(keys, mine.randint(1, 6))
            batch = [NewJob("echo", {"key": k}, idempotency_key=k) for k in chosen]
            batch.insert(mine.randint(0, len(batch)), NewJob("echo", "plain"))
            try:
                got = await db(store.submit_batch, batch)
            except Exception as exc:
                errors.append(repr(exc)[:300])
                continue
            answers.extend(
                (n.idempotency_key, a.job.id, a.created)
                for n, a in zip(batch, got, strict=True)
                if n.idempotency_key
            )
            if mine.random() < 0.3:  # forget some keys (their jobs), as a prune does
                k = mine.choice(keys)
                with psycopg.connect(pg_url, autocommit=True) as conn:
                    conn.execute(
                        "DELETE FROM ambidex_jobs WHERE idempotency_key = %s AND status = 'queued' "
                        "AND created_at < %s",
                        (k, time.time() - 0.2),
                    )

    with JobStore(pg_url) as one, JobStore(pg_url) as two:
        assert one.on_loop(one.submit_batch, ([NewJob("echo", 1, idempotency_key="x")],), {})
        threads = [_on_own_loop(submitter(s, rng.randrange(10**9))) for s in (one, two, one, two)]
        for thread in threads:
            thread.join()
        assert errors == []
        stored = _rows(
            pg_url, "SELECT idempotency_key, id FROM ambidex_jobs WHERE idempotency_key IS NOT NULL"
        )
    holders = dict(stored)
    assert len(holders) == len(stored)  # one job per key
    created = Counter(jid for _, jid, made in answers if made)
    assert set(created.values()) == {1}  # every job made once, by one submit
    by_job: dict[str, set[str]] = defaultdict(set)
    for key, jid, _ in answers:
        by_job[jid].add(key)
    assert all(len(k) == 1 for k in by_job.values())
    for key, jid in holders.items():  # the key's job now is the last made with it
        assert jid in created
        assert by_job[jid] == {key}
    assert len(answers) > 100


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
