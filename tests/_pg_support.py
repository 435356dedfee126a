"""A throwaway PostgreSQL database for the tests that need the real thing."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
PG_BASE_URL = "postgresql://postgres@127.0.0.1:5432"


EN_US_ICU = "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
"""``fresh_pg_database(options=...)`` of a database that sorts text as en-US does."""


@contextmanager
def fresh_pg_database(options: str = "") -> Iterator[str]:
    """The URL of a new PostgreSQL database, dropped (connections and all) afterwards.

    ``options``: the rest of its ``CREATE DATABASE`` (``EN_US_ICU``, say).
    Skips the test when no server answers at 127.0.0.1:5432.
    """
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_ADMIN_URL, connect_timeout=3, autocommit=True)
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}")
    name = f"ambidex_t_{secrets.token_hex(6)}"
    try:
        admin.execute(f'CREATE DATABASE "{name}" {options}')
        try:
            yield f"{PG_BASE_URL}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()
