"""The runtime's OpenTelemetry metrics: observable instruments read from the same counters."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ambidex as ax

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from ambidex import _observe

ROOT = Path(__file__).resolve().parents[2]


@ax.blocking(limit="one")
def nap_in_one(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], float]]]:
    """Each ambidex instrument's data points now: name -> [(attributes, value)]."""
    found: dict[str, list[tuple[dict[str, Any], float]]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            if scope.scope.name != "ambidex":
                continue
            for metric in scope.metrics:
                found[metric.name] = [
                    (dict(p.attributes or {}), p.value)  # type: ignore[union-attr]
                    for p in metric.data.data_points
                ]
    return found


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    """Tracing on (spans to the tests' in-memory exporter) with a meter provider of its own."""
    from _otel import exporter

    exporter()  # the global tracer provider: in memory, never the OTLP default
    memory = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[memory])
    _observe.instrument(meter_provider=provider)
    try:
        yield memory
    finally:
        _observe.uninstrument()
        provider.shutdown()


def test_instrument_gives_the_meter_provider_the_runtime_metrics(
    reader: InMemoryMetricReader, fresh_runtime: ax.Runtime
) -> None:
    fresh_runtime.limits(one=1)
    nap_in_one.map([0.1, 0.1])  # one of them waits for the limit
    found = points(reader)
    calls = {
        (a["ambidex.kind"], a["ambidex.outcome"]): v for a, v in found["ambidex.runtime.calls"]
    }
    assert calls[("blocking", "succeeded")] == 2
    assert calls[("io", "failed")] == 0
    assert found["ambidex.runtime.limit.waits"] == [({"ambidex.limit": "one"}, 1)]
    [(attributes, wait_s)] = found["ambidex.runtime.limit.wait"]
    assert attributes == {"ambidex.limit": "one"}
    assert 0.05 < wait_s < 1.0
    assert found["ambidex.runtime.limit.capacity"] == [({"ambidex.limit": "one"}, 1)]
    assert found["ambidex.runtime.io.queue.waits"] == [({}, 0)]
    assert found["ambidex.runtime.cpu.worker.crashes"] == [({}, 0)]
    assert {a["ambidex.kind"] for a, _ in found["ambidex.runtime.retries"]} == {
        "io",
        "blocking",
        "cpu",
    }


def test_runtime_imported_after_instrument_still_offers_its_metrics() -> None:
    # AMBIDEX_OTEL=1 turns tracing on while ``import ambidex`` runs, before the runtime
    # package exists; importing it later must still give the global meter provider
    # its instruments.
    script = textwrap.dedent(
        """
        import sys
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        import ambidex as ax
        from ambidex import _observe
        assert _observe.on and "ambidex.runtime" not in sys.modules

        @ax.blocking
        def add(a, b):
            return a + b

        assert add(1, 2) == 3
        data = reader.get_metrics_data()
        names = {
            m.name: [p.value for p in m.data.data_points]
            for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics
        }
        print(sorted(names["ambidex.runtime.calls"]))
        """
    )
    env = {
        **os.environ,
        "AMBIDEX_OTEL": "1",
        "OTEL_TRACES_EXPORTER": "none",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    }
    env.pop("AMBIDEX_IN_WORKER", None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "[0, 0, 0, 0, 0, 1]"
