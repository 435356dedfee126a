"""The job store: every state change of a job is one short transaction.

One class drives both engines (SQLite, PostgreSQL) through SQLAlchemy Core;
what differs between them lives in ``_engines``. The rules that make the
service durable are enforced here, in the ``WHERE`` clauses:

* a job is claimed by one worker at a time: the claim is a single
  ``UPDATE ... WHERE seq IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``
  (SQLite serialises writers itself, so the lock clause is left out there);
* every later write of a worker names the worker *and* the attempt it holds,
  so a worker whose lease lapsed (and whose job another worker now runs) can
  no longer write anything: a result is recorded once;
* a lapsed lease puts the job back in the queue, up to ``max_attempts``.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import json
import secrets
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)

from ambidex.jobs._engines import Engines, open_engines
from ambidex.jobs._model import TERMINAL, Job, JobEvent, JobStatus

__all__ = ["JobStore", "LeaseReport", "NewJob", "Outcome"]

metadata = MetaData()
# 8-byte sequence numbers on PostgreSQL; SQLite's INTEGER PRIMARY KEY is 8 bytes already
# (and must be spelled INTEGER to be the rowid).
_SEQ = BigInteger().with_variant(Integer(), "sqlite")
_MAX_SEQ = 2**63 - 1

jobs_table = Table(
    "ambidex_jobs",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("workload", String(200), nullable=False),
    Column("input", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("progress", Float),
    Column("message", Text),
    Column("result", Text),
    Column("error", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("timeout_s", Float),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("worker", String(200)),
    Column("lease_expires_at", Float),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Index("ix_ambidex_jobs_status_seq", "status", "seq"),
    Index("ix_ambidex_jobs_worker", "worker"),
)

events_table = Table(
    "ambidex_job_events",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("job_id", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("at", Float, nullable=False),
    Column("data", Text, nullable=False),
    Index("ix_ambidex_job_events_job", "job_id", "seq"),
)

_Q = JobStatus.QUEUED.value
_R = JobStatus.RUNNING.value
_TERMINAL_VALUES = [s.value for s in TERMINAL]
_LOST_ERROR = "its worker stopped renewing the lease on its last attempt (max_attempts reached)"

# Hot statements are built once, with bound parameters: building an expression
# per call costs SQLAlchemy far more (cache keys, coercions) than running it.
_b = bindparam
_jc = jobs_table.c
_INSERT_JOBS = insert(jobs_table)
_INSERT_EVENTS = insert(events_table)
_GET = select(jobs_table).where(_jc.id == _b("p_id"))
_EVENTS = (
    select(events_table)
    .where(events_table.c.job_id == _b("p_id"), events_table.c.seq > _b("p_after"))
    .order_by(events_table.c.seq)
    .limit(_b("p_limit", type_=Integer))
)
_HELD = and_(
    _jc.id == _b("p_id"),
    _jc.worker == _b("p_worker"),
    _jc.attempts == _b("p_attempt"),
    _jc.status == _R,
)
_PROGRESS = (
    update(jobs_table)
    .where(_HELD)
    .values(progress=_b("p_progress", type_=Float), message=_b("p_message", type_=Text))
)
_FINISH = (
    update(jobs_table)
    .where(_HELD)
    .values(
        status=_b("p_status"),
        finished_at=_b("p_now"),
        lease_expires_at=None,
        result=_b("p_result", type_=Text),
        error=_b("p_error", type_=Text),
        progress=func.coalesce(_b("p_final_progress", type_=Float), _jc.progress),
    )
)
_CLAIM_VALUES = {
    "status": _R,
    "attempts": _jc.attempts + 1,
    "started_at": _b("p_now"),
    "worker": _b("p_worker"),
    "lease_expires_at": _b("p_lease_until"),
    "progress": None,
    "message": None,
}


def _claim_statement(dialect: str, filtered: bool) -> Any:
    pick = (
        select(_jc.seq)
        .where(_jc.status == _Q)
        .order_by(_jc.seq)
        .limit(_b("p_limit", type_=Integer))
    )
    if filtered:
        pick = pick.where(_jc.workload.in_(_b("p_workloads", expanding=True)))
    picked: Any = pick.scalar_subquery()
    if dialect == "postgresql":
        # In a CTE, which PostgreSQL runs once: as a plain IN (subquery) the
        # planner may rescan the locking SELECT for every row, and each
        # rescan skips the rows already updated and locks the next ones,
        # handing out more than ``limit`` jobs.
        picked = select(pick.with_for_update(skip_locked=True).cte("picked").c.seq)
    return (
        update(jobs_table)
        .where(_jc.seq.in_(picked), _jc.status == _Q)
        .values(**_CLAIM_VALUES)
        .returning(jobs_table)
    )


def new_job_id() -> str:
    """An unguessable job id: 128 random bits as 26 characters of ``a-z2-7``.

    Never starting with ``-`` (a command line would take it for an option) and
    safe in URLs, file names and shells.
    """
    return base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _row_to_job(row: Any) -> Job:
    m = row._mapping
    return Job(
        id=m["id"],
        workload=m["workload"],
        input=json.loads(m["input"]),
        status=JobStatus(m["status"]),
        progress=m["progress"],
        message=m["message"],
        result=None if m["result"] is None else json.loads(m["result"]),
        error=m["error"],
        attempts=m["attempts"],
        max_attempts=m["max_attempts"],
        timeout_s=m["timeout_s"],
        created_at=m["created_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        worker=m["worker"],
        lease_expires_at=m["lease_expires_at"],
        cancel_requested=bool(m["cancel_requested"]),
        seq=m["seq"],
    )


def encode_cursor(seq: int) -> str:
    """An opaque page cursor for ``list``."""
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The position a cursor stands for.

    Raises:
        ValueError: the cursor was not made by ``encode_cursor``.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("s") or not raw[1:].isdigit() or len(raw) > 20:
            raise ValueError
        seq = int(raw[1:])
        if seq > _MAX_SEQ:
            raise ValueError
        return seq
    except (ValueError, UnicodeDecodeError):
        raise ValueError(
            f"invalid cursor {cursor!r}: pass the next_cursor of a previous page"
        ) from None


@dataclass(frozen=True)
class NewJob:
    """A job to store (see ``JobStore.submit_batch``)."""

    workload: str
    input: Any
    max_attempts: int = 3
    timeout_s: float | None = None
    job_id: str | None = None


@dataclass(frozen=True)
class Outcome:
    """How a held job ended, as a worker reports it (see ``JobStore.finish``)."""

    job_id: str
    worker: str
    attempt: int
    status: JobStatus
    result: Any = None
    error: str | None = None


class LeaseReport:
    """What a heartbeat learned about the jobs a worker holds."""

    __slots__ = ("cancel_requested", "held")

    def __init__(self, held: set[str], cancel_requested: set[str]) -> None:
        self.held = held
        """Jobs whose lease was renewed."""
        self.cancel_requested = cancel_requested
        """Held jobs that someone asked to cancel."""


class JobStore:
    """Jobs and their events in SQLite (default) or PostgreSQL.

    Args:
        db: a file path or ``sqlite:///FILE`` (default: ``jobs.sqlite`` in the
            ambidex data directory), or ``postgresql://USER@HOST:PORT/DB``.

    Every method is a blocking call of one short transaction; call them from
    threads (``JobManager`` does) rather than from an event loop.
    """

    def __init__(self, db: str | Path | None = None) -> None:
        self.engines: Engines = open_engines(db)
        self.url = self.engines.url
        self.dialect = self.engines.dialect
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self.dialect == "sqlite" else contextlib.nullcontext()
        )
        try:
            with self.engines.write.begin() as conn:
                if self.dialect == "postgresql":
                    # Workers started together on an empty database would race
                    # to create the same tables; one at a time, the rest see them.
                    conn.execute(text("SELECT pg_advisory_xact_lock(7305072613425116005)"))
                metadata.create_all(conn)
        except BaseException:
            self.engines.dispose()
            raise
        self._claim_all = _claim_statement(self.dialect, filtered=False)
        self._claim_some = _claim_statement(self.dialect, filtered=True)

    def close(self) -> None:
        """Close the store's connections."""
        self.engines.dispose()

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        # SQLite has one writer at a time. Threads of this process queue on a
        # lock here rather than in SQLite's busy handler, which sleeps and
        # retries (1 ms, 2 ms, 5 ms...) and so turns contention into latency.
        with self._write_lock, self.engines.write.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engines.read.connect() as conn:
            yield conn

    @staticmethod
    def _event(conn: Connection, job_id: str, kind: str, at: float, **data: Any) -> None:
        conn.execute(
            _INSERT_EVENTS, {"job_id": job_id, "kind": kind, "at": at, "data": _dumps(data)}
        )

    # -- callers ---------------------------------------------------------------------

    def submit(
        self,
        workload: str,
        input: Any,
        *,
        max_attempts: int = 3,
        timeout_s: float | None = None,
        job_id: str | None = None,
    ) -> Job:
        """Store a new queued job; once this returns, the job will not be lost.

        Raises:
            ValueError: ``input`` is not JSON (NaN and infinity included), or
                ``max_attempts`` is below 1.
        """
        return self.submit_many(
            workload, [input], max_attempts=max_attempts, timeout_s=timeout_s, job_ids=[job_id]
        )[0]

    def submit_many(
        self,
        workload: str,
        inputs: builtins.list[Any],
        *,
        max_attempts: int = 3,
        timeout_s: float | None = None,
        job_ids: builtins.list[str | None] | None = None,
    ) -> builtins.list[Job]:
        """Store several queued jobs of one workload in one transaction."""
        ids = job_ids or [None] * len(inputs)
        return self.submit_batch(
            [
                NewJob(workload, value, max_attempts, timeout_s, jid)
                for value, jid in zip(inputs, ids, strict=True)
            ]
        )

    def submit_batch(self, new_jobs: builtins.list[NewJob]) -> builtins.list[Job]:
        """Store several queued jobs (any workloads) in one transaction.

        Raises:
            ValueError: an input is not JSON, or a ``max_attempts`` is below 1;
                then none of them is stored.
        """
        now = time.time()
        rows = []
        events = []
        jobs = []
        for new in new_jobs:
            if new.max_attempts < 1:
                raise ValueError(f"max_attempts must be at least 1, got {new.max_attempts}")
            try:
                text = _dumps(new.input)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"job input must be JSON: {exc}") from None
            jid = new.job_id or new_job_id()
            rows.append(
                {
                    "id": jid,
                    "workload": new.workload,
                    "input": text,
                    "status": _Q,
                    "attempts": 0,
                    "max_attempts": new.max_attempts,
                    "timeout_s": new.timeout_s,
                    "created_at": now,
                    "cancel_requested": False,
                }
            )
            events.append(
                {
                    "job_id": jid,
                    "kind": "submitted",
                    "at": now,
                    "data": _dumps({"status": _Q, "workload": new.workload}),
                }
            )
            jobs.append(
                Job(
                    id=jid,
                    workload=new.workload,
                    input=json.loads(text),
                    status=JobStatus.QUEUED,
                    max_attempts=new.max_attempts,
                    timeout_s=new.timeout_s,
                    created_at=now,
                )
            )
        if not rows:
            return []
        with self._write() as conn:
            conn.execute(_INSERT_JOBS, rows)
            conn.execute(_INSERT_EVENTS, events)
        return jobs

    def get(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        if "\x00" in job_id:  # no stored id has one (and PostgreSQL text cannot hold it)
            return None
        with self._read() as conn:
            row = conn.execute(_GET, {"p_id": job_id}).first()
        return None if row is None else _row_to_job(row)

    def list(
        self,
        *,
        status: Collection[JobStatus] | None = None,
        workload: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[builtins.list[Job], str | None]:
        """Jobs, newest first, and the cursor of the next page (None on the last page).

        Raises:
            ValueError: a cursor that was not returned by this method.
        """
        if workload is not None and "\x00" in workload:
            return [], None
        query = select(jobs_table).order_by(jobs_table.c.seq.desc()).limit(limit + 1)
        if status:
            query = query.where(jobs_table.c.status.in_([s.value for s in status]))
        if workload:
            query = query.where(jobs_table.c.workload == workload)
        if cursor:
            query = query.where(jobs_table.c.seq < decode_cursor(cursor))
        with self._read() as conn:
            rows = conn.execute(query).all()
        jobs = [_row_to_job(r) for r in rows[:limit]]
        more = len(rows) > limit
        return jobs, (encode_cursor(jobs[-1].seq) if more and jobs else None)

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a job: a queued one at once, a running one by asking its worker.

        Returns the job as it is after the request (None if there is no such
        job). A finished job is returned unchanged.
        """
        if "\x00" in job_id:
            return None
        now = time.time()
        with self._write() as conn:
            row = conn.execute(
                update(jobs_table)
                .where(jobs_table.c.id == job_id, jobs_table.c.status == _Q)
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
                return _row_to_job(row)
            row = conn.execute(
                update(jobs_table)
                .where(
                    jobs_table.c.id == job_id,
                    jobs_table.c.status == _R,
                    jobs_table.c.cancel_requested.is_(False),
                )
                .values(cancel_requested=True)
                .returning(jobs_table)
            ).first()
            if row is not None:
                self._event(conn, job_id, "cancel_requested", now, status=_R)
                return _row_to_job(row)
            row = conn.execute(select(jobs_table).where(jobs_table.c.id == job_id)).first()
        return None if row is None else _row_to_job(row)

    def events(self, job_id: str, *, after: int = 0, limit: int = 1000) -> builtins.list[JobEvent]:
        """A job's events with ``seq`` greater than ``after``, oldest first."""
        if "\x00" in job_id:
            return []
        after = min(max(after, 0), _MAX_SEQ)
        with self._read() as conn:
            rows = conn.execute(_EVENTS, {"p_id": job_id, "p_after": after, "p_limit": limit}).all()
        return [
            JobEvent(seq=r.seq, job_id=r.job_id, kind=r.kind, at=r.at, data=json.loads(r.data))
            for r in rows
        ]

    def last_event_seqs(self, job_ids: Collection[str]) -> dict[str, int]:
        """The ``seq`` of each job's latest event (jobs without events are left out)."""
        ids = list(job_ids)
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
            rows = conn.execute(
                select(jobs_table.c.status, func.count()).group_by(jobs_table.c.status)
            ).all()
        found = {JobStatus(status): n for status, n in rows}
        return {s: found.get(s, 0) for s in JobStatus}

    def prune(self, older_than_s: float) -> int:
        """Delete finished jobs (and their events) that finished more than ``older_than_s`` ago.

        Returns how many jobs were deleted. Queued and running jobs are never pruned.
        """
        cutoff = time.time() - older_than_s
        old = select(jobs_table.c.id).where(
            jobs_table.c.status.in_(_TERMINAL_VALUES), jobs_table.c.finished_at < cutoff
        )
        with self._write() as conn:
            conn.execute(delete(events_table).where(events_table.c.job_id.in_(old)))
            result = conn.execute(
                delete(jobs_table).where(
                    jobs_table.c.status.in_(_TERMINAL_VALUES), jobs_table.c.finished_at < cutoff
                )
            )
        return int(result.rowcount or 0)

    # -- workers ---------------------------------------------------------------------

    def claim(
        self,
        worker: str,
        *,
        lease_s: float,
        workloads: Collection[str] | None = None,
        limit: int = 1,
    ) -> builtins.list[Job]:
        """Take up to ``limit`` queued jobs, oldest first, under a lease of ``lease_s``.

        Each claimed job's ``attempts`` goes up by one; the worker must name
        that attempt in every later write.
        """
        now = time.time()
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
        with self._write() as conn:
            rows = conn.execute(statement, params).all()
            jobs = sorted((_row_to_job(r) for r in rows), key=lambda j: j.seq)
            if jobs:
                conn.execute(
                    _INSERT_EVENTS,
                    [
                        {
                            "job_id": j.id,
                            "kind": "started",
                            "at": now,
                            "data": _dumps({"status": _R, "attempt": j.attempts, "worker": worker}),
                        }
                        for j in jobs
                    ],
                )
        return jobs

    def heartbeat(self, worker: str, job_ids: Collection[str], *, lease_s: float) -> LeaseReport:
        """Renew the leases ``worker`` holds on ``job_ids``; report which it still holds.

        Only the jobs named are renewed: a job the worker holds in the store but
        no longer runs (its task is gone) is left to lapse and be requeued.
        """
        ids = builtins.list(job_ids)
        now = time.time()
        held: set[str] = set()
        cancel: set[str] = set()
        with self._write() as conn:
            for start in range(0, len(ids), 500):
                rows = conn.execute(
                    update(jobs_table)
                    .where(
                        jobs_table.c.worker == worker,
                        jobs_table.c.status == _R,
                        jobs_table.c.id.in_(ids[start : start + 500]),
                    )
                    .values(lease_expires_at=now + lease_s)
                    .returning(jobs_table.c.id, jobs_table.c.cancel_requested)
                ).all()
                held.update(r[0] for r in rows)
                cancel.update(r[0] for r in rows if r[1])
        return LeaseReport(held, cancel)

    def report_progress(
        self, job_id: str, worker: str, attempt: int, progress: float | None, message: str | None
    ) -> bool:
        """Store a running job's progress; False if the worker no longer holds the job."""
        now = time.time()
        with self._write() as conn:
            result = conn.execute(
                _PROGRESS,
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
    ) -> bool:
        """Record how a held job ended: written once, by the worker holding that attempt.

        Returns False (and writes nothing) if the worker's lease on this attempt
        was lost. A result that is not JSON is recorded as a failure instead.
        """
        return self.finish_many([Outcome(job_id, worker, attempt, status, result, error)])[0]

    def finish_many(self, outcomes: builtins.list[Outcome]) -> builtins.list[bool]:
        """``finish`` for several jobs in one transaction; one answer per outcome."""
        now = time.time()
        prepared = []
        for o in outcomes:
            if o.status not in TERMINAL:
                raise ValueError(f"finish() needs a terminal status, got {o.status.value}")
            status, error, text = o.status, o.error, None
            if status is JobStatus.SUCCEEDED:
                try:
                    text = _dumps(o.result)
                except (TypeError, ValueError) as exc:
                    status, error = JobStatus.FAILED, f"the result is not JSON: {exc}"
            prepared.append((o, status, error, text))
        recorded: builtins.list[bool] = []
        events = []
        with self._write() as conn:
            for o, status, error, text in prepared:
                done = conn.execute(
                    _FINISH,
                    {
                        "p_id": o.job_id,
                        "p_worker": o.worker,
                        "p_attempt": o.attempt,
                        "p_status": status.value,
                        "p_now": now,
                        "p_result": text,
                        "p_error": error,
                        "p_final_progress": 1.0 if status is JobStatus.SUCCEEDED else None,
                    },
                )
                recorded.append(bool(done.rowcount))
                if done.rowcount:
                    data: dict[str, Any] = {"status": status.value, "attempt": o.attempt}
                    if error is not None:
                        data["error"] = error
                    events.append(
                        {"job_id": o.job_id, "kind": status.value, "at": now, "data": _dumps(data)}
                    )
            if events:
                conn.execute(_INSERT_EVENTS, events)
        return recorded

    def release(self, worker: str) -> int:
        """Put back in the queue every job ``worker`` holds (a clean shutdown)."""
        now = time.time()
        with self._write() as conn:
            rows = conn.execute(
                update(jobs_table)
                .where(jobs_table.c.worker == worker, jobs_table.c.status == _R)
                .values(status=_Q, lease_expires_at=None, attempts=jobs_table.c.attempts - 1)
                .returning(jobs_table.c.id)
            ).all()
            for (jid,) in rows:
                self._event(
                    conn, jid, "requeued", now, status=_Q, reason=f"worker {worker} shut down"
                )
        return len(rows)

    def recover_expired(self) -> tuple[builtins.list[str], builtins.list[str]]:
        """Requeue running jobs whose lease lapsed; fail those out of attempts.

        Returns ``(requeued ids, failed ids)``. Any worker may call this; two
        calls at once do no harm.
        """
        now = time.time()
        lapsed = and_(jobs_table.c.status == _R, jobs_table.c.lease_expires_at < now)
        with self._write() as conn:
            failed = conn.execute(
                update(jobs_table)
                .where(lapsed, jobs_table.c.attempts >= jobs_table.c.max_attempts)
                .values(
                    status=JobStatus.FAILED.value,
                    finished_at=now,
                    lease_expires_at=None,
                    error=_LOST_ERROR,
                )
                .returning(jobs_table.c.id, jobs_table.c.worker, jobs_table.c.attempts)
            ).all()
            requeued = conn.execute(
                update(jobs_table)
                .where(lapsed, jobs_table.c.attempts < jobs_table.c.max_attempts)
                .values(status=_Q, lease_expires_at=None)
                .returning(jobs_table.c.id, jobs_table.c.worker, jobs_table.c.attempts)
            ).all()
            for jid, worker, attempts in failed:
                self._event(
                    conn,
                    jid,
                    "failed",
                    now,
                    status="failed",
                    error=_LOST_ERROR,
                    attempt=attempts,
                    worker=worker,
                )
            for jid, worker, attempts in requeued:
                self._event(
                    conn,
                    jid,
                    "requeued",
                    now,
                    status=_Q,
                    attempt=attempts,
                    reason=f"the lease of worker {worker} lapsed",
                )
        return [r[0] for r in requeued], [r[0] for r in failed]
