"""Running workflows: dependency-driven scheduling, limits, policies, events, scale.

The cpu function lives at module level: a worker process imports this module
by name (``test_workflow_run``) to find it.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import wf_agents

import ambidex as ax
from ambidex.workflows import Condition

S = ax.NodeStatus
E = ax.EventKind


# -- helpers ---------------------------------------------------------------------------


class Recorder:
    """An ``on_event`` listener that keeps every event."""

    def __init__(self) -> None:
        self.events: list[ax.WorkflowEvent] = []

    def __call__(self, event: ax.WorkflowEvent) -> None:
        self.events.append(event)

    def of(self, node: str | None, kind: ax.EventKind) -> list[ax.WorkflowEvent]:
        return [e for e in self.events if e.node == node and e.kind is kind]

    def one(self, node: str | None, kind: ax.EventKind) -> ax.WorkflowEvent:
        found = self.of(node, kind)
        assert len(found) == 1, (node, kind, found)
        return found[0]

    def index(self, node: str | None, kind: ax.EventKind) -> int:
        return next(i for i, e in enumerate(self.events) if e.node == node and e.kind is kind)


async def sleeper(seconds: float, tag: Any = None) -> Any:
    await asyncio.sleep(seconds)
    return tag


async def ident(x: Any = None) -> Any:
    return x


async def inc(x: int) -> int:
    return x + 1


def calls_into(calls: list[str], tag: str, result: Any = None) -> Callable[..., Any]:
    """An async node function that records that it ran."""

    async def fn(x: Any = None) -> Any:
        calls.append(tag)
        return tag if result is None else result

    return fn


@ax.cpu
def cpu_pid(x: int) -> tuple[int, int]:
    return os.getpid(), x * 2


# -- scheduling ------------------------------------------------------------------------


def test_a_node_starts_when_its_own_dependencies_finish_not_level_by_level() -> None:
    # a has no dependencies and finishes only once d has; d waits for c, c for b. Level
    # by level, c would wait for a, which waits for d: a gives up after 10 s and the
    # order below fails. Dependency-driven, b, c and d all run while a is still waiting.
    d_done = threading.Event()

    async def a_waits_for_d() -> bool:
        return await asyncio.to_thread(d_done.wait, 10)

    async def last(tag: Any) -> Any:
        d_done.set()
        return tag

    wf = ax.Workflow("critical-path")
    wf.node("a", a_waits_for_d)
    b = wf.node("b", ident, input={"x": "b"})
    c = wf.node("c", ident, input={"x": b.output})
    wf.node("d", last, input={"tag": c.output})
    rec = Recorder()
    result = wf.run(on_event=rec)

    assert result["a"] is True, "d did not finish while a ran"
    assert rec.index("c", E.STARTED) < rec.index("a", E.FINISHED)
    assert rec.index("d", E.FINISHED) < rec.index("a", E.FINISHED)
    # the same, from the recorded node times (rounded: the same millisecond may hold both)
    assert result.nodes["c"].started_s is not None
    assert result.nodes["c"].started_s <= result.nodes["a"].finished_s  # type: ignore[operator]
    assert result["d"] == "b"


@pytest.mark.parametrize(("limit", "where"), [(3, "workflow"), (2, "run")])
def test_max_parallel_bounds_how_many_nodes_run_at_once(limit: int, where: str) -> None:
    state = {"now": 0, "peak": 0}

    async def tracked(i: int) -> int:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.03)
        state["now"] -= 1
        return i

    wf = ax.Workflow("bounded", max_parallel=limit if where == "workflow" else None)
    for i in range(10):
        wf.node(f"n{i}", tracked, input={"i": i})
    result = wf.run(max_parallel=limit if where == "run" else None)
    assert [result[f"n{i}"] for i in range(10)] == list(range(10))
    assert state["peak"] == limit


def test_unbounded_by_default() -> None:
    state = {"now": 0, "peak": 0}

    async def tracked() -> None:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.03)
        state["now"] -= 1

    wf = ax.Workflow("unbounded")
    for i in range(10):
        wf.node(f"n{i}", tracked)
    wf.run()
    assert state["peak"] == 10


def test_node_timeout_fails_the_run_with_a_task_timeout() -> None:
    cancelled: list[bool] = []

    async def hang() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    wf = ax.Workflow("timeout")
    wf.node("slow", hang, timeout_s=0.1)
    t0 = time.monotonic()
    with pytest.raises(ax.WorkflowError) as info:
        wf.run()
    assert time.monotonic() - t0 < 5.0  # the 0.1 s timeout, not the node's 10 s
    err = info.value
    assert isinstance(err.__cause__, ax.TaskTimeoutError)
    assert err.node == "slow"
    assert "slow" in str(err)
    assert err.result.nodes["slow"].status is S.FAILED  # type: ignore[attr-defined]
    assert not err.result.succeeded  # type: ignore[attr-defined]
    assert cancelled == [True]


def test_node_retries_after_a_failure_and_reports_retrying() -> None:
    attempts: list[int] = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("blip")
        return "ok"

    wf = ax.Workflow("retry")
    wf.node("f", flaky, retries=1)
    rec = Recorder()
    result = wf.run(on_event=rec)
    assert result["f"] == "ok"
    assert result.nodes["f"].attempts == 2
    retrying = rec.one("f", E.RETRYING)
    assert retrying.attempt == 1
    assert "blip" in (retrying.error or "")
    assert [e.attempt for e in rec.of("f", E.STARTED)] == [1, 2]


def test_without_retries_the_same_failure_fails_the_run() -> None:
    async def flaky() -> str:
        raise ConnectionError("blip")

    wf = ax.Workflow("no-retry")
    wf.node("f", flaky)
    rec = Recorder()
    with pytest.raises(ax.WorkflowError) as info:
        wf.run(on_event=rec)
    assert isinstance(info.value.__cause__, ConnectionError)
    assert rec.of("f", E.RETRYING) == []


def test_a_node_whose_exception_cannot_be_printed_fails_the_run_saying_so() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    async def odd() -> str:
        raise Unprintable()

    wf = ax.Workflow("unprintable")
    wf.node("odd", odd)
    with pytest.raises(ax.WorkflowError) as info:
        wf.run()
    assert "node 'odd' raised Unprintable: <unprintable Unprintable object>" in str(info.value)
    assert isinstance(info.value.__cause__, Unprintable)


def test_a_timed_out_attempt_is_retried() -> None:
    attempts: list[int] = []

    async def slow_then_fast() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            await asyncio.sleep(10)
        return "fast"

    wf = ax.Workflow("timeout-retry")
    wf.node("n", slow_then_fast, timeout_s=0.1, retries=1)
    rec = Recorder()
    assert wf.run(on_event=rec)["n"] == "fast"
    assert "TaskTimeoutError" in (rec.one("n", E.RETRYING).error or "")


# -- failure policies ------------------------------------------------------------------


def test_fail_cancels_running_siblings_and_never_starts_the_rest() -> None:
    seen: dict[str, bool] = {}
    slow_started = asyncio.Event()  # binds to the workflow's loop, where both nodes run

    async def slow() -> str:
        slow_started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen["slow cancelled"] = True
            raise
        return "slow"

    async def boom() -> None:
        await asyncio.wait_for(slow_started.wait(), 10)  # fail while slow runs
        raise ValueError("boom")

    def ran(tag: str) -> Callable[..., Any]:
        async def fn(x: Any = None) -> None:
            seen[tag] = True

        return fn

    wf = ax.Workflow("fail-fast", max_parallel=2)
    s = wf.node("slow", slow)
    b = wf.node("boom", boom)
    wf.node("queued", ran("queued ran"))  # a root, but no slot is free: it waits
    wf.node("after_slow", ran("after_slow ran"), input=s.output)
    wf.node("after_boom", ran("after_boom ran"), input=b.output)
    rec = Recorder()
    t0 = time.monotonic()
    with pytest.raises(ax.WorkflowError) as info:
        wf.run(on_event=rec)
    assert time.monotonic() - t0 < 5.0  # slow is cancelled, not waited for (10 s)

    err = info.value
    assert err.node == "boom"
    assert isinstance(err.__cause__, ValueError)
    nodes = err.result.nodes  # type: ignore[attr-defined]
    assert nodes["boom"].status is S.FAILED
    assert nodes["slow"].status is S.CANCELLED
    assert seen == {"slow cancelled": True}  # nothing else ran
    for name in ("queued", "after_slow", "after_boom"):
        assert nodes[name].status is S.CANCELLED, name
        assert rec.of(name, E.STARTED) == []
    assert {e.node for e in rec.events if e.kind is E.CANCELLED} == {
        "slow",
        "queued",
        "after_slow",
        "after_boom",
    }
    finished = rec.events[-1]
    assert finished.kind is E.RUN_FINISHED
    assert "boom" in (finished.error or "")


def test_skip_skips_dependents_transitively_and_independent_branches_finish() -> None:
    calls: list[str] = []

    async def bad() -> None:
        raise ValueError("nope")

    wf = ax.Workflow("skip")
    a = wf.node("a", bad, on_failure="skip")
    b = wf.node("b", calls_into(calls, "b"), input=a.output)
    c = wf.node("c", calls_into(calls, "c"), input=b.output)
    wf.node("c2", calls_into(calls, "c2"), after=[c])
    d = wf.node("d", sleeper, input={"seconds": 0.05, "tag": 7})
    wf.node("e", calls_into(calls, "e"), input=d.output)
    rec = Recorder()
    result = wf.run(on_event=rec)

    assert result.nodes["a"].status is S.FAILED
    assert isinstance(result.nodes["a"].error, ValueError)
    for name in ("b", "c", "c2"):
        assert result.nodes[name].status is S.SKIPPED, name
        assert rec.of(name, E.STARTED) == []
    assert "'a'" in (result.nodes["b"].reason or "")
    assert result["d"] == 7
    assert result["e"] == "e"
    assert calls == ["e"]
    with pytest.raises(KeyError, match="skipped"):
        result["b"]


def test_continue_runs_dependents_with_output_none() -> None:
    got: dict[str, Any] = {}

    async def bad() -> int:
        raise ValueError("nope")

    async def takes(value: Any, extra: int) -> str:
        got["kwargs"] = (value, extra)
        return "ran"

    wf = ax.Workflow("continue")
    a = wf.node("a", bad, on_failure="continue")
    wf.node("b", takes, input={"value": a.output, "extra": 1})
    wf.node("c_input", ident, input=lambda o: {"seen": o["a"]}, after=[a])
    result = wf.run()

    assert result.nodes["a"].status is S.FAILED
    assert result["b"] == "ran"
    assert got["kwargs"] == (None, 1)
    assert result["c_input"] == {"seen": None}


def test_continue_passes_none_to_a_dependent_taking_the_output_as_its_argument() -> None:
    # The dependent's input is exactly the failed node's output: it must run
    # with None as its argument, like any other dependent of a 'continue' node.
    got: list[Any] = []

    async def bad() -> int:
        raise ValueError("nope")

    async def takes(value: Any) -> str:
        got.append(value)
        return "ran"

    wf = ax.Workflow("continue-positional")
    a = wf.node("a", bad, on_failure="continue")
    wf.node("b", takes, input=a.output)
    result = wf.run()
    assert result["b"] == "ran"
    assert got == [None]


@pytest.mark.parametrize(
    "form",
    ["ref", "condition", "callable"],
)
def test_when_false_skips_the_node_and_its_dependents(form: str) -> None:
    calls: list[str] = []

    async def gate() -> dict[str, Any]:
        return {"go": False, "n": 0}

    wf = ax.Workflow("when")
    g = wf.node("gate", gate)
    when: Any
    after: list[Any] = []
    if form == "ref":
        when = g.output.go
    elif form == "condition":
        when = Condition.parse("${gate.output.n} > 0")
    else:
        when, after = (lambda o: o["gate"]["n"] > 0), [g]
    x = wf.node("x", calls_into(calls, "x"), when=when, after=after)
    wf.node("y", calls_into(calls, "y"), input=x.output)
    wf.node("z", calls_into(calls, "z"), input=g.output.n)  # not behind the condition
    rec = Recorder()
    result = wf.run(on_event=rec)

    assert result.nodes["x"].status is S.SKIPPED
    assert result.nodes["x"].reason == "condition is false"
    assert result.nodes["y"].status is S.SKIPPED
    assert rec.of("x", E.SKIPPED)
    assert rec.of("y", E.SKIPPED)
    assert calls == ["z"]


def test_when_true_runs_the_node() -> None:
    calls: list[str] = []

    async def gate() -> dict[str, Any]:
        return {"n": 3}

    wf = ax.Workflow("when-true")
    g = wf.node("gate", gate)
    wf.node("x", calls_into(calls, "x"), when=Condition.parse("${gate.output.n} >= 3"))
    wf.node("y", calls_into(calls, "y"), when=g.output.n)
    result = wf.run()
    assert result["x"] == "x"
    assert result["y"] == "y"
    assert sorted(calls) == ["x", "y"]


# -- callable inputs -------------------------------------------------------------------


def test_callable_input_receives_the_outputs_of_its_dependencies() -> None:
    async def const(value: int) -> int:
        return value

    async def add(x: int, y: int, scale: int) -> int:
        return (x + y) * scale

    wf = ax.Workflow("callable", inputs={"scale": int})
    a = wf.node("a", const, input={"value": 2})
    wf.node("b", const, input={"value": 3})
    wf.node(
        "c",
        add,
        input=lambda o: {"x": o["a"], "y": o["b"], "scale": o.inputs["scale"]},
        after=[a, "b"],
    )
    result = wf.run({"scale": 10})
    assert result["c"] == 50


def test_callable_input_reading_an_undeclared_dependency_raises_a_clear_key_error() -> None:
    async def const(value: int) -> int:
        return value

    wf = ax.Workflow("undeclared")
    a = wf.node("a", const, input={"value": 2})
    wf.node("b", const, input={"value": 3})
    wf.node("c", ident, input=lambda o: o["b"], after=[a])
    with pytest.raises(ax.WorkflowError) as info:
        wf.run()
    assert info.value.node == "c"
    cause = info.value.__cause__
    assert isinstance(cause, KeyError)
    text = str(cause)
    assert "'c'" in text
    assert "'b'" in text
    assert "after=" in text
    assert "a" in text  # the dependencies it does have


# -- events ----------------------------------------------------------------------------


def test_events_come_in_order_per_node_and_frame_the_run() -> None:
    wf = ax.Workflow("events")
    a = wf.node("a", sleeper, input={"seconds": 0.02, "tag": 1})
    b = wf.node("b", sleeper, input={"seconds": 0.01, "tag": 2})
    wf.node("c", ident, input=lambda o: o["a"] + o["b"], after=[a, b])
    rec = Recorder()
    result = wf.run(on_event=rec)
    assert result["c"] == 3

    events = rec.events
    assert events[0].kind is E.RUN_STARTED
    assert events[0].node is None
    assert events[-1].kind is E.RUN_FINISHED
    assert events[-1].node is None
    assert events[-1].error is None
    assert len(rec.of(None, E.RUN_STARTED)) == len(rec.of(None, E.RUN_FINISHED)) == 1
    assert {e.run_id for e in events} == {result.run_id}
    times = [e.elapsed_s for e in events]
    assert times == sorted(times)
    for name in "abc":
        queued = rec.index(name, E.QUEUED)
        started = rec.index(name, E.STARTED)
        finished = rec.index(name, E.FINISHED)
        assert 0 < queued < started < finished < len(events) - 1, name
        assert rec.one(name, E.FINISHED).duration_s is not None
    assert rec.index("c", E.QUEUED) > max(rec.index("a", E.FINISHED), rec.index("b", E.FINISHED))
    assert events[0].as_dict()["kind"] == "run_started"


# -- scale -----------------------------------------------------------------------------


def test_a_chain_of_2000_nodes_runs_quickly() -> None:
    wf = ax.Workflow("chain")
    prev = wf.node("n0", inc, input=0)
    for i in range(1, 2000):
        prev = wf.node(f"n{i}", inc, input=prev.output)
    t0 = time.monotonic()
    result = wf.run()
    assert time.monotonic() - t0 < 10.0
    assert result["n1999"] == 2000
    assert all(r.status is S.SUCCEEDED for r in result.nodes.values())


def test_a_fan_out_fan_in_of_2000_nodes_runs_quickly() -> None:
    wf = ax.Workflow("fan")
    root = wf.node("root", ident, input=1)
    leaves = [wf.node(f"leaf{i}", inc, input=root.output) for i in range(2000)]
    names = [leaf.name for leaf in leaves]
    wf.node("sink", ident, input=lambda o: sum(o[n] for n in names), after=names)
    t0 = time.monotonic()
    result = wf.run()
    assert time.monotonic() - t0 < 10.0
    assert result["sink"] == 2 * 2000


def test_a_chain_of_2000_skips_needs_no_recursion() -> None:
    async def bad() -> int:  # (-> None would feed None into inc's int: refused before the run)
        raise ValueError("nope")

    wf = ax.Workflow("skips")
    prev = wf.node("n0", bad, on_failure="skip")
    for i in range(1, 2000):
        prev = wf.node(f"n{i}", inc, input=prev.output)
    result = wf.run()
    assert result.nodes["n1999"].status is S.SKIPPED
    assert sum(r.status is S.SKIPPED for r in result.nodes.values()) == 1999


# -- targets and how they are called ---------------------------------------------------


def test_sync_function_nodes_run_on_io_threads_and_cpu_nodes_in_a_worker() -> None:
    def where() -> str:
        return threading.current_thread().name

    async def loop_where() -> str:
        return threading.current_thread().name

    wf = ax.Workflow("kinds")
    wf.node("sync", where)
    wf.node("blocking", ax.blocking(where))
    wf.node("async", loop_where)
    wf.node("cpu", cpu_pid, input=21)
    result = wf.run()
    assert result["sync"].startswith("ambidex-io"), result["sync"]
    assert result["blocking"].startswith("ambidex-io"), result["blocking"]
    assert result["async"] == "ambidex-loop"
    pid, doubled = result["cpu"]
    assert pid != os.getpid()
    assert doubled == 42


def test_dict_input_becomes_kwargs_when_the_function_takes_those_names() -> None:
    def area(width: float, height: float) -> float:
        return width * height

    @ax.io
    async def volume(*, width: float, height: float, depth: float = 1.0) -> float:
        return width * height * depth

    def size(data: dict[str, int]) -> int:
        return len(data)

    wf = ax.Workflow("kwargs")
    wf.node("area", area, input={"width": 2, "height": 3})
    wf.node("volume", volume, input={"width": 2, "height": 3, "depth": 4})
    wf.node("size", size, input={"data": {"a": 1, "b": 2, "c": 3}})  # a dict as one argument
    result = wf.run()
    assert result["area"] == 6
    assert result["volume"] == 24
    assert result["size"] == 3


def test_agents_as_nodes_by_instance_and_by_class() -> None:
    wf_agents.LifecycleAgent.log.clear()
    wf = ax.Workflow("agents", inputs={"litres": float})
    fuel = wf.node("fuel", wf_agents.FuelAgent(), input={"litres": wf.inputs.litres})
    grid = wf.node("grid", wf_agents.GridAgent, input={"region": "EU"})
    wf.node("life", wf_agents.LifecycleAgent, input={"litres": wf.inputs.litres})
    wf.node(
        "report",
        wf_agents.ReportAgent(),
        input={"kg": fuel.output.kg_co2, "factor": grid.output.factor, "note": "fuel"},
    )
    result = wf.run({"litres": 4})
    assert result["fuel"] == wf_agents.FuelOut(kg_co2=10.0, label="4 l")
    assert result["report"].total == 20.0
    assert result["report"].text == "fuel: 20 kg"
    # a class target is instantiated, set up before its run and torn down after the run
    assert wf_agents.LifecycleAgent.log == ["setup", "run", "teardown"]
    plain = json.loads(json.dumps(result.as_dict()))
    assert plain["succeeded"] is True
    assert plain["inputs"] == {"litres": 4.0}
    assert plain["nodes"]["report"]["output"] == {"total": 20.0, "text": "fuel: 20 kg"}
    assert plain["nodes"]["report"]["status"] == "succeeded"


def test_an_agent_input_error_fails_the_node() -> None:
    wf = ax.Workflow("bad-agent-input")
    wf.node("fuel", wf_agents.FuelAgent(), input={"litres": "lots"})
    with pytest.raises(ax.WorkflowError) as info:
        wf.run()
    assert isinstance(info.value.__cause__, ax.AgentInputError)
    assert "litres" in str(info.value.__cause__)


def test_a_workflow_runs_from_sync_code() -> None:
    wf = ax.Workflow("sync-run", inputs={"x": int})
    a = wf.node("a", inc, input=wf.inputs.x)
    wf.node("b", inc, input=a.output)
    result = wf.run({"x": 1})
    assert result.succeeded
    assert result["b"] == 3
    assert result.outputs == {"a": 2, "b": 3}
    assert result.workflow == "sync-run"


async def test_a_workflow_runs_from_async_code() -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    async def on_loop(x: int) -> int:
        loops.append(asyncio.get_running_loop())
        return x + 1

    wf = ax.Workflow("async-run", inputs={"x": int})
    a = wf.node("a", on_loop, input=wf.inputs.x)
    wf.node("b", on_loop, input=a.output)
    # two runs at once on this loop
    r1, r2 = await asyncio.gather(wf.arun({"x": 1}), wf.arun({"x": 10}))
    assert (r1["b"], r2["b"]) == (3, 12)
    assert r1.run_id != r2.run_id
    assert loops
    assert all(loop is asyncio.get_running_loop() for loop in loops)
