"""Call policies: timeouts, retries, limits, rate limits, cancellation, worker crashes.

The cpu helpers live at module level: a worker process imports this module by
name (``test_policies``) to find them.
"""

from __future__ import annotations

import _thread
import asyncio
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from _support import await_for, process_gone, read_pid, wait_for

import ambidex as ax
from ambidex.testing import FakeClock

# -- cpu helpers (run in worker processes) -----------------------------------


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    Path(tmp).write_text(text)
    os.replace(tmp, path)


@ax.cpu
def worker_pid() -> int:
    return os.getpid()


@ax.cpu
def record_pid_and_sleep(path: str, seconds: float) -> str:
    _write_atomic(path, str(os.getpid()))
    time.sleep(seconds)
    return "finished"


@ax.cpu(timeout_s=0.5)
def record_pid_and_hang(path: str) -> str:
    _write_atomic(path, str(os.getpid()))
    time.sleep(30)
    return "finished"


@ax.cpu
def crash(mode: str) -> str:
    if mode == "exit":
        os._exit(3)
    if mode == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(10)  # the signal is delivered asynchronously
    return mode


@ax.cpu
def slow_square(x: int) -> int:
    time.sleep(0.3)
    return x * x


@ax.cpu(retries=2, backoff_s=0.01)
def flaky_cpu(counter_path: str) -> int:
    path = Path(counter_path)
    count = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(count))
    if count < 3:
        raise ConnectionError(f"attempt {count} failed")
    return count


# -- helpers -----------------------------------------------------------------


def _stats() -> ax.RuntimeStatistics:
    return ax.current_runtime().statistics()


# -- timeouts ----------------------------------------------------------------


async def test_io_coroutine_cancelled_when_past_timeout() -> None:
    events: list[str] = []

    @ax.io(timeout_s=0.1)
    async def slow() -> str:
        events.append("started")
        try:
            await asyncio.sleep(5)
            events.append("after sleep")
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        finally:
            events.append("finally")
        return "finished"

    t0 = time.monotonic()
    with pytest.raises(ax.TaskTimeoutError, match=r"slow\(\) timed out after 0.1 s") as info:
        await slow.aio()
    elapsed = time.monotonic() - t0

    assert isinstance(info.value, TimeoutError)
    assert 0.09 <= elapsed < 2.0
    # the cancelled coroutine runs its handlers on the runtime's loop thread
    assert await await_for(lambda: events == ["started", "cancelled", "finally"]), events
    io = _stats().kinds["io"]
    assert (io.timeouts, io.failed, io.in_flight) == (1, 1, 0)


def test_io_coroutine_cancelled_when_sync_caller_past_timeout() -> None:
    events: list[str] = []

    @ax.io(timeout_s=0.1)
    async def slow(x: int) -> int:
        try:
            await asyncio.sleep(5)
            events.append("after sleep")
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        return x

    t0 = time.monotonic()
    with pytest.raises(ax.TaskTimeoutError, match=r"slow\(7\)"):
        slow(7)
    assert time.monotonic() - t0 < 2.0
    assert wait_for(lambda: events == ["cancelled"]), events
    assert _stats().kinds["io"].timeouts == 1


def test_cpu_worker_killed_when_past_timeout(tmp_path: Path) -> None:
    warm = worker_pid()  # start a worker first, so its startup does not eat the deadline
    pid_file = tmp_path / "pid"

    t0 = time.monotonic()
    with pytest.raises(ax.TaskTimeoutError, match=r"record_pid_and_hang\(.*timed out after 0.5 s"):
        record_pid_and_hang(str(pid_file))
    elapsed = time.monotonic() - t0

    pid = read_pid(pid_file, timeout_s=0)
    assert pid == warm
    assert 0.45 <= elapsed < 3.0
    assert wait_for(lambda: process_gone(pid), timeout_s=1.0), f"worker {pid} still runs"

    fresh = worker_pid()
    assert fresh != pid
    stats = _stats()
    assert stats.cpu_workers is not None
    assert stats.cpu_workers.killed == 1
    assert stats.cpu_workers.started == 2
    assert stats.kinds["cpu"].timeouts == 1


_SLOW_WORKER_SITECUSTOMIZE = """
import os, time
if "AMBIDEX_WORKER_SYS_PATH" in os.environ:  # only in ambidex cpu workers
    time.sleep(0.6)  # an interpreter that starts slowly (a loaded machine, a slow disk)
"""

_QUICK_CPU_SCRIPT = """
import ambidex as ax

@ax.cpu(timeout_s=0.3)
def quick():
    return 42

print(quick(), quick(), flush=True)
print(ax.current_runtime().statistics().cpu_workers.killed, flush=True)
"""


def test_cpu_call_succeeds_when_worker_starts_slower_than_timeout(tmp_path: Path) -> None:
    # timeout_s is "the deadline of one attempt": a task that returns at once
    # must not time out because a fresh worker's interpreter takes longer to
    # start than the deadline. (If it did, every attempt would kill the worker
    # it just started, and a cold pool would never serve the function.)
    (tmp_path / "sitecustomize.py").write_text(_SLOW_WORKER_SITECUSTOMIZE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", _QUICK_CPU_SCRIPT],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["42", "42", "0"]


def test_blocking_call_abandoned_when_past_timeout() -> None:
    started = threading.Event()
    release = threading.Event()
    finished = threading.Event()

    @ax.blocking(timeout_s=0.3)
    def stuck() -> str:
        started.set()
        release.wait(10)
        finished.set()
        return "done"

    try:
        t0 = time.monotonic()
        with pytest.raises(ax.TaskTimeoutError, match="abandoned"):
            stuck()
        elapsed = time.monotonic() - t0

        assert started.is_set()
        assert 0.28 <= elapsed < 1.5  # the deadline, not the 10 s the call would take
        assert not finished.is_set()
        stats = _stats()
        assert stats.io_threads.abandoned == 1
        assert stats.io_threads.busy == 1
        assert stats.kinds["blocking"].timeouts == 1
    finally:
        release.set()
    assert finished.wait(5)
    assert wait_for(lambda: _stats().io_threads.abandoned == 0, timeout_s=2.0)


# -- retries -----------------------------------------------------------------


def test_call_succeeds_when_failures_fewer_than_retries() -> None:
    attempts: list[int] = []

    @ax.io(retries=2, backoff_s=0.01)
    async def flaky() -> str:
        attempts.append(len(attempts) + 1)
        if len(attempts) < 3:
            raise ConnectionError("transient")
        return "ok"

    assert flaky() == "ok"
    assert attempts == [1, 2, 3]
    io = _stats().kinds["io"]
    assert (io.calls, io.succeeded, io.failed, io.retries) == (1, 1, 0, 2)


def test_cpu_call_succeeds_when_failures_fewer_than_retries(tmp_path: Path) -> None:
    assert flaky_cpu(str(tmp_path / "count")) == 3
    cpu = _stats().kinds["cpu"]
    assert (cpu.calls, cpu.succeeded, cpu.retries) == (1, 1, 2)


def test_last_error_raised_when_failures_exceed_retries() -> None:
    attempts: list[int] = []

    @ax.blocking(retries=2, backoff_s=0.01)
    def always_fails() -> None:
        attempts.append(1)
        raise ConnectionError(f"failure {len(attempts)}")

    with pytest.raises(ConnectionError, match="failure 3"):
        always_fails()
    assert len(attempts) == 3
    blocking = _stats().kinds["blocking"]
    assert (blocking.calls, blocking.failed, blocking.retries) == (1, 1, 2)


async def test_error_not_retried_when_not_in_retry_on() -> None:
    attempts: list[type[BaseException]] = []

    @ax.io(retries=3, retry_on=ConnectionError, backoff_s=0.01)
    async def fails_with(exc_type: type[Exception]) -> None:
        attempts.append(exc_type)
        raise exc_type("boom")

    with pytest.raises(ValueError, match="boom"):
        await fails_with.aio(ValueError)
    assert attempts == [ValueError]
    assert _stats().kinds["io"].retries == 0

    attempts.clear()
    with pytest.raises(ConnectionResetError):  # a subclass of ConnectionError is retried
        await fails_with.aio(ConnectionResetError)
    assert attempts == [ConnectionResetError] * 4
    assert _stats().kinds["io"].retries == 3


async def test_retries_wait_backoff_when_retrying() -> None:
    stamps: list[float] = []

    with FakeClock() as clock:

        @ax.io(retries=4, backoff_s=5, max_backoff_s=100)
        async def flaky() -> int:
            stamps.append(clock.monotonic())
            if len(stamps) < 5:
                raise ConnectionError("transient")
            return len(stamps)

        assert await flaky.aio() == 5
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    caps = [5, 10, 20, 40]  # full jitter: each wait is uniform in [0, cap]
    # Virtual time moves only by the waits, so each gap is its wait exactly.
    # Without backoff the gaps would be 0; with it their sum is below 1 s
    # with probability about 1e-6.
    assert sum(gaps) >= 1, gaps
    for gap, cap in zip(gaps, caps, strict=True):
        assert 0 <= gap <= cap, (gaps, caps)
    assert clock.elapsed_s == pytest.approx(sum(gaps))


def test_backoff_capped_when_max_backoff_s_set() -> None:
    attempts: list[int] = []

    @ax.io(retries=3, backoff_s=10, max_backoff_s=0.01)
    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 4:
            raise ConnectionError("transient")
        return "ok"

    with FakeClock() as clock:
        assert flaky() == "ok"
    # Uncapped waits would be uniform in [0, 10], [0, 20], [0, 40] seconds.
    assert clock.elapsed_s <= 3 * 0.01
    assert len(attempts) == 4


def test_timeout_retried_when_retries_set() -> None:
    attempts: list[int] = []

    @ax.io(timeout_s=0.1, retries=1, backoff_s=0.01)
    async def slow_then_fast() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            await asyncio.sleep(5)
        return "ok"

    assert slow_then_fast() == "ok"
    io = _stats().kinds["io"]
    assert (io.timeouts, io.retries, io.succeeded) == (1, 1, 1)


# -- capacity limits ---------------------------------------------------------


async def test_capacity_never_exceeded_when_sync_and_async_callers_share_limit() -> None:
    ax.limits(llm=2)
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}
    gate = threading.Event()

    @ax.io(limit="llm")
    async def call_llm(i: int) -> int:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        try:
            while not gate.is_set():
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.01)
        finally:
            with lock:
                state["now"] -= 1
        return i

    # Five sync callers on their own threads (their work runs on ambidex's
    # loop thread) and five async callers on this test's loop, all at once.
    sync_callers = asyncio.gather(*(asyncio.to_thread(call_llm, i) for i in range(5)))
    async_callers = asyncio.gather(*(call_llm.aio(i) for i in range(5, 10)))
    try:
        assert await await_for(lambda: _stats().limits["llm"].waiting == 8)
        llm = _stats().limits["llm"]
        assert (llm.capacity, llm.in_use, llm.waiting) == (2, 2, 8)
        assert _stats().kinds["io"].in_flight == 10
    finally:
        gate.set()
    assert await sync_callers == [0, 1, 2, 3, 4]
    assert await async_callers == [5, 6, 7, 8, 9]

    assert state["peak"] == 2
    llm = _stats().limits["llm"]
    assert (llm.in_use, llm.waiting) == (0, 0)


def test_unknown_limit_error_when_limit_not_declared() -> None:
    ax.limits(llm=1)
    ran: list[int] = []

    @ax.io(limit="nope")
    async def limited() -> None:
        ran.append(1)

    with pytest.raises(ax.UnknownLimitError) as info:
        limited()
    message = str(info.value)
    assert "'nope'" in message
    assert "llm" in message  # names what was declared
    assert isinstance(info.value, KeyError)
    assert ran == []

    with pytest.raises(ax.UnknownLimitError, match="nope"):
        ax.limit("nope")


async def test_unknown_limit_error_when_async_caller_names_undeclared_limit() -> None:
    @ax.cpu(limit=["missing"])
    def limited() -> None:
        return None

    with pytest.raises(ax.UnknownLimitError, match=r"'missing'.*none declared"):
        await limited.aio()


def test_manual_limit_holds_slot_when_used_as_context_manager() -> None:
    ax.limits(llm=1)
    ran = threading.Event()
    results: list[str] = []

    @ax.io(limit="llm")
    def limited() -> str:
        ran.set()
        return "ran"

    with ax.limit("llm"):
        assert _stats().limits["llm"].in_use == 1
        caller = threading.Thread(target=lambda: results.append(limited()))
        caller.start()
        # Parked at the limit this block holds: it runs only once the block ends.
        assert wait_for(lambda: _stats().limits["llm"].waiting == 1)
        assert not ran.is_set()
    caller.join(5)
    assert results == ["ran"]
    llm = _stats().limits["llm"]
    assert (llm.in_use, llm.waiting) == (0, 0)


async def test_manual_limit_holds_slot_when_used_as_async_context_manager() -> None:
    ax.limits(llm=1)
    ran = asyncio.Event()

    @ax.io(limit="llm")
    async def limited() -> str:
        ran.set()
        return "ran"

    async with ax.limit("llm"):
        assert _stats().limits["llm"].in_use == 1
        task = asyncio.create_task(limited.aio())
        # Parked at the limit this block holds: it runs only once the block ends.
        assert await await_for(lambda: _stats().limits["llm"].waiting == 1)
        assert not ran.is_set()
    assert await task == "ran"
    llm = _stats().limits["llm"]
    assert (llm.in_use, llm.waiting) == (0, 0)


# -- rate limits -------------------------------------------------------------


async def test_rate_limit_spaces_starts_when_burst_is_one() -> None:
    starts: list[float] = []
    with FakeClock() as clock:
        ax.limits(api=ax.Rate(20, burst=1))

        @ax.io(limit="api")
        async def hit(i: int) -> int:
            starts.append(clock.monotonic())
            return i

        # Half the callers are sync (on threads), half async: one shared bucket.
        t0 = clock.monotonic()
        calls = asyncio.gather(
            *(asyncio.to_thread(hit, i) for i in range(5)), *(hit.aio(i) for i in range(5, 10))
        )
        assert await calls == list(range(10))

    # Each caller's turn comes 1/20 s after the previous one's, in virtual time.
    offsets = sorted(s - t0 for s in starts)
    assert offsets == pytest.approx([k / 20 for k in range(10)])


async def test_rate_limit_counts_waiting_callers_while_they_wait() -> None:
    with FakeClock(autojump=False) as clock:  # nobody's turn comes until advanced
        ax.limits(api=ax.Rate(20, burst=1))

        @ax.io(limit="api")
        async def hit(i: int) -> int:
            return i

        calls = asyncio.gather(
            *(asyncio.to_thread(hit, i) for i in range(3)), *(hit.aio(i) for i in range(3, 6))
        )
        assert await await_for(lambda: _stats().rate_limits["api"].waiting == 5)
        clock.advance(5 / 20)
        assert await calls == list(range(6))
    assert _stats().rate_limits["api"].waiting == 0


async def test_rate_limit_allows_burst_when_burst_is_five() -> None:
    starts: list[float] = []
    with FakeClock() as clock:
        ax.limits(api=ax.Rate(20, burst=5))

        @ax.io(limit="api")
        async def hit(i: int) -> int:
            starts.append(clock.monotonic())
            return i

        t0 = clock.monotonic()
        assert await asyncio.gather(*(hit.aio(i) for i in range(10))) == list(range(10))

    offsets = sorted(s - t0 for s in starts)
    # The burst starts at once, then one per 1/20 s.
    assert offsets == pytest.approx([0.0] * 5 + [k / 20 for k in range(1, 6)])


def test_rate_limit_spaces_manual_holders_when_used_as_context_manager() -> None:
    starts: list[float] = []
    with FakeClock() as clock:
        ax.limits(api=ax.Rate(20))
        for _ in range(4):
            with ax.limit("api"):
                starts.append(clock.monotonic())
    assert [b - a for a, b in itertools.pairwise(starts)] == pytest.approx([1 / 20] * 3)


# -- cancellation ------------------------------------------------------------


async def test_io_coroutine_cancelled_when_async_caller_cancelled() -> None:
    started = asyncio.Event()
    events: list[str] = []

    @ax.io
    async def long_io() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
            events.append("after sleep")
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    task = asyncio.create_task(long_io.aio())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert events == ["cancelled"]
    assert _stats().kinds["io"].in_flight == 0


async def test_cpu_worker_killed_when_async_caller_cancelled(tmp_path: Path) -> None:
    await worker_pid.aio()  # warm a worker
    pid_file = tmp_path / "pid"
    task = asyncio.create_task(record_pid_and_sleep.aio(str(pid_file), 30))
    assert await await_for(pid_file.exists)
    pid = read_pid(pid_file)
    assert not process_gone(pid)

    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - t0 < 10.0  # not the 30 s the call sleeps (a busy machine is slow)
    assert await await_for(lambda: process_gone(pid), timeout_s=1.0), f"worker {pid} still runs"

    stats = _stats()
    assert stats.cpu_workers is not None
    assert stats.cpu_workers.killed == 1
    assert await worker_pid.aio() != pid


_CTRL_C_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from pathlib import Path

    import ambidex as ax

    out = Path(sys.argv[1])


    def mark(name, text=""):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)


    @ax.io
    async def long_io():
        mark("io_started")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            mark("io_cancelled")
            raise
        mark("io_finished")


    @ax.cpu
    def long_cpu(path):
        import os, time
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(os.getpid()))
        os.replace(tmp, path)
        time.sleep(60)
        return "finished"


    try:
        long_io()
    except KeyboardInterrupt:
        mark("io_interrupted")

    try:
        long_cpu(str(out / "cpu_pid"))
    except KeyboardInterrupt:
        mark("cpu_interrupted")

    # Stay alive (so the worker, which dies with its parent, is judged by
    # ambidex's own cleanup) until the test has looked.
    deadline = time.monotonic() + 20
    while not (out / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    """
)


def test_work_stopped_when_sync_caller_gets_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CTRL_C_SCRIPT, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_for((tmp_path / "io_started").exists), proc.communicate(timeout=1)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert wait_for((tmp_path / "io_interrupted").exists, timeout_s=5)
        assert time.monotonic() - t0 < 5.0  # not the 60 s the call sleeps
        assert (tmp_path / "io_cancelled").exists()
        assert not (tmp_path / "io_finished").exists()

        pid = read_pid(tmp_path / "cpu_pid")
        assert not process_gone(pid)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert wait_for((tmp_path / "cpu_interrupted").exists, timeout_s=5)
        assert time.monotonic() - t0 < 5.0  # not the 60 s the call sleeps
        assert proc.poll() is None  # the script is still alive: the worker was stopped by it
        assert wait_for(lambda: process_gone(pid), timeout_s=1.0), f"worker {pid} still runs"

        (tmp_path / "release").write_text("")
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# A Ctrl-C that lands just before the main thread blocks only sets CPython's
# flag and does not wake the wait; ``_thread.interrupt_main()`` makes exactly
# that happen, every time.


def test_ctrl_c_that_missed_the_wait_still_stops_the_work_at_once() -> None:
    cancelled = threading.Event()

    @ax.io
    async def slow() -> None:
        _thread.interrupt_main()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        slow()
    assert time.monotonic() - t0 < 10.0  # not the 30 s the call sleeps
    assert cancelled.is_set()


def test_ctrl_c_just_after_the_work_ended_is_raised_without_waiting() -> None:
    @ax.io
    async def quick() -> int:
        _thread.interrupt_main()
        return 1

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        quick()
    assert time.monotonic() - t0 < 2.0


def test_ctrl_c_while_waiting_for_a_limit_gives_up_the_place_in_line() -> None:
    ax.limits(llm=1)
    limit = ax.limit("llm")
    holder_in, holder_out = threading.Event(), threading.Event()

    def hold() -> None:
        with limit:
            holder_in.set()
            holder_out.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holder_in.wait(5)
    threading.Timer(0.2, _thread.interrupt_main).start()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt), limit:
            pytest.fail("got a slot the holder still has")
        assert time.monotonic() - t0 < 2.0
        assert _stats().limits["llm"].waiting == 0
    finally:
        holder_out.set()
        holder.join(5)
    assert _stats().limits["llm"].in_use == 0  # the slot was not leaked
    with limit:
        assert _stats().limits["llm"].in_use == 1


# -- worker crashes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "exit_description"),
    [("exit", "exited with code 3"), ("segv", "killed by SIGSEGV")],
)
def test_worker_crashed_error_when_task_kills_its_worker(mode: str, exit_description: str) -> None:
    with pytest.raises(ax.WorkerCrashedError) as info:
        crash(mode)
    message = str(info.value)
    assert f"crash({mode!r})" in message
    assert exit_description in message
    assert f"pid {info.value.pid}" in message
    assert process_gone(info.value.pid)

    assert crash("fine") == "fine"  # the pool keeps serving
    stats = _stats()
    assert stats.cpu_workers is not None
    assert stats.cpu_workers.crashed == 1
    assert stats.kinds["cpu"].failed == 1


def test_other_tasks_succeed_when_worker_crashes_concurrently() -> None:
    results = ax.gather(
        slow_square.aio(2),
        crash.aio("exit"),
        slow_square.aio(3),
        crash.aio("segv"),
        slow_square.aio(4),
        slow_square.aio(5),
        return_exceptions=True,
    )
    assert results[0::2] == [4, 9, 16]
    assert results[5] == 25
    assert isinstance(results[1], ax.WorkerCrashedError)
    assert "crash('exit')" in str(results[1])
    assert isinstance(results[3], ax.WorkerCrashedError)
    assert "SIGSEGV" in str(results[3])

    mapped = crash.map(["a", "exit", "b"], return_exceptions=True)
    assert mapped[0::2] == ["a", "b"]
    assert isinstance(mapped[1], ax.WorkerCrashedError)

    assert slow_square.map([6, 7]) == [36, 49]  # still serving afterwards
    stats = _stats()
    assert stats.cpu_workers is not None
    assert stats.cpu_workers.crashed == 3
    assert stats.cpu_workers.workers <= 2
    cpu = stats.kinds["cpu"]
    assert (cpu.failed, cpu.succeeded) == (3, 8)
