"""One job's fault stays its own: in the group commit, the store and the worker's own loops.

The faults users' code causes are driven through real subprocesses in
``tests/server/test_faults.py``; here are the pieces that make them harmless,
each on its own: the group commit that writes a poisoned batch item by item,
the store that refuses unstorable text or results for that job alone, the
worker that reports a dead loop instead of going quiet, and the text helpers
that never raise whatever an exception's ``__str__`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ambidex._text import describe_exception, plain_text, shorten
from ambidex.jobs import JobEvent, JobManager, JobStatus, JobStore, WorkloadRegistry
from ambidex.jobs._batch import GroupCommit
from ambidex.jobs._json import MAX_DEPTH, find_problem
from ambidex.jobs._store import Outcome, refused_data


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


class BytesStr(Exception):
    def __str__(self) -> Any:
        return b"bytes"


# -- text --------------------------------------------------------------------------------


def test_describe_exception_never_raises_whatever_str_does() -> None:
    assert describe_exception(ValueError("bad")) == "ValueError: bad"
    assert describe_exception(KeyboardInterrupt()) == "KeyboardInterrupt"
    assert describe_exception(Unprintable()) == "Unprintable: <unprintable Unprintable object>"
    assert describe_exception(BytesStr()) == "BytesStr: <unprintable BytesStr object>"
    assert describe_exception(SystemExit(3)) == "SystemExit: 3"


def test_plain_text_escapes_what_no_database_or_answer_can_hold() -> None:
    assert plain_text("a\x00b") == "a\\x00b"
    assert plain_text("x\udc80y") == "x\\udc80y"
    assert plain_text("ok ünïcode 🎉") == "ok ünïcode 🎉"
    assert plain_text(Unprintable()) == "Unprintable()"  # its repr, when str() fails
    assert plain_text(42) == "42"


def test_shorten_keeps_head_and_tail_and_says_how_much_went() -> None:
    text = "a" * 500 + "b" * 500
    short = shorten(text, 200)
    assert len(short) < 260
    assert short.startswith("a")
    assert short.endswith("b")
    assert "characters left out" in short
    assert shorten("tiny", 200) == "tiny"


@pytest.mark.parametrize(
    ("value", "where", "what"),
    [
        ({"a": [1, {"b": float("nan")}]}, ["a", 1, "b"], "not a JSON number"),
        ({"x": float("inf")}, ["x"], "not a JSON number"),
        (["ok", "a\ud800"], [1], "lone surrogate"),
        ({"k\udfff": 1}, ["k\\udfff"], "key holds a lone surrogate"),
    ],
)
def test_find_problem_names_where_json_would_not_read_back(
    value: Any, where: list[Any], what: str
) -> None:
    problem = find_problem(value)
    assert problem is not None
    assert problem.loc == where
    assert what in problem.msg


def test_find_problem_bounds_nesting_and_judges_types_only_when_strict() -> None:
    deep: Any = 0
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    problem = find_problem(deep)
    assert problem is not None
    assert "deeper than" in problem.msg
    shallow: Any = 0
    for _ in range(MAX_DEPTH - 1):
        shallow = [shallow]
    assert find_problem(shallow) is None
    assert find_problem({"when": object()}) is None
    strict = find_problem({"when": object()}, strict=True)
    assert strict is not None
    assert strict.loc == ["when"]
    assert find_problem({"a": [1, 2.5, "x", None, True, {"b": -0.0}]}, strict=True) is None


# -- the group commit --------------------------------------------------------------------


async def test_a_batch_that_fails_is_written_again_item_by_item_so_one_bad_item_fails_alone() -> (
    None
):
    written: list[list[str]] = []

    async def write(items: list[str]) -> list[str]:
        written.append(list(items))
        await asyncio.sleep(0.01)
        if "poison" in items:
            raise ValueError("the database refused 'poison'")
        return [item.upper() for item in items]

    commit: GroupCommit[str, str] = GroupCommit(write)
    items = ["a", "b", "poison", "c", "d"]
    results = await asyncio.gather(*(commit(i) for i in items), return_exceptions=True)
    await commit.aclose()
    assert results[:2] == ["A", "B"]
    assert isinstance(results[2], ValueError)
    assert results[3:] == ["C", "D"]
    assert ["poison"] in written  # the poisoned item was tried on its own
    assert written.count(["a"]) <= 1


async def test_an_item_answered_with_an_exception_fails_that_caller_only() -> None:
    async def write(items: list[int]) -> list[int | BaseException]:
        return [ValueError(f"no {i}") if i == 2 else i * 10 for i in items]

    commit: GroupCommit[int, int] = GroupCommit(write)
    results = await asyncio.gather(*(commit(i) for i in range(4)), return_exceptions=True)
    assert results[0] == 0
    assert isinstance(results[2], ValueError)
    assert results[3] == 30


# -- the store ---------------------------------------------------------------------------


def test_unstorable_error_text_is_escaped_and_the_batch_it_shares_is_kept(
    store: JobStore,
) -> None:
    store.submit_many("echo", [{}, {}, {}], job_ids=["good1", "bad", "good2"])
    held = store.claim("w1", lease_s=30, limit=3)
    assert len(held) == 3
    outcomes = [
        Outcome("good1", "w1", 1, JobStatus.SUCCEEDED, result={"n": 1}),
        Outcome(
            "bad", "w1", 1, JobStatus.FAILED, error="ValueError: a\x00b\udc80", traceback="T\x00"
        ),
        Outcome("good2", "w1", 1, JobStatus.SUCCEEDED, result="x\udc80"),
    ]
    assert store.finish_many(outcomes) == [True, True, True]
    good1, bad, good2 = (store.get(j) for j in ("good1", "bad", "good2"))
    assert good1 is not None
    assert bad is not None
    assert good2 is not None
    assert good1.status is JobStatus.SUCCEEDED
    assert bad.error == "ValueError: a\\x00b\\udc80"
    assert bad.traceback == "T\\x00"
    assert good2.status is JobStatus.FAILED
    assert good2.error is not None
    assert good2.error.startswith("the result is not storable JSON: result: holds a lone")


def test_progress_messages_with_nul_or_surrogates_are_stored_escaped(store: JobStore) -> None:
    job = store.submit("echo", {})
    store.claim("w1", lease_s=30)
    assert store.report_progress(job.id, "w1", 1, 0.5, "half\x00way \udc80")
    got = store.get(job.id)
    assert got is not None
    assert got.message == "half\\x00way \\udc80"


def test_refused_data_tells_the_datas_fault_from_the_databases() -> None:
    from sqlalchemy.exc import DataError, OperationalError, StatementError

    assert refused_data(ValueError("NUL"))
    assert refused_data(UnicodeEncodeError("utf-8", "\udc80", 0, 1, "surrogates not allowed"))
    assert refused_data(DataError("INSERT", {}, Exception("bad")))
    assert refused_data(StatementError("bind", "INSERT", {}, ValueError("NUL")))
    assert not refused_data(OperationalError("INSERT", {}, Exception("server closed")))
    assert not refused_data(RuntimeError("the database went away"))


def test_a_database_of_the_first_release_is_upgraded_in_place(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(
        """
        CREATE TABLE ambidex_jobs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, id VARCHAR(64) NOT NULL UNIQUE,
            workload VARCHAR(200) NOT NULL, input TEXT NOT NULL, status VARCHAR(16) NOT NULL,
            progress FLOAT, message TEXT, result TEXT, error TEXT,
            attempts INTEGER NOT NULL, max_attempts INTEGER NOT NULL, timeout_s FLOAT,
            created_at FLOAT NOT NULL, started_at FLOAT, finished_at FLOAT,
            worker VARCHAR(200), lease_expires_at FLOAT, cancel_requested BOOLEAN NOT NULL);
        CREATE TABLE ambidex_job_events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id VARCHAR(64) NOT NULL,
            kind VARCHAR(32) NOT NULL, at FLOAT NOT NULL, data TEXT NOT NULL);
        INSERT INTO ambidex_jobs (id, workload, input, status, attempts, max_attempts,
            created_at, cancel_requested)
            VALUES ('old1', 'echo', '{"value": 1}', 'queued', 0, 3, 1000.0, 0);
        """
    )
    conn.commit()
    conn.close()
    with JobStore(db) as store:
        old = store.get("old1")
        assert old is not None
        assert (old.priority, old.run_at, old.retried) == (0, 1000.0, 0)
        claimed = store.claim("w1", lease_s=30)
        assert [j.id for j in claimed] == ["old1"]
        assert store.finish("old1", "w1", 1, JobStatus.SUCCEEDED, result=1)
        store.submit("echo", {}, priority=5, idempotency_key="k")
    with JobStore(db) as again:  # a second open finds nothing left to add
        assert again.get("old1") is not None


# -- the worker's own loops --------------------------------------------------------------


class _HeartbeatBreaks(JobStore):
    """A store whose lease renewal raises what no retry loop should swallow (a bug, in effect)."""

    def heartbeat(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("info") is not None and args[1]:  # once a job is held
            raise GeneratorExit("a bug in the heartbeat")
        return super().heartbeat(*args, **kwargs)


async def _until_kind(events: AsyncIterator[JobEvent], kind: str) -> AsyncIterator[JobEvent]:
    """``events`` up to and including the first of ``kind``."""
    async for event in events:
        yield event
        if event.kind == kind:
            return


async def hold(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "held"


async def test_a_worker_whose_heartbeat_dies_says_so_and_gives_its_jobs_back(
    tmp_path: Path,
) -> None:
    registry = WorkloadRegistry()
    registry.register(hold)
    store = _HeartbeatBreaks(tmp_path / "jobs.sqlite")
    try:
        async with JobManager(store, registry, lease_s=1.5, poll_s=0.05) as m:
            job = await m.submit("hold", {"seconds": 30})
            # The worker stops, says why, and then puts the job back in the queue.
            async with asyncio.timeout(10), contextlib.aclosing(m.watch(job.id)) as events:
                kinds = [e.kind async for e in _until_kind(events, "requeued")]
            assert kinds[-2:] == ["started", "requeued"]
            assert m.problems() == [
                "the lease heartbeat stopped: GeneratorExit: a bug in the heartbeat"
            ]
            back = await m.get(job.id)
            assert back.status is JobStatus.QUEUED
            assert m.running_here == 0
    finally:
        store.close()


def test_a_lone_surrogate_an_older_release_stored_reads_back_escaped(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite"
    with JobStore(db) as store:
        store.submit("echo", {"value": "fine"}, job_id="legacy")
    conn = sqlite3.connect(db)
    # what the first release wrote for an input with a lone surrogate (ensure_ascii JSON)
    conn.execute("UPDATE ambidex_jobs SET input = ? WHERE id = 'legacy'", ('{"value":"a\\udc80"}',))
    conn.commit()
    conn.close()
    with JobStore(db) as store:
        job = store.get("legacy")
        assert job is not None
        assert job.input == {"value": "a\\udc80"}
        assert store.list().jobs[0].input == {"value": "a\\udc80"}


def test_a_job_given_back_on_shutdown_too_often_fails_instead_of_running_for_ever(
    store: JobStore,
) -> None:
    from ambidex.jobs._statements import MAX_RELEASES

    job = store.submit("echo", {})
    for n in range(MAX_RELEASES):
        (claimed,) = store.claim(f"w{n}", lease_s=30)
        assert claimed.attempts == 1  # a start given back is not an attempt
        store.release(f"w{n}")
    done = store.get(job.id)
    assert done is not None
    assert done.status is JobStatus.FAILED
    assert done.error is not None
    assert f"shut down while it ran {MAX_RELEASES} times" in done.error
    assert store.claim("late", lease_s=30) == []


async def endless() -> Any:
    import itertools

    return (i for i in itertools.count())


async def nested_iterator() -> Any:
    return {"rows": [1, 2], "more": iter([3])}


@pytest.mark.parametrize(
    ("workload", "where"), [(endless, "result"), (nested_iterator, "result.more")]
)
async def test_a_result_holding_a_generator_fails_its_job_instead_of_draining_it(
    tmp_path: Path, workload: Any, where: str
) -> None:
    registry = WorkloadRegistry()
    registry.register(workload, timeout_s=5)
    async with JobManager(tmp_path / "jobs.sqlite", registry, lease_s=2.0, poll_s=0.05) as m:
        job = await m.submit(workload.__name__)
        done = await m.wait(job.id, timeout_s=10)
    assert done.status is JobStatus.FAILED
    assert done.error == (
        f"TypeError: the result holds an iterator or generator ({where}): return a list instead"
    )


def test_an_integer_too_long_to_write_is_refused_in_an_input_and_fails_a_result(
    store: JobStore,
) -> None:
    huge = 10**5000
    problem = find_problem({"n": huge})
    assert problem is not None
    assert "more than 4300 digits" in problem.msg
    with pytest.raises(ValueError, match="more than 4300 digits"):
        store.submit("echo", {"n": huge})
    job = store.submit("echo", {})
    store.claim("w1", lease_s=30)
    assert store.finish(job.id, "w1", 1, JobStatus.SUCCEEDED, result=[huge])
    done = store.get(job.id)
    assert done is not None
    assert done.error == (
        "the result is not storable JSON: result.0: an integer of more than 4300 digits "
        "is not storable"
    )


def test_a_cron_expression_that_never_fires_is_refused_when_declared() -> None:
    from ambidex.jobs import Schedule

    with pytest.raises(ValueError, match="never fires"):
        Schedule("* * 31 2 *")
