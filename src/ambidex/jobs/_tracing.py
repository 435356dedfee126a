"""The span of each attempt of a job; imported by the worker only while tracing is on.

An attempt runs inside ``ambidex.job <workload>`` (kind CONSUMER): its parent is
the trace context stored with the job at submit (``Job.trace_context``), so a
job run by another process, later, is in the trace of the request that
submitted it, and linked to it too (a backend that starts a new trace for a
consumer still shows where the job came from). A job stored without a context
(tracing was off at submit, a schedule fired it) starts a trace of its own.

How the attempt ended is set on the span once its outcome is recorded, from
the text the job's record keeps (never ``str()`` of what the job raised: that
was read once, safely, into ``Ending``): a failure is status ERROR with
``error.type`` and an ``exception`` event; a failure that will be retried adds
a ``retry`` event with the wait; a lost lease is an event and an ERROR status.
Recording a span never raises into the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from ambidex import _otel
from ambidex._job_model import Job
from ambidex.jobs._ending import Ending, StopReason
from ambidex.jobs._statements import MAX_ERROR_CHARS, MAX_TRACEBACK_CHARS, storable_text

__all__ = ["attempt_span", "carrier_of", "ended", "lease_lost", "stopped"]

log = logging.getLogger("ambidex.jobs")

LEASE_LOST = "its worker lost the job's lease: the attempt stopped, writing nothing"


def carrier_of(job: Job) -> dict[str, str] | None:
    """The W3C headers stored with ``job`` (None: none, or text that is not a carrier)."""
    text = job.trace_context
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    carrier = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}
    return carrier or None


@contextlib.contextmanager
def attempt_span(job: Job, worker_id: str) -> Iterator[Span]:
    """The current span of one attempt of ``job``, child of (and linked to) its submit.

    An error other than a cancellation leaving the block (a bug of the worker's) is
    recorded on it; a cancellation is the caller's to describe (``stopped``).
    """
    carrier = carrier_of(job)
    due = job.run_at if job.run_at is not None else job.created_at
    attributes: dict[str, Any] = {
        "ambidex.job.id": job.id,
        "ambidex.job.workload": job.workload,
        "ambidex.job.attempt": job.attempts,
        "ambidex.job.queue_wait_s": max((job.started_at or due) - due, 0.0),
        "ambidex.worker.id": worker_id,
    }
    # The stored context, or an empty one: never the worker's own (its claim loop's).
    parent = _otel.extract(carrier)
    submit = trace.get_current_span(parent).get_span_context()
    with _otel.tracer().start_as_current_span(
        f"ambidex.job {job.workload}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        links=[Link(submit)] if submit.is_valid else None,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            _otel.fail(span, exc)
            raise


def ended(span: Span, ending: Ending, retry_in_s: float | None, retry: int) -> None:
    """Set how the attempt ended, as recorded: its outcome, error and retry (never raises).

    ``retry``: the number of the retry ``retry_in_s`` schedules.
    """
    try:
        _ended(span, ending, retry_in_s, retry)
    except Exception:  # a span must never cost a job its outcome
        log.debug("recording the outcome on the job's span failed", exc_info=True)


def _ended(span: Span, ending: Ending, retry_in_s: float | None, retry: int) -> None:
    outcome = "retrying" if retry_in_s is not None else ending.reason.value
    span.set_attribute("ambidex.job.outcome", outcome)
    if ending.reason is StopReason.SUCCEEDED:
        return
    if ending.reason is StopReason.CANCELLED:
        error_type = "cancelled"
    elif ending.exception is not None:
        error_type = type(ending.exception).__qualname__
    else:
        error_type = ending.reason.value
    description = storable_text(ending.error, MAX_ERROR_CHARS) or ending.reason.value
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, description))
    event = {"exception.type": error_type, "exception.message": description}
    trace = storable_text(ending.traceback, MAX_TRACEBACK_CHARS)
    if trace:
        event["exception.stacktrace"] = trace
    span.add_event("exception", event)
    if retry_in_s is not None:
        span.add_event("retry", {"ambidex.job.retry": retry, "ambidex.job.retry_in_s": retry_in_s})


def lease_lost(span: Span) -> None:
    """The attempt lost its lease: an event, ``ambidex.job.lease_lost``, status ERROR."""
    try:
        span.set_attribute("ambidex.job.outcome", StopReason.LEASE_LOST.value)
        span.set_attribute("ambidex.job.lease_lost", True)
        span.set_attribute("error.type", StopReason.LEASE_LOST.value)
        span.add_event("lease_lost")
        span.set_status(Status(StatusCode.ERROR, LEASE_LOST))
    except Exception:
        log.debug("recording a lost lease on the job's span failed", exc_info=True)


def stopped(span: Span, why: StopReason | None) -> None:
    """The attempt was stopped from outside (cancelled task): a lost lease, or shutdown."""
    if why is StopReason.LEASE_LOST:
        lease_lost(span)
        return
    try:  # the worker stopped: the job goes back to the queue, unfinished (not its error)
        span.set_attribute("ambidex.job.outcome", StopReason.SHUTDOWN.value)
        span.add_event("shutdown")
    except Exception:
        log.debug("recording a shutdown on the job's span failed", exc_info=True)
