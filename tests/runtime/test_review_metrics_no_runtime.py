"""A metrics collection reads the runtime there is; it never starts one.

The OpenTelemetry instruments' callbacks run on the meter provider's thread, at
every collection and a last time when the provider shuts down at exit, after
ambidex closed its runtime: they called ``current_runtime()``, which made a new
runtime (never closed) just to report it idle.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from ambidex import _observe
from ambidex.runtime import _core


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    from _otel import exporter

    exporter()  # the global tracer provider: in memory, never the OTLP default
    memory = InMemoryMetricReader()
    _observe.instrument(meter_provider=MeterProvider(metric_readers=[memory]))
    try:
        yield memory
    finally:
        _observe.uninstrument()


def test_a_collection_without_a_runtime_makes_none(
    reader: InMemoryMetricReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _core.current_runtime()
    assert reader.get_metrics_data() is not None
    monkeypatch.setattr(_core, "_current", None)  # as after the runtime's close at exit
    try:
        reader.get_metrics_data()
        made = _core._current
        assert made is None, "the collection created a runtime"
    finally:
        if _core._current is not None and _core._current is not before:
            _core._current.close()
