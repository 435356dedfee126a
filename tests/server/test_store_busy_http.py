"""A job store that fails answers 503 with Retry-After, on SQLite's sqlite3 hot path too.

On SQLite the hot calls (submit, claim, get...) run through ``sqlite3`` itself,
whose errors are not SQLAlchemy's: a database locked past the busy timeout
must still be "the job store failed; try again", not a 500.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _server_support import serve_in_thread

from _pg_support import fresh_pg_database
from ambidex.jobs import _sqlite_hot
from ambidex.server import create_app


@pytest.fixture
def locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A job service (no worker) whose store waits 50 ms for a lock, not 30 s."""
    monkeypatch.setattr(_sqlite_hot, "BUSY_TIMEOUT_MS", 50)
    db = tmp_path / "jobs.sqlite"
    with serve_in_thread(create_app(db, concurrency=0)) as base:
        yield base, db


def test_a_submit_on_a_locked_sqlite_store_is_503_with_retry_after(
    locked: tuple[str, Path],
) -> None:
    base, db = locked
    holder = sqlite3.connect(db, isolation_level=None)
    with httpx.Client(base_url=base, timeout=30) as api:
        assert api.post("/v1/jobs", json={"workload": "sleep"}).status_code == 202
        holder.execute("BEGIN IMMEDIATE")  # another process writing, for longer than we wait
        try:
            one = api.post("/v1/jobs", json={"workload": "sleep"})
            batch = api.post("/v1/jobs:batch", json={"jobs": [{"workload": "sleep"}] * 3})
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        for r in (one, batch):
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "5"
            assert "the job store failed" in r.json()["detail"]
        assert api.post("/v1/jobs", json={"workload": "sleep"}).status_code == 202
        assert len(api.get("/v1/jobs").json()["jobs"]) == 2


def test_a_dropped_postgresql_connection_on_the_hot_path_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On PostgreSQL the hot calls use psycopg's async connections, whose errors are
    # not SQLAlchemy's: a connection the server dropped while idle is replaced before
    # the next call (nothing fails), and a psycopg error during a call is "try again".
    psycopg = pytest.importorskip("psycopg")
    from ambidex.jobs import _pg_hot

    with (
        fresh_pg_database() as url,
        serve_in_thread(create_app(url, concurrency=0)) as base,
        httpx.Client(base_url=base, timeout=30) as api,
    ):
        assert api.post("/v1/jobs", json={"workload": "sleep"}).status_code == 202
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        time.sleep(0.2)  # the server's last words and the end of the stream arrive
        assert api.post("/v1/jobs", json={"workload": "sleep"}).status_code == 202

        async def failing(*args: object) -> None:
            raise psycopg.errors.AdminShutdown("terminating connection")

        with monkeypatch.context() as patch:
            patch.setattr(_pg_hot.PgHot, "_run", failing)
            failed = api.post("/v1/jobs", json={"workload": "sleep"})
        assert failed.status_code == 503, failed.text
        assert failed.headers["retry-after"] == "5"
        assert "the job store failed: AdminShutdown" in failed.json()["detail"]
        assert api.post("/v1/jobs", json={"workload": "sleep"}).status_code == 202
        assert len(api.get("/v1/jobs").json()["jobs"]) == 3
