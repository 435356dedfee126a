"""Shared fixtures: every test gets a fresh default runtime, closed after it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import ambidex as ax


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first: started last, a 20 s benchmark run would be the suite's tail.

    (pytest-xdist's worksteal gives the first worker the head of this order; while it
    runs the slow ones, the others take over the rest of its share.)
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def fresh_runtime() -> Iterator[ax.Runtime]:
    """A new default runtime per test (small pools keep tests quick), closed afterwards."""
    with ax.Runtime(io_threads=8, cpu_workers=2) as rt:
        yield rt


@pytest.fixture
def spans() -> Iterator[Any]:
    """Tracing on for one test; yields the in-memory exporter its finished spans go to.

    The process's global ``TracerProvider`` is set once (OpenTelemetry allows one), with
    a ``SimpleSpanProcessor`` so spans are exported as they end; each test starts with
    an empty exporter and ends with tracing off.
    """
    pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")
    from _otel import exporter
    from ambidex import _observe

    memory = exporter()
    memory.clear()
    _observe.instrument()
    try:
        yield memory
    finally:
        _observe.uninstrument()
        memory.clear()
