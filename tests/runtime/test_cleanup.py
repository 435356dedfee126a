"""Closing a runtime leaves no thread, child process or event loop behind.

The cpu helpers live at module level: a worker process imports this module by
name (``test_cleanup``) to find them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from _support import process_gone, wait_for

import ambidex as ax

# -- cpu helpers (run in worker processes) -----------------------------------


@ax.cpu
def cleanup_worker_pid() -> int:
    return os.getpid()


@ax.cpu
def cleanup_square(x: int) -> int:
    return x * x


@ax.cpu(timeout_s=0.5)
def cleanup_hang(pid_path: str) -> None:
    tmp = f"{pid_path}.tmp"
    Path(tmp).write_text(str(os.getpid()))
    os.replace(tmp, pid_path)
    time.sleep(30)


@ax.cpu
def cleanup_crash() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)


@ax.cpu(timeout_s=1.0)
def cleanup_hang_with_child(pid_path: str) -> None:
    child = subprocess.Popen(["sleep", "30"])
    tmp = f"{pid_path}.tmp"
    Path(tmp).write_text(f"{os.getpid()} {child.pid}")
    os.replace(tmp, pid_path)
    time.sleep(30)


@ax.cpu
def cleanup_sleep(pid_path: str, seconds: float) -> str:
    tmp = f"{pid_path}.tmp"
    Path(tmp).write_text(str(os.getpid()))
    os.replace(tmp, pid_path)
    time.sleep(seconds)
    return "finished"


# -- helpers -----------------------------------------------------------------


def _children() -> set[int]:
    """Pids of this process's descendants, zombies included."""
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


def _use_every_kind(tmp_path: Path) -> None:
    """io (coroutine and plain), blocking and cpu work, a timeout and a crash."""

    @ax.io
    async def fetch(x: int) -> int:
        await asyncio.sleep(0.001)
        return x

    @ax.io
    def read(x: int) -> int:
        return x + 1

    @ax.blocking
    def query(x: int) -> int:
        time.sleep(0.01)
        return x + 2

    @ax.blocking(timeout_s=0.1)
    def slow_query() -> None:
        time.sleep(0.4)  # abandoned at the deadline, finishes on its own

    assert fetch(1) == 1
    assert read(1) == 2
    assert query.map([1, 2, 3]) == [3, 4, 5]
    assert cleanup_square.map(range(4)) == [0, 1, 4, 9]
    assert ax.gather(fetch.aio(5), query.aio(5), cleanup_square.aio(5)) == [5, 7, 25]
    with pytest.raises(ax.TaskTimeoutError):
        slow_query()
    with pytest.raises(ax.TaskTimeoutError):
        cleanup_hang(str(tmp_path / "hang.pid"))
    with pytest.raises(ax.WorkerCrashedError):
        cleanup_crash()
    assert cleanup_worker_pid() > 0


# -- tests -------------------------------------------------------------------


def test_no_thread_or_child_left_when_closed_after_every_kind_of_work(
    fresh_runtime: ax.Runtime, tmp_path: Path
) -> None:
    threads_before = _threads()
    children_before = _children()

    _use_every_kind(tmp_path)

    stats = fresh_runtime.statistics()
    assert stats.cpu_workers is not None
    assert stats.cpu_workers.killed == 1
    assert stats.cpu_workers.crashed == 1
    # The work really started threads and processes, so the checks below mean something.
    assert _threads() - threads_before
    assert _children() - children_before
    hung_pid = int((tmp_path / "hang.pid").read_text())

    fresh_runtime.close()

    assert _threads() - threads_before == set()
    assert _children() - children_before == set()
    assert process_gone(hung_pid)
    assert fresh_runtime.closed
    assert fresh_runtime.statistics().io_threads.threads == 0


def test_loop_closed_when_runtime_closed(fresh_runtime: ax.Runtime) -> None:
    @ax.io
    async def ping() -> str:
        return "pong"

    assert ping() == "pong"
    loop_thread = fresh_runtime.loop_thread
    loop = loop_thread.loop
    assert loop.is_running()
    assert fresh_runtime.statistics().loop_running

    fresh_runtime.close()

    assert loop.is_closed()
    assert not loop.is_running()
    assert not fresh_runtime.statistics().loop_running
    assert not any(t.ident == loop_thread.thread_id for t in threading.enumerate())


def test_timed_out_task_children_killed_when_worker_killed(tmp_path: Path) -> None:
    children_before = _children()
    cleanup_worker_pid()  # warm a worker so startup does not eat the deadline
    pid_file = tmp_path / "pids"

    with pytest.raises(ax.TaskTimeoutError):
        cleanup_hang_with_child(str(pid_file))

    worker, grandchild = map(int, pid_file.read_text().split())
    # The worker's process group is killed, so the task's own child goes too.
    assert wait_for(lambda: process_gone(worker), timeout_s=1.0)
    assert wait_for(lambda: process_gone(grandchild), timeout_s=1.0)

    ax.current_runtime().close()
    assert _children() - children_before == set()


def test_cpu_worker_stopped_when_closed_during_task(
    fresh_runtime: ax.Runtime, tmp_path: Path
) -> None:
    threads_before = _threads()
    children_before = _children()
    pid_file = tmp_path / "pid"
    outcome: list[BaseException | str] = []

    def caller() -> None:
        try:
            outcome.append(cleanup_sleep(str(pid_file), 30))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    assert wait_for(pid_file.exists)
    pid = int(pid_file.read_text())

    t0 = time.monotonic()
    fresh_runtime.close()
    thread.join(10)
    assert time.monotonic() - t0 < 5.0  # not the 30 s the task would take
    assert not thread.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], BaseException)  # the caller is not left hanging
    assert process_gone(pid)
    assert _threads() - threads_before == set()
    assert _children() - children_before == set()


def test_no_child_left_when_call_cancelled_while_worker_starts(
    fresh_runtime: ax.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    children_before = _children()
    real_popen = subprocess.Popen
    spawned: list[subprocess.Popen[bytes]] = []

    def popen_then_cancel(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = real_popen(*args, **kwargs)
        spawned.append(proc)
        # The caller gives up (Ctrl-C, its own timeout...) while the pool is
        # still starting the worker: the cancellation lands in the pool's
        # next await. Done here so that it lands there every time.
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        return proc

    try:
        monkeypatch.setattr(subprocess, "Popen", popen_then_cancel)
        with pytest.raises(asyncio.CancelledError):
            cleanup_square(3)
        monkeypatch.undo()
        assert len(spawned) == 1
        assert cleanup_square(3) == 9  # the pool still serves

        fresh_runtime.close()

        pid = spawned[0].pid
        assert wait_for(lambda: process_gone(pid), timeout_s=2.0), (
            f"worker {pid}, started for the cancelled call, outlived the runtime"
        )
        assert wait_for(lambda: not _children() - children_before, timeout_s=2.0)
    finally:
        for proc in spawned:  # never let a leaked worker outlive this test
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


def test_sync_caller_released_when_closed_during_io(fresh_runtime: ax.Runtime) -> None:
    threads_before = _threads()
    started = threading.Event()
    events: list[str] = []
    outcome: list[BaseException | str] = []

    @ax.io
    async def long_io() -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        return "finished"

    def caller() -> None:
        try:
            outcome.append(long_io())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    assert started.wait(5)

    t0 = time.monotonic()
    fresh_runtime.close()
    thread.join(5)
    assert time.monotonic() - t0 < 3.0
    assert not thread.is_alive()
    assert events == ["cancelled"]
    assert len(outcome) == 1
    assert isinstance(outcome[0], BaseException)
    assert _threads() - threads_before == set()


def test_default_api_creates_new_runtime_when_current_closed(fresh_runtime: ax.Runtime) -> None:
    @ax.io
    async def double(x: int) -> int:
        return 2 * x

    assert double(1) == 2
    assert ax.current_runtime() is fresh_runtime
    fresh_runtime.close()

    try:
        assert double(2) == 4
        assert cleanup_square(3) == 9
        replacement = ax.current_runtime()
        assert replacement is not fresh_runtime
        assert not replacement.closed
        assert replacement.statistics().kinds["io"].calls == 1
    finally:
        ax.current_runtime().close()


async def test_default_api_creates_new_runtime_when_async_caller_finds_it_closed(
    fresh_runtime: ax.Runtime,
) -> None:
    @ax.blocking
    def triple(x: int) -> int:
        return 3 * x

    assert await triple.aio(1) == 3
    await fresh_runtime.aclose()
    assert fresh_runtime.closed
    try:
        assert await triple.aio(2) == 6
        assert ax.current_runtime() is not fresh_runtime
    finally:
        await ax.current_runtime().aclose()


def test_call_raises_runtime_closed_error_when_runtime_closed() -> None:
    async def answer() -> int:
        return 42

    rt = ax.Runtime(io_threads=1, cpu_workers=1)
    assert rt.call(answer()) == 42
    rt.close()

    with pytest.raises(ax.RuntimeClosedError):
        rt.call(answer())  # the coroutine is closed, not left un-awaited
    assert isinstance(ax.RuntimeClosedError("x"), RuntimeError)
    rt.close()  # closing twice is harmless


def test_call_raises_runtime_closed_error_when_closed_before_first_use() -> None:
    async def answer() -> int:
        return 42

    threads_before = _threads()
    rt = ax.Runtime(io_threads=1, cpu_workers=1)
    assert _threads() == threads_before  # nothing starts until first use
    rt.close()
    with pytest.raises(ax.RuntimeClosedError):
        rt.call(answer())
    with pytest.raises(ax.RuntimeClosedError):
        _ = rt.loop_thread
    assert _threads() == threads_before


def test_previous_runtime_restored_when_with_block_exits(fresh_runtime: ax.Runtime) -> None:
    threads_before = _threads()

    @ax.io
    async def which() -> int:
        return id(ax.current_runtime())

    with ax.Runtime(io_threads=2, cpu_workers=1) as inner:
        assert ax.current_runtime() is inner
        assert which() == id(inner)
        assert cleanup_square(4) == 16

    assert inner.closed
    assert ax.current_runtime() is fresh_runtime
    assert _threads() - threads_before == set()


_EXIT_SCRIPT = textwrap.dedent(
    """
    import atexit, threading

    import psutil


    def report():
        # Registered before ambidex is imported, so it runs after ambidex's own
        # exit hook (atexit runs hooks last-in, first-out).
        children = [p.pid for p in psutil.Process().children(recursive=True)]
        threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        print("at exit:", children, threads, flush=True)


    atexit.register(report)

    import asyncio

    import ambidex as ax


    @ax.io
    async def fetch():
        await asyncio.sleep(0.001)
        return 1


    @ax.blocking
    def query():
        return 2


    @ax.cpu
    def pid():
        import os
        return os.getpid()


    assert fetch() == 1 and query() == 2
    print("worker:", pid(), flush=True)
    # exits without closing the runtime: its exit hook must stop everything
    """
)


def test_no_worker_left_when_interpreter_exits_without_close() -> None:
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - t0 < 10.0
    lines = done.stdout.splitlines()
    assert lines[-1] == "at exit: [] []", done.stdout
    worker = int(lines[0].split()[1])
    assert wait_for(lambda: process_gone(worker), timeout_s=2.0)
