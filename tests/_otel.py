"""The test process's one OpenTelemetry provider, exporting to memory (``spans`` fixture)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

_exporter: InMemorySpanExporter | None = None


def exporter() -> InMemorySpanExporter:
    """The in-memory exporter behind the global provider (set on first use)."""
    global _exporter
    if _exporter is None:
        _exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        trace.set_tracer_provider(provider)
    return _exporter


def by_name(spans: Iterable[ReadableSpan], name: str) -> list[ReadableSpan]:
    """The spans called ``name`` (exact) or, for a name ending in ``*``, starting with it."""
    if name.endswith("*"):
        return [s for s in spans if s.name.startswith(name[:-1])]
    return [s for s in spans if s.name == name]


def one(spans: Iterable[ReadableSpan], name: str) -> ReadableSpan:
    """The only span called ``name``; fails listing what there is otherwise."""
    found = by_name(spans, name)
    assert len(found) == 1, f"{len(found)} spans named {name!r} in {[s.name for s in spans]}"
    return found[0]


def parent_of(child: ReadableSpan, spans: Sequence[ReadableSpan]) -> ReadableSpan | None:
    """The span (among ``spans``) that is ``child``'s parent."""
    if child.parent is None:
        return None
    for s in spans:
        if s.context.span_id == child.parent.span_id:
            return s
    return None


def is_ancestor(ancestor: ReadableSpan, child: ReadableSpan, spans: Sequence[ReadableSpan]) -> bool:
    """Whether ``ancestor`` is on ``child``'s chain of parents (same trace)."""
    current: ReadableSpan | None = child
    while current is not None:
        current = parent_of(current, spans)
        if current is ancestor or (
            current is not None and current.context.span_id == ancestor.context.span_id
        ):
            return True
    return False


def tree(spans: Sequence[ReadableSpan]) -> str:
    """The spans as an indented tree, for assertion messages."""
    children: dict[Any, list[ReadableSpan]] = {}
    for s in spans:
        children.setdefault(s.parent.span_id if s.parent else None, []).append(s)
    ids = {s.context.span_id for s in spans}
    lines: list[str] = []

    def walk(s: ReadableSpan, depth: int) -> None:
        lines.append("  " * depth + f"{s.name} [{s.status.status_code.name}]")
        for c in sorted(children.get(s.context.span_id, []), key=lambda c: c.start_time or 0):
            walk(c, depth + 1)

    for root in spans:
        if root.parent is None or root.parent.span_id not in ids:
            walk(root, 0)
    return "\n".join(lines)
