"""The runtime's metrics, read from its counters when scraped: Prometheus and OpenTelemetry.

The runtime counts as it works (``CallCounters``, the pools' and limits'
``WaitHistogram``, the cpu backend's crash and kill counts) with nothing of
either metrics library on a call's path; the two exporters here turn the same
numbers into metrics at collection time.

``RuntimeCollector`` is a Prometheus collector of the current runtime; the job
service's registry (``ambidex serve``'s ``/metrics``, ``ambidex worker
--metrics-port``) holds one beside the jobs' metrics, and a library user
registers one in a registry of their own::

    from prometheus_client import REGISTRY, start_http_server
    REGISTRY.register(ax.RuntimeCollector())
    start_http_server(9100)

``register_otel_metrics`` creates observable OpenTelemetry instruments reading
the same numbers; ``ax.instrument()`` calls it with its ``meter_provider`` (or
the global one). Names and meanings: docs/observability.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ambidex.runtime._histogram import WaitHistogram
from ambidex.runtime._stats import KIND_NAMES

if TYPE_CHECKING:
    from ambidex.runtime._core import Runtime
    from ambidex.runtime._stats import RuntimeStatistics

__all__ = ["RuntimeCollector", "register_otel_metrics"]


def _runtime() -> Runtime:
    from ambidex.runtime._core import current_runtime

    return current_runtime()


def _wait_histograms(rt: Runtime, stats: RuntimeStatistics) -> dict[str, WaitHistogram]:
    """The runtime's wait histograms: ``io``, ``cpu`` and ``limit:NAME`` for each named limit.

    An empty one stands for the cpu backend before it opens, and for Ray's (which
    queues calls itself).
    """
    cpu = rt._cpu  # not rt.cpu_backend: a scrape must not open the backend
    found = {
        "io": rt.threads.queue_waits,
        "cpu": getattr(cpu, "queue_waits", None) or WaitHistogram(),
    }
    for name in [*stats.limits, *stats.rate_limits]:
        found[f"limit:{name}"] = getattr(rt.limit(name), "waits", None) or WaitHistogram()
    return found


# -- Prometheus ----------------------------------------------------------------------


def _histogram_family(
    name: str, doc: str, series: Iterable[tuple[list[str], WaitHistogram]], labels: list[str]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for label_values, histogram in series:
        counts, total_s = histogram.snapshot()
        cumulative, buckets = 0, []
        for bound, count in zip((*histogram.bounds, float("inf")), counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
        family.add_metric(label_values, buckets, total_s)
    return family


class RuntimeCollector(Collector):
    """The current runtime's calls, pools, limits and waits, read at each scrape.

    Register it in a ``prometheus_client`` registry (``REGISTRY.register(
    ax.RuntimeCollector())``); it follows ``ax.current_runtime()``, so a runtime
    replaced later (``with ax.Runtime(...)``) is the one scraped then. Counters
    are those of the runtime: they start again from 0 with a new one, which
    Prometheus reads as a counter reset.
    """

    def collect(self) -> Iterator[Metric]:
        """The metric families, from one ``statistics()`` snapshot and the wait histograms."""
        rt = _runtime()
        stats = rt.statistics()
        yield from _gauges(stats)
        yield from _counters(stats)
        waits = _wait_histograms(rt, stats)
        yield _histogram_family(
            "ambidex_runtime_io_queue_wait_seconds",
            "Time blocking calls that found every I/O thread busy waited for one.",
            [([], waits["io"])],
            [],
        )
        yield _histogram_family(
            "ambidex_runtime_cpu_queue_wait_seconds",
            "Time cpu calls that found every worker busy waited for one (local backend).",
            [([], waits["cpu"])],
            [],
        )
        yield _histogram_family(
            "ambidex_runtime_limit_wait_seconds",
            "Time callers that found a named limit full (or out of tokens) waited for it.",
            [([key[6:]], h) for key, h in waits.items() if key.startswith("limit:")],
            ["limit"],
        )


def _gauges(stats: RuntimeStatistics) -> Iterator[Metric]:
    def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"ambidex_runtime_{name}", doc, value=value)

    io = stats.io_threads
    yield gauge("io_threads", "I/O threads alive.", io.threads)
    yield gauge("io_threads_busy", "I/O threads running a call.", io.busy)
    yield gauge("io_calls_queued", "Blocking calls waiting for an I/O thread.", io.queued)
    yield gauge("io_calls_abandoned", "Running calls whose caller gave up.", io.abandoned)
    cpu = stats.cpu_workers
    yield gauge("cpu_workers", "cpu worker processes alive.", cpu.workers if cpu else 0)
    yield gauge("cpu_workers_busy", "cpu workers running a task.", cpu.busy if cpu else 0)
    yield gauge(
        "cpu_workers_crashed", "cpu tasks that killed their worker.", cpu.crashed if cpu else 0
    )
    in_flight = GaugeMetricFamily(
        "ambidex_runtime_calls_in_flight",
        "Calls started and not finished (waiting for a limit included), by kind.",
        labels=["kind"],
    )
    for kind in KIND_NAMES:
        in_flight.add_metric([kind], stats.kinds[kind].in_flight)
    yield in_flight
    families: dict[str, GaugeMetricFamily] = {}
    for name, doc in (
        ("in_use", "Holders of each named limit."),
        ("waiting", "Callers waiting for each named limit."),
        ("capacity", "Capacity of each named limit."),
    ):
        families[name] = GaugeMetricFamily(f"ambidex_runtime_limit_{name}", doc, labels=["limit"])
    for name, limit in stats.limits.items():
        families["in_use"].add_metric([name], limit.in_use)
        families["waiting"].add_metric([name], limit.waiting)
        families["capacity"].add_metric([name], limit.capacity)
    for name, rate in stats.rate_limits.items():
        families["waiting"].add_metric([name], rate.waiting)
    yield from families.values()


def _counters(stats: RuntimeStatistics) -> Iterator[Metric]:
    calls = CounterMetricFamily(
        "ambidex_runtime_calls",
        "Calls finished, by kind and outcome (a retried call counts once).",
        labels=["kind", "outcome"],
    )
    retries = CounterMetricFamily(
        "ambidex_runtime_retries", "Attempts repeated after a failure, by kind.", labels=["kind"]
    )
    timeouts = CounterMetricFamily(
        "ambidex_runtime_timeouts", "Attempts that ran past timeout_s, by kind.", labels=["kind"]
    )
    for kind in KIND_NAMES:
        counts = stats.kinds[kind]
        calls.add_metric([kind, "succeeded"], counts.succeeded)
        calls.add_metric([kind, "failed"], counts.failed)
        retries.add_metric([kind], counts.retries)
        timeouts.add_metric([kind], counts.timeouts)
    yield calls
    yield retries
    yield timeouts
    cpu = stats.cpu_workers
    yield CounterMetricFamily(
        "ambidex_runtime_cpu_worker_crashes",
        "cpu calls that ended their worker process (a crash, os._exit, the OOM killer).",
        value=cpu.crashed if cpu else 0,
    )
    yield CounterMetricFamily(
        "ambidex_runtime_cpu_worker_kills",
        "cpu workers killed because their call timed out or was cancelled while running.",
        value=cpu.killed if cpu else 0,
    )


# -- OpenTelemetry -------------------------------------------------------------------

Reading = tuple[float, dict[str, str]]


def _otel_readings() -> dict[str, list[Reading]]:
    """Every instrument's observations now, by instrument name, from one snapshot.

    None at all while no runtime is open: a collection runs on the meter provider's
    thread, a last time at exit after the runtime closed, and must not start one.
    """
    from ambidex.runtime import _core

    rt = _core._current
    if rt is None or rt.closed:
        return {}
    stats = rt.statistics()
    io, cpu = stats.io_threads, stats.cpu_workers
    out: dict[str, list[Reading]] = {
        "calls": [],
        "calls.in_flight": [],
        "retries": [],
        "timeouts": [],
        "io.threads": [(io.threads, {})],
        "io.threads.busy": [(io.busy, {})],
        "io.calls.queued": [(io.queued, {})],
        "io.calls.abandoned": [(io.abandoned, {})],
        "cpu.workers": [(cpu.workers if cpu else 0, {})],
        "cpu.workers.busy": [(cpu.busy if cpu else 0, {})],
        "cpu.worker.crashes": [(cpu.crashed if cpu else 0, {})],
        "cpu.worker.kills": [(cpu.killed if cpu else 0, {})],
        "io.queue.wait": [(io.queue_wait_s, {})],
        "io.queue.waits": [(io.queue_waits, {})],
        "cpu.queue.wait": [(cpu.queue_wait_s if cpu else 0.0, {})],
        "cpu.queue.waits": [(cpu.queue_waits if cpu else 0, {})],
        "limit.wait": [],
        "limit.waits": [],
        "limit.in_use": [],
        "limit.waiting": [],
        "limit.capacity": [],
    }
    for kind, counts in stats.kinds.items():
        at = {"ambidex.kind": kind}
        out["calls"].append((counts.succeeded, {**at, "ambidex.outcome": "succeeded"}))
        out["calls"].append((counts.failed, {**at, "ambidex.outcome": "failed"}))
        out["calls.in_flight"].append((counts.in_flight, at))
        out["retries"].append((counts.retries, at))
        out["timeouts"].append((counts.timeouts, at))
    for name, limit in stats.limits.items():
        at = {"ambidex.limit": name}
        out["limit.wait"].append((limit.wait_s, at))
        out["limit.waits"].append((limit.waits, at))
        out["limit.in_use"].append((limit.in_use, at))
        out["limit.waiting"].append((limit.waiting, at))
        out["limit.capacity"].append((limit.capacity, at))
    for name, rate in stats.rate_limits.items():
        at = {"ambidex.limit": name}
        out["limit.wait"].append((rate.wait_s, at))
        out["limit.waits"].append((rate.waits, at))
        out["limit.waiting"].append((rate.waiting, at))
    return out


# name, instrument, unit, description (the names written out: docs/observability.md lists them)
_INSTRUMENTS = (
    ("ambidex.runtime.calls", "counter", "{call}", "Calls finished, by kind and outcome."),
    (
        "ambidex.runtime.calls.in_flight",
        "gauge",
        "{call}",
        "Calls started and not finished, by kind.",
    ),
    (
        "ambidex.runtime.retries",
        "counter",
        "{attempt}",
        "Attempts repeated after a failure, by kind.",
    ),
    (
        "ambidex.runtime.timeouts",
        "counter",
        "{attempt}",
        "Attempts that ran past timeout_s, by kind.",
    ),
    ("ambidex.runtime.io.threads", "gauge", "{thread}", "I/O threads alive."),
    ("ambidex.runtime.io.threads.busy", "gauge", "{thread}", "I/O threads running a call."),
    (
        "ambidex.runtime.io.calls.queued",
        "gauge",
        "{call}",
        "Blocking calls waiting for an I/O thread.",
    ),
    (
        "ambidex.runtime.io.calls.abandoned",
        "gauge",
        "{call}",
        "Running calls whose caller gave up.",
    ),
    ("ambidex.runtime.cpu.workers", "gauge", "{process}", "cpu worker processes alive."),
    ("ambidex.runtime.cpu.workers.busy", "gauge", "{process}", "cpu workers running a call."),
    (
        "ambidex.runtime.cpu.worker.crashes",
        "counter",
        "{call}",
        "cpu calls that ended their worker process.",
    ),
    (
        "ambidex.runtime.cpu.worker.kills",
        "counter",
        "{process}",
        "cpu workers killed on a timeout or cancel.",
    ),
    (
        "ambidex.runtime.io.queue.wait",
        "counter",
        "s",
        "Total time blocking calls waited for an I/O thread.",
    ),
    (
        "ambidex.runtime.io.queue.waits",
        "counter",
        "{wait}",
        "Blocking calls that waited for an I/O thread.",
    ),
    (
        "ambidex.runtime.cpu.queue.wait",
        "counter",
        "s",
        "Total time cpu calls waited for a free worker.",
    ),
    (
        "ambidex.runtime.cpu.queue.waits",
        "counter",
        "{wait}",
        "cpu calls that waited for a free worker.",
    ),
    (
        "ambidex.runtime.limit.wait",
        "counter",
        "s",
        "Total time callers waited for each named limit.",
    ),
    (
        "ambidex.runtime.limit.waits",
        "counter",
        "{wait}",
        "Acquisitions of each named limit that waited.",
    ),
    ("ambidex.runtime.limit.in_use", "gauge", "{holder}", "Holders of each capacity limit."),
    (
        "ambidex.runtime.limit.waiting",
        "gauge",
        "{caller}",
        "Callers waiting for each named limit now.",
    ),
    ("ambidex.runtime.limit.capacity", "gauge", "{holder}", "Capacity of each capacity limit."),
)


def register_otel_metrics(meter_provider: Any = None) -> None:
    """Observable OpenTelemetry instruments reading the runtime's counters at each collection.

    ``meter_provider``: where they go; None: the global one (a proxy until the
    application sets one: the instruments reach that one then). Calling it again
    adds nothing: a meter keeps the first instrument of a name (and its callback).
    Histograms cannot be
    observable in OpenTelemetry: each wait is exported as two counters, its total
    seconds (``ambidex.runtime.*.wait``) and its count (``*.waits``); the bucketed
    histograms are Prometheus's (``RuntimeCollector``).
    """
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, Observation

    from ambidex import __version__

    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    meter = provider.get_meter("ambidex", __version__)

    def observe(key: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        # A snapshot per instrument (about 20 us): a collection runs every few seconds
        # at most, and readings shared between callbacks could outlive their collection.
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(value, attrs) for value, attrs in _otel_readings().get(key, ())]

        return callback

    for name, kind, unit, description in _INSTRUMENTS:
        create = (
            meter.create_observable_counter if kind == "counter" else meter.create_observable_gauge
        )
        key = name.removeprefix("ambidex.runtime.")
        create(name, [observe(key)], unit=unit, description=description)
