"""Fixtures of the job tests: a store on each engine, and a throwaway PostgreSQL database.

PostgreSQL is expected at ``127.0.0.1:5432`` (user ``postgres``, trust auth,
an existing database ``test``); every test that asks for it gets a database of
its own, dropped afterwards. Without a server those tests are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from _pg_support import EN_US_ICU, fresh_pg_database
from ambidex.jobs import JobStore


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[JobStore]:
    """A ``JobStore`` on a SQLite file of its own."""
    with JobStore(tmp_path / "jobs.sqlite") as store:
        yield store


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a fresh PostgreSQL database, dropped (connections and all) after the test."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture
def icu_pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database whose text sorts as en-US does ("a" < "B"), unlike Python."""
    with fresh_pg_database(EN_US_ICU) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    """A ``JobStore`` on each engine: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        target: str | Path = tmp_path / "jobs.sqlite"
    else:
        target = request.getfixturevalue("pg_url")
    with JobStore(target) as s:
        yield s
