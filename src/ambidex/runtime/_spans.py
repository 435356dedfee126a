"""A cpu call's spans across the process boundary: recorded in the worker, ended in the caller.

Imported only while tracing is on (in the calling process) or for a call that
carries a trace context (in a worker process or a Ray task), so it may import
OpenTelemetry.

The caller sends its trace context with the pickled call; the worker attaches
it while the function runs, inside a span ``ambidex.cpu.run <function>``. The
worker records spans with an SDK ``TracerProvider`` of its own, installed on
its first traced call as the process's global provider (so spans that user
code makes with ``opentelemetry.trace.get_tracer(...)`` are recorded too),
whose one span processor keeps the spans that end while a traced call runs
in a list instead of exporting them (others are dropped). They travel back
with the call's reply as plain tuples, and the caller rebuilds them (same
trace and span ids) and hands them to the span processors of the provider
ambidex exports to: the worker needs no exporter of its own, and no span is
exported twice. A worker that dies ships nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from ambidex import _observe, _otel
from ambidex._log import get_logger

__all__ = ["adopt", "note_handed", "note_killed", "take_finished", "worker_call"]

log = get_logger(__name__)

#: Finished spans a worker keeps for one reply at most; further ones are dropped
#: (counted in ``ambidex.spans_dropped`` on the call's span, which always ships).
MAX_KEPT = 10_000

Shipped = tuple[Any, ...]
"""One finished span as plain picklable data (see ``_plain``)."""


class _Keep(SpanProcessor):
    """Keeps finished spans for the next reply instead of exporting them."""

    def __init__(self) -> None:
        self.finished: list[ReadableSpan] = []
        #: True while a traced call runs: spans that end outside one (user code's,
        #: in a call the caller did not trace) belong to no trace of the caller's.
        self.active = False
        #: The span id of the running call's own span, shipped whatever the count.
        self.call_id = 0
        self.dropped = 0  # spans past MAX_KEPT in the running call

    def on_start(self, span: Any, parent_context: otel_context.Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if not self.active:
            return
        if len(self.finished) < MAX_KEPT - 1 or span.context.span_id == self.call_id:
            self.finished.append(span)  # one place left for the call's own span
        else:
            self.dropped += 1

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


_kept: _Keep | None = None


def _worker_provider() -> _Keep:
    """Once per worker process: the provider that keeps spans, global and ambidex's."""
    global _kept
    if _kept is not None:
        return _kept
    kept = _Keep()
    provider = TracerProvider()
    provider.add_span_processor(kept)
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)  # user code's get_tracer() records here too
    _otel.setup(tracer_provider=provider)
    _kept = kept
    return kept


@contextlib.contextmanager
def worker_call(name: str, carrier: dict[str, str] | None) -> Iterator[trace.Span]:
    """In a worker: the span of one call, a child of the caller's (``carrier``).

    Tracing is on in this process while the call runs (its nested ambidex calls
    record spans too) and off again after: a later call without a trace
    context records nothing. The caller marks an error with ``_otel.fail``.
    """
    kept = _worker_provider()
    was_on = _observe.on
    _observe.on = kept.active = True
    kept.dropped = 0
    try:
        with (
            _otel.attached(carrier),
            _otel.tracer().start_as_current_span(
                f"ambidex.cpu.run {name}",
                attributes={
                    "ambidex.kind": "cpu",
                    "ambidex.function": name,
                    "ambidex.worker.pid": os.getpid(),
                },
                record_exception=False,
                set_status_on_exception=False,
            ) as current,
        ):
            kept.call_id = current.get_span_context().span_id
            try:
                yield current
            finally:
                if kept.dropped:
                    current.set_attribute("ambidex.spans_dropped", kept.dropped)
    finally:
        _observe.on = was_on
        kept.active = False


def take_finished() -> list[Shipped]:
    """The spans finished in this worker since the last reply, as plain data."""
    kept = _kept
    if kept is None or not kept.finished:
        return []
    finished, kept.finished = kept.finished, []
    return [_plain(s) for s in finished]


def _plain(span: ReadableSpan) -> Shipped:
    ctx = span.context
    assert ctx is not None
    parent = span.parent
    scope = span.instrumentation_scope
    return (
        span.name,
        ctx.trace_id,
        ctx.span_id,
        int(ctx.trace_flags),
        None if parent is None else (parent.trace_id, parent.span_id, parent.is_remote),
        span.kind.value,
        span.start_time,
        span.end_time,
        dict(span.attributes or {}),
        [(e.name, dict(e.attributes or {}), e.timestamp) for e in span.events],
        [_plain_link(link) for link in span.links],
        span.status.status_code.value,
        span.status.description,
        None if scope is None else (scope.name, scope.version, scope.schema_url),
    )


def _plain_link(link: Link) -> Shipped:
    ctx = link.context
    return (ctx.trace_id, ctx.span_id, int(ctx.trace_flags), dict(link.attributes or {}))


def _rebuild(item: Shipped, resource: Any) -> ReadableSpan:
    (
        name,
        trace_id,
        span_id,
        flags,
        parent,
        kind,
        start,
        end,
        attributes,
        events,
        links,
        code,
        description,
        scope,
    ) = item
    return ReadableSpan(
        name=name,
        context=SpanContext(trace_id, span_id, False, TraceFlags(flags)),
        parent=None if parent is None else SpanContext(parent[0], parent[1], parent[2]),
        resource=resource,
        attributes=attributes,
        events=[Event(n, a, timestamp=t) for n, a, t in events],
        links=[Link(SpanContext(t, s, True, TraceFlags(f)), a) for t, s, f, a in links],
        kind=SpanKind(kind),
        status=Status(StatusCode(code), description),
        start_time=start,
        end_time=end,
        instrumentation_scope=None if scope is None else InstrumentationScope(*scope),
    )


_dropped_warned = False


def adopt(shipped: Sequence[Shipped]) -> None:
    """In the caller: hand spans a worker shipped to ambidex's provider's span processors.

    A provider that is not the SDK's (it has no span processors to hand them
    to) drops them, with one debug log line per process.
    """
    global _dropped_warned
    if not shipped:
        return
    provider = _otel.provider()
    processor = getattr(provider, "_active_span_processor", None)
    if processor is None:
        if not _dropped_warned:
            _dropped_warned = True
            log.debug(
                "spans from cpu workers dropped: the tracer provider (%s) is not the "
                "OpenTelemetry SDK's",
                type(provider).__qualname__,
            )
        return
    resource = getattr(provider, "resource", None)
    try:
        for item in shipped:
            processor.on_end(_rebuild(item, resource))
    except Exception:  # a call's result must not be lost to its spans
        log.warning("spans from a cpu worker could not be recorded", exc_info=True)


def note_handed(queued_s: float, pid: int) -> None:
    """On the caller's span: how long the call waited for a worker, and which one took it."""
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attribute("ambidex.queue_wait_s", queued_s)
        current.set_attribute("ambidex.worker.pid", pid)


def note_killed(killed: bool) -> None:
    """On the caller's span: whether the call's timeout killed the worker running it."""
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attribute("ambidex.worker.killed", killed)
