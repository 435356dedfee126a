"""A job's trace: its submit's context stored with it, and each attempt's span continuing it.

In one process here (store, desk, worker); across processes (HTTP submit, an
``ambidex worker`` subprocess) in ``tests/server/test_job_tracing_http.py``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from _waiting import await_for
from ambidex.jobs import JobContext, JobDesk, JobStore, JobWorker, WorkloadRegistry
from ambidex.jobs._records import NewJob

POLL_S = 0.02


def _traceparent(span: Any) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def _stored(store: JobStore, job_id: str) -> str | None:
    """The ``trace_context`` column as the database holds it (not as ``Job`` reads it)."""
    with store.engines.read.connect() as conn:
        return conn.execute(
            text("SELECT trace_context FROM ambidex_jobs WHERE id = :i"), {"i": job_id}
        ).scalar_one()


def test_every_submit_path_stores_the_current_trace_context(store: JobStore, spans: Any) -> None:
    from opentelemetry import trace

    with trace.get_tracer("tests").start_as_current_span("request") as root:
        parent = _traceparent(root)
        jobs = [
            store.submit("echo", {"n": 1}),
            store.submit("echo", {"n": 2}, idempotency_key="k"),
            *store.submit_many("echo", [{"n": 3}]),
        ]
        batch = store.submit_batch([NewJob("echo", {"n": 4})])
        jobs += [s.job for s in batch if not isinstance(s, ValueError)]
        jobs += [s.job for s in store.submit_all([NewJob("echo", {"n": 5}, idempotency_key="j")])]
    assert len(jobs) == 5
    for job in jobs:
        stored = _stored(store, job.id)
        assert stored is not None, job
        assert json.loads(stored) == {"traceparent": parent}
        read = store.get(job.id)
        assert read is not None
        assert read.trace_context == stored == job.trace_context


async def test_the_desk_stores_each_submits_own_context(
    store: JobStore, registry: WorkloadRegistry, spans: Any
) -> None:
    # The desk's submits are written together (a group commit, or the PostgreSQL hot
    # path on the loop): each job keeps the context of the request that submitted it.
    from opentelemetry import trace

    tracer = trace.get_tracer("tests")

    async def submit(n: int) -> tuple[str, list[str]]:
        with tracer.start_as_current_span(f"request {n}") as root:
            one = await desk.submit("step", {"x": n})
            keyed = await desk.submit("step", {"x": n}, idempotency_key=f"k{n}")
            batch = await desk.submit_batch(
                [{"workload": "step", "input": {"x": n}}, {"workload": "flaky"}]
            )
            return _traceparent(root), [one.id, keyed.id, *(s.job.id for s in batch)]

    async with JobDesk(store, registry, poll_s=POLL_S) as desk:
        answers = await asyncio.gather(*(submit(n) for n in range(4)))
    for parent, ids in answers:
        for job_id in ids:
            assert json.loads(_stored(store, job_id) or "") == {"traceparent": parent}


def test_with_tracing_off_a_submit_stores_no_context(store: JobStore) -> None:
    from opentelemetry import trace

    # Even inside an application's own span: ambidex's tracing is off.
    with trace.get_tracer("tests").start_as_current_span("request"):
        job = store.submit("echo", {})
        keyed = store.submit_all([NewJob("echo", {}, idempotency_key="k")])[0].job
    assert _stored(store, job.id) is None
    assert _stored(store, keyed.id) is None


@pytest.mark.parametrize(
    "carrier",
    [
        {"traceparent": "garbage"},
        {"traceparent": "00-" + "0" * 32 + "-" + "1" * 16 + "-01"},  # an invalid (zero) trace id
        {"traceparent": "00-" + "a" * 32 + "-" + "0" * 16 + "-01"},  # an invalid (zero) span id
        {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01\x00"},
        {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01" + "x" * 100_000},
        {"traceparent": 12},  # type: ignore[dict-item]
        {"baggage": "user=secret"},
    ],
)
def test_a_malformed_trace_context_is_dropped_never_refused(
    sqlite_store: JobStore, carrier: dict[str, str]
) -> None:
    [answer] = sqlite_store.submit_batch([NewJob("echo", {}, trace_context=carrier)])
    assert not isinstance(answer, ValueError)
    assert _stored(sqlite_store, answer.job.id) is None


def test_only_traceparent_and_a_bounded_tracestate_are_stored(sqlite_store: JobStore) -> None:
    parent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    given = [
        {"traceparent": parent, "tracestate": "k=v", "baggage": "user=secret"},
        {"traceparent": parent, "tracestate": "k=" + "v" * 600},
        {"traceparent": parent, "tracestate": "k=v\x00"},
    ]
    answers = sqlite_store.submit_batch([NewJob("echo", {}, trace_context=c) for c in given])
    stored = [json.loads(_stored(sqlite_store, a.job.id) or "") for a in answers]  # type: ignore[union-attr]
    assert stored == [
        {"traceparent": parent, "tracestate": "k=v"},
        {"traceparent": parent},
        {"traceparent": parent},
    ]


def test_a_store_made_before_the_trace_column_gets_it_and_keeps_its_jobs(
    store: JobStore, spans: Any
) -> None:
    old = store.submit("echo", {"n": 1})
    with store.engines.write.begin() as conn:
        conn.execute(text("ALTER TABLE ambidex_jobs DROP COLUMN trace_context"))
    target = store.url
    store.close()
    from opentelemetry import trace

    with JobStore(target) as again:  # upgraded in place
        kept = again.get(old.id)
        assert kept is not None
        assert kept.input == {"n": 1}
        assert kept.trace_context is None
        with trace.get_tracer("tests").start_as_current_span("request"):
            new = again.submit("echo", {"n": 2})
        assert _stored(again, new.id) is not None
        claimed = again.claim("w1", lease_s=30, limit=10)
        assert {j.id for j in claimed} == {old.id, new.id}
        assert {j.id: j.trace_context is not None for j in claimed} == {old.id: False, new.id: True}


def test_sqlite_file_of_the_previous_release_opens(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite"
    with JobStore(db) as store:
        job = store.submit("echo", {"n": 1})
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE ambidex_jobs DROP COLUMN trace_context")
    conn.commit()
    conn.close()
    with JobStore(db) as store:
        assert store.get(job.id) is not None
        cols = [r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(ambidex_jobs)")]
        assert "trace_context" in cols


# -- the worker's span of each attempt -----------------------------------------------------


async def step(x: int = 1) -> int:
    from opentelemetry import trace

    with trace.get_tracer("tests").start_as_current_span("user step"):
        await asyncio.sleep(0)
    return x


async def flaky(ctx: JobContext) -> int:
    if ctx.attempt == 1:
        raise ConnectionError("the first attempt hangs up")
    return ctx.attempt


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


async def explode() -> None:
    raise _Unprintable()


async def hold(ctx: JobContext) -> str:
    await asyncio.sleep(30)
    return "held"


async def slow() -> None:
    await asyncio.sleep(30)


@pytest.fixture
def registry() -> WorkloadRegistry:
    reg = WorkloadRegistry()
    reg.register(step)
    reg.register(flaky, retries=1, retry_backoff_s=0.01)
    reg.register(explode)
    reg.register(hold)
    reg.register(slow, timeout_s=0.05)
    return reg


async def test_each_attempt_is_a_consumer_span_in_its_submits_trace(
    sqlite_store: JobStore, registry: WorkloadRegistry, spans: Any
) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, StatusCode

    from _otel import one, parent_of, tree

    async with JobDesk(sqlite_store, registry, poll_s=POLL_S) as desk:
        with trace.get_tracer("tests").start_as_current_span("request"):
            ok = await desk.submit("step", {"x": 3})
            retried = await desk.submit("flaky")
            failed = await desk.submit("explode")
            timed_out = await desk.submit("slow")
        worker = JobWorker(sqlite_store, registry, poll_s=POLL_S, worker_id="w-1")
        async with asyncio.timeout(10):
            await worker.run_until_idle()
    finished = spans.get_finished_spans()
    shown = tree(finished)
    request = one(finished, "request")
    job_spans = [s for s in finished if s.name.startswith("ambidex.job ")]
    assert len(job_spans) == 5, shown  # flaky ran twice
    for s in job_spans:
        assert s.kind is SpanKind.CONSUMER
        assert parent_of(s, finished) is request, shown
        assert [link.context.span_id for link in s.links] == [request.context.span_id]
        assert s.attributes["ambidex.worker.id"] == "w-1"
        assert s.attributes["ambidex.job.queue_wait_s"] >= 0
    # the job's own spans are children of its attempt's span
    good = one(finished, "ambidex.job step")
    assert good.attributes["ambidex.job.id"] == ok.id
    assert good.attributes["ambidex.job.workload"] == "step"
    assert good.attributes["ambidex.job.attempt"] == 1
    assert good.attributes["ambidex.job.outcome"] == "succeeded"
    assert good.status.status_code is StatusCode.UNSET
    call = parent_of(one(finished, "user step"), finished)  # the workload's own @ax.io span
    assert call is not None, shown
    assert call.name == "ambidex.io step", shown
    assert parent_of(call, finished) is good, shown
    # a failure that is retried: an ERROR attempt with a retry event, then the one that worked
    first, second = sorted(
        (s for s in job_spans if s.name == "ambidex.job flaky"),
        key=lambda s: s.attributes["ambidex.job.attempt"],
    )
    assert first.attributes["ambidex.job.id"] == second.attributes["ambidex.job.id"] == retried.id
    assert first.attributes["ambidex.job.outcome"] == "retrying"
    assert first.status.status_code is StatusCode.ERROR
    assert first.status.description == "ConnectionError: the first attempt hangs up"
    assert first.attributes["error.type"] == "ConnectionError"
    [retry] = [e for e in first.events if e.name == "retry"]
    assert retry.attributes["ambidex.job.retry"] == 1
    assert 0 <= retry.attributes["ambidex.job.retry_in_s"] <= 0.01
    assert second.attributes["ambidex.job.outcome"] == "succeeded"
    # a failure: the error the record keeps, even for an exception whose str() raises
    bad = one(finished, "ambidex.job explode")
    record = sqlite_store.get(failed.id)
    assert record is not None
    assert record.error
    assert bad.status.status_code is StatusCode.ERROR
    assert bad.status.description == record.error
    assert bad.attributes["error.type"] == "_Unprintable"
    [exc] = [e for e in bad.events if e.name == "exception"]
    assert exc.attributes["exception.message"] == record.error
    assert "Traceback" in str(exc.attributes["exception.stacktrace"])
    # a timeout
    late = one(finished, "ambidex.job slow")
    assert late.attributes["ambidex.job.id"] == timed_out.id
    assert late.attributes["ambidex.job.outcome"] == "timed_out"
    assert late.attributes["error.type"] == "TimeoutError"
    assert late.status.description == "timed out after 0.05 s (the work was stopped)"


async def test_a_job_submitted_untraced_starts_a_trace_of_its_own(
    sqlite_store: JobStore, registry: WorkloadRegistry, spans: Any
) -> None:
    from opentelemetry import trace

    from _otel import one

    job = sqlite_store.submit("step", {"x": 1})  # tracing on, but no span to continue
    assert job.trace_context is None
    # Its span is a root, not a child of whatever was current where the worker runs.
    with trace.get_tracer("tests").start_as_current_span("worker start"):
        worker = JobWorker(sqlite_store, registry, poll_s=POLL_S)
        async with asyncio.timeout(10):
            await worker.run_until_idle()
    span = one(spans.get_finished_spans(), "ambidex.job step")
    assert span.parent is None
    assert not span.links


async def test_a_lost_lease_shows_on_the_attempts_span(
    sqlite_store: JobStore, registry: WorkloadRegistry, spans: Any
) -> None:
    from opentelemetry.trace import StatusCode

    from _otel import one

    job = sqlite_store.submit("hold", {})
    async with JobWorker(sqlite_store, registry, lease_s=0.3, poll_s=POLL_S) as worker:
        assert await await_for(lambda: worker.running_here == 1)
        # Another worker took the job (this one's lease lapsed, say): the next renewal
        # finds it gone and stops the attempt, writing nothing.
        with sqlite_store.engines.write.begin() as conn:
            conn.execute(
                text(
                    "UPDATE ambidex_jobs SET worker = 'someone-else', "
                    "lease_expires_at = lease_expires_at + 3600 WHERE id = :i"
                ),
                {"i": job.id},
            )
        assert await await_for(lambda: worker.running_here == 0, timeout_s=5)
    span = one(spans.get_finished_spans(), "ambidex.job hold")
    assert span.attributes["ambidex.job.lease_lost"] is True
    assert span.attributes["ambidex.job.outcome"] == "lease_lost"
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["lease_lost"]


async def test_a_cancel_and_a_shutdown_show_on_the_attempts_span(
    sqlite_store: JobStore, registry: WorkloadRegistry, spans: Any
) -> None:
    from opentelemetry.trace import StatusCode

    from _otel import one
    from ambidex.jobs import JobManager

    async with JobManager(sqlite_store, registry, lease_s=5.0, poll_s=POLL_S) as m:
        cancelled = await m.submit("hold")
        kept = await m.submit("slow", timeout_s=30)
        assert await await_for(lambda: m.running_here == 2)
        await m.cancel(cancelled.id)
        assert await await_for(lambda: m.running_here == 1)
    # the manager stopped with "slow" running: that attempt went back to the queue
    finished = spans.get_finished_spans()
    stopped = one(finished, "ambidex.job hold")
    assert stopped.attributes["ambidex.job.outcome"] == "cancelled"
    assert stopped.attributes["error.type"] == "cancelled"
    assert stopped.status.status_code is StatusCode.ERROR
    assert stopped.status.description == "cancelled by request"
    shut = one(finished, "ambidex.job slow")
    assert shut.attributes["ambidex.job.id"] == kept.id
    assert shut.attributes["ambidex.job.outcome"] == "shutdown"
    assert shut.status.status_code is StatusCode.UNSET
    assert [e.name for e in shut.events] == ["shutdown"]
