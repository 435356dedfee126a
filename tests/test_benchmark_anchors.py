"""The plain sqlite3 lease queue of benchmarks/jobs_throughput.py keeps the guarantees it
is the floor reference for: commit before answering, a fenced finish, an outcome written
once, an event row for every state change, an expired lease claimable again."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _jobs_anchors as anchors


@pytest.fixture
def queue(tmp_path: Path):  # type: ignore[no-untyped-def]
    q = anchors.SqliteLeaseQueue(tmp_path / "lease.sqlite")
    yield q
    q.close()


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as c:
        return c.execute(sql).fetchall()


def test_a_submit_is_committed_when_it_returns(queue: anchors.SqliteLeaseQueue) -> None:
    jid = queue.submit("echo", 7)
    # Another connection sees the job and its event row as soon as submit has returned.
    assert _rows(queue.path, f"SELECT status FROM jobs WHERE id = {jid}") == [("queued",)]
    assert _rows(queue.path, f"SELECT kind FROM events WHERE job_id = {jid}") == [("submitted",)]


def test_finish_is_fenced_and_written_once(queue: anchors.SqliteLeaseQueue) -> None:
    a, b = queue.submit("echo", 1), queue.submit("echo", 2)
    claimed = queue.claim("token-a", 4)
    assert [jid for jid, _ in claimed] == [a, b]
    assert queue.claim("token-b", 4) == []  # leased: nobody else gets them
    assert queue.finish("token-b", [(a, 1)]) == 0  # not the lease holder
    assert queue.finish("token-a", [(a, 1), (b, 2)]) == 2
    assert queue.finish("token-a", [(a, 99)]) == 0  # the outcome is written once
    assert queue.get(a) == ("succeeded", 1)
    kinds = _rows(queue.path, f"SELECT kind FROM events WHERE job_id = {a} ORDER BY seq")
    assert kinds == [("submitted",), ("started",), ("succeeded",)]


def test_an_expired_lease_is_claimed_again_and_fences_out_the_old_holder(
    tmp_path: Path,
) -> None:
    now = [1000.0]
    q = anchors.SqliteLeaseQueue(tmp_path / "lease.sqlite", clock=lambda: now[0])
    try:
        jid = q.submit("echo", 3)
        assert q.claim("old", 1) == [(jid, '{"value": 3}')]
        now[0] += anchors.LEASE_S - 1
        assert q.claim("new", 1) == []  # still leased
        now[0] += 2
        assert q.claim("new", 1) == [(jid, '{"value": 3}')]
        assert q.finish("old", [(jid, 3)]) == 0
        assert q.finish("new", [(jid, 3)]) == 1
    finally:
        q.close()
