"""``Runtime.put`` on the local backend: shared memory, read by workers, never left behind."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
from _support import wait_for

import ambidex as ax

SHM = Path("/dev/shm")
pytestmark = pytest.mark.skipif(not SHM.is_dir(), reason="needs /dev/shm (Linux)")


def _exists(handle: ax.Shared[Any] | str) -> bool:
    key = handle if isinstance(handle, str) else handle.key
    return (SHM / key.lstrip("/")).exists()


@ax.cpu
def total(handle: ax.Shared[Any]) -> float:
    return float(handle.get().sum())


@ax.cpu
def read(handles: dict[str, ax.Shared[Any]]) -> dict[str, Any]:
    return {name: h.get() for name, h in handles.items()}


@ax.cpu
def mark(handle: ax.Shared[Any], index: int) -> bool:
    handle.get()[index] = index + 1
    return bool(handle.get().flags.writeable)


@ax.cpu
def try_to_write(handle: ax.Shared[Any]) -> None:
    handle.get()[0] = 1.0


def test_a_put_array_is_read_by_workers_from_shared_memory(fresh_runtime: ax.Runtime) -> None:
    big = np.linspace(0.0, 1.0, 1_000_000)  # 8 MB
    handle = fresh_runtime.put(big)
    assert _exists(handle)
    assert len(cloudpickle.dumps(handle)) < 500  # a call carries the handle, not the data
    assert total(handle) == pytest.approx(big.sum())
    assert total.map([handle] * 4) == [pytest.approx(big.sum())] * 4
    assert np.array_equal(handle.get(), big)
    with pytest.raises(ValueError, match="read-only"):
        try_to_write(handle)
    stats = fresh_runtime.statistics().cpu_workers
    assert stats is not None
    assert (stats.shared, stats.shared_bytes) == (1, big.nbytes)


def test_any_picklable_value_can_be_put(fresh_runtime: ax.Runtime) -> None:
    table = {"weights": [0.5, 0.25], "name": "x" * 10_000}
    handles = {"table": fresh_runtime.put(table), "n": fresh_runtime.put(7)}
    assert read(handles) == {"table": table, "n": 7}
    assert handles["table"].get() == table


def test_a_writable_array_shows_the_workers_writes(fresh_runtime: ax.Runtime) -> None:
    assert fresh_runtime.cpu_features.writable_shares
    assert not fresh_runtime.cpu_features.distributed
    counters = fresh_runtime.put(np.zeros(4, np.int64), writable=True)
    for i in range(4):
        assert mark(counters, i)
    assert counters.get().tolist() == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="numeric numpy array"):
        fresh_runtime.put({"a": 1}, writable=True)


def test_release_frees_the_memory_and_later_reads_say_why(fresh_runtime: ax.Runtime) -> None:
    handle = fresh_runtime.put(np.ones(1000))
    assert total(handle) == 1000.0
    handle.release()
    assert not _exists(handle)
    with pytest.raises(LookupError, match="released"):
        total(handle)
    handle.release()  # twice is fine
    stats = fresh_runtime.statistics().cpu_workers
    assert stats is not None
    assert stats.shared == 0


def test_a_dropped_handle_frees_its_memory(fresh_runtime: ax.Runtime) -> None:
    key = fresh_runtime.put(np.ones(1000)).key
    gc.collect()
    assert not _exists(key)


def test_closing_the_runtime_frees_what_was_put() -> None:
    with ax.Runtime(cpu_workers=1) as rt:
        handles = [rt.put(np.full(100, i)) for i in range(3)]
        assert total(handles[2]) == 200.0
        assert all(_exists(h) for h in handles)
    assert not any(_exists(h) for h in handles)
    with pytest.raises(ax.RuntimeClosedError):
        rt.put(1)


def test_a_killed_process_leaves_nothing_in_dev_shm(tmp_path: Path) -> None:
    code = (
        "import os, signal, sys, numpy as np, ambidex as ax\n"
        "h = ax.current_runtime().put(np.ones(1000))\n"
        "print(h.key, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == -signal.SIGKILL
    key = proc.stdout.strip()
    assert key
    # multiprocessing's resource tracker unlinks the blocks of a process that died
    assert wait_for(lambda: not _exists(key), timeout_s=20)


def test_a_worker_unmaps_blocks_once_they_are_released() -> None:
    with ax.Runtime(cpu_workers=1):  # one worker: every call sees the same process
        first = ax.current_runtime().put(np.ones(10))
        assert total(first) == 10.0
        assert any(first.key in line for line in mapped_here())
        first.release()
        second = ax.current_runtime().put(np.ones(20))
        assert total(second) == 20.0  # attaching a new block unmaps the released one
        maps = mapped_here()
        assert any(second.key in line for line in maps)
        assert not any(first.key in line for line in maps)


@ax.cpu
def mapped_here() -> list[str]:
    """This worker's memory maps of shared memory blocks."""
    with open(f"/proc/{os.getpid()}/maps") as maps:
        return [line for line in maps if "/dev/shm/" in line]
