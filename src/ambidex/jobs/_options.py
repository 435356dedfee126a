"""A submit's options checked and turned into a ``NewJob`` (what the desk stores).

Every option left out takes the workload's value (``WorkloadOptions``); one out
of range raises ``JobOptionError`` naming it, before anything is stored.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from ambidex import _observe
from ambidex._clock import current_clock
from ambidex._job_errors import JobOptionError
from ambidex._job_model import RetryPolicy, type_names
from ambidex.jobs._store import NewJob
from ambidex.jobs._workloads import Workload, check_priority

__all__ = ["MAX_DELAY_S", "MAX_KEY_CHARS", "new_job"]

MAX_DELAY_S = 366 * 86400.0
"""The furthest ahead a job may be delayed or scheduled."""
MAX_KEY_CHARS = 200
_RETRY_OPTIONS = ("retries", "retry_on", "retry_backoff_s", "retry_max_backoff_s")


def _when(delay_s: float | None, run_at: float | datetime | None) -> float | None:
    """The epoch time a job may start, from ``delay_s`` or ``run_at`` (None: at once)."""
    if delay_s is not None and run_at is not None:
        raise JobOptionError("run_at", "give delay_s or run_at, not both")
    now = current_clock().time()  # the store's clock: a test's fake clock reaches delays
    if delay_s is not None:
        if not (_is_number(delay_s) and 0 <= delay_s <= MAX_DELAY_S):
            raise JobOptionError(
                "delay_s", f"delay_s must be within 0..{MAX_DELAY_S:g} seconds, got {delay_s!r}"
            )
        return now + float(delay_s)
    if run_at is None:
        return None
    if isinstance(run_at, datetime):
        if run_at.tzinfo is None:
            raise JobOptionError("run_at", "run_at: give a datetime with a time zone (e.g. UTC)")
        run_at = run_at.timestamp()
    if not _is_number(run_at) or not math.isfinite(run_at) or run_at < 0:
        raise JobOptionError("run_at", f"run_at must be a time in epoch seconds, got {run_at!r}")
    if run_at > now + MAX_DELAY_S:
        raise JobOptionError(
            "run_at",
            f"run_at {run_at!r} is more than a year ahead (epoch seconds, not milliseconds?)",
        )
    return float(run_at)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def new_job(
    wl: Workload,
    data: dict[str, Any],
    options: dict[str, Any],
    *,
    rerun_of: str | None = None,
    idempotency_key: str | None = None,
    origin: dict[str, Any] | None = None,
    traced: bool = True,
) -> NewJob:
    """The ``NewJob`` for validated input, with the workload's options where none is given.

    ``traced``: with tracing on, the job keeps the trace context current here (the
    submitting request's), read now: the store may write it later, from another task.

    Raises:
        JobOptionError: an option out of range, naming it.
    """

    def pick(key: str, default: Any) -> Any:
        value = options.get(key)
        return default if value is None else value

    retry = wl.retry  # checked when the workload was registered
    if any(options.get(k) is not None for k in _RETRY_OPTIONS):
        retry = _retry_policy(
            pick("retries", wl.retry.retries),
            pick("retry_on", wl.retry.on),
            pick("retry_backoff_s", wl.retry.backoff_s),
            pick("retry_max_backoff_s", wl.retry.max_backoff_s),
        )
    try:
        prio = check_priority(pick("priority", wl.priority))
    except ValueError as exc:
        raise JobOptionError("priority", str(exc)) from None
    key = pick("idempotency_key", idempotency_key)
    if key is not None:
        _check_key(key)
    max_attempts = pick("max_attempts", wl.max_attempts)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise JobOptionError(
            "max_attempts", f"max_attempts must be a positive integer, got {max_attempts!r}"
        )
    timeout_s = pick("timeout_s", wl.timeout_s)
    if timeout_s is not None and not (_is_number(timeout_s) and timeout_s > 0):
        raise JobOptionError(
            "timeout_s", f"timeout_s must be a positive number of seconds, got {timeout_s!r}"
        )
    run_at = _when(options.get("delay_s"), options.get("run_at"))
    trace = _observe.carrier() if traced and _observe.on else None
    return NewJob(
        wl.name,
        data,
        max_attempts,
        timeout_s,
        None,
        prio,
        run_at,
        retry,
        key,
        rerun_of,
        origin,
        trace,
    )


def _retry_policy(retries: Any, retry_on: Any, backoff_s: Any, max_backoff_s: Any) -> RetryPolicy:
    """A ``RetryPolicy`` from a submit's options; a bad one raises naming itself.

    Raises:
        JobOptionError: ``option`` names the option at fault.
    """
    try:
        on = type_names(retry_on)
        RetryPolicy(on=on)
    except ValueError as exc:
        raise JobOptionError("retry_on", str(exc)) from None
    for option, seconds in (("retry_backoff_s", backoff_s), ("retry_max_backoff_s", max_backoff_s)):
        if not (_is_number(seconds) and 0 <= seconds <= 86400):
            raise JobOptionError(
                option, f"{option} must be within 0..86400 seconds, got {seconds!r}"
            )
    try:
        return RetryPolicy(retries, on, float(backoff_s), float(max_backoff_s))
    except ValueError as exc:
        raise JobOptionError("retries", str(exc)) from None


def _check_key(key: Any) -> None:
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_CHARS:
        raise JobOptionError(
            "idempotency_key",
            f"idempotency_key must be a string of 1 to {MAX_KEY_CHARS} characters",
        )
    if any(c == "\x00" or "\ud800" <= c <= "\udfff" for c in key):
        raise JobOptionError(
            "idempotency_key", "idempotency_key must be plain text (no NUL, no lone surrogates)"
        )
