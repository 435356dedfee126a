"""How what the store is given becomes rows: a new job, its ``submitted`` event, an outcome.

I/O-free: the store (``_store``) runs the statements; these decide the values,
including every check that keeps a value the database could not hold (or not
give back exactly) out of it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from ambidex import _observe
from ambidex._job_model import NO_RETRY, TERMINAL, Job, JobStatus, iso
from ambidex._text import plain_text
from ambidex.jobs._json import JsonProblem, dumps, json_text
from ambidex.jobs._records import NewJob, Outcome, TraceFrom, new_job_id
from ambidex.jobs._statements import (
    MAX_ERROR_CHARS,
    MAX_TRACEBACK_CHARS,
    QUEUED,
    event_row,
    storable_text,
)

__all__ = ["new_job_row", "outcome_values", "stored_trace", "submitted_event_row"]

_TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_MAX_TRACESTATE_CHARS = 512  # W3C: vendors may drop a longer one; so does the store


def stored_trace(carrier: Mapping[str, str] | TraceFrom | None) -> str | None:
    """The text stored as a job's ``trace_context`` for ``carrier`` (None: nothing stored).

    ``TraceFrom.CURRENT``: the context current here, when tracing is on (with it
    off, nothing is read: one attribute of ``_observe``). Only ``traceparent``
    (version 00, well formed, not all zeros) and a ``tracestate`` of plain text
    up to 512 characters are kept: baggage stays out of the database, and a
    malformed context is dropped, never refused (a trace must not fail a submit).
    """
    if carrier is TraceFrom.CURRENT:
        if not _observe.on:
            return None
        carrier = _observe.carrier()
    if not isinstance(carrier, Mapping):
        return None
    parent = carrier.get("traceparent")
    if (
        not isinstance(parent, str)
        or not _TRACEPARENT.fullmatch(parent)
        or parent[3:35] == "0" * 32
        or parent[36:52] == "0" * 16
    ):
        return None
    kept = {"traceparent": parent}
    state = carrier.get("tracestate")
    if isinstance(state, str) and len(state) <= _MAX_TRACESTATE_CHARS and state.isprintable():
        kept["tracestate"] = state
    return json.dumps(kept, separators=(",", ":"))


def new_job_row(new: NewJob, now: float) -> tuple[dict[str, Any], Job]:
    """The row of a new job, and the ``Job`` it stands for.

    Raises:
        ValueError: ``max_attempts`` below 1, a ``run_at`` that is not a finite
            time, a ``timeout_s`` that is not a positive number (NaN), a job id
            with a NUL or a lone surrogate, or an input that is not storable JSON.
    """
    if new.max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {new.max_attempts}")
    # Checked here, below every path to the store: NaN would read back as NULL
    # (a run_at no claim ever reaches), an id with a NUL could never be read back.
    if new.run_at is not None and not math.isfinite(new.run_at):
        raise ValueError(f"run_at must be a finite time, got {new.run_at!r}")
    if new.timeout_s is not None and not new.timeout_s > 0:
        raise ValueError(f"timeout_s must be a positive number of seconds, got {new.timeout_s!r}")
    if new.job_id is not None and plain_text(new.job_id) != new.job_id:
        raise ValueError(f"a job id must be plain text (no NUL, no lone surrogate): {new.job_id!r}")
    try:
        text_input = json_text(new.input)
    except JsonProblem as problem:
        raise ValueError(f"job input is not storable JSON: {problem}") from None
    jid = new.job_id or new_job_id()
    run_at = now if new.run_at is None else float(new.run_at)
    retry = None if new.retry == NO_RETRY else dumps(new.retry.as_dict())
    carrier = new.trace_context
    # Tracing off (or no context given): nothing to store, and nothing more read than ``on``.
    if carrier is None or (carrier is TraceFrom.CURRENT and not _observe.on):
        trace = None
    else:
        trace = stored_trace(carrier)
    row = {
        "id": jid,
        "workload": new.workload,
        "input": text_input,
        "status": QUEUED,
        "attempts": 0,
        "max_attempts": new.max_attempts,
        "timeout_s": new.timeout_s,
        "created_at": now,
        "cancel_requested": False,
        "priority": new.priority,
        "run_at": run_at,
        "retry": retry,
        "retried": 0,
        "lost": 0,
        "idempotency_key": new.idempotency_key,
        "rerun_of": new.rerun_of,
        "trace_context": trace,
    }
    job = Job(
        id=jid,
        workload=new.workload,
        input=json.loads(text_input),
        status=JobStatus.QUEUED,
        max_attempts=new.max_attempts,
        timeout_s=new.timeout_s,
        retry=new.retry,
        priority=new.priority,
        run_at=run_at,
        idempotency_key=new.idempotency_key,
        rerun_of=new.rerun_of,
        created_at=now,
        trace_context=trace,
    )
    return row, job


def submitted_event_row(new: NewJob, job: Job, now: float) -> dict[str, Any]:
    """The ``submitted`` event of a new job (its delay, priority, re-run link, origin)."""
    data: dict[str, Any] = {"status": QUEUED, "workload": new.workload}
    if job.run_at is not None and job.run_at > now:
        data["run_at"] = iso(job.run_at)
    if new.priority:
        data["priority"] = new.priority
    if new.rerun_of:
        data["rerun_of"] = new.rerun_of
    if new.origin:
        data.update(new.origin)
    return event_row(job.id, "submitted", now, data)


def outcome_values(o: Outcome) -> tuple[JobStatus, str | None, str | None, str | None]:
    """(status, result text, error, traceback) as an outcome will be stored.

    A result that is not storable JSON turns the outcome into a failure saying where.

    Raises:
        ValueError: a status that is not terminal.
    """
    if o.status not in TERMINAL:
        raise ValueError(f"finish() needs a terminal status, got {o.status.value}")
    status, error, text_result = o.status, o.error, None
    if status is JobStatus.SUCCEEDED:
        try:
            text_result = json_text(o.result)
        except JsonProblem as problem:
            where = JsonProblem(["result", *problem.loc], problem.msg)
            status, error = JobStatus.FAILED, f"the result is not storable JSON: {where}"
    return (
        status,
        text_result,
        storable_text(error, MAX_ERROR_CHARS),
        storable_text(o.traceback, MAX_TRACEBACK_CHARS),
    )
