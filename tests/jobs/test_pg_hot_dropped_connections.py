"""The PostgreSQL hot path survives the server dropping its idle connections.

SQLAlchemy's engine (``_engines``: ``pool_pre_ping=True``) notices a connection
the server closed (a restart, ``pg_terminate_backend``, ``idle_session_timeout``,
a proxy's idle cut) and opens another. ``PgHot`` handed an idle connection out
as it was: after a restart the next call on each of a loop's (up to 4)
connections failed, a finish included. It now reads what the server sent to an
idle connection before using it (no round trip), and opens another if it ended.
"""

from __future__ import annotations

import asyncio

import psycopg

from ambidex.jobs import JobStatus, JobStore
from ambidex.jobs._calls import StoreCalls
from ambidex.jobs._store import NewJob, Outcome

_KILL = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


def test_a_hot_call_survives_the_server_dropping_its_idle_connections(pg_url: str) -> None:
    async def main(store: JobStore) -> None:
        db = StoreCalls()
        await db(store.submit_all, [NewJob("echo", 1, job_id="j1"), NewJob("echo", 2, job_id="j2")])
        one, two = await db(store.claim, "w", lease_s=30.0, limit=2)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(_KILL)  # every connection of the store: both paths'
        await asyncio.sleep(0.2)
        # The SQLAlchemy path: pre-ping, a new connection, the outcome recorded.
        assert store.finish_many([Outcome(one.id, "w", 1, JobStatus.SUCCEEDED, 1)]) == [True]
        # The hot path: fails on main (psycopg.errors.AdminShutdown: terminating connection
        # due to administrator command), the outcome is not recorded.
        assert await db(store.finish_many, [Outcome(two.id, "w", 1, JobStatus.SUCCEEDED, 2)]) == [
            True
        ]

    with JobStore(pg_url) as store:
        asyncio.run(main(store))
