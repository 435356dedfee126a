"""A workflow's blocking nodes get as many I/O threads as it has ready (issue 16).

The scheduler runs plain ``def`` and ``@ax.blocking`` nodes as *elastic* calls:
when every I/O thread is busy, the pool starts one more, up to
``io_threads_max``, so a wide layer of blocking nodes runs at once instead of
queueing for ``io_threads`` threads; the extra threads exit when idle.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import ambidex as ax
from _waiting import wait_for
from _width import Width
from ambidex.runtime._threads import RESERVED_THREADS


def _wide_workflow(fn: Callable[[int], int], width: int) -> ax.Workflow:
    wf = ax.Workflow("wide")
    for i in range(width):
        wf.node(f"n{i}", fn, input={"x": i})
    return wf


def test_forty_blocking_def_nodes_run_at_once_on_four_io_threads_then_threads_exit() -> None:
    def nap(x: int) -> int:
        time.sleep(0.2)
        return x

    wf = _wide_workflow(nap, 40)
    with ax.Runtime(io_threads=4, cpu_workers=1) as rt:
        t0 = time.perf_counter()
        result = wf.run()
        elapsed = time.perf_counter() - t0
        assert result.outputs == {f"n{i}": i for i in range(40)}
        assert elapsed < 0.6  # on 4 threads, 10 rounds of 0.2 s: ~2 s
        stats = rt.statistics().io_threads
        assert stats.max_threads == 4
        assert stats.peak_threads >= 40
        assert stats.elastic_cap == rt.io_threads_max == 256
        # The extra threads exit after ELASTIC_IDLE_S (1 s) without a call.
        assert wait_for(lambda: rt.statistics().io_threads.threads <= 4, timeout_s=10)
        assert rt.statistics().io_threads.elastic_threads == 0


def test_blocking_task_nodes_grow_the_pool_as_plain_def_nodes_do() -> None:
    @ax.blocking
    def nap(x: int) -> int:
        time.sleep(0.2)
        return x

    wf = _wide_workflow(nap, 20)
    with ax.Runtime(io_threads=4, cpu_workers=1):
        t0 = time.perf_counter()
        result = wf.run()
        assert time.perf_counter() - t0 < 0.6  # ~1 s on 4 threads
        assert result.outputs == {f"n{i}": i for i in range(20)}


def test_a_thousand_wide_layer_never_has_more_threads_than_the_cap() -> None:
    width = Width()
    wf = _wide_workflow(width.wrap(0.02), 1000)
    with ax.Runtime(io_threads=4, io_threads_max=64, cpu_workers=1) as rt:
        t0 = time.perf_counter()
        result = wf.run()
        elapsed = time.perf_counter() - t0
        assert len(result.outputs) == 1000
        stats = rt.statistics().io_threads
        assert stats.elastic_cap == 64
        assert stats.peak_threads <= 64 + RESERVED_THREADS
        assert width.most <= 64
        assert width.most >= 32  # it did grow: 1000 x 20 ms on 4 threads would be 5 s
        assert elapsed < 2.5
