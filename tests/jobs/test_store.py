"""The job store on SQLite and PostgreSQL: submission, paging, claims, leases, outcomes.

Every test that takes ``store`` runs once per engine (see ``conftest.py``).
A lease that has already lapsed is made by claiming with a negative ``lease_s``,
so no test waits for a clock.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import update

from ambidex.jobs import Job, JobStatus, JobStore
from ambidex.jobs._store import jobs_table

LAPSED = -1.0  # a lease that expired a second before it was granted


def kinds(store: JobStore, job_id: str) -> list[str]:
    return [e.kind for e in store.events(job_id)]


def claim_one(store: JobStore, worker: str = "w1", lease_s: float = 30.0) -> Job:
    claimed = store.claim(worker, lease_s=lease_s)
    assert len(claimed) == 1, claimed
    return claimed[0]


def backdate_finish(store: JobStore, job_id: str, seconds: float) -> None:
    """Pretend the job finished ``seconds`` earlier than it did."""
    with store.engines.write.begin() as conn:
        conn.execute(
            update(jobs_table)
            .where(jobs_table.c.id == job_id)
            .values(finished_at=jobs_table.c.finished_at - seconds)
        )


# -- submit, get, list -----------------------------------------------------------------


def test_submit_stores_a_queued_job_that_get_returns(store: JobStore) -> None:
    before = time.time()
    job = store.submit("echo", {"value": [1, "two", None]}, max_attempts=2, timeout_s=5.0)
    assert job.status is JobStatus.QUEUED
    assert job.attempts == 0
    assert before <= job.created_at <= time.time()

    got = store.get(job.id)
    assert got is not None
    assert got.id == job.id
    assert got.workload == "echo"
    assert got.input == {"value": [1, "two", None]}
    assert got.status is JobStatus.QUEUED
    assert (got.max_attempts, got.timeout_s, got.attempts) == (2, 5.0, 0)
    assert got.created_at == pytest.approx(job.created_at)
    assert got.started_at is None
    assert got.finished_at is None
    assert got.worker is None
    assert got.cancel_requested is False
    assert store.get("no-such-job") is None
    assert kinds(store, job.id) == ["submitted"]


def test_submit_rejects_input_that_is_not_json(store: JobStore) -> None:
    with pytest.raises(ValueError, match="not storable JSON: when: a value of type object"):
        store.submit("echo", {"when": object()})
    with pytest.raises(ValueError, match="not storable JSON: x: nan is not a JSON number"):
        store.submit("echo", {"x": float("nan")})
    with pytest.raises(ValueError, match="not storable JSON: s: holds a lone surrogate"):
        store.submit("echo", {"s": "a\udc80"})
    with pytest.raises(ValueError, match="max_attempts must be at least 1"):
        store.submit("echo", {}, max_attempts=0)
    assert store.list() == ([], None, None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"run_at": float("nan")}, "run_at must be a finite time"),
        ({"run_at": float("inf")}, "run_at must be a finite time"),
        ({"timeout_s": float("nan")}, "timeout_s must be a positive number"),
        ({"timeout_s": 0.0}, "timeout_s must be a positive number"),
        ({"job_id": "a\x00b"}, "a job id must be plain text"),
        ({"job_id": "a\ud800"}, "a job id must be plain text"),
    ],
)
def test_submit_refuses_options_that_would_not_read_back(
    store: JobStore, options: dict[str, object], message: str
) -> None:
    # Each was stored before and then misread: a NaN run_at came back NULL (a job no
    # claim ever reaches), an id with a NUL could never be read back by get().
    with pytest.raises(ValueError, match=message):
        store.submit("w", {"x": 1}, **options)  # type: ignore[arg-type]
    assert store.list() == ([], None, None)


def test_submit_many_stores_every_job_in_order(store: JobStore) -> None:
    jobs = store.submit_many("echo", [{"i": i} for i in range(4)], job_ids=["a", "b", "c", "d"])
    assert [j.id for j in jobs] == ["a", "b", "c", "d"]
    claimed = store.claim("w", lease_s=30, limit=10)
    assert [j.input for j in claimed] == [{"i": i} for i in range(4)]


def test_list_pages_newest_first_until_the_cursor_is_none(store: JobStore) -> None:
    ids = [store.submit("echo", {"i": i}).id for i in range(5)]

    page1, cursor1, newer1 = store.list(limit=2)
    assert [j.id for j in page1] == [ids[4], ids[3]]
    assert cursor1 is not None
    assert newer1 is None
    page2, cursor2, _ = store.list(limit=2, cursor=cursor1)
    assert [j.id for j in page2] == [ids[2], ids[1]]
    assert cursor2 is not None
    page3, cursor3, newer3 = store.list(limit=2, cursor=cursor2)
    assert [j.id for j in page3] == [ids[0]]
    assert cursor3 is None

    exact, cursor, _ = store.list(limit=5)
    assert [j.id for j in exact] == ids[::-1]
    assert cursor is None

    # and back up, a page of newer jobs at a time
    assert newer3 is not None
    back2, older2, newer2 = store.list(limit=2, cursor=newer3)
    assert [j.id for j in back2] == [ids[2], ids[1]]
    assert older2 is not None
    assert [j.id for j in store.list(limit=2, cursor=older2).jobs] == [ids[0]]
    assert newer2 is not None
    back1, _, top = store.list(limit=2, cursor=newer2)
    assert [j.id for j in back1] == [ids[4], ids[3]]
    assert top is None


def test_list_filters_by_status_and_workload(store: JobStore) -> None:
    a = store.submit("a", {})
    b = store.submit("b", {})
    c = store.submit("a", {})
    store.cancel(c.id)

    assert [j.id for j in store.list(workload="a")[0]] == [c.id, a.id]
    assert [j.id for j in store.list(status=[JobStatus.QUEUED])[0]] == [b.id, a.id]
    queued_a = store.list(status=[JobStatus.QUEUED], workload="a").jobs
    assert [j.id for j in queued_a] == [a.id]
    assert store.list(status=[JobStatus.RUNNING])[0] == []


@pytest.mark.parametrize("cursor", ["not a cursor!", "eDEy", "czEy=x", "s"])
def test_list_rejects_a_cursor_it_did_not_make(store: JobStore, cursor: str) -> None:
    store.submit("echo", {})
    with pytest.raises(ValueError, match=r"invalid cursor .*the next_cursor or prev_cursor of a"):
        store.list(cursor=cursor)


def test_counts_reports_every_status(store: JobStore) -> None:
    store.submit_many("echo", [{}, {}, {}])
    claim_one(store)
    counts = store.counts()
    assert counts[JobStatus.QUEUED] == 2
    assert counts[JobStatus.RUNNING] == 1
    assert counts[JobStatus.SUCCEEDED] == 0
    assert set(counts) == set(JobStatus)


# -- claims ----------------------------------------------------------------------------


def test_claim_takes_the_oldest_jobs_first_up_to_the_limit(store: JobStore) -> None:
    ids = [store.submit("echo", {"i": i}).id for i in range(5)]
    before = time.time()

    first = store.claim("w1", lease_s=30, limit=2)
    assert [j.id for j in first] == ids[:2]
    for job in first:
        assert job.status is JobStatus.RUNNING
        assert job.attempts == 1
        assert job.worker == "w1"
        assert job.started_at is not None
        assert job.started_at >= before
        assert job.lease_expires_at == pytest.approx(job.started_at + 30)

    rest = store.claim("w2", lease_s=30, limit=10)
    assert [j.id for j in rest] == ids[2:]
    assert store.claim("w3", lease_s=30, limit=10) == []
    assert kinds(store, ids[0]) == ["submitted", "started"]
    started = store.events(ids[0])[1]
    assert started.data == {"status": "running", "attempt": 1, "worker": "w1"}


def test_claim_takes_only_the_workloads_named(store: JobStore) -> None:
    a1 = store.submit("a", {})
    b1 = store.submit("b", {})
    a2 = store.submit("a", {})

    assert store.claim("w", lease_s=30, workloads=[]) == []
    assert [j.id for j in store.claim("w", lease_s=30, workloads=["b"], limit=5)] == [b1.id]
    assert store.claim("w", lease_s=30, workloads=["c"], limit=5) == []
    assert [j.id for j in store.claim("w", lease_s=30, limit=5)] == [a1.id, a2.id]


def test_each_claim_of_a_job_counts_an_attempt(store: JobStore) -> None:
    job = store.submit("echo", {}, max_attempts=5)
    for attempt in (1, 2, 3):
        claimed = claim_one(store, f"w{attempt}", lease_s=LAPSED)
        assert claimed.attempts == attempt
        assert store.recover_expired() == ([job.id], [])
    got = store.get(job.id)
    assert got is not None
    assert got.attempts == 3
    assert got.status is JobStatus.QUEUED


# -- outcomes --------------------------------------------------------------------------


def test_finish_records_the_outcome_once(store: JobStore) -> None:
    store.submit("echo", {"value": 1})
    job = claim_one(store)

    assert store.finish(job.id, "w1", 1, JobStatus.SUCCEEDED, result={"answer": 42})
    done = store.get(job.id)
    assert done is not None
    assert done.status is JobStatus.SUCCEEDED
    assert done.result == {"answer": 42}
    assert done.progress == 1.0
    assert done.error is None
    assert done.finished_at is not None
    assert done.lease_expires_at is None

    assert not store.finish(job.id, "w1", 1, JobStatus.FAILED, error="late")
    assert not store.finish(job.id, "w1", 1, JobStatus.SUCCEEDED, result="other")
    assert not store.report_progress(job.id, "w1", 1, 0.5, "late")
    assert store.get(job.id) == done
    assert kinds(store, job.id) == ["submitted", "started", "succeeded"]
    assert store.events(job.id)[-1].data == {"status": "succeeded", "attempt": 1}


def test_a_worker_that_lost_its_lease_can_write_nothing(store: JobStore) -> None:
    store.submit("echo", {})
    lost = claim_one(store, "w1", lease_s=LAPSED)
    assert store.recover_expired() == ([lost.id], [])
    second = claim_one(store, "w2")
    assert second.attempts == 2

    assert not store.finish(lost.id, "w1", 1, JobStatus.SUCCEEDED, result="stale")
    assert not store.finish(lost.id, "w2", 1, JobStatus.SUCCEEDED, result="wrong attempt")
    assert not store.finish(lost.id, "w1", 2, JobStatus.SUCCEEDED, result="wrong worker")
    assert not store.report_progress(lost.id, "w1", 1, 0.9, "stale")
    assert store.heartbeat("w1", [lost.id], lease_s=30).held == set()
    unchanged = store.get(lost.id)
    assert unchanged is not None
    assert (unchanged.status, unchanged.worker, unchanged.progress) == (
        JobStatus.RUNNING,
        "w2",
        None,
    )

    assert store.finish(lost.id, "w2", 2, JobStatus.SUCCEEDED, result="fresh")
    done = store.get(lost.id)
    assert done is not None
    assert (done.status, done.result, done.attempts) == (JobStatus.SUCCEEDED, "fresh", 2)
    assert kinds(store, lost.id) == ["submitted", "started", "requeued", "started", "succeeded"]


def test_finish_needs_a_terminal_status(store: JobStore) -> None:
    store.submit("echo", {})
    job = claim_one(store)
    with pytest.raises(ValueError, match="terminal status"):
        store.finish(job.id, "w1", 1, JobStatus.RUNNING)


def test_failed_and_cancelled_outcomes_keep_their_error(store: JobStore) -> None:
    store.submit_many("echo", [{}, {}])
    first, second = store.claim("w1", lease_s=30, limit=2)
    assert store.finish(first.id, "w1", 1, JobStatus.FAILED, error="ValueError: no")
    assert store.finish(second.id, "w1", 1, JobStatus.CANCELLED, error="cancelled by request")
    failed, cancelled = store.get(first.id), store.get(second.id)
    assert failed is not None
    assert cancelled is not None
    assert (failed.status, failed.error, failed.progress) == (
        JobStatus.FAILED,
        "ValueError: no",
        None,
    )
    assert (cancelled.status, cancelled.error) == (JobStatus.CANCELLED, "cancelled by request")
    assert store.events(first.id)[-1].data["error"] == "ValueError: no"


@pytest.mark.parametrize("result", [object(), float("inf"), {"x": {1, 2}}])
def test_a_result_that_is_not_json_is_recorded_as_a_failure(
    store: JobStore, result: object
) -> None:
    store.submit("echo", {})
    job = claim_one(store)
    assert store.finish(job.id, "w1", 1, JobStatus.SUCCEEDED, result=result)
    got = store.get(job.id)
    assert got is not None
    assert got.status is JobStatus.FAILED
    assert got.result is None
    assert got.error is not None
    assert got.error.startswith("the result is not storable JSON")
    assert kinds(store, job.id)[-1] == "failed"


# -- leases ----------------------------------------------------------------------------


def test_heartbeat_renews_the_leases_a_worker_holds(store: JobStore) -> None:
    store.submit_many("echo", [{}, {}, {}])
    mine = store.claim("w1", lease_s=1.0, limit=2)
    theirs = claim_one(store, "w2", lease_s=1.0)
    old = {j.id: j.lease_expires_at for j in mine}

    report = store.heartbeat("w1", [j.id for j in mine] + [theirs.id], lease_s=60.0)
    assert report.held == {j.id for j in mine}
    assert report.cancel_requested == set()
    for job in mine:
        renewed = store.get(job.id)
        assert renewed is not None
        assert renewed.lease_expires_at is not None
        assert renewed.lease_expires_at > old[job.id] + 50
    other = store.get(theirs.id)
    assert other is not None
    assert other.lease_expires_at == pytest.approx(theirs.lease_expires_at)
    assert store.heartbeat("nobody", [theirs.id], lease_s=60.0).held == set()


def test_heartbeat_renews_only_the_jobs_named(store: JobStore) -> None:
    store.submit_many("echo", [{}, {}])
    running, orphan = store.claim("w1", lease_s=1.0, limit=2)
    report = store.heartbeat("w1", [running.id], lease_s=60.0)
    assert report.held == {running.id}
    left = store.get(orphan.id)
    assert left is not None
    assert left.lease_expires_at == pytest.approx(orphan.lease_expires_at)


def test_heartbeat_reports_the_held_jobs_someone_asked_to_cancel(store: JobStore) -> None:
    store.submit_many("echo", [{}, {}])
    keep, stop = store.claim("w1", lease_s=30, limit=2)
    store.cancel(stop.id)
    report = store.heartbeat("w1", [keep.id, stop.id], lease_s=30)
    assert report.held == {keep.id, stop.id}
    assert report.cancel_requested == {stop.id}


def test_a_finished_job_is_no_longer_held(store: JobStore) -> None:
    store.submit("echo", {})
    job = claim_one(store)
    store.finish(job.id, "w1", 1, JobStatus.SUCCEEDED, result=None)
    assert store.heartbeat("w1", [job.id], lease_s=30).held == set()


def test_recover_expired_requeues_lapsed_jobs_and_fails_them_at_max_attempts(
    store: JobStore,
) -> None:
    job = store.submit("echo", {}, max_attempts=2)
    alive = store.submit("echo", {})
    claim_one(store, "w1", lease_s=LAPSED)
    claim_one(store, "w-alive", lease_s=60)

    assert store.recover_expired() == ([job.id], [])
    requeued = store.get(job.id)
    assert requeued is not None
    assert (requeued.status, requeued.attempts, requeued.lease_expires_at) == (
        JobStatus.QUEUED,
        1,
        None,
    )
    event = store.events(job.id)[-1]
    assert event.kind == "requeued"
    assert "the lease of worker w1 lapsed" in event.data["reason"]

    again = claim_one(store, "w2", lease_s=LAPSED)
    assert (again.id, again.attempts) == (job.id, 2)
    assert store.recover_expired() == ([], [job.id])
    failed = store.get(job.id)
    assert failed is not None
    assert failed.status is JobStatus.FAILED
    assert failed.finished_at is not None
    assert failed.error is not None
    assert "max_attempts" in failed.error
    last = store.events(job.id)[-1]
    assert last.kind == "failed"
    assert last.data["error"] == failed.error
    assert last.data["worker"] == "w2"

    assert store.recover_expired() == ([], [])
    untouched = store.get(alive.id)
    assert untouched is not None
    assert untouched.status is JobStatus.RUNNING
    assert store.claim("w3", lease_s=30) == []


def test_release_puts_a_workers_jobs_back_without_using_an_attempt(store: JobStore) -> None:
    store.submit_many("echo", [{}, {}])
    mine = claim_one(store, "w1")
    other = claim_one(store, "w2")
    assert store.release("w1") == 1
    back = store.get(mine.id)
    assert back is not None
    assert (back.status, back.attempts) == (JobStatus.QUEUED, 0)
    assert store.events(mine.id)[-1].data["reason"] == "worker w1 shut down"
    still = store.get(other.id)
    assert still is not None
    assert still.status is JobStatus.RUNNING


# -- cancel ----------------------------------------------------------------------------


def test_cancel_of_a_queued_job_cancels_it_at_once(store: JobStore) -> None:
    job = store.submit("echo", {})
    cancelled = store.cancel(job.id)
    assert cancelled is not None
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.finished_at is not None
    assert store.claim("w1", lease_s=30) == []
    assert kinds(store, job.id) == ["submitted", "cancelled"]
    assert store.events(job.id)[-1].data["reason"] == "cancelled while queued"


def test_cancel_of_a_running_job_asks_its_worker(store: JobStore) -> None:
    store.submit("echo", {})
    job = claim_one(store)
    asked = store.cancel(job.id)
    assert asked is not None
    assert asked.status is JobStatus.RUNNING
    assert asked.cancel_requested is True
    assert asked.finished_at is None

    again = store.cancel(job.id)
    assert again == asked
    assert kinds(store, job.id) == ["submitted", "started", "cancel_requested"]

    assert store.finish(job.id, "w1", 1, JobStatus.CANCELLED, error="cancelled by request")
    done = store.get(job.id)
    assert done is not None
    assert done.status is JobStatus.CANCELLED


def test_cancel_of_a_finished_job_changes_nothing(store: JobStore) -> None:
    store.submit("echo", {})
    job = claim_one(store)
    store.finish(job.id, "w1", 1, JobStatus.SUCCEEDED, result="done")
    before = store.get(job.id)
    after = store.cancel(job.id)
    assert after == before
    assert after is not None
    assert after.cancel_requested is False
    assert kinds(store, job.id) == ["submitted", "started", "succeeded"]


def test_cancel_of_a_missing_job_returns_none(store: JobStore) -> None:
    assert store.cancel("no-such-job") is None


# -- events ----------------------------------------------------------------------------


def test_events_are_recorded_in_order(store: JobStore) -> None:
    job = store.submit("echo", {"v": 1})
    claim_one(store)
    assert store.report_progress(job.id, "w1", 1, 0.25, "a quarter")
    assert store.report_progress(job.id, "w1", 1, None, "just a message")
    running = store.get(job.id)
    assert running is not None
    assert (running.progress, running.message) == (None, "just a message")
    assert store.finish(job.id, "w1", 1, JobStatus.SUCCEEDED, result=1)

    events = store.events(job.id)
    assert [e.kind for e in events] == ["submitted", "started", "progress", "progress", "succeeded"]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert len({e.seq for e in events}) == len(events)
    assert all(e.job_id == job.id for e in events)
    assert [e.at for e in events] == sorted(e.at for e in events)
    assert events[0].data == {"status": "queued", "workload": "echo"}
    assert events[2].data == {"progress": 0.25, "message": "a quarter"}
    assert events[3].data == {"progress": None, "message": "just a message"}

    assert store.events(job.id, after=events[1].seq) == events[2:]
    assert store.events(job.id, after=events[1].seq, limit=1) == [events[2]]
    assert store.events(job.id, after=events[-1].seq) == []
    assert store.events("no-such-job") == []


def test_events_of_one_job_do_not_mix_with_anothers(store: JobStore) -> None:
    a = store.submit("echo", {})
    b = store.submit("echo", {})
    store.cancel(a.id)
    assert kinds(store, a.id) == ["submitted", "cancelled"]
    assert kinds(store, b.id) == ["submitted"]


# -- prune -----------------------------------------------------------------------------


def test_prune_deletes_only_finished_jobs_older_than_the_cutoff(store: JobStore) -> None:
    old_done, new_done = store.submit_many("echo", [{}, {}])
    store.claim("w1", lease_s=30, limit=2)
    assert store.finish(old_done.id, "w1", 1, JobStatus.SUCCEEDED, result=1)
    assert store.finish(new_done.id, "w1", 1, JobStatus.FAILED, error="no")
    old_cancelled = store.submit("echo", {})
    store.cancel(old_cancelled.id)
    running = store.submit("echo", {})
    claim_one(store, "w1")
    queued = store.submit("echo", {})
    backdate_finish(store, old_done.id, 3600)
    backdate_finish(store, old_cancelled.id, 3600)

    assert store.prune(older_than_s=60) == 2
    for gone in (old_done, old_cancelled):
        assert store.get(gone.id) is None
        assert store.events(gone.id) == []
    for kept in (new_done, running, queued):
        assert store.get(kept.id) is not None
        assert store.events(kept.id) != []
    assert store.prune(older_than_s=60) == 0


def test_prune_never_deletes_queued_or_running_jobs(store: JobStore) -> None:
    store.submit_many("echo", [{}, {}])
    claim_one(store)
    assert store.prune(older_than_s=0) == 0
    assert store.counts()[JobStatus.QUEUED] == 1
    assert store.counts()[JobStatus.RUNNING] == 1


# -- concurrency -----------------------------------------------------------------------


def test_concurrent_claimers_never_share_a_job_and_take_them_all(store: JobStore) -> None:
    total, threads, limit = 200, 8, 3
    ids = {j.id for j in store.submit_many("echo", [{"i": i} for i in range(total)])}
    start = threading.Barrier(threads)
    taken: dict[str, list[str]] = {f"w{n}": [] for n in range(threads)}
    errors: list[BaseException] = []

    def claimer(worker: str) -> None:
        try:
            start.wait()
            while claimed := store.claim(worker, lease_s=60, limit=limit):
                assert len(claimed) <= limit
                taken[worker].extend(j.id for j in claimed)
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=claimer, args=(w,)) for w in taken]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in pool)
    assert errors == []

    handed_out = [job_id for got in taken.values() for job_id in got]
    duplicates = [job_id for job_id, n in Counter(handed_out).items() if n > 1]
    assert duplicates == []
    assert set(handed_out) == ids
    assert store.counts()[JobStatus.RUNNING] == total
    for worker, got in taken.items():
        for job_id in got:
            job = store.get(job_id)
            assert job is not None
            assert (job.worker, job.attempts) == (worker, 1)


def test_job_ids_are_unguessable_and_safe_on_a_command_line() -> None:
    from ambidex.jobs._records import new_job_id

    ids = {new_job_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(re.fullmatch(r"[a-z2-7]{26}", job_id) for job_id in ids)


def test_job_ids_of_later_milliseconds_sort_after_and_a_fork_draws_other_bits() -> None:
    # Time first keeps jobs submitted together (and their event rows) neighbours in
    # the indexes; the random pool is emptied in a forked child, so a parent and its
    # child never hand out the same random bits.
    import os

    from ambidex.jobs._records import new_job_id

    earlier = new_job_id()
    time.sleep(0.002)
    assert new_job_id() > earlier
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, new_job_id()[-16:].encode())
        os._exit(0)
    os.close(write)
    mine = new_job_id()[-16:]
    theirs = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    assert len(theirs) == 16
    assert theirs != mine


def test_one_idempotency_key_twice_in_one_batch_stores_one_job(store: JobStore) -> None:
    from ambidex.jobs._store import IdempotencyConflict, NewJob

    answers = store.submit_batch(
        [
            NewJob("echo", {"v": 1}, idempotency_key="k1"),
            NewJob("echo", {"v": 1}, idempotency_key="k1"),
            NewJob("echo", {"v": 2}, idempotency_key="k1"),
            NewJob("echo", {"v": 3}),
            NewJob("echo", {"v": 4}, idempotency_key="k2"),
        ]
    )
    first, again, clash, plain, other = answers
    assert not isinstance(first, ValueError)
    assert not isinstance(again, ValueError)
    assert first.created
    assert not again.created
    assert again.job.id == first.job.id
    assert isinstance(clash, IdempotencyConflict)
    assert clash.job.id == first.job.id
    assert not isinstance(plain, ValueError)
    assert not isinstance(other, ValueError)
    assert other.created
    assert store.counts()[JobStatus.QUEUED] == 3
    assert kinds(store, first.job.id) == ["submitted"]


# -- SQLite's raw path -------------------------------------------------------------------


def test_sqlite_jobs_read_through_sqlite3_equal_those_read_through_sqlalchemy(
    sqlite_store: JobStore,
) -> None:
    """``get`` and ``claim`` read rows with sqlite3 itself; ``list`` with SQLAlchemy: same jobs."""
    from ambidex.jobs import RetryPolicy

    store = sqlite_store

    def same_everywhere(job: Job) -> Job:
        got = store.get(job.id)
        assert got is not None
        (listed,) = [j for j in store.list(limit=100).jobs if j.id == job.id]
        assert got == listed
        assert type(got.cancel_requested) is bool
        return got

    retry = RetryPolicy.of(2, backoff_s=0.5)
    keyed = store.submit(
        "echo",
        {"value": [1, "two", None, {"x": 1.5}]},
        max_attempts=4,
        timeout_s=5,
        priority=3,
        retry=retry,
        idempotency_key="k-1",
    )
    plain = store.submit("echo", {"value": 2})
    assert dataclasses.replace(same_everywhere(keyed), seq=0) == keyed  # submit knows no seq
    assert type(store.get(keyed.id).timeout_s) is float  # type: ignore[union-attr]
    same_everywhere(plain)

    claimed = store.claim("w1", lease_s=30.0, limit=2, limits={"echo": 5})
    assert [j.id for j in claimed] == [keyed.id, plain.id]
    for job in claimed:
        assert same_everywhere(job) == job

    assert store.report_progress(keyed.id, "w1", 1, 0.25, "a quarter")
    assert store.finish(
        keyed.id, "w1", 1, JobStatus.FAILED, error="boom", traceback="tb", retry_in_s=60.0
    )
    requeued = same_everywhere(keyed)
    assert (requeued.status, requeued.retried, requeued.error) == (JobStatus.QUEUED, 1, "boom")
    assert requeued.progress == 0.25

    assert store.finish(plain.id, "w1", 1, JobStatus.SUCCEEDED, result={"sum": [1, 2.5]})
    done = same_everywhere(plain)
    assert (done.status, done.result, done.progress) == (
        JobStatus.SUCCEEDED,
        {"sum": [1, 2.5]},
        1.0,
    )
    assert done.lease_expires_at is None


def test_a_keyed_submit_with_its_own_job_id_again_answers_the_stored_job(store: JobStore) -> None:
    """An explicit id with a key, submitted again (a client's retry): one job, one event.

    The key decides, as for a fresh id: the second submit answers the first job
    (created False) and stores nothing, alone, in one batch, or with an id that
    another stored job has.
    """
    from ambidex.jobs._store import NewJob

    first = store.submit_batch([NewJob("echo", {"v": 1}, job_id="J-1", idempotency_key="k1")])
    again = store.submit_batch([NewJob("echo", {"v": 1}, job_id="J-1", idempotency_key="k1")])
    twice = store.submit_batch(
        [
            NewJob("echo", {"v": 2}, job_id="J-2", idempotency_key="k2"),
            NewJob("echo", {"v": 2}, job_id="J-2", idempotency_key="k2"),
        ]
    )
    # k2's holder is J-2; an id that is J-1's with k2's key and input answers J-2
    other = store.submit_batch([NewJob("echo", {"v": 2}, job_id="J-1", idempotency_key="k2")])
    answers = [*first, *again, *twice, *other]
    assert not any(isinstance(a, ValueError) for a in answers)
    assert [(a.job.id, a.created) for a in answers] == [  # type: ignore[union-attr]
        ("J-1", True),
        ("J-1", False),
        ("J-2", True),
        ("J-2", False),
        ("J-2", False),
    ]
    assert kinds(store, "J-1") == ["submitted"]
    assert kinds(store, "J-2") == ["submitted"]
    assert store.counts()[JobStatus.QUEUED] == 2
