"""Fixtures of the job tests: a store on each engine, and a throwaway PostgreSQL database.

PostgreSQL is expected at ``127.0.0.1:5432`` (user ``postgres``, trust auth,
an existing database ``test``); every test that asks for it gets a database of
its own, dropped afterwards. Without a server those tests are skipped.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from ambidex.jobs import JobStore

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
PG_BASE_URL = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[JobStore]:
    """A ``JobStore`` on a SQLite file of its own."""
    with JobStore(tmp_path / "jobs.sqlite") as store:
        yield store


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a fresh PostgreSQL database, dropped (connections and all) after the test."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_ADMIN_URL, connect_timeout=2, autocommit=True)
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}")
    name = f"ambidex_t_{secrets.token_hex(6)}"
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{PG_BASE_URL}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    """A ``JobStore`` on each engine: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        target: str | Path = tmp_path / "jobs.sqlite"
    else:
        target = request.getfixturevalue("pg_url")
    with JobStore(target) as s:
        yield s
