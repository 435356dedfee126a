"""The values the job store takes and gives: new jobs, outcomes, pages and their cursors."""

from __future__ import annotations

import base64
import enum
import os
import secrets
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ambidex._job_model import NO_RETRY, Job, JobStatus, RetryPolicy
from ambidex._text import plain_text
from ambidex.exceptions import AmbidexError

__all__ = [
    "MAX_SEQ",
    "BatchRefused",
    "IdempotencyConflict",
    "LeaseReport",
    "NewJob",
    "Outcome",
    "Page",
    "Submitted",
    "TraceFrom",
    "decode_cursor",
    "encode_cursor",
    "new_job_id",
    "refused_data",
]

MAX_SEQ = 2**63 - 1


_BASE32 = "234567abcdefghijklmnopqrstuvwxyz"
"""The 32 digits of a job id, in byte order: ids sort as the numbers they write."""


_RANDOM_BITS = 82  # and 48 bits of milliseconds: 130 bits, 26 characters of 5 bits
_RANDOM_BYTES = 11
_POOL_BYTES = 4096


class _RandomPool:
    """Bytes from the OS's CSPRNG, fetched 4 KiB at a time.

    One ``getrandom`` call a job cost 2 µs (10 under strace) on the service's
    virtual machines; a fork starts the child with an empty pool, so two
    processes never hand out the same bytes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._at + n > len(self._pool):
                self._pool, self._at = secrets.token_bytes(_POOL_BYTES), 0
            chunk = self._pool[self._at : self._at + n]
            self._at += n
            return chunk

    def forget(self) -> None:
        self._lock = threading.Lock()
        self._pool, self._at = b"", 0


_random = _RandomPool()
os.register_at_fork(after_in_child=_random.forget)


def new_job_id() -> str:
    """An unguessable job id: 82 random bits after 48 bits of the time in milliseconds.

    26 characters of ``2-7a-z`` (5 bits each, the digits in byte order, so ids
    sort by the time they were made, as a database index orders them; the int
    is written by shifting: the stdlib's base32 encoder is pure Python and
    cost about 15 µs of a submit): never starting with ``-`` (a command line
    would take it for an option), safe in URLs, file names and shells. The
    time first makes ids of jobs submitted together neighbours in the job id
    index and in the events index: with ids all random, each job and each of
    its event rows changed another page of those indexes, and a commit of 8
    new jobs wrote 15 pages (measured: 30 ``pwrite`` calls); 82 random bits
    are as unguessable as a ULID's 80.
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(_random.take(_RANDOM_BYTES), "big") >> (8 * _RANDOM_BYTES - _RANDOM_BITS)
    bits = (ms << _RANDOM_BITS) | rand
    return "".join([_BASE32[(bits >> shift) & 31] for shift in range(125, -1, -5)])


def encode_cursor(seq: int, *, newer: bool = False) -> str:
    """An opaque page cursor for ``list``: the jobs older (or ``newer``) than ``seq``."""
    return base64.urlsafe_b64encode(f"{'n' if newer else 's'}{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, bool]:
    """The position a cursor stands for, and whether it asks for newer jobs.

    Raises:
        ValueError: the cursor was not made by ``encode_cursor``.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if raw[:1] not in ("s", "n") or not raw[1:].isdigit() or len(raw) > 20:
            raise ValueError
        seq = int(raw[1:])
        if seq > MAX_SEQ:
            raise ValueError
        return seq, raw[0] == "n"
    except (ValueError, UnicodeDecodeError):
        raise ValueError(
            f"invalid cursor {plain_text(cursor[:40])!r}: "
            "pass the next_cursor or prev_cursor of a previous page"
        ) from None


class Submitted(NamedTuple):
    """The job a submit names, and whether the submit created it.

    ``created`` is False when the idempotency key named an existing job.
    """

    job: Job
    created: bool


class Page(NamedTuple):
    """One page of ``JobStore.list``, newest first."""

    jobs: list[Job]
    next_cursor: str | None
    """The cursor of the next (older) page; None on the last page."""
    prev_cursor: str | None
    """The cursor of the previous (newer) page; None on the newest page."""


class LeaseReport:
    """What a heartbeat learned about the jobs a worker holds."""

    __slots__ = ("cancel_requested", "held")

    def __init__(self, held: set[str], cancel_requested: set[str]) -> None:
        self.held = held
        """Jobs whose lease was renewed."""
        self.cancel_requested = cancel_requested
        """Held jobs that someone asked to cancel."""


class IdempotencyConflict(AmbidexError, ValueError):
    """An idempotency key already names a job of another workload or input."""

    def __init__(self, key: str, job: Job, earlier: int | None = None) -> None:
        self.key = key
        self.job = job
        self.earlier = earlier
        """In a batch: the index of the batch's earlier job with this key (``job``, not stored)."""
        if earlier is not None:
            super().__init__(
                f"idempotency key {key!r} is given to job {earlier} of the batch too, "
                "with a different workload or input"
            )
            return
        super().__init__(
            f"idempotency key {key!r} already names job {job.id} ({job.workload}) "
            "with a different workload or input"
        )


class BatchRefused(AmbidexError, ValueError):
    """Some jobs of an all-or-nothing batch were refused, so none was stored.

    ``failures`` lists ``(index, error)`` for each job refused, in order: a
    ``ValueError`` saying why (an input that is not storable JSON), or an
    ``IdempotencyConflict``.
    """

    def __init__(self, failures: list[tuple[int, ValueError]]) -> None:
        self.failures = failures
        shown = "; ".join(f"job {i}: {e}" for i, e in failures[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(f"{len(failures)} job(s) of the batch refused, none stored: {shown}{more}")


def refused_data(exc: BaseException) -> bool:
    """True when ``exc`` says the database refused the data written, not that it failed.

    A value the database or its driver cannot hold (a NUL in PostgreSQL text,
    text that is not UTF-8, a value out of a column's range) fails every time
    it is written; a lost connection, a lock timeout or an unknown error may
    not, so those are not taken for the data's fault.
    """
    from sqlalchemy.exc import DataError, IntegrityError, StatementError

    if isinstance(exc, DataError | IntegrityError | ValueError | TypeError | UnicodeError):
        return True
    psycopg = sys.modules.get("psycopg")  # PostgreSQL's hot path raises psycopg's own errors
    if psycopg is not None and isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
        return True
    orig = getattr(exc, "orig", None)
    return isinstance(exc, StatementError) and isinstance(
        orig, ValueError | TypeError | UnicodeError
    )


class TraceFrom(enum.Enum):
    """Where a new job's trace context comes from when the ``NewJob`` gives none."""

    CURRENT = "current"  # the context current where the store is called, when tracing is on


@dataclass(frozen=True)
class NewJob:
    """A job to store (see ``JobStore.submit_batch``)."""

    workload: str
    input: Any
    max_attempts: int = 3
    timeout_s: float | None = None
    job_id: str | None = None
    priority: int = 0
    run_at: float | None = None
    """Not before this time (epoch seconds); None: at once."""
    retry: RetryPolicy = NO_RETRY
    idempotency_key: str | None = None
    rerun_of: str | None = None
    origin: Mapping[str, Any] | None = None
    """Extra data for the ``submitted`` event (e.g. the schedule that fired it)."""
    trace_context: Mapping[str, str] | TraceFrom | None = TraceFrom.CURRENT
    """The W3C trace context to store with the job (``traceparent``, ``tracestate``; other
    keys, and a malformed one, are dropped); ``CURRENT``: the one current where the store
    is called, when tracing is on (see ``ambidex._observe``); None: none."""


@dataclass(frozen=True)
class Outcome:
    """How a held job ended, as a worker reports it (see ``JobStore.finish``).

    With ``retry_in_s`` set (and status ``FAILED``), the job goes back to the
    queue and may start again that many seconds later; its error stays on record.
    """

    job_id: str
    worker: str
    attempt: int
    status: JobStatus
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    retry_in_s: float | None = None
