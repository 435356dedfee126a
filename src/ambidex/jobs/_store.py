"""The job store: every state change of a job is one short transaction.

One class drives both engines (SQLite, PostgreSQL) through SQLAlchemy Core;
what differs between them lives in ``_engines``. On SQLite the calls every
job makes (submit, claim, renew, finish, get) run the same statements through
the ``sqlite3`` driver itself instead (``_sqlite_hot``: SQLAlchemy's work
around a statement cost two to three times the statement); the schema and
the cold paths stay with SQLAlchemy; the job service runs those hot calls on
two threads of the store's own, in turns that share one transaction
(``_lanes``). The rules that make the service durable
are enforced here, in the ``WHERE`` clauses:

* a job is claimed by one worker at a time: the claim is a single
  ``UPDATE ... WHERE seq IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``
  (SQLite serialises writers itself, so the lock clause is left out there),
  taking the highest priority first, then the oldest, of the jobs whose
  ``run_at`` has come;
* a workload's concurrency limit holds across every worker: a claim of a
  limited workload counts its running jobs and claims under a lock per
  workload (an advisory transaction lock on PostgreSQL);
* every later write of a worker names the worker *and* the attempt it holds,
  so a worker whose lease lapsed (and whose job another worker now runs) can
  no longer write anything: a result is recorded once;
* a lapsed lease puts the job back in the queue, up to ``max_attempts``
  starts; a failure the job's retry policy covers puts it back after a backoff;
* an idempotency key names at most one job: a second submit with it gets
  the first job back;
* a recurring schedule fires each tick once, however many workers share the
  store: the tick is recorded in the same transaction as the job it makes.

What a worker writes on a job's behalf (an error message, a traceback, a
progress message, a result) is checked before it reaches the database, so
one job's odd output can only fail that job, never the transaction it shares
with others.

Every timestamp the store writes or compares (claims, leases, delays, retry
times) is read from ``current_clock()``, so a test's fake clock can make a
lease lapse or a retry come due without waiting.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import sqlite3
import threading
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, select, text, update

from ambidex._clock import current_clock
from ambidex._job_model import (
    Job,
    JobEvent,
    JobStatus,
    RetryPolicy,
    WorkerInfo,
    WorkflowNode,
    iso,
)
from ambidex.jobs import _sqlite_hot as hot
from ambidex.jobs._engines import Engines, open_engines
from ambidex.jobs._json import dumps
from ambidex.jobs._lanes import Lane
from ambidex.jobs._pg_hot import KeyedInserts, PgHot
from ambidex.jobs._records import (
    MAX_SEQ,
    BatchRefused,
    IdempotencyConflict,
    LeaseReport,
    NewJob,
    Outcome,
    Page,
    Submitted,
    decode_cursor,
    encode_cursor,
    refused_data,
)
from ambidex.jobs._rows import new_job_row, outcome_values, submitted_event_row
from ambidex.jobs._schema import (
    KEYED,
    events_table,
    job_from_values,
    jobs_table,
    row_to_event,
    row_to_job,
    row_to_worker,
    schedules_table,
    upgrade,
    workers_table,
    workflow_nodes_table,
)
from ambidex.jobs._statements import (
    ADVISORY_LOCK,
    CLAIM_SEQS,
    DEAD_WORKER_KEPT_S,
    EVENTS,
    FINISH,
    GET,
    HELD_ROW,
    INSERT_EVENTS,
    INSERT_JOBS,
    LOST_ERROR,
    MAX_ERROR_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_RELEASES,
    PROGRESS,
    QUEUED,
    RELEASED_ERROR,
    RETRY_LATER,
    RETRYABLE_VALUES,
    RUNNING,
    TERMINAL_VALUES,
    capped_candidates,
    claim_statement,
    event_row,
    insert_ignoring,
    lock_key,
    storable_text,
)

_jc = jobs_table.c
_wn = workflow_nodes_table.c


def _present(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without its None values (an event says only what it knows)."""
    return {k: v for k, v in data.items() if v is not None}


__all__ = [
    "BatchRefused",
    "IdempotencyConflict",
    "JobStore",
    "LeaseReport",
    "NewJob",
    "Outcome",
    "Page",
    "Submitted",
    "refused_data",
]


class JobStore:
    """Jobs and their events in SQLite (default) or PostgreSQL.

    Args:
        db: a file path or ``sqlite:///FILE`` (default: ``jobs.sqlite`` in the
            ambidex data directory), or ``postgresql://USER@HOST:PORT/DB``.

    Every method is a blocking call of one short transaction; call them from
    threads rather than from an event loop (``get_now`` excepted). The job
    service calls them through ``StoreCalls``, which runs a SQLite store's hot
    calls on the store's lanes (``lane_of``) and the rest on I/O threads.
    """

    def __init__(self, db: str | Path | None = None) -> None:
        self.engines: Engines = open_engines(db)
        self.url = self.engines.url
        self.dialect = self.engines.dialect
        # Re-entrant: the SQLite writer lane holds it for a whole turn, and the
        # calls of the turn take it again (see ``_turn``).
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self.dialect == "sqlite" else contextlib.nullcontext()
        )
        try:
            with self.engines.write.begin() as conn:
                if self.dialect == "postgresql":
                    # Workers started together on an empty database would race
                    # to create the same tables; one at a time, the rest see them.
                    conn.execute(text("SELECT pg_advisory_xact_lock(7305072613425116005)"))
                upgrade(conn)
        except BaseException:
            self.engines.dispose()
            raise
        self._claim_all = claim_statement(self.dialect, filtered=False)
        self._claim_some = claim_statement(self.dialect, filtered=True)
        self._capped_all = capped_candidates(self.dialect, filtered=False)
        self._capped_some = capped_candidates(self.dialect, filtered=True)
        self._insert_keyed = insert_ignoring(
            self.dialect, jobs_table, "idempotency_key", KEYED
        ).returning(_jc.id, _jc.idempotency_key)
        self._insert_schedule = insert_ignoring(self.dialect, schedules_table, "name")
        self._upsert_nodes = _upsert(self.dialect, workflow_nodes_table)
        # SQLite: the hot statements (submit, claim, finish, get) go through sqlite3 itself.
        self._raw = hot.RawSqlite(self.url) if self.dialect == "sqlite" else None
        self._raw_claims: dict[int | None, str] = {None: hot.claim_sql(None)}
        # SQLite: the hot calls of the job service's loops run on two threads of the
        # store's own, in turns (see ``_lanes``): the writes of a turn share one
        # transaction, the reads a thread, and each loop is woken once a turn.
        self._writer_lane: Lane | None = None
        self._reader_lane: Lane | None = None
        if self._raw is not None:
            self._writer_lane = Lane("ambidex-jobs-writer", self._turn)
            self._reader_lane = Lane("ambidex-jobs-reader")
            # A store dropped without close() ends its lanes' threads (they hold it weakly).
            weakref.finalize(self, _end_lanes, self._writer_lane, self._reader_lane)
        # PostgreSQL: the hot calls of the job service's loops run on the loop (``_pg_hot``).
        self._pg = PgHot(self.url) if self.dialect == "postgresql" else None
        if self._pg is not None:  # a store dropped without close() closes them too
            weakref.finalize(self, self._pg.close)
        self._lane_of: dict[str, Lane] = {}
        if self._writer_lane is not None and self._reader_lane is not None:
            writes = ("submit_all", "submit_batch", "claim", "finish_many", "heartbeat")
            self._lane_of = {name: self._writer_lane for name in writes}
            self._lane_of["get"] = self._reader_lane

    def close(self) -> None:
        """Close the store's connections."""
        for lane in (self._writer_lane, self._reader_lane):
            if lane is not None:
                lane.close()
        if self._raw is not None:
            with self._write_lock:
                self._raw.close()
        if self._pg is not None:
            self._pg.close()
        self.engines.dispose()

    def lane_of(self, method: Callable[..., Any]) -> Lane | None:
        """The lane that runs this store's bound ``method`` in turns, if it has one.

        The job service's loops call the store through ``StoreCalls``, which
        sends the hot calls (submit, claim, finish, renew, get) of a SQLite store
        to its lanes and every other call to the runtime's I/O threads.
        """
        lanes = self._lane_of
        if getattr(method, "__self__", None) is not self:
            return None
        return lanes.get(getattr(method, "__name__", ""))

    def on_loop(
        self, method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Callable[[], Awaitable[Any]] | None:
        """PostgreSQL: ``method(*args, **kwargs)`` as a coroutine on the running loop, if it is hot.

        The job service's loops call the store through ``StoreCalls``, which
        awaits the answer on the loop instead of sending the call to a thread.
        Hot: ``get``, ``heartbeat``, ``submit_batch``/``submit_all`` (idempotency
        keys too), ``claim`` (concurrency limits too), ``finish_many`` (outcomes
        retried later, one job twice, too); the others (None) take the
        SQLAlchemy path on a thread. Each hot call is what the SQLAlchemy path
        does, in one transaction, but for one case: a keyed ``submit_batch``
        whose key's holder is pruned between the statement that found the key
        taken and the one that reads the holder stores that job by a second
        transaction (``_insert_keyed_pg``; the SQLAlchemy path inserts it in the
        first), as ``submit_batch`` answers each job on its own.
        """
        if self._pg is None or getattr(method, "__self__", None) is not self:
            return None
        name = getattr(method, "__name__", "")
        if name == "get":
            call: Callable[..., Awaitable[Any]] = self._get_pg
        elif name == "heartbeat":
            call = self._heartbeat_pg
        elif name == "submit_batch":
            call = self._submit_batch_pg
        elif name == "submit_all":
            call = self._submit_all_pg
        elif name == "claim":
            if len(args) > 1:  # claim's options are keyword-only: a wrong call raises on a thread
                return None
            call = self._claim_pg
        elif name == "finish_many":
            call = self._finish_many_pg
        else:
            return None
        return functools.partial(call, *args, **kwargs)

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """The writer lane's turn: one transaction under the write lock (SQLite only)."""
        assert self._raw is not None
        with self._write_lock, self._raw.turn():
            yield

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        # SQLite has one writer at a time. Threads of this process queue on a
        # lock here rather than in SQLite's busy handler, which sleeps and
        # retries (1 ms, 2 ms, 5 ms...) and so turns contention into latency.
        lane = self._writer_lane
        if lane is not None and lane.thread is threading.current_thread():
            # SQLAlchemy's connection would wait for the turn's own lock: a bug, not a wait.
            raise RuntimeError("a SQLAlchemy write on the store's writer lane")
        with self._write_lock, self.engines.write.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engines.read.connect() as conn:
            yield conn

    @staticmethod
    def _event(conn: Connection, job_id: str, kind: str, at: float, **data: Any) -> None:
        conn.execute(INSERT_EVENTS, event_row(job_id, kind, at, data))

    # -- callers ---------------------------------------------------------------------

    def submit(
        self,
        workload: str,
        input: Any,
        *,
        max_attempts: int = 3,
        timeout_s: float | None = None,
        job_id: str | None = None,
        priority: int = 0,
        run_at: float | None = None,
        retry: RetryPolicy | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Store a new queued job; once this returns, the job will not be lost.

        With an ``idempotency_key`` that already names a job, that job is
        returned and nothing is stored.

        Raises:
            ValueError: ``input`` is not JSON that reads back exactly (NaN,
                infinity, lone surrogates, nesting past ``MAX_DEPTH``), a
                ``max_attempts`` below 1, or an idempotency key that names a
                job of another workload or input.
        """
        new = NewJob(
            workload,
            input,
            max_attempts,
            timeout_s,
            job_id,
            priority,
            run_at,
            retry or RetryPolicy(),
            idempotency_key,
        )
        outcome = self.submit_batch([new])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome.job

    def submit_many(
        self,
        workload: str,
        inputs: builtins.list[Any],
        *,
        max_attempts: int = 3,
        timeout_s: float | None = None,
        job_ids: builtins.list[str | None] | None = None,
    ) -> builtins.list[Job]:
        """Store several queued jobs of one workload in one transaction.

        Raises:
            ValueError: an input is not storable JSON; then none of them is stored.
        """
        ids = job_ids or [None] * len(inputs)
        answers = self.submit_batch(
            [
                NewJob(workload, value, max_attempts, timeout_s, jid)
                for value, jid in zip(inputs, ids, strict=True)
            ]
        )
        jobs = []
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
            jobs.append(answer.job)
        return jobs

    def submit_batch(
        self, new_jobs: builtins.list[NewJob]
    ) -> builtins.list[Submitted | ValueError]:
        """Store several queued jobs (any workloads) in one transaction.

        Returns one answer per job, in order: what was stored (or found by its
        idempotency key), or the ``ValueError`` that keeps a job out (its input
        is not storable JSON, ``max_attempts`` below 1, or its idempotency key
        names a different job). Jobs refused that way are left out; the others
        are stored. Raises only when the database fails (then nothing is stored).
        """
        now = current_clock().time()
        answers: builtins.list[Submitted | ValueError | None] = [None] * len(new_jobs)
        prepared = self._prepare(new_jobs, now, answers)
        if prepared:
            with self._write_new() as conn:
                self._insert_new(conn, new_jobs, prepared, now, answers)
        return [a for a in answers if a is not None]

    def submit_all(self, new_jobs: builtins.list[NewJob]) -> builtins.list[Submitted]:
        """Store several queued jobs (any workloads) in one transaction: all of them or none.

        Returns one ``Submitted`` per job, in order. An idempotency key acts as
        it does for jobs submitted one after another: a key that names a stored
        job, or an earlier job of this batch, answers that job (``created``
        False) when its workload and input are the same, and refuses the batch
        when they differ.

        Raises:
            BatchRefused: a job was refused (its input is not storable JSON,
                ``max_attempts`` below 1, or an idempotency key conflict),
                naming every job refused; nothing is stored.
        """
        now = current_clock().time()
        answers: builtins.list[Submitted | ValueError | None] = [None] * len(new_jobs)
        prepared = self._prepare(new_jobs, now, answers)
        failures = [(i, a) for i, a in enumerate(answers) if isinstance(a, ValueError)]
        if failures:
            raise BatchRefused(failures)
        if prepared:
            with self._write_new() as conn:
                self._insert_new(conn, new_jobs, prepared, now, answers)
                failures = [(i, a) for i, a in enumerate(answers) if isinstance(a, ValueError)]
                if failures:  # raised inside the transaction: it is rolled back
                    raise BatchRefused([self._within(i, a, prepared) for i, a in failures])
        return [a for a in answers if isinstance(a, Submitted)]

    @staticmethod
    def _within(
        index: int, exc: ValueError, prepared: builtins.list[tuple[int, dict[str, Any], Job]]
    ) -> tuple[int, ValueError]:
        """A conflict with an earlier job of the same batch says so (that job is not stored)."""
        if isinstance(exc, IdempotencyConflict):
            for earlier, _, job in prepared:
                if job.id == exc.job.id:
                    return index, IdempotencyConflict(exc.key, exc.job, earlier)
        return index, exc

    @staticmethod
    def _prepare(
        new_jobs: builtins.list[NewJob],
        now: float,
        answers: builtins.list[Submitted | ValueError | None],
    ) -> builtins.list[tuple[int, dict[str, Any], Job]]:
        """The rows of the jobs that can be stored; the others' errors go to ``answers``."""
        prepared: builtins.list[tuple[int, dict[str, Any], Job]] = []
        for i, new in enumerate(new_jobs):
            try:
                row, job = new_job_row(new, now)
            except ValueError as exc:
                answers[i] = exc
                continue
            prepared.append((i, row, job))
        return prepared

    @contextmanager
    def _write_new(self) -> Iterator[Any]:
        """The write transaction of new jobs: sqlite3's own on SQLite (see ``_insert_new``)."""
        if self._raw is None:
            with self._write() as conn:
                yield conn
        else:
            with self._write_lock, self._raw.write() as raw:
                yield raw

    def _insert_new(
        self,
        conn: Any,
        new_jobs: builtins.list[NewJob],
        prepared: builtins.list[tuple[int, dict[str, Any], Job]],
        now: float,
        answers: builtins.list[Submitted | ValueError | None],
    ) -> None:
        """Insert the ``prepared`` jobs and the ``submitted`` events of those created.

        ``conn`` comes from ``_write_new``: a sqlite3 connection on SQLite, a
        SQLAlchemy one on PostgreSQL.
        """
        raw = self._raw is not None
        plain = [p for p in prepared if new_jobs[p[0]].idempotency_key is None]
        keyed = [p for p in prepared if new_jobs[p[0]].idempotency_key is not None]
        if plain:
            if raw:
                conn.executemany(hot.INSERT_JOBS, [hot.new_job_params(r) for _, r, _ in plain])
            else:
                conn.execute(INSERT_JOBS, [row for _, row, _ in plain])
            for i, _, job in plain:
                answers[i] = Submitted(job, True)
        if keyed:
            found = self._submit_keyed_raw(conn, keyed) if raw else self._submit_keyed(conn, keyed)
            for (i, _, _), answer in zip(keyed, found, strict=True):
                answers[i] = answer
        events = [
            submitted_event_row(new_jobs[i], answer.job, now)
            for i, answer in enumerate(answers)
            if isinstance(answer, Submitted) and answer.created
        ]
        if events:
            if raw:
                conn.executemany(hot.INSERT_EVENTS, events)
            else:
                conn.execute(INSERT_EVENTS, events)

    def _submit_keyed(
        self, conn: Connection, keyed: builtins.list[tuple[int, dict[str, Any], Job]]
    ) -> builtins.list[Submitted | ValueError]:
        """Insert jobs with idempotency keys; a key already taken answers its job instead.

        One ``INSERT ... ON CONFLICT DO NOTHING RETURNING id`` for them all: two
        transactions with one key wait for each other and exactly one inserts
        (a unique index decides); the rest read the winner's job.
        """
        rows = [row for _, row, _ in keyed]
        created = self._created(
            keyed, {(r[0], r[1]) for r in conn.execute(self._insert_keyed, rows)}
        )
        taken = [
            r["idempotency_key"] for (_, r, _), new in zip(keyed, created, strict=True) if not new
        ]
        existing: builtins.list[Job] = []
        if taken:
            found = conn.execute(select(jobs_table).where(_jc.idempotency_key.in_(taken)))
            existing = [row_to_job(r) for r in found]
        return self._keyed_answers(
            keyed, created, existing, lambda row: conn.execute(INSERT_JOBS, row)
        )

    def _submit_keyed_raw(
        self, conn: Any, keyed: builtins.list[tuple[int, dict[str, Any], Job]]
    ) -> builtins.list[Submitted | ValueError]:
        """``_submit_keyed`` on a sqlite3 connection: one ``executemany`` for the rows.

        Every row stored (the common case) shows in the row count; otherwise the
        rows stored are the last ``rowcount`` rows of the table (this transaction
        writes alone, and SQLite gives a new row a rowid above every other). Not
        found by id: a job id may be given, and one that a stored job has stays
        out when its key is taken (``ON CONFLICT`` names the key's index).
        """
        params = [hot.new_job_params(row) for _, row, _ in keyed]
        stored = conn.executemany(hot.INSERT_KEYED, params).rowcount
        if stored == len(keyed):
            inserted = {(job.id, row["idempotency_key"]) for _, row, job in keyed}
        else:
            last = conn.execute(hot.LAST_JOBS, (stored,))
            inserted = {(r[0], r[1]) for r in last}
        created = self._created(keyed, inserted)
        taken = [
            r["idempotency_key"] for (_, r, _), new in zip(keyed, created, strict=True) if not new
        ]
        existing: builtins.list[Job] = []
        for start in range(0, len(taken), 500):
            chunk = taken[start : start + 500]
            keys = {f"k{i}": key for i, key in enumerate(chunk)}
            rows = conn.execute(hot.jobs_with_keys_sql(len(chunk)), keys).fetchall()
            existing.extend(map(job_from_values, rows))
        return self._keyed_answers(
            keyed,
            created,
            existing,
            lambda row: conn.execute(hot.INSERT_JOBS, hot.new_job_params(row)),
        )

    @staticmethod
    def _created(
        keyed: builtins.list[tuple[int, dict[str, Any], Job]], inserted: set[tuple[str, str]]
    ) -> builtins.list[bool]:
        """Whether each keyed row was stored, from the ``(id, key)`` pairs stored.

        A pair counts once: the same id and key twice in one turn (a given id
        submitted again at once) stores the first; the second answers it.
        """
        left = set(inserted)
        created: builtins.list[bool] = []
        for _, row, job in keyed:
            pair = (job.id, row["idempotency_key"])
            created.append(pair in left)
            left.discard(pair)
        return created

    @staticmethod
    def _keyed_answers(
        keyed: builtins.list[tuple[int, dict[str, Any], Job]],
        created: builtins.list[bool],
        found: builtins.list[Job],
        insert: Callable[[dict[str, Any]], object],
    ) -> builtins.list[Submitted | ValueError]:
        """The answer to each keyed submit.

        ``created``: whether each row was stored (``_created``); ``found``: the
        jobs holding the other keys; ``insert`` stores a row whose key's holder is gone.
        """
        existing = {j.idempotency_key or "": j for j in found}
        answers: builtins.list[Submitted | ValueError] = []
        for (_, row, job), new in zip(keyed, created, strict=True):
            if new:
                answers.append(Submitted(job, True))
                continue
            key = str(row["idempotency_key"])
            first = existing.get(key)
            if first is None:  # pragma: no cover - the winner was pruned meanwhile
                insert(row)
                answers.append(Submitted(job, True))
            elif first.workload != job.workload or first.input != job.input:
                answers.append(IdempotencyConflict(key, first))
            else:
                answers.append(Submitted(first, False))
        return answers

    def get(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        if "\x00" in job_id:  # no stored id has one (and PostgreSQL text cannot hold it)
            return None
        if self._raw is not None:
            with self._raw.read() as raw:
                found = raw.execute(hot.GET, (job_id,)).fetchone()
            return None if found is None else job_from_values(found)
        with self._read() as conn:
            row = conn.execute(GET, {"p_id": job_id}).first()
        return None if row is None else row_to_job(row)

    def get_now(self, job_id: str) -> tuple[bool, Job | None]:
        """``get`` without waiting, for a caller on an event loop: ``(answered, job)``.

        On SQLite one point read by the primary key, which never waits for a
        lock (answered False if SQLite is busy, or on PostgreSQL: then call
        ``get`` on a thread). Measured reason for reading on the loop at all:
        on the 2-CPU machines the service runs on, the read costs 9-22 µs and
        a round trip to a thread and back 110-130 µs; the benchmark's reader,
        one ``get`` after another, ran 2.3 k jobs/s through a thread and
        2.7-3.2 k/s reading here.
        """
        if self._raw is None:
            return False, None
        if "\x00" in job_id:
            return True, None
        try:
            with self._raw.read_now() as raw:
                found = raw.execute(hot.GET, (job_id,)).fetchone()
        except sqlite3.OperationalError:  # busy (or worse): the caller reads on a thread
            return False, None
        return True, None if found is None else job_from_values(found)

    def list(
        self,
        *,
        status: Collection[JobStatus] | None = None,
        workload: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        id_prefix: str | None = None,
    ) -> Page:
        """A page of jobs, newest first, with the cursors of the pages around it.

        Args:
            status: only jobs in these states.
            workload: only jobs of this workload.
            limit: jobs per page.
            cursor: a ``next_cursor`` (older jobs) or ``prev_cursor`` (newer jobs)
                of an earlier page.
            id_prefix: only jobs whose id starts with this.

        Raises:
            ValueError: a cursor that was not returned by this method.
        """
        seq, newer = decode_cursor(cursor) if cursor else (None, False)
        if any("\x00" in v for v in (workload, id_prefix) if v is not None):
            return Page([], None, None)
        query = select(jobs_table).limit(limit + 1)
        if status:
            query = query.where(_jc.status.in_([s.value for s in status]))
        if workload:
            query = query.where(_jc.workload == workload)
        if id_prefix:
            query = query.where(_jc.id.startswith(id_prefix, autoescape=True))
        if seq is None:
            query = query.order_by(_jc.seq.desc())
        elif newer:
            query = query.where(_jc.seq > seq).order_by(_jc.seq)
        else:
            query = query.where(_jc.seq < seq).order_by(_jc.seq.desc())
        with self._read() as conn:
            rows = conn.execute(query).all()
        more = len(rows) > limit
        jobs = [row_to_job(r) for r in rows[:limit]]
        if newer:  # read oldest first from the cursor up: the page just above it
            assert seq is not None
            jobs.reverse()
            older = encode_cursor(jobs[-1].seq if jobs else seq + 1)
            return Page(jobs, older, encode_cursor(jobs[0].seq, newer=True) if more else None)
        next_cursor = encode_cursor(jobs[-1].seq) if more and jobs else None
        prev_cursor = encode_cursor(jobs[0].seq, newer=True) if seq is not None and jobs else None
        return Page(jobs, next_cursor, prev_cursor)

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a job: a queued one at once, a running one by asking its worker.

        Returns the job as it is after the request (None if there is no such
        job). A finished job is returned unchanged.
        """
        if "\x00" in job_id:
            return None
        now = current_clock().time()
        with self._write() as conn:
            row = conn.execute(
                update(jobs_table)
                .where(_jc.id == job_id, _jc.status == QUEUED)
                .values(status=JobStatus.CANCELLED.value, finished_at=now, cancel_requested=True)
                .returning(jobs_table)
            ).first()
            if row is not None:
                self._event(
                    conn,
                    job_id,
                    "cancelled",
                    now,
                    status="cancelled",
                    reason="cancelled while queued",
                )
                return row_to_job(row)
            row = conn.execute(
                update(jobs_table)
                .where(_jc.id == job_id, _jc.status == RUNNING, _jc.cancel_requested.is_(False))
                .values(cancel_requested=True)
                .returning(jobs_table)
            ).first()
            if row is not None:
                self._event(conn, job_id, "cancel_requested", now, status=RUNNING)
                return row_to_job(row)
            row = conn.execute(select(jobs_table).where(_jc.id == job_id)).first()
        return None if row is None else row_to_job(row)

    def retry(self, job_id: str) -> tuple[Job, bool] | None:
        """Put a failed or cancelled job back in the queue, as it is (same id and input).

        Its retry policy and its ``max_attempts`` apply afresh. Returns the job
        after the request and whether it was put back (False: it was not
        failed or cancelled, and is unchanged); None if there is no such job.
        """
        if "\x00" in job_id:
            return None
        now = current_clock().time()
        with self._write() as conn:
            row = conn.execute(
                update(jobs_table)
                .where(_jc.id == job_id, _jc.status.in_(RETRYABLE_VALUES))
                .values(
                    status=QUEUED,
                    run_at=now,
                    finished_at=None,
                    result=None,
                    error=None,
                    traceback=None,
                    progress=None,
                    message=None,
                    retried=0,
                    lost=0,
                    released=0,
                    cancel_requested=False,
                    lease_expires_at=None,
                )
                .returning(jobs_table)
            ).first()
            if row is not None:
                self._event(
                    conn, job_id, "retried", now, status=QUEUED, reason="retried by request"
                )
                return row_to_job(row), True
            row = conn.execute(select(jobs_table).where(_jc.id == job_id)).first()
        return None if row is None else (row_to_job(row), False)

    def events(self, job_id: str, *, after: int = 0, limit: int = 1000) -> builtins.list[JobEvent]:
        """A job's events with ``seq`` greater than ``after``, oldest first."""
        if "\x00" in job_id:
            return []
        after = min(max(after, 0), MAX_SEQ)
        with self._read() as conn:
            rows = conn.execute(EVENTS, {"p_id": job_id, "p_after": after, "p_limit": limit}).all()
        return [row_to_event(r) for r in rows]

    def last_event_seqs(self, job_ids: Collection[str]) -> dict[str, int]:
        """The ``seq`` of each job's latest event (jobs without events are left out)."""
        ids = builtins.list(job_ids)
        found: dict[str, int] = {}
        with self._read() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                rows = conn.execute(
                    select(events_table.c.job_id, func.max(events_table.c.seq))
                    .where(events_table.c.job_id.in_(chunk))
                    .group_by(events_table.c.job_id)
                ).all()
                found.update({job_id: seq for job_id, seq in rows})
        return found

    def counts(self) -> dict[JobStatus, int]:
        """How many jobs are in each state."""
        with self._read() as conn:
            rows = conn.execute(select(_jc.status, func.count()).group_by(_jc.status)).all()
        found = {JobStatus(status): n for status, n in rows}
        return {s: found.get(s, 0) for s in JobStatus}

    def counts_by_workload(self) -> dict[tuple[str, JobStatus], int]:
        """How many jobs of each workload are in each state (pairs with none are left out)."""
        with self._read() as conn:
            rows = conn.execute(
                select(_jc.workload, _jc.status, func.count()).group_by(_jc.workload, _jc.status)
            ).all()
        return {(workload, JobStatus(status)): n for workload, status, n in rows}

    def workloads_seen(self) -> builtins.list[str]:
        """The names of the workloads of the stored jobs, sorted."""
        with self._read() as conn:
            rows = conn.execute(select(_jc.workload).distinct()).all()
        return sorted(r[0] for r in rows)

    def workers(self) -> builtins.list[WorkerInfo]:
        """The workers that reported themselves, most recent heartbeat first."""
        with self._read() as conn:
            rows = conn.execute(
                select(workers_table).order_by(workers_table.c.heartbeat_at.desc())
            ).all()
        return [row_to_worker(r) for r in rows]

    def prune(self, older_than_s: float) -> int:
        """Delete finished jobs (and their events) that finished more than ``older_than_s`` ago.

        Returns how many jobs were deleted. Queued and running jobs are never
        pruned. An idempotency key is forgotten with its job.
        """
        cutoff = current_clock().time() - older_than_s
        finished_before = and_(_jc.status.in_(TERMINAL_VALUES), _jc.finished_at < cutoff)
        old = select(_jc.id).where(finished_before)
        with self._write() as conn:
            conn.execute(delete(events_table).where(events_table.c.job_id.in_(old)))
            conn.execute(delete(workflow_nodes_table).where(_wn.job_id.in_(old)))
            result = conn.execute(delete(jobs_table).where(finished_before))
        return int(result.rowcount or 0)

    # -- the nodes of workflow jobs ---------------------------------------------------

    def save_workflow_nodes(
        self, job_id: str, worker: str, attempt: int, rows: builtins.list[dict[str, Any]]
    ) -> bool:
        """Write rows of ``ambidex_workflow_nodes`` for a job, in one transaction, fenced.

        Each row (the table's columns but ``job_id``, ``job_attempt`` and
        ``worker``, which are filled in) replaces the node's row. Written only
        while ``worker`` holds ``attempt`` of the running job, checked on the
        job's row locked until the commit (so no requeue or new claim of the job
        commits in between): a worker that lost the job's lease writes nothing
        and gets False, and can never overwrite a row of a later attempt.
        """
        held = {"p_id": job_id, "p_worker": worker, "p_attempt": attempt}
        values = [
            {**row, "job_id": job_id, "job_attempt": attempt, "worker": worker} for row in rows
        ]
        with self._write() as conn:
            if conn.execute(HELD_ROW, held).first() is None:
                return False
            if values:
                conn.execute(self._upsert_nodes, values)
        return True

    def workflow_nodes(self, job_id: str) -> builtins.list[WorkflowNode]:
        """The nodes a workflow job recorded, as stored (without outputs), by start."""
        columns = [c for c in workflow_nodes_table.columns if c.name not in ("job_id", "output")]
        with self._read() as conn:
            rows = conn.execute(
                select(*columns)
                .where(_wn.job_id == job_id)
                .order_by(_wn.started_at.is_(None), _wn.started_at, _wn.node)
            ).all()
        return [
            WorkflowNode(
                node=r.node,
                status=r.status,
                attempts=r.attempts,
                job_attempt=r.job_attempt,
                worker=r.worker,
                started_at=r.started_at,
                finished_at=r.finished_at,
                error=r.error,
            )
            for r in rows
        ]

    def workflow_node_outputs(self, job_id: str) -> builtins.list[tuple[str, str, bytes | None]]:
        """``(node, status, output)`` of each finished node of a workflow job.

        ``output`` is cloudpickle (None but for succeeded nodes).
        """
        with self._read() as conn:
            rows = conn.execute(
                select(_wn.node, _wn.status, _wn.output).where(
                    _wn.job_id == job_id, _wn.status != RUNNING
                )
            ).all()
        return [(r.node, r.status, None if r.output is None else bytes(r.output)) for r in rows]

    # -- workers ---------------------------------------------------------------------

    def claim(
        self,
        worker: str,
        *,
        lease_s: float,
        workloads: Collection[str] | None = None,
        limit: int = 1,
        limits: Mapping[str, int] | None = None,
    ) -> builtins.list[Job]:
        """Take up to ``limit`` due jobs, highest priority then oldest, leased for ``lease_s``.

        ``limits`` caps how many jobs of a workload may run at once across every
        worker of the store (a workload not named there is not capped). Each
        claimed job's ``attempts`` goes up by one; the worker must name that
        attempt in every later write.
        """
        now = current_clock().time()
        capped = {
            name: n for name, n in (limits or {}).items() if workloads is None or name in workloads
        }
        if self._raw is not None:
            return self._claim_raw(self._raw, worker, now, lease_s, workloads, limit, capped)
        with self._write() as conn:
            if capped:
                rows = self._claim_capped(conn, worker, now, lease_s, workloads, limit, capped)
            else:
                params: dict[str, Any] = {
                    "p_now": now,
                    "p_worker": worker,
                    "p_lease_until": now + lease_s,
                    "p_limit": limit,
                }
                statement = self._claim_all
                if workloads is not None:
                    statement = self._claim_some
                    params["p_workloads"] = builtins.list(workloads)
                rows = builtins.list(conn.execute(statement, params).all())
            jobs = _in_claim_order(map(row_to_job, rows))
            if jobs:
                conn.execute(INSERT_EVENTS, _started_events(jobs, worker, now))
        return jobs

    def _claim_raw(
        self,
        raw: hot.RawSqlite,
        worker: str,
        now: float,
        lease_s: float,
        workloads: Collection[str] | None,
        limit: int,
        capped: Mapping[str, int],
    ) -> builtins.list[Job]:
        """``claim`` on SQLite, through sqlite3 (see ``_sqlite_hot``).

        With capped workloads, as ``_claim_capped``: SQLite's one writer makes
        "count, then claim" atomic by itself.
        """
        params: dict[str, Any] = {
            "p_now": now,
            "p_worker": worker,
            "p_lease_until": now + lease_s,
            "p_limit": limit,
        }
        names = None if workloads is None else builtins.list(workloads)
        if names is not None:
            params.update({f"w{i}": name for i, name in enumerate(names)})
        n = None if names is None else len(names)
        with self._write_lock, raw.write() as conn:
            if capped:
                limited = sorted(capped)
                params.update({f"c{i}": name for i, name in enumerate(limited)})
                candidates = conn.execute(hot.capped_candidates_sql(len(limited), n), params)
                chosen = self._under_limits(candidates.fetchall(), capped)
                chosen_params = {f"s{i}": seq for i, seq in enumerate(chosen)}
                rows = (
                    conn.execute(
                        hot.claim_seqs_sql(len(chosen)), {**params, **chosen_params}
                    ).fetchall()
                    if chosen
                    else []
                )
            else:
                sql = self._raw_claims.get(n)
                if sql is None:
                    sql = self._raw_claims[n] = hot.claim_sql(n)
                rows = conn.execute(sql, params).fetchall()
            jobs = _in_claim_order(map(job_from_values, rows))
            if jobs:
                conn.executemany(hot.INSERT_EVENTS, _started_events(jobs, worker, now))
        return jobs

    def _claim_capped(
        self,
        conn: Connection,
        worker: str,
        now: float,
        lease_s: float,
        workloads: Collection[str] | None,
        limit: int,
        capped: Mapping[str, int],
    ) -> builtins.list[Any]:
        """A claim where some workloads have a concurrency limit: count, then pick, under locks.

        One SELECT reads the due candidates with, for each of a limited
        workload, how many of its jobs run now; the jobs that fit under their
        limit are then claimed. On PostgreSQL each limited workload's advisory
        lock (taken in name order, so two workers never wait on each other in a
        cycle) makes "count, then claim" atomic across workers; SQLite's one
        writer does the same by itself. A candidate over its limit only leaves
        its slot free for the next claim.
        """
        names = sorted(capped)
        if self.dialect == "postgresql":
            for name in names:
                conn.execute(ADVISORY_LOCK, {"p_key": lock_key(name)})
        params: dict[str, Any] = {"p_capped": names, "p_now": now, "p_limit": limit}
        query = self._capped_all
        if workloads is not None:
            query = self._capped_some
            params["p_workloads"] = builtins.list(workloads)
        chosen = self._under_limits(conn.execute(query, params), capped)
        if not chosen:
            return []
        lease = {"p_seqs": chosen, "p_now": now, "p_worker": worker, "p_lease_until": now + lease_s}
        return builtins.list(conn.execute(CLAIM_SEQS, lease).all())

    @staticmethod
    def _under_limits(candidates: Any, capped: Mapping[str, int]) -> builtins.list[int]:
        """The seqs of the ``(seq, workload, running)`` candidates that fit under their limits."""
        chosen: builtins.list[int] = []
        taken: dict[str, int] = {}
        for seq, workload, running in candidates:
            if workload in capped:
                if running + taken.get(workload, 0) >= capped[workload]:
                    continue
                taken[workload] = taken.get(workload, 0) + 1
            chosen.append(seq)
        return chosen

    def heartbeat(
        self,
        worker: str,
        job_ids: Collection[str],
        *,
        lease_s: float,
        info: WorkerInfo | None = None,
    ) -> LeaseReport:
        """Renew the leases ``worker`` holds on ``job_ids``; report which it still holds.

        Only the jobs named are renewed: a job the worker holds in the store but
        no longer runs (its task is gone) is left to lapse and be requeued.
        With ``info``, the worker's row on the Workers page is written too, in
        the same transaction.
        """
        ids = builtins.list(job_ids)
        now = current_clock().time()
        held: set[str] = set()
        cancel: set[str] = set()
        if self._raw is not None:
            with self._write_lock, self._raw.write() as raw:
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    params: dict[str, Any] = {f"i{i}": jid for i, jid in enumerate(chunk)}
                    params.update(p_until=now + lease_s, p_worker=worker)
                    renewed = raw.execute(hot.renew_sql(len(chunk)), params).fetchall()
                    held.update(r[0] for r in renewed)
                    cancel.update(r[0] for r in renewed if r[1])
                if info is not None:
                    values = self._worker_values(info, now)
                    if not raw.execute(hot.UPDATE_WORKER, values).rowcount:
                        raw.execute(hot.INSERT_WORKER, values)
            return LeaseReport(held, cancel)
        ids.sort()  # rows are locked in id order by every multi-row write (see _lock_rows)
        with self._write() as conn:
            for start in range(0, len(ids), 500):
                mine = and_(
                    _jc.worker == worker,
                    _jc.status == RUNNING,
                    _jc.id.in_(ids[start : start + 500]),
                )
                mine = self._lock_rows(conn, mine)
                rows = conn.execute(
                    update(jobs_table)
                    .where(mine)
                    .values(lease_expires_at=now + lease_s)
                    .returning(_jc.id, _jc.cancel_requested)
                ).all()
                held.update(r[0] for r in rows)
                cancel.update(r[0] for r in rows if r[1])
            if info is not None:
                self._write_worker(conn, info, now)
        return LeaseReport(held, cancel)

    @staticmethod
    def _worker_values(info: WorkerInfo, now: float) -> dict[str, Any]:
        """A worker's row on the Workers page (``hot.UPDATE_WORKER``, ``INSERT_WORKER``)."""
        return {
            "id": info.id,
            "host": info.host,
            "pid": info.pid,
            "started_at": info.started_at,
            "version": info.version,
            "heartbeat_at": now,
            "running": info.running,
            "concurrency": info.concurrency,
            "workloads": dumps(info.workloads),
            "lease_s": info.lease_s,
        }

    @staticmethod
    def _write_worker(conn: Connection, info: WorkerInfo, now: float) -> None:
        values = {
            "heartbeat_at": now,
            "running": info.running,
            "concurrency": info.concurrency,
            "workloads": dumps(info.workloads),
            "lease_s": info.lease_s,
        }
        wt = workers_table
        if not conn.execute(update(wt).where(wt.c.id == info.id).values(**values)).rowcount:
            conn.execute(
                insert(wt).values(
                    id=info.id,
                    host=info.host,
                    pid=info.pid,
                    started_at=info.started_at,
                    version=info.version,
                    **values,
                )
            )

    def report_progress(
        self, job_id: str, worker: str, attempt: int, progress: float | None, message: str | None
    ) -> bool:
        """Store a running job's progress; False if the worker no longer holds the job."""
        now = current_clock().time()
        message = storable_text(message, MAX_MESSAGE_CHARS)
        with self._write() as conn:
            result = conn.execute(
                PROGRESS,
                {
                    "p_id": job_id,
                    "p_worker": worker,
                    "p_attempt": attempt,
                    "p_progress": progress,
                    "p_message": message,
                },
            )
            if not result.rowcount:
                return False
            self._event(conn, job_id, "progress", now, progress=progress, message=message)
        return True

    def finish(
        self,
        job_id: str,
        worker: str,
        attempt: int,
        status: JobStatus,
        *,
        result: Any = None,
        error: str | None = None,
        traceback: str | None = None,
        retry_in_s: float | None = None,
    ) -> bool:
        """Record how a held job ended: written once, by the worker holding that attempt.

        Returns False (and writes nothing) if the worker's lease on this attempt
        was lost. A result that is not storable JSON is recorded as a failure
        instead. With ``retry_in_s`` the job goes back to the queue instead
        (see ``Outcome``).
        """
        outcome = Outcome(job_id, worker, attempt, status, result, error, traceback, retry_in_s)
        return self.finish_many([outcome])[0]

    def finish_many(self, outcomes: builtins.list[Outcome]) -> builtins.list[bool]:
        """``finish`` for several jobs in one transaction; one answer per outcome."""
        now = current_clock().time()
        # Written in job id order, as every write to several rows locks them (see _lock_rows).
        order = sorted(range(len(outcomes)), key=lambda i: outcomes[i].job_id)
        events: builtins.list[dict[str, Any]] = []
        recorded: builtins.list[bool] = [False] * len(outcomes)
        values = {i: outcome_values(outcomes[i]) for i in order}  # before the lock is taken
        if self._raw is not None:
            with self._write_lock, self._raw.write() as raw:
                for i in order:
                    recorded[i] = self._record(
                        raw, outcomes[i], *values[i], now, events, hot.RETRY_LATER, hot.FINISH
                    )
                if events:
                    raw.executemany(hot.INSERT_EVENTS, events)
            return recorded
        with self._write() as conn:
            for i in order:
                recorded[i] = self._record(
                    conn, outcomes[i], *values[i], now, events, RETRY_LATER, FINISH
                )
            if events:
                conn.execute(INSERT_EVENTS, events)
        return recorded

    @staticmethod
    def _record(
        conn: Any,
        o: Outcome,
        status: JobStatus,
        text_result: str | None,
        error: str | None,
        trace: str | None,
        now: float,
        events: builtins.list[dict[str, Any]],
        retry_later: Any,
        finish: Any,
    ) -> bool:
        """Write one outcome (fenced by the attempt held); its event goes to ``events``.

        ``conn`` is a SQLAlchemy connection or a sqlite3 one, with the statements
        ``retry_later`` and ``finish`` of its kind (same parameters).
        """
        held = {"p_id": o.job_id, "p_worker": o.worker, "p_attempt": o.attempt}
        if o.retry_in_s is not None and status is JobStatus.FAILED:
            run_at = now + o.retry_in_s
            later = {**held, "p_run_at": run_at, "p_error": error, "p_traceback": trace}
            if conn.execute(retry_later, later).rowcount:
                events.append(_retrying_event(o, run_at, error, trace, now))
                return True
            # Not held any more, or someone asked to cancel it: a cancel is never
            # retried, so it ends here, cancelled, with its failure kept.
            status, error = JobStatus.CANCELLED, _cancelled_instead(error)
        done = conn.execute(
            finish,
            {
                **held,
                "p_status": status.value,
                "p_now": now,
                "p_result": text_result,
                "p_error": error,
                "p_traceback": trace,
                "p_final_progress": _final_progress(status),
            },
        )
        if not done.rowcount:
            return False
        events.append(_ended_event(o, status, error, trace, now))
        return True

    def release(self, worker: str) -> int:
        """Put back in the queue every job ``worker`` holds (a clean shutdown).

        A start given back does not count as an attempt, but a job given back
        ``MAX_RELEASES`` times fails (it may be what stops its worker). The
        worker leaves the Workers page too. Returns how many jobs were requeued.
        """
        held = and_(_jc.worker == worker, _jc.status == RUNNING)
        with self._write() as conn:
            requeued, _ = self._requeue_or_fail(
                conn,
                held,
                _jc.released,
                MAX_RELEASES,
                RELEASED_ERROR,
                lambda w: f"worker {w} shut down",
                attempts=_jc.attempts - 1,  # a start given back is not an attempt
            )
            conn.execute(delete(workers_table).where(workers_table.c.id == worker))
        return len(requeued)

    def _requeue_or_fail(
        self,
        conn: Connection,
        which: Any,
        counter: Any,
        bound: Any,
        error: str,
        reason: Callable[[str | None], str],
        **requeue_values: Any,
    ) -> tuple[builtins.list[str], builtins.list[str]]:
        """Put the running jobs ``which`` back in the queue, counted in ``counter``.

        Those for which this count reaches ``bound`` fail instead, with
        ``error``. Returns ``(requeued ids, failed ids)``; each gets its event.
        """
        now = current_clock().time()
        over = counter + 1 >= bound
        done = (_jc.id, _jc.worker, _jc.attempts)
        which = self._lock_rows(conn, which)
        failed = conn.execute(
            update(jobs_table)
            .where(which, over)
            .values(
                status=JobStatus.FAILED.value,
                finished_at=now,
                lease_expires_at=None,
                traceback=None,
                error=error,
                **{counter.key: counter + 1},
            )
            .returning(*done)
        ).all()
        requeued = conn.execute(
            update(jobs_table)
            .where(which, ~over)
            .values(
                status=QUEUED, lease_expires_at=None, **{counter.key: counter + 1}, **requeue_values
            )
            .returning(*done)
        ).all()
        events = [
            event_row(
                jid, "failed", now, {"status": "failed", "error": error, "attempt": n, "worker": w}
            )
            for jid, w, n in failed
        ] + [
            event_row(jid, "requeued", now, {"status": QUEUED, "attempt": n, "reason": reason(w)})
            for jid, w, n in requeued
        ]
        if events:
            conn.execute(INSERT_EVENTS, events)
        return [r[0] for r in requeued], [r[0] for r in failed]

    def _lock_rows(self, conn: Connection, which: Any) -> Any:
        """PostgreSQL: lock the job rows ``which`` in id order, before a write to several.

        Returns ``which`` narrowed to the rows locked, for the write: a row that
        came to match ``which`` after the lock (a lease lapsing meanwhile, a job
        claimed again) would be locked by the write itself, out of order.

        Every write that may wait for the locks of several rows takes them in
        the same order, the ids' byte order (heartbeat, requeue, release, a
        batch of outcomes, written in Python's sort of their ids), so
        two of them, in two workers, never wait for each other in a cycle: a
        heartbeat renewing a worker's leases and another worker requeueing the
        lapsed ones deadlocked, and the heartbeat failed. Claims skip locked
        rows and never wait. SQLite has one writer at a time: nothing to do.
        """
        if self.dialect == "postgresql":
            # Byte order ("C"), which is the order of Python's sort of the ids (code
            # points, in UTF-8): a database's own collation (en-US, say) may differ.
            by_bytes = _jc.id.collate("C")
            locked = conn.execute(
                select(_jc.id).where(which).order_by(by_bytes).with_for_update()
            ).scalars()
            return and_(which, _jc.id.in_(builtins.list(locked)))
        return which

    def recover_expired(
        self, *, spare: Collection[str] = ()
    ) -> tuple[builtins.list[str], builtins.list[str]]:
        """Requeue running jobs whose lease lapsed; fail those out of attempts.

        Returns ``(requeued ids, failed ids)``. Any worker may call this; two
        calls at once do no harm. Workers silent for an hour are forgotten.
        ``spare``: jobs the calling worker is running right now, so not lost
        whatever their lease says (its heartbeat renews them).
        """
        now = current_clock().time()
        lapsed = and_(_jc.status == RUNNING, _jc.lease_expires_at < now)
        if spare:
            lapsed = and_(lapsed, _jc.id.not_in(list(spare)))
        with self._write() as conn:
            requeued, failed = self._requeue_or_fail(
                conn,
                lapsed,
                _jc.lost,
                _jc.max_attempts,
                LOST_ERROR,
                lambda w: f"the lease of worker {w} lapsed",
            )
            conn.execute(
                delete(workers_table).where(workers_table.c.heartbeat_at < now - DEAD_WORKER_KEPT_S)
            )
        return requeued, failed

    # -- hot calls on PostgreSQL, on the event loop (see ``on_loop`` and ``_pg_hot``) -----

    async def _submit_batch_pg(
        self, new_jobs: builtins.list[NewJob]
    ) -> builtins.list[Submitted | ValueError]:
        """``submit_batch``."""
        now = current_clock().time()
        answers: builtins.list[Submitted | ValueError | None] = [None] * len(new_jobs)
        prepared = self._prepare(new_jobs, now, answers)
        if prepared:
            await self._insert_pg(new_jobs, prepared, now, answers, atomic=False)
        return [a for a in answers if a is not None]

    async def _submit_all_pg(self, new_jobs: builtins.list[NewJob]) -> builtins.list[Submitted]:
        """``submit_all``."""
        now = current_clock().time()
        answers: builtins.list[Submitted | ValueError | None] = [None] * len(new_jobs)
        prepared = self._prepare(new_jobs, now, answers)
        failures = [(i, a) for i, a in enumerate(answers) if isinstance(a, ValueError)]
        if failures:
            raise BatchRefused(failures)
        if prepared:
            await self._insert_pg(new_jobs, prepared, now, answers, atomic=True)
        return [a for a in answers if isinstance(a, Submitted)]

    async def _insert_pg(
        self,
        new_jobs: builtins.list[NewJob],
        prepared: builtins.list[tuple[int, dict[str, Any], Job]],
        now: float,
        answers: builtins.list[Submitted | ValueError | None],
        *,
        atomic: bool,
    ) -> None:
        """``_insert_new`` on the loop: store the ``prepared`` jobs, answer each in ``answers``.

        ``atomic`` (``submit_all``): an idempotency key conflict refuses the
        batch (``BatchRefused``) and nothing is stored.
        """
        assert self._pg is not None
        if all(new_jobs[i].idempotency_key is None for i, _, _ in prepared):
            events = [submitted_event_row(new_jobs[i], job, now) for i, _, job in prepared]
            await self._pg.insert_jobs(
                [row for _, row, _ in prepared], [e["data"] for e in events], now
            )
            for i, _, job in prepared:
                answers[i] = Submitted(job, True)
            return
        async with self._pg.keyed_inserts(atomic=atomic) as inserts:
            await self._insert_keyed_pg(inserts, new_jobs, prepared, now, answers)
            if atomic:
                failures = [(i, a) for i, a in enumerate(answers) if isinstance(a, ValueError)]
                if failures:  # raised inside the transaction: it is rolled back
                    raise BatchRefused([self._within(i, a, prepared) for i, a in failures])

    async def _insert_keyed_pg(
        self,
        inserts: KeyedInserts,
        new_jobs: builtins.list[NewJob],
        prepared: builtins.list[tuple[int, dict[str, Any], Job]],
        now: float,
        answers: builtins.list[Submitted | ValueError | None],
    ) -> None:
        """``_insert_new`` of a batch with idempotency keys, as ``_submit_keyed`` decides.

        Each round is one round trip: every row inserted (``ON CONFLICT DO
        NOTHING`` on the key) with the ``submitted`` events of those stored,
        then the holders of the keys read. Not among them: the batch's own
        rows, but for the first of a key given twice (the holder of the
        others). A key found taken whose holder is gone by the time it is read
        (pruned in between) makes another round for its jobs (in the same
        transaction if ``inserts`` is atomic, in another if not).
        """
        pending = prepared
        while pending:
            keyed = [p for p in pending if p[1]["idempotency_key"] is not None]
            counts = Counter(row["idempotency_key"] for _, row, _ in keyed)
            first: set[str] = set()
            mine: builtins.list[str] = []
            for _, row, job in keyed:
                key = row["idempotency_key"]
                if counts[key] > 1 and key not in first:
                    first.add(key)
                else:
                    mine.append(job.id)
            events = [submitted_event_row(new_jobs[i], job, now)["data"] for i, _, job in pending]
            inserted, holders = await inserts.insert(
                [row for _, row, _ in pending], events, now, builtins.list(counts), mine
            )
            for i, _, job in pending:
                if new_jobs[i].idempotency_key is None:
                    answers[i] = Submitted(job, True)
            gone: builtins.list[dict[str, Any]] = []
            stored = {
                (job.id, row["idempotency_key"]) for _, row, job in keyed if job.id in inserted
            }
            found = self._keyed_answers(
                keyed,
                self._created(keyed, stored),
                [job_from_values(h) for h in holders],
                gone.append,
            )
            for (i, _, _), answer in zip(keyed, found, strict=True):
                answers[i] = answer
            pending = [p for p in keyed if any(p[1] is row for row in gone)]

    async def _get_pg(self, job_id: str) -> Job | None:
        """``get``."""
        if "\x00" in job_id:
            return None
        assert self._pg is not None
        found = await self._pg.get(job_id)
        return None if found is None else job_from_values(found)

    async def _claim_pg(
        self,
        worker: str,
        *,
        lease_s: float,
        workloads: Collection[str] | None = None,
        limit: int = 1,
        limits: Mapping[str, int] | None = None,
    ) -> builtins.list[Job]:
        """``claim``; capped workloads: ``_claim_capped``'s locks and count, one round trip."""
        assert self._pg is not None
        now = current_clock().time()
        params: dict[str, Any] = {
            "p_now": now,
            "p_worker": worker,
            "p_worker_json": dumps(worker),
            "p_lease_until": now + lease_s,
            "p_limit": limit,
        }
        if workloads is not None:
            params["p_workloads"] = builtins.list(workloads)
        capped = sorted(name for name in (limits or {}) if workloads is None or name in workloads)
        if not capped:
            rows = await self._pg.claim(params)
        else:
            assert limits is not None
            params["p_capped"] = capped
            params["p_caps"] = [limits[name] for name in capped]
            rows = await self._pg.claim(params, [lock_key(name) for name in capped])
        return _in_claim_order(map(job_from_values, rows))

    async def _finish_many_pg(self, outcomes: builtins.list[Outcome]) -> builtins.list[bool]:
        """``finish_many``: the rows and events ``_record`` writes, in one statement.

        Outcomes none of which is retried later, each of another job (the job
        service's common case), take ``_pg_hot._FINISH``; any others
        ``_FINISH_ANY``, which costs the server more.
        """
        assert self._pg is not None
        now = current_clock().time()
        if not outcomes:
            return []
        rows: builtins.list[tuple[Any, ...]] = []
        later: builtins.list[tuple[Any, ...]] = []
        for o in outcomes:
            status, text_result, error, trace = outcome_values(o)
            retry: tuple[Any, ...] = (None, None, None)
            if o.retry_in_s is not None and status is JobStatus.FAILED:
                run_at = now + o.retry_in_s
                retry = (run_at, error, _retrying_event(o, run_at, error, trace, now)["data"])
                # Written instead if someone asked to cancel the job meanwhile:
                status, error = JobStatus.CANCELLED, _cancelled_instead(error)
            final = _final_progress(status)
            data = _ended_event(o, status, error, trace, now)["data"]  # as ``_record`` writes it
            row = (o.job_id, o.worker, o.attempt, status.value, text_result, error, trace, final)
            rows.append((*row, data))
            later.append(retry)
        ids = [o.job_id for o in outcomes]
        if any(r[0] is not None for r in later) or len(set(ids)) < len(ids):
            anyhow = [(*row, *retry) for row, retry in zip(rows, later, strict=True)]
            written = await self._pg.finish_any(ids, anyhow, now)
            return [n in written for n in range(1, len(outcomes) + 1)]
        recorded = await self._pg.finish(ids, rows, now)
        return [o.job_id in recorded for o in outcomes]

    async def _heartbeat_pg(
        self,
        worker: str,
        job_ids: Collection[str],
        *,
        lease_s: float,
        info: WorkerInfo | None = None,
    ) -> LeaseReport:
        """``heartbeat``."""
        assert self._pg is not None
        now = current_clock().time()
        params = {"p_ids": sorted(job_ids), "p_worker": worker, "p_until": now + lease_s}
        worker_row = None if info is None else self._worker_values(info, now)
        renewed = await self._pg.renew(params, worker_row)
        return LeaseReport({r[0] for r in renewed}, {r[0] for r in renewed if r[1]})

    # -- schedules -------------------------------------------------------------------

    def register_schedule(
        self, name: str, workload: str, cron: str, input: Any, current_tick: float
    ) -> float:
        """Store the schedule ``name`` as given; return the last tick it fired (or skipped).

        A schedule seen for the first time starts at ``current_tick``: ticks
        before it are not fired.
        """
        now = current_clock().time()
        st = schedules_table
        values = {"workload": workload, "cron": cron, "input": dumps(input), "updated_at": now}
        with self._write() as conn:
            row = conn.execute(select(st.c.last_tick).where(st.c.name == name)).first()
            if row is None:
                inserted = conn.execute(
                    self._insert_schedule.values(name=name, last_tick=current_tick, **values)
                ).rowcount
                if inserted:
                    return current_tick
                row = conn.execute(select(st.c.last_tick).where(st.c.name == name)).first()
                assert row is not None
            conn.execute(update(st).where(st.c.name == name).values(**values))
            return float(row[0])

    def fire_schedule(self, name: str, tick: float, new: NewJob | None) -> Job | None:
        """Record that ``name`` fired at ``tick`` and store its job ``new``, exactly once.

        ``new`` None skips the tick without a job. Nothing happens when that
        tick, or a later one, is recorded already.

        Returns the job stored; None when skipping, or when another worker
        recorded this tick (or a later one) first.
        """
        st = schedules_table
        with self._write() as conn:
            moved = conn.execute(
                update(st).where(st.c.name == name, st.c.last_tick < tick).values(last_tick=tick)
            ).rowcount
            if not moved or new is None:
                return None
            now = current_clock().time()
            row, job = new_job_row(new, now)
            if new.idempotency_key is None:
                conn.execute(INSERT_JOBS, row)
            else:
                (answer,) = self._submit_keyed(conn, [(0, row, job)])
                if not isinstance(answer, Submitted) or not answer.created:
                    return None
            conn.execute(INSERT_EVENTS, [submitted_event_row(new, job, now)])
            return job


def _final_progress(status: JobStatus) -> float | None:
    """The progress an outcome sets (None: the last reported stays): done when it succeeded."""
    return 1.0 if status is JobStatus.SUCCEEDED else None


def _ended_event(
    o: Outcome, status: JobStatus, error: str | None, trace: str | None, now: float
) -> dict[str, Any]:
    """The event row of an outcome written as final, ``status`` (every path writes it so)."""
    data = {"attempt": o.attempt, "error": error, "traceback": trace}
    return event_row(o.job_id, status.value, now, {"status": status.value, **_present(data)})


def _upsert(dialect: str, table: Any) -> Any:
    """``INSERT ... ON CONFLICT (primary key) DO UPDATE`` the other columns (either dialect)."""
    from sqlalchemy.dialects import postgresql, sqlite

    make: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = make(table)
    keys = [c.name for c in table.primary_key.columns]
    others = {c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys}
    return statement.on_conflict_do_update(index_elements=keys, set_=others)


def _retrying_event(
    o: Outcome, run_at: float, error: str | None, trace: str | None, now: float
) -> dict[str, Any]:
    """The event row of an outcome retried later, to start again at ``run_at``."""
    assert o.retry_in_s is not None
    retry = {"status": QUEUED, "delay_s": round(o.retry_in_s, 3), "run_at": iso(run_at)}
    data = {"attempt": o.attempt, "error": error, "traceback": trace}
    return event_row(o.job_id, "retrying", now, {**retry, **_present(data)})


def _cancelled_instead(error: str | None) -> str | None:
    """The error of a failure to retry written as cancelled instead (someone asked to cancel)."""
    return storable_text(f"cancelled by request; its last attempt failed: {error}", MAX_ERROR_CHARS)


def _end_lanes(*lanes: Lane) -> None:
    for lane in lanes:
        lane.close(wait=False)


def _in_claim_order(jobs: Iterable[Job]) -> builtins.list[Job]:
    """Claimed jobs as a claim hands them out: highest priority first, then oldest."""
    return sorted(jobs, key=lambda j: (-j.priority, j.seq))


def _started_events(jobs: Iterable[Job], worker: str, now: float) -> builtins.list[dict[str, Any]]:
    """The ``started`` event row of each job just claimed by ``worker``."""
    return [
        event_row(
            j.id, "started", now, {"status": RUNNING, "attempt": j.attempts, "worker": worker}
        )
        for j in jobs
    ]
