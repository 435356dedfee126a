"""A node that calls ``sys.exit`` or raises ``KeyboardInterrupt`` fails alone.

asyncio raises those two out of the event loop when a task raises them, so left
alone they stopped the runtime's loop thread: the run died with a bare
``CancelledError`` and every later call on the runtime with it. Each kind of
node is tried (``async def``, plain ``def`` alone, inside a fused chain and a
batch, ``@ax.io``, ``@ax.blocking``, an agent), and a task the node starts
itself; every time the node fails with what it raised, the run goes on under
``on_failure="continue"``, and the runtime still runs the next workflow.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

import ambidex as ax
from ambidex._text import describe_exception

S = ax.NodeStatus


def inc(x: int) -> int:
    return x + 1


def exits(x: int) -> int:
    sys.exit(3)


def interrupts(x: int) -> int:
    raise KeyboardInterrupt


async def aexits(x: int) -> int:
    sys.exit(4)


async def exits_in_its_own_task(x: int) -> int:
    async def child() -> int:
        sys.exit(5)

    return sum(await asyncio.gather(child(), asyncio.sleep(0, 1)))


@ax.io
async def io_exits(x: int) -> int:
    sys.exit(6)


@ax.blocking
def blocking_exits(x: int) -> int:
    sys.exit(7)


class ExitingAgent(ax.Agent[int, int]):
    async def run(self, input: int) -> int:
        sys.exit(8)


CASES: list[tuple[Any, str]] = [
    (exits, "SystemExit: 3"),
    (interrupts, "KeyboardInterrupt"),
    (aexits, "SystemExit: 4"),
    (exits_in_its_own_task, "EscapedExit: SystemExit: 5 (raised in a task the node started)"),
    (io_exits, "SystemExit: 6"),
    (blocking_exits, "SystemExit: 7"),
    (ExitingAgent(), "SystemExit: 8"),
]


def workflow(target: Any) -> ax.Workflow:
    """a -> bad -> after, and a sibling 'other' that must still run (on_failure=continue)."""
    wf = ax.Workflow("exits")
    a = wf.node("a", inc, input=0)
    bad = wf.node("bad", target, input=a.output, on_failure="continue")
    wf.node("after", inc, input=bad.output, on_failure="continue")
    wf.node("other", inc, input=a.output)
    return wf


@pytest.mark.parametrize(("target", "error"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_a_nodes_exit_is_its_own_failure_and_the_run_goes_on(target: Any, error: str) -> None:
    result = workflow(target).run()
    bad = result.nodes["bad"]
    assert bad.status is S.FAILED
    assert describe_exception(bad.error) == error
    assert bad.attempts == 1
    assert result.nodes["other"].status is S.SUCCEEDED
    assert result.nodes["other"].output == 2
    assert result.nodes["after"].status is S.FAILED  # it got None for an int: its own error
    # The runtime's loop thread is alive: the next run works.
    again = ax.Workflow("again")
    again.node("x", inc, input=41)
    assert again.run().nodes["x"].output == 42


def test_an_exit_fails_the_run_under_on_failure_fail_without_stopping_the_runtime() -> None:
    wf = ax.Workflow("fails")
    wf.node("bad", aexits, input=1)
    with pytest.raises(ax.WorkflowError, match=r"node 'bad' raised SystemExit: 4") as info:
        wf.run()
    assert info.value.node == "bad"
    again = ax.Workflow("again")
    again.node("x", inc, input=1)
    assert again.run().nodes["x"].output == 2


def test_an_exit_in_a_fused_chain_fails_that_node_only() -> None:
    wf = ax.Workflow("fused")
    prev = wf.node("n0", inc, input=0)
    for i in range(1, 40):  # a chain long enough to be fused into one thread job
        prev = wf.node(f"n{i}", exits if i == 30 else inc, input=prev.output, on_failure="skip")
    wf.run()  # after this run inc is known to be short, so the next run's chain is fused
    result = wf.run()
    assert result.nodes["n29"].output == 30
    assert result.nodes["n30"].status is S.FAILED
    assert describe_exception(result.nodes["n30"].error) == "SystemExit: 3"
    assert result.nodes["n31"].status is S.SKIPPED


def test_exits_inside_arun_on_the_callers_own_loop() -> None:
    async def main() -> ax.WorkflowResult:
        return await workflow(exits_in_its_own_task).arun()

    result = asyncio.run(main())
    error = describe_exception(result.nodes["bad"].error)
    assert error == "EscapedExit: SystemExit: 5 (raised in a task the node started)"
    assert result.nodes["other"].status is S.SUCCEEDED


async def ainc(x: int) -> int:
    return x + 1


@pytest.mark.parametrize("exiting", [aexits, exits_in_its_own_task])
def test_an_exit_in_a_carried_async_chain_fails_that_node_only(exiting: Any) -> None:
    """Successive ``async def`` nodes run in one task (carried): the exit is still one node's."""
    wf = ax.Workflow("carried")
    prev = wf.node("n0", ainc, input=0)
    for i in range(1, 20):
        prev = wf.node(f"n{i}", exiting if i == 10 else ainc, input=prev.output, on_failure="skip")
    result = wf.run()
    assert result.nodes["n9"].output == 10
    assert result.nodes["n10"].status is S.FAILED
    assert "SystemExit: " in describe_exception(result.nodes["n10"].error)
    assert result.nodes["n11"].status is S.SKIPPED
    again = ax.Workflow("again")
    again.node("x", ainc, input=1)
    assert again.run().nodes["x"].output == 2
