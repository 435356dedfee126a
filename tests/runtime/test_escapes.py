"""What asyncio lets out of an event loop stays with the call that raised it.

``SystemExit`` and ``KeyboardInterrupt`` raised by work that runs as a task on
the runtime's loop thread would stop that loop for every caller; a future
cannot hold ``StopIteration``. Each reaches its own caller, and the runtime
goes on serving calls.
"""

from __future__ import annotations

import sys

import pytest

import ambidex as ax


@ax.cpu
def cpu_exit(code: int) -> None:
    sys.exit(code)


@ax.cpu
def cpu_interrupt() -> None:
    raise KeyboardInterrupt("from a worker")


@ax.cpu
def cpu_double(x: int) -> int:
    return 2 * x


@ax.io
async def io_exit(code: int) -> None:
    sys.exit(code)


@ax.io
async def io_double(x: int) -> int:
    return 2 * x


@ax.blocking
def blocking_next() -> int:
    return next(iter([]))


def test_sys_exit_in_a_cpu_call_reaches_its_caller_and_the_runtime_goes_on() -> None:
    with pytest.raises(SystemExit) as info:
        cpu_exit(3)
    assert info.value.code == 3
    assert "in cpu_exit" in str(info.value.__cause__)  # the worker's own traceback
    assert cpu_double(4) == 8
    assert io_double(4) == 8


def test_keyboard_interrupt_in_a_cpu_call_reaches_its_caller_and_the_runtime_goes_on() -> None:
    with pytest.raises(KeyboardInterrupt, match="from a worker"):
        cpu_interrupt()
    assert cpu_double(5) == 10


def test_sys_exit_in_an_io_call_from_sync_code_reaches_its_caller() -> None:
    with pytest.raises(SystemExit) as info:
        io_exit(4)
    assert info.value.code == 4
    assert io_double(2) == 4


async def test_sys_exit_in_a_cpu_call_from_async_code_reaches_its_caller() -> None:
    with pytest.raises(SystemExit):
        await cpu_exit.aio(5)
    assert await cpu_double.aio(3) == 6


def test_stop_iteration_in_a_blocking_call_is_a_runtime_error_naming_it() -> None:
    with pytest.raises(RuntimeError, match=r"^StopIteration$") as info:
        blocking_next()
    assert isinstance(info.value.__cause__, StopIteration)


@ax.io
async def io_exit_on_two(x: int) -> int:
    if x == 2:
        sys.exit(4)
    return x


@ax.blocking
def blocking_exit_on_two(x: int) -> int:
    if x == 2:
        sys.exit(5)
    return x


@ax.cpu
def cpu_exit_on_two(x: int) -> int:
    if x == 2:
        sys.exit(6)
    return x


@pytest.mark.parametrize(
    ("fn", "code"), [(io_exit_on_two, 4), (blocking_exit_on_two, 5), (cpu_exit_on_two, 6)]
)
def test_sys_exit_in_one_call_of_a_map_reaches_the_caller_and_the_loop_goes_on(
    fn: ax.TaskFunction[..., int], code: int
) -> None:
    """A map's calls run as plain tasks on the loop thread: asyncio raised their SystemExit
    out of the loop, which ended the loop thread (the caller got a bare CancelledError,
    and every later call hung). Now the map raises it, as a plain call would."""
    with pytest.raises(SystemExit) as info:
        fn.map(range(4))
    assert info.value.code == code
    out = fn.map(range(4), return_exceptions=True)
    assert out[:2] == [0, 1]
    assert out[3] == 3
    assert isinstance(out[2], SystemExit)
    assert out[2].code == code
    assert io_double(4) == 8  # the loop thread is alive
    assert fn.map([7, 8]) == [7, 8]
