"""ax.Agent: where run executes, the setup/run/teardown lifecycle, validation, policies.

The cpu agent lives at module level: a worker process imports this module by
name (``test_agents``) to rebuild the pickled agent.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import pydantic
import pytest

import ambidex as ax

# -- models and agents -----------------------------------------------------------


class Pair(pydantic.BaseModel):
    a: int
    b: int


class Where(pydantic.BaseModel):
    total: int
    thread: str
    pid: int
    input_type: str


def _where(total: int, value: Any) -> Where:
    return Where(
        total=total,
        thread=threading.current_thread().name,
        pid=os.getpid(),
        input_type=type(value).__name__,
    )


class AsyncAdder(ax.Agent[Pair, Where]):
    """``async def run``: runs on the event loop of whoever awaits it."""

    def __init__(self) -> None:
        self.loops: list[asyncio.AbstractEventLoop] = []

    async def run(self, input: Pair) -> Where:
        self.loops.append(asyncio.get_running_loop())
        await asyncio.sleep(0)
        return _where(input.a + input.b, input)


class BlockingAdder(ax.Agent[Pair, Where]):
    """A plain ``def run`` (kind "blocking", the default): runs on the I/O threads."""

    def run(self, input: Pair) -> Where:
        time.sleep(0.01)
        return _where(input.a + input.b, input)


class CpuAdder(ax.Agent[Pair, Where]):
    """``kind = "cpu"``: ``run`` runs in a worker process."""

    kind = "cpu"

    def run(self, input: Pair) -> Where:
        return _where(input.a + input.b, input)


class BadOutput(ax.Agent[Pair, Where]):
    async def run(self, input: Pair) -> Any:
        return {"total": "not a number", "thread": "x", "pid": 1, "input_type": "x"}


# -- where run executes ------------------------------------------------------------


async def test_async_run_runs_on_the_awaiting_loop() -> None:
    agent = AsyncAdder()
    out = await agent.arun({"a": 1, "b": 2})
    assert out.total == 3
    assert agent.loops == [asyncio.get_running_loop()]
    assert out.thread == threading.current_thread().name


def test_async_run_from_sync_code_runs_on_the_runtime_loop_thread() -> None:
    agent = AsyncAdder()
    out = agent.run_sync({"a": 2, "b": 5})
    assert out.total == 7
    assert out.thread == "ambidex-loop"
    assert out.thread != threading.current_thread().name


def test_plain_run_runs_on_io_threads() -> None:
    agent = BlockingAdder()
    out = agent.run_sync(Pair(a=1, b=1))
    assert out.total == 2
    assert out.thread.startswith("ambidex-io"), out.thread
    assert out.pid == os.getpid()


async def test_plain_run_awaited_runs_on_io_threads_too() -> None:
    out = await BlockingAdder().arun({"a": 3, "b": 4})
    assert out.total == 7
    assert out.thread.startswith("ambidex-io"), out.thread


def test_cpu_kind_runs_in_another_process() -> None:
    agent = CpuAdder()
    out = agent.run_sync({"a": 20, "b": 22})
    assert out.total == 42
    assert out.pid != os.getpid()
    # The worker got a validated model, not the dict.
    assert out.input_type == "Pair"


async def test_cpu_kind_awaited_runs_in_another_process() -> None:
    outs = await asyncio.gather(*(CpuAdder().arun({"a": i, "b": 1}) for i in range(3)))
    assert [o.total for o in outs] == [1, 2, 3]
    assert all(o.pid != os.getpid() for o in outs)


def test_async_run_with_cpu_kind_is_refused() -> None:
    with pytest.raises(TypeError, match="kind = 'cpu' needs a plain"):

        class Wrong(ax.Agent[Pair, Where]):
            kind = "cpu"

            async def run(self, input: Pair) -> Where:
                raise AssertionError


# -- lifecycle ---------------------------------------------------------------------


class SyncLifecycle(ax.Agent[Pair, int]):
    def __init__(self) -> None:
        self.log: list[str] = []

    def setup(self) -> None:
        self.log.append("setup")
        self.offset = 100

    async def run(self, input: Pair) -> int:
        self.log.append("run")
        return input.a + self.offset  # fails if run came before setup

    def teardown(self) -> None:
        self.log.append("teardown")


class AsyncLifecycle(ax.Agent[Pair, int]):
    def __init__(self) -> None:
        self.log: list[str] = []

    async def setup(self) -> None:
        await asyncio.sleep(0.01)
        self.log.append("setup")
        self.offset = 100

    def run(self, input: Pair) -> int:  # blocking run, async setup/teardown
        self.log.append("run")
        return input.a + self.offset

    async def teardown(self) -> None:
        await asyncio.sleep(0.01)
        self.log.append("teardown")


LIFECYCLES = [SyncLifecycle, AsyncLifecycle]


@pytest.mark.parametrize("cls", LIFECYCLES, ids=lambda c: c.__name__)
def test_with_sets_up_once_and_tears_down_on_exit(cls: type[Any]) -> None:
    agent = cls()
    with agent as entered:
        assert entered is agent
        assert agent.log == ["setup"]
        assert agent.is_set_up
        assert agent.run_sync({"a": 1, "b": 0}) == 101
        assert agent.run_sync({"a": 2, "b": 0}) == 102
        assert agent.log == ["setup", "run", "run"]
    assert agent.log == ["setup", "run", "run", "teardown"]
    assert not agent.is_set_up


@pytest.mark.parametrize("cls", LIFECYCLES, ids=lambda c: c.__name__)
async def test_async_with_sets_up_once_and_tears_down_on_exit(cls: type[Any]) -> None:
    agent = cls()
    async with agent:
        assert agent.log == ["setup"]
        results = await asyncio.gather(*(agent.arun({"a": i, "b": 0}) for i in range(3)))
        assert results == [100, 101, 102]
    assert agent.log == ["setup", "run", "run", "run", "teardown"]


@pytest.mark.parametrize("cls", LIFECYCLES, ids=lambda c: c.__name__)
async def test_setup_runs_once_before_the_first_run_without_with(cls: type[Any]) -> None:
    agent = cls()
    # Concurrent first calls: setup still runs exactly once, before any run.
    results = await asyncio.gather(*(agent.arun({"a": i, "b": 0}) for i in range(5)))
    assert results == [100, 101, 102, 103, 104]
    assert agent.log[0] == "setup"
    assert agent.log.count("setup") == 1
    assert agent.log.count("run") == 5
    assert "teardown" not in agent.log


@pytest.mark.parametrize("cls", LIFECYCLES, ids=lambda c: c.__name__)
def test_teardown_runs_when_the_block_raises(cls: type[Any]) -> None:
    agent = cls()

    def use() -> None:
        with agent:
            agent.run_sync({"a": 1, "b": 0})
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        use()
    assert agent.log == ["setup", "run", "teardown"]


# -- validation ----------------------------------------------------------------------


class Inspecting(ax.Agent[Pair, str]):
    def __init__(self) -> None:
        self.calls = 0

    async def run(self, input: Pair) -> str:
        self.calls += 1
        return f"{type(input).__name__}:{input.a + input.b}"


def test_dict_input_is_validated_into_the_model() -> None:
    agent = Inspecting()
    assert agent.run_sync({"a": "3", "b": 4}) == "Pair:7"  # "3" coerced to int


def test_bad_input_field_raises_agent_input_error_naming_it() -> None:
    agent = Inspecting()
    with pytest.raises(ax.AgentInputError) as info:
        agent.run_sync({"a": 1, "b": "seven"})
    message = str(info.value)
    assert "Inspecting" in message
    assert "b:" in message
    assert "seven" in message
    assert "a:" not in message  # only the bad field is named
    assert agent.calls == 0


async def test_missing_input_field_raises_agent_input_error_naming_it() -> None:
    agent = Inspecting()
    with pytest.raises(ax.AgentInputError, match=r"(?s)a: Field required"):
        await agent.arun({"b": 1})
    assert agent.calls == 0


def test_bad_output_raises_agent_output_error() -> None:
    with pytest.raises(ax.AgentOutputError) as info:
        BadOutput().run_sync({"a": 1, "b": 1})
    assert "total" in str(info.value)
    assert "BadOutput" in str(info.value)
    assert not isinstance(info.value, ax.AgentInputError)


# -- timeout and retries -------------------------------------------------------------


class Hanging(ax.Agent[Pair, int]):
    timeout_s = 0.2

    def __init__(self) -> None:
        self.cancelled = False
        self.finished = False

    async def run(self, input: Pair) -> int:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.finished = True
        return 0


async def test_timeout_cancels_an_async_run() -> None:
    agent = Hanging()
    t0 = time.monotonic()
    with pytest.raises(ax.TaskTimeoutError):
        await agent.arun({"a": 1, "b": 1})
    assert time.monotonic() - t0 < 5.0  # the 0.2 s timeout, not the 10 s run
    assert agent.cancelled  # the coroutine itself saw the cancellation
    assert not agent.finished


def test_timeout_cancels_an_async_run_from_sync_code() -> None:
    agent = Hanging()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        agent.run_sync({"a": 1, "b": 1})
    assert time.monotonic() - t0 < 5.0  # the 0.2 s timeout, not the 10 s run
    assert agent.cancelled


class Flaky(ax.Agent[Pair, int]):
    retries = 2
    retry_on = (ConnectionError,)

    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.error = error
        self.attempts = 0

    async def run(self, input: Pair) -> int:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise self.error(f"attempt {self.attempts}")
        return self.attempts


def test_retries_retry_until_success() -> None:
    agent = Flaky(failures=2)
    assert agent.run_sync({"a": 0, "b": 0}) == 3
    assert agent.attempts == 3


def test_retries_are_bounded() -> None:
    agent = Flaky(failures=5)
    with pytest.raises(ConnectionError, match="attempt 3"):
        agent.run_sync({"a": 0, "b": 0})
    assert agent.attempts == 3  # the first attempt and two retries


def test_errors_outside_retry_on_are_not_retried() -> None:
    agent = Flaky(failures=1, error=KeyError)
    with pytest.raises(KeyError):
        agent.run_sync({"a": 0, "b": 0})
    assert agent.attempts == 1


class FlakyBlocking(ax.Agent[Pair, int]):
    retries = 1

    def __init__(self) -> None:
        self.attempts = 0

    def run(self, input: Pair) -> int:
        self.attempts += 1
        if self.attempts == 1:
            raise OSError("first attempt fails")
        return self.attempts


def test_retries_retry_a_blocking_run() -> None:
    agent = FlakyBlocking()
    assert agent.run_sync({"a": 0, "b": 0}) == 2


# -- run_sync from any thread ------------------------------------------------------------


async def test_run_sync_from_a_thread_whose_loop_is_running() -> None:
    # This test's own loop is running in this thread (as in Jupyter).
    asyncio.get_running_loop()
    out = AsyncAdder().run_sync({"a": 4, "b": 4})
    assert out.total == 8
    assert out.thread == "ambidex-loop"
    assert BlockingAdder().run_sync({"a": 1, "b": 2}).total == 3


def test_run_sync_from_another_thread_running_its_own_loop() -> None:
    results: list[Any] = []

    async def main() -> None:
        results.append(AsyncAdder().run_sync({"a": 1, "b": 2}).total)
        results.append(await AsyncAdder().arun({"a": 2, "b": 2}))

    thread = threading.Thread(target=lambda: asyncio.run(main()))
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert results[0] == 3
    assert results[1].total == 4
    assert results[1].thread == thread.name  # awaited: ran on that thread's loop
