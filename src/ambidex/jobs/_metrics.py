"""Prometheus metrics of a job manager: what its worker ran, and the runtime it ran on.

One ``CollectorRegistry`` per manager (so two managers in one process, as in
tests, never clash); ``ambidex serve`` exposes it at ``/metrics`` beside the
HTTP metrics and the store's counts (``ambidex_jobs{status}``,
``ambidex_jobs_by_workload{workload,status}``), ``ambidex worker --metrics-port``
on a port of its own. Names:

========================================  =======================================================
``ambidex_jobs_running_here``             jobs this process runs now
``ambidex_jobs_finished_here_total``      jobs this process finished, by outcome
``ambidex_job_finished_total``            attempts finished here, by workload and outcome
                                          (``retrying`` too)
``ambidex_job_retries_total``             failed attempts put back in the queue, by workload
``ambidex_job_queue_wait_seconds``        from due (created, delayed or retried) to started
``ambidex_job_run_seconds``               from started to finished, by workload and outcome
``ambidex_runtime_*``                     the runtime's calls, pools, limits and waits (read
                                          when scraped: ``ambidex.runtime.RuntimeCollector``,
                                          names in docs/observability.md)
========================================  =======================================================

Why not prometheus_client's ``Counter`` and ``Histogram`` objects on the hot
path: each ``labels(...).inc()`` / ``.observe()`` takes a lock and builds the
label tuple, which the throughput benchmark measured at about a tenth of the
worker's CPU per trivial job (py-spy: ``labels``, ``observe``, ``inc`` under
``Worker._launch`` and ``_write_outcome``). The worker only touches plain
dicts on the event loop thread (``record_*``); the numbers become metric
families when scraped.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ambidex.runtime import RuntimeCollector

__all__ = ["JobMetrics"]

_WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
_RUN_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600, 21600)


class _Histogram:
    """Bucket counts and a sum per label tuple, without locks (one writer: the loop)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = ([0] * (len(self.bounds) + 1), [0.0])
        series[0][bisect.bisect_left(self.bounds, value)] += 1
        series[1][0] += value

    def family(self, name: str, doc: str, label_names: list[str]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, doc, labels=label_names)
        for labels, (counts, total) in list(self.series.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
                cumulative += count
                buckets.append(
                    ("+Inf" if bound == float("inf") else repr(float(bound)), cumulative)
                )
            family.add_metric(list(labels), buckets, total[0])
        return family


class JobMetrics:
    """What a manager's worker ran, recorded cheaply and exposed at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.running_here = 0
        self.finished_here: dict[str, int] = {}
        self.finished: dict[tuple[str, str], int] = {}
        self.retries: dict[str, int] = {}
        self.queue_wait = _Histogram(_WAIT_BUCKETS)
        self.run_time = _Histogram(_RUN_BUCKETS)
        self.registry.register(_JobCollector(self))
        self.registry.register(RuntimeCollector())

    def record_start(self, workload: str, queue_wait_s: float, running: int) -> None:
        """A job of ``workload`` started, ``queue_wait_s`` after it was due."""
        self.queue_wait.observe((workload,), queue_wait_s)
        self.running_here = running

    def record_end(self, workload: str, status: str, run_s: float, *, final: bool) -> None:
        """An attempt ended as ``status`` (``retrying`` when it runs again) after ``run_s``."""
        key = (workload, status)
        self.finished[key] = self.finished.get(key, 0) + 1
        self.run_time.observe(key, run_s)
        if final:
            self.finished_here[status] = self.finished_here.get(status, 0) + 1
        else:
            self.retries[workload] = self.retries.get(workload, 0) + 1


def _counter(
    name: str, doc: str, labels: list[str], values: Mapping[Any, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    # list(): one C-level copy, safe against the loop thread adding a key meanwhile
    for key, value in list(values.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family


class _JobCollector(Collector):
    def __init__(self, metrics: JobMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        yield GaugeMetricFamily(
            "ambidex_jobs_running_here", "Jobs this process is running now.", value=m.running_here
        )
        yield _counter(
            "ambidex_jobs_finished_here",
            "Jobs this process has finished, by outcome.",
            ["status"],
            m.finished_here,
        )
        yield _counter(
            "ambidex_job_finished",
            "Attempts this process finished, by workload and outcome.",
            ["workload", "status"],
            m.finished,
        )
        yield _counter(
            "ambidex_job_retries",
            "Failed attempts put back in the queue by their retry policy.",
            ["workload"],
            m.retries,
        )
        yield m.queue_wait.family(
            "ambidex_job_queue_wait_seconds",
            "Time from when a job was due to when a worker of this process started it.",
            ["workload"],
        )
        yield m.run_time.family(
            "ambidex_job_run_seconds",
            "Time an attempt ran in this process, by outcome.",
            ["workload", "status"],
        )
