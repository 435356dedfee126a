"""The job store's SQL, built once with bound parameters, and the rows it writes.

Building an expression per call costs SQLAlchemy far more (cache keys,
coercions) than running it, so the hot statements live here, ready.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    Text,
    and_,
    bindparam,
    case,
    func,
    insert,
    select,
    update,
)

from ambidex._job_model import TERMINAL, JobStatus
from ambidex._text import plain_text, shorten
from ambidex.jobs._json import dumps
from ambidex.jobs._schema import events_table, jobs_table

MAX_ERROR_CHARS = 8_000
MAX_TRACEBACK_CHARS = 64_000
MAX_MESSAGE_CHARS = 2_000

QUEUED = JobStatus.QUEUED.value
RUNNING = JobStatus.RUNNING.value
TERMINAL_VALUES = [s.value for s in TERMINAL]
RETRYABLE_VALUES = [JobStatus.FAILED.value, JobStatus.CANCELLED.value]
LOST_ERROR = "its worker stopped renewing the lease on its last attempt (max_attempts reached)"
MAX_RELEASES = 10
"""Starts a job may give back on a clean shutdown before it fails (a job that shuts its own
worker down would otherwise run for ever: a delivery limit, as RabbitMQ's and SQS's)."""
RELEASED_ERROR = (
    f"its worker shut down while it ran {MAX_RELEASES} times (does the job stop its own worker?)"
)
DEAD_WORKER_KEPT_S = 3600.0  # a worker silent this long leaves the Workers page

# Hot statements are built once, with bound parameters: building an expression
# per call costs SQLAlchemy far more (cache keys, coercions) than running it.
_b = bindparam
_jc = jobs_table.c
INSERT_JOBS = insert(jobs_table)
INSERT_EVENTS = insert(events_table)
GET = select(jobs_table).where(_jc.id == _b("p_id"))
EVENTS = (
    select(events_table)
    .where(events_table.c.job_id == _b("p_id"), events_table.c.seq > _b("p_after"))
    .order_by(events_table.c.seq)
    .limit(_b("p_limit", type_=Integer))
)
_HELD = and_(
    _jc.id == _b("p_id"),
    _jc.worker == _b("p_worker"),
    _jc.attempts == _b("p_attempt"),
    _jc.status == RUNNING,
)
HELD_ROW = select(_jc.seq).where(_HELD).with_for_update()
"""The job's row while the worker holds that attempt, locked until the transaction ends
(PostgreSQL; SQLite has one writer): no requeue or claim of the job commits in between."""
PROGRESS = (
    update(jobs_table)
    .where(_HELD)
    .values(progress=_b("p_progress", type_=Float), message=_b("p_message", type_=Text))
)
FINISH = (
    update(jobs_table)
    .where(_HELD)
    .values(
        status=_b("p_status"),
        finished_at=_b("p_now"),
        lease_expires_at=None,
        result=_b("p_result", type_=Text),
        error=_b("p_error", type_=Text),
        traceback=_b("p_traceback", type_=Text),
        progress=func.coalesce(_b("p_final_progress", type_=Float), _jc.progress),
    )
)
RETRY_LATER = (  # a job someone asked to cancel is not retried: see JobStore.finish_many
    update(jobs_table)
    .where(_HELD, _jc.cancel_requested.is_(False))
    .values(
        status=QUEUED,
        run_at=_b("p_run_at", type_=Float),
        lease_expires_at=None,
        retried=_jc.retried + 1,
        error=_b("p_error", type_=Text),
        traceback=_b("p_traceback", type_=Text),
    )
)
CLAIM_VALUES = {
    "status": RUNNING,
    "attempts": _jc.attempts + 1,
    "started_at": _b("p_now"),
    "finished_at": None,
    "worker": _b("p_worker"),
    "lease_expires_at": _b("p_lease_until"),
    "progress": None,
    "message": None,
}
CLAIM_ORDER = (_jc.priority.desc(), _jc.seq)
DUE = and_(_jc.status == QUEUED, _jc.run_at <= _b("p_now"))


def claim_statement(dialect: str, filtered: bool) -> Any:
    pick = select(_jc.seq).where(DUE).order_by(*CLAIM_ORDER).limit(_b("p_limit", type_=Integer))
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
        .where(_jc.seq.in_(picked), _jc.status == QUEUED)
        .values(**CLAIM_VALUES)
        .returning(jobs_table)
    )


_others = jobs_table.alias("running_jobs")
_RUNNING_OF_ITS_WORKLOAD = (
    select(func.count())
    .where(_others.c.status == RUNNING, _others.c.workload == _jc.workload)
    .scalar_subquery()
)


def capped_candidates(dialect: str, filtered: bool) -> Any:
    """The due jobs, each with how many of its workload run now if that workload is capped.

    Parameters: ``p_capped`` (the capped workloads), ``p_now``, ``p_limit``,
    and ``p_workloads`` when ``filtered``.
    """
    capped = _jc.workload.in_(_b("p_capped", expanding=True))
    query = (
        select(_jc.seq, _jc.workload, case((capped, _RUNNING_OF_ITS_WORKLOAD), else_=0))
        .where(DUE)
        .order_by(*CLAIM_ORDER)
        .limit(_b("p_limit", type_=Integer))
    )
    if filtered:
        query = query.where(_jc.workload.in_(_b("p_workloads", expanding=True)))
    if dialect == "postgresql":
        query = query.with_for_update(skip_locked=True, of=jobs_table)
    return query


CLAIM_SEQS = (
    update(jobs_table)
    .where(_jc.seq.in_(_b("p_seqs", expanding=True)), _jc.status == QUEUED)
    .values(**CLAIM_VALUES)
    .returning(jobs_table)
)
"""Claim the queued jobs ``p_seqs`` (chosen by a capped claim)."""
ADVISORY_LOCK = select(func.pg_advisory_xact_lock(_b("p_key", type_=BigInteger)))
"""PostgreSQL: a lock until the transaction ends (a capped workload's, in claims)."""


def lock_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for a workload's concurrency limit."""
    digest = hashlib.blake2b(f"ambidex-limit:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def insert_ignoring(dialect: str, table: Any, unique: str, where: Any = None) -> Any:
    """``INSERT ... ON CONFLICT (unique) [WHERE ...] DO NOTHING`` in the dialect's own words.

    ``where`` is the predicate of a partial unique index on ``unique``.
    """
    from sqlalchemy.dialects import postgresql, sqlite

    make: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return make(table).on_conflict_do_nothing(index_elements=[unique], index_where=where)


def event_row(job_id: str, kind: str, at: float, data: dict[str, Any]) -> dict[str, Any]:
    return {"job_id": job_id, "kind": kind, "at": at, "data": dumps(data)}


def storable_text(value: str | None, max_chars: int) -> str | None:
    """Free text a worker writes, made storable (see ``ambidex._text``) and bounded."""
    return None if value is None else shorten(plain_text(value), max_chars)
