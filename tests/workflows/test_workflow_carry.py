"""Carried ``async def`` chains (issue 16, speed): a node's task runs on into its successor.

When an ``async def`` node succeeds and that readies an ``async def`` node that
depends on it alone, the same task records the success and runs the successor
(``_WorkflowExecution.carry``). These tests pin what a node must still see as if
it had a task of its own: its own context (a ContextVar it sets reaches no other
node), its own ``current_node_key()``, ``asyncio.timeout()`` and ``timeout_s``
inside it, retries, ``on_failure``, its events in order at consistent times, and
a cancellation of the run that lands mid-chain. Each test also checks that the
chain was carried (fewer tasks than nodes), so it cannot pass with carrying off.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

import ambidex as ax
from _waiting import run_within
from ambidex.exceptions import TaskTimeoutError
from ambidex.workflows import current_node_key

S = ax.NodeStatus
E = ax.EventKind

seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="unset")


class Recorder:
    def __init__(self) -> None:
        self.events: list[ax.WorkflowEvent] = []

    def __call__(self, event: ax.WorkflowEvent) -> None:
        self.events.append(event)

    def of(self, node: str) -> list[ax.WorkflowEvent]:
        return [e for e in self.events if e.node == node]


class Tasks:
    """The task each node ran in, by node name."""

    def __init__(self) -> None:
        self.by_node: dict[str, asyncio.Task[Any] | None] = {}

    def note(self, name: str) -> None:
        self.by_node[name] = asyncio.current_task()

    def count(self) -> int:
        return len({id(t) for t in self.by_node.values()})


def chain(n: int, step: Any, **options: Any) -> ax.Workflow:
    wf = ax.Workflow("carried")
    prev = wf.node("n0", step, input=0, **options.get("n0", {}))
    for i in range(1, n):
        prev = wf.node(f"n{i}", step, input=prev.output, **options.get(f"n{i}", {}))
    return wf


def test_a_contextvar_a_carried_node_sets_reaches_no_other_node() -> None:
    tasks = Tasks()
    before: dict[str, str] = {}

    async def step(x: int) -> int:
        name = f"n{x}"
        tasks.note(name)
        before[name] = seen.get()
        seen.set(name)  # must not leak into the next node, nor to the caller
        return x + 1

    n = 50
    result = chain(n, step).run()
    assert result[f"n{n - 1}"] == n
    assert before == {f"n{i}": "unset" for i in range(n)}
    assert seen.get() == "unset"
    assert tasks.count() < n / 2  # carried: the chain did not take a task per node


def test_a_context_set_before_the_run_is_seen_by_every_carried_node() -> None:
    got: list[str] = []

    async def step(x: int) -> int:
        got.append(seen.get())
        return x + 1

    async def main() -> ax.WorkflowResult:
        seen.set("caller")
        return await chain(20, step).arun()

    result = asyncio.run(main())
    assert result["n19"] == 20
    assert got == ["caller"] * 20


def test_carried_nodes_see_their_own_node_key() -> None:
    tasks = Tasks()
    keys: dict[str, str] = {}

    async def step(x: int) -> int:
        tasks.note(f"n{x}")
        keys[f"n{x}"] = current_node_key()
        return x + 1

    result = chain(30, step).run(run_id="r1")
    assert result["n29"] == 30
    assert keys == {f"n{i}": f"r1:n{i}" for i in range(30)}
    assert tasks.count() < 15


def test_carried_chain_events_in_order_at_consistent_times() -> None:
    tasks = Tasks()

    async def step(x: int) -> int:
        tasks.note(f"n{x}")
        return x + 1

    n = 300
    rec = Recorder()
    result = chain(n, step).run(on_event=rec)
    assert result[f"n{n - 1}"] == n
    assert tasks.count() < n / 2
    nodes = [e for e in rec.events if e.node is not None]
    # one node at a time: queued, started, finished, then the next
    assert [(e.node, e.kind) for e in nodes] == [
        (f"n{i}", kind) for i in range(n) for kind in (E.QUEUED, E.STARTED, E.FINISHED)
    ]
    times = [e.elapsed_s for e in rec.events]
    assert times == sorted(times)
    for i in range(n):
        run = result.nodes[f"n{i}"]
        queued, started, finished = rec.of(f"n{i}")
        assert run.started_s is not None
        assert run.finished_s is not None
        assert queued.elapsed_s <= run.started_s <= started.elapsed_s <= run.finished_s
        assert finished.elapsed_s == run.finished_s
        assert finished.duration_s == pytest.approx(run.duration_s)
        assert run.attempts == 1


def test_asyncio_timeout_inside_a_carried_node_and_the_next_node_runs_undisturbed() -> None:
    tasks = Tasks()

    async def step(x: int) -> int:
        tasks.note(f"n{x}")
        if x == 5:
            try:
                async with asyncio.timeout(0.02):
                    await asyncio.sleep(5)
            except TimeoutError:
                return x + 100  # the node's own timeout, handled by the node
        if x > 5:  # a cancellation left pending by the timeout would cut this short
            await asyncio.sleep(0.001)
            task = asyncio.current_task()
            assert task is not None
            assert task.cancelling() == 0
        return x + 1

    result = run_within(20, lambda: chain(10, step).run())
    assert isinstance(result, ax.WorkflowResult), result
    assert result["n9"] == 10 + 99
    assert tasks.count() < 10


def test_timeout_s_on_a_carried_node_fails_it_and_its_dependants_are_skipped() -> None:
    async def step(x: int) -> int:
        if x == 3:
            await asyncio.sleep(5)
        return x + 1

    rec = Recorder()
    wf = chain(8, step, n3={"timeout_s": 0.05, "on_failure": "skip"})
    result = run_within(20, lambda: wf.run(on_event=rec))
    assert isinstance(result, ax.WorkflowResult), result
    assert [result.nodes[f"n{i}"].status for i in range(8)] == [S.SUCCEEDED] * 3 + [S.FAILED] + [
        S.SKIPPED
    ] * 4
    assert isinstance(result.nodes["n3"].error, TaskTimeoutError)


def test_on_failure_continue_in_a_carried_chain_feeds_none_onwards() -> None:
    tasks = Tasks()

    async def step(x: int | None) -> int:
        tasks.note(f"n{len(tasks.by_node)}")
        if x == 2:
            raise ValueError("two")
        return 0 if x is None else x + 1

    wf = chain(6, step, n2={"on_failure": "continue"})
    result = wf.run()
    assert result.nodes["n2"].status is S.FAILED
    assert result["n3"] == 0
    assert result["n5"] == 2
    assert tasks.count() < 6


def test_a_failing_carried_node_fails_the_run_and_the_rest_is_cancelled() -> None:
    async def step(x: int) -> int:
        if x == 4:
            raise KeyError("four")
        return x + 1

    err = run_within(20, lambda: chain(10, step).run())
    assert isinstance(err, ax.WorkflowError)
    assert err.node == "n4"
    result = err.result  # type: ignore[attr-defined]
    assert [result.nodes[f"n{i}"].status for i in range(10)] == [S.SUCCEEDED] * 4 + [S.FAILED] + [
        S.CANCELLED
    ] * 5


def test_retries_of_a_carried_node() -> None:
    tries: list[int] = []

    async def step(x: int) -> int:
        if x == 2 and len(tries) < 1:
            tries.append(1)
            raise ConnectionError("flaky")
        return x + 1

    result = run_within(20, lambda: chain(5, step, n2={"retries": 2}).run())
    assert isinstance(result, ax.WorkflowResult), result
    assert result["n4"] == 5
    assert result.nodes["n2"].attempts == 2


async def test_cancelling_the_run_mid_chain_cancels_the_node_running_and_the_rest() -> None:
    started = asyncio.Event()

    async def step(x: int) -> int:
        if x == 40:
            started.set()
            await asyncio.sleep(30)
        return x + 1

    rec = Recorder()
    run = asyncio.create_task(chain(100, step).arun(on_event=rec))
    await asyncio.wait_for(started.wait(), 10)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run, 10)
    finished = {e.node for e in rec.events if e.kind is E.FINISHED}
    cancelled = {e.node for e in rec.events if e.kind is E.CANCELLED}
    assert finished == {f"n{i}" for i in range(40)}
    assert cancelled == {f"n{i}" for i in range(40, 100)}


async def test_a_long_carried_chain_of_trivial_nodes_lets_the_loop_run_and_can_be_cancelled() -> (
    None
):
    ran: list[int] = []

    async def step(x: int) -> int:
        ran.append(x)
        return x + 1

    n = 30_000  # far longer than the carrier's slice: it passes the loop on between slices
    rec = Recorder()
    run = asyncio.create_task(chain(n, step).arun(on_event=rec))
    ticks = 0
    while not ran:
        await asyncio.sleep(0)
    while len(ran) < 1000:  # the loop runs (this task gets turns) while the chain goes on
        ticks += 1
        await asyncio.sleep(0)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run, 30)
    assert ticks > 1
    assert 1000 <= len(ran) < n
    finished = [e.node for e in rec.events if e.kind is E.FINISHED]
    cancelled = [e.node for e in rec.events if e.kind is E.CANCELLED]
    assert len(finished) == len(ran)
    assert len(finished) + len(cancelled) == n


def test_a_listener_failing_inside_a_carried_chain_stops_it() -> None:
    ran: list[int] = []

    async def step(x: int) -> int:
        ran.append(x)
        return x + 1

    def listener(event: ax.WorkflowEvent) -> None:
        if event.kind is E.FINISHED and event.node == "n10":
            raise RuntimeError("listener broke")

    err = run_within(20, lambda: chain(50, step).run(on_event=listener))
    assert isinstance(err, ax.WorkflowError)
    assert "on_event listener raised" in str(err)
    assert ran == list(range(11))
    result = err.result  # type: ignore[attr-defined]
    assert [result.nodes[f"n{i}"].status for i in range(12)] == [S.SUCCEEDED] * 11 + [S.CANCELLED]


def test_no_carrying_with_max_parallel_or_a_checkpoint(tmp_path: Any) -> None:
    for options in ({"max_parallel": 2}, {"checkpoint": tmp_path / "c.sqlite"}):
        tasks = Tasks()

        async def step(x: int, tasks: Tasks = tasks) -> int:
            tasks.note(f"n{x}")
            return x + 1

        result = chain(10, step).run(**options)
        assert result["n9"] == 10
        assert tasks.count() == 10, options


def test_a_node_added_after_a_run_is_scheduled_in_the_next_run() -> None:
    async def step(x: int) -> int:
        return x + 1

    wf = chain(5, step)
    assert wf.run()["n4"] == 5
    wf.node("n5", step, input=wf.nodes["n4"].output)
    wf.node("side", step, input=wf.nodes["n2"].output)
    result = wf.run()
    assert result["n5"] == 6
    assert result["side"] == 4


def test_a_node_that_finished_as_a_sibling_failed_is_kept_not_cancelled() -> None:
    # ``bad`` fails in its first step, ``a`` (whose task would carry ``b``) returns in
    # its own; bad's failure stops the run before a's task has recorded a: a finished,
    # so it is recorded finished (with a task per node, its done-callback came later).
    async def bad() -> int:
        raise KeyError("bad")

    async def one() -> int:
        return 1

    async def plus(x: int) -> int:
        return x + 1

    wf = ax.Workflow("race")
    wf.node("bad", bad)
    a = wf.node("a", one)
    wf.node("b", plus, input=a.output)
    err = run_within(20, wf.run)
    assert isinstance(err, ax.WorkflowError)
    assert err.node == "bad"
    result = err.result  # type: ignore[attr-defined]
    assert result.nodes["a"].status is S.SUCCEEDED
    assert result.nodes["a"].output == 1
    assert result.nodes["b"].status is S.CANCELLED
