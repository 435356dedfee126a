"""Tracing the runtime: one span per call, and the trace context across every hop.

A sync caller's span reaches the loop thread, a blocking call's I/O thread and a
cpu call's worker process, whose spans travel back to this process's exporter
(the ``spans`` fixture). Tracing off, nothing imports OpenTelemetry.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import ambidex as ax
from ambidex.exceptions import TaskTimeoutError, WorkerCrashedError

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")

from opentelemetry import trace
from opentelemetry.trace import StatusCode

from _otel import by_name, is_ancestor, one, parent_of, tree

ROOT = Path(__file__).resolve().parents[2]

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


@ax.io
async def seen_by_coroutine() -> tuple[str, int]:
    return request_id.get(), trace.get_current_span().get_span_context().span_id


@ax.blocking
def seen_by_thread() -> tuple[int, int, str]:
    ctx = trace.get_current_span().get_span_context()
    return ctx.trace_id, ctx.span_id, threading.current_thread().name


@ax.cpu
def in_worker(x: int) -> int:
    tracer = trace.get_tracer("user-code")
    with tracer.start_as_current_span("user work") as span:
        span.set_attribute("x", x)
        return x + 1


@ax.cpu
def fails_in_worker() -> None:
    raise KeyError("missing")


@ax.cpu(timeout_s=0.3)
def sleeps_in_worker(seconds: float) -> None:
    time.sleep(seconds)


@ax.cpu
def kills_its_worker() -> None:
    os._exit(3)


def _tracer() -> trace.Tracer:
    return trace.get_tracer("test")


def _ending(finished: Any, suffix: str) -> Any:
    """The one span whose name ends with ``suffix`` (a function defined in a test)."""
    found = [s for s in finished if s.name.endswith(suffix)]
    assert len(found) == 1, tree(finished)
    return found[0]


def test_a_sync_call_carries_the_callers_span_and_context_variables_to_the_loop(
    spans: Any,
) -> None:
    token = request_id.set("req-7")
    try:
        with _tracer().start_as_current_span("caller") as caller:
            seen, span_id_inside = seen_by_coroutine()
    finally:
        request_id.reset(token)
    assert seen == "req-7"
    finished = spans.get_finished_spans()
    call = one(finished, "ambidex.io seen_by_coroutine")
    assert call.parent is not None
    assert call.parent.span_id == caller.get_span_context().span_id, tree(finished)
    assert span_id_inside == call.context.span_id  # the call's span is current inside
    assert call.attributes["ambidex.kind"] == "io"
    assert call.attributes["ambidex.function"] == "seen_by_coroutine"
    assert call.attributes["ambidex.attempts"] == 1


def test_a_sync_call_from_another_thread_with_its_own_span_is_that_spans_child(
    spans: Any,
) -> None:
    results: list[tuple[str, int]] = []

    def caller_thread() -> None:
        with _tracer().start_as_current_span("thread caller"):
            request_id.set("from-thread")
            results.append(seen_by_coroutine())

    thread = threading.Thread(target=caller_thread)
    thread.start()
    thread.join(10)
    assert results == [("from-thread", results[0][1])]
    finished = spans.get_finished_spans()
    caller = one(finished, "thread caller")
    call = one(finished, "ambidex.io seen_by_coroutine")
    assert parent_of(call, finished) is caller, tree(finished)


def test_a_blocking_call_sees_its_own_span_as_current_on_its_io_thread(spans: Any) -> None:
    with _tracer().start_as_current_span("caller"):
        trace_id, span_id, thread_name = seen_by_thread()
    assert thread_name.startswith("ambidex-io")
    finished = spans.get_finished_spans()
    call = one(finished, "ambidex.blocking seen_by_thread")
    assert (trace_id, span_id) == (call.context.trace_id, call.context.span_id)
    assert parent_of(call, finished) is one(finished, "caller"), tree(finished)
    assert call.attributes["ambidex.queue_wait_s"] >= 0.0


def test_a_cpu_calls_worker_spans_come_back_into_the_callers_trace(spans: Any) -> None:
    with _tracer().start_as_current_span("caller"):
        assert in_worker(41) == 42
    finished = spans.get_finished_spans()
    caller = one(finished, "caller")
    call = one(finished, "ambidex.cpu in_worker")
    run = one(finished, "ambidex.cpu.run in_worker")
    user = one(finished, "user work")
    assert parent_of(call, finished) is caller, tree(finished)
    assert parent_of(run, finished) is call, tree(finished)
    assert parent_of(user, finished) is run, tree(finished)
    assert {s.context.trace_id for s in (caller, call, run, user)} == {caller.context.trace_id}
    assert run.attributes["ambidex.worker.pid"] != os.getpid()
    assert run.attributes["ambidex.worker.pid"] == call.attributes["ambidex.worker.pid"]
    assert user.attributes["x"] == 41
    assert user.instrumentation_scope is not None
    assert user.instrumentation_scope.name == "user-code"
    assert call.attributes["ambidex.queue_wait_s"] >= 0.0
    # the worker ran the call inside the caller's span's time
    assert call.start_time <= run.start_time <= run.end_time <= call.end_time


def test_a_cpu_calls_error_is_on_both_its_spans(spans: Any) -> None:
    with pytest.raises(KeyError):
        fails_in_worker()
    finished = spans.get_finished_spans()
    for name in ("ambidex.cpu fails_in_worker", "ambidex.cpu.run fails_in_worker"):
        span = one(finished, name)
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "KeyError"
    run = one(finished, "ambidex.cpu.run fails_in_worker")
    assert [e.name for e in run.events] == ["exception"]


def test_a_map_makes_one_span_per_call_under_the_callers_span(spans: Any) -> None:
    with _tracer().start_as_current_span("caller"):
        assert in_worker.map([1, 2, 3]) == [2, 3, 4]
    finished = spans.get_finished_spans()
    caller = one(finished, "caller")
    calls = by_name(finished, "ambidex.cpu in_worker")
    runs = by_name(finished, "ambidex.cpu.run in_worker")
    assert len(calls) == len(runs) == len(by_name(finished, "user work")) == 3
    assert all(parent_of(c, finished) is caller for c in calls), tree(finished)
    assert {parent_of(r, finished) for r in runs} == set(calls), tree(finished)


def test_retries_are_events_on_the_calls_span(spans: Any) -> None:
    attempts = []

    @ax.io(retries=3, backoff_s=0.0, retry_on=ConnectionError)
    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError(f"refused {len(attempts)}")
        return "ok"

    assert flaky() == "ok"
    call = _ending(spans.get_finished_spans(), ".flaky")
    assert call.status.status_code is StatusCode.UNSET
    assert call.attributes["ambidex.attempts"] == 3
    retries = [e for e in call.events if e.name == "retry"]
    assert [e.attributes["ambidex.attempt"] for e in retries] == [1, 2]
    assert {e.attributes["error.type"] for e in retries} == {"ConnectionError"}
    assert "refused 1" in retries[0].attributes["exception.message"]
    assert retries[0].attributes["ambidex.delay_s"] == 0.0


def test_a_limit_waited_on_is_timed_on_the_calls_span(spans: Any) -> None:
    ax.limits(traced_slot=1)
    release = threading.Event()

    @ax.blocking(limit="traced_slot")
    def holds() -> None:
        release.wait(5)

    @ax.io(limit="traced_slot")
    async def waits() -> None:
        return None

    async def both() -> None:
        first = asyncio.create_task(holds.aio())
        await asyncio.sleep(0.05)
        second = asyncio.create_task(waits.aio())
        await asyncio.sleep(0.1)
        release.set()
        await asyncio.gather(first, second)

    ax.current_runtime().call(both())
    finished = spans.get_finished_spans()
    waited = _ending(finished, ".waits")
    assert tuple(waited.attributes["ambidex.limits"]) == ("traced_slot",)
    assert waited.attributes["ambidex.limit.wait_s"] >= 0.05
    assert _ending(finished, ".holds").attributes["ambidex.limit.wait_s"] < 0.05


def test_a_cpu_timeout_is_an_error_on_the_span_with_the_worker_killed(spans: Any) -> None:
    with pytest.raises(TaskTimeoutError):
        sleeps_in_worker(10)
    finished = spans.get_finished_spans()
    call = one(finished, "ambidex.cpu sleeps_in_worker")
    assert call.status.status_code is StatusCode.ERROR
    assert call.attributes["error.type"] == "TaskTimeoutError"
    assert call.attributes["ambidex.timeout_s"] == 0.3
    assert call.attributes["ambidex.worker.killed"] is True
    assert not by_name(finished, "ambidex.cpu.run*")  # a killed worker ships nothing


def test_a_blocking_timeout_is_an_error_on_the_span(spans: Any) -> None:
    @ax.blocking(timeout_s=0.05)
    def stuck() -> None:
        time.sleep(0.3)

    with pytest.raises(TaskTimeoutError):
        stuck()
    call = _ending(spans.get_finished_spans(), ".stuck")
    assert call.status.status_code is StatusCode.ERROR
    assert call.attributes["error.type"] == "TaskTimeoutError"
    assert call.attributes["ambidex.timeout_s"] == 0.05
    assert "ambidex.worker.killed" not in call.attributes


def test_a_worker_crash_is_an_error_on_the_calls_span(spans: Any) -> None:
    with _tracer().start_as_current_span("caller"):
        with pytest.raises(WorkerCrashedError):
            kills_its_worker()
        assert in_worker(1) == 2  # the next call gets a fresh worker, traced as before
    finished = spans.get_finished_spans()
    call = one(finished, "ambidex.cpu kills_its_worker")
    assert call.status.status_code is StatusCode.ERROR
    assert call.attributes["error.type"] == "WorkerCrashedError"
    assert not by_name(finished, "ambidex.cpu.run kills_its_worker")
    assert is_ancestor(one(finished, "caller"), one(finished, "user work"), finished)


def test_a_worker_traces_only_the_calls_that_carry_a_trace_context(
    spans: Any, fresh_runtime: ax.Runtime
) -> None:
    in_worker(1)
    from ambidex import _observe

    _observe.uninstrument()
    spans.clear()
    assert in_worker(2) == 3  # same worker, tracing off here: it records nothing
    _observe.instrument()
    assert in_worker(3) == 4
    finished = spans.get_finished_spans()
    assert [s.attributes["x"] for s in by_name(finished, "user work")] == [3], tree(finished)
    assert fresh_runtime.statistics().cpu_workers.started == 1  # type: ignore[union-attr]


_UNTRACED = """
import json, sys
import ambidex as ax

@ax.io
async def a(x):
    return x

@ax.blocking
def b(x):
    return x

@ax.cpu
def c(x):
    import sys
    return sorted(m for m in sys.modules if m.startswith("opentelemetry"))

with ax.Runtime(cpu_workers=1, io_threads=2):
    assert a(1) == 1 and b(2) == 2 and a.map([1, 2]) == [1, 2]
    in_worker = c(3)
print(json.dumps({
    "here": sorted(m for m in sys.modules if m.startswith("opentelemetry")),
    "worker": in_worker,
}))
"""


def test_tracing_off_imports_no_opentelemetry_here_or_in_a_worker() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMBIDEX_", "OTEL_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", _UNTRACED],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found == {"here": [], "worker": []}


def test_every_thread_path_sees_the_callers_span_and_context_variables(spans: Any) -> None:
    def seen() -> tuple[str, int]:
        return request_id.get(), trace.get_current_span().get_span_context().span_id

    async def offload_every_way() -> list[tuple[str, int]]:
        request_id.set("offloaded")
        with _tracer().start_as_current_span("async caller") as caller:
            got = [
                await ax.to_thread(seen),
                await ax.to_reserved_thread(seen),
                await ax.to_elastic_thread(seen),
            ]
            with ax.elastic_threads():
                got.append(await ax.to_thread(seen))
        mine = caller.get_span_context().span_id
        return [(value, int(span_id == mine)) for value, span_id in got]

    assert asyncio.run(offload_every_way()) == [("offloaded", 1)] * 4


def test_a_cpu_call_awaited_on_another_loop_keeps_the_callers_trace(spans: Any) -> None:
    async def caller() -> int:
        with _tracer().start_as_current_span("async caller"):
            return await in_worker.aio(5)

    assert asyncio.run(caller()) == 6
    finished = spans.get_finished_spans()
    call = one(finished, "ambidex.cpu in_worker")
    assert parent_of(call, finished) is one(finished, "async caller"), tree(finished)
    assert parent_of(one(finished, "user work"), finished) is one(
        finished, "ambidex.cpu.run in_worker"
    ), tree(finished)
