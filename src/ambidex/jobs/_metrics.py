"""Prometheus metrics of a job manager: what its worker ran, and the runtime it ran on.

One ``CollectorRegistry`` per manager (so two managers in one process, as in
tests, never clash); ``ambidex serve`` exposes it at ``/metrics`` beside the
HTTP metrics and the store's counts (``ambidex_jobs{status}``,
``ambidex_jobs_by_workload{workload,status}``), ``ambidex worker --metrics-port``
on a port of its own. Names:

========================================  =======================================================
``ambidex_jobs_running_here``             jobs this process runs now
``ambidex_jobs_finished_here_total``      jobs this process finished, by outcome
``ambidex_job_finished_total``            the same by workload and outcome (``retrying`` too)
``ambidex_job_retries_total``             failed attempts put back in the queue, by workload
``ambidex_job_queue_wait_seconds``        from due (created, delayed or retried) to started
``ambidex_job_run_seconds``               from started to finished, by workload and outcome
``ambidex_runtime_*``                     the runtime's pools and limits (read when scraped)
========================================  =======================================================
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["JobMetrics"]

_WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
_RUN_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600, 21600)


class JobMetrics:
    """The metrics one manager keeps (see the module docstring for the names)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.running_here = Gauge(
            "ambidex_jobs_running_here", "Jobs this process is running now.", registry=r
        )
        self.finished_here = Counter(
            "ambidex_jobs_finished_here",
            "Jobs this process has finished, by outcome.",
            ["status"],
            registry=r,
        )
        self.finished = Counter(
            "ambidex_job_finished",
            "Attempts this process finished, by workload and outcome.",
            ["workload", "status"],
            registry=r,
        )
        self.retries = Counter(
            "ambidex_job_retries",
            "Failed attempts put back in the queue by their retry policy.",
            ["workload"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "ambidex_job_queue_wait_seconds",
            "Time from when a job was due to when a worker of this process started it.",
            ["workload"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.run_time = Histogram(
            "ambidex_job_run_seconds",
            "Time an attempt ran in this process, by outcome.",
            ["workload", "status"],
            buckets=_RUN_BUCKETS,
            registry=r,
        )
        r.register(_RuntimeCollector())


class _RuntimeCollector(Collector):
    """The current runtime's pools and limits, read at each scrape."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from ambidex.runtime import runtime

        stats = runtime().statistics()

        def gauge(name: str, doc: str, value: float, **labels: str) -> GaugeMetricFamily:
            family = GaugeMetricFamily(f"ambidex_runtime_{name}", doc, labels=list(labels))
            family.add_metric(list(labels.values()), value)
            return family

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
        in_use = GaugeMetricFamily(
            "ambidex_runtime_limit_in_use", "Holders of each named limit.", labels=["limit"]
        )
        waiting = GaugeMetricFamily(
            "ambidex_runtime_limit_waiting",
            "Callers waiting for each named limit.",
            labels=["limit"],
        )
        capacity = GaugeMetricFamily(
            "ambidex_runtime_limit_capacity", "Capacity of each named limit.", labels=["limit"]
        )
        for name, limit in stats.limits.items():
            in_use.add_metric([name], limit.in_use)
            waiting.add_metric([name], limit.waiting)
            capacity.add_metric([name], limit.capacity)
        for name, rate in stats.rate_limits.items():
            waiting.add_metric([name], rate.waiting)
        yield in_use
        yield waiting
        yield capacity
