"""The elastic I/O pool: a workflow's blocking nodes get as many threads as are ready.

Elastic calls (a workflow's plain ``def`` and ``@ax.blocking`` nodes,
``ax.to_elastic_thread``, calls inside ``ax.elastic_threads()``) start a thread
beyond ``io_threads`` when every thread is busy, up to ``io_threads_max``; the
extra threads exit when idle. Every other call keeps the ``io_threads`` bound.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import ambidex as ax
from _waiting import await_for, wait_for
from _width import Width
from ambidex.runtime._threads import IOThreadPool


def test_blocking_fan_out_outside_a_workflow_keeps_io_threads() -> None:
    width = Width()
    nap = ax.blocking(width.wrap(0.02))
    with ax.Runtime(io_threads=4, cpu_workers=1) as rt:
        assert nap.map(range(40)) == list(range(40))

        async def to_threads() -> list[int]:
            return list(
                await asyncio.gather(*(ax.to_thread(width.wrap(0.02), i) for i in range(40)))
            )

        assert rt.call(to_threads()) == list(range(40))
        stats = rt.statistics().io_threads
        assert width.most <= 4
        assert stats.peak_threads <= 4
        assert stats.elastic_threads == 0


async def test_abandoned_elastic_calls_still_count_against_the_cap() -> None:
    release = threading.Event()
    started = threading.Semaphore(0)
    ran = threading.Event()

    def hold() -> None:
        started.release()
        release.wait(10)

    with ax.Runtime(io_threads=2, io_threads_max=6, cpu_workers=1) as rt:
        calls = [asyncio.ensure_future(ax.to_elastic_thread(hold)) for _ in range(6)]
        for _ in calls:  # the cap filled: six threads, each running a call
            assert await asyncio.to_thread(started.acquire, True, 10)
        for call in calls:  # then every caller times out: six abandoned, running calls
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(call, 0.01)
        assert rt.statistics().io_threads.abandoned == 6
        late = asyncio.ensure_future(ax.to_elastic_thread(ran.set))
        await asyncio.sleep(0.2)
        stats = rt.statistics().io_threads
        assert not ran.is_set()  # it waits for a thread: the abandoned calls hold all six
        assert stats.threads == 6
        assert stats.queued == 1
        release.set()
        await asyncio.wait_for(late, 10)
        assert rt.statistics().io_threads.peak_threads == 6


async def test_elastic_call_does_not_queue_behind_ordinary_calls() -> None:
    release = threading.Event()
    width = Width()
    with ax.Runtime(io_threads=2, cpu_workers=1) as rt:
        # Both general threads held, and ten ordinary calls waiting behind them.
        held = [asyncio.ensure_future(ax.to_thread(release.wait, 10)) for _ in range(2)]
        queued = [asyncio.ensure_future(ax.to_thread(width.wrap(0.01), i)) for i in range(10)]
        assert await await_for(lambda: rt.statistics().io_threads.busy == 2)
        assert await asyncio.wait_for(ax.to_elastic_thread(lambda: "now"), 5) == "now"
        with ax.elastic_threads():
            assert await asyncio.wait_for(ax.to_thread(lambda: "also"), 5) == "also"
        await asyncio.sleep(0.05)
        assert width.most == 0  # the idle elastic thread did not take an ordinary call
        release.set()
        assert await asyncio.gather(*queued) == list(range(10))
        await asyncio.gather(*held)
        assert width.most <= 2


def test_elastic_threads_exit_when_idle_and_general_ones_stay() -> None:
    pool = IOThreadPool(2, "t-elastic", elastic_cap=10, elastic_idle_s=0.05)

    async def wide() -> None:
        await asyncio.gather(*(pool.run(time.sleep, (0.2,), {}, elastic=True) for _ in range(10)))

    try:
        asyncio.run(wide())
        assert pool.statistics().peak_threads == 10
        assert wait_for(lambda: pool.statistics().threads == 2, timeout_s=5)
        assert pool.statistics().elastic_threads == 0
        asyncio.run(wide())  # and grows again
        assert pool.statistics().busy == 0
    finally:
        assert pool.close() == []


def test_io_threads_max_default_env_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AMBIDEX_IO_THREADS_MAX", raising=False)
    assert ax.Runtime(io_threads=8).io_threads_max == 256
    assert ax.Runtime(io_threads=300).io_threads_max == 300  # never below io_threads
    assert ax.Runtime(io_threads=8, io_threads_max=2).io_threads_max == 8  # no growth
    monkeypatch.setenv("AMBIDEX_IO_THREADS_MAX", "32")
    assert ax.Runtime(io_threads=8).io_threads_max == 32
    monkeypatch.setenv("AMBIDEX_IO_THREADS_MAX", "zero")
    with pytest.raises(ValueError, match="AMBIDEX_IO_THREADS_MAX"):
        ax.Runtime(io_threads=8)
    with pytest.raises(ValueError, match="io_threads_max"):
        ax.Runtime(io_threads=8, io_threads_max=0)


def test_a_burst_of_short_elastic_calls_does_not_grow_the_pool() -> None:
    # Every thread is busy when most of these arrive, but none is stuck: the calls
    # keep ending, so no thread starts for them (before ELASTIC_GROW_S, 2,000 calls
    # started threads up to the cap, and ran 2-4 times slower for it).
    pool = IOThreadPool(4, "t-burst", elastic_cap=64)

    async def burst() -> list[int]:
        calls = (pool.run(abs, (-i,), {}, elastic=True) for i in range(2000))
        return list(await asyncio.gather(*calls))

    try:
        assert asyncio.run(burst()) == list(range(2000))
        assert pool.statistics().peak_threads < 64
    finally:
        assert pool.close() == []
