"""The job store's hot statements on PostgreSQL: on the event loop, through psycopg (async).

SQLAlchemy keeps the schema and every cold path; the calls each job makes
(submit, claim, finish, renew, get) of the job service's loops run here
instead, as coroutines on the caller's loop. Measured reason (2-CPU VMs,
``benchmarks/jobs_throughput.py``, 2,000 jobs, 8 submitters, 8 workers): each
of those calls went from the loop to a runtime I/O thread and back (110-130 µs)
and through SQLAlchemy (100-200 µs of CPU a statement), 1.17 ms of CPU a job
and 636 jobs/s, half a plain asyncpg lease queue's rate.

Each call is one statement of plain SQL, prepared by the server on each
connection: the rows of several jobs go in as one JSON array (see
``_insert_sql``), and a job's event rows are written by the same statement (a
``WITH`` of several writes, one transaction, committed before the call
answers). Measured after (same benchmark, same rounds): 1,341 jobs/s at
0.45 ms of CPU a job; the asyncpg lease queue 1,093 at 0.42, pgqueuer 1,266
at 0.40. What is left of a job's CPU is mostly psycopg's own work per
statement (~85 µs a round trip, as asyncpg's) and the job service's. The rules are
those of ``_store`` and its SQLAlchemy statements, word for word: the same
``WHERE`` clauses (a write names the worker, the attempt it holds and
``status = 'running'``; a claim takes ``FOR UPDATE SKIP LOCKED`` the due jobs,
highest priority first, then oldest), the same values, the same event
``data`` text (made by ``dumps`` in Python, or spelled the same in SQL for a
claim's ``started`` events). A write that may wait for the locks of several
rows (a batch of outcomes, a renewal) first locks them in job id order, in the
same statement (see ``JobStore._lock_rows``: two workers deadlocked before);
a batch with idempotency keys inserts them in key order (``_keyed_insert_sql``).

Two calls need a second statement, whose snapshot is taken after the first
has run: a claim of a workload with a concurrency limit (its advisory locks,
then the count and the claim: ``_capped_claim_sql``) and a submit with
idempotency keys (the insert, then a read of who holds the keys found taken:
``_keyed_insert_sql``, ``_HOLDERS``). Both statements go in one round trip (a
pipeline, ``_pipelined``) and are one transaction, as on the SQLAlchemy path;
psycopg's pipeline costs ~50 µs of CPU more than one statement. Outcomes
retried later, or one job's outcome twice in a batch, take ``_FINISH_ANY``.

An ``AsyncConnection`` belongs to the loop it was opened on: each loop has a
few connections of its own (a claim, a batch of outcomes, a renewal and a get
may be in flight at once), opened when first needed. ``close`` closes them all,
from any thread, without the loop (which may be gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, Float, Integer
from sqlalchemy.engine import make_url

from ambidex.jobs._json import dumps
from ambidex.jobs._schema import JOB_COLUMNS, jobs_table
from ambidex.jobs._statements import QUEUED, RUNNING

if TYPE_CHECKING:
    import psycopg

__all__ = ["KeyedInserts", "PgHot"]

CONNECTIONS_PER_LOOP = 4
_JOBS = "ambidex_jobs"
_EVENTS = "ambidex_job_events"
_COLUMNS = ", ".join(f'"{c}"' for c in JOB_COLUMNS)


def _cast(column: str) -> str:
    kind = jobs_table.c[column].type
    if isinstance(kind, Boolean):
        return "::boolean"
    if isinstance(kind, Float):
        return "::float8"
    if isinstance(kind, Integer):  # BigInteger is an Integer
        return "::int8"
    return ""


# Several rows go in as one JSON array of arrays (``dumps``: C, a few µs) read by
# ``json_array_elements``: psycopg's list dumpers (one array a column, each element
# dumped and escaped in Python) cost a tenth of the CPU of a job. JSON gives back
# each value exactly: text as written, a float's shortest repr (``float8in`` reads
# the same double), null as NULL.
def _insert_sql(columns: tuple[str, ...]) -> str:
    """New jobs and their ``submitted`` events: rows ``[*values of columns, event data]``."""
    names = ", ".join(f'"{c}"' for c in columns)
    values = ", ".join(f"(r->>{i}){_cast(c)}" for i, c in enumerate(columns))
    return (
        "WITH rows AS MATERIALIZED (SELECT r, n FROM json_array_elements(%s::json) "
        "WITH ORDINALITY AS e(r, n)), "
        f"new_jobs AS (INSERT INTO {_JOBS} ({names}) SELECT {values} FROM rows ORDER BY n) "
        f"INSERT INTO {_EVENTS} (job_id, kind, at, data) "
        f"SELECT r->>{columns.index('id')}, 'submitted', %s, r->>{len(columns)} "
        "FROM rows ORDER BY n"
    )


def _spelled(value: Any) -> Any:
    """A float JSON cannot write as the text ``float8in`` reads (``inf``, ``nan``)."""
    return repr(value) if isinstance(value, float) and not math.isfinite(value) else value


_GET = f"SELECT {_COLUMNS} FROM {_JOBS} WHERE id = %s"


_CLAIMED = (
    f"claimed AS (UPDATE {_JOBS} SET status = '{RUNNING}', attempts = attempts + 1, "
    "started_at = %(p_now)s, finished_at = NULL, worker = %(p_worker)s, "
    "lease_expires_at = %(p_lease_until)s, progress = NULL, message = NULL "
    f"WHERE {{picked}} AND status = '{QUEUED}' "
    f"RETURNING {_COLUMNS}), "
    f"started AS (INSERT INTO {_EVENTS} (job_id, kind, at, data) "
    f"SELECT id, 'started', %(p_now)s, "
    f'\'{{{{"status":"{RUNNING}","attempt":\' || attempts || \',"worker":\' '
    "|| %(p_worker_json)s::text || '}}' "
    "FROM claimed ORDER BY priority DESC, seq) "
    f"SELECT {_COLUMNS} FROM claimed"
)
"""Claim the queued jobs ``{picked}`` (a condition on ``seq``), write their ``started`` events.

An event's ``data`` is spelled as ``_store._started_events`` writes it with
``dumps``: ``{"status":"running","attempt":N,"worker":W}``, ``W`` being the
worker id as JSON (a parameter, made by ``dumps``).
"""


def _claim_sql(filtered: bool) -> str:
    """``_statements.claim_statement`` on PostgreSQL, with the ``started`` events written too."""
    which = " AND workload = ANY(%(p_workloads)s::text[])" if filtered else ""
    return (
        f"WITH picked AS (SELECT seq FROM {_JOBS} "
        f"WHERE status = '{QUEUED}' AND run_at <= %(p_now)s{which} "
        "ORDER BY priority DESC, seq LIMIT %(p_limit)s FOR UPDATE SKIP LOCKED), "
        f"{_CLAIMED.format(picked='seq IN (SELECT seq FROM picked)')}"
    )


_CLAIM_ALL = _claim_sql(filtered=False)
_CLAIM_SOME = _claim_sql(filtered=True)


def _keyed_insert_sql(columns: tuple[str, ...]) -> str:
    """New jobs, some with idempotency keys, and the ``submitted`` events of those stored.

    Rows ``[*values of columns, event data]``, as ``_insert_sql``'s; answers the
    ids stored. ``_store._submit_keyed``'s ``INSERT ... ON CONFLICT DO NOTHING``:
    a key already taken (by a stored job, one committed meanwhile, or an earlier
    job of the batch) leaves its job out, and the unique index decides between
    two transactions with one key. The jobs get their seqs in the SQLAlchemy
    path's order (the rows without a key first, then those with one, each in
    the batch's order) but are inserted in the byte order of their keys: a
    transaction inserting a key waits for another that inserted it and has not
    ended, so two batches inserting two keys in opposite orders would wait for
    each other in a cycle.
    """
    names = ", ".join(f'"{c}"' for c in columns)
    values = ", ".join(f"(r->>{i}){_cast(c)}" for i, c in enumerate(columns))
    key = f"(r->>{columns.index('idempotency_key')})"
    job_id = f"(r->>{columns.index('id')})"
    return (
        "WITH rows AS MATERIALIZED (SELECT r, n FROM json_array_elements(%(p_rows)s::json) "
        "WITH ORDINALITY AS e(r, n)), "
        # A subquery with an ORDER BY is not merged into the one above it: nextval
        # is called row after row in that order.
        "numbered AS MATERIALIZED (SELECT r, n, nextval((SELECT "
        f"pg_get_serial_sequence('{_JOBS}', 'seq'))::regclass) AS s "
        f"FROM (SELECT r, n FROM rows ORDER BY {key} IS NOT NULL, n) AS o), "
        f"new_jobs AS (INSERT INTO {_JOBS} (seq, {names}) SELECT s, {values} FROM numbered "
        f'ORDER BY {key} COLLATE "C" NULLS FIRST, n '
        "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING "
        "RETURNING id) "
        f"INSERT INTO {_EVENTS} (job_id, kind, at, data) "
        f"SELECT {job_id}, 'submitted', %(p_now)s, r->>{len(columns)} FROM rows "
        f"WHERE {job_id} IN (SELECT id FROM new_jobs) ORDER BY n RETURNING job_id"
    )


_HOLDERS = (
    f"SELECT {_COLUMNS} FROM {_JOBS} WHERE idempotency_key = ANY(%(p_keys)s::text[]) "
    "AND id <> ALL(%(p_mine)s::text[])"
)
"""The jobs holding the keys ``p_keys``, but for the batch's own rows ``p_mine``.

Run after ``_keyed_insert_sql`` in the same transaction, as a statement of its
own: its snapshot is taken after the insert, so it sees a job another
transaction stored with one of the keys while the insert waited for it.
"""

_ADVISORY_LOCKS = "SELECT pg_advisory_xact_lock(k) FROM unnest(%(p_keys)s::int8[]) AS u(k)"
"""The advisory locks of capped workloads (``_statements.lock_key``), in the order given.

``unnest`` gives an array's elements in order, and each row's lock is taken as
the row is read.
"""


def _capped_claim_sql(filtered: bool) -> str:
    """``JobStore._claim_capped`` on PostgreSQL, after its advisory locks, in one statement.

    The candidates (``_statements.capped_candidates``), then the running jobs of
    each workload, counted once (read from the running jobs alone: with the
    workload in the ``WHERE``, PostgreSQL read every job of the workload through
    its index, 8 ms a claim with 20,000 queued); a candidate of a capped
    workload fits when it is the k-th of its workload, in claim order, and
    running + k is at most the limit: ``JobStore._under_limits``, which takes each candidate
    that fits, and none after the first that does not. The ``started`` events
    are written as ``_claim_sql`` writes them. Each step is computed once
    (``MATERIALIZED``, and the jobs claimed named by an array): planned with
    the parameters' values (a prepared statement's first five runs), a
    ``seq IN (SELECT ...)`` here became a join that counted the running jobs
    again for every queued job, 3 s a claim with 2,000 jobs queued.
    """
    which = " AND workload = ANY(%(p_workloads)s::text[])" if filtered else ""
    return (
        f"WITH candidates AS MATERIALIZED (SELECT seq, workload, priority FROM {_JOBS} "
        f"WHERE status = '{QUEUED}' AND run_at <= %(p_now)s{which} "
        "ORDER BY priority DESC, seq LIMIT %(p_limit)s FOR UPDATE SKIP LOCKED), "
        f"running AS MATERIALIZED (SELECT workload, count(*) AS n FROM {_JOBS} "
        f"WHERE status = '{RUNNING}' GROUP BY workload), "
        "chosen AS MATERIALIZED (SELECT c.seq FROM (SELECT seq, workload, row_number() OVER "
        "(PARTITION BY workload ORDER BY priority DESC, seq) AS k FROM candidates) AS c "
        "LEFT JOIN unnest(%(p_capped)s::text[], %(p_caps)s::int8[]) AS cap(workload, most) "
        "ON cap.workload = c.workload LEFT JOIN running ON running.workload = c.workload "
        "WHERE cap.most IS NULL OR coalesce(running.n, 0) + c.k <= cap.most), "
        f"{_CLAIMED.format(picked='seq = ANY(ARRAY(SELECT seq FROM chosen))')}"
    )


_CAPPED_ALL = _capped_claim_sql(filtered=False)
_CAPPED_SOME = _capped_claim_sql(filtered=True)

# The rows named are locked in id order first (an aggregate reads every row of
# its input before the UPDATE runs), the ids' byte order, as ``JobStore._lock_rows``
# and ``finish_many`` lock them (a database's collation may order them otherwise).
_FINISH = (
    f"WITH locked AS (SELECT array_agg(id) AS ids FROM (SELECT id FROM {_JOBS} "
    'WHERE id = ANY(%(p_ids)s::text[]) ORDER BY id COLLATE "C" FOR UPDATE) AS l), '
    "o AS MATERIALIZED (SELECT r->>0 AS id, r->>1 AS worker, (r->>2)::int4 AS attempt, "
    "r->>3 AS status, r->>4 AS result, r->>5 AS error, r->>6 AS traceback, "
    "(r->>7)::float8 AS final_progress, r->>8 AS data "
    "FROM json_array_elements(%(p_rows)s::json) AS r), "
    f"done AS (UPDATE {_JOBS} AS j SET status = o.status, finished_at = %(p_now)s, "
    "lease_expires_at = NULL, result = o.result, error = o.error, traceback = o.traceback, "
    "progress = coalesce(o.final_progress, j.progress) FROM o "
    "WHERE j.id = o.id AND j.id = ANY((SELECT ids FROM locked)::text[]) "
    f"AND j.worker = o.worker AND j.attempts = o.attempt AND j.status = '{RUNNING}' "
    "RETURNING j.id) "
    f"INSERT INTO {_EVENTS} (job_id, kind, at, data) "
    "SELECT o.id, o.status, %(p_now)s, o.data FROM o JOIN done ON done.id = o.id "
    'ORDER BY o.id COLLATE "C" RETURNING job_id'
)
"""``_statements.FINISH`` for several outcomes (none retried later, each of another job)."""

# As ``_FINISH`` (the rows named locked in id order first, every row before any
# is written: the UPDATE's ANY reads the whole of ``locked`` before its first
# row), for any outcomes. ``locked`` reads each row as locked (its latest
# version, which no one else can change until the commit): the outcome written
# for a job is the first of the batch (``n``) naming the worker and the attempt
# that hold it, as ``finish_many`` writing them one after another finds; it is
# retried later (``_statements.RETRY_LATER``) if it asks to be and no one asked
# to cancel the job, and written as final (``FINISH``) otherwise.
_FINISH_ANY = (
    f"WITH locked AS MATERIALIZED (SELECT id, worker, attempts, status, cancel_requested "
    f'FROM {_JOBS} WHERE id = ANY(%(p_ids)s::text[]) ORDER BY id COLLATE "C" FOR UPDATE), '
    "o AS MATERIALIZED (SELECT r->>0 AS id, r->>1 AS worker, (r->>2)::int4 AS attempt, "
    "r->>3 AS status, r->>4 AS result, r->>5 AS error, r->>6 AS traceback, "
    "(r->>7)::float8 AS final_progress, r->>8 AS data, (r->>9)::float8 AS retry_at, "
    "r->>10 AS retry_error, r->>11 AS retry_data, n "
    "FROM json_array_elements(%(p_rows)s::json) WITH ORDINALITY AS e(r, n)), "
    "w AS MATERIALIZED (SELECT DISTINCT ON (o.id) o.*, "
    "(o.retry_at IS NOT NULL AND NOT l.cancel_requested) AS retrying FROM o JOIN locked AS l "
    f"ON l.id = o.id AND l.worker = o.worker AND l.attempts = o.attempt "
    f"AND l.status = '{RUNNING}' ORDER BY o.id, o.n), "
    f"done AS (UPDATE {_JOBS} AS j SET "
    f"status = CASE WHEN w.retrying THEN '{QUEUED}' ELSE w.status END, "
    "run_at = CASE WHEN w.retrying THEN w.retry_at ELSE j.run_at END, "
    "finished_at = CASE WHEN w.retrying THEN j.finished_at ELSE %(p_now)s END, "
    "lease_expires_at = NULL, "
    "retried = CASE WHEN w.retrying THEN j.retried + 1 ELSE j.retried END, "
    "result = CASE WHEN w.retrying THEN j.result ELSE w.result END, "
    "error = CASE WHEN w.retrying THEN w.retry_error ELSE w.error END, "
    "traceback = w.traceback, "
    "progress = CASE WHEN w.retrying THEN j.progress "
    "ELSE coalesce(w.final_progress, j.progress) END "
    "FROM w WHERE j.id = w.id AND j.id = ANY((SELECT array_agg(id) FROM locked)::text[]) "
    f"AND j.worker = w.worker AND j.attempts = w.attempt AND j.status = '{RUNNING}' "
    "RETURNING w.n), "
    f"ended AS (INSERT INTO {_EVENTS} (job_id, kind, at, data) "
    "SELECT w.id, CASE WHEN w.retrying THEN 'retrying' ELSE w.status END, %(p_now)s, "
    "CASE WHEN w.retrying THEN w.retry_data ELSE w.data END FROM w JOIN done ON done.n = w.n "
    'ORDER BY w.id COLLATE "C") '
    "SELECT n FROM done"
)
"""``_statements.FINISH`` and ``RETRY_LATER`` for any outcomes, with their events.

Rows ``(id, worker, attempt, status, result, error, traceback, final progress,
event data, retry at, retry error, retry event data)``: the last three are None
unless the outcome is retried later; then the others are those of the job
cancelled instead (see ``JobStore._record``). Answers the ``n`` (from 1) of the
outcomes written. A batch of plain outcomes (the job service's common case) takes
``_FINISH`` instead: with this statement for every batch, ``jobs_throughput.py``
ran 1.4-1.6 k jobs/s on PostgreSQL against 1.9-2.1 k.
"""

_LOCK_HELD = (
    f"WITH locked AS (SELECT array_agg(id) AS ids FROM (SELECT id FROM {_JOBS} "
    f"WHERE id = ANY(%(p_ids)s::text[]) AND worker = %(p_worker)s AND status = '{RUNNING}' "
    'ORDER BY id COLLATE "C" FOR UPDATE) AS l)'
)
_RENEW = (
    f"UPDATE {_JOBS} SET lease_expires_at = %(p_until)s "
    "WHERE id = ANY((SELECT ids FROM locked)::text[]) AND worker = %(p_worker)s "
    f"AND status = '{RUNNING}' RETURNING id, cancel_requested"
)
_WORKER = (
    "worker_row AS (INSERT INTO ambidex_workers (id, host, pid, started_at, version, "
    "heartbeat_at, running, concurrency, workloads, lease_s) VALUES (%(id)s, %(host)s, "
    "%(pid)s, %(started_at)s, %(version)s, %(heartbeat_at)s, %(running)s, %(concurrency)s, "
    "%(workloads)s, %(lease_s)s) ON CONFLICT (id) DO UPDATE SET "
    "heartbeat_at = EXCLUDED.heartbeat_at, running = EXCLUDED.running, "
    "concurrency = EXCLUDED.concurrency, workloads = EXCLUDED.workloads, "
    "lease_s = EXCLUDED.lease_s)"
)
_HEARTBEAT = f"{_LOCK_HELD} {_RENEW}"
_HEARTBEAT_WORKER = f"{_LOCK_HELD}, {_WORKER} {_RENEW}"
"""A renewal that writes the worker's row too (``JobStore._write_worker``, as an upsert)."""


class _Pool:
    """The connections of one event loop: at most ``size`` in use at a time.

    ``lock`` guards ``idle``, ``every`` and ``closed`` between the loop's thread
    and a thread closing the store.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.idle: list[psycopg.AsyncCursor[Any]] = []  # a cursor of each idle connection
        self.every: set[psycopg.AsyncConnection[Any]] = set()
        self.free = asyncio.Semaphore(size)
        self.closed = False
        self.lock = threading.Lock()

    def take(self) -> psycopg.AsyncCursor[Any] | None:
        """An idle connection's cursor, if there is one.

        Raises:
            RuntimeError: the pool was closed.
        """
        with self.lock:
            if self.closed:
                raise RuntimeError("the job store is closed")
            return self.idle.pop() if self.idle else None

    def close(self) -> None:
        """Close the idle connections now, from any thread (``PQfinish``: no loop needed).

        A connection in use by a call on the loop is closed when the call gives
        it back (closing it under the call crashed the process in libpq); if the
        loop has ended, none is in use and all are closed now.
        """
        with self.lock:
            self.closed = True
            idle = [cursor.connection for cursor in self.idle]
            doomed = set(self.every) if self.loop.is_closed() else set(idle)
            self.every -= doomed
            self.idle.clear()
        for conn in doomed:
            _finish(conn)


def _finish(conn: psycopg.AsyncConnection[Any]) -> None:
    with contextlib.suppress(Exception):
        conn.pgconn.finish()


def _rows_json(rows: Sequence[dict[str, Any]], event_data: Sequence[str]) -> str:
    """New jobs' rows and their events' data as the JSON array ``_insert_sql`` reads."""
    values = [[*row.values(), data] for row, data in zip(rows, event_data, strict=True)]
    try:
        return dumps(values)
    except ValueError:  # an infinite timeout_s: JSON has no word for it, float8in has
        return dumps([[_spelled(v) for v in row] for row in values])


async def _pipelined(
    cursor: psycopg.AsyncCursor[Any], steps: Sequence[tuple[str, Any, bool]]
) -> list[Any]:
    """Send the statements ``(sql, params, fetch)`` at once; the rows of each fetched (or None).

    One round trip: a pipeline, whose end sends the one Sync (a ``sync()``
    before it cost a second round trip). Outside an explicit transaction they
    are one transaction, each statement with a snapshot of its own; the first
    that fails undoes them all and is raised.
    """
    conn = cursor.connection
    cursors = [cursor, *(conn.cursor(binary=True) for _ in steps[1:])]
    async with conn.pipeline():
        for each, (sql, params, _) in zip(cursors, steps, strict=True):
            await each.execute(sql, params)
    return [
        await each.fetchall() if fetch else None
        for each, (_, _, fetch) in zip(cursors, steps, strict=True)
    ]


class _Held:
    """A connection of the running loop (its cursor), held for several round trips.

    ``async with``, as ``PgHot._run`` holds one for a statement: at most
    ``CONNECTIONS_PER_LOOP`` in use at once; given back when the block ends,
    kept if it is idle (``_give_back``). A class rather than a generator:
    ``contextlib.asynccontextmanager`` cost more than the statements' own
    Python work here.
    """

    __slots__ = ("_hot", "_pool", "cursor")

    def __init__(self, hot: PgHot) -> None:
        self._hot = hot

    async def __aenter__(self) -> psycopg.AsyncCursor[Any]:
        hot = self._hot
        pool = self._pool = hot._pools.get(asyncio.get_running_loop()) or hot._pool()
        await pool.free.acquire()
        try:
            self.cursor = await hot._checkout(pool)
        except BaseException:
            pool.free.release()
            raise
        return self.cursor

    async def __aexit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        try:
            self._hot._give_back(self._pool, self.cursor, kind is None)
        finally:
            self._pool.free.release()


class KeyedInserts:
    """Jobs with idempotency keys stored on one connection of the loop (``async with``).

    Each ``insert`` is one round trip. ``atomic``: all of them in one
    transaction, committed when the block ends, rolled back if it raises;
    otherwise each is a transaction of its own.
    """

    def __init__(self, hot: PgHot, *, atomic: bool) -> None:
        self._hot = hot
        self._held = _Held(hot)
        self._atomic = atomic
        self._begun = False  # an explicit transaction is open (atomic, after the first insert)

    async def __aenter__(self) -> KeyedInserts:
        self._cursor = await self._held.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: Any
    ) -> None:
        try:
            if self._begun:
                if kind is None:
                    await self._end("COMMIT")
                elif isinstance(error, Exception):
                    # A connection left otherwise (cancelled mid-call, broken) is
                    # dropped (_give_back), and the server rolls back.
                    status = self._cursor.connection.info.transaction_status
                    tx = self._hot._psycopg.pq.TransactionStatus
                    if status in (tx.INTRANS, tx.INERROR):
                        with contextlib.suppress(self._hot._psycopg.Error):
                            await self._end("ROLLBACK")
        except BaseException as exc:
            await self._held.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        await self._held.__aexit__(kind, error, tb)

    async def insert(
        self,
        rows: Sequence[dict[str, Any]],
        event_data: Sequence[str],
        now: float,
        keys: list[str],
        mine: list[str],
    ) -> tuple[set[str], list[tuple[Any, ...]]]:
        """Insert ``rows`` (``_keyed_insert_sql``), then read who holds ``keys`` (``_HOLDERS``).

        One round trip. Returns the ids of the rows stored and the rows
        (``JOB_COLUMNS``) of the jobs holding ``keys``, but for those with the
        ids ``mine``.
        """
        insert = self._hot.keyed_insert_sql(tuple(rows[0]))
        steps: list[tuple[str, Any, bool]] = []
        if self._atomic and not self._begun:
            steps.append(("BEGIN", None, False))
            self._begun = True
        steps += [
            (insert, {"p_rows": _rows_json(rows, event_data), "p_now": now}, True),
            (_HOLDERS, {"p_keys": keys, "p_mine": mine}, True),
        ]
        *_, stored, holders = await _pipelined(self._cursor, steps)
        return {r[0] for r in stored}, holders

    async def _end(self, command: str) -> None:
        self._begun = False
        await self._cursor.execute(command)


class PgHot:
    """Hot statements of a PostgreSQL job store, on connections of each event loop."""

    def __init__(self, url: str, *, per_loop: int = CONNECTIONS_PER_LOOP) -> None:
        import psycopg  # the postgres extra, as for SQLAlchemy's engine (see ``_engines``)

        self._psycopg = psycopg
        self.conninfo = make_url(url).set(drivername="postgresql").render_as_string(False)
        self._per_loop = per_loop
        self._pools: dict[asyncio.AbstractEventLoop, _Pool] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._inserts: dict[tuple[str, ...], str] = {}
        self._keyed: dict[tuple[str, ...], str] = {}

    def connections(self, loop: asyncio.AbstractEventLoop) -> int:
        """How many connections ``loop`` has open (for tests)."""
        pool = self._pools.get(loop)
        return 0 if pool is None else len(pool.every)

    def _pool(self) -> _Pool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is not None:
            return pool
        with self._lock:
            if self._closed:
                raise RuntimeError("the job store is closed")
            for gone in [lp for lp in self._pools if lp.is_closed()]:
                self._pools.pop(gone).close()
            pool = self._pools.setdefault(loop, _Pool(loop, self._per_loop))
        return pool

    async def _run(self, sql: str, params: Any, fetch: int) -> Any:
        """Run ``sql`` on a connection of this loop; no rows (``fetch`` 0), one (1) or all (2).

        Each connection keeps one cursor, reading results in binary (the values
        are the same; a float or an integer is read without parsing text).
        """
        pool = self._pools.get(asyncio.get_running_loop()) or self._pool()
        free = pool.free
        await free.acquire()
        try:
            cursor = await self._checkout(pool)
            fine = False
            try:
                await cursor.execute(sql, params)
                if fetch == 2:
                    rows: Any = await cursor.fetchall()
                else:
                    rows = await cursor.fetchone() if fetch else None
                fine = True
                return rows
            finally:
                self._give_back(pool, cursor, fine)
        finally:
            free.release()

    async def _checkout(self, pool: _Pool) -> psycopg.AsyncCursor[Any]:
        """An idle connection's cursor that still stands, or a new connection's."""
        cursor = pool.take()
        while cursor is not None and not self._alive(cursor.connection):
            self._drop(pool, cursor.connection)
            cursor = pool.take()
        if cursor is None:
            cursor = await self._open(pool)
        return cursor

    async def _open(self, pool: _Pool) -> psycopg.AsyncCursor[Any]:
        conn = await self._psycopg.AsyncConnection.connect(
            self.conninfo, autocommit=True, prepare_threshold=0
        )
        with pool.lock:
            closed = pool.closed
            if not closed:
                pool.every.add(conn)
        if closed:  # closed while it connected
            _finish(conn)
            raise RuntimeError("the job store is closed")
        return conn.cursor(binary=True)

    def _alive(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """Whether an idle connection still stands, without a round trip.

        A server that ends a connection (a restart, ``pg_terminate_backend``,
        ``idle_session_timeout``, a proxy's idle cut) says so and closes the
        socket: reading what arrived meanwhile (a non-blocking ``recv``) turns
        the connection bad. SQLAlchemy's engine pings instead (a round trip a
        checkout).
        """
        pgconn = conn.pgconn
        try:
            # Twice: the first read takes the server's last words (its FATAL
            # message), the second finds the end of the stream.
            pgconn.consume_input()
            pgconn.consume_input()
        except self._psycopg.OperationalError:
            return False
        return pgconn.status == self._psycopg.pq.ConnStatus.OK and not conn.closed

    @staticmethod
    def _drop(pool: _Pool, conn: psycopg.AsyncConnection[Any]) -> None:
        with pool.lock:
            pool.every.discard(conn)
        _finish(conn)

    def _give_back(self, pool: _Pool, cursor: psycopg.AsyncCursor[Any], fine: bool) -> None:
        conn = cursor.connection
        idle = conn.info.transaction_status is self._psycopg.pq.TransactionStatus.IDLE
        with pool.lock:
            keep = (fine or idle) and not pool.closed and not conn.closed
            if keep:
                pool.idle.append(cursor)
            else:  # broken, left mid-statement (cancelled), or the store closed
                pool.every.discard(conn)
        if not keep:
            _finish(conn)

    async def insert_jobs(
        self, rows: Sequence[dict[str, Any]], event_data: Sequence[str], now: float
    ) -> None:
        """Insert new jobs (``_rows.new_job_row``) and their ``submitted`` events (``data``)."""
        columns = tuple(rows[0])
        sql = self._inserts.get(columns)
        if sql is None:
            sql = self._inserts[columns] = _insert_sql(columns)
        await self._run(sql, (_rows_json(rows, event_data), now), 0)

    def keyed_inserts(self, *, atomic: bool) -> KeyedInserts:
        """Submits of jobs with idempotency keys, on one connection (``async with``)."""
        return KeyedInserts(self, atomic=atomic)

    def keyed_insert_sql(self, columns: tuple[str, ...]) -> str:
        """``_keyed_insert_sql`` of these columns, built once."""
        sql = self._keyed.get(columns)
        if sql is None:
            sql = self._keyed[columns] = _keyed_insert_sql(columns)
        return sql

    async def get(self, job_id: str) -> tuple[Any, ...] | None:
        """The row of the job ``job_id`` (``JOB_COLUMNS`` order), or None."""
        row: tuple[Any, ...] | None = await self._run(_GET, (job_id,), 1)
        return row

    async def claim(
        self, params: dict[str, Any], lock_keys: list[int] | None = None
    ) -> list[tuple[Any, ...]]:
        """The rows claimed (``_CLAIM_SOME`` when ``params`` names ``p_workloads``).

        With ``lock_keys`` (the advisory locks of the capped workloads, in name
        order; ``params`` then names ``p_capped`` and ``p_caps``), a capped claim:
        the locks, then ``_capped_claim_sql``, two statements sent at once (a
        pipeline) that are one transaction. The second's snapshot is taken once
        the locks are held, so it counts every job another worker claimed under
        them: ``JobStore._claim_capped``'s transaction, in one round trip.
        """
        if lock_keys is None:
            sql = _CLAIM_SOME if "p_workloads" in params else _CLAIM_ALL
            rows: list[tuple[Any, ...]] = await self._run(sql, params, 2)
            return rows
        sql = _CAPPED_SOME if "p_workloads" in params else _CAPPED_ALL
        async with _Held(self) as cursor:
            _, rows = await _pipelined(
                cursor, [(_ADVISORY_LOCKS, {"p_keys": lock_keys}, False), (sql, params, True)]
            )
        return rows

    async def finish(self, ids: list[str], rows: list[tuple[Any, ...]], now: float) -> set[str]:
        """The ids of the jobs whose outcome was recorded (see ``_FINISH`` for ``rows``)."""
        params = {"p_ids": ids, "p_rows": dumps(rows), "p_now": now}
        return {r[0] for r in await self._run(_FINISH, params, 2)}

    async def finish_any(self, ids: list[str], rows: list[tuple[Any, ...]], now: float) -> set[int]:
        """The ``n`` (from 1) of the outcomes recorded (see ``_FINISH_ANY`` for ``rows``)."""
        params = {"p_ids": ids, "p_rows": dumps(rows), "p_now": now}
        return {r[0] for r in await self._run(_FINISH_ANY, params, 2)}

    async def renew(
        self, params: dict[str, Any], worker_row: dict[str, Any] | None
    ) -> list[tuple[Any, ...]]:
        """``(id, cancel_requested)`` of each lease renewed."""
        if worker_row is None:
            rows: list[tuple[Any, ...]] = await self._run(_HEARTBEAT, params, 2)
        else:
            rows = await self._run(_HEARTBEAT_WORKER, {**params, **worker_row}, 2)
        return rows

    def close(self) -> None:
        """Close every loop's connections (from any thread; calls still running fail)."""
        with self._lock:
            self._closed = True
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()
