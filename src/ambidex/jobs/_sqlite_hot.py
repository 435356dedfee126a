"""The job store's hot statements on SQLite, through the ``sqlite3`` driver itself.

SQLAlchemy keeps the schema and every cold path; the calls each job makes
(submit, claim, finish, get) run here instead: plain SQL strings, which the
driver prepares once and keeps in its statement cache, on connections of the
store's own. What this saves is SQLAlchemy's work around each statement (pool
checkout, transaction events, parameter and result processing), about
three quarters of a store call's time.

The rules are those of ``_store`` and its SQLAlchemy statements, word for word:
the same ``WHERE`` clauses (a write names the worker and the attempt it holds),
the same values, ``BEGIN IMMEDIATE`` for every write transaction (two writers,
in two processes, queue on ``busy_timeout`` instead of failing), WAL with
``synchronous=NORMAL`` (a commit survives a ``kill -9`` of the process).
Writes of this process are serialised by the store's write lock, so one
write connection serves them all.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import make_url

from ambidex.jobs._engines import BUSY_TIMEOUT_MS
from ambidex.jobs._schema import JOB_COLUMNS
from ambidex.jobs._statements import QUEUED, RUNNING

__all__ = ["RawSqlite"]

_JOB_COLUMNS = ", ".join(JOB_COLUMNS)
_NEW_JOB_KEYS = (
    "id",
    "workload",
    "input",
    "status",
    "attempts",
    "max_attempts",
    "timeout_s",
    "created_at",
    "cancel_requested",
    "priority",
    "run_at",
    "retry",
    "retried",
    "lost",
    "idempotency_key",
    "rerun_of",
    "trace_context",
)
GET = f"SELECT {_JOB_COLUMNS} FROM ambidex_jobs WHERE id = ?"
INSERT_JOBS = (
    f"INSERT INTO ambidex_jobs ({', '.join(_NEW_JOB_KEYS)}) "
    f"VALUES ({', '.join(':' + k for k in _NEW_JOB_KEYS)})"
)
INSERT_KEYED = (
    f"{INSERT_JOBS} ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
)
"""Insert a job with an idempotency key, unless a job holds that key (then no row)."""
LAST_JOBS = "SELECT id, idempotency_key FROM ambidex_jobs ORDER BY rowid DESC LIMIT ?"
"""The last ``?`` jobs stored: within a write, those the write stored (the highest rowids)."""
INSERT_EVENTS = (
    "INSERT INTO ambidex_job_events (job_id, kind, at, data) VALUES (:job_id, :kind, :at, :data)"
)
_HELD = "id = :p_id AND worker = :p_worker AND attempts = :p_attempt AND status = 'running'"
FINISH = (
    "UPDATE ambidex_jobs SET status = :p_status, progress = coalesce(:p_final_progress, progress), "
    "result = :p_result, error = :p_error, finished_at = :p_now, lease_expires_at = NULL, "
    f"traceback = :p_traceback WHERE {_HELD}"
)
RETRY_LATER = (
    "UPDATE ambidex_jobs SET status = 'queued', error = :p_error, lease_expires_at = NULL, "
    "traceback = :p_traceback, run_at = :p_run_at, retried = retried + 1 "
    f"WHERE {_HELD} AND cancel_requested IS 0"
)
_CLAIM = (
    "UPDATE ambidex_jobs SET status = 'running', progress = NULL, message = NULL, "
    "attempts = attempts + 1, started_at = :p_now, finished_at = NULL, worker = :p_worker, "
    "lease_expires_at = :p_lease_until WHERE seq IN ("
    "SELECT seq FROM ambidex_jobs WHERE status = 'queued' AND run_at <= :p_now{workloads} "
    "ORDER BY priority DESC, seq LIMIT :p_limit) AND status = 'queued' "
    f"RETURNING {_JOB_COLUMNS}"
)
if (QUEUED, RUNNING) != ("queued", "running"):  # pragma: no cover - the literals above
    raise AssertionError(f"job states renamed: {QUEUED}, {RUNNING}")


def _names(prefix: str, n: int) -> str:
    """``:p0, :p1, ...``: ``n`` named parameters for an ``IN (...)`` list."""
    return ", ".join(f":{prefix}{i}" for i in range(n))


def jobs_with_keys_sql(n: int) -> str:
    """The jobs holding the idempotency keys ``:k0``... ``:k{n-1}``."""
    return f"SELECT {_JOB_COLUMNS} FROM ambidex_jobs WHERE idempotency_key IN ({_names('k', n)})"


def capped_candidates_sql(n_capped: int, n_workloads: int | None) -> str:
    """The due jobs, each with how many of its workload run now if it is capped.

    Parameters: ``:c0``... (capped workloads), ``:w0``... (workloads claimed,
    unless ``n_workloads`` is None), ``:p_now``, ``:p_limit``. As
    ``_statements.capped_candidates``.
    """
    only = "" if n_workloads is None else f" AND workload IN ({_names('w', n_workloads)})"
    return (
        f"SELECT seq, workload, CASE WHEN workload IN ({_names('c', n_capped)}) THEN "
        "(SELECT count(*) FROM ambidex_jobs AS running_jobs WHERE running_jobs.status = "
        "'running' AND running_jobs.workload = ambidex_jobs.workload) ELSE 0 END "
        f"FROM ambidex_jobs WHERE status = 'queued' AND run_at <= :p_now{only} "
        "ORDER BY priority DESC, seq LIMIT :p_limit"
    )


def claim_seqs_sql(n: int) -> str:
    """Claim the queued jobs ``:s0``... ``:s{n-1}`` (chosen by a capped claim)."""
    return (
        "UPDATE ambidex_jobs SET status = 'running', progress = NULL, message = NULL, "
        "attempts = attempts + 1, started_at = :p_now, finished_at = NULL, worker = :p_worker, "
        f"lease_expires_at = :p_lease_until WHERE seq IN ({_names('s', n)}) "
        f"AND status = 'queued' RETURNING {_JOB_COLUMNS}"
    )


def renew_sql(n: int) -> str:
    """Renew ``:p_worker``'s leases on the jobs ``:i0``... ``:i{n-1}`` it runs."""
    return (
        "UPDATE ambidex_jobs SET lease_expires_at = :p_until WHERE worker = :p_worker "
        f"AND status = 'running' AND id IN ({_names('i', n)}) RETURNING id, cancel_requested"
    )


UPDATE_WORKER = (
    "UPDATE ambidex_workers SET heartbeat_at = :heartbeat_at, running = :running, "
    "concurrency = :concurrency, workloads = :workloads, lease_s = :lease_s WHERE id = :id"
)
INSERT_WORKER = (
    "INSERT INTO ambidex_workers (id, host, pid, started_at, version, heartbeat_at, running, "
    "concurrency, workloads, lease_s) VALUES (:id, :host, :pid, :started_at, :version, "
    ":heartbeat_at, :running, :concurrency, :workloads, :lease_s)"
)


def claim_sql(n_workloads: int | None) -> str:
    """The claim of the ``n_workloads`` workloads ``:w0``, ``:w1``... (None: of any)."""
    if n_workloads is None:
        return _CLAIM.format(workloads="")
    return _CLAIM.format(workloads=f" AND workload IN ({_names('w', n_workloads)})")


def new_job_params(row: dict[str, Any]) -> dict[str, Any]:
    """The parameters of ``INSERT_JOBS`` from a row of ``new_job_row``."""
    return {k: row[k] for k in _NEW_JOB_KEYS}


def _connect(path: str, busy_timeout_ms: int | None = None) -> sqlite3.Connection:
    if busy_timeout_ms is None:
        busy_timeout_ms = BUSY_TIMEOUT_MS
    conn = sqlite3.connect(
        path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _lost(cause: BaseException) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(
        f"not stored: a write earlier in the same transaction failed and SQLite rolled "
        f"the transaction back ({type(cause).__name__}: {cause})"
    )
    error.__cause__ = cause
    return error


class RawSqlite:
    """The store's own ``sqlite3`` connections: one to write, a few to read.

    ``write`` and ``turn`` must be entered under the store's write lock (one
    writer per process at a time); ``read`` may be entered from any thread.
    """

    def __init__(self, url: str) -> None:
        database = make_url(url).database
        if not database:
            raise ValueError(f"no SQLite file in {url!r}")
        self._path = database
        self._writer: sqlite3.Connection | None = None
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._idle_now: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._turn_of: int | None = None  # the thread in a ``turn``
        self._turn_lost: BaseException | None = None  # what rolled the turn back, if anything

    def _write_conn(self) -> sqlite3.Connection:
        if self._closed.is_set():
            raise RuntimeError("the job store is closed")
        conn = self._writer
        if conn is None:
            conn = self._writer = _connect(self._path)
        return conn

    @contextmanager
    def turn(self) -> Iterator[None]:
        """One write transaction shared by every ``write`` block this thread enters in it.

        Inside, each ``write`` block is a savepoint: its error undoes its own
        writes alone, and the rest commit when the turn ends.
        """
        conn = self._write_conn()
        conn.execute("BEGIN IMMEDIATE")
        self._turn_of = threading.get_ident()
        self._turn_lost = None
        try:
            yield
            if self._turn_lost is not None:  # every write of the turn is undone
                raise _lost(self._turn_lost)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            self._turn_of = None
            self._turn_lost = None

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``), committed when the block ends.

        Within a ``turn`` of this thread, a savepoint of the turn's transaction instead.
        """
        conn = self._write_conn()
        if self._turn_of == threading.get_ident():
            if self._turn_lost is not None:
                # Outside the turn's transaction this write would commit on its own,
                # and then be reported failed with the rest of the turn.
                raise _lost(self._turn_lost)
            conn.execute("SAVEPOINT call")
            try:
                yield conn
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK TO call")
                    conn.execute("RELEASE call")
                else:  # SQLite rolled the whole turn back (disk full, I/O error...)
                    self._turn_lost = exc
                raise
            conn.execute("RELEASE call")
            return
        with self.turn():  # a transaction of its own: a turn of one write
            yield conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A connection to run one SELECT on (each runs atomically by itself)."""
        with self._pooled(self._idle, BUSY_TIMEOUT_MS) as conn:
            yield conn

    @contextmanager
    def read_now(self) -> Iterator[sqlite3.Connection]:
        """As ``read``, on a connection that never waits for a lock.

        A statement that would wait (SQLite busy) raises ``sqlite3.OperationalError``
        at once instead: the caller then reads through ``read`` on a thread.
        """
        with self._pooled(self._idle_now, 0) as conn:
            yield conn

    @contextmanager
    def _pooled(
        self, idle: queue.SimpleQueue[sqlite3.Connection], busy_timeout_ms: int
    ) -> Iterator[sqlite3.Connection]:
        if self._closed.is_set():
            raise RuntimeError("the job store is closed")
        try:
            conn = idle.get_nowait()
        except queue.Empty:
            conn = _connect(self._path, busy_timeout_ms)
        try:
            yield conn
        finally:
            idle.put(conn)
            if self._closed.is_set():  # closed meanwhile: close what close() may have missed
                self._close_idle()

    def close(self) -> None:
        """Close the connections; call it under the store's write lock.

        A read still running closes its connection when it ends.
        """
        self._closed.set()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._close_idle()

    def _close_idle(self) -> None:
        for idle in (self._idle, self._idle_now):
            while True:
                try:
                    idle.get_nowait().close()
                except queue.Empty:
                    break
