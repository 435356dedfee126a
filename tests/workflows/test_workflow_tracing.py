"""Workflow runs and their nodes as spans: one trace from the run to each node's calls.

The cpu function lives at module level: a worker process imports this module by
name (``test_workflow_tracing``) to find it.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import ambidex as ax
from _otel import by_name, is_ancestor, one, parent_of, tree
from ambidex import _otel
from ambidex.llm import AsyncLLM, MockLLMServer

# -- node targets ----------------------------------------------------------------------


@ax.cpu
def crunch(x: int) -> int:
    return x * x


@ax.blocking
def lookup(x: int) -> int:
    time.sleep(0.001)
    return x + 1


async def ask(url: str) -> str:
    async with AsyncLLM("mock-llm", base_url=url) as llm:
        return (await llm.chat("which number?", max_tokens=20)).text


_seen: dict[str, str] = {}  # node name -> the span id current in its code
_seen_lock = threading.Lock()


def _note(name: str) -> None:
    _, span_id = _otel.current_ids()
    with _seen_lock:
        _seen[name] = span_id


def _span_id(s: Any) -> str:
    return format(s.context.span_id, "016x")


# -- the test ------------------------------------------------------------------


async def test_one_trace_from_the_run_to_each_nodes_llm_blocking_and_cpu_calls(
    spans: Any,
) -> None:
    wf = ax.Workflow("traced", inputs={"url": str})
    wf.node("ask", ask, input={"url": wf.inputs.url})
    up = wf.node("lookup", lookup, input={"x": 3})
    wf.node("crunch", crunch, input={"x": up.output})
    with MockLLMServer(seed=1) as server:
        result = await wf.arun({"url": server.url})
    assert result["crunch"] == 16
    got = spans.get_finished_spans()
    shown = tree(got)
    run = one(got, "ambidex.workflow traced")
    assert run.attributes["ambidex.workflow.name"] == "traced"
    assert run.attributes["ambidex.workflow.run_id"] == result.run_id
    assert run.attributes["ambidex.workflow.nodes"] == 3
    assert run.attributes["ambidex.workflow.resumed"] is False
    assert run.attributes["ambidex.workflow.outcome"] == "succeeded"
    nodes = {name: one(got, f"ambidex.node {name}") for name in ("ask", "lookup", "crunch")}
    for name, node in nodes.items():
        assert parent_of(node, got) is run, shown
        assert node.context.trace_id == run.context.trace_id
        assert node.attributes["ambidex.node.key"] == f"{result.run_id}:{name}"
        assert node.attributes["ambidex.node.attempts"] == 1
        assert node.attributes["ambidex.node.status"] == "succeeded"
    assert nodes["ask"].attributes["ambidex.node.mode"] == "async"
    assert nodes["lookup"].attributes["ambidex.node.mode"] == "task"
    assert nodes["lookup"].attributes["ambidex.kind"] == "blocking"
    assert nodes["crunch"].attributes["ambidex.kind"] == "cpu"
    chat = one(got, "chat mock-llm")
    assert parent_of(chat, got) is nodes["ask"], shown
    # The runtime's call spans (``ambidex.<kind> <function>``), under the nodes: the
    # context went into the I/O thread and, with the pickled call, into the worker
    # process, whose span came back with the result.
    blocking = by_name(got, "ambidex.blocking *")
    assert len(blocking) == 1, shown
    assert "lookup" in blocking[0].name, shown
    assert is_ancestor(nodes["lookup"], blocking[0], got), shown
    cpu = by_name(got, "ambidex.cpu *")
    assert len(cpu) >= 1, shown
    assert all("crunch" in s.name for s in cpu), shown
    assert all(is_ancestor(nodes["crunch"], s, got) for s in cpu), shown
    (in_worker,) = by_name(got, "ambidex.cpu.run *")
    assert parent_of(in_worker, got) in cpu, shown
    assert in_worker.attributes["ambidex.worker.pid"] != os.getpid()
    assert {s.context.trace_id for s in got if s.name.startswith("ambidex.")} == {
        run.context.trace_id
    }


# -- what happened to a node -----------------------------------------------------------

_attempts: dict[str, int] = {}


async def flaky() -> str:
    _attempts["flaky"] = _attempts.get("flaky", 0) + 1
    if _attempts["flaky"] == 1:
        raise ConnectionError("first try fails")
    return "ok"


async def slow() -> None:
    await asyncio.sleep(5)


def broken() -> None:
    raise ValueError("no good")


async def fine(x: Any = None) -> Any:
    return x


async def test_retries_timeouts_failures_and_skips_show_on_the_node_spans(spans: Any) -> None:
    _attempts.clear()
    wf = ax.Workflow("faults")
    wf.node("flaky", flaky, retries=1)
    wf.node("slow", slow, timeout_s=0.05, on_failure="continue")
    bad = wf.node("broken", broken, on_failure="skip")
    wf.node("after_broken", fine, input=bad.output)
    wf.node("never", fine, when=lambda outputs: False)
    result = await wf.arun()
    assert result.nodes["flaky"].attempts == 2
    got = spans.get_finished_spans()
    shown = tree(got)
    run = one(got, "ambidex.workflow faults")
    assert run.attributes["ambidex.workflow.outcome"] == "succeeded"  # every failure allowed

    flaky_span = one(got, "ambidex.node flaky")
    assert flaky_span.attributes["ambidex.node.attempts"] == 2
    assert flaky_span.attributes["ambidex.node.retries"] == 1
    retries = [e for e in flaky_span.events if e.name == "ambidex.node.retry"]
    assert len(retries) == 1
    assert retries[0].attributes["ambidex.attempt"] == 1
    assert retries[0].attributes["error.type"] == "ConnectionError"
    assert flaky_span.status.status_code.name == "UNSET"

    slow_span = one(got, "ambidex.node slow")
    assert slow_span.status.status_code.name == "ERROR"
    assert slow_span.attributes["error.type"] == "TaskTimeoutError"
    assert slow_span.attributes["ambidex.node.timed_out"] is True
    assert slow_span.attributes["ambidex.node.timeout_s"] == 0.05
    assert slow_span.attributes["ambidex.node.on_failure"] == "continue"
    assert slow_span.attributes["ambidex.node.status"] == "failed"

    broken_span = one(got, "ambidex.node broken")
    assert broken_span.status.status_code.name == "ERROR"
    assert broken_span.attributes["error.type"] == "ValueError"
    assert broken_span.attributes["ambidex.node.mode"] == "thread"
    assert broken_span.attributes["ambidex.node.on_failure"] == "skip"
    assert any(e.name == "exception" for e in broken_span.events)

    for name, reason in (("after_broken", "dependency 'broken' failed"), ("never", "condition")):
        skipped = one(got, f"ambidex.node {name}")
        assert skipped.attributes["ambidex.node.status"] == "skipped"
        assert skipped.attributes["ambidex.node.attempts"] == 0
        assert reason in str(skipped.attributes["ambidex.node.reason"])
        assert skipped.status.status_code.name == "UNSET"
    for s in by_name(got, "ambidex.node *"):
        assert parent_of(s, got) is run, shown


async def test_a_failed_run_cancels_the_rest_and_says_so(spans: Any) -> None:
    wf = ax.Workflow("fails")
    wf.node("slow", slow)
    bad = wf.node("broken", broken)
    wf.node("after", fine, input=bad.output)
    with pytest.raises(ax.WorkflowError):
        await wf.arun()
    got = spans.get_finished_spans()
    run = one(got, "ambidex.workflow fails")
    assert run.status.status_code.name == "ERROR"
    assert run.attributes["error.type"] == "WorkflowError"
    assert run.attributes["ambidex.workflow.outcome"] == "failed"
    assert run.attributes["ambidex.workflow.nodes_failed"] == 1
    slow_span = one(got, "ambidex.node slow")
    assert slow_span.attributes["ambidex.node.status"] == "cancelled"
    assert slow_span.attributes["error.type"] == "cancelled"
    # "after" never became ready: no span of its own, counted on the run's
    assert by_name(got, "ambidex.node after") == []
    assert run.attributes["ambidex.workflow.nodes_cancelled"] == 2


async def test_a_node_queued_for_a_slot_when_the_run_fails_has_a_cancelled_span(
    spans: Any,
) -> None:
    wf = ax.Workflow("queued")
    wf.node("broken", broken)
    wf.node("waiting", fine, input=1)
    with pytest.raises(ax.WorkflowError):
        await wf.arun(max_parallel=1)
    got = spans.get_finished_spans()
    waiting = one(got, "ambidex.node waiting")
    assert waiting.attributes["ambidex.node.status"] == "cancelled"
    assert waiting.attributes["ambidex.node.attempts"] == 0
    assert waiting.attributes["error.type"] == "cancelled"
    assert parent_of(waiting, got) is one(got, "ambidex.workflow queued")


async def test_a_node_failing_before_its_code_runs_has_one_span_saying_so(spans: Any) -> None:
    wf = ax.Workflow("early")
    wf.node("bad_when", fine, when=lambda outputs: 1 / 0, on_failure="continue")
    wf.node("bad_input", fine, input=lambda outputs: 1 / 0, on_failure="continue")
    await wf.arun()
    got = spans.get_finished_spans()
    bad_when = one(got, "ambidex.node bad_when")  # (one: a single span per node)
    assert bad_when.attributes["ambidex.node.reason"] == "its condition raised"
    bad_input = one(got, "ambidex.node bad_input")
    for s in (bad_when, bad_input):
        assert s.status.status_code.name == "ERROR"
        assert s.attributes["error.type"] == "ZeroDivisionError"
        assert s.attributes["ambidex.node.status"] == "failed"
        assert s.attributes["ambidex.node.attempts"] == 0


async def test_an_agent_node_invokes_its_agent_in_a_genai_span(spans: Any) -> None:
    import wf_agents

    wf = ax.Workflow("agents", inputs={"litres": float})
    wf.node("fuel", wf_agents.FuelAgent, input={"litres": wf.inputs.litres})
    result = await wf.arun({"litres": 2.0})
    assert result["fuel"].kg_co2 == 5.0
    got = spans.get_finished_spans()
    node = one(got, "ambidex.node fuel")
    assert node.attributes["ambidex.node.mode"] == "agent"
    invoke = one(got, "invoke_agent FuelAgent")
    assert parent_of(invoke, got) is node, tree(got)
    assert invoke.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert invoke.attributes["gen_ai.agent.name"] == "FuelAgent"
    assert invoke.attributes["ambidex.kind"] == "io"


# -- each node's code runs in its own span, however the scheduler ran it ---------------


async def noted_async(x: int, name: str) -> int:
    _note(name)
    return x + 1


def noted_sync(x: int, name: str) -> int:
    _note(name)
    return x + 1


async def test_node_code_runs_in_its_span_when_carried_fused_or_batched(spans: Any) -> None:
    _seen.clear()
    wf = ax.Workflow("modes")
    prev = wf.node("a0", noted_async, input={"x": 0, "name": "a0"})
    for i in range(1, 4):  # an async chain: one task carries a1..a3
        prev = wf.node(f"a{i}", noted_async, input={"x": prev.output, "name": f"a{i}"})
    prev = wf.node("s0", noted_sync, input={"x": prev.output, "name": "s0"})
    for i in range(1, 5):  # a plain def chain: s1.. fused into s0's... thread job
        prev = wf.node(f"s{i}", noted_sync, input={"x": prev.output, "name": f"s{i}"})
    for i in range(6):  # a fan-out of short plain def nodes: batched
        wf.node(f"f{i}", noted_sync, input={"x": prev.output, "name": f"f{i}"})
    result = await wf.arun()
    assert result["s4"] == 9
    got = spans.get_finished_spans()
    shown = tree(got)
    run = one(got, "ambidex.workflow modes")
    modes: dict[str, str] = {}
    for name in result.nodes:
        s = one(got, f"ambidex.node {name}")
        assert parent_of(s, got) is run, shown
        assert _seen[name] == _span_id(s), f"{name} ran outside its span\n{shown}"
        modes[name] = str(s.attributes["ambidex.node.mode"])
    assert modes["a0"] == "async"
    assert {modes[f"a{i}"] for i in range(1, 4)} == {"carried"}
    assert modes["s0"] == "thread"
    assert "fused" in {modes[f"s{i}"] for i in range(1, 5)}, modes
    assert "batched" in {modes[f"f{i}"] for i in range(6)}, modes


# -- a resumed run ---------------------------------------------------------------------

_fixed = threading.Event()


def first(x: int) -> int:
    return x + 1


def fragile(x: int) -> int:
    if not _fixed.is_set():
        raise RuntimeError("not yet")
    return x * 2


async def test_a_resumed_run_is_a_new_span_that_lists_the_restored_nodes(
    spans: Any, tmp_path: Path
) -> None:
    _fixed.clear()
    wf = ax.Workflow("fragile", inputs={"x": int})
    f = wf.node("first", first, input=wf.inputs.x)
    wf.node("fragile", fragile, input=f.output)
    db = str(tmp_path / "runs.sqlite")
    with pytest.raises(ax.WorkflowError):
        await wf.arun({"x": 1}, checkpoint=db, run_id="r")
    _fixed.set()
    result = await wf.arun(checkpoint=db, resume="r")
    assert result["fragile"] == 4
    got = spans.get_finished_spans()
    failed, resumed = sorted(
        by_name(got, "ambidex.workflow fragile"), key=lambda s: s.start_time or 0
    )
    assert failed.attributes["ambidex.workflow.resumed"] is False
    assert failed.attributes["ambidex.workflow.checkpoint"] is True
    assert resumed.attributes["ambidex.workflow.resumed"] is True
    assert resumed.attributes["ambidex.workflow.run_id"] == "r"
    assert resumed.attributes["ambidex.workflow.restored_nodes"] == 1
    assert resumed.context.trace_id != failed.context.trace_id
    restored = [e for e in resumed.events if e.name == "ambidex.node.restored"]
    assert [e.attributes["ambidex.node.name"] for e in restored] == ["first"]
    assert restored[0].attributes["ambidex.node.key"] == "r:first"
    # "first" ran once (in the failed run); the resumed run ran "fragile" only
    firsts = by_name(got, "ambidex.node first")
    assert len(firsts) == 1
    assert parent_of(firsts[0], got) is failed
    fragiles = by_name(got, "ambidex.node fragile")
    assert [parent_of(s, got) for s in fragiles] == [failed, resumed]
    assert fragiles[1].status.status_code.name == "UNSET"
