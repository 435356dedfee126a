"""Everything of ambidex's tracing that needs OpenTelemetry; imported only when it is on.

``ambidex._observe`` is the switch (``on``) and loads this module from
``instrument()``. Here: the tracer, ``span()`` (a span that records the error
of the work it wraps), W3C context in and out (``inject`` / ``extract`` /
``attached``), the log record ids, and the default provider built from the
standard ``OTEL_*`` variables when the application set none.

Span and attribute names are listed in docs/observability.md; attributes of
ambidex's own are under ``ambidex.*``; an LLM call follows the GenAI semantic
conventions (``gen_ai.*``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from ambidex._text import (
    describe_exception,
    exception_message,
    format_traceback,
    plain_text,
    shorten,
)

__all__ = [
    "SpanKind",
    "attached",
    "extract",
    "fail",
    "inject",
    "link_to",
    "provider",
    "setup",
    "span",
    "teardown",
    "tracer",
]

_DESCRIPTION_CHARS = 1000
"""A failed span's status text is cut to this (an error message may be megabytes)."""

_EVENT_CHARS = 20_000
"""An exception event's message and stack trace are cut to about this (head and tail)."""

_tracer: trace.Tracer = trace.NoOpTracer()
_provider: Any = None


def tracer() -> trace.Tracer:
    """The tracer of ambidex's spans (instrumentation scope ``ambidex``)."""
    return _tracer


def provider() -> Any:
    """The ``TracerProvider`` ambidex's spans go to (None before ``setup``)."""
    return _provider


def setup(*, tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Point ambidex's tracer at ``tracer_provider`` (default: the global one, built if unset)."""
    global _tracer, _provider
    from importlib.metadata import PackageNotFoundError, version

    try:
        __version__ = version("ambidex")
    except PackageNotFoundError:  # a source tree on sys.path, not installed
        __version__ = "unknown"
    chosen = tracer_provider or _global_or_default_provider()
    _provider = chosen
    _tracer = chosen.get_tracer("ambidex", __version__)
    current = logging.getLogRecordFactory()
    if current is not _ids.factory:  # (a wrapper of ours left under another's adds ids too)
        _ids.factory, _ids.wrapped = _record_with_ids(current), current
        logging.setLogRecordFactory(_ids.factory)
    _ids.on = True
    _offer_metrics(meter_provider)


def teardown() -> None:
    """Stop adding ids to log records; ambidex's spans go nowhere until ``setup`` again."""
    global _tracer
    _tracer = trace.NoOpTracer()
    _ids.on = False
    # Put the factory of before back only if ours is still the one installed: a
    # factory another library installed since wraps ours, which stays (adding
    # empty ids while off) rather than that library's being thrown away.
    if _ids.factory is not None and logging.getLogRecordFactory() is _ids.factory:
        logging.setLogRecordFactory(_ids.wrapped)
        _ids.factory = _ids.wrapped = None


def _global_or_default_provider() -> Any:
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider):
        return current  # the application (or opentelemetry-instrument) set one
    built = _provider_from_env()
    trace.set_tracer_provider(built)
    return trace.get_tracer_provider()


def _provider_from_env() -> Any:
    """An SDK provider exporting where ``OTEL_TRACES_EXPORTER`` says (otlp, console, none)."""
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    attributes: dict[str, Any] = {}
    if "OTEL_SERVICE_NAME" not in os.environ and "service.name=" not in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        attributes["service.name"] = "ambidex"
    resource = Resource.create(attributes).merge(OTELResourceDetector().detect())
    # Shut down at exit by ambidex, within a bound (``_shutdown_at_exit``), not by
    # the SDK: its exporter retries an unreachable collector for up to 10 s a batch.
    built = TracerProvider(resource=resource, shutdown_on_exit=False)
    import atexit

    atexit.register(_shutdown_at_exit, built)
    names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp")
    for name in (part.strip().lower() for part in names.split(",")):
        if name in ("", "none"):
            continue
        if name == "console":
            built.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name == "otlp":
            built.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
        else:
            raise ValueError(
                f"OTEL_TRACES_EXPORTER={names!r}: ambidex builds only 'otlp', 'console' and "
                "'none'; for another exporter, set a TracerProvider before ax.instrument()"
            )
    return built


_EXIT_FLUSH_S = 3.0
"""How long a process waits at exit for its last spans to export (``OTEL_BSP_EXPORT_TIMEOUT``)."""


def _shutdown_at_exit(built: Any) -> None:
    """Export the last spans and shut ``built`` down, waiting no longer than a bound.

    The export runs in a daemon thread: when the collector is down (its retries
    back off for seconds) the process exits at the bound, and those spans are lost.
    """
    import threading

    try:
        wait_s = float(os.environ["OTEL_BSP_EXPORT_TIMEOUT"]) / 1000
    except (KeyError, ValueError):
        wait_s = _EXIT_FLUSH_S
    done = threading.Thread(target=built.shutdown, name="ambidex-otel-exit", daemon=True)
    done.start()
    done.join(wait_s)


def _otlp_exporter() -> Any:
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    if protocol.strip() == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
            OTLPSpanExporter,
        )

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    return HTTPSpanExporter()


# -- spans ---------------------------------------------------------------------------


@contextlib.contextmanager
def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    links: Sequence[Link] | None = None,
    context: otel_context.Context | None = None,
) -> Iterator[Span]:
    """A current span around the block; an error leaving it is recorded and re-raised."""
    with _tracer.start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=attributes,
        links=links,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            fail(current, exc)
            raise


def fail(current: Span, exc: BaseException, *, description: str | None = None) -> None:
    """Mark ``current`` failed by ``exc``: ERROR status, ``error.type``, an exception event."""
    if not current.is_recording():
        return
    if description is not None:  # a caller's text: what an exporter can encode
        description = plain_text(description)[:_DESCRIPTION_CHARS]
    import asyncio

    if isinstance(exc, asyncio.CancelledError):
        current.set_attribute("error.type", "cancelled")
        current.set_status(Status(StatusCode.ERROR, description or "cancelled"))
        return
    current.set_attribute("error.type", type(exc).__qualname__)
    text = description or describe_exception(exc)
    if len(text) > _DESCRIPTION_CHARS:
        text = text[: _DESCRIPTION_CHARS - 1] + "…"
    current.set_status(Status(StatusCode.ERROR, text))
    # The event's message and stack trace as text an exporter can encode (a lone
    # surrogate fails UTF-8: the attribute is dropped) and of bounded size (one
    # megabyte message would make every span of its batch wait on, or the batch
    # be dropped for, a request over the collector's limit).
    attributes = {
        "exception.message": shorten(exception_message(exc), _EVENT_CHARS),
        "exception.stacktrace": shorten(plain_text(format_traceback(exc)), _EVENT_CHARS),
    }
    with contextlib.suppress(Exception):  # an exception whose str() raises
        current.record_exception(exc, attributes)


# -- context across hops -------------------------------------------------------------


def inject(context: otel_context.Context | None = None) -> dict[str, str] | None:
    """The current (or given) trace context as W3C headers; None when there is none."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return carrier or None


def extract(carrier: Mapping[str, str] | None) -> otel_context.Context:
    """The context ``inject`` wrote (an empty one for None or a malformed carrier)."""
    if not carrier:
        return otel_context.Context()
    return propagate.extract(dict(carrier))


@contextlib.contextmanager
def attached(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Within the block, the current context is the one ``carrier`` holds."""
    token = otel_context.attach(extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


def link_to(carrier: Mapping[str, str] | None) -> list[Link]:
    """A link to the span ``carrier`` names (none for an empty or invalid one)."""
    remote = trace.get_current_span(extract(carrier)).get_span_context()
    return [Link(remote)] if remote.is_valid else []


# -- logs ----------------------------------------------------------------------------


def current_ids() -> tuple[str, str]:
    """Hex trace and span ids of the current span, or two empty strings."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return "", ""
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


class _Ids:
    """The log record factory ambidex installed, and whether it adds ids (tracing on)."""

    factory: Any = None
    wrapped: Any = None  # the factory ``factory`` wraps
    on = False


_ids = _Ids()


def _record_with_ids(factory: Any) -> Any:
    """A log record factory adding ``trace_id`` and ``span_id`` (empty outside a span or off)."""

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = factory(*args, **kwargs)
        record.trace_id, record.span_id = current_ids() if _ids.on else ("", "")
        return record

    return make


# -- metrics -------------------------------------------------------------------------

_meter_provider: Any = None


def meter_provider() -> Any:
    """The ``MeterProvider`` given to ``instrument()`` (None: the global one is used)."""
    return _meter_provider


def _offer_metrics(chosen: Any) -> None:
    """Give ``chosen`` (None: the global provider) the metrics of every registered source."""
    global _meter_provider
    from ambidex import _observe

    _meter_provider = chosen
    for register in list(_observe.metric_sources):
        register(chosen)
