"""Every way of calling a task function returns its value and raises its error.

cpu workers import this module by name (``test_call_paths``) to find the
functions they run, so every function a worker runs, and every exception type
that crosses back, lives at module level, and importing the module has no
side effects.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import ambidex as ax
from _waiting import await_for

# -- functions the tests call --------------------------------------------------


class CustomError(Exception):
    """A user error type: it must reach the caller as itself, from every executor."""


def _where() -> tuple[int, str]:
    """Which process and thread is running this."""
    return os.getpid(), threading.current_thread().name


@ax.io
async def io_async_work(x: int) -> tuple[int, tuple[int, str]]:
    await asyncio.sleep(0)
    if x < 0:
        raise CustomError(f"refused {x}")
    return x * 2, _where()


@ax.io
def io_plain_work(x: int) -> tuple[int, tuple[int, str]]:
    if x < 0:
        raise CustomError(f"refused {x}")
    return x * 2, _where()


@ax.blocking
def blocking_work(x: int) -> tuple[int, tuple[int, str]]:
    if x < 0:
        raise CustomError(f"refused {x}")
    return x * 2, _where()


@ax.cpu
def cpu_work(x: int) -> tuple[int, tuple[int, str]]:
    if x < 0:
        raise CustomError(f"refused {x}")
    return x * 2, _where()


WORK: dict[str, ax.TaskFunction[[int], tuple[int, tuple[int, str]]]] = {
    "io-async": io_async_work,
    "io-plain": io_plain_work,
    "blocking": blocking_work,
    "cpu": cpu_work,
}
KINDS = list(WORK)


@ax.io
async def io_awaits_cpu(x: int) -> tuple[int, tuple[int, str]]:
    return await cpu_work.aio(x)


@ax.blocking
def blocking_calls_cpu(x: int) -> tuple[int, tuple[int, str]]:
    return cpu_work(x)


@ax.cpu
def cpu_calls_cpu(x: int) -> tuple[int, tuple[int, str], tuple[int, str]]:
    value, inner_where = cpu_work(x)
    return value, inner_where, _where()


@ax.cpu
def cpu_waits_for_marker(arg: tuple[int, str]) -> int:
    """Item 0 finishes only after item 1 has: later items finish first."""
    i, folder = arg
    if i == 0:
        _wait_for_file(Path(folder) / "1.done")
    else:
        (Path(folder) / f"{i}.done").touch()
    return i * 10


@ax.cpu
def cpu_fail_or_hang(arg: tuple[int, str]) -> int:
    """Item 0 fails once item 1 is running; item 1 would run for a long time."""
    i, folder = arg
    if i == 0:
        _wait_for_file(Path(folder) / "1.started")
        raise CustomError("first error")
    (Path(folder) / f"{i}.started").write_text(str(os.getpid()))
    time.sleep(30)
    (Path(folder) / f"{i}.finished").touch()
    return i


class UnpicklableError(Exception):
    """A user error that cannot be pickled: it holds a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class UnprintableUnpicklableError(UnpicklableError):
    """Neither picklable nor printable: its ``__str__`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("no str for you")


class TwoArgumentError(Exception):
    """A user error whose ``args`` do not match its constructor: it pickles, never unpickles."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


@ax.cpu
def cpu_raise_unpicklable(x: int) -> None:
    raise UnpicklableError(f"locked {x}")


@ax.cpu
def cpu_raise_unprintable(x: int) -> None:
    raise UnprintableUnpicklableError(f"locked {x}")


@ax.cpu
def cpu_raise_two_argument(x: int) -> None:
    raise TwoArgumentError(x, "bad input")


@ax.cpu
def cpu_return_unpicklable(x: int) -> Any:
    return threading.Lock()


def _wait_for_file(path: Path, timeout_s: float = 10.0, *, fail: bool = True) -> bool:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            if fail:
                raise AssertionError(f"{path} never appeared")
            return False
        time.sleep(0.002)
    return True


# -- helpers -------------------------------------------------------------------


def assert_ran_on(kind: str, where: tuple[int, str], *, async_caller: str | None = None) -> None:
    """Check the executor: cpu in another process, threads and loop here.

    ``async_caller`` is the thread an ``async def`` io function runs on: the
    awaiting thread for ``.aio``, ambidex's loop thread for a sync call.
    """
    pid, thread = where
    if kind == "cpu":
        assert pid != os.getpid()
        return
    assert pid == os.getpid()
    if kind == "io-async":
        assert thread == (async_caller or "ambidex-loop")
    else:
        assert thread.startswith("ambidex-io")


def assert_user_error(kind: str, exc: BaseException, x: int) -> None:
    assert type(exc) is CustomError
    assert str(exc) == f"refused {x}"
    if kind == "cpu":
        assert isinstance(exc.__cause__, ax.RemoteTraceback)
        assert "CustomError: refused" in exc.__cause__.text


# -- sync and async callers ----------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_sync_call_returns_value_when_called_from_plain_sync_code(kind: str) -> None:
    value, where = WORK[kind](21)
    assert value == 42
    assert_ran_on(kind, where)


@pytest.mark.parametrize("kind", KINDS)
def test_sync_call_raises_original_error_when_function_fails(kind: str) -> None:
    with pytest.raises(CustomError) as info:
        WORK[kind](-1)
    assert_user_error(kind, info.value, -1)


@pytest.mark.parametrize("kind", KINDS)
async def test_aio_returns_value_when_awaited(kind: str) -> None:
    value, where = await WORK[kind].aio(21)
    assert value == 42
    assert_ran_on(kind, where, async_caller=threading.current_thread().name)


@pytest.mark.parametrize("kind", KINDS)
async def test_aio_raises_original_error_when_function_fails(kind: str) -> None:
    with pytest.raises(CustomError) as info:
        await WORK[kind].aio(-7)
    assert_user_error(kind, info.value, -7)


def _say_waiting_then_wait_for_file(path: str) -> bool:
    """Write ``<path>.waiting``, then wait (up to 10 s) until ``path`` exists."""
    Path(f"{path}.waiting").touch()
    return _wait_for_file(Path(path), timeout_s=10, fail=False)


@ax.io
def io_plain_wait_for_file(path: str) -> bool:
    return _say_waiting_then_wait_for_file(path)


@ax.blocking
def blocking_wait_for_file(path: str) -> bool:
    return _say_waiting_then_wait_for_file(path)


@ax.cpu
def cpu_wait_for_file(path: str) -> bool:
    return _say_waiting_then_wait_for_file(path)


@pytest.mark.parametrize(
    "waiter", [io_plain_wait_for_file, blocking_wait_for_file, cpu_wait_for_file], ids=repr
)
async def test_aio_does_not_block_caller_loop_when_awaited(
    waiter: ax.TaskFunction[[str], bool], tmp_path: Path
) -> None:
    # The waiting call needs the caller's loop to keep running to be released:
    # release() runs on that loop, and lets it go only once it is waiting.
    marker = tmp_path / "released"

    async def release() -> None:
        assert await await_for(Path(f"{marker}.waiting").exists), "the call never started"
        marker.touch()

    released, _ = await asyncio.gather(waiter.aio(str(marker)), release())
    assert released is True


# -- callers with a running loop of their own, and other threads ----------------


@pytest.mark.parametrize("kind", KINDS)
def test_sync_call_returns_value_when_thread_runs_own_loop(kind: str) -> None:
    # What a Jupyter cell does: sync code on a thread whose loop is running.
    async def main() -> tuple[Any, BaseException | None]:
        value = WORK[kind](5)
        try:
            WORK[kind](-5)
        except CustomError as exc:
            return value, exc
        return value, None

    (value, where), error = asyncio.run(main())
    assert value == 10
    assert_ran_on(kind, where)
    assert error is not None
    assert_user_error(kind, error, -5)


def test_map_and_gather_return_values_when_thread_runs_own_loop() -> None:
    async def main() -> tuple[list[Any], list[Any]]:
        mapped = cpu_work.map([1, 2, 3])
        gathered = ax.gather(io_async_work.aio(4), blocking_work.aio(5))
        return mapped, gathered

    mapped, gathered = asyncio.run(main())
    assert [v for v, _ in mapped] == [2, 4, 6]
    assert [v for v, _ in gathered] == [8, 10]


@pytest.mark.parametrize("kind", KINDS)
def test_sync_call_returns_value_when_called_from_worker_threads(kind: str) -> None:
    fn = WORK[kind]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(fn, range(12)))
        error = pool.submit(fn, -3).exception(timeout=30)
    assert [v for v, _ in results] == [2 * i for i in range(12)]
    for _, where in results:
        assert_ran_on(kind, where)
    assert error is not None
    assert_user_error(kind, error, -3)


@pytest.mark.parametrize("kind", KINDS)
def test_sync_call_returns_value_when_called_from_plain_thread(kind: str) -> None:
    out: list[Any] = []

    def body() -> None:
        out.append(WORK[kind](8))
        try:
            WORK[kind](-8)
        except CustomError as exc:
            out.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    (value, where), error = out
    assert value == 16
    assert_ran_on(kind, where)
    assert_user_error(kind, error, -8)


# -- nested calls --------------------------------------------------------------


def test_io_coroutine_awaiting_cpu_returns_value_when_called_sync() -> None:
    value, where = io_awaits_cpu(3)
    assert value == 6
    assert_ran_on("cpu", where)
    with pytest.raises(CustomError) as info:
        io_awaits_cpu(-3)
    assert_user_error("cpu", info.value, -3)


async def test_io_coroutine_awaiting_cpu_returns_value_when_awaited() -> None:
    value, where = await io_awaits_cpu.aio(3)
    assert value == 6
    assert_ran_on("cpu", where)
    with pytest.raises(CustomError) as info:
        await io_awaits_cpu.aio(-3)
    assert_user_error("cpu", info.value, -3)


def test_blocking_calling_cpu_sync_returns_value_when_called_sync() -> None:
    value, where = blocking_calls_cpu(4)
    assert value == 8
    assert_ran_on("cpu", where)
    with pytest.raises(CustomError) as info:
        blocking_calls_cpu(-4)
    assert_user_error("cpu", info.value, -4)


async def test_blocking_calling_cpu_sync_returns_value_when_awaited() -> None:
    value, where = await blocking_calls_cpu.aio(4)
    assert value == 8
    assert_ran_on("cpu", where)


def test_cpu_calling_cpu_runs_inline_in_worker_when_nested() -> None:
    value, inner_where, outer_where = cpu_calls_cpu(6)
    assert value == 12
    assert outer_where[0] != os.getpid()
    assert inner_where[0] == outer_where[0]  # same worker process: no pool of its own
    with pytest.raises(CustomError) as info:
        cpu_calls_cpu(-6)
    assert_user_error("cpu", info.value, -6)


@pytest.mark.timeout(15)
@pytest.mark.parametrize("how", ["call", "map", "cpu-call"])
def test_sync_call_raises_runtime_error_when_made_on_ambidex_loop(how: str) -> None:
    @ax.io
    async def misuse(x: int) -> Any:
        if how == "call":
            return io_plain_work(x)
        if how == "map":
            return io_plain_work.map([x])
        return cpu_work(x)

    with pytest.raises(RuntimeError, match=r"\baio\b") as info:
        misuse(1)
    assert not isinstance(info.value, ax.RuntimeClosedError)
    assert io_plain_work(2)[0] == 4  # the loop is still serving


# -- map / amap / gather / agather: order ---------------------------------------


def _reverse_finishing_steps(n: int) -> tuple[ax.TaskFunction[[int], int], list[int]]:
    """An io coroutine where item i finishes only after item i + 1 has."""
    done = [asyncio.Event() for _ in range(n)]
    finished: list[int] = []

    @ax.io
    async def step(i: int) -> int:
        if i + 1 < n:
            await asyncio.wait_for(done[i + 1].wait(), 10)
        finished.append(i)
        done[i].set()
        return i * 10

    return step, finished


def test_map_returns_input_order_when_later_items_finish_first() -> None:
    step, finished = _reverse_finishing_steps(5)
    assert step.map(range(5)) == [0, 10, 20, 30, 40]
    assert finished == [4, 3, 2, 1, 0]


async def test_amap_returns_input_order_when_later_items_finish_first() -> None:
    step, finished = _reverse_finishing_steps(5)
    assert await step.amap(range(5)) == [0, 10, 20, 30, 40]
    assert finished == [4, 3, 2, 1, 0]


def test_gather_returns_input_order_when_later_items_finish_first() -> None:
    step, finished = _reverse_finishing_steps(5)
    assert ax.gather(*(step.aio(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert finished == [4, 3, 2, 1, 0]


async def test_agather_returns_input_order_when_later_items_finish_first() -> None:
    step, finished = _reverse_finishing_steps(5)
    assert await ax.agather(*(step.aio(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert finished == [4, 3, 2, 1, 0]


def test_map_returns_input_order_when_later_blocking_items_finish_first() -> None:
    n = 4
    done = [threading.Event() for _ in range(n)]
    finished: list[int] = []

    @ax.blocking
    def step(i: int) -> int:
        if i + 1 < n:
            assert done[i + 1].wait(10)
        finished.append(i)
        done[i].set()
        return i * 10

    assert step.map(range(n)) == [0, 10, 20, 30]
    assert finished == [3, 2, 1, 0]


def test_map_returns_input_order_when_later_cpu_items_finish_first(tmp_path: Path) -> None:
    items = [(0, str(tmp_path)), (1, str(tmp_path))]
    assert cpu_waits_for_marker.map(items) == [0, 10]


async def test_map_and_gather_return_empty_list_when_given_nothing() -> None:
    assert await io_async_work.amap([]) == []
    assert await ax.agather() == []


def test_sync_map_and_gather_return_empty_list_when_given_nothing() -> None:
    assert cpu_work.map([]) == []
    assert ax.gather() == []


def test_gather_returns_input_order_when_kinds_are_mixed() -> None:
    results = ax.gather(
        cpu_work.aio(1), io_async_work.aio(2), blocking_work.aio(3), io_plain_work.aio(4)
    )
    assert [v for v, _ in results] == [2, 4, 6, 8]


# -- map / amap / gather / agather: the first error cancels the rest -------------


class _FailFast:
    """Item 0 fails once the others are running; the others must be cancelled."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.started = 0
        self.cancelled: set[int] = set()
        self.finished: set[int] = set()
        self.all_started = asyncio.Event()  # binds to the loop that first waits on it

        @ax.io
        async def job(i: int) -> int:
            if i == 0:
                await asyncio.wait_for(self.all_started.wait(), 10)
                raise CustomError("first error")
            self.started += 1
            if self.started == self.n - 1:
                self.all_started.set()
            try:
                await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                self.cancelled.add(i)
                raise
            self.finished.add(i)
            return i

        self.job = job

    def check(self) -> None:
        assert self.started == self.n - 1
        assert self.cancelled == set(range(1, self.n))
        assert self.finished == set()


def test_map_cancels_the_rest_when_first_error_raised() -> None:
    ff = _FailFast(4)
    with pytest.raises(CustomError, match="first error"):
        ff.job.map(range(4))
    ff.check()


async def test_amap_cancels_the_rest_when_first_error_raised() -> None:
    ff = _FailFast(4)
    with pytest.raises(CustomError, match="first error"):
        await ff.job.amap(range(4))
    ff.check()


def test_gather_cancels_the_rest_when_first_error_raised() -> None:
    ff = _FailFast(4)
    with pytest.raises(CustomError, match="first error"):
        ax.gather(*(ff.job.aio(i) for i in range(4)))
    ff.check()


async def test_agather_cancels_the_rest_when_first_error_raised() -> None:
    ff = _FailFast(4)
    with pytest.raises(CustomError, match="first error"):
        await ax.agather(*(ff.job.aio(i) for i in range(4)))
    ff.check()


async def test_cancelled_work_never_finishes_when_first_error_raised() -> None:
    ff = _FailFast(3)
    with pytest.raises(CustomError):
        await ff.job.amap(range(3))
    # Both others saw the cancellation inside their sleep and re-raised it: a coroutine
    # that has ended that way cannot finish later (no need to sleep past its 1 s).
    assert ff.cancelled == {1, 2}
    assert ff.finished == set()


def test_map_starts_no_more_items_when_first_error_raised() -> None:
    ran: list[int] = []

    @ax.blocking
    def job(i: int) -> int:
        ran.append(i)
        if i == 0:
            raise CustomError("first error")
        return i

    with pytest.raises(CustomError, match="first error"):
        job.map(range(5), max_in_flight=1)
    assert ran == [0]


def test_gather_closes_unstarted_coroutines_when_first_error_raised() -> None:
    ran: list[int] = []

    @ax.io
    async def job(i: int) -> int:
        ran.append(i)
        if i == 0:
            raise CustomError("first error")
        return i

    with pytest.raises(CustomError, match="first error"):
        ax.gather(*(job.aio(i) for i in range(5)), max_in_flight=1)
    assert ran == [0]


def test_map_kills_running_cpu_task_when_first_error_raised(
    tmp_path: Path, fresh_runtime: ax.Runtime
) -> None:
    items = [(0, str(tmp_path)), (1, str(tmp_path))]
    start = time.monotonic()
    with pytest.raises(CustomError, match="first error"):
        cpu_fail_or_hang.map(items)
    assert time.monotonic() - start < 25  # item 1 sleeps 30 s unless killed
    stats = fresh_runtime.statistics().cpu_workers
    assert stats is not None
    assert stats.killed == 1
    assert not (tmp_path / "1.finished").exists()


# -- return_exceptions ----------------------------------------------------------


@ax.io
async def _maybe_fail(i: int) -> int:
    await asyncio.sleep(0)
    if i % 2:
        raise CustomError(f"odd {i}")
    return i


def _check_errors_in_place(results: list[Any]) -> None:
    assert len(results) == 5
    assert results[0::2] == [0, 2, 4]
    for i in (1, 3):
        assert type(results[i]) is CustomError
        assert str(results[i]) == f"odd {i}"


def test_map_puts_errors_in_place_when_return_exceptions() -> None:
    _check_errors_in_place(_maybe_fail.map(range(5), return_exceptions=True))


async def test_amap_puts_errors_in_place_when_return_exceptions() -> None:
    _check_errors_in_place(await _maybe_fail.amap(range(5), return_exceptions=True))


def test_gather_puts_errors_in_place_when_return_exceptions() -> None:
    results = ax.gather(*(_maybe_fail.aio(i) for i in range(5)), return_exceptions=True)
    _check_errors_in_place(results)


async def test_agather_puts_errors_in_place_when_return_exceptions() -> None:
    results = await ax.agather(*(_maybe_fail.aio(i) for i in range(5)), return_exceptions=True)
    _check_errors_in_place(results)


@pytest.mark.parametrize("kind", KINDS)
def test_map_puts_errors_in_place_when_return_exceptions_on_each_kind(kind: str) -> None:
    results = WORK[kind].map([1, -2, 3], return_exceptions=True)
    assert results[0][0] == 2
    assert results[2][0] == 6
    assert_user_error(kind, results[1], -2)


# -- max_in_flight ----------------------------------------------------------------


class _PeakCounter:
    """Counts calls running at once; each holds its slot for a moment."""

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0
        self.calls = 0

        @ax.io
        async def job(i: int) -> int:
            self.current += 1
            self.calls += 1
            self.peak = max(self.peak, self.current)
            await asyncio.sleep(0.005)
            self.current -= 1
            return i

        self.job = job


def test_map_bounds_concurrency_when_max_in_flight_given() -> None:
    pc = _PeakCounter()
    assert pc.job.map(range(12), max_in_flight=3) == list(range(12))
    assert pc.peak == 3
    assert pc.calls == 12


async def test_amap_bounds_concurrency_when_max_in_flight_given() -> None:
    pc = _PeakCounter()
    assert await pc.job.amap(range(12), max_in_flight=3) == list(range(12))
    assert pc.peak == 3
    assert pc.calls == 12


def test_gather_bounds_concurrency_when_max_in_flight_given() -> None:
    pc = _PeakCounter()
    assert ax.gather(*(pc.job.aio(i) for i in range(12)), max_in_flight=3) == list(range(12))
    assert pc.peak == 3


async def test_agather_bounds_concurrency_when_max_in_flight_given() -> None:
    pc = _PeakCounter()
    results = await ax.agather(*(pc.job.aio(i) for i in range(12)), max_in_flight=3)
    assert results == list(range(12))
    assert pc.peak == 3


async def test_amap_runs_all_at_once_when_max_in_flight_not_given() -> None:
    pc = _PeakCounter()
    await pc.job.amap(range(12))
    assert pc.peak == 12


def test_map_bounds_thread_concurrency_when_max_in_flight_given() -> None:
    lock = threading.Lock()
    full = threading.Event()
    bound = 3
    current = peak = 0

    @ax.blocking
    def job(i: int) -> int:
        nonlocal current, peak
        with lock:
            current += 1
            peak = max(peak, current)
            if current == bound:
                full.set()
        full.wait(5)  # hold the slot until the bound has been reached once
        time.sleep(0.01)
        with lock:
            current -= 1
        return i

    assert job.map(range(12), max_in_flight=bound) == list(range(12))
    assert peak == bound


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_map_raises_value_error_when_max_in_flight_invalid(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        io_plain_work.map([1], max_in_flight=bad)


def test_gather_raises_value_error_when_max_in_flight_invalid() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        ax.gather(io_async_work.aio(1), max_in_flight=0)


# -- tracebacks --------------------------------------------------------------------


def _frame_pattern(function_name: str) -> re.Pattern[str]:
    return re.compile(rf'File "{re.escape(__file__)}", line \d+, in {function_name}\n')


@pytest.mark.parametrize("kind", KINDS)
def test_traceback_shows_user_function_when_sync_call_fails(kind: str) -> None:
    fn = WORK[kind]
    with pytest.raises(CustomError) as info:
        fn(-1)
    text = "".join(traceback.format_exception(info.value))
    assert _frame_pattern(fn.__name__).search(text), text
    if kind == "cpu":
        cause = info.value.__cause__
        assert isinstance(cause, ax.RemoteTraceback)
        assert _frame_pattern("cpu_work").search(cause.text), cause.text


@pytest.mark.parametrize("kind", KINDS)
async def test_traceback_shows_user_function_when_aio_call_fails(kind: str) -> None:
    fn = WORK[kind]
    with pytest.raises(CustomError) as info:
        await fn.aio(-1)
    text = "".join(traceback.format_exception(info.value))
    assert _frame_pattern(fn.__name__).search(text), text


# -- serialization -----------------------------------------------------------------


def test_cpu_call_raises_serialization_error_when_argument_not_picklable() -> None:
    with pytest.raises(ax.SerializationError, match="cpu_work") as info:
        cpu_work(threading.Lock())  # type: ignore[arg-type]
    assert "cpu worker" in str(info.value)


async def test_cpu_aio_raises_serialization_error_when_argument_not_picklable() -> None:
    with pytest.raises(ax.SerializationError, match="cpu_work"):
        await cpu_work.aio(threading.Lock())  # type: ignore[arg-type]


def test_cpu_call_raises_serialization_error_when_result_not_picklable() -> None:
    with pytest.raises(ax.SerializationError, match="could not be pickled back"):
        cpu_return_unpicklable(1)


def test_cpu_call_raises_remote_error_when_exception_not_picklable() -> None:
    # The worker cannot send UnpicklableError back as itself, so it sends a
    # RemoteError naming the type, with the message and the remote traceback.
    with pytest.raises(ax.RemoteError) as info:
        cpu_raise_unpicklable(3)
    assert info.value.type_name == "UnpicklableError"
    assert "locked 3" in str(info.value)
    cause = info.value.__cause__
    assert isinstance(cause, ax.RemoteTraceback)
    assert _frame_pattern("cpu_raise_unpicklable").search(cause.text), cause.text


def test_cpu_call_raises_remote_error_when_exception_is_neither_picklable_nor_printable() -> None:
    # The worker must survive describing it: a RemoteError comes back, not a crashed worker.
    with pytest.raises(ax.RemoteError) as info:
        cpu_raise_unprintable(3)
    assert info.value.type_name == "UnprintableUnpicklableError"
    assert "<unprintable UnprintableUnpicklableError object>" in str(info.value)
    assert cpu_work(2)[0] == 4  # the pool still serves calls


def test_cpu_call_raises_remote_error_when_exception_cannot_be_rebuilt() -> None:
    # TwoArgumentError pickles in the worker but cannot be rebuilt here; the
    # caller must still learn what the function raised, not get a
    # SerializationError about an unreadable "result".
    with pytest.raises((TwoArgumentError, ax.RemoteError)) as info:
        cpu_raise_two_argument(3)
    assert "3: bad input" in str(info.value)
    cause = info.value.__cause__
    assert isinstance(cause, ax.RemoteTraceback)
    assert _frame_pattern("cpu_raise_two_argument").search(cause.text), cause.text


def test_cpu_call_sends_closure_by_value_when_function_is_local() -> None:
    offset = 100

    @ax.cpu
    def add_offset(x: int) -> tuple[int, int]:
        return x + offset, os.getpid()

    value, pid = add_offset(1)
    assert value == 101
    assert pid != os.getpid()


# -- decoration-time checks --------------------------------------------------------


async def _coroutine_function(x: int) -> int:
    return x


@pytest.mark.parametrize(
    "decorate",
    [ax.cpu, ax.blocking, ax.cpu(timeout_s=1), ax.blocking(retries=1)],
    ids=["cpu", "blocking", "cpu-with-options", "blocking-with-options"],
)
def test_decorator_raises_type_error_when_function_is_async(
    decorate: Callable[[Any], Any],
) -> None:
    with pytest.raises(TypeError, match="async def"):
        decorate(_coroutine_function)


def test_io_accepts_async_function_when_decorated() -> None:
    assert ax.io(_coroutine_function)(3) == 3


@pytest.mark.parametrize("decorator", [ax.io, ax.blocking, ax.cpu], ids=repr)
@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": -1.0}, "timeout_s"),
        ({"retries": -1}, "retries"),
        ({"retries": 1.5}, "retries"),
    ],
)
def test_decorator_raises_value_error_when_option_out_of_range(
    decorator: Any, options: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        decorator(**options)
