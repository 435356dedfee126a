"""The runtime's metrics: waits measured where they happen, read by Prometheus when scraped.

The cpu helpers live at module level: a worker process imports this module by
name (``test_metrics``) to find them.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import ambidex as ax
from ambidex.exceptions import TaskTimeoutError, WorkerCrashedError

# -- helpers ---------------------------------------------------------------------------


@ax.blocking
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@ax.blocking(limit="one")
def nap_in_one(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@ax.io(limit="one")
async def async_nap_in_one(seconds: float) -> float:
    import asyncio

    await asyncio.sleep(seconds)
    return seconds


@ax.cpu
def cpu_nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@ax.cpu
def cpu_exit() -> None:
    os._exit(3)


@ax.cpu(timeout_s=0.3)
def cpu_hang() -> None:
    time.sleep(30)


def scrape() -> dict[str, float]:
    """Every sample of a registry holding one ``ax.RuntimeCollector``, by its text line key."""
    registry = CollectorRegistry()
    registry.register(ax.RuntimeCollector())
    samples: dict[str, float] = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


# -- I/O thread pool -------------------------------------------------------------------


def test_io_queue_wait_counted_when_every_thread_is_busy() -> None:
    with ax.Runtime(io_threads=1) as rt:
        assert nap.map([0.2, 0.2]) == [0.2, 0.2]  # the second waits for the one thread
        pool = rt.statistics().io_threads
        samples = scrape()
    assert pool.queue_waits == 1
    assert 0.15 < pool.queue_wait_s < 5.0
    assert samples["ambidex_runtime_io_queue_wait_seconds_count"] == 1
    assert samples["ambidex_runtime_io_queue_wait_seconds_sum"] == pytest.approx(pool.queue_wait_s)
    assert samples['ambidex_runtime_io_queue_wait_seconds_bucket{le="0.1"}'] == 0
    assert samples['ambidex_runtime_io_queue_wait_seconds_bucket{le="+Inf"}'] == 1
    assert samples['ambidex_runtime_calls_total{kind="blocking",outcome="succeeded"}'] == 2


def test_io_queue_wait_not_counted_when_a_thread_is_free() -> None:
    with ax.Runtime(io_threads=2) as rt:
        nap.map([0.05, 0.05])  # one thread each (the second starts for its call)
        nap(0.01)
        assert rt.statistics().io_threads.queue_waits == 0
        assert scrape()["ambidex_runtime_io_queue_wait_seconds_count"] == 0


# -- limits ----------------------------------------------------------------------------


def test_capacity_limit_wait_counted_per_limit_when_callers_waited() -> None:
    with ax.Runtime(io_threads=4) as rt:
        rt.limits(one=1, spare=5)
        nap_in_one.map([0.1, 0.1])  # async acquire on the loop: one of them waits
        assert async_nap_in_one.map([0.1, 0.1]) == [0.1, 0.1]  # the io path too
        limit = rt.limit("one")
        gate = threading.Event()

        def hold() -> None:
            with limit:
                gate.set()
                time.sleep(0.1)

        holder = threading.Thread(target=hold)
        holder.start()
        gate.wait()
        with limit:  # a plain thread: acquire_sync waits for the holder
            pass
        holder.join()
        stats = rt.statistics().limits
        samples = scrape()
    assert stats["one"].waits == 3
    assert 0.25 < stats["one"].wait_s < 10.0
    assert stats["spare"].waits == 0
    assert samples['ambidex_runtime_limit_wait_seconds_count{limit="one"}'] == 3
    assert samples['ambidex_runtime_limit_wait_seconds_bucket{le="0.05",limit="one"}'] == 0
    assert samples['ambidex_runtime_limit_wait_seconds_count{limit="spare"}'] == 0


def test_rate_limit_wait_counted_when_callers_slept_for_a_token() -> None:
    with ax.Runtime() as rt:
        rt.limits(api=ax.Rate(10, burst=1))
        limit = rt.limit("api")
        with limit:  # the burst token: no wait
            pass
        with limit:  # the next token 0.1 s later
            pass
        stats = rt.statistics().rate_limits["api"]
        samples = scrape()
    assert stats.waits == 1
    assert 0.05 < stats.wait_s < 5.0
    assert samples['ambidex_runtime_limit_wait_seconds_count{limit="api"}'] == 1


# -- retries, timeouts, cpu workers ----------------------------------------------------


def test_retries_and_timeouts_counted_by_kind() -> None:
    attempts: list[int] = []

    @ax.io(retries=2, backoff_s=0.001)
    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    @ax.blocking(timeout_s=0.05)
    def slow() -> None:
        time.sleep(0.3)

    assert flaky() == "ok"
    with pytest.raises(TaskTimeoutError):
        slow()
    samples = scrape()
    assert samples['ambidex_runtime_retries_total{kind="io"}'] == 2
    assert samples['ambidex_runtime_calls_total{kind="io",outcome="succeeded"}'] == 1
    assert samples['ambidex_runtime_timeouts_total{kind="blocking"}'] == 1
    assert samples['ambidex_runtime_calls_total{kind="blocking",outcome="failed"}'] == 1


def test_cpu_queue_wait_crashes_and_kills_counted() -> None:
    with ax.Runtime(cpu_workers=1) as rt:
        first, second = cpu_nap.map([0.3, 0.3])  # the second waits for the one worker
        assert first == second
        with pytest.raises(WorkerCrashedError):
            cpu_exit()
        with pytest.raises(TaskTimeoutError):
            cpu_hang()
        cpu = rt.statistics().cpu_workers
        samples = scrape()
    assert cpu is not None
    assert cpu.queue_waits == 1
    assert 0.25 < cpu.queue_wait_s < 20.0
    assert samples["ambidex_runtime_cpu_queue_wait_seconds_count"] == 1
    assert samples['ambidex_runtime_cpu_queue_wait_seconds_bucket{le="0.25"}'] == 0
    assert samples["ambidex_runtime_cpu_worker_crashes_total"] == 1
    assert samples["ambidex_runtime_cpu_worker_kills_total"] == 1
    assert samples['ambidex_runtime_timeouts_total{kind="cpu"}'] == 1


# -- registries ------------------------------------------------------------------------


def test_runtime_collector_follows_the_current_runtime() -> None:
    nap(0.0)
    assert scrape()['ambidex_runtime_calls_total{kind="blocking",outcome="succeeded"}'] == 1
    with ax.Runtime():
        assert scrape()['ambidex_runtime_calls_total{kind="blocking",outcome="succeeded"}'] == 0


def test_job_registry_holds_the_runtime_metrics_beside_the_jobs() -> None:
    from ambidex.jobs._metrics import JobMetrics

    with ax.Runtime() as rt:
        rt.limits(one=1)
        nap_in_one.map([0.1, 0.1])
        metrics = JobMetrics()
        metrics.record_start("demo", 0.5, 1)
        text = generate_latest(metrics.registry).decode()
    assert 'ambidex_job_queue_wait_seconds_count{workload="demo"} 1.0' in text
    assert 'ambidex_runtime_limit_wait_seconds_count{limit="one"} 1.0' in text
    assert 'ambidex_runtime_calls_total{kind="blocking",outcome="succeeded"} 2.0' in text
    assert "ambidex_runtime_io_threads_busy 0.0" in text  # the gauges of before, kept
