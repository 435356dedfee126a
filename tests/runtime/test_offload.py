"""``ax.to_thread``: blocking calls go to the current runtime's I/O threads."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

import ambidex as ax
from _waiting import await_for

_REQUEST = contextvars.ContextVar("request", default="none")


def _where(a: int, *, b: int) -> tuple[str, int, str]:
    return threading.current_thread().name, a + b, _REQUEST.get()


async def test_to_thread_runs_on_runtime_io_threads_when_awaited(
    fresh_runtime: ax.Runtime,
) -> None:
    _REQUEST.set("r-1")
    name, total, request = await ax.to_thread(_where, 1, b=2)
    assert name.startswith("ambidex-io")
    assert total == 3
    assert request == "r-1"  # the caller's context variables go with the call
    assert fresh_runtime.statistics().io_threads.threads >= 1


async def test_to_thread_raises_call_error_when_call_fails() -> None:
    def fail() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        await ax.to_thread(fail)


async def test_to_thread_abandons_unstarted_call_when_caller_cancelled(
    fresh_runtime: ax.Runtime,
) -> None:
    # Fill every I/O thread, so the next call waits in the queue.
    release = threading.Event()
    started = threading.Semaphore(0)

    def hold() -> None:
        started.release()
        release.wait(10)

    holders = [asyncio.ensure_future(ax.to_thread(hold)) for _ in range(fresh_runtime.io_threads)]
    for _ in holders:
        await asyncio.to_thread(started.acquire)
    ran = threading.Event()
    queued = asyncio.ensure_future(ax.to_thread(ran.set))
    await asyncio.sleep(0)  # let it reach the pool's queue
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    release.set()
    await asyncio.gather(*holders)
    await ax.to_thread(lambda: None)  # one more call: the queue has been worked through
    assert not ran.is_set()


async def test_reserved_thread_runs_while_every_general_thread_is_held() -> None:
    release = threading.Event()
    with ax.Runtime(io_threads=2, cpu_workers=1) as rt:
        held = [asyncio.ensure_future(ax.to_thread(release.wait, 30)) for _ in range(3)]
        try:
            # Both general threads are held and a third call queues behind them;
            # a reserved call runs at once on a thread of its own lane.
            def held_and_queued() -> bool:
                stats = rt.statistics().io_threads
                return (stats.busy, stats.queued) == (2, 1)

            assert await await_for(held_and_queued)
            name, total, _ = await asyncio.wait_for(ax.to_reserved_thread(_where, 2, b=3), 10)
            assert name.startswith("ambidex-io-reserved")
            assert total == 5
            assert held_and_queued()  # still: the reserved call took none of theirs
        finally:
            release.set()
            assert await asyncio.gather(*held) == [True, True, True]
